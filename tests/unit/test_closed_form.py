"""The closed-form transfer recipe: the item and user steps against their textbook formulas, the users' recent
interests, and the carry-over of a source model's users to target items they were never trained on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from models.evaluation.ranking import build_ranking_task
from models.split import recency_ranks
from models.transfer.als import EncodedTrain, fit_als_encoded
from models.transfer.closed_form import (
    ClosedFormGrid,
    ClosedFormResult,
    carry_over,
    fit_closed_form_transfer,
    item_step,
)
from models.transfer.joint import JointTrain
from models.transfer.recency import recency_confidence, user_step


def test_the_item_step_solves_each_items_weighted_ridge_on_the_frozen_users(monkeypatch):
    """v_i = (UᵀU + a·U_iᵀU_i + l2·I)⁻¹ (1 + a)·U_iᵀ1 per item, solved in chunks; repeated pairs count once and
    an item nobody touched gets a zero vector."""
    import models.transfer.closed_form as closed_form

    monkeypatch.setattr(closed_form, "ITEM_CHUNK", 3)  # several chunks, the last one short
    rng = np.random.default_rng(0)
    u = rng.normal(size=(30, 4))
    users, items = rng.integers(0, 30, 60), rng.integers(0, 6, 60)  # items 0..5 of 8: 6 and 7 have no pairs
    users, items = np.concatenate([users, users[:10]]), np.concatenate([items, items[:10]])
    points = [(5.0, 1.0), (80.0, 300.0)]
    solved = item_step(u, users, items, 8, points)
    for (alpha, l2), vectors in zip(points, solved, strict=True):
        assert vectors.shape == (8, 4) and vectors.dtype == np.float32
        for i in range(8):
            seen = u[np.unique(users[items == i])]
            expected = np.linalg.solve(u.T @ u + alpha * seen.T @ seen + l2 * np.eye(4), (1 + alpha) * seen.sum(0))
            np.testing.assert_allclose(vectors[i], expected, rtol=1e-5, atol=1e-6)
        assert not vectors[6:].any()


def _frame(pairs: list[tuple[str, str]]) -> pl.DataFrame:
    return pl.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs]})


def test_the_recipe_carries_the_source_users_over_to_target_items_unchanged():
    """Users who watched source items s1/s1b take target item t1, those who watched s2/s2b take t2. A validation
    user with no target training interaction, s2 alone in their source history, gets t2 first: their vector is
    the source model's, learnt from source pairs only, and the target's item vectors are solved on it. The users'
    vectors are exactly the source ALS model's; the model keeps the target catalogue and is tuned on validation."""
    source, train = [], []
    for n in range(40):
        s, t = ("s1", "t1") if n % 2 else ("s2", "t2")
        source += [(f"u{n}", s), (f"u{n}", s + "b")]
        train.append((f"u{n}", t))
    train += [(f"u{n}", "t1") for n in range(1, 40, 2)][:5]  # repeats: more rows of t1, not more users
    source.append(("new", "s2"))
    catalogue = np.array(["t1", "t2", "t3"], dtype=object)
    joint = JointTrain.of(_frame(source), _frame(train), catalogue)
    assert joint.n_source == len(source)
    val = build_ranking_task(catalogue, _frame([("new", "t2")]).with_columns(rating=None, timestamp=0),
                             _frame(train).with_columns(rating=None, timestamp=0), click_threshold=4.0)
    grid = ClosedFormGrid(factors=4, regularization=1.0, iterations=10, alpha=(5.0, 20.0), l2=(1.0, 10.0),
                          recency=0.0)  # every pair alike (the pairs have no times)
    result = fit_closed_form_transfer(joint, val, grid=grid, seed=0)

    model = result.model
    assert model.kind == "transfer" and list(model.item_ids) == list(catalogue)
    assert result.val_ndcg_at_10 == pytest.approx(1.0), result.grid
    assert len(result.grid) == 4 and result.val_ndcg_at_10 == max(point["val_ndcg_at_10"] for point in result.grid)
    assert {result.params["alpha"], result.params["l2"]} <= {5.0, 20.0, 1.0, 10.0}
    encoded = joint.encoded
    source_only = fit_als_encoded(
        EncodedTrain(encoded.user_ids, encoded.item_ids, encoded.users[:joint.n_source],
                     encoded.items[:joint.n_source]),
        factors=4, regularization=1.0, alpha=grid.source_alpha, iterations=10, seed=0)
    # recency 0: the users solved once more on the source items at the source's own confidence (implicit's user
    # step: the same vectors up to its last item step)
    users = user_step(source_only.item_factors, encoded.users[:joint.n_source], encoded.items[:joint.n_source],
                      np.full(joint.n_source, grid.source_alpha), len(encoded.user_ids), l2=1.0)
    np.testing.assert_array_equal(model.user_factors, users)
    np.testing.assert_allclose(model.user_factors, source_only.user_factors, atol=0.05)
    assert not model.item_factors[2].any()  # t3: no training pair, ranked by the (popularity) bias alone
    assert model.item_bias[0] == model.item_bias[1] > model.item_bias[2]  # 20 users each (repeats count once)


