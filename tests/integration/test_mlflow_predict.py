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


def _post(url: str, payload: object) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_serve_model_answers_http_requests_like_recommend(tmp_path: Path):
    """`transferrec serve-model` (MLflow's scoring server) answers real HTTP requests: top-k with scores, the
    fallback said for unknown users, the same items as `transferrec recommend`; bad requests get a 400 with a
    reason, and 10,000 users in one request are answered."""
    import time
    import urllib.request

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = tracking.ensure_experiment(uri, "serving")
    run = tracking.start_run(uri, experiment, "model")
    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in range(300)], dtype=object)
    model = FactorModel(users, np.array([f"i{j}" for j in range(50)], dtype=object),
                        rng.standard_normal((300, 8)).astype(np.float32),
                        rng.standard_normal((50, 8)).astype(np.float32), rng.standard_normal(50).astype(np.float32))
    tracking.register_model(uri, "transferrec-shop", tracking.log_factor_model(uri, run, model), run_id=run, tags={},
                            aliases=["champion"])
    tracking.end_run(uri, run)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PREFECT_HOME": str(tmp_path / "prefect")}
    from flows.services import free_port

    port = free_port()
    server = subprocess.Popen([str(BIN / "transferrec"), "serve-model", "--target-domain", "shop", "--port",
                               str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, server.communicate()[1][-2000:]
                time.sleep(0.5)

        asked = ["u3", "u7", "stranger"]
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"user_id": u} for u in asked],
                                                     "params": {"k": 5}})
        assert status == 200, body
        answers = body["predictions"]
        assert [a["user_id"] for a in answers] == asked
        assert [a["fallback"] for a in answers] == [False, False, True]
        expected, scores = model.top_k(np.array(asked, dtype=object), k=5)
        assert [a["item_ids"] for a in answers] == expected
        assert np.allclose([a["scores"] for a in answers], scores, atol=1e-5)
        assert all(a["scores"] == sorted(a["scores"], reverse=True) for a in answers)
        # the same as `transferrec recommend` with the same model
        file, out = tmp_path / "users.csv", tmp_path / "top.parquet"
        file.write_text("user_id\n" + "\n".join(asked) + "\n")
        done = subprocess.run([str(BIN / "transferrec"), "recommend", "--target-domain", "shop", "--users",
                               str(file), "--k", "5", "--out", str(out)], env=env, capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        top = pl.read_parquet(out)
        assert [top.filter(pl.col("user_id") == u).sort("rank")["item_id"].to_list() for u in asked] == expected

        # an unknown field is ignored (the schema names user_id alone); k <= 0 and a missing user_id are refused
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"user_id": "u3", "colour": "red"}],
                                                     "params": {"k": 5}})
        assert status == 200 and body["predictions"][0]["item_ids"] == expected[0]
        for k in (0, -3):
            status, body = _post(f"{base}/invocations", {"dataframe_records": [{"user_id": "u3"}], "params": {"k": k}})
            assert status == 400 and f"k must be at least 1, got {k}" in body["stack_trace"], body
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"customer": "u3"}]})
        assert status == 400 and "user_id" in body["message"]
        # 10,000 users in one request: every one answered, known or not
        many = [f"u{i % 400}" for i in range(10_000)]
        status, body = _post(f"{base}/invocations", {"dataframe_records": [{"user_id": u} for u in many],
                                                     "params": {"k": 3}})
        assert status == 200 and len(body["predictions"]) == 10_000
        assert sum(a["fallback"] for a in body["predictions"]) == sum(1 for u in many if int(u[1:]) >= 300)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 0 and stderr.strip().endswith("stopped serving models:/transferrec-shop@champion")
