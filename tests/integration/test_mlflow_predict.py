"""A registered transferrec model serves through MLflow's own CLI (`mlflow models predict`) and through
`transferrec recommend`, with the same top-K."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.factors import FactorModel
from tasks import tracking

BIN = Path(sys.executable).parent


@pytest.mark.slow
def test_mlflow_models_predict_and_recommend_agree(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, "serving")
    run = tracking.start_run(uri, experiment, "model")
    model = FactorModel(np.array(["u1", "u2"], dtype=object), np.array(["a", "b", "c"], dtype=object),
                        np.eye(2, dtype=np.float32), np.array([[1, 0], [0, 1], [0.5, 0.5]], dtype=np.float32),
                        np.zeros(3, dtype=np.float32))
    model_uri = tracking.log_factor_model(uri, run, model)
    tracking.end_run(uri, run)
    tracking.register_model(uri, "transferrec-shop", model_uri, run_id=run, tags={}, aliases=["champion"])
    users = tmp_path / "users.csv"
    users.write_text("user_id\nu1\nu2\nnew\n")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(tmp_path / "prefect")}

    done = subprocess.run([str(BIN / "mlflow"), "models", "predict", "-m", "models:/transferrec-shop@champion",
                           "-i", str(users), "-t", "csv", "--env-manager", "local"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    predictions = json.loads(done.stdout.strip().splitlines()[-1])["predictions"]
    assert [p["item_ids"] for p in predictions[:2]] == [["a", "c", "b"], ["b", "c", "a"]]

    out = tmp_path / "top.parquet"
    done = subprocess.run([str(BIN / "transferrec"), "recommend", "--target-domain", "shop", "--users", str(users),
                           "--k", "3", "--out", str(out)], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    top = pl.read_parquet(out)
    by_user = {u: top.filter(pl.col("user_id") == u).sort("rank")["item_id"].to_list() for u in ("u1", "u2", "new")}
    assert [by_user["u1"], by_user["u2"]] == [p["item_ids"] for p in predictions[:2]]
    assert by_user["new"] == predictions[2]["item_ids"]  # an unknown user gets the bias ranking from both
