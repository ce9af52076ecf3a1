"""How `transferrec onboard` stops: seconds from the signal to exit, exit code, what is left running, run status.

Usage (after `make install`):

    python bench/stop.py

On the synthetic retail export (written to a temporary folder), one onboarding per case, each signalled while it
trains: Ctrl-C (SIGINT to the process group, as a terminal sends it) and SIGTERM (to the process, as kill,
systemd and supervisord send it) while a source model trains, and Ctrl-C while the finalists and baselines train
side by side. Prints one row per case and writes bench/results/stop.json. Goal: exit within 10 s with 130 / 143,
nothing left running, the MLflow run KILLED.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flows.services import descendants, process_alive

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
# long enough that the signal lands in the stage named by each case
CASES = [
    ("Ctrl-C while a source trains", "group", signal.SIGINT, "sources",
     ["--set", "sources.train.max_epochs=400", "--set", "sources.train.patience=400"]),
    ("SIGTERM while a source trains", "process", signal.SIGTERM, "sources",
     ["--set", "sources.train.max_epochs=400", "--set", "sources.train.patience=400"]),
    ("Ctrl-C while the models train side by side", "group", signal.SIGINT, "train",
     ["--max-epochs", "400", "--set", "scratch.patience=400", "--set", "finetune.train.patience=400"]),
]


def reached(uri: str, stage: str) -> bool:
    """Whether the onboarding logging to ``uri`` has reached ``stage`` (sources: a source run exists; train:
    every candidate's probe run has finished)."""
    from tasks import tracking

    try:
        client = tracking.client(uri)  # waits for the run's schema migration (the store's lock)
        if stage == "sources":
            experiment = client.get_experiment_by_name("transferrec-sources")
            return experiment is not None and bool(client.search_runs([experiment.experiment_id]))
        experiment = client.get_experiment_by_name("transferrec-garden")
        probes = [r for r in client.search_runs([experiment.experiment_id]) if r.info.run_name.startswith("probe:")
                  ] if experiment else []
        return bool(probes) and all(r.info.status == "FINISHED" for r in probes)
    except Exception:  # noqa: BLE001 - the store is being created by the run
        return False


def run_case(folder: Path, how: str, signum: int, stage: str, options: list[str]) -> dict:
    db = folder / f"{signum}-{stage}.db"
    uri = f"sqlite:///{db}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TRANSFERREC_DATA_DIR": str(folder / "cache")}
    for own in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):
        env.pop(own, None)
    shop = folder / "shop"
    # -q: no progress lines (a pipe read only at the end would fill), so stderr holds what the stop printed
    proc = subprocess.Popen([str(BIN / "transferrec"), "-q", "onboard", "--data", str(shop), "--columns",
                             str(shop / "columns.yaml"), "--target-domain", "garden", *options], env=env, cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while not (db.exists() and reached(uri, stage)):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the onboarding ended before reaching {stage}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.2)
    time.sleep(2)
    helpers = descendants(proc.pid)
    sent = time.monotonic()
    if how == "group":
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    stderr = proc.communicate(timeout=120)[1]
    seconds = time.monotonic() - sent
    time.sleep(1)
    from tasks import tracking

    client = tracking.client(uri)
    experiment = client.get_experiment_by_name("transferrec-garden")
    parents = [r.info.status for r in client.search_runs([experiment.experiment_id])
               if "mlflow.parentRunId" not in r.data.tags] if experiment else []
    return {"exit_code": proc.returncode, "seconds_to_exit": round(seconds, 2),
            "left_running": [p for p in helpers if process_alive(p)], "stderr_lines": len(stderr.strip().splitlines()),
            "traceback": "Traceback" in stderr, "run_status": parents, "message": stderr.strip()[-200:]}


def main() -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="transferrec-stop-") as tmp:
        folder = Path(tmp)
        subprocess.run([str(BIN / "transferrec"), "synthetic", "retail", "--out", str(folder / "shop")], check=True,
                       capture_output=True)
        for name, how, signum, stage, options in CASES:
            row = {"case": name, **run_case(folder, how, signum, stage, options)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| case | exit code | seconds to exit | left running | stderr lines | MLflow run |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['exit_code']} | {r['seconds_to_exit']} | {len(r['left_running'])} | "
              f"{r['stderr_lines']}{' (traceback)' if r['traceback'] else ''} | {', '.join(r['run_status'])} |")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "stop.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
