"""Refit before serving: every kind of winner trained again on train + validation + test with what validation
chose, in memory and streamed from the split's parts on disk (real fits on the synthetic data; the task runs
under the session's Prefect test server)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from models.config import FineTuneConfig, ModelConfig, SplitConfig, TrainConfig
from models.selection.candidates import prepare_source, source_profile, target_profile
from models.split import split_target_domain, split_with
from models.transfer.als import AlsGrid, EncodedTrain, fit_als
from models.transfer.closed_form import ClosedFormGrid, carry_over, fit_closed_form_transfer
from models.transfer.joint import JointGrid, JointTrain, fit_joint_als, fit_joint_ease
from models.transfer.outofcore import split_on_disk
from models.transfer.peers import PeerGrid, fit_ease, fit_itemknn
from models.transfer.recency import recency_confidence
from models.transfer.recipes import (
    catalogue_ids,
    fine_tune,
    ranking_tasks,
    train_scratch,
    train_source_model,
)
from models.transfer.refit import WholeInMemory, WholeOnDisk, all_data_split
from tasks.refit import refit_winner

SOURCES = ["books", "movies", "music"]


@pytest.fixture(scope="module")
def onboarding(synthetic_dataset):
    data = synthetic_dataset
    split = split_target_domain(data.interactions, data.items, domain="games", fraction=0.3, seed=0)
    val, _ = ranking_tasks(split, click_threshold=4.0)
    source = train_source_model(data.interactions, data.items, domains=SOURCES, cutoffs=split.cutoffs,
                                model=ModelConfig(dim=8), train=TrainConfig(max_epochs=4, patience=4), seed=0)
    profile = source_profile(data.interactions, data.items, dataset="synthetic", domains=SOURCES,
                             cutoffs=split.cutoffs, embedder="hashed")
    prepared = prepare_source(source.model, profile, split, target_profile(split, "synthetic", "hashed"),
                              item_match="id", shared_users=True, embedder="hashed")
    train = TrainConfig(max_epochs=6, patience=6)
    finetune = FineTuneConfig(train=train)
    fits = {"transfer": fine_tune(prepared.model, split, config=finetune, seed=0, text=prepared.text),
            "scratch": train_scratch(split, model=ModelConfig(dim=8), train=train, seed=0)}
    encoded = EncodedTrain.of(split.train, catalogue_ids(split))
    joint = JointTrain.of_split(data.interactions, data.items, split)
    grid = JointGrid(als=AlsGrid(factors=(4, 8), regularization=(1.0,), alpha=(5.0,), iterations=4),
                     ease=PeerGrid(lambdas=(50.0, 500.0)))
    recipe = fit_closed_form_transfer(joint, val, grid=ClosedFormGrid(factors=8, alpha=(5.0, 80.0), l2=(30.0,)), seed=0)
    tuned = {"als": fit_als(encoded, None, val, grid=AlsGrid(factors=(4, 8), regularization=(0.1,), alpha=(1.0,),
                                                                iterations=4), seed=0).params,
             "ease": fit_ease(encoded, val).params, "itemknn": fit_itemknn(encoded, val).params,
             "joint-als": fit_joint_als(joint, val, grid=grid, seed=0).params,
             "joint-ease": fit_joint_ease(joint, val, grid=grid).params,
             # the closed-form transfer recipe kept (a "transfer" winner refitted by its recipe's params)
             "closed-form": {"recipe": "closed-form", **recipe.params}}
    return data, split, val, prepared, finetune, train, fits, tuned, source.model, recipe.source


WINNERS = ["transfer", "closed-form", "scratch", "popularity", "als", "ease", "itemknn", "joint-als", "joint-ease"]


def _as_registered(winner: str, tuned: dict) -> tuple[str, dict]:
    """(the winner's name in an onboarding, the tuned params it passes): the closed-form recipe is ``transfer``."""
    if winner == "closed-form":
        return "transfer", {**tuned, "transfer": tuned["closed-form"]}
    return winner, tuned


@pytest.mark.parametrize("winner", WINNERS)
def test_the_winner_is_refitted_on_every_target_interaction_with_what_validation_chose(onboarding, winner):
    data, split, val, prepared, finetune, train, fits, tuned, _, recipe_source = onboarding
    whole = WholeInMemory(split, data.interactions, data.items, text=prepared.text)
    name, passed = _as_registered(winner, tuned)
    refit = refit_winner(name, whole, val, seed=0, tuned=passed, fits=fits, source=prepared.model,
                         finetune=finetune, model=ModelConfig(dim=8), scratch=train, recipe_source=recipe_source)
    everything = pl.concat([split.train, split.val, split.test])
    assert refit.rows == {"train": split.train.height, "val": split.val.height, "test": split.test.height,
                          "all": everything.height}
    assert all_data_split(split).train.height == everything.height
    served, catalogue = refit.model, catalogue_ids(split)
    assert list(served.item_ids) == list(catalogue)  # the same items, scored for users of every period
    if winner == "popularity":  # counts over every interaction, not only the training split's
        counts = everything.group_by("item_id").len()
        expected = dict(zip(counts["item_id"], np.log1p(counts["len"].to_numpy()), strict=True))
        assert np.allclose(served.item_bias, [expected.get(i, 0.0) for i in catalogue])
        return
    # the users seen only in validation or test now have vectors of their own
    later_only = set(everything["user_id"]) - set(split.train["user_id"])
    assert later_only and later_only <= set(served.user_ids)
    if winner in ("transfer", "scratch"):  # the epochs validation chose, trained to the end
        chosen = fits[winner].best_epoch + 1  # 0: the initial weights were best
        # transfer's initial weights are the source's (served as initialised); scratch's are random (one epoch)
        assert refit.params["epochs"] == (chosen if chosen > 0 or winner == "transfer" else 1)
    else:  # the grid point validation chose, not tuned again
        assert refit.params == tuned[winner]


@pytest.fixture(scope="module")
def on_disk(onboarding, tmp_path_factory):
    """A target split on disk, and the same rows in memory (the sample of training users is drawn per bucket
    on disk: the in-memory split takes the disk's training and validation rows; test rows are the same)."""
    data = onboarding[0]
    config = SplitConfig(fraction=0.3, seed=0)
    disk = split_on_disk(data.interactions.lazy(), data.items, domain="games", config=config,
                         workdir=tmp_path_factory.mktemp("refit") / "split", batch_rows=500, bucket_rows=700)
    memory = replace(split_with(data.interactions, data.items, domain="games", config=config),
                     train=disk.scan("train").collect(), val=disk.scan("val").collect())
    return memory, disk


@pytest.mark.parametrize("winner", WINNERS)
def test_out_of_core_the_winner_is_refitted_from_every_part_on_disk(onboarding, on_disk, winner):
    data, _, _, _, finetune, train, fits, tuned, source, recipe_source = onboarding
    memory, disk = on_disk
    val, _ = ranking_tasks(memory, click_threshold=4.0)
    name, passed = _as_registered(winner, tuned)
    options = dict(seed=0, tuned=passed, fits=fits, source=source, finetune=finetune, model=ModelConfig(dim=8),
                   scratch=train, recipe_source=recipe_source)
    refit = refit_winner(name, WholeOnDisk(disk, data.interactions.lazy(), data.items, batch_rows=500), val,
                         **options)
    everything = pl.concat([memory.train, memory.val, memory.test])
    assert refit.rows == {"train": memory.train.height, "val": memory.val.height, "test": memory.test.height,
                          "all": everything.height}
    assert disk.with_all_parts().scan("train").collect().height == everything.height
    assert disk.scan("train").collect().height == memory.train.height  # the evaluated split is untouched
    served = refit.model
    assert list(served.item_ids) == list(catalogue_ids(memory))
    if winner != "popularity":
        later_only = set(everything["user_id"]) - set(memory.train["user_id"])
        assert later_only and later_only <= set(served.user_ids)
    if winner in ("popularity", "ease", "itemknn", "joint-ease"):  # closed forms: the same model as in memory
        expected = refit_winner(name, WholeInMemory(memory, data.interactions, data.items), val, **options).model
        assert list(served.user_ids) == list(expected.user_ids)
        np.testing.assert_allclose(served.item_bias, expected.item_bias, atol=1e-6)
        np.testing.assert_allclose(served.user_factors @ served.item_factors.T,
                                   expected.user_factors @ expected.item_factors.T, atol=1e-4)
    elif winner in ("transfer", "scratch"):
        assert refit.params["epochs"] == max(fits[winner].best_epoch + 1, 0 if winner == "transfer" else 1)
    else:
        assert refit.params == tuned[winner]


def test_the_kept_closed_form_recipe_is_carried_over_again_on_every_source_interaction_the_latest_included(
        onboarding):
    """The refit of a kept closed-form recipe starts from the item vectors of the source model it was evaluated
    with (not fitted again) and carries it over at its chosen point: each user's vector is solved on every source
    interaction, not only those before their first test interaction (what they did last in the other domains
    weighs most), and every catalogue item on all the target's pairs."""
    data, split, val, prepared, finetune, train, fits, tuned, _, _ = onboarding
    grid = ClosedFormGrid(factors=8, alpha=(5.0, 80.0), l2=(30.0,))
    evaluated = fit_closed_form_transfer(JointTrain.of_split(data.interactions, data.items, split), val, grid=grid,
                                         seed=0)
    name, passed = _as_registered("closed-form", {**tuned, "closed-form": {"recipe": "closed-form",
                                                                          **evaluated.params}})
    refit = refit_winner(name, WholeInMemory(split, data.interactions, data.items, text=prepared.text), val, seed=0,
                         tuned=passed, fits=fits, source=prepared.model, finetune=finetune,
                         model=ModelConfig(dim=8), scratch=train, recipe_source=evaluated.source)
    served = refit.model
    assert refit.params == passed["transfer"] and served.kind == "transfer"
    assert list(served.item_ids) == list(catalogue_ids(split))
    whole = JointTrain.of_split(data.interactions, data.items, all_data_split(split), time_safe=False)
    time_safe = JointTrain.of_split(data.interactions, data.items, all_data_split(split))
    assert whole.n_source > time_safe.n_source  # source interactions after some users' cutoffs count now
    assert list(served.user_ids) == list(whole.encoded.user_ids)
    point = replace(grid, alpha=(float(evaluated.params["alpha"]),), l2=(float(evaluated.params["l2"]),))
    expected = carry_over(whole, evaluated.source, point)[0]
    np.testing.assert_array_equal(served.user_factors, expected.user_factors)
    np.testing.assert_array_equal(served.item_factors, expected.item_factors)
    # a user with source interactions after their cutoff: their vector solves the recency-weighted user step on
    # every one of them, over the evaluated source's item vectors
    v = evaluated.source.aligned(np.empty(0, dtype=object), whole.encoded.item_ids)[1].astype(np.float64)
    source_rows = {name: np.bincount(joint.encoded.users[:joint.n_source], minlength=len(joint.encoded.user_ids))
                   for name, joint in (("whole", whole), ("time_safe", time_safe))}
    before = dict(zip(time_safe.encoded.user_ids, source_rows["time_safe"], strict=True))
    later = [r for r, user in enumerate(whole.encoded.user_ids) if source_rows["whole"][r] > before.get(user, 0)]
    assert later
    confidence = recency_confidence(whole.source_recency, recency=grid.recency, alpha=grid.recency_alpha)
    users, items = whole.encoded.users[:whole.n_source], whole.encoded.items[:whole.n_source]
    for r in later[:10]:
        seen, weight = v[items[users == r]], confidence[users == r]
        lhs = (v.T @ v + (seen.T * weight) @ seen + grid.regularization * np.eye(v.shape[1])) @ served.user_factors[r]
        np.testing.assert_allclose(lhs, (1.0 + weight) @ seen, rtol=1e-3, atol=1e-3)
    # each item's vector solves the carry-over's normal equations on every target pair of the whole split
    u = served.user_factors.astype(np.float64)
    alpha, l2 = float(evaluated.params["alpha"]), float(evaluated.params["l2"])
    everything = pl.concat([split.train, split.val, split.test]).select("user_id", "item_id").unique()
    row = {user: r for r, user in enumerate(served.user_ids)}
    for column, item in list(enumerate(served.item_ids))[:20]:
        seen = u[[row[user] for user in everything.filter(pl.col("item_id") == item)["user_id"]]]
        lhs = (u.T @ u + alpha * seen.T @ seen + l2 * np.eye(u.shape[1])) @ served.item_factors[column]
        np.testing.assert_allclose(lhs, (1.0 + alpha) * seen.sum(axis=0), rtol=1e-3, atol=1e-3)
