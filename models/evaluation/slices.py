"""Metrics by slice: where a model wins and where it does not.

User slices (each test user in exactly one group of each family):

* ``target_train``: how many target training interactions the user has: ``cold`` (0), ``light`` (1 to 4),
  ``warm`` (5 or more). Transfer should matter most for cold users.
* ``source``: whether the chosen source model knows the user (``in_source``) or not (``not_in_source``).

Item slices split the relevant test items into the ``head`` (the most-interacted items holding
:data:`HEAD_SHARE` of the target training interactions) and the ``tail``; for each, *item recall@k* is the share
of relevant (user, item) pairs of that group that appear in the user's top k.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from data_contracts.columns import ITEM_ID, USER_ID
from models.evaluation.ranking import RankingTask, score_batches
from models.factors import FactorModel, index_of

HEAD_SHARE = 0.5
LIGHT_MAX = 4


def user_slices(task: RankingTask, train: pl.DataFrame, source_users: np.ndarray | None) -> dict[str, np.ndarray]:
    """Boolean masks over ``task.user_ids``, keyed ``family:group`` (see the module docstring)."""
    counts = (pl.DataFrame({USER_ID: pl.Series(task.user_ids, dtype=pl.String)})
              .join(train.group_by(USER_ID).len(), on=USER_ID, how="left", maintain_order="left")["len"]
              .fill_null(0).to_numpy())
    masks = {"target_train:cold": counts == 0, "target_train:light": (counts > 0) & (counts <= LIGHT_MAX),
             "target_train:warm": counts > LIGHT_MAX}
    if source_users is not None:
        known = index_of(np.asarray(source_users, dtype=object), task.user_ids) >= 0
        masks.update({"source:in_source": known, "source:not_in_source": ~known})
    return masks


def sliced_means(per_user: dict[str, np.ndarray], masks: dict[str, np.ndarray],
                 metrics: tuple[str, ...] = ("ndcg_at_10", "recall_at_10")) -> dict[str, dict[str, float]]:
    """Mean of each per-user metric within each mask (``users``: its size; empty slices are left out)."""
    out = {}
    for name, mask in masks.items():
        if mask.any():
            out[name] = {"users": float(mask.sum()), **{m: float(per_user[m][mask].mean()) for m in metrics}}
    return out


def head_items(task: RankingTask, train: pl.DataFrame, *, share: float = HEAD_SHARE) -> np.ndarray:
    """Bool per catalogue column: the most popular items that together hold ``share`` of training interactions."""
    counts = (pl.DataFrame({ITEM_ID: pl.Series(task.item_ids, dtype=pl.String)})
              .join(train.group_by(ITEM_ID).len(), on=ITEM_ID, how="left", maintain_order="left")["len"]
              .fill_null(0).to_numpy().astype(np.float64))
    order = np.argsort(-counts, kind="stable")
    total = counts.sum()
    head = np.zeros(len(counts), dtype=bool)
    if total > 0:
        reached = np.cumsum(counts[order]) / total
        head[order[: int(np.searchsorted(reached, share) + 1)]] = True
    return head


def item_slice_recall(model: FactorModel, task: RankingTask, head: np.ndarray, *, k: int = 10
                      ) -> dict[str, dict[str, float]]:
    """Item recall@k of the ``head`` and ``tail`` relevant items (see the module docstring)."""
    found = {"head": 0, "tail": 0}
    total = {"head": 0, "tail": 0}
    n_items = len(task.item_ids)
    for rows, scores in score_batches(model, task):
        scores = scores.masked_fill(task.exclude.dense(rows, n_items), float("-inf"))
        top = torch.topk(scores, k=min(k, n_items), dim=1).indices
        in_top = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top, True).numpy()
        relevant = task.relevant.dense(rows, n_items).numpy().astype(bool)
        for group, columns in (("head", head), ("tail", ~head)):
            mask = relevant & columns[None, :]
            total[group] += int(mask.sum())
            found[group] += int((mask & in_top).sum())
    return {group: {"pairs": float(total[group]), f"item_recall_at_{k}": found[group] / total[group]}
            for group in found if total[group] > 0}
