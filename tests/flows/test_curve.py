"""The data-efficiency curve flow on synthetic data (real Prefect, MLflow, Lightning)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from flows.cli import main
from flows.config import CurveConfig
from flows.curve import data_efficiency_flow
from models.evaluation.curve import time_to_quality


def test_time_to_quality_known_answers():
    history = [{"epoch": 0, "elapsed": 1.0, "val/ndcg_at_10": 0.1}, {"epoch": 1, "elapsed": 2.5, "val/ndcg_at_10": 0.3}]
    assert time_to_quality(history, initial=0.05, target=0.2, setup_seconds=0.5) == (3.0, 2)
    assert time_to_quality(history, initial=0.25, target=0.2, setup_seconds=0.5) == (0.5, 0)
    assert time_to_quality(history, initial=0.05, target=0.9) == (None, None)


@pytest.mark.slow
def test_curve_flow_logs_a_point_per_fraction(synthetic_dir: Path, mlflow_uri: str, capsys):
    result = data_efficiency_flow(CurveConfig.smoke("games", synthetic_dir, mlflow_uri,
                                                    fractions=(0.001, 0.3, 1.0)))
    points = result["points"]
    assert [p["fraction"] for p in points] == [0.3, 1.0]
    # a fraction that leaves too few users is skipped with its reason; the curve goes on
    assert list(result["skipped"]) == [0.001] and "fewer than the minimum" in result["skipped"][0.001]
    assert "fraction 0.001: skipped" in result["table_markdown"]
    assert points[0]["train_interactions"] < points[1]["train_interactions"]
    for p in points:
        for key in ("transfer_test_ndcg_at_10", "scratch_test_ndcg_at_10", "popularity_test_ndcg_at_10"):
            assert 0.0 <= p[key] <= 1.0
        # scratch reaches its own best validation score, at its best epoch
        assert p["scratch_epochs_to_target"] >= 1 and p["scratch_seconds_to_target"] > 0
        assert p["transfer_seconds_to_target"] is None or p["transfer_seconds_to_target"] >= 0
    client = mlflow.MlflowClient(mlflow_uri)
    artifacts = {a.path for a in client.list_artifacts(result["mlflow_run_id"], "curve")}
    assert {"curve/curve.png", "curve/curve.json", "curve/curve.md"} <= artifacts
    history = client.get_metric_history(result["mlflow_run_id"], "curve/transfer_test_ndcg_at_10")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(
        [p["transfer_test_ndcg_at_10"] for p in points])

    # the command line: same flow, sources reused, JSON on the last line
    capsys.readouterr()
    assert main(["curve", "--data", str(synthetic_dir), "--target-domain", "games", "--fractions", "1.0",
                 "--top-single", "1", "--dim", "16", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["fraction"] for p in payload["points"]] == [1.0]
