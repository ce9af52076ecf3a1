"""Transfer initialisation: what moves from the source and how new rows are filled."""

from __future__ import annotations

import numpy as np
import pytest

from models.config import FineTuneConfig, ModelConfig, TrainConfig
from models.evaluation.ranking import evaluate_model
from models.factors import FactorModel
from models.transfer.init import target_user_vocabulary, transfer_init
from models.transfer.recipes import (
    fine_tune,
    fit_popularity,
    initialise_from_source,
    ranking_tasks,
    train_scratch,
    zero_shot_model,
)


def toy_source() -> FactorModel:
    users = np.array(["u1", "u2", "u3"], dtype=object)
    items = np.array(["s1", "s2"], dtype=object)
    u = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    v = np.array([[2, 0], [0, 2]], dtype=np.float32)
    return FactorModel(users, items, u, v, np.array([0.5, -0.5], dtype=np.float32))


def test_shared_users_keep_their_source_vectors_and_new_users_are_appended():
    source = toy_source()
    vocab = target_user_vocabulary(source, np.array(["u2", "new"], dtype=object))
    assert vocab.tolist() == ["u1", "u2", "u3", "new"]
    init = transfer_init(source, user_ids=vocab, item_ids=np.array(["t1", "t2"], dtype=object),
                         train_users=np.array([0, 1]), train_items=np.array([0, 1]))
    np.testing.assert_array_equal(init.user_factors[:3], source.user_factors)
    assert init.user_from_source.tolist() == [True, True, True, False]
    assert not init.item_from_source.any()


def test_new_items_point_towards_the_users_who_chose_them():
    source = toy_source()
    items = np.array(["t1", "t2", "t3"], dtype=object)
    # u1 (taste [1, 0]) picks t1 many times, u2 (taste [0, 1]) picks t2; nobody picks t3
    users = np.array([0] * 5 + [1] * 5)
    chosen = np.array([0] * 5 + [1] * 5)
    init = transfer_init(source, user_ids=source.user_ids, item_ids=items, train_users=users, train_items=chosen)
    model = init.as_model()
    scores = model.user_factors @ model.item_factors.T + model.item_bias
    assert scores[0, 0] > scores[0, 1]  # u1 prefers t1
    assert scores[1, 1] > scores[1, 0]  # u2 prefers t2
    np.testing.assert_array_equal(init.item_factors[2], 0.0)  # unseen item: zero vector
    assert init.item_bias[2] < init.item_bias[0]  # and the lowest popularity bias
    assert init.item_scale > 0


def test_shared_items_keep_their_source_vectors_and_new_users_are_built_from_them():
    source = toy_source()
    items = np.array(["s1", "s2"], dtype=object)
    users = np.array(["x", "y"], dtype=object)  # disjoint users (regime: shared items only)
    init = transfer_init(source, user_ids=users, item_ids=items, train_users=np.array([0, 0, 1]),
                         train_items=np.array([0, 0, 1]))
    np.testing.assert_array_equal(init.item_factors, source.item_factors)
    scores = init.user_factors @ init.item_factors.T + init.item_bias
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_source_model_learns_and_respects_its_domains(source_fit, synthetic_dataset):
    assert source_fit.best_val_ndcg > source_fit.initial_val_ndcg
    assert all(not i.startswith("games") for i in source_fit.model.item_ids)
    assert len(source_fit.history) >= 1 and "val/ndcg_at_10" in source_fit.history[0]


def test_transfer_beats_target_only_models_on_synthetic_data(source_fit, games_split):
    """Users share taste across domains, so the carried-over user vectors must help."""
    _, test = ranking_tasks(games_split, click_threshold=4.0)
    zero = evaluate_model(zero_shot_model(source_fit.model, games_split), test).metrics["ndcg_at_10"]
    tuned = fine_tune(source_fit.model, games_split, config=FineTuneConfig(train=TrainConfig(max_epochs=10)), seed=0)
    scratch = train_scratch(games_split, model=ModelConfig(dim=16), train=TrainConfig(max_epochs=10), seed=0)
    pop = evaluate_model(fit_popularity(games_split), test).metrics["ndcg_at_10"]
    transfer = evaluate_model(tuned.model, test).metrics["ndcg_at_10"]
    scratch_ndcg = evaluate_model(scratch.model, test).metrics["ndcg_at_10"]
    assert zero > pop
    assert transfer > max(pop, scratch_ndcg)


def test_freeze_users_keeps_transferred_user_vectors(source_fit, games_split):
    init = initialise_from_source(source_fit.model, games_split)
    tuned = fine_tune(source_fit.model, games_split,
                      config=FineTuneConfig(mode="freeze-users", train=TrainConfig(max_epochs=3, patience=3)), seed=0)
    full = fine_tune(source_fit.model, games_split,
                     config=FineTuneConfig(mode="full", train=TrainConfig(max_epochs=3, patience=3)), seed=0)
    rows = init.user_from_source
    np.testing.assert_array_equal(tuned.model.user_factors[rows], init.user_factors[rows])
    assert tuned.trainable_parameters < full.trainable_parameters
    if full.best_epoch >= 0:  # full fine-tuning moved the users when it kept a trained epoch
        assert not np.allclose(full.model.user_factors[rows], init.user_factors[rows])


def test_zero_shot_mode_trains_nothing(source_fit, games_split):
    fit = fine_tune(source_fit.model, games_split, config=FineTuneConfig(mode="zero-shot"), seed=0)
    zero = zero_shot_model(source_fit.model, games_split)
    np.testing.assert_array_equal(fit.model.item_factors, zero.item_factors)
    np.testing.assert_array_equal(fit.model.user_factors, zero.user_factors)
    assert fit.epochs_run == 0 and fit.trainable_parameters == 0 and fit.best_epoch == -1
    val, _ = ranking_tasks(games_split, click_threshold=4.0)
    assert fit.best_val_ndcg == pytest.approx(evaluate_model(zero, val, ks=(10,)).metrics["ndcg_at_10"], abs=1e-6)
