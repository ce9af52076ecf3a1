"""Bootstrap confidence intervals over users, for a metric and for the lift of one model over another.

Every headline metric is a mean of per-user values, and the users are the sample: a percentile bootstrap
resamples users with replacement. A *paired* interval resamples the same users for both models, so what
they have in common (hard users, easy users) cancels and only their difference varies: much tighter than
comparing two separate intervals.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

K = TypeVar("K", bound=Hashable)

N_BOOTSTRAP = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float
    n: int  # users resampled

    def excludes(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies outside the interval."""
        return value < self.low or value > self.high

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "n": float(self.n)}


def resample_counts(n: int, *, n_bootstrap: int, seed: int, batch: int = 100) -> Iterator[np.ndarray]:
    """The bootstrap resamples of ``n`` users, ``batch`` at a time, as counts (batch, n): how often each user
    was drawn. The draws depend only on ``n``, ``n_bootstrap``, ``seed`` (and ``batch``), so several columns
    of the same users resampled from these counts are paired, as if resampled together.

    The counts are float64 (exact: whole numbers far below 2**53), so ``counts @ values`` is one BLAS product;
    an integer matrix times a float one takes numpy's slow loop (50x slower at 400 k users). They are counted
    a resample at a time, whose counts stay in cache."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_bootstrap, batch):
        size = min(batch, n_bootstrap - start)
        picks = rng.integers(0, n, size=(size, n))
        counts = np.empty((size, n), dtype=np.float64)
        for row, drawn in enumerate(picks):
            counts[row] = np.bincount(drawn, minlength=n)
        yield counts


def subset_resample_counts(n: int, m: int, *, n_bootstrap: int, seed: int,
                           batch: int = 100) -> Iterator[np.ndarray]:
    """The bootstrap resamples of ``n`` rows (``n`` draws with replacement each), as counts (batch, m) of ``m`` of
    them alone: all a statistic needs when every other row adds nothing to it (an impression a policy would
    not show). Exact in distribution, not an approximation: of a resample's ``n`` draws, Binomial(``n``, ``m``/``n``)
    land on the ``m`` rows, each on one of them uniformly at random. The cost grows with ``m``, not ``n``."""
    if not 0 <= m <= n:
        raise ValueError(f"a subset of {m} rows of {n}")
    rng = np.random.default_rng(seed)
    for start in range(0, n_bootstrap, batch):
        size = min(batch, n_bootstrap - start)
        inside = rng.binomial(n, m / n, size=size) if m else np.zeros(size, dtype=np.int64)
        picks = rng.integers(0, max(m, 1), size=int(inside.sum()))
        owner = np.repeat(np.arange(size), inside)
        yield np.bincount(owner * m + picks, minlength=size * m).reshape(size, m).astype(np.float64)


def _resampled_means(values: np.ndarray, *, n_bootstrap: int, seed: int) -> np.ndarray:
    """Mean of each bootstrap resample of the rows of ``values`` (n, m) -> (n_bootstrap, m): counts @ values,
    one matrix product per batch instead of gathering every drawn row (the same means to ~1e-15)."""
    n = values.shape[0]
    return np.concatenate([counts @ values / n for counts in resample_counts(n, n_bootstrap=n_bootstrap,
                                                                             seed=seed)])


def _bounds(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(samples, tail)), float(np.quantile(samples, 1.0 - tail))


def _stacked(arrays: list[np.ndarray]) -> np.ndarray:
    """Per-user columns of the same users as one (users, columns) matrix."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    if not arrays or any(a.ndim != 1 or a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"paired values must be 1-d arrays of one length, got {[a.shape for a in arrays]}")
    if arrays[0].size == 0:
        raise ValueError("no per-user values to bootstrap")
    return np.stack(arrays, axis=1)


def mean_intervals(values: Mapping[K, np.ndarray], *, n_bootstrap: int = N_BOOTSTRAP,
                   confidence: float = CONFIDENCE, seed: int = 0) -> dict[K, Interval]:
    """:func:`mean_interval` of several per-user columns of the same users, from one set of resamples (each
    interval equals its own :func:`mean_interval` with the same seed).

    Raises:
        ValueError: when the columns differ in length or are empty.
    """
    keys = list(values)
    matrix = _stacked([values[k] for k in keys])
    samples = _resampled_means(matrix, n_bootstrap=n_bootstrap, seed=seed)
    return {k: Interval(float(matrix[:, j].mean()), *_bounds(samples[:, j], confidence), len(matrix))
            for j, k in enumerate(keys)}


def mean_interval(values: np.ndarray, *, n_bootstrap: int = N_BOOTSTRAP, confidence: float = CONFIDENCE,
                  seed: int = 0) -> Interval:
    """Mean of per-user ``values`` with its percentile-bootstrap interval (users resampled).

    Raises:
        ValueError: when ``values`` is empty.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    return mean_intervals({0: values}, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)[0]


def paired_lift_intervals(model: np.ndarray, references: Mapping[K, np.ndarray], *, relative: bool = True,
                          n_bootstrap: int = N_BOOTSTRAP, confidence: float = CONFIDENCE,
                          seed: int = 0) -> dict[K, Interval]:
    """:func:`paired_lift_interval` of ``model`` over each of ``references`` (per-user values of the same
    users), from one set of resamples; each equals its own :func:`paired_lift_interval` with the same seed.

    Raises:
        ValueError: when the arrays differ in length or are empty.
    """
    keys = list(references)
    matrix = _stacked([model, *(references[k] for k in keys)])  # column 0: the model

    def lift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if not relative:
            return a - b
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, a / b - 1.0, np.nan)

    samples = _resampled_means(matrix, n_bootstrap=n_bootstrap, seed=seed)
    means = matrix.mean(axis=0)
    out = {}
    for j, key in enumerate(keys, start=1):
        lifts = lift(samples[:, 0], samples[:, j])
        estimate = float(lift(means[:1], means[j:j + 1])[0])
        bounds = ((float("nan"), float("nan")) if np.isnan(lifts).all() else
                  _bounds(lifts[~np.isnan(lifts)], confidence))
        out[key] = Interval(estimate, *bounds, len(matrix))
    return out


def paired_lift_interval(model: np.ndarray, reference: np.ndarray, *, relative: bool = True,
                         n_bootstrap: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """Lift of ``model`` over ``reference`` from per-user values of the *same* users, with a paired interval.

    The lift is ``mean(model) / mean(reference) - 1`` (``relative``) or ``mean(model) - mean(reference)``;
    each bootstrap resample draws one set of users for both.

    Raises:
        ValueError: when the arrays differ in length or are empty.
    """
    return paired_lift_intervals(model, {0: reference}, relative=relative, n_bootstrap=n_bootstrap,
                                 confidence=confidence, seed=seed)[0]


def clears_gate(lift: Interval, margin: float) -> bool:
    """The promotion rule: the lift is above ``margin`` and its interval lies wholly above zero (a lift the
    test users cannot tell from noise never moves the champion)."""
    return lift.estimate > margin and lift.low > 0.0
