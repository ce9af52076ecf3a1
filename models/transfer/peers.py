"""The target-only peers a practitioner reaches for on sparse data: EASE and item-item kNN (cosine), each tuned
on validation NDCG@10 over a small grid, on the same encoded training pairs as implicit ALS.

Both score a user by their training row ``x_u`` (1 where the user interacted with an item) times an
item-item matrix ``W``: ``score(u, i) = x_u · W[:, i]``. As a :class:`FactorModel` the user factors are the
scores ``x_u · W`` over the items scored and the item factors the identity (dimension = the items scored), so
evaluation, logging, registration and serving treat them like every other model. Their size grows with users x
items and items x items: above :data:`MAX_ITEMS` items or :data:`MAX_CELLS` user-item cells a peer is not fitted
(:class:`PeerTooLarge`, which the caller reports).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from models.evaluation.ranking import RankingTask, ndcg_at
from models.factors import FactorModel
from models.transfer.als import TIE_BREAK, EncodedTrain, TunedResult

#: Largest catalogue a peer is fitted on (its item-item matrix: items^2 float32, 400 MB at 10,000 items).
MAX_ITEMS = 10_000
#: Largest users x items a peer's dense user rows may take (float32: 800 MB).
MAX_CELLS = 200_000_000


class PeerTooLarge(ValueError):
    """The target is too large for a dense item-item peer."""


@dataclass(frozen=True)
class PeerGrid:
    """The hyper-parameters tried: EASE's L2 weight ``lambdas``; ItemKNN's ``neighbours`` kept per item."""

    lambdas: tuple[float, ...] = (10.0, 50.0, 200.0, 1000.0)
    neighbours: tuple[int, ...] = (20, 100, 400)


def _interactions(train: EncodedTrain) -> sparse.csr_matrix:
    """``X`` (users x items): 1 where the user has a training interaction with the item."""
    shape = (len(train.user_ids), len(train.item_ids))
    if len(train.item_ids) > MAX_ITEMS or shape[0] * shape[1] > MAX_CELLS:
        raise PeerTooLarge(f"{shape[0]:,} users x {shape[1]:,} items is above the dense peers' bound "
                           f"({MAX_ITEMS:,} items, {MAX_CELLS:,} cells)")
    x = sparse.csr_matrix((np.ones(len(train.users), dtype=np.float32), (train.users, train.items)), shape=shape)
    x.sum_duplicates()
    x.data[:] = 1.0  # presence: a repeated interaction counts once
    return x


def gram(x: sparse.csr_matrix) -> np.ndarray:
    """``X'X`` (items x items, float64): co-occurrence counts, the item-item peers' one pass over the data."""
    return (x.T @ x).toarray().astype(np.float64)


def _model(train: EncodedTrain, x: sparse.csr_matrix, popularity: np.ndarray, weights: np.ndarray,
           kind: str) -> FactorModel:
    """The peer over the first ``weights.shape[1]`` items of the catalogue (those it scores): each user's scores
    ``x_u · W`` as their factors and the identity as the items' (dimension = the items scored, however many
    items the rows span)."""
    scored = weights.shape[1]
    return FactorModel(train.user_ids, train.item_ids[:scored], np.asarray(x @ weights, dtype=np.float32),
                       np.eye(scored, dtype=np.float32),
                       (TIE_BREAK * np.log1p(popularity[:scored])).astype(np.float32), kind=kind)


def ease_weights(g: np.ndarray, l2: float, columns: int | None = None) -> np.ndarray:
    """EASE (Steck 2019) from the gram ``g = X'X``: ``B = argmin |X - XB|^2 + l2 |B|^2`` with ``diag(B) = 0``, in
    closed form: ``P = (X'X + l2 I)^-1``, ``B_ij = -P_ij / P_jj`` (``i != j``), ``B_jj = 0``. Returns the first
    ``columns`` columns of ``B`` (items x columns; default all), solved through one Cholesky factorisation.

    The factorisation and the solve run in torch (float64, LAPACK): they release Python's lock while they work,
    where scipy's hold it for the whole call, which at 5,000 items stopped every other thread of the process for
    four seconds a call (the other fits' Python, logging, progress, and the signal handler that ends a run on
    Ctrl-C). Their last bits follow torch's thread count, fixed for the process, so a fit beside others gives the
    same weights as alone. Every column at once is ``P`` itself, from the factor (``cholesky_inverse``)."""
    import torch

    items = g.shape[0]
    n = items if columns is None else columns
    regularised = np.array(g, dtype=np.float64)  # a copy: + l2 on the diagonal, without an items x items identity
    regularised.flat[:: items + 1] += l2
    factor = torch.linalg.cholesky(torch.from_numpy(regularised))
    del regularised
    p = (torch.cholesky_inverse(factor) if n == items
         else torch.cholesky_solve(torch.eye(items, n, dtype=torch.float64), factor)).numpy()
    b = -p / np.diag(p[:n])[None, :]
    b[np.arange(n), np.arange(n)] = 0.0
    return b


def itemknn_weights(g: np.ndarray, neighbours: int, columns: int | None = None) -> np.ndarray:
    """Item-item cosine similarity from the gram ``g = X'X``: ``S_ij = |U_i ∩ U_j| / sqrt(|U_i| |U_j|)`` (``U_i``:
    the users of item ``i``), ``S_ii = 0``, keeping in each column ``j`` its ``neighbours`` largest entries.
    Returns the first ``columns`` columns of ``S`` (items x columns; default all)."""
    n = g.shape[0] if columns is None else columns
    norms = np.sqrt(np.diag(g))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.nan_to_num(g[:, :n] / np.outer(norms, norms[:n]))
    s[np.arange(n), np.arange(n)] = 0.0
    if neighbours < s.shape[0]:
        cut = np.partition(s, s.shape[0] - neighbours, axis=0)[s.shape[0] - neighbours]  # per column
        s[s < cut[None, :]] = 0.0
    return s


def _tune(train: EncodedTrain, val_task: RankingTask, kind: str, name: str, values: tuple,
          weights: Callable[[np.ndarray, Any, int | None], np.ndarray], columns: int | None) -> TunedResult:
    x = _interactions(train)
    g, popularity = gram(x), np.asarray(x.sum(axis=0)).ravel()
    tried, best = [], None
    for value in values:
        model = _model(train, x, popularity, weights(g, value, columns), kind)
        score = ndcg_at(model, val_task)
        tried.append({name: value, "val_ndcg_at_10": score})
        if best is None or score > best[2] + 1e-12:
            best = (model, {name: value}, score)
    assert best is not None  # the grid is never empty
    return TunedResult(best[0], best[1], best[2], tried)


def fit_ease(train: EncodedTrain, val_task: RankingTask, *, grid: PeerGrid = PeerGrid(),
             columns: int | None = None) -> TunedResult:
    """EASE at every ``grid.lambdas``, the best on validation NDCG@10 kept (ties: the smaller weight); the model
    scores the first ``columns`` items of the catalogue (default all) from the user's whole row.

    Raises:
        PeerTooLarge: above the dense bound.
    """
    return _tune(train, val_task, "ease", "l2", grid.lambdas, ease_weights, columns)


def fit_itemknn(train: EncodedTrain, val_task: RankingTask, *, grid: PeerGrid = PeerGrid()) -> TunedResult:
    """Cosine item-item kNN at every ``grid.neighbours``, the best on validation NDCG@10 kept.

    Raises:
        PeerTooLarge: above the dense bound.
    """
    return _tune(train, val_task, "itemknn", "neighbours", grid.neighbours, itemknn_weights, None)


#: Every peer by its model name in an onboarding (tasks.registry.BASELINES lists them with the other baselines).
PEERS: dict[str, Callable[[EncodedTrain, RankingTask], TunedResult]] = {"ease": fit_ease, "itemknn": fit_itemknn}
