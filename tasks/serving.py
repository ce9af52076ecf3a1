"""The MLflow pyfunc wrapper that serves a :class:`~models.factors.FactorModel` as top-K recommendations.

Input: a DataFrame with a ``user_id`` column. Output: ``user_id``, ``item_ids`` (top-K, best first), their
``scores`` and ``fallback`` (true for a user the model has no vector for: they get the item-bias ranking,
popularity). Parameter ``k`` (default 10, at least 1).

This module and :mod:`models.factors` are all a logged model needs besides numpy, pandas, polars and MLflow: they
travel with it (``code_paths``), so it serves outside this repository.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from models.factors import FactorModel

FACTORS_ARTIFACT = "factors"


class FactorRecommender(mlflow.pyfunc.PythonModel):
    """Top-K recommender over the arrays saved by :meth:`FactorModel.save`."""

    def load_context(self, context: Any) -> None:
        self.model = FactorModel.load(Path(context.artifacts[FACTORS_ARTIFACT]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        k = int((params or {}).get("k", 10))
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        users = model_input["user_id"].astype(str).to_numpy().astype(object)
        items, scores = self.model.top_k(users, k=k)
        return pd.DataFrame({"user_id": users, "item_ids": [np.array(r, dtype=object) for r in items],
                             "scores": [np.asarray(row, dtype=np.float64) for row in scores],
                             "fallback": ~self.model.knows(users)})


def recommend_with(tracking_uri: str, model_uri: str, users: pd.DataFrame, *, k: int) -> pd.DataFrame:
    """Top-``k`` of the pyfunc model at ``model_uri`` (e.g. ``models:/transferrec-horror@champion``) for
    ``users`` (a ``user_id`` column), long format: ``user_id``, ``rank`` (1 = best), ``item_id``.

    Raises:
        mlflow.exceptions.MlflowException: when the model or alias does not exist.
    """
    mlflow.set_tracking_uri(tracking_uri)  # the registry follows it (the registry URI is never set apart)
    model = mlflow.pyfunc.load_model(model_uri)
    out = model.predict(users[["user_id"]].astype({"user_id": str}), params={"k": k})
    rows = [(user, rank, str(item)) for user, items in zip(out["user_id"], out["item_ids"], strict=True)
            for rank, item in enumerate(items, start=1)]
    return pd.DataFrame(rows, columns=["user_id", "rank", "item_id"])


def scoring_app(tracking_uri: str, model_uri: str) -> Any:
    """MLflow's own scoring server (FastAPI: ``POST /invocations``, ``GET /ping``, ``GET /version``) over the
    pyfunc model at ``model_uri``, loaded once. A request names users and ``k``:
    ``{"dataframe_records": [{"user_id": "u1"}], "params": {"k": 10}}``; the answer holds, per user, the top-k
    ``item_ids``, their ``scores`` and ``fallback``.

    Raises:
        mlflow.exceptions.MlflowException: when the model or alias does not exist.
    """
    from mlflow.pyfunc import scoring_server

    mlflow.set_tracking_uri(tracking_uri)
    return scoring_server.init(mlflow.pyfunc.load_model(model_uri))
