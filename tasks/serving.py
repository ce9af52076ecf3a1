"""The MLflow pyfunc wrapper that serves a :class:`~models.factors.FactorModel` as top-K recommendations.

Input: a DataFrame with a ``user_id`` column. Output: ``user_id`` and ``item_ids`` (top-K, best first).
Parameter ``k`` (default 10). Unknown users get the item-bias ranking (popularity-like).
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
        users = model_input["user_id"].astype(str).to_numpy().astype(object)
        recommendations = self.model.recommend(users, k=k)
        return pd.DataFrame({"user_id": users, "item_ids": [np.array(r, dtype=object) for r in recommendations]})


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
