"""An onboarding with the closed-form recipe's cross-domain transitions (``finetune.transitions``): chosen on
validation as of each user's validation period, logged with what it chose, and refitted for serving with them."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from flows.config import OnboardConfig
from flows.onboard import onboard_domain_flow
from models.transfer.transitions import TransitionGrid
from tasks import tracking

TARGET = "games"


def test_an_onboarding_with_transitions_validates_logs_and_serves_them(synthetic_dir: Path, mlflow_uri: str):
    config = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    config = config.model_copy(update={"finetune": config.finetune.model_copy(update={"transitions": True})})
    summary = onboard_domain_flow(config)

    mlflow.set_tracking_uri(mlflow_uri)
    table = mlflow.search_runs(experiment_names=["transferrec-games"])
    children = table[table["tags.mlflow.parentRunId"] == summary.mlflow_run_id]
    transfer = children[children["tags.mlflow.runName"] == "transfer"].iloc[0]
    assert transfer["params.transfer.recipe"] == "closed-form", "the smoke data keeps the closed-form recipe"
    weight = float(transfer["params.transfer.transition_weight"])
    assert weight in TransitionGrid().weights
    assert int(transfer["params.transfer.transition_window"]) == TransitionGrid().window
    # validated as chosen: the evaluation scored the model as of each user's validation period, the recipe's score
    assert transfer["metrics.val/ndcg_at_10"] == pytest.approx(
        float(transfer["params.transfer.closed_form_val_ndcg_at_10"]))
    evaluated = tracking.load_factor_model(
        mlflow_uri, f"runs:/{transfer['run_id']}/{tracking.WEIGHTS_ARTIFACT}")
    catalogue = len(evaluated.item_ids)
    assert evaluated.dim == 64 + (catalogue if weight else 0)  # the recipe's factors, then one per catalogue item
    if weight:
        np.testing.assert_array_equal(evaluated.item_factors[:, 64:], np.eye(catalogue, dtype=np.float32))
    if summary.winner == "transfer":  # the refit carries the transitions over too, on every interaction
        version = mlflow.MlflowClient(mlflow_uri).get_model_version("transferrec-games", summary.model_version)
        refit = children[children["tags.mlflow.runName"] == "refit:transfer"].iloc[0]
        assert float(refit["params.refit.transition_weight"]) == weight
        served = tracking.load_factor_model(mlflow_uri, f"models:/transferrec-games/{version.version}")
        assert served.dim == evaluated.dim
