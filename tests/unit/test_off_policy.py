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
