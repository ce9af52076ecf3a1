"""Full-ranking evaluation: exclusions, relevance, and the logged-slate CTR."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.evaluation.ctr import logged_slate_ctr, logged_slate_ctrs
from models.evaluation.ranking import build_ranking_task, evaluate_model, evaluate_models, ndcg_at
from models.factors import FactorModel, popularity_model


def interactions(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "rating"], orient="row")


CATALOGUE = np.array(["a", "b", "c", "d"], dtype=object)


def oracle(user_items: dict[str, list[str]]) -> FactorModel:
    """A model that scores each user's listed items 1 and everything else 0."""
    users = np.array(sorted(user_items), dtype=object)
    u = np.eye(len(users), dtype=np.float32)
    v = np.zeros((len(CATALOGUE), len(users)), dtype=np.float32)
    for r, user in enumerate(users):
        for item in user_items[user]:
            v[list(CATALOGUE).index(item), r] = 1.0
    return FactorModel(users, CATALOGUE, u, v, np.zeros(len(CATALOGUE), dtype=np.float32))


def test_seen_items_are_excluded_and_held_out_items_are_relevant():
    holdout = interactions([("u1", "c", 10, 5.0), ("u2", "d", 10, 1.0)])
    seen = interactions([("u1", "a", 1, 5.0), ("u2", "b", 1, 5.0)])
    task = build_ranking_task(CATALOGUE, holdout, seen)
    assert list(task.user_ids) == ["u1", "u2"]
    assert task.exclude.row(0).tolist() == [0] and task.relevant.row(0).tolist() == [2]
    # popularity of "a" is highest, but u1 already saw it: the oracle still ranks c first
    result = evaluate_model(oracle({"u1": ["c"], "u2": ["d"]}), task, ks=(1, 2))
    assert result.metrics["ndcg_at_1"] == pytest.approx(1.0)
    assert result.metrics["precision_at_1"] == pytest.approx(1.0)


def test_a_model_recommending_seen_items_gets_no_credit_for_them():
    holdout = interactions([("u1", "c", 10, 5.0)])
    seen = interactions([("u1", "a", 1, 5.0)])
    task = build_ranking_task(CATALOGUE, holdout, seen)
    pop = popularity_model(CATALOGUE, np.array([100, 50, 1, 0]))  # a > b > c > d
    result = evaluate_model(pop, task, ks=(1, 2))
    # a is excluded, so the ranking is b, c: miss at 1, hit at 2
    assert result.metrics["hit_rate_at_1"] == 0.0
    assert result.metrics["ndcg_at_2"] == pytest.approx(1 / np.log2(3))


def test_users_unknown_to_the_model_fall_back_to_item_bias():
    holdout = interactions([("new-user", "b", 10, 5.0)])
    task = build_ranking_task(CATALOGUE, holdout, interactions([]))
    model = FactorModel(np.array(["u1"], dtype=object), CATALOGUE, np.ones((1, 2), np.float32),
                        np.ones((4, 2), np.float32), np.array([0.0, 3.0, 1.0, 2.0], dtype=np.float32))
    assert evaluate_model(model, task, ks=(1,)).metrics["hit_rate_at_1"] == 1.0


def test_logged_slate_ctr_known_answer():
    # user 0 saw 4 items (clicked items 1 and 3), user 1 saw 2 (clicked item 0)
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.5, 0.7])
    clicks = np.array([False, True, False, True, False, True])
    result = logged_slate_ctr(scores, np.array([0, 4, 6]), clicks, k=2)
    # top-2 of user 0 are items 1 and 3 (2 clicks); user 1 keeps both (1 click): 3 / 4
    assert result.ctr_at_k == pytest.approx(0.75)
    assert result.ctr_logged == pytest.approx(0.5)
    # random top-2: user 0 expects 2 * 2/4 = 1 click, user 1 expects 2 * 1/2 = 1: 2 / 4
    assert result.ctr_random_at_k == pytest.approx(0.5)
    assert result.users == 2 and result.impressions == 6
    # users resampled: (2 + 2 clicks) / 4 = 1.0, (1 + 1) / 4 = 0.5 or the mix 0.75 -> the interval spans them
    assert result.ci_low == pytest.approx(0.5) and result.ci_high == pytest.approx(1.0)
    with pytest.raises(ValueError):
        logged_slate_ctr(scores, np.array([0, 4, 6]), clicks[:3], k=2)


def test_several_models_share_one_resample_and_get_the_intervals_of_their_own_calls():
    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 6, size=300)  # users with 0 to 5 impressions (those with none are not counted)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    clicks = rng.random(indptr[-1]) < 0.3
    scores = {"a": rng.random(indptr[-1]), "b": rng.random(indptr[-1]), "oracle": clicks + 0.1 * rng.random(indptr[-1])}
    shared = logged_slate_ctrs(scores, indptr, clicks, k=2)
    for name, values in scores.items():
        alone = logged_slate_ctr(values, indptr, clicks, k=2)
        assert shared[name].ctr_at_k == alone.ctr_at_k and shared[name].users == alone.users
        assert (shared[name].ci_low, shared[name].ci_high) == pytest.approx((alone.ci_low, alone.ci_high))
        assert alone.ci_low <= alone.ctr_at_k <= alone.ci_high
    assert shared["oracle"].ci_low > shared["a"].ci_high  # clicked impressions first: a clearly higher CTR


