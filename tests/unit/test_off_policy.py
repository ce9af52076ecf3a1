"""IPS and SNIPS recover the true CTR of a new policy from a popularity-biased log; the naive number does not."""

from __future__ import annotations

import numpy as np
import pytest

from models.data.synthetic import simulate_impressions, softmax_policy
from models.evaluation.ctr import IPS, SNIPS, off_policy_ctr


@pytest.fixture(scope="module")
def log():
    return simulate_impressions(n_users=2000, n_items=40, impressions_per_user=25, logging_temperature=2.0, seed=0)


def test_ips_and_snips_recover_the_true_ctr_of_a_taste_following_policy(log):
    new_policy = softmax_policy(log.affinity, temperature=0.5)  # follows taste, unlike the logger
    true_ctr = float((new_policy * log.click_probability).sum(axis=1).mean())
    users = np.array([int(u[1:]) for u in log.frame["user_id"].to_list()])
    items = np.array([int(i[1:]) for i in log.frame["item_id"].to_list()])
    clicks = log.frame["clicked"].to_numpy()
    naive = float(clicks.mean())  # the logger's own CTR
    for estimator in (IPS, SNIPS):
        result = off_policy_ctr(new_policy[users, items], log.frame["propensity"].to_numpy(), clicks,
                                estimator=estimator)
        assert result.low <= true_ctr <= result.high, (estimator, result, true_ctr)
        assert not result.low <= naive <= result.high  # the logged click rate is another policy's CTR
        assert result.impressions == len(clicks) and 0 < result.effective_sample_size <= len(clicks)
    assert true_ctr > naive + 0.05


def test_the_logging_policy_evaluated_on_its_own_log_gives_the_logged_ctr(log):
    users = np.array([int(u[1:]) for u in log.frame["user_id"].to_list()])
    items = np.array([int(i[1:]) for i in log.frame["item_id"].to_list()])
    propensity = log.frame["propensity"].to_numpy()
    clicks = log.frame["clicked"].to_numpy()
    result = off_policy_ctr(log.logging_policy[users, items], propensity, clicks, estimator=SNIPS)
    assert result.ctr == pytest.approx(clicks.mean())  # all weights are 1


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="> 0"):
        off_policy_ctr(np.ones(2), np.array([0.5, 0.0]), np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="one length"):
        off_policy_ctr(np.ones(2), np.ones(3), np.ones(2, dtype=bool))
    with pytest.raises(ValueError, match="unknown estimator"):
        off_policy_ctr(np.ones(2), np.ones(2), np.ones(2, dtype=bool), estimator="DR")


def test_the_bootstrap_counts_give_the_intervals_of_gathering_every_drawn_impression():
    """One set of resamples serves IPS and SNIPS: each interval equals a reference bootstrap that gathers the drawn
    impressions' weights, from the same draws (25 resamples at a time from the seed: how many of each resample's n
    draws land on an impression the policy would show, then which of those impressions)."""
    from models.evaluation.ctr import off_policy_table

    rng = np.random.default_rng(3)
    n = 700
    target, propensity, clicks = (rng.random(n) < 0.3).astype(float), rng.uniform(0.05, 0.9, n), rng.random(n) < 0.2
    weights, clicked = target / propensity, clicks.astype(float)
    shown = np.flatnonzero(target)
    draws, reference = np.random.default_rng(11), {IPS: [], SNIPS: []}
    for _ in range(300 // 25):
        inside = draws.binomial(n, len(shown) / n, size=25)
        picks = shown[draws.integers(0, len(shown), size=inside.sum())]
        for drawn in np.split(picks, np.cumsum(inside)[:-1]):
            reference[IPS].append((weights[drawn] * clicked[drawn]).sum() / n)
            reference[SNIPS].append((weights[drawn] * clicked[drawn]).sum() / weights[drawn].sum())
    both = off_policy_table({"p": target}, propensity, clicks, n_bootstrap=300, seed=11)["p"]
    for name, samples in reference.items():
        alone = off_policy_ctr(target, propensity, clicks, estimator=name, n_bootstrap=300, seed=11)
        assert both[name] == alone
        assert alone.low == pytest.approx(np.quantile(samples, 0.025), rel=1e-12)
        assert alone.high == pytest.approx(np.quantile(samples, 0.975), rel=1e-12)
        assert alone.low < alone.ctr < alone.high


def test_drawing_only_the_shown_impressions_gives_the_intervals_of_the_whole_bootstrap():
    """The same intervals, within the bootstrap's own noise, as resampling all n impressions (most of which no
    policy would show), gathered the plain way."""
    from models.evaluation.ctr import off_policy_table

    rng = np.random.default_rng(8)
    n = 2000
    target, propensity, clicks = (rng.random(n) < 0.05).astype(float), rng.uniform(0.05, 0.9, n), rng.random(n) < 0.4
    weights, clicked = target / propensity, clicks.astype(float)
    picks = np.random.default_rng(1).integers(0, n, size=(4000, n))
    whole = {IPS: (weights[picks] * clicked[picks]).mean(axis=1),
             SNIPS: (weights[picks] * clicked[picks]).sum(axis=1) / weights[picks].sum(axis=1)}
    table = off_policy_table({"p": target}, propensity, clicks, n_bootstrap=4000, seed=2)["p"]
    for name, samples in whole.items():
        width = np.quantile(samples, 0.975) - np.quantile(samples, 0.025)
        assert table[name].low == pytest.approx(np.quantile(samples, 0.025), abs=0.05 * width)
        assert table[name].high == pytest.approx(np.quantile(samples, 0.975), abs=0.05 * width)


def test_policies_on_one_set_of_draws_get_the_intervals_of_their_own_calls():
    from models.evaluation.ctr import off_policy_table

    rng = np.random.default_rng(5)
    n = 400
    propensity, clicks = rng.uniform(0.05, 0.9, n), rng.random(n) < 0.3
    policies = {name: (rng.random(n) < share).astype(float) for name, share in (("a", 0.2), ("b", 0.6))}
    table = off_policy_table(policies, propensity, clicks, n_bootstrap=200, seed=2)
    assert set(table) == {"a", "b"} and table["a"][IPS].ctr != table["b"][IPS].ctr
    for name, target in policies.items():
        for estimator in (IPS, SNIPS):
            alone = off_policy_ctr(target, propensity, clicks, estimator=estimator, n_bootstrap=200, seed=2)
            got = table[name][estimator]
            assert got.ctr == alone.ctr and got.effective_sample_size == alone.effective_sample_size
            assert got.low == pytest.approx(alone.low, rel=1e-12) and got.high == pytest.approx(alone.high, rel=1e-12)
