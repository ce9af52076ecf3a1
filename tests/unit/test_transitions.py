"""Cross-domain transitions: the counts against hand-worked timelines, a user's history as of a time, and the
closed-form recipe blending them in where validation prefers it (and validating them as of each user's validation
period)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from models.evaluation.ranking import build_ranking_task, ndcg_at
from models.transfer.closed_form import (
    ClosedFormGrid,
    fit_closed_form_transfer,
    transition_params,
    transitions_of,
    with_transitions,
)
from models.transfer.joint import JointTrain
from models.transfer.transitions import (
    TransitionGrid,
    blended,
    history,
    transition_matrix,
    transition_scores,
    validation_cutoffs,
)

#: Items 0-1: the catalogue (target); 2-4: source items.
X, Y, A, B, C = range(5)


def _matrix(pairs: list[tuple[int, int, int]], n_source: int, grid: TransitionGrid) -> np.ndarray:
    users, items, times = (np.array(column, dtype=np.int64) for column in zip(*pairs, strict=True))
    return transition_matrix(users, items, times, n_source, 5, 2, grid).toarray()


def test_each_source_interaction_before_a_target_one_counts_by_how_far_back_it_is():
    """User 0: A at 1, B at 2, then target X at 3: B is one position back (weight 1), A two (exp(-1/decay)); C
    comes after X, so it counts for Y only. User 1's B counts for user 1's X, never for user 0's items. Without
    the popularity division the counts are those weights."""
    source = [(0, A, 1), (0, B, 2), (0, C, 4), (1, B, 5)]
    target = [(0, X, 3), (1, X, 7), (0, Y, 6)]
    counts = _matrix(source + target, len(source), TransitionGrid(window=3, decay=2.0, popularity=0.0))
    expected = np.zeros((5, 2))
    expected[B, X] = 1.0 + 1.0  # user 0 (one back) and user 1 (B at 5, X at 7: one back)
    expected[A, X] = np.exp(-1 / 2.0)
    expected[C, Y] = 1.0  # user 0's timeline: A, B, X, C, Y: C one back from Y, X (a target item) two,
    expected[B, Y] = np.exp(-2 / 2.0)  # B three
    np.testing.assert_allclose(counts, expected, rtol=1e-12)


def test_the_window_the_order_at_one_time_and_the_popularity_division():
    """A source item at the same second as the target one counts as before it; a window of one keeps only the
    nearest; popularity 1 divides each source item's row by its total."""
    pairs = [(0, A, 5), (0, B, 4), (0, X, 5)]  # B then A (A at X's second: before X)
    near = _matrix(pairs, 2, TransitionGrid(window=1, decay=1.0, popularity=0.0))
    assert near[A, X] == 1.0 and near[B, X] == 0.0
    source = [(0, A, 1), (1, A, 1), (1, B, 1)]
    target = [(0, X, 2), (1, Y, 2)]
    shares = _matrix(source + target, 3, TransitionGrid(window=2, decay=1.0, popularity=1.0))
    # A -> X (user 0, one back: 1) and A -> Y (user 1, A and B tie at 1; ordered by item, A two back: e^-1)
    np.testing.assert_allclose(shares[A], np.array([1.0, np.exp(-1.0)]) / (1.0 + np.exp(-1.0)))
    np.testing.assert_allclose(shares[B], [0.0, 1.0])


def test_a_history_weighs_the_latest_source_interactions_as_of_a_time():
    users = np.array([0, 0, 0, 1])
    items = np.array([A, B, C, A])
    times = np.array([1, 2, 3, 9])
    grid = TransitionGrid(history=2, recency=1.0)
    whole = history(users, items, times, 2, 5, grid).toarray()
    np.testing.assert_allclose(whole[0], [0, 0, 0, np.exp(-1.0), 1.0])  # C latest (1), B next, A beyond 2
    np.testing.assert_allclose(whole[1], [0, 0, 1.0, 0, 0])
    as_of = history(users, items, times, 2, 5, grid, before=np.array([3.0, np.inf])).toarray()
    np.testing.assert_allclose(as_of[0], [0, 0, np.exp(-1.0), 1.0, 0])  # before 3: B latest, then A


def test_scores_follow_what_others_took_after_the_users_latest_source_item():
    """Users who take A then X, or B then Y; a user whose latest source item is B gets Y first."""
    source = [(n, A if n % 2 else B, 1) for n in range(6)] + [(6, A, 1), (6, B, 2)]
    target = [(n, X if n % 2 else Y, 2) for n in range(6)]
    users, items, times = (np.array(c, dtype=np.int64) for c in zip(*(source + target), strict=True))
    scores = transition_scores(users, items, times, n_source=len(source), n_users=7, n_items=5, n_catalogue=2,
                               grid=TransitionGrid())
    assert scores is not None and scores.shape == (7, 2) and scores.dtype == np.float32
    assert scores[6, Y] > scores[6, X] > 0
    assert scores[1, X] > scores[1, Y] == 0


