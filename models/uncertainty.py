"""Bootstrap confidence intervals over users, for a metric and for the lift of one model over another.

Every headline metric is a mean of per-user values, and the users are the sample: a percentile bootstrap
resamples users with replacement. A *paired* interval resamples the same users for both models, so what
they have in common (hard users, easy users) cancels and only their difference varies: much tighter than
comparing two separate intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def _resampled_means(values: np.ndarray, *, n_bootstrap: int, seed: int, batch: int = 100) -> np.ndarray:
    """Mean of each bootstrap resample of the rows of ``values`` (n, m) -> (n_bootstrap, m)."""
    rng = np.random.default_rng(seed)
    n = values.shape[0]
    out = np.empty((n_bootstrap, values.shape[1]), dtype=np.float64)
    for start in range(0, n_bootstrap, batch):
        size = min(batch, n_bootstrap - start)
        picks = rng.integers(0, n, size=(size, n))
        out[start:start + size] = values[picks].mean(axis=1)
    return out


def _bounds(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(samples, tail)), float(np.quantile(samples, 1.0 - tail))


def mean_interval(values: np.ndarray, *, n_bootstrap: int = N_BOOTSTRAP, confidence: float = CONFIDENCE,
                  seed: int = 0) -> Interval:
    """Mean of per-user ``values`` with its percentile-bootstrap interval (users resampled).

    Raises:
        ValueError: when ``values`` is empty.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1, 1)
    if values.size == 0:
        raise ValueError("no per-user values to bootstrap")
    samples = _resampled_means(values, n_bootstrap=n_bootstrap, seed=seed)[:, 0]
    low, high = _bounds(samples, confidence)
    return Interval(float(values.mean()), low, high, len(values))


def paired_lift_interval(model: np.ndarray, reference: np.ndarray, *, relative: bool = True,
                         n_bootstrap: int = N_BOOTSTRAP, confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """Lift of ``model`` over ``reference`` from per-user values of the *same* users, with a paired interval.

    The lift is ``mean(model) / mean(reference) - 1`` (``relative``) or ``mean(model) - mean(reference)``;
    each bootstrap resample draws one set of users for both.

    Raises:
        ValueError: when the arrays differ in length or are empty.
    """
    model = np.asarray(model, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if model.shape != reference.shape or model.ndim != 1:
        raise ValueError(f"paired values must be two 1-d arrays of one length, got {model.shape} and "
                         f"{reference.shape}")
    if model.size == 0:
        raise ValueError("no per-user values to bootstrap")

    def lift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if not relative:
            return a - b
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, a / b - 1.0, np.nan)

    samples = _resampled_means(np.stack([model, reference], axis=1), n_bootstrap=n_bootstrap, seed=seed)
    lifts = lift(samples[:, 0], samples[:, 1])
    estimate = float(lift(np.array([model.mean()]), np.array([reference.mean()]))[0])
    if np.isnan(lifts).all():
        return Interval(estimate, float("nan"), float("nan"), len(model))
    low, high = _bounds(lifts[~np.isnan(lifts)], confidence)
    return Interval(estimate, low, high, len(model))


def clears_gate(lift: Interval, margin: float) -> bool:
    """The promotion rule: the lift is above ``margin`` and its interval lies wholly above zero (a lift the
    test users cannot tell from noise never moves the champion)."""
    return lift.estimate > margin and lift.low > 0.0
