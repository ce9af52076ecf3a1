"""Click-through-rate estimators from impression logs.

**Logged-slate CTR@K** (``ctr_at_K``): for every user, re-rank the items that user was actually shown
(their impressions) by the model's score and keep the top ``K`` (all of them when fewer were shown); the
estimate is the click share of the kept impressions, pooled over users (sum of clicks / sum of kept
impressions). It is reported next to

* ``ctr_logged``: the click share of all impressions (what the logged order achieved), and
* ``ctr_random_at_K``: the expected logged-slate CTR@K of a uniformly random re-ranking.

What it estimates: how well the model orders items a user was shown anyway. It does not estimate the CTR
of items the model would show that were never shown (no counterfactual correction). For MovieLens the
impressions are the user's held-out rated items and a click is ``rating >= 4``; most users have few held-out
ratings, so this number separates models only weakly: report it, never select on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ESTIMATOR = "logged-slate re-rank"


@dataclass(frozen=True)
class CtrResult:
    """A CTR estimate with its name and sample size."""

    k: int
    ctr_at_k: float
    ctr_logged: float
    ctr_random_at_k: float
    users: int
    impressions: int
    estimator: str = ESTIMATOR

    def metrics(self) -> dict[str, float]:
        """Flat metric dict (``ctr_at_K``, ``ctr_logged``, ``ctr_random_at_K``)."""
        return {
            f"ctr_at_{self.k}": self.ctr_at_k,
            "ctr_logged": self.ctr_logged,
            f"ctr_random_at_{self.k}": self.ctr_random_at_k,
        }


def logged_slate_ctr(scores: np.ndarray, indptr: np.ndarray, clicks: np.ndarray, *, k: int) -> CtrResult:
    """Logged-slate CTR@k (see module docs).

    Args:
        scores: model score of every impression, grouped by user as given by ``indptr``.
        indptr: (users + 1,) offsets of each user's impressions.
        clicks: bool per impression.
        k: slate size.

    Raises:
        ValueError: when the arrays disagree in length or ``k < 1``.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if len(scores) != len(clicks) or indptr[-1] != len(scores):
        raise ValueError("scores, clicks and indptr disagree")
    lengths = np.diff(indptr)
    users = lengths > 0
    kept = np.minimum(lengths, k)
    clicked_in_top = 0.0
    for u in np.flatnonzero(users):
        s, e = indptr[u], indptr[u + 1]
        # stable sort on -score: ties keep the logged order
        order = np.argsort(-scores[s:e], kind="stable")[: kept[u]]
        clicked_in_top += clicks[s:e][order].sum()
    clicks_per_user = np.add.reduceat(clicks.astype(np.float64), indptr[:-1][users]) if users.any() else np.zeros(0)
    random_clicks = (kept[users] * clicks_per_user / lengths[users]).sum()
    total_kept = kept[users].sum()
    return CtrResult(
        k=k,
        ctr_at_k=float(clicked_in_top / total_kept) if total_kept else float("nan"),
        ctr_logged=float(clicks.mean()) if len(clicks) else float("nan"),
        ctr_random_at_k=float(random_clicks / total_kept) if total_kept else float("nan"),
        users=int(users.sum()),
        impressions=int(len(clicks)),
    )
