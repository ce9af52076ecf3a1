"""The MLflow UI in a real browser: after an onboarding, `transferrec ui --snapshot` starts `mlflow ui` on loopback,
opens the compare view of the onboarding's model runs in headless Chromium, and the runs and the test/ndcg_at_10 row
are on screen with the values MLflow stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_compare_view_shows_the_runs_and_their_ndcg(tmp_path: Path, synthetic_dir: Path, require_services):
    require_services("playwright", "chromium")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "PREFECT_HOME": str(tmp_path / "prefect"), "TRANSFERREC_DATA_DIR": str(tmp_path / "cache")}
    done = subprocess.run([str(BIN / "transferrec"), "onboard", "--data", str(synthetic_dir), "--target-domain",
                           "games", "--target-fraction", "0.3", "--top-single", "1", "--dim", "8", "--max-epochs", "3",
                           "--json"], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    parent = json.loads(done.stdout.strip().splitlines()[-1])["mlflow_run_id"]

    shot = tmp_path / "compare.png"
    done = subprocess.run([str(BIN / "transferrec"), "ui", "--snapshot", str(shot), "--target-domain", "games"],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000

    # "<png>: test/ndcg_at_10 transfer 0.339, scratch 0.234, ..." -- what the browser read off the screen
    line = done.stdout.strip().splitlines()[-1]
    shown = dict(pair.rsplit(" ", 1) for pair in line.split("test/ndcg_at_10 ", 1)[1].split(", "))
    assert set(shown) == {"transfer", "scratch", "als", "popularity"}
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    children = mlflow.search_runs(experiment_names=["transferrec-games"],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent}'")
    stored = dict(zip(children["tags.mlflow.runName"], children["metrics.test/ndcg_at_10"], strict=True))
    for name, value in shown.items():  # the UI rounds to three decimals
        assert float(value) == pytest.approx(stored[name], abs=6e-4), (name, value, stored[name])


def test_snapshot_without_an_onboarding_is_a_clear_usage_error(tmp_path: Path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([str(BIN / "transferrec"), "ui", "--snapshot", str(tmp_path / "x.png"),
                           "--target-domain", "nowhere"], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert "no onboarding of 'nowhere'" in done.stderr
    assert not (tmp_path / "x.png").exists()
