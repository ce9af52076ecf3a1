"""Top-K ranking metrics as pure, vectorised numpy functions.

Conventions shared by every metric (``k`` = cut-off, ``R_u`` = user u's relevant items):

* A ranking is a row of item indices, best first; only its first ``k`` entries count.
* Users with no relevant item are left out of every mean (their metrics are undefined, not zero).
* Relevance is binary. The ranking is taken as given: ties in the model's scores must be broken before
  (the evaluation breaks them by ``torch.topk`` order, deterministic for a given input).
* Users with fewer than ``k`` relevant items are not penalised by NDCG@k or MAP@k, whose ideal uses
  ``min(|R_u|, k)``; precision@k still divides by ``k`` (so its maximum is ``|R_u|/k`` for such users).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

METRIC_NAMES = ("precision", "recall", "ndcg", "hit_rate", "mrr", "map")


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def per_user_metrics(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user metrics at ``k`` from a hit matrix.

    Args:
        hits: bool array (users, >= k); ``hits[u, j]`` says whether the item at rank ``j`` (0-based) is relevant.
        n_relevant: int array (users,), ``|R_u|``; must be >= 1 for every row.
        k: cut-off.

    Returns:
        ``{name: float array (users,)}`` for

        * ``precision``: hits in the top k / k.
        * ``recall``: hits in the top k / |R_u|.
        * ``ndcg``: DCG / ideal DCG with binary gains and discount 1/log2(rank + 1) (rank 1-based);
          the ideal ranks ``min(|R_u|, k)`` relevant items first.
        * ``hit_rate``: 1 if any of the top k is relevant, else 0.
        * ``mrr``: 1 / rank of the first relevant item within the top k, else 0.
        * ``map``: sum of precision@i over the ranks i <= k that hold a relevant item, / ``min(|R_u|, k)``.

    Raises:
        ValueError: if ``hits`` has fewer than ``k`` columns or a user has no relevant item.
    """
    if hits.ndim != 2 or hits.shape[1] < k:
        raise ValueError(f"hits must be (users, >= {k}), got shape {hits.shape}")
    n_relevant = np.asarray(n_relevant, dtype=np.float64)
    if (n_relevant < 1).any():
        raise ValueError("every user needs at least one relevant item")
    top = np.asarray(hits[:, :k], dtype=np.float64)
    n_hits = top.sum(axis=1)
    discounts = _discounts(k)
    dcg = top @ discounts
    ideal_len = np.minimum(n_relevant, k).astype(np.int64)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_len]
    ranks = np.arange(1, k + 1, dtype=np.float64)
    first = np.where(top.any(axis=1), top.argmax(axis=1) + 1.0, np.inf)
    precision_at_i = np.cumsum(top, axis=1) / ranks
    return {
        "precision": n_hits / k,
        "recall": n_hits / n_relevant,
        "ndcg": dcg / ideal,
        "hit_rate": (n_hits > 0).astype(np.float64),
        "mrr": 1.0 / first,
        "map": (precision_at_i * top).sum(axis=1) / np.minimum(n_relevant, k),
    }


def hits_from_rankings(topk: np.ndarray, relevant: Sequence[Iterable[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Hit matrix and relevant-set sizes from rankings and per-user relevant sets."""
    topk = np.asarray(topk)
    if topk.ndim != 2 or topk.shape[0] != len(relevant):
        raise ValueError(f"topk must be (users, k) with one row per relevant set; got {topk.shape}, {len(relevant)}")
    sets = [set(int(i) for i in r) for r in relevant]
    hits = np.array([[int(i) in s for i in row] for row, s in zip(topk, sets, strict=True)], dtype=bool)
    return hits.reshape(topk.shape), np.array([len(s) for s in sets], dtype=np.int64)


def ranking_metrics(topk: np.ndarray, relevant: Sequence[Iterable[int]], k: int) -> dict[str, float]:
    """Mean top-``k`` metrics over the users that have at least one relevant item.

    Args:
        topk: integer array (users, >= k) of item indices, best first.
        relevant: per user (same order as ``topk``), the relevant item indices.
        k: cut-off.

    Returns:
        ``{"precision_at_k", "recall_at_k", "ndcg_at_k", "hit_rate_at_k", "mrr_at_k", "map_at_k"}``
        (k replaced by its value), each a mean over users with ``|R_u| >= 1`` (see :func:`per_user_metrics`);
        NaN for every metric when no user has a relevant item.
    """
    hits, n_relevant = hits_from_rankings(topk, relevant)
    keep = n_relevant > 0
    if not keep.any():
        return {f"{name}_at_{k}": float("nan") for name in METRIC_NAMES}
    per_user = per_user_metrics(hits[keep], n_relevant[keep], k)
    return {f"{name}_at_{k}": float(values.mean()) for name, values in per_user.items()}


def catalogue_coverage(topk: np.ndarray, n_items: int, k: int) -> float:
    """Catalogue coverage@k: the share of the ``n_items`` catalogue items that appear in at least one user's
    top ``k`` (``topk``: item indices, users x >= k). 0 for an empty catalogue or no users."""
    topk = np.asarray(topk)
    if n_items == 0 or topk.size == 0:
        return 0.0
    return float(len(np.unique(topk[:, :k])) / n_items)


def item_self_information(counts: np.ndarray) -> np.ndarray:
    """``-log2 p_i`` per item with ``p_i = (count_i + 1) / (sum(counts) + n_items)``: how surprising item i is
    under the training popularity (add-one smoothing, so items never seen get the largest finite value)."""
    counts = np.asarray(counts, dtype=np.float64)
    return -np.log2((counts + 1.0) / (counts.sum() + len(counts)))


def per_user_novelty(topk: np.ndarray, counts: np.ndarray, k: int) -> np.ndarray:
    """Novelty@k per user: the mean self-information (:func:`item_self_information`) of the user's top ``k``
    items. Higher = less popular recommendations."""
    return item_self_information(counts)[np.asarray(topk)[:, :k]].mean(axis=1)
