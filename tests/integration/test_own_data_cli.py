"""A company's own files, broken: `transferrec validate DIR` and `transferrec onboard --data DIR` report the same
violation the same way, and the onboarding registers nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import polars as pl
import pytest

from models.data.synthetic import generate_retail, write_retail_export

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_a_violation_in_own_files_is_reported_alike_by_validate_and_onboard(tmp_path: Path):
    shop = write_retail_export(generate_retail(n_customers=150, products_per_category=20, seed=1), tmp_path / "shop")
    part = next((shop / "interactions").rglob("*.parquet"))
    frame = pl.read_parquet(part)
    pl.concat([frame.head(2).with_columns(pl.lit(9.0).alias("stars")), frame.slice(2)]).write_parquet(part)
    columns = ["--columns", str(shop / "columns.yaml")]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "TRANSFERREC_DATA_DIR": str(tmp_path / "cache")}

    validate = subprocess.run([str(BIN / "transferrec"), "validate", str(shop), *columns], env=env,
                              capture_output=True, text=True, timeout=300, cwd=tmp_path)
    # in batches, as for tables bigger than memory: the same report
    batched = subprocess.run([str(BIN / "transferrec"), "validate", str(shop), *columns, "--batch-rows", "300"],
                             env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert batched.returncode == 1 and batched.stderr == validate.stderr, batched.stderr[-2000:]
    onboard = subprocess.run([str(BIN / "transferrec"), "onboard", "--data", str(shop), *columns,
                              "--target-domain", "garden", "--dim", "8", "--top-single", "1"], env=env,
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert validate.returncode == 1 and onboard.returncode == 1, (validate.stderr[-2000:], onboard.stderr[-2000:])

    def interactions_report(stderr: str) -> str:
        section = stderr[stderr.index("### `interactions` contract"):]
        return section[:section.index("\n### ")] if "\n### " in section else section.strip()

    report = interactions_report(validate.stderr)
    assert "| rating |" in report and "2 |" in report  # the column by its canonical name, the 2 broken rows
    assert interactions_report(onboard.stderr).strip() == report.strip()

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["transferrec-garden"])
    assert list(runs["status"]) == ["FAILED"]  # the run is marked FAILED ...
    registered = mlflow.MlflowClient().search_registered_models(filter_string="name = 'transferrec-garden'")
    assert not registered  # ... and nothing is registered
