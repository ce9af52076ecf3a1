"""docs/guide.md's ten-minute walkthrough, command by command, as a user would paste it: synthetic retail data ->
validate -> onboard -> compare -> snapshot -> recommend."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest

from tasks.registry import BASELINES

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"
BIN = Path(sys.executable).parent
EXPECTED_EXIT = {"transferrec validate shop": 1}  # the guide shows this one failing on purpose


def walkthrough_commands(text: str) -> list[str]:
    """The commands of the guide's walkthrough block (between the walkthrough markers), comments dropped."""
    block = re.search(r"<!-- walkthrough:start -->\s*```bash\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S)
    assert block, "docs/guide.md has no walkthrough block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_the_walkthrough_block_is_found_and_complete():
    commands = walkthrough_commands(GUIDE.read_text())
    verbs = [c.split()[1] for c in commands if c.startswith("transferrec ")]
    assert verbs == ["synthetic", "domains", "validate", "validate", "onboard", "compare", "ui", "recommend"]
    assert set(EXPECTED_EXIT) <= set(commands)


@pytest.mark.slow
def test_every_walkthrough_command_runs(tmp_path: Path, require_services):
    require_services("playwright", "chromium")  # the walkthrough takes a snapshot of the MLflow compare view
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "TRANSFERREC_DATA_DIR": str(tmp_path / "cache")}
    env.pop("MLFLOW_TRACKING_URI", None)  # the guide relies on the default store, ./mlflow.db
    outputs = {}
    for command in walkthrough_commands(GUIDE.read_text()):
        done = subprocess.run(["bash", "-c", command], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == EXPECTED_EXIT.get(command, 0), (command, done.stderr[-3000:])
        outputs[command] = done
    failed = outputs["transferrec validate shop"].stderr
    assert "'customer_id' looks like 'user_id'" in failed and "`user_id: customer_id`" in failed
    assert "PASSED" in outputs["transferrec validate shop --columns shop/columns.yaml"].stdout
    onboard = next(o for c, o in outputs.items() if c.startswith("transferrec onboard"))
    assert "Registered transferrec-garden v1" in onboard.stdout
    assert (tmp_path / "mlflow.db").exists()

    # the snapshot: `mlflow ui` on loopback, the compare view in headless Chromium; what it read off the screen
    # ("garden.png: test/ndcg_at_10 transfer 0.543, scratch 0.175, ...") must be what MLflow stored
    shot = tmp_path / "garden.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    line = outputs["transferrec ui --snapshot garden.png --target-domain garden"].stdout.strip().splitlines()[-1]
    shown = dict(pair.rsplit(" ", 1) for pair in line.split("test/ndcg_at_10 ", 1)[1].split(", "))
    assert set(shown) == {"transfer", *BASELINES}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["transferrec-garden"])
    stored = dict(zip(runs["tags.mlflow.runName"], runs["metrics.test/ndcg_at_10"], strict=True))
    for name, value in shown.items():  # the UI rounds to three decimals
        assert float(value) == pytest.approx(stored[name], abs=6e-4), (name, value, stored[name])
    top = pl.read_parquet(tmp_path / "top5.parquet")
    assert top.height == 15 and sorted(top["user_id"].unique()) == ["c00001", "c00002", "new-customer"]
    assert top["item_id"].str.starts_with("garden-").all()  # garden's own catalogue, nothing else