def test_blending_appends_the_weighted_scores_to_the_users_and_the_identity_to_the_items():
    from models.factors import FactorModel

    model = FactorModel(np.array(["u", "v"], dtype=object), np.array(["x", "y"], dtype=object),
                        np.array([[1.0], [2.0]], np.float32), np.array([[1.0], [-1.0]], np.float32),
                        np.array([0.5, 0.0], np.float32), kind="transfer")
    scores = np.array([[0.0, 1.0], [3.0, 0.0]], np.float32)
    mixed = blended(model, scores, 2.0, 0.5)
    got = mixed.user_factors @ mixed.item_factors.T + mixed.item_bias
    np.testing.assert_allclose(got, np.array([[1.5, -1.0], [2.5, -2.0]]) + scores)
    assert mixed.dim == 3 and mixed.kind == "transfer"


def test_validation_cutoffs_are_each_users_first_validation_time():
    val = pl.DataFrame({"user_id": ["b", "a", "b"], "timestamp": [7, 5, 3]})
    np.testing.assert_array_equal(validation_cutoffs(np.array(["a", "b", "c"], dtype=object), val), [5, 3, np.inf])


def _timed(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows],
                         "timestamp": [t for _, _, t in rows]}, schema_overrides={"timestamp": pl.Int64})


@pytest.fixture(scope="module")
def sequential():
    """A target where the order of a user's latest source interactions decides their next target item: every user
    has watched s1..s6 long ago and both `a` and `b` lately; those who watched `a` last took `x`, those who watched
    `b` last took `y` (in training, and right before their validation or test item). Without the order (the recipe
    weighing every source interaction alike) `a` and `b` users look the same."""
    source, train, val, test = [], [], [], []
    for n in range(60):
        user = f"u{n}"
        (first, last), nxt = (("b", "a"), "x") if n % 2 else (("a", "b"), "y")
        source += [(user, f"s{k}", k) for k in range(1, 7)]
        at = 100 * (1 + n % 3)  # training, validation or test: the last source items just before the target item
        source += [(user, first, at - 2), (user, last, at - 1)]
        if n % 3 == 0:
            train.append((user, nxt, at))
        else:
            train.append((user, "z", 50))
            (val if n % 3 == 1 else test).append((user, nxt, at))
    catalogue = np.array(["x", "y", "z"], dtype=object)
    joint = JointTrain.of(_timed(source), _timed(train), catalogue, _timed(val))
    tasks = [build_ranking_task(catalogue, _timed(rows).with_columns(rating=None), _timed(train).with_columns(
        rating=None), click_threshold=4.0) for rows in (val, test)]
    return joint, *tasks


def test_the_recipe_takes_the_transitions_where_validation_prefers_them(sequential):
    joint, val, test = sequential
    grid = ClosedFormGrid(factors=4, regularization=1.0, iterations=10, alpha=(5.0,), l2=(1.0,), recency=0.0,
                          transitions=TransitionGrid())
    alone = fit_closed_form_transfer(joint, val, grid=replace(grid, transitions=None), seed=0)
    assert "transition_weight" not in alone.params and alone.val_model is None
    result = fit_closed_form_transfer(joint, val, grid=grid, seed=0)
    weight = result.params["transition_weight"]
    assert weight > 0 and transitions_of(result.params) == (grid.transitions, weight)
    assert result.val_ndcg_at_10 == pytest.approx(1.0) and ndcg_at(result.model, test) == pytest.approx(1.0)
    assert ndcg_at(alone.model, test) < 0.9
    # validated as of each user's validation period: the same score the evaluation gets from the val model
    assert ndcg_at(result.val_model, val) == pytest.approx(result.val_ndcg_at_10)
    tried = [e["transition_weight"] for e in result.grid if "transition_weight" in e]
    assert tried == list(grid.transitions.weights)
    # the refit's blend (with_transitions) of the recipe's part on the same pairs is the evaluated model
    recipe = replace(result.model, user_factors=result.model.user_factors[:, :grid.factors],
                     item_factors=result.model.item_factors[:, :grid.factors])
    again = with_transitions(joint, recipe, grid.transitions, weight)
    np.testing.assert_allclose(again.user_factors, result.model.user_factors, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(again.item_factors, result.model.item_factors)


def test_without_times_or_at_weight_zero_the_recipe_is_kept_alone(sequential):
    joint, val, _ = sequential
    grid = ClosedFormGrid(factors=4, regularization=1.0, iterations=10, alpha=(5.0,), l2=(1.0,), recency=0.0,
                          transitions=TransitionGrid(weights=(0.0,)))
    zero = fit_closed_form_transfer(joint, val, grid=grid, seed=0)
    assert zero.params["transition_weight"] == 0.0 and zero.model.dim == 4 and transitions_of(zero.params) is None
    untimed = fit_closed_form_transfer(replace(joint, timeline=None), val, grid=replace(grid, transitions=None),
                                       seed=0)
    np.testing.assert_array_equal(untimed.model.user_factors, zero.model.user_factors)
    assert with_transitions(joint, zero.model, TransitionGrid(), 0.0) is zero.model
    assert transition_params(TransitionGrid(), 2.0)["transition_window"] == TransitionGrid().window


def test_the_spread_is_the_standard_deviation_of_every_score_summed_in_chunks():
    from models.factors import FactorModel
    from models.transfer.transitions import spread

    rng = np.random.default_rng(0)
    model = FactorModel(np.arange(7).astype(str).astype(object), np.arange(5).astype(str).astype(object),
                        rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32),
                        rng.normal(size=5).astype(np.float32))
    scores = model.user_factors.astype(np.float64) @ model.item_factors[:4].T + model.item_bias[:4]
    assert spread(model, 4, chunk=3) == pytest.approx(scores.std(), rel=1e-9)
