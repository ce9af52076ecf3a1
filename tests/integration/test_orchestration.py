"""Served deployments on a real Prefect server: a data-team trigger with parameters and a data-landed event
each start a flow run that finishes and leaves its MLflow run (every process stopped by PID at the end)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from flows.services import free_port, stop_process
from models.data.synthetic import generate_retail, write_retail_export

BIN = Path(sys.executable).parent
SMOKE = ["--target-domain", "garden", "--top-single", "1", "--dim", "8", "--max-epochs", "3"]


def api_post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{api}{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def completed_runs(api: str, flow: str) -> list[dict]:
    return api_post(api, "/flow_runs/filter", {"flows": {"name": {"any_": [flow]}},
                                               "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}}})


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
            return response.read() == b"true"
    except OSError:
        return False


@pytest.mark.slow
def test_trigger_and_data_landed_event_run_the_served_deployments(tmp_path: Path, decisions_in_order):
    """A company's own export: the data team triggers a run with parameters; new data lands and its event runs
    the refresh. The event's run resolves to the config of `transferrec onboard --data DIR --columns MAP` (all of
    the target's data, the same training rows), and the three runs' champion decisions come one after the other."""
    shop = write_retail_export(generate_retail(n_customers=300, products_per_category=20, seed=0), tmp_path / "shop")
    own = ["--data", str(shop), "--columns", str(shop / "columns.yaml"), *SMOKE]
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "MLFLOW_TRACKING_URI": uri, "TRANSFERREC_DATA_DIR": str(tmp_path / "cache")}
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("server", "serve", "cli")}  # noqa: SIM115
    processes: list[subprocess.Popen] = []
    try:
        processes.append(subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
            env=env, stdout=logs["server"], stderr=subprocess.STDOUT, start_new_session=True))
        wait_for(lambda: healthy(api), 120, "the Prefect server")
        processes.append(subprocess.Popen(
            [str(BIN / "transferrec"), "serve", *own, "--no-schedules"],
            env=env, stdout=logs["serve"], stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_path))
        # the same onboarding from the command line, side by side with the served runs
        cli = subprocess.Popen([str(BIN / "transferrec"), "onboard", *own, "--json"], env=env, cwd=tmp_path,
                               stdout=logs["cli"], stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(cli)
        wait_for(lambda: len(api_post(api, "/deployments/filter", {})) == 3, 120, "three deployments")

        # the data team: a run with parameters, through the CLI
        done = subprocess.run([str(BIN / "transferrec"), "trigger", "onboard", *own, "--set", "split.seed=1",
                               "--wait", "400", "--json"],
                              env=env, capture_output=True, text=True, timeout=500, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        triggered = json.loads(done.stdout.strip().splitlines()[-1])
        assert triggered["state"] == "COMPLETED" and triggered["url"].endswith(triggered["flow_run_id"])

        # new data landed: the event starts the refresh deployment
        done = subprocess.run([str(BIN / "transferrec"), "notify", "data-landed", "--domain", "garden", "--path",
                               str(shop), "--columns", str(shop / "columns.yaml")],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "transferrec.data.landed" in done.stdout, done.stderr[-3000:]
        refresh = wait_for(lambda: completed_runs(api, "refresh-domain"), 500, "the refresh run")
        assert refresh[0]["parameters"]["config"]["data"]["path"] == str(shop.resolve())
        assert cli.wait(timeout=500) == 0, (tmp_path / "cli.log").read_text()[-3000:]
    finally:
        for process in reversed(processes):
            stop_process(process)
        for handle in logs.values():
            handle.close()
    assert all(p.poll() is not None for p in processes)

    # every run is in MLflow, finished; the event's run is the command line's run
    mlflow.set_tracking_uri(uri)
    parents = mlflow.search_runs(experiment_names=["transferrec-garden"],
                                 filter_string="attributes.run_name LIKE 'onboard:%'")
    assert len(parents) == 3 and set(parents["status"]) == {"FINISHED"}
    cli_summary = json.loads((tmp_path / "cli.log").read_text().strip().splitlines()[-1])
    cli_run = parents.set_index("run_id").loc[cli_summary["mlflow_run_id"]]
    triggered_run = parents.set_index("tags.prefect.flow_run_id").loc[triggered["flow_run_id"]]
    assert triggered_run["params.split.seed"] == "1"
    # the refresh flow runs the onboarding as its subflow: the event's run is the third one
    event_run = parents[~parents["run_id"].isin([cli_run.name, triggered_run["run_id"]])].iloc[0]
    assert event_run["params.split.fraction"] == "1.0" == cli_run["params.split.fraction"]
    assert event_run["params.split.train_interactions"] == cli_run["params.split.train_interactions"]
    assert (mlflow.artifacts.load_dict(f"runs:/{event_run['run_id']}/config.json")
            == mlflow.artifacts.load_dict(f"runs:/{cli_run.name}/config.json"))
    versions = decisions_in_order(uri, "transferrec-garden")
    assert len(versions) == 3
