"""Implicit ALS (Hu, Koren & Volinsky 2008) from the ``implicit`` library: the target-only baseline a
practitioner reaches for first, tuned on a small grid by validation NDCG@10.

Confidence is ``1 + alpha * count`` of each (user, item) in the target training data. Scores are ``p_u·q_i``
plus a tiny log-popularity tie-breaker (1e-6 scale): a user ALS has no vector for (no target training
interaction) would otherwise get all-zero scores and an arbitrary order; with it, such users see the most
popular items, as a practitioner's fallback would give them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import polars as pl
from scipy import sparse

from data_contracts.columns import ITEM_ID, USER_ID
from models.blas import one_blas_thread
from models.evaluation.ranking import RankingTask, ndcg_at
from models.factors import FactorModel
from models.nets.training import encode_pairs

TIE_BREAK = 1e-6


@dataclass(frozen=True)
class AlsGrid:
    """The hyper-parameters tried; every combination is fitted and the best on validation kept."""

    factors: tuple[int, ...] = (16, 64)
    regularization: tuple[float, ...] = (0.01, 1.0)
    alpha: tuple[float, ...] = (1.0, 10.0)
    iterations: int = 15


@dataclass(frozen=True)
class TunedResult:
    """A target-only baseline tuned on validation (ALS here, EASE and ItemKNN in :mod:`models.transfer.peers`):
    the best model, its hyper-parameters and every grid point's validation NDCG@10."""

    model: FactorModel
    params: dict[str, float]
    val_ndcg_at_10: float
    grid: list[dict[str, float]]


@dataclass(frozen=True)
class EncodedTrain:
    """Training interactions as rows into ``user_ids`` and ``item_ids`` (arrays, or columns of a pair file)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    users: np.ndarray
    items: np.ndarray

    @classmethod
    def of(cls, train: pl.DataFrame, item_ids: np.ndarray) -> EncodedTrain:
        """Encode ``train`` over its own users and the catalogue ``item_ids``."""
        user_ids = np.sort(train[USER_ID].unique().to_numpy()).astype(object)
        users, items = encode_pairs(train, user_ids, item_ids)
        return cls(user_ids, np.asarray(item_ids, dtype=object), users, items)


def fit_als_encoded(train: EncodedTrain, *, factors: int, regularization: float, alpha: float, iterations: int,
                    seed: int, threads: int = 0) -> FactorModel:
    """One implicit-ALS fit on encoded training pairs, on ``threads`` threads (0: every core). Each user's and each
    item's solve is its own, so the factors do not depend on the thread count (unit test)."""
    from implicit.cpu.als import AlternatingLeastSquares
    counts = sparse.csr_matrix((np.ones(len(train.users), dtype=np.float32), (train.users, train.items)),
                               shape=(len(train.user_ids), len(train.item_ids)))
    counts.sum_duplicates()
    with one_blas_thread():  # implicit's own threads; a multi-threaded BLAS would fight them (and move Y'Y's last bits)
        model = AlternatingLeastSquares(factors=factors, regularization=regularization, alpha=alpha,
                                        iterations=iterations, random_state=seed, num_threads=threads)
        model.fit(counts, show_progress=False)
    popularity = np.bincount(train.items, minlength=len(train.item_ids)).astype(np.float32)
    return FactorModel(train.user_ids, train.item_ids, np.asarray(model.user_factors, dtype=np.float32),
                       np.asarray(model.item_factors, dtype=np.float32),
                       (TIE_BREAK * np.log1p(popularity)).astype(np.float32), kind="als")


def fit_als_once(train: pl.DataFrame, item_ids: np.ndarray, *, factors: int, regularization: float, alpha: float,
                 iterations: int, seed: int) -> FactorModel:
    """One implicit-ALS fit on ``train`` over the catalogue ``item_ids``."""
    return fit_als_encoded(EncodedTrain.of(train, item_ids), factors=factors, regularization=regularization,
                           alpha=alpha, iterations=iterations, seed=seed)


def fit_als(train: pl.DataFrame | EncodedTrain, catalogue: pl.DataFrame | None, val_task: RankingTask, *,
            grid: AlsGrid = AlsGrid(), seed: int = 0) -> TunedResult:
    """Fit every grid point and keep the best by validation NDCG@10 (ties: the earlier, smaller point);
    ``train`` is the training frame (with its ``catalogue``), or its pairs already encoded over the catalogue
    (``catalogue`` unused)."""
    encoded = train if isinstance(train, EncodedTrain) else EncodedTrain.of(
        train, catalogue[ITEM_ID].to_numpy().astype(object))
    tried, best = [], None
    for factors, regularization, alpha in itertools.product(grid.factors, grid.regularization, grid.alpha):
        model = fit_als_encoded(encoded, factors=factors, regularization=regularization, alpha=alpha,
                                iterations=grid.iterations, seed=seed)
        score = ndcg_at(model, val_task)
        params = {"factors": factors, "regularization": regularization, "alpha": alpha, "iterations": grid.iterations}
        tried.append({**params, "val_ndcg_at_10": score})
        if best is None or score > best[2] + 1e-12:
            best = (model, params, score)
    assert best is not None  # the grid is never empty
    return TunedResult(best[0], best[1], best[2], tried)
