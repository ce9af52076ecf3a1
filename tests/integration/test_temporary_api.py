"""Prefect's temporary API server as a command starts it (tasks.runtime): the server services that work on every
event a run emits are off, a user's own setting wins, and a flow run is still recorded with its final state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FLOW = """
import json, os, urllib.request
from tasks.runtime import configure_environment, prestart_prefect_api, await_prefect_api
configure_environment({})
prestart_prefect_api()
await_prefect_api()
from prefect import flow, get_client, task

@task
def double(x):
    return 2 * x

@flow(name="temporary-api-check")
def check():
    return double(21)

state = check(return_state=True)
with get_client(sync_client=True) as client:
    run = client.read_flow_run(state.state_details.flow_run_id)
with urllib.request.urlopen(os.environ["PREFECT_API_URL"] + "/admin/settings") as response:
    services = json.load(response)["server"]["services"]
print(json.dumps({"result": state.result(), "state": run.state.type.value,
                  "enabled": {name: value.get("enabled") for name, value in services.items()}}))
"""


def test_the_temporary_api_leaves_the_per_event_services_off_and_still_records_the_flow_run():
    from tasks.runtime import TEMPORARY_API_SERVICES, temporary_api_environment

    # the user's own setting wins over the temporary API's default; Prefect's own marks always apply
    env = temporary_api_environment({"PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "true", "PREFECT_UI_ENABLED": "1"})
    assert env["PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED"] == "true" and env["PREFECT_UI_ENABLED"] == "0"
    assert env["PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED"] == "false"

    done = subprocess.run([sys.executable, "-c", FLOW], cwd=ROOT, capture_output=True,
                          text=True, timeout=300,
                          env={**_clean_environment(), "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "true"})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["result"] == 42 and found["state"] == "COMPLETED"  # the flow run and its state, recorded
    enabled = found["enabled"]
    assert enabled["task_run_recorder"] is False and enabled["event_persister"] is False
    assert enabled["triggers"] is True  # set by the caller's environment
    assert enabled["scheduler"] is True  # every other service as Prefect sets it
    assert set(TEMPORARY_API_SERVICES) == {f"PREFECT_SERVER_SERVICES_{name.upper()}_ENABLED"
                                           for name in ("task_run_recorder", "event_persister", "triggers")}


def _clean_environment() -> dict[str, str]:
    """This process's environment without a Prefect API of its own (the test session's), so the child starts
    the temporary API as a command does."""
    return {key: value for key, value in os.environ.items() if key not in ("PREFECT_API_URL",
                                                                           "TRANSFERREC_TEMPORARY_API")}
