"""The LightningModule: partially frozen user rows and the trainable-parameter count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.nets.lightning import RecommenderModule
from models.nets.network import MatrixFactorization

# training_step is driven by hand here, without a Trainer, so self.log() has nowhere to log
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def test_frozen_user_rows_do_not_move_while_new_users_learn():
    net = MatrixFactorization(n_users=4, n_items=6, dim=3, seed=0)
    frozen = np.array([True, True, False, False])
    module = RecommenderModule(net, lr=0.1, frozen_user_rows=frozen)
    before = net.user_emb.weight.detach().clone()
    optimiser = module.configure_optimizers()
    users, items = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4])
    for _ in range(5):
        optimiser.zero_grad()
        module.training_step([users, items], 0).backward()
        optimiser.step()
    after = net.user_emb.weight.detach()
    assert torch.equal(after[:2], before[:2])
    assert not torch.allclose(after[2:], before[2:])
    # 2 of 4 user rows train, plus all item vectors and biases
    assert module.trainable_parameters() == 2 * 3 + 6 * 3 + 6


def test_sampled_softmax_trains_towards_the_positive_items():
    torch.manual_seed(0)
    net = MatrixFactorization(n_users=2, n_items=50, dim=4, seed=0)
    module = RecommenderModule(net, lr=0.05, n_negatives=8)
    optimiser = module.configure_optimizers()
    users, items = torch.tensor([0, 1] * 8), torch.tensor([3, 7] * 8)
    for _ in range(100):
        optimiser.zero_grad()
        module.training_step([users, items], 0).backward()
        optimiser.step()
    scores = net(torch.tensor([0, 1]))
    assert scores[0].argmax().item() == 3 and scores[1].argmax().item() == 7


def test_validation_users_are_sampled_above_the_cap():
    import polars as pl

    from models.nets.training import validation_data

    holdout = pl.DataFrame({"user_id": [f"u{i}" for i in range(10)], "item_id": ["a"] * 10,
                            "timestamp": list(range(10)), "rating": [5.0] * 10})
    seen = holdout.with_columns(pl.lit("b").alias("item_id"))
    users = np.array([f"u{i}" for i in range(10)], dtype=object)
    items = np.array(["a", "b"], dtype=object)
    full = validation_data(holdout, seen, user_ids=users, item_ids=items, max_users=10)
    sampled = validation_data(holdout, seen, user_ids=users, item_ids=items, max_users=4, seed=1)
    again = validation_data(holdout, seen, user_ids=users, item_ids=items, max_users=4, seed=1)
    assert len(full.user_index) == 10 and len(sampled.user_index) == 4
    assert np.array_equal(sampled.user_index, again.user_index)  # seeded
    assert set(sampled.user_index) <= set(full.user_index)


def test_later_training_fields_leave_source_fingerprints_alone_at_their_defaults():
    from models.config import TrainConfig
    from models.selection.sources import LATER_FIELDS, _train_identity

    assert not LATER_FIELDS & set(_train_identity(TrainConfig()))
    assert _train_identity(TrainConfig(max_val_users=10))["max_val_users"] == 10
    assert _train_identity(TrainConfig(steps_per_epoch=None))["steps_per_epoch"] is None
    assert _train_identity(TrainConfig(min_negatives=64)) != _train_identity(TrainConfig())


def test_every_epoch_reports_one_progress_line_and_its_numbers(games_split):
    """A long fit is never silent: one line per epoch (model, epoch, loss, validation NDCG, elapsed, ETA), and the
    same numbers to ``on_epoch`` (the live curves) as the fit's own history."""
    import logging

    from models.config import ModelConfig, TrainConfig
    from models.nets.training import progress
    from models.transfer.recipes import train_scratch

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, level = Collect(), progress.level
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    reports = []
    try:
        fit = train_scratch(games_split, model=ModelConfig(dim=8), train=TrainConfig(max_epochs=6, patience=6),
                            seed=0, label="scratch-test", on_epoch=reports.append)
    finally:
        progress.removeHandler(handler)
        progress.setLevel(level)
    assert len(lines) == len(reports) == fit.epochs_run == 6
    assert [r.epoch for r in reports] == [1, 2, 3, 4, 5, 6]
    assert [r.val_ndcg for r in reports] == pytest.approx([e["val/ndcg_at_10"] for e in fit.history])
    assert [r.loss for r in reports] == pytest.approx([e["train/loss"] for e in fit.history])
    assert [r.best_val_ndcg for r in reports] == pytest.approx(np.maximum.accumulate([r.val_ndcg for r in reports]))
    assert reports[-1].eta == 0 and all(r.eta >= 0 for r in reports)
    assert lines[0].startswith("[scratch-test] epoch 1/6  loss ") and "val NDCG@10 " in lines[0]
    assert lines[0].endswith("s") and "ETA <= " in lines[0]