def test_evaluating_models_together_gives_each_models_own_evaluation():
    holdout = interactions([("u1", "c", 10, 5.0), ("u1", "d", 11, 2.0), ("u2", "a", 12, 5.0), ("u2", "b", 13, 1.0)])
    task = build_ranking_task(CATALOGUE, holdout, interactions([]), click_threshold=4.0)
    models = {"good": oracle({"u1": ["c"], "u2": ["a"]}), "bad": oracle({"u1": ["d"], "u2": ["b"]})}
    together = evaluate_models(models, task, ks=(1, 2), ctr_k=1)
    for name, model in models.items():
        alone = evaluate_model(model, task, ks=(1, 2), ctr_k=1)
        assert together[name].metrics == pytest.approx(alone.metrics, nan_ok=True)
        assert all(np.array_equal(together[name].per_user[m], alone.per_user[m]) for m in alone.per_user)
    assert together["good"].metrics["ctr_at_1"] == 1.0 and together["bad"].metrics["ctr_at_1"] == 0.0


def test_evaluation_reports_ctr_from_held_out_ratings():
    holdout = interactions([("u1", "c", 10, 5.0), ("u1", "d", 11, 2.0)])
    task = build_ranking_task(CATALOGUE, holdout, interactions([]), click_threshold=4.0)
    good = evaluate_model(oracle({"u1": ["c"]}), task, ks=(2,), ctr_k=1)
    bad = evaluate_model(oracle({"u1": ["d"]}), task, ks=(2,), ctr_k=1)
    assert good.metrics["ctr_at_1"] == 1.0 and bad.metrics["ctr_at_1"] == 0.0
    assert good.metrics["ctr_logged"] == 0.5


def test_ndcg_at_is_the_evaluations_ndcg_without_the_ctr():
    # u1 holds out c, u2 holds out a; both saw b in training (excluded from their rankings)
    holdout = interactions([("u1", "c", 10, 5.0), ("u2", "a", 12, 5.0)])
    train = interactions([("u1", "b", 1, 5.0), ("u2", "b", 2, 5.0)])
    task = build_ranking_task(CATALOGUE, holdout, train, click_threshold=4.0)
    scores = np.array([[0.0, 3.0, 1.0, 2.0],   # u1 over a, b, c, d: b (seen), then d, then c at rank 2
                       [3.0, 4.0, 1.0, 0.0]],  # u2: b (seen), then a at rank 1
                      dtype=np.float32)
    model = FactorModel(np.array(["u1", "u2"], dtype=object), CATALOGUE, np.eye(2, dtype=np.float32), scores.T.copy(),
                        np.zeros(len(CATALOGUE), dtype=np.float32))
    full = evaluate_model(model, task, ks=(2,), ctr_k=1)
    assert "ctr_at_1" in full.metrics
    assert ndcg_at(model, task, k=2) == pytest.approx(full.metrics["ndcg_at_2"])
    assert ndcg_at(model, task, k=2) == pytest.approx((1 / np.log2(3) + 1.0) / 2)  # known answer
    lean = evaluate_model(model, task, ks=(2,), ctr_k=None)
    assert lean.ctr is None and not any(name.startswith("ctr") for name in lean.metrics)


def test_coverage_and_novelty_of_a_full_evaluation():
    holdout = interactions([("u1", "c", 10, 5.0), ("u2", "d", 10, 5.0)])
    seen = interactions([("u1", "a", 1, 5.0), ("u2", "a", 1, 5.0), ("u2", "b", 1, 5.0)])
    task = build_ranking_task(CATALOGUE, holdout, seen)
    oracle_result = evaluate_model(oracle({"u1": ["c"], "u2": ["d"]}), task, ks=(1,))
    assert oracle_result.metrics["coverage_at_1"] == pytest.approx(2 / 4)  # c for u1, d for u2
    pop = popularity_model(CATALOGUE, np.array([100, 50, 10, 1]))  # a > b > c > d, a and b seen by u2
    pop_result = evaluate_model(pop, task, ks=(1,))
    assert pop_result.metrics["coverage_at_1"] == pytest.approx(2 / 4)  # b for u1, c for u2
    # seen counts a 2, b 1, c 0, d 0: p = 3/7, 2/7, 1/7, 1/7; the oracle recommends the unseen c and d
    assert oracle_result.metrics["novelty_at_1"] == pytest.approx(-np.log2(1 / 7))
    assert pop_result.metrics["novelty_at_1"] == pytest.approx((-np.log2(2 / 7) - np.log2(1 / 7)) / 2)