def test_recency_counts_back_from_each_users_latest_and_ties_share_their_places():
    """Places counted back from the user's most recent interaction, in the frame's row order; two interactions in
    the same second share the mean of their places, whatever their rows or ids."""
    frame = pl.DataFrame({"user_id": ["a", "a", "b", "a", "a", "b"], "item_id": ["x", "y", "x", "z", "w", "y"],
                          "timestamp": [10, 30, 5, 30, 20, 7]})
    np.testing.assert_array_equal(recency_ranks(frame), [3.0, 0.5, 1.0, 0.5, 2.0, 0.0])
    np.testing.assert_array_equal(recency_ranks(frame.reverse()), [0.0, 2.0, 0.5, 1.0, 0.5, 3.0])


def test_the_user_step_weighs_recent_interactions_most():
    """x_u = (VᵀV + Σ c_i v_i v_iᵀ + l2·I)⁻¹ Σ (1 + c_i) v_i with c_i = alpha·exp(-rank_i/recency), per user (an
    item's repeated pairs add their confidence; its preference counts once, as implicit ALS counts repeats), the
    same on one thread or two; on orthonormal item vectors each coordinate is (1 + c_i) / (1 + c_i + l2), so the
    latest item weighs most; a user without pairs gets a zero vector."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 3))
    users, items = rng.integers(0, 4, 40), rng.integers(0, 7, 40)  # users 0..3 of 5: user 4 has no pairs
    ranks = rng.permutation(40).astype(float) % 9
    confidence = recency_confidence(ranks, recency=2.0, alpha=20.0)
    solved = user_step(v, users, items, confidence, 5, l2=3.0, threads=1)
    np.testing.assert_array_equal(solved, user_step(v, users, items, confidence, 5, l2=3.0, threads=2))
    assert solved.shape == (5, 3) and solved.dtype == np.float32 and not solved[4].any()
    assert len(np.unique(np.stack([users, items]), axis=1)[0]) < len(users)  # repeats are there
    for u in range(4):
        seen, c = v[items[users == u]], 20.0 * np.exp(-ranks[users == u] / 2.0)
        once = v[np.unique(items[users == u])].sum(axis=0)
        expected = np.linalg.solve(v.T @ v + (seen.T * c) @ seen + 3.0 * np.eye(3), c @ seen + once)
        np.testing.assert_allclose(solved[u], expected, rtol=1e-5, atol=1e-6)

    eye = np.eye(2)  # item 0 last (rank 0), item 1 before it (rank 1)
    x = user_step(eye, np.array([0, 0]), np.array([1, 0]),
                  recency_confidence(np.array([1.0, 0.0]), recency=1.0, alpha=20.0), 1, l2=1.0)[0]
    c = 20.0 * np.exp(-np.array([0.0, 1.0]))
    np.testing.assert_allclose(x, (1 + c) / (2 + c), rtol=1e-6)
    assert x[0] > x[1]


def test_the_recipe_follows_what_a_user_did_last_in_the_source_domains(last_elsewhere):
    """Users of s10..s12 take t1, users of s20..s22 take t2. A validation user watched s10..s12 long ago and s20
    last: on the source model's own (strongly regularised) vectors, three old interactions against one, t1 comes
    first; with the recency step, what they did last decides and t2 (their validation item) comes first."""
    joint, val = last_elsewhere
    np.testing.assert_array_equal(joint.source_recency[-4:], [3.0, 2.0, 1.0, 0.0])
    grid = ClosedFormGrid(factors=4, regularization=10.0, iterations=10, alpha=(5.0,), l2=(1.0,), recency=0.3,
                          recency_alpha=20.0)
    recent = fit_closed_form_transfer(joint, val, grid=grid, seed=0)
    whole = fit_closed_form_transfer(joint, val, grid=replace(grid, recency=0.0), seed=0)
    assert recent.val_ndcg_at_10 == pytest.approx(1.0) and whole.val_ndcg_at_10 < 1.0
    assert recent.params["recency"] == 0.3 and recent.params["recency_alpha"] == 20.0
    with pytest.raises(ValueError, match="without their times"):
        fit_closed_form_transfer(replace(joint, source_recency=None), val, grid=grid, seed=0)


def test_the_carry_over_reads_the_source_items_by_id_and_an_item_it_lacks_counts_as_zero():
    """The refit's carry-over starts from a source model fitted on other pairs: its items are matched to the
    joint's by id (in any order), a source item it never saw (``s9``, first seen after the evaluated cutoffs)
    counts as a zero vector, and the users solve the recency-weighted user step on those vectors."""
    from models.factors import FactorModel

    rows = [("u1", "s1", 1), ("u1", "s2", 2), ("u1", "s9", 3), ("u2", "s2", 1), ("u2", "s1", 5)]
    frame = pl.DataFrame({"user_id": [u for u, _, _ in rows], "item_id": [i for _, i, _ in rows],
                          "timestamp": [t for _, _, t in rows]})
    catalogue = np.array(["t1", "t2"], dtype=object)
    joint = JointTrain.of(frame, _frame([("u1", "t1"), ("u2", "t2")]), catalogue)
    rng = np.random.default_rng(0)
    source_ids = np.array(["s2", "t2", "s1", "t1"], dtype=object)  # another order, and no s9
    source = FactorModel(np.array(["u1"], dtype=object), source_ids, rng.normal(size=(1, 3)).astype(np.float32),
                         rng.normal(size=(4, 3)).astype(np.float32), np.zeros(4, np.float32))
    grid = ClosedFormGrid(regularization=2.0, recency=1.0, recency_alpha=4.0, alpha=(5.0, 20.0), l2=(1.0,))
    models = carry_over(joint, source, grid)
    assert len(models) == 2 and list(models[0].user_ids) == list(joint.encoded.user_ids)
    by_id = dict(zip(source_ids, source.item_factors, strict=True))
    v = np.stack([by_id.get(item, np.zeros(3, np.float32)) for item in joint.encoded.item_ids])
    assert not v[list(joint.encoded.item_ids).index("s9")].any()
    confidence = recency_confidence(joint.source_recency, recency=1.0, alpha=4.0)
    expected = user_step(v, joint.encoded.users[:joint.n_source], joint.encoded.items[:joint.n_source], confidence,
                         len(joint.encoded.user_ids), l2=2.0)
    np.testing.assert_array_equal(models[0].user_factors, expected)
    np.testing.assert_array_equal(models[1].user_factors, expected)
    assert not np.array_equal(models[0].item_factors, models[1].item_factors)  # one carry-over per (alpha, l2)


def test_the_onboarding_keeps_the_closed_form_recipe_unless_the_fine_tune_clears_the_margin():
    """Validation NDCG@10: the fine-tune 1.0 (it ranks the validation item first), the closed-form recipe 0.95. A
    10 % margin keeps the closed-form recipe (1.0 < 1.045): the transfer model, its params, no network curves; no
    margin keeps the fine-tune; without a closed-form recipe there is nothing to choose."""
    from flows.backends import Fits
    from models.factors import popularity_model
    from models.nets.training import FitResult
    from models.transfer.als import TunedResult

    catalogue = np.array(["t1", "t2", "t3"], dtype=object)
    val = build_ranking_task(catalogue, _frame([("u", "t3")]).with_columns(rating=None, timestamp=0),
                             _frame([("u", "t1")]).with_columns(rating=None, timestamp=0), click_threshold=4.0)
    network = FitResult(popularity_model(catalogue, np.array([5, 1, 9])), best_epoch=2)
    other = popularity_model(catalogue, np.array([1, 1, 1]))
    closed_form = ClosedFormResult(popularity_model(catalogue, np.array([9, 5, 1])),
                                   {"recipe": "closed-form", "alpha": 5.0}, 0.95, [], other)
    fits = Fits({"all-others": network}, FitResult(other), TunedResult(other, {"factors": 8}, 0.1, []), other, {},
                closed_form)

    kept = fits.settled("all-others", val, margin=0.1)
    assert kept.recipe == {"recipe": "closed-form", "network_val_ndcg_at_10": 1.0, "closed_form_val_ndcg_at_10": 0.95}
    assert kept.models("all-others")["transfer"] is closed_form.model
    assert "transfer" not in kept.trained("all-others")
    assert kept.tuned()["transfer"] == {**kept.recipe, "alpha": 5.0}
    assert kept.recipe_source is other  # the refit carries the recipe over again from its evaluated source

    kept = fits.settled("all-others", val, margin=0.0)
    assert kept.recipe["recipe"] == "network" and kept.models("all-others")["transfer"] is network.model
    assert kept.trained("all-others")["transfer"] is network and "alpha" not in kept.tuned()["transfer"]
    assert kept.recipe_source is None

    alone = replace(fits, closed_form=None).settled("all-others", val, margin=0.1)
    assert alone.recipe == {"recipe": "network", "network_val_ndcg_at_10": 1.0}


def test_a_refit_above_the_joint_bound_with_every_source_interaction_reads_the_time_safe_ones():
    """The served refit of a joint winner reads every source interaction; where those are above a bound of the joint
    pairs the time-safe ones (as evaluated) were under, it reads the time-safe ones and its params say why."""
    from models.config import FineTuneConfig, ModelConfig, TrainConfig
    from models.transfer.peers import PeerTooLarge
    from models.transfer.refit import refit_model

    source = [(f"u{n}", "s1" if n % 2 else "s2") for n in range(20)]
    train = [(f"u{n}", "t1" if n % 2 else "t2") for n in range(20)]
    catalogue = np.array(["t1", "t2"], dtype=object)
    safe_pairs = JointTrain.of(_frame(source), _frame(train), catalogue)
    asked: list[bool] = []

    class Whole:  # a WholeTarget whose every source interaction is above the bound
        def joint(self, *, time_safe: bool = False) -> JointTrain:
            asked.append(time_safe)
            if not time_safe:
                raise PeerTooLarge("21,000,000 source interactions are above the joint peers' in-memory bound")
            return safe_pairs

    val = build_ranking_task(catalogue, _frame([("u1", "t1")]).with_columns(rating=None, timestamp=0),
                             _frame(train).with_columns(rating=None, timestamp=0), click_threshold=4.0)
    model, params = refit_model("joint-ease", Whole(), val, seed=0, params={"l2": 10.0}, fits={}, source=None,
                                finetune=FineTuneConfig(), model=ModelConfig(), scratch=TrainConfig())
    assert asked == [False, True]
    assert params["l2"] == 10.0 and params["refit_source"].startswith("time-safe (21,000,000 source interactions")
    assert list(model.item_ids) == list(catalogue) and model.kind == "joint-ease"


def test_the_recipes_source_fit_is_read_back_from_the_cache_for_the_same_inputs_only(tmp_path):
    """The ALS source of the same joint pairs, point and seed is written once and read back as it was fitted
    (the recipe then gives the same model); another seed, one more source pair or another point is another key;
    a damaged file is fitted again and rewritten."""
    from models.transfer.closed_form import source_key, source_model

    rng = np.random.default_rng(1)
    source = [(f"u{u}", f"s{i}") for u, i in zip(rng.integers(0, 30, 200), rng.integers(0, 12, 200), strict=True)]
    train = [(f"u{u}", f"t{i}") for u, i in zip(rng.integers(0, 30, 40), rng.integers(0, 4, 40), strict=True)]
    catalogue = np.array([f"t{i}" for i in range(4)], dtype=object)
    joint = JointTrain.of(_frame(source), _frame(train), catalogue)
    grid = ClosedFormGrid(factors=4, regularization=1.0, iterations=5, recency=0.0)
    fresh = source_model(joint, grid, seed=0)
    first = source_model(joint, grid, seed=0, cache=tmp_path)
    (file,) = tmp_path.glob("closed-form-source-*.npy")
    assert file.name == f"closed-form-source-{source_key(joint, grid, 0)}.npy"
    again = source_model(joint, grid, seed=0, cache=tmp_path)
    for model in (first, again):
        assert list(model.item_ids) == list(joint.encoded.item_ids) and len(model.user_ids) == 0
        np.testing.assert_array_equal(model.item_factors, fresh.item_factors)
        np.testing.assert_array_equal(model.item_bias, fresh.item_bias)

    val = build_ranking_task(catalogue, _frame(train[:5]).with_columns(rating=None, timestamp=0),
                             _frame(train[5:]).with_columns(rating=None, timestamp=0), click_threshold=4.0)
    cached = fit_closed_form_transfer(joint, val, grid=grid, seed=0, cache=tmp_path)
    plain = fit_closed_form_transfer(joint, val, grid=grid, seed=0)
    np.testing.assert_array_equal(cached.model.item_factors, plain.model.item_factors)
    assert cached.params == plain.params and cached.val_ndcg_at_10 == plain.val_ndcg_at_10

    one_more = JointTrain.of(_frame([*source, ("u0", "s0")]), _frame(train), catalogue)
    keys = {source_key(joint, grid, 0), source_key(joint, grid, 1), source_key(one_more, grid, 0),
            source_key(joint, replace(grid, iterations=6), 0), source_key(joint, replace(grid, alpha=(1.0,)), 0)}
    assert len(keys) == 4  # the carry-over's grid is not the source's: the last key is the first one

    file.write_bytes(b"not an array")
    damaged = source_model(joint, grid, seed=0, cache=tmp_path)
    np.testing.assert_array_equal(damaged.item_factors, fresh.item_factors)
    assert np.load(file, allow_pickle=False).shape == (len(joint.encoded.item_ids), grid.factors + 1)
