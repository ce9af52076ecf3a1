"""RowAdam: a large user table updated only where a batch reads it, with dense Adam's arithmetic."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import pytorch_lightning as pl_lightning
import torch

from models.config import TrainConfig
from models.nets.network import MatrixFactorization
from models.nets.optim import RowAdam

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")


def _groups(net: MatrixFactorization) -> list[dict]:
    # the user table at its own rate, as the discriminative learning rates of fine-tuning give it
    return [{"params": [net.item_emb.weight, net.item_bias], "lr": 0.01},
            {"params": [net.user_emb.weight], "lr": 0.003}]


def _train(net: MatrixFactorization, optimiser: torch.optim.Optimizer, batches: list[tuple[torch.Tensor, ...]]) -> None:
    for users, items in batches:
        if isinstance(optimiser, RowAdam):  # what RecommenderModule.training_step does before the forward pass
            optimiser.prepare(net.user_emb.weight, users)
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(net(users), items).backward()
        optimiser.step()
    if isinstance(optimiser, RowAdam):
        optimiser.flush()


def _batches(n_users: int, steps: int, seed: int = 0, *, all_first: bool = True) -> list[tuple[torch.Tensor, ...]]:
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for step in range(steps):
        # every row once at the start (so dense Adam's eps-free update is defined), then rows skipped for
        # stretches of every length: a quarter of the table first, then the rest but its last ten rows
        users = (torch.arange(n_users) if step == 0 and all_first
                 else torch.randint(0, n_users // 4 if step < steps // 2 else n_users - 10, (16,),
                                    generator=generator))
        batches.append((users, torch.randint(0, 30, (len(users),), generator=generator)))
    return batches


def _pair(eps: float, *, all_first: bool = True) -> tuple[MatrixFactorization, MatrixFactorization]:
    torch.manual_seed(0)
    dense = MatrixFactorization(200, 30, 8).double()
    rows = copy.deepcopy(dense)
    rows.user_emb.sparse = True
    batches = _batches(200, 300, all_first=all_first)
    _train(dense, torch.optim.Adam(_groups(dense), eps=eps), batches)
    _train(rows, RowAdam(_groups(rows), eps=eps), batches)
    return dense, rows


def test_without_eps_every_row_moves_as_under_dense_adam_skipped_steps_and_all():
    dense, rows = _pair(eps=0.0)
    for (name, a), b in zip(dense.named_parameters(), rows.parameters(), strict=True):
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=0, atol=1e-12, err_msg=name)


def test_with_eps_the_rows_stay_within_a_thousandth_of_dense_adam_and_unused_rows_stay_put():
    dense, rows = _pair(eps=1e-8, all_first=False)
    start = MatrixFactorization(200, 30, 8).double()  # the same seeded start
    for (name, a), b in zip(dense.named_parameters(), rows.parameters(), strict=True):
        spread = float(a.detach().abs().max())
        assert float((a - b).detach().abs().max()) < 1e-2 * spread, name  # measured: 1.2e-3 of the largest weight
    used = torch.cat([u for u, _ in _batches(200, 300, all_first=False)]).unique()
    unused = np.setdiff1d(np.arange(200), used.numpy())
    assert len(unused) == 10
    np.testing.assert_array_equal(rows.user_emb.weight.detach().numpy()[unused],
                                  start.user_emb.weight.detach().numpy()[unused])


def test_a_reloaded_state_goes_on_exactly_where_the_uninterrupted_run_does():
    torch.manual_seed(0)
    net = MatrixFactorization(200, 30, 8)
    net.user_emb.sparse = True
    batches = _batches(200, 120)
    whole, half = copy.deepcopy(net), copy.deepcopy(net)
    uninterrupted = RowAdam(_groups(whole))
    for part in (batches[:60], batches[60:]):  # flushed at step 60, as a fit is before validating and saving
        _train(whole, uninterrupted, part)
    first = RowAdam(_groups(half))
    _train(half, first, batches[:60])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)  # a checkpoint's optimiser state, read back without pickle
    buffer.seek(0)
    second = RowAdam(_groups(half))
    second.load_state_dict(torch.load(buffer, weights_only=True))
    _train(half, second, batches[60:])
    for a, b in zip(whole.parameters(), half.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_weight_decay_on_a_sparse_table_is_refused():
    net = MatrixFactorization(10, 5, 4)
    net.user_emb.sparse = True
    optimiser = RowAdam(net.parameters(), weight_decay=1e-4)
    net(torch.arange(3)).sum().backward()
    with pytest.raises(ValueError, match="weight decay"):
        optimiser.step()


class _Optimiser(pl_lightning.Callback):
    def on_train_start(self, trainer: pl_lightning.Trainer, module: pl_lightning.LightningModule) -> None:
        self.kind = type(trainer.optimizers[0]).__name__


def test_a_fit_with_row_updates_learns_as_the_dense_fit_does(games_split):
    from models.nets.training import fit_network
    from models.transfer.recipes import catalogue_ids, encode_pairs, validation_data

    users = np.sort(games_split.train["user_id"].unique().to_numpy()).astype(object)
    items = catalogue_ids(games_split)
    fits, kinds = [], []
    for ratio in (None, 1.0):  # never; above one user row per pair of a batch (this table has more)
        spy = _Optimiser()
        net = MatrixFactorization(len(users), len(items), 8, seed=0)
        config = TrainConfig(max_epochs=4, patience=4, batch_size=32, row_update_ratio=ratio)
        fits.append(fit_network(net, encode_pairs(games_split.train, users, items), user_ids=users, item_ids=items,
                                val=validation_data(games_split.val, games_split.train, user_ids=users,
                                                    item_ids=items), config=config, seed=0, callbacks=[spy]))
        kinds.append(spy.kind)
        assert not net.user_emb.sparse  # the network comes back as it went in
    dense, rows = fits
    assert kinds == ["Adam", "RowAdam"]
    assert (dense.row_updates, rows.row_updates) == (False, True)  # what the fit reports (logged fit/row_updates)
    assert rows.best_val_ndcg > rows.initial_val_ndcg
    assert abs(rows.best_val_ndcg - dense.best_val_ndcg) < 0.02
    np.testing.assert_allclose(rows.model.user_factors, dense.model.user_factors, atol=0.05)
