"""Model families, fine-tuning modes, new-item strategies, discriminative learning rates, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl_lightning
import torch

from models.config import FineTuneConfig, ModelConfig, TrainConfig
from models.evaluation.ranking import evaluate_model
from models.nets.lightning import RecommenderModule
from models.nets.network import MatrixFactorization, TwoTower
from models.transfer.init import content_projection
from models.transfer.recipes import fine_tune, fit_popularity, initialise_from_source, ranking_tasks, train_scratch

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")

SHORT = TrainConfig(max_epochs=4, patience=4)


def test_two_tower_from_arrays_has_the_given_effective_item_vectors():
    rng = np.random.default_rng(0)
    users, items, bias = rng.normal(size=(5, 3)), rng.normal(size=(7, 3)), rng.normal(size=7)
    content, projection = rng.normal(size=(7, 4)), rng.normal(size=(4, 3))
    net = TwoTower.from_arrays(users, items, bias, content=content, projection=projection.astype(np.float32))
    u, v, b = net.arrays()
    np.testing.assert_allclose(v, items, atol=1e-5)
    np.testing.assert_allclose(u, users, atol=1e-6)
    # the id embeddings hold only the residual the content tower does not explain
    np.testing.assert_allclose(net.item_emb.weight.detach().numpy(), items - content @ projection, atol=1e-5)
    mf = MatrixFactorization.from_arrays(users, items, bias)
    torch.testing.assert_close(net(torch.arange(5)), mf(torch.arange(5)), atol=1e-5, rtol=1e-5)


def test_two_tower_rejects_content_of_the_wrong_size():
    with pytest.raises(ValueError, match="content has 3 rows for 4 items"):
        TwoTower(2, 4, 3, content=np.zeros((3, 5), dtype=np.float32))


def test_content_projection_recovers_an_exact_linear_map():
    rng = np.random.default_rng(1)
    text, true = rng.normal(size=(300, 6)), rng.normal(size=(6, 4))
    vectors = text @ true + np.array([3.0, -1.0, 0.5, 2.0])  # the constant offset is centred away
    np.testing.assert_allclose(content_projection(vectors, text, ridge=1e-8), true, atol=1e-4)
    # a large ridge shrinks the map towards zero
    assert np.abs(content_projection(vectors, text, ridge=1e6)).max() < 0.05


def test_adapters_start_as_the_identity_and_are_all_that_trains_besides_biases():
    net = MatrixFactorization(n_users=6, n_items=8, dim=4, seed=0)
    before = [a.copy() for a in net.arrays()]
    net.add_adapters(2)
    for got, want in zip(net.arrays(), before, strict=True):
        np.testing.assert_array_equal(got, want)
    net.freeze_base()
    module = RecommenderModule(net, lr=0.05)
    assert module.trainable_parameters() == 2 * (4 * 2 + 2 * 4) + 8  # two adapters + item biases
    optimiser = module.configure_optimizers()
    users, items = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 2, 3, 4])
    emb = net.user_emb.weight.detach().clone()
    for _ in range(10):
        optimiser.zero_grad()
        module.training_step([users, items], 0).backward()
        optimiser.step()
    assert torch.equal(net.user_emb.weight, emb)
    assert not np.allclose(net.arrays()[0], before[0])  # the adapter moved the effective user vectors


def test_discriminative_learning_rates_put_the_transferred_towers_in_their_own_group():
    net = TwoTower(4, 5, 3, content=np.ones((5, 2), dtype=np.float32))
    groups = RecommenderModule(net, lr=0.01, transferred_lr_scale=0.1).configure_optimizers().param_groups
    by_tensor = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert by_tensor[id(net.user_emb.weight)] == pytest.approx(0.001)
    assert by_tensor[id(net.content_proj.weight)] == pytest.approx(0.001)
    assert by_tensor[id(net.item_emb.weight)] == pytest.approx(0.01)
    assert by_tensor[id(net.item_bias)] == pytest.approx(0.01)


def test_item_init_strategies_fill_new_items_differently(source_fit, games_split, games_text):
    def init(strategy: str):
        return initialise_from_source(source_fit.model, games_split, games_text,
                                      config=FineTuneConfig(item_init=strategy), seed=0)

    users_mean, content, random = init("users-mean"), init("content"), init("random")
    assert users_mean.items_from_content == 0 and users_mean.item_scale > 0
    assert content.item_scale == 0 and content.items_from_content > 0
    assert content.content_scale > 0
    assert np.count_nonzero(np.abs(random.item_factors).sum(1)) == len(random.item_ids)
    assert random.item_scale == 0 and random.items_from_content == 0
    # on the synthetic data (taste shared across domains) the informed starts beat the random one
    val, _ = ranking_tasks(games_split, click_threshold=4.0)
    ndcg = {name: evaluate_model(i.as_model(), val, ks=(10,)).metrics["ndcg_at_10"]
            for name, i in (("users-mean", users_mean), ("content", content), ("random", random))}
    assert min(ndcg["users-mean"], ndcg["content"]) > ndcg["random"]


def test_two_tower_transfer_starts_from_the_same_vectors_and_learns_its_content_tower(
        source_fit, games_split, games_text):
    mf_config = FineTuneConfig(item_init="users-mean", train=SHORT)
    tt_config = FineTuneConfig(item_init="users-mean", family="two-tower", mode="full", train=SHORT)
    mf_init = initialise_from_source(source_fit.model, games_split, games_text, config=mf_config)
    tt_init = initialise_from_source(source_fit.model, games_split, games_text, config=tt_config)
    np.testing.assert_allclose(tt_init.item_factors, mf_init.item_factors)  # the strategy decides the start
    assert tt_init.content_projection is not None
    fit = fine_tune(source_fit.model, games_split, config=tt_config, seed=0, text=games_text)
    n_users, n_items, dim = len(fit.model.user_ids), len(fit.model.item_ids), fit.model.dim
    content_weights = games_text.target.shape[1] * dim
    assert fit.trainable_parameters == n_users * dim + n_items * dim + n_items + content_weights
    assert fit.best_val_ndcg >= fit.initial_val_ndcg


def test_two_tower_needs_item_texts(source_fit, games_split):
    with pytest.raises(ValueError, match="two-tower family needs item text"):
        fine_tune(source_fit.model, games_split, config=FineTuneConfig(family="two-tower", train=SHORT), seed=0)
    with pytest.raises(ValueError, match="two-tower family needs item text"):
        train_scratch(games_split, model=ModelConfig(dim=8), train=SHORT, seed=0, family="two-tower")


def test_two_tower_scratch_learns_from_content(games_split, games_text):
    fit = train_scratch(games_split, model=ModelConfig(dim=8), train=TrainConfig(max_epochs=8, patience=8), seed=0,
                        family="two-tower", content=games_text.target)
    _, test = ranking_tasks(games_split, click_threshold=4.0)
    assert fit.best_val_ndcg > fit.initial_val_ndcg
    assert evaluate_model(fit.model, test).metrics["ndcg_at_10"] > 0.0


def test_adapter_mode_trains_few_parameters_and_keeps_the_transferred_users(source_fit, games_split):
    adapter = fine_tune(source_fit.model, games_split, config=FineTuneConfig(mode="adapter", adapter_rank=2,
                                                                                train=SHORT), seed=0)
    frozen = fine_tune(source_fit.model, games_split, config=FineTuneConfig(mode="freeze-users", train=SHORT),
                       seed=0)
    n_items, dim = len(adapter.model.item_ids), adapter.model.dim
    assert adapter.trainable_parameters == 2 * (dim * 2 + 2 * dim) + n_items
    assert adapter.trainable_parameters < frozen.trainable_parameters
    _, test = ranking_tasks(games_split, click_threshold=4.0)
    popularity = evaluate_model(fit_popularity(games_split), test).metrics["ndcg_at_10"]
    assert evaluate_model(adapter.model, test).metrics["ndcg_at_10"] > popularity


class _Crash(pl_lightning.Callback):
    """Kills the fit after ``at`` epochs, as a lost machine would (after that epoch's checkpoint)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_epoch_end(self, trainer: pl_lightning.Trainer, module: pl_lightning.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.at:
            raise RuntimeError("killed")


@pytest.mark.parametrize("row_updates", [False, True], ids=["dense-adam", "row-adam"])
def test_a_killed_fit_resumes_from_its_last_checkpoint(games_split, tmp_path, row_updates):
    # row updates: RowAdam's late rows and their step counts travel in the checkpoint too
    train = TrainConfig(max_epochs=6, patience=6, row_update_ratio=0.01 if row_updates else None)
    folder = tmp_path / "ckpt"
    from models.nets.training import fit_network
    from models.transfer.recipes import catalogue_ids, encode_pairs, validation_data

    users = np.sort(games_split.train["user_id"].unique().to_numpy()).astype(object)
    items = catalogue_ids(games_split)

    def fit(callbacks):
        net = MatrixFactorization(len(users), len(items), 8, seed=0)
        return fit_network(net, encode_pairs(games_split.train, users, items), user_ids=users, item_ids=items,
                           val=validation_data(games_split.val, games_split.train, user_ids=users, item_ids=items),
                           config=train, seed=0, checkpoint_dir=folder, callbacks=callbacks)

    with pytest.raises(RuntimeError, match="killed"):
        fit([_Crash(at=3)])
    assert (folder / "last.ckpt").exists()
    resumed = fit([])
    assert resumed.resumed_from_epoch == 2  # epochs 0-1 were checkpointed; epoch 2 died before its checkpoint
    # every epoch once: those before the kill come back from the checkpoint, the rest were run after it
    assert [int(e["epoch"]) for e in resumed.history] == list(range(6))
    assert resumed.epochs_run == 6
    assert not folder.exists()  # finished: the checkpoints are gone
    fresh = fit([])
    assert fresh.resumed_from_epoch is None
    # the random streams come back with the checkpoint: the resumed fit ends where the uninterrupted one does
    assert resumed.best_val_ndcg == fresh.best_val_ndcg and resumed.best_epoch == fresh.best_epoch
    np.testing.assert_array_equal(resumed.model.item_factors, fresh.model.item_factors)


class _Planted:
    """What a hostile checkpoint would carry: unpickling it runs code (here: creates a file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_planted_checkpoint_runs_no_code_and_the_fit_starts_over(games_split, tmp_path):
    """A resume checkpoint is read with weights_only=True: a file carrying pickled objects is ignored unopened."""
    folder, marker = tmp_path / "ckpt", tmp_path / "ran"
    folder.mkdir()
    torch.save({"state_dict": {}, "epoch": 3, "payload": _Planted(marker)}, folder / "last.ckpt")
    fit = train_scratch(games_split, model=ModelConfig(dim=8), train=SHORT, seed=0, checkpoint_dir=folder)
    assert not marker.exists() and fit.resumed_from_epoch is None and fit.epochs_run > 0


def test_a_checkpoint_of_another_model_is_not_resumed(games_split, tmp_path):
    """Same folder, different shapes (the data or the settings changed): start over, do not crash."""
    from models.transfer.recipes import train_scratch

    folder = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        train_scratch(games_split, model=ModelConfig(dim=4), train=SHORT, seed=0, checkpoint_dir=folder,
                      callbacks=[_Crash(at=2)])
    fit = train_scratch(games_split, model=ModelConfig(dim=8), train=SHORT, seed=0, checkpoint_dir=folder)
    assert fit.resumed_from_epoch is None and fit.model.dim == 8


def test_sampled_softmax_fits_in_parallel_threads_equal_sequential_ones(games_split):
    """Target fits draw their negatives from their own generator, so threads do not mix their streams."""
    from concurrent.futures import ThreadPoolExecutor

    # 8 < 40 items: sampled softmax; small batches make the threads interleave (with torch's global stream the
    # parallel factors differed from the sequential ones)
    train = TrainConfig(max_epochs=4, patience=4, n_negatives=8, batch_size=16)

    def fit(seed: int) -> np.ndarray:
        return train_scratch(games_split, model=ModelConfig(dim=8), train=train, seed=seed).model.item_factors

    sequential = [fit(0), fit(1)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        parallel = list(pool.map(fit, [0, 1]))
    for a, b in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(a, b)
