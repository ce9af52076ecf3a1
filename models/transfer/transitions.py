"""Cross-domain transitions: which target items users took right after what they did in the other domains.

The closed-form recipe (:mod:`models.transfer.closed_form`) weighs each user's latest source interactions most;
this module reads the order of those interactions too. From the target's training pairs and the time-safe source
pairs of the same users, merged into one timeline per user (by time; at the same time a source interaction comes
first):

1. **Transitions** ``T[j, i]``: for every target training interaction with item ``i``, each of the user's source
   interactions with item ``j`` among the ``window`` positions before it adds ``exp(-(d - 1)/decay)`` (``d``: how
   many positions before). Row ``j`` is divided by its total to the power ``popularity``, so that a source item
   everybody takes does not speak for every target item.
2. **A user's history**: their ``history`` latest source interactions before a time (their first test interaction
   when evaluated and served; their first validation interaction when validated), the ``r``-th latest (0: the most
   recent) at weight ``exp(-r/recency)`` (ties in time share their places, :func:`models.split.recency_ranks`).
3. **Scores** ``s(u, i) = Σ_j h_u[j]·T[j, i]``: what followed, across every user, what this user did last.

The recipe's scores and these are blended as ``recipe + weight·(σ_recipe/σ_transitions)·s`` (σ: each score's
spread over the users and the catalogue), the weight chosen on validation with every user's history as of their
validation period (:func:`validation_cutoffs`), as a served model would have had it. As a
:class:`~models.factors.FactorModel` the blend keeps the recipe's factors and appends each user's transition scores
as user factors against the identity as item factors (dimension: the recipe's plus the catalogue's).

The transitions need the interactions' times and shared users; above :data:`MAX_CELLS` users × catalogue items the
scores are not kept (:func:`transition_scores` returns None) and the recipe is used alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import polars as pl
from scipy import sparse

from data_contracts.columns import TIMESTAMP, USER_ID
from models.factors import FactorModel, index_of
from models.split import recency_ranks

#: Largest users × catalogue items of the dense transition scores (float32: 800 MB), the dense peers' bound.
MAX_CELLS = 200_000_000


@dataclass(frozen=True)
class TransitionGrid:
    """The transitions' numbers (chosen on the development genres of ``bench/quality.py``; ``bench/
    transfer_variants.py --transitions``) and the blend weights tried on validation (0: the recipe alone)."""

    window: int = 10  # positions before a target interaction whose source interactions count
    decay: float = 20.0
    popularity: float = 0.5
    history: int = 50  # a user's latest source interactions read
    recency: float = 5.0
    weights: tuple[float, ...] = (0.0, 0.25, 1.0, 4.0, 16.0, 64.0)


@dataclass(frozen=True)
class Timeline:
    """The joint pairs' times (Unix seconds, one per pair of :class:`~models.transfer.joint.JointTrain`) and, per
    joint user, the time of their first validation interaction (``inf``: none; None: not known)."""

    times: np.ndarray
    validation: np.ndarray | None = None


def validation_cutoffs(user_ids: np.ndarray, val: pl.DataFrame) -> np.ndarray:
    """Per user of ``user_ids``, the time of their first interaction in ``val`` (``inf`` where they have none)."""
    first = val.group_by(USER_ID).agg(pl.col(TIMESTAMP).min())
    rows = index_of(user_ids, first[USER_ID])
    out = np.full(len(user_ids), np.inf)
    out[rows[rows >= 0]] = first[TIMESTAMP].to_numpy()[rows >= 0]
    return out


def transition_matrix(users: np.ndarray, items: np.ndarray, times: np.ndarray, n_source: int, n_items: int,
                      n_catalogue: int, grid: TransitionGrid) -> sparse.csr_matrix:
    """``T`` of step 1 of the module docstring, (n_items x n_catalogue), rows divided by their total to the power
    ``grid.popularity``; the first ``n_source`` pairs ``(users, items, times)`` are source interactions, the rest
    target training ones (their items < ``n_catalogue``)."""
    target = np.arange(len(users)) >= n_source
    order = np.lexsort((items, target, times, users))  # by user, time, source first, item
    u, i, t = users[order], items[order], target[order]
    rows, cols, weights = [], [], []
    for d in range(1, grid.window + 1):
        after, before = np.arange(d, len(u)), np.arange(0, len(u) - d)
        keep = t[after] & ~t[before] & (u[after] == u[before])
        rows.append(i[before[keep]])
        cols.append(i[after[keep]])
        weights.append(np.full(int(keep.sum()), np.exp(-(d - 1) / grid.decay)))
    counts = sparse.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
                               shape=(n_items, n_catalogue))
    counts.sum_duplicates()
    total = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.zeros_like(total)
    scale[total > 0] = total[total > 0] ** -grid.popularity
    return sparse.diags(scale) @ counts


def history(users: np.ndarray, items: np.ndarray, times: np.ndarray, n_users: int, n_items: int,
            grid: TransitionGrid, before: np.ndarray | None = None) -> sparse.csr_matrix:
    """Each user's weighted latest source interactions (step 2 of the module docstring), (n_users x n_items), from
    the source pairs ``(users, items, times)``; ``before``: per user, only their interactions before that time."""
    if before is not None:
        keep = times < before[users]
        users, items, times = users[keep], items[keep], times[keep]
    ranks = recency_ranks(pl.DataFrame({USER_ID: users, TIMESTAMP: times}))
    latest = ranks < grid.history
    weights = np.exp(-ranks[latest].astype(np.float64) / grid.recency)
    out = sparse.csr_matrix((weights, (users[latest], items[latest])), shape=(n_users, n_items))
    out.sum_duplicates()
    return out


def transition_scores(users: np.ndarray, items: np.ndarray, times: np.ndarray, *, n_source: int, n_users: int,
                      n_items: int, n_catalogue: int, grid: TransitionGrid,
                      before: np.ndarray | None = None) -> np.ndarray | None:
    """``s(u, i)`` of the module docstring for every user and catalogue item, (n_users x n_catalogue) float32, from
    the joint pairs (the first ``n_source`` source ones, then the target's training ones); ``before``: each user's
    history as of that time (per user). None above :data:`MAX_CELLS`."""
    if n_users * n_catalogue > MAX_CELLS:
        return None
    t = transition_matrix(users, items, times, n_source, n_items, n_catalogue, grid)
    h = history(users[:n_source], items[:n_source], times[:n_source], n_users, n_items, grid, before)
    return np.asarray((h @ t).todense(), dtype=np.float32)


def spread(model: FactorModel, n_catalogue: int, chunk: int = 65_536) -> float:
    """The standard deviation of ``model``'s scores over its users and its first ``n_catalogue`` items (summed over
    ``chunk`` users at a time: no users x items array of float64)."""
    items = model.item_factors[:n_catalogue].T.astype(np.float64)
    bias = model.item_bias[:n_catalogue].astype(np.float64)
    total = squares = 0.0
    for first in range(0, len(model.user_ids), chunk):
        scores = model.user_factors[first:first + chunk].astype(np.float64) @ items + bias
        total, squares = total + scores.sum(), squares + np.square(scores).sum()
    cells = len(model.user_ids) * n_catalogue
    return float(np.sqrt(max(squares / cells - (total / cells) ** 2, 0.0))) if cells else 0.0


def blended(model: FactorModel, scores: np.ndarray, weight: float, scale: float) -> FactorModel:
    """``model`` (over the catalogue, one row per user of ``scores``) plus ``weight·scale·scores``: its factors with
    the weighted scores appended to the users' and the identity to the items'."""
    n = scores.shape[1]
    users = np.hstack([model.user_factors, (weight * scale * scores).astype(np.float32)])
    items = np.hstack([model.item_factors, np.eye(n, dtype=np.float32)])
    return replace(model, user_factors=users, item_factors=items)
