"""Bootstrap intervals: known answers and coverage."""

from __future__ import annotations

import numpy as np
import pytest

from models.evaluation.uncertainty import (
    Interval,
    clears_gate,
    mean_interval,
    mean_intervals,
    paired_lift_interval,
    paired_lift_intervals,
)


def test_constant_values_have_a_zero_width_interval():
    interval = mean_interval(np.full(50, 0.25))
    assert (interval.estimate, interval.low, interval.high, interval.n) == (0.25, 0.25, 0.25, 50)


def test_the_interval_of_a_bernoulli_mean_has_the_textbook_width():
    values = (np.random.default_rng(0).random(4000) < 0.3).astype(float)
    interval = mean_interval(values, seed=1)
    assert interval.low < values.mean() < interval.high
    expected = 2 * 1.96 * np.sqrt(0.3 * 0.7 / 4000)  # normal approximation
    assert interval.high - interval.low == pytest.approx(expected, rel=0.15)


def test_an_exact_proportional_lift_is_recovered_with_no_spread():
    reference = np.random.default_rng(0).random(200)
    lift = paired_lift_interval(reference * 1.1, reference)
    assert lift.estimate == pytest.approx(0.1) and lift.low == pytest.approx(0.1) and lift.high == pytest.approx(0.1)
    assert lift.excludes(0.0)


def test_pairing_separates_a_small_consistent_gain_that_separate_intervals_cannot():
    rng = np.random.default_rng(0)
    reference = rng.random(500)  # users differ a lot ...
    model = reference + 0.01 + rng.normal(0, 0.005, 500)  # ... the model is a little better for each of them
    a, b = mean_interval(model), mean_interval(reference)
    assert a.low < b.high  # the separate intervals overlap
    assert paired_lift_interval(model, reference, relative=False).low > 0  # the paired one excludes zero


def test_no_difference_gives_an_interval_around_zero():
    rng = np.random.default_rng(3)
    a, b = rng.random(300), rng.random(300)
    lift = paired_lift_interval(a, b, relative=False, seed=2)
    assert lift.low < 0 < lift.high and not lift.excludes(0.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="no per-user values"):
        mean_interval(np.array([]))
    with pytest.raises(ValueError, match="one length"):
        paired_lift_interval(np.ones(3), np.ones(4))


@pytest.mark.parametrize(("estimate", "low", "margin", "promote"), [
    (0.10, 0.04, 0.0, True),    # clearly better
    (0.10, -0.01, 0.0, False),  # better on average, but the interval reaches below zero
    (0.03, 0.01, 0.05, False),  # significant, but below the margin
    (0.08, 0.01, 0.05, True),
    (-0.02, -0.05, 0.0, False),
])
def test_the_promotion_gate_needs_the_margin_and_an_interval_above_zero(estimate, low, margin, promote):
    assert clears_gate(Interval(estimate, low, estimate + 0.05, 100), margin) is promote


def test_columns_resampled_together_equal_each_resampled_alone():
    rng = np.random.default_rng(5)
    a, b, c = rng.random(300), rng.random(300) * 0.8, (rng.random(300) < 0.2).astype(float)
    together = mean_intervals({"a": a, "b": b, "c": c}, seed=3)
    for key, values in {"a": a, "b": b, "c": c}.items():
        alone = mean_interval(values, seed=3)
        assert together[key].n == alone.n == 300
        assert [together[key].estimate, together[key].low, together[key].high] == pytest.approx(
            [alone.estimate, alone.low, alone.high], abs=1e-12)
    lifts = paired_lift_intervals(a, {"b": b, "c": c}, seed=3)
    for key, reference in {"b": b, "c": c}.items():
        alone = paired_lift_interval(a, reference, seed=3)
        assert [lifts[key].estimate, lifts[key].low, lifts[key].high] == pytest.approx(
            [alone.estimate, alone.low, alone.high], abs=1e-12)
    with pytest.raises(ValueError, match="one length"):
        mean_intervals({"a": a, "short": a[:10]})


def test_the_counts_of_a_subset_of_rows_are_distributed_as_in_the_whole_bootstrap():
    """Each row's count in a resample of n rows is Binomial(n, 1/n) (mean 1, variance 1 - 1/n), two rows' counts
    have covariance -1/n, and a resample never holds more than n draws: the subset's counts keep all three."""
    from models.evaluation.uncertainty import subset_resample_counts

    n, m = 40, 6
    counts = np.concatenate(list(subset_resample_counts(n, m, n_bootstrap=40_000, seed=4, batch=1000)))
    assert counts.shape == (40_000, m) and (counts >= 0).all() and (counts.sum(axis=1) <= n).all()
    np.testing.assert_allclose(counts.mean(axis=0), 1.0, atol=0.03)
    np.testing.assert_allclose(counts.var(axis=0), 1 - 1 / n, atol=0.04)
    covariance = np.cov(counts, rowvar=False)[~np.eye(m, dtype=bool)]
    np.testing.assert_allclose(covariance, -1 / n, atol=0.02)
    assert np.array_equal(np.concatenate(list(subset_resample_counts(n, n, n_bootstrap=50, seed=1))).sum(axis=1),
                          np.full(50, n))  # every row in the subset: every draw lands in it
    assert next(subset_resample_counts(n, 0, n_bootstrap=3, seed=1)).shape == (3, 0)
    with pytest.raises(ValueError, match="subset"):
        next(subset_resample_counts(5, 6, n_bootstrap=3, seed=1))
