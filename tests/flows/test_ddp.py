"""DDP over two CPU processes (gloo), launched as Lightning launches it: the same fit, the same data, the
global batch shared between the ranks. Its metrics must match one process's within a stated tolerance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("ddp_fit.py")
#: DDP sees the same global batches' gradients (averaged over the ranks), in another shuffled order: the
#: test NDCG@10 may differ by this much
TOLERANCE = 0.03


def _fit(tmp_path: Path, devices: int, strategy: str) -> dict:
    out = tmp_path / f"fit-{devices}-{strategy}.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--devices", str(devices), "--strategy", strategy,
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_ddp_on_two_cpu_processes_learns_like_one_process(tmp_path):
    one = _fit(tmp_path, 1, "auto")
    two = _fit(tmp_path, 2, "ddp")
    assert two["steps"] == one["steps"]  # the global batch is split, not doubled: as many steps an epoch
    assert max(two["val"]) > two["initial"] + 0.05  # it learnt under DDP
    assert two["test_ndcg_at_10"] == pytest.approx(one["test_ndcg_at_10"], abs=TOLERANCE), (one, two)