def test_a_refit_trains_the_chosen_epochs_to_the_end_and_keeps_the_last_weights(games_split):
    """restore_best=False: no early stopping, no return to an earlier epoch (the refit's validation users are in
    its training data), and the same weights from the same seed."""
    from models.config import ModelConfig, TrainConfig
    from models.transfer.recipes import train_scratch

    config = TrainConfig(max_epochs=4, patience=1)  # patience 1 would stop early if it applied
    fit = train_scratch(games_split, model=ModelConfig(dim=8), train=config, seed=0, restore_best=False)
    assert fit.epochs_run == 4 and fit.best_epoch == 3
    assert fit.best_val_ndcg == pytest.approx(fit.history[-1]["val/ndcg_at_10"])
    again = train_scratch(games_split, model=ModelConfig(dim=8), train=config, seed=0, restore_best=False)
    np.testing.assert_array_equal(fit.model.user_factors, again.model.user_factors)


def test_batches_grow_with_the_data_and_the_negatives_shrink_in_proportion():
    from models.config import TrainConfig

    config = TrainConfig(batch_size=256, n_negatives=1024, steps_per_epoch=1000, max_batch_size=16384,
                         min_negatives=128)
    assert config.sized_for(256_000) == config  # up to batch x steps: as configured
    grown = config.sized_for(256_001)  # 257 pairs a step -> the next power of two
    assert (grown.batch_size, grown.n_negatives) == (512, 512)
    assert (config.sized_for(8_000_000).batch_size, config.sized_for(8_000_000).n_negatives) == (8192, 128)
    assert config.sized_for(10**9).batch_size == 16384  # capped
    assert config.sized_for(8_000_000).sized_for(8_000_000) == config.sized_for(8_000_000)  # idempotent
    assert TrainConfig(n_negatives=0).sized_for(10**7).n_negatives == 0  # full softmax stays full
    assert TrainConfig(n_negatives=64).sized_for(10**7).n_negatives == 64  # never more than configured
    assert TrainConfig(steps_per_epoch=None).sized_for(10**9) == TrainConfig(steps_per_epoch=None)
    # data-sized: one epoch without improvement ends the fit; a lower patience stays
    assert (config.patience, grown.patience, config.sized_for(10**7).patience) == (3, 1, 1)
    assert config.model_copy(update={"patience": 2, "sized_patience": 5}).sized_for(10**7).patience == 2


