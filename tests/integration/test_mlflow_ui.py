"""`transferrec ui --snapshot` without an onboarding to show. The browser itself is exercised by the guide's
walkthrough test (tests/integration/test_guide_walkthrough.py: the values read off the compare view equal
MLflow's) and, against a signed-in tracking server, by tests/integration/test_server_mode.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def test_snapshot_without_an_onboarding_is_a_clear_usage_error(tmp_path: Path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    done = subprocess.run([str(BIN / "transferrec"), "ui", "--snapshot", str(tmp_path / "x.png"),
                           "--target-domain", "nowhere"], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 2
    assert "no onboarding of 'nowhere'" in done.stderr
    assert not (tmp_path / "x.png").exists()
