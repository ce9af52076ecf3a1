"""Implicit ALS (Hu, Koren & Volinsky 2008) from the ``implicit`` library: the target-only baseline a
practitioner reaches for first, tuned on a small grid by validation NDCG@10.

Confidence is ``1 + alpha * count`` of each (user, item) in the target training data. Scores are ``p_u·q_i``
plus a tiny log-popularity tie-breaker (1e-6 scale): a user ALS has no vector for (no target training
interaction) would otherwise get all-zero scores and an arbitrary order; with it, such users see the most
popular items, as a practitioner's fallback would give them.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
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
    """The hyper-parameters tried, the best on validation kept, by successive halving: every combination is
    fitted for ``rung`` iterations and scored on validation, the best ``survivors`` of them are fitted on to
    ``iterations`` and scored again (the rung chosen on the development genres of ``bench/quality.py``:
    ``bench/als_halving.py``). A survivor is the same model as a straight fit of ``iterations`` (ALS's
    iterations resume where they stopped); a point dropped at the rung is one the full grid might have kept.
    ``rung`` 0 (or at least ``iterations``), or a grid of at most ``survivors`` points: every point fitted to
    the end."""

    factors: tuple[int, ...] = (16, 64)
    regularization: tuple[float, ...] = (0.01, 1.0)
    alpha: tuple[float, ...] = (1.0, 10.0)
    iterations: int = 15
    rung: int = 3
    survivors: int = 3

    def points(self) -> list[tuple[int, float, float]]:
        """Every (factors, regularization, alpha), in the order ties are broken (the earlier wins)."""
        return list(itertools.product(self.factors, self.regularization, self.alpha))

    def halves(self) -> bool:
        """Whether the grid is fitted by successive halving (see the class docstring)."""
        return 0 < self.rung < self.iterations and len(self.points()) > self.survivors


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


def _counts(train: EncodedTrain) -> sparse.csr_matrix:
    counts = sparse.csr_matrix((np.ones(len(train.users), dtype=np.float32), (train.users, train.items)),
                               shape=(len(train.user_ids), len(train.item_ids)))
    counts.sum_duplicates()
    return counts


_IMPORTING = threading.Lock()


def implicit_cpu() -> tuple[type, Callable[..., None]]:
    """implicit's ALS model and its compiled least squares (the user step of :mod:`models.transfer.recency`),
    imported under one lock: the onboarding's fits start side by side in threads, and two threads importing
    implicit's modules at once, each through another one first, stop each other on Python's module locks
    (``_DeadlockError``)."""
    with _IMPORTING:
        from implicit.cpu._als import least_squares
        from implicit.cpu.als import AlternatingLeastSquares
    return AlternatingLeastSquares, least_squares


class AlsFit:
    """One implicit-ALS model on encoded training pairs, fitted a number of iterations at a time (each
    :meth:`advance` resumes where the last stopped: the same factors as one fit of all of them, unit test)."""

    def __init__(self, train: EncodedTrain, *, factors: int, regularization: float, alpha: float, seed: int,
                 threads: int = 0, counts: sparse.csr_matrix | None = None) -> None:
        als, _ = implicit_cpu()
        self.train, self.counts = train, _counts(train) if counts is None else counts  # counts: shared by a grid
        with one_blas_thread():  # implicit warns when it finds BLAS on several threads
            self.model = als(factors=factors, regularization=regularization, alpha=alpha, iterations=0,
                             random_state=seed, num_threads=threads)

    def advance(self, iterations: int) -> AlsFit:
        self.model.iterations = iterations
        # implicit's own threads; a multi-threaded BLAS would fight them (and move Y'Y's last bits)
        with one_blas_thread():
            self.model.fit(self.counts, show_progress=False)
        return self

    def factor_model(self) -> FactorModel:
        popularity = np.bincount(self.train.items, minlength=len(self.train.item_ids)).astype(np.float32)
        return FactorModel(self.train.user_ids, self.train.item_ids,
                           np.asarray(self.model.user_factors, dtype=np.float32),
                           np.asarray(self.model.item_factors, dtype=np.float32),
                           (TIE_BREAK * np.log1p(popularity)).astype(np.float32), kind="als")


def fit_als_encoded(train: EncodedTrain, *, factors: int, regularization: float, alpha: float, iterations: int,
                    seed: int, threads: int = 0) -> FactorModel:
    """One implicit-ALS fit on encoded training pairs, on ``threads`` threads (0: every core). Each user's and each
    item's solve is its own, so the factors do not depend on the thread count (unit test)."""
    return AlsFit(train, factors=factors, regularization=regularization, alpha=alpha, seed=seed,
                  threads=threads).advance(iterations).factor_model()


def fit_als_once(train: pl.DataFrame, item_ids: np.ndarray, *, factors: int, regularization: float, alpha: float,
                 iterations: int, seed: int) -> FactorModel:
    """One implicit-ALS fit on ``train`` over the catalogue ``item_ids``."""
    return fit_als_encoded(EncodedTrain.of(train, item_ids), factors=factors, regularization=regularization,
                           alpha=alpha, iterations=iterations, seed=seed)


def _ranked(fitted: tuple[float, int, dict[str, float], AlsFit]) -> tuple[float, int]:
    return -fitted[0], fitted[1]  # the best validation first; ties: the earlier point


def fit_als(train: pl.DataFrame | EncodedTrain, catalogue: pl.DataFrame | None, val_task: RankingTask, *,
            grid: AlsGrid = AlsGrid(), seed: int = 0) -> TunedResult:
    """Fit the grid (by successive halving where :meth:`AlsGrid.halves`) and keep the best by validation NDCG@10
    after ``grid.iterations`` (ties: the earlier point); ``train`` is the training frame (with its
    ``catalogue``), or its pairs already encoded over the catalogue (``catalogue`` unused). The result's grid
    lists every point at the rung, then the survivors at the end; at most ``survivors`` + 1 models are held."""
    encoded = train if isinstance(train, EncodedTrain) else EncodedTrain.of(
        train, catalogue[ITEM_ID].to_numpy().astype(object))
    counts = _counts(encoded)
    halves = grid.halves()
    first, keep = (grid.rung, grid.survivors) if halves else (grid.iterations, 1)
    tried: list[dict[str, float]] = []
    alive: list[tuple[float, int, dict[str, float], AlsFit]] = []  # (score, place, params, model), best first
    for place, (factors, regularization, alpha) in enumerate(grid.points()):
        als = AlsFit(encoded, factors=factors, regularization=regularization, alpha=alpha, seed=seed,
                     counts=counts).advance(first)
        params = {"factors": factors, "regularization": regularization, "alpha": alpha, "iterations": first}
        score = ndcg_at(als.factor_model(), val_task)
        tried.append({**params, "val_ndcg_at_10": score})
        alive = sorted([*alive, (score, place, params, als)], key=_ranked)[:keep]
    if halves:  # the survivors fitted on to the end, in grid order, and scored again
        finished = []
        for _, place, params, als in sorted(alive, key=lambda a: a[1]):
            model = als.advance(grid.iterations - grid.rung).factor_model()
            params = {**params, "iterations": grid.iterations}
            score = ndcg_at(model, val_task)
            tried.append({**params, "val_ndcg_at_10": score})
            finished.append((score, place, params, als))
        alive = sorted(finished, key=_ranked)
    score, _, params, als = alive[0]  # the grid is never empty
    return TunedResult(als.factor_model(), params, score, tried)
