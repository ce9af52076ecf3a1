"""The fault suite: each edge a hostile but fair user reaches, through the real ``transferrec`` command.

Every case ends in one line on stderr (no traceback), a documented exit code, and nothing left running or
half-written. Small synthetic data and smoke-sized models: the cases are about the edges, not the models.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import polars as pl
import pytest

from flows.services import descendants, process_alive

BIN = Path(sys.executable).parent
PROGRESS = re.compile(r"^\[[^\]]+\] (epoch \d+/\d+ |\w+ \(stage \d+/\d+, )")
SMOKE = ["--top-single", "1", "--dim", "8", "--target-fraction", "0.5"]
# long enough that a signal lands mid-training
LONG = ["--set", "sources.train.max_epochs=400", "--set", "sources.train.patience=400"]


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PREFECT_HOME": str(tmp_path / "prefect"), "TRANSFERREC_DATA_DIR": str(tmp_path / "cache")}
    for own in ("PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):  # a user's shell: the command's own defaults
        env.pop(own, None)
    return env


def _cli(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "transferrec"), *args], env=_env(tmp_path), capture_output=True, text=True,
                          cwd=tmp_path, timeout=timeout)


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The error line; fails when stderr holds a traceback or more than one line besides the run's progress
    lines (``[onboard games] validate (stage 2/10, 1s)``, ``[scratch] epoch 3/20 ...``), which come before it."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and not PROGRESS.match(lines[-1]), result.stderr[-3000:]
    assert all(PROGRESS.match(line) for line in lines[:-1]), result.stderr[-3000:]
    return lines[-1]


def _parent_runs(tmp_path: Path, domain: str = "games") -> list:
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(f"transferrec-{domain}")
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id])
            if "mlflow.parentRunId" not in r.data.tags]


def _start(tmp_path: Path, synthetic_dir: Path, *options: str, until: str) -> subprocess.Popen[str]:
    """An onboarding in its own process group (as a shell runs a job), returned once a run of experiment
    ``until`` exists (``transferrec-sources``: a source model is training)."""
    # -q: this pipe is read only at the end, and a long training's progress lines could fill it
    proc = subprocess.Popen([str(BIN / "transferrec"), "-q", "onboard", "--data", str(synthetic_dir), "--target-domain",
                             "games", *options], env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
    deadline = time.monotonic() + 300
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    while time.monotonic() < deadline and proc.poll() is None:
        if (tmp_path / "mlflow.db").exists():
            try:
                experiment = client.get_experiment_by_name(until)
                if experiment is not None and client.search_runs([experiment.experiment_id]):
                    return proc
            except Exception:  # noqa: BLE001 - the store is being created by the run
                pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the onboarding never started training: {proc.communicate()[1][-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT to the process group", "SIGTERM to the process"])
def test_a_signal_ends_the_run_within_seconds_and_leaves_nothing_running(tmp_path: Path, synthetic_dir: Path,
                                                                        how: str):
    proc = _start(tmp_path, synthetic_dir, *SMOKE, *LONG, until="transferrec-sources")
    time.sleep(3)  # inside the first epochs
    helpers = descendants(proc.pid)  # Prefect's temporary API server among them
    assert helpers
    sent = time.monotonic()
    if how.startswith("SIGINT"):
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C at a terminal does
    else:
        proc.send_signal(signal.SIGTERM)  # what kill, systemd and supervisord do
    _, stderr = proc.communicate(timeout=60)
    seconds = time.monotonic() - sent
    assert proc.returncode == (130 if how.startswith("SIGINT") else 143), stderr[-3000:]
    assert seconds < 10, seconds
    line = _one_line_error(subprocess.CompletedProcess([], proc.returncode, "", stderr))
    assert line.startswith(f"interrupted by {how.split()[0]}")
    time.sleep(1)
    assert not [p for p in helpers if process_alive(p)], "left running"
    runs = _parent_runs(tmp_path)
    assert runs and {r.info.status for r in runs} == {"KILLED"}
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not client.search_registered_models("name = 'transferrec-games'")


@pytest.mark.slow
def test_a_rerun_closes_the_run_a_killed_process_left_running(tmp_path: Path, synthetic_dir: Path):
    proc = _start(tmp_path, synthetic_dir, *SMOKE, "--max-epochs", "2", until="transferrec-games")
    helpers = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)  # a lost machine: nothing runs on the way out
    for pid in helpers:  # its temporary API server runs in a session of its own: a lost machine takes it too
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    [killed] = _parent_runs(tmp_path)
    assert killed.info.status == "RUNNING"
    rerun = _cli(tmp_path, "onboard", "--data", str(synthetic_dir), "--target-domain", "games", *SMOKE,
                 "--max-epochs", "2")  # the same settings
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    runs = {r.info.run_id: r for r in _parent_runs(tmp_path)}
    assert runs[killed.info.run_id].info.status == "KILLED"
    assert "left RUNNING by process" in runs[killed.info.run_id].data.tags["killed_note"]


@pytest.mark.slow
def test_bad_inputs_end_in_one_line_in_the_users_words(tmp_path: Path, synthetic_dir: Path):
    # a mistyped domain: the domains there are, and no experiment made for the typo
    typo = _cli(tmp_path, "onboard", "--data", str(synthetic_dir), "--target-domain", "gmaes", *SMOKE)
    assert typo.returncode == 2
    line = _one_line_error(typo)
    assert "'gmaes' is not in" in line and "items.parquet" in line and "did you mean 'games'?" in line
    assert not _parent_runs(tmp_path, "gmaes")

    # a header row repeated inside items.csv (files joined with their headers): refused, naming file and line
    joined = tmp_path / "joined"
    joined.mkdir()
    pl.read_parquet(synthetic_dir / "interactions.parquet").write_parquet(joined / "interactions.parquet")
    items = pl.read_parquet(synthetic_dir / "items.parquet").cast(pl.String)
    header = pl.DataFrame({c: [c] for c in items.columns})
    pl.concat([items.head(50), header, items.slice(50)]).write_csv(joined / "items.csv")
    repeated = _cli(tmp_path, "onboard", "--data", str(joined), "--target-domain", "games", *SMOKE)
    assert repeated.returncode == 2
    line = _one_line_error(repeated)
    assert "items.csv: data row 51 (line 52) repeats the header" in line
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not client.search_registered_models("name = 'transferrec-games'")  # nothing registered

    # a corrupt part among many: the part is named
    parts = tmp_path / "parts"
    (parts / "interactions").mkdir(parents=True)
    frame = pl.read_parquet(synthetic_dir / "interactions.parquet")
    for i, chunk in enumerate(frame.iter_slices(n_rows=frame.height // 10 + 1)):
        chunk.write_parquet(parts / "interactions" / f"part-{i:02d}.parquet")
    broken = parts / "interactions" / "part-07.parquet"
    broken.write_bytes(broken.read_bytes()[:200])
    pl.read_parquet(synthetic_dir / "items.parquet").write_parquet(parts / "items.parquet")
    corrupt = _cli(tmp_path, "onboard", "--data", str(parts), "--target-domain", "games", *SMOKE)
    assert corrupt.returncode == 2
    assert "part-07.parquet: cannot read this Parquet part (8 of" in _one_line_error(corrupt)

    # a long domain name with spaces: a bounded experiment name (no "File name too long"), and the run works
    long_name = "outdoor garden furniture and tools " * 9
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    pl.read_parquet(synthetic_dir / "interactions.parquet").write_parquet(renamed / "interactions.parquet")
    (pl.read_parquet(synthetic_dir / "items.parquet")
     .with_columns(pl.col("domain").replace({"games": long_name})).write_parquet(renamed / "items.parquet"))
    result = _cli(tmp_path, "onboard", "--data", str(renamed), "--target-domain", long_name, *SMOKE,
                  "--max-epochs", "2", "--set", "sources.train.max_epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    names = [e.name for e in client.search_experiments()]
    assert any(n.startswith("transferrec-outdoor-garden") and len(n) <= 80 for n in names), names


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod 000 folder")
def test_an_unreadable_folder_is_one_line(tmp_path: Path, synthetic_dir: Path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        result = _cli(tmp_path, "onboard", "--data", str(locked), "--target-domain", "games")
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2
    assert "permission denied" in _one_line_error(result)


class _Planted:
    """What a hostile checkpoint carries: unpickling it runs code (here: creates a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_a_planted_checkpoint_runs_no_code(tmp_path: Path, synthetic_dir: Path):
    """The checkpoint folder of an onboarding's model is predictable (settings and data); a file planted there
    before the run is read as data only: its code never runs, the model trains from the start, and the folder
    is removed when the fit ends (which shows the fit did look there)."""
    import json

    import torch

    from flows.config import OnboardConfig
    from models.data.datasets import read_canonical_dir
    from models.data.fingerprint import fingerprint
    from tasks.runtime import run_key

    options = ["--data", str(synthetic_dir), "--target-domain", "games", *SMOKE, "--max-epochs", "2",
               "--checkpoint-dir", str(tmp_path / "ckpt")]
    printed = _cli(tmp_path, "onboard", *options, "--print-config")
    assert printed.returncode == 0, printed.stderr[-2000:]
    config = OnboardConfig.model_validate(json.loads(printed.stdout))
    folder = tmp_path / "ckpt" / f"{run_key(config)}-{fingerprint(read_canonical_dir(synthetic_dir))[:12]}" / "scratch"
    folder.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {}, "epoch": 1, "payload": _Planted(marker)}, folder / "last.ckpt")

    result = _cli(tmp_path, "onboard", *options)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not marker.exists()
    assert not folder.exists()  # the scratch fit used this folder, then finished and removed it
