"""``transferrec daemon``: a warm process that runs the console script's commands in forks of itself. Everything
here is real: the daemon is started by the console script, commands go through its socket, flows run on its
Prefect API and write to a SQLite MLflow store."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from flows.services import descendants, process_alive
from models.data.synthetic import generate_retail, write_retail_export

SCRIPT = Path(sys.executable).with_name("transferrec")


def transferrec(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def started(args: list[str], env: dict[str, str], cwd: Path, *, until: str) -> subprocess.Popen[str]:
    """The command running, once a line of its stderr holds ``until``."""
    caller = subprocess.Popen([str(SCRIPT), *args], env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    assert caller.stderr is not None
    seen = []
    for line in caller.stderr:
        if until in line:
            return caller
        seen.append(line)
    raise AssertionError(f"{args[0]} ended before {until!r}: {''.join(seen)[-2000:]}")


def status(env: dict[str, str], cwd: Path) -> dict:
    done = transferrec(["daemon", "status", "--json"], env, cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def running_daemon(env: dict[str, str], cwd: Path) -> Iterator[int]:
    """A daemon started by the console script (its pid), stopped afterwards even when the test failed."""
    up = transferrec(["daemon", "start", "--idle-timeout", "900"], env, cwd)
    assert up.returncode == 0 and "ready (pid" in up.stdout, (up.stdout, up.stderr)
    pid = status(env, cwd)["pid"]
    try:
        yield pid
    finally:
        if process_alive(pid):
            transferrec(["daemon", "stop"], env, cwd)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Iterator[tuple[dict[str, str], Path]]:
    root = tmp_path_factory.mktemp("daemon")
    env = {**os.environ, "TRANSFERREC_DAEMON_SOCKET": str(root / "d.sock"), "TRANSFERREC_DATA_DIR": str(root / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("TRANSFERREC_NO_DAEMON", None)
    with running_daemon(env, root) as pid:
        yield env, root
        stopped = transferrec(["daemon", "stop"], env, root)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout
        assert not (root / "d.sock").exists()
        assert not process_alive(pid)


def test_commands_run_in_the_daemon_with_their_output_and_exit_codes(daemon, tmp_path: Path):
    env, _ = daemon
    before = status(env, tmp_path)
    assert before["up"] is True and before["running"] == 0 and before["PREFECT_API_URL"].startswith("http://127.0.0.1:")
    good = tmp_path / "good.csv"
    good.write_text("user_id,item_id,timestamp,rating\nu1,a,978300760,4\nu2,a,978300900,5\n")
    broken = tmp_path / "broken.csv"
    broken.write_text("user_id,item_id,timestamp,rating\nu1,a,978300760,4\nu2,a,978300900,NaN\n")
    outcomes = {path.name: transferrec(["validate", str(path), "--table", "interactions", "--json"], env, tmp_path)
                for path in (good, broken, tmp_path / "missing.csv")}
    assert [outcomes[name].returncode for name in ("good.csv", "broken.csv", "missing.csv")] == [0, 1, 2]
    assert json.loads(outcomes["good.csv"].stdout.strip().splitlines()[-1])["success"] is True
    assert "rating" in outcomes["broken.csv"].stderr  # the report on the caller's stderr
    assert outcomes["missing.csv"].stderr.startswith("error:") and "missing.csv" in outcomes["missing.csv"].stderr
    assert status(env, tmp_path)["served"] == before["served"] + 3  # each ran in the daemon (status itself not)


def test_another_environment_runs_the_command_in_its_own_process(daemon, tmp_path: Path):
    env, _ = daemon
    before = status(env, tmp_path)["served"]
    good = tmp_path / "good.csv"
    good.write_text("user_id,item_id,timestamp,rating\nu1,a,978300760,4\n")
    # another value than the daemon's (Lightning's DDP sets OMP_NUM_THREADS=1 in a test process that ran it)
    other = "2" if env.get("OMP_NUM_THREADS") == "1" else "1"
    done = transferrec(["validate", str(good), "--table", "interactions"], {**env, "OMP_NUM_THREADS": other}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "note: this environment differs from the transferrec daemon's in OMP_NUM_THREADS" in done.stderr
    verbose = transferrec(["-v", "validate", str(good), "--table", "interactions"], env, tmp_path)
    assert verbose.returncode == 0 and "note: verbose logs (-v)" in verbose.stderr
    assert status(env, tmp_path)["served"] == before


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return write_retail_export(generate_retail(n_customers=150, products_per_category=20, seed=1),
                               tmp_path_factory.mktemp("shop") / "shop")


ONBOARD = ["onboard", "--target-domain", "garden", "--dim", "8", "--top-single", "1", "--max-epochs", "2"]


@pytest.mark.slow
def test_an_onboarding_through_the_daemon_then_stopped_by_its_caller(daemon, shop: Path, tmp_path: Path):
    env, _ = daemon
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}  # read per command: a store each
    data = ["--data", str(shop), "--columns", str(shop / "columns.yaml")]
    done = transferrec([*ONBOARD, *data, "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[onboard garden] train (stage" in done.stderr  # progress on the caller's stderr, the JSON on its stdout
    assert json.loads(done.stdout.strip().splitlines()[-1])["registered_model"] == "transferrec-garden"
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert str(client.get_registered_model("transferrec-garden").aliases["champion"]) == "1"

    # SIGTERM to the caller reaches the command: the run is marked KILLED, nothing registered, the caller says 143
    caller = started([*ONBOARD, *data], env, tmp_path, until="] train (stage")
    caller.send_signal(signal.SIGTERM)
    err = caller.communicate(timeout=60)[1]
    assert caller.returncode == 143, err[-2000:]
    assert "interrupted by SIGTERM: stopped" in err
    runs = [r for r in client.search_runs([client.get_experiment_by_name("transferrec-garden").experiment_id],
                                          order_by=["start_time DESC"]) if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    assert [str(v.version) for v in client.search_model_versions("name = 'transferrec-garden'")] == ["1"]

    # a caller killed outright takes its command along
    caller = started([*ONBOARD, *data], env, tmp_path, until="] train (stage")
    assert status(env, tmp_path)["running"] == 1
    caller.kill()
    caller.wait()
    deadline = time.monotonic() + 60
    while status(env, tmp_path)["running"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert status(env, tmp_path)["running"] == 0


@pytest.mark.slow
def test_a_daemon_killed_outright_takes_its_commands_along(shop: Path, tmp_path: Path):
    """A lost daemon never leaves a command running unseen: its forks get SIGTERM (Linux ends them with it) and the
    caller says so and exits 1."""
    env = {**os.environ, "TRANSFERREC_DAEMON_SOCKET": str(tmp_path / "d.sock"),
           "TRANSFERREC_DATA_DIR": str(tmp_path / "cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    env.pop("TRANSFERREC_NO_DAEMON", None)
    with running_daemon(env, tmp_path) as pid:
        caller = started([*ONBOARD, "--data", str(shop), "--columns", str(shop / "columns.yaml")], env, tmp_path,
                         until="] sources (stage")
        helpers = descendants(pid)  # the command's fork and the Prefect API server
        assert len(helpers) >= 2, helpers
        os.kill(pid, signal.SIGKILL)
        err = caller.communicate(timeout=60)[1]
    assert caller.returncode == 1, err[-2000:]
    assert "error: the transferrec daemon ended before the command did" in err.splitlines()[-1]
    deadline = time.monotonic() + 30
    while [p for p in helpers if process_alive(p)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in helpers if process_alive(p)], "left running"