def test_a_fit_on_more_pairs_runs_sized_batches(games_split):
    """The fit reads the sized batch and negatives (one epoch is then about steps_per_epoch steps), and reports
    them."""
    from models.config import ModelConfig, TrainConfig
    from models.transfer.recipes import train_scratch

    n_train = games_split.train.height
    config = TrainConfig(max_epochs=1, patience=1, batch_size=8, n_negatives=16, steps_per_epoch=n_train // 40,
                         min_negatives=2)
    sized = config.sized_for(n_train)
    assert sized.batch_size > 8 and sized.n_negatives < 16
    fit = train_scratch(games_split, model=ModelConfig(dim=8), train=config, seed=0, restore_best=False)
    assert (fit.batch_size, fit.n_negatives) == (sized.batch_size, sized.n_negatives)
    assert fit.history[-1]["step"] == -(-n_train // sized.batch_size) - 1  # the epoch's optimiser steps, 0-based
    plain = train_scratch(games_split, model=ModelConfig(dim=8), train=config.model_copy(
        update={"steps_per_epoch": None}), seed=0, restore_best=False)
    assert (plain.batch_size, plain.n_negatives) == (8, 16)
    # with early stopping, the data-sized fit stops at its first epoch without improvement (patience 20 aside)
    stopping = config.model_copy(update={"max_epochs": 20, "patience": 20, "lr": 0.05})
    stopped = train_scratch(games_split, model=ModelConfig(dim=8), train=stopping, seed=0)
    scores = [row["val/ndcg_at_10"] for row in stopped.history]
    assert (stopped.patience, fit.patience) == (1, 0)  # as sized; a fit of fixed epochs does not stop early
    assert 2 < stopped.epochs_run < 20 and scores[-1] <= max(scores[:-1])
    assert all(later > earlier for earlier, later in zip(scores[:-2], scores[1:-1], strict=True))


def test_when_no_epoch_beats_the_start_the_trainable_weights_return_to_it(games_split):
    """A fit whose epochs all validate worse than its initial weights ends with those weights (the trainable
    ones are kept aside; frozen rows never move)."""
    from models.config import ModelConfig, TrainConfig
    from models.nets.network import MatrixFactorization
    from models.nets.training import encode_pairs, fit_network, validation_data
    from models.transfer.recipes import catalogue_ids, train_scratch

    good = train_scratch(games_split, model=ModelConfig(dim=8), train=TrainConfig(max_epochs=8, patience=8),
                         seed=0).model
    net = MatrixFactorization.from_arrays(good.user_factors, good.item_factors, good.item_bias)
    items = catalogue_ids(games_split)
    frozen = np.zeros(len(good.user_ids), dtype=bool)
    frozen[: len(frozen) // 2] = True
    fit = fit_network(net, encode_pairs(games_split.train, good.user_ids, items), user_ids=good.user_ids,
                      item_ids=items, val=validation_data(games_split.val, games_split.train,
                                                          user_ids=good.user_ids, item_ids=items),
                      config=TrainConfig(lr=100.0, max_epochs=2, patience=1), seed=0, frozen_user_rows=frozen)
    assert fit.best_epoch == -1 and fit.best_val_ndcg == pytest.approx(fit.initial_val_ndcg)
    np.testing.assert_array_equal(fit.model.user_factors, good.user_factors)
    np.testing.assert_array_equal(fit.model.item_factors, good.item_factors)
    np.testing.assert_array_equal(fit.model.item_bias, good.item_bias)


@pytest.mark.parametrize(("n", "batch", "drop_last"), [(1000, 64, False), (1024, 64, False), (1000, 64, True),
                                                        (10, 64, False)])
def test_slice_batches_are_the_plain_shuffled_loaders_batches_epoch_after_epoch(n, batch, drop_last):
    from torch.utils.data import DataLoader, RandomSampler

    from models.nets.training import _as_batch, _PairTensors, _SliceBatches

    dataset = _PairTensors(torch.arange(n) * 3, torch.arange(n) % 7)
    plain = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=drop_last,
                       generator=torch.Generator().manual_seed(5), collate_fn=_as_batch)
    order = torch.Generator().manual_seed(5)
    batches = _SliceBatches(RandomSampler(dataset, generator=order), batch, drop_last=drop_last)
    sliced = DataLoader(dataset, collate_fn=_as_batch, generator=order, batch_sampler=batches)
    assert len(sliced) == len(plain)
    for _ in range(3):  # the generator moves on the same way each epoch
        expected, got = list(plain), list(sliced)
        assert len(got) == len(expected) > 0
        for (users, items), (want_users, want_items) in zip(got, expected, strict=True):
            assert torch.equal(users, want_users) and torch.equal(items, want_items)


def test_slice_batches_batch_another_sampler_the_plain_way():
    from torch.utils.data import SequentialSampler

    from models.nets.training import _SliceBatches

    batches = list(_SliceBatches(SequentialSampler(range(5)), 2, drop_last=False))
    assert batches == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize(("users", "dim", "items"), [(7, 3, 50), (300, 64, 2000), (1, 8, 9)])
def test_scores_add_the_item_bias_to_the_same_values_as_product_plus_bias(users, dim, items):
    net = MatrixFactorization(n_users=users, n_items=items, dim=dim, seed=1)
    with torch.no_grad():
        net.item_bias.normal_(generator=torch.Generator().manual_seed(2))
        index = torch.arange(-1, users)  # -1: an unknown user, a zero vector
        scores = net.score_users(index)
        vectors = torch.cat([torch.zeros(1, dim), net.user_vectors(torch.arange(users))])
        assert torch.equal(scores, vectors @ net.item_vectors().T + net.item_bias)


def test_the_epoch_loss_is_the_pair_weighted_mean_of_the_steps_losses(games_split):
    """train/loss is summed by the module and logged once an epoch: the mean over pairs of every step's loss
    (the last batch is smaller), epoch by epoch."""
    import pytorch_lightning as pl_lightning

    from models.config import ModelConfig, TrainConfig
    from models.transfer.recipes import train_scratch

    steps: list[list[tuple[float, int]]] = []

    class Steps(pl_lightning.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            steps.append([])

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            steps[-1].append((float(outputs["loss"]), len(batch[0])))

    fit = train_scratch(games_split, model=ModelConfig(dim=8), train=TrainConfig(max_epochs=3, patience=3,
                                                                                 batch_size=64),
                        seed=0, callbacks=[Steps()])
    assert len(steps) == fit.epochs_run == 3 and all(len(epoch) > 1 for epoch in steps)
    assert len({size for epoch in steps for _, size in epoch}) > 1  # a smaller last batch: the weights matter
    expected = [sum(loss * size for loss, size in epoch) / sum(size for _, size in epoch) for epoch in steps]
    assert [e["train/loss"] for e in fit.history] == pytest.approx(expected, rel=1e-5)
