"""Train id-embedding models with PyTorch Lightning: source pretraining, fine-tuning and from-scratch.

Every model is fitted the same way: softmax loss, Adam, early stopping on validation NDCG@K, and the best
epoch's weights restored at the end. When the initial weights (e.g. a transferred model before any
fine-tuning) validate better than every trained epoch, the initial weights are kept.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytorch_lightning as pl_lightning
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, TensorDataset

from data_contracts.columns import ITEM_ID, USER_ID
from models.config import TrainConfig
from models.evaluation.ranking import build_ranking_task
from models.factors import FactorModel, index_of
from models.nets.lightning import (
    HistoryLogger,
    HistoryState,
    RandomState,
    RecommenderModule,
    ValidationData,
    full_validation_ndcg,
)
from models.nets.network import MatrixFactorization

logger = logging.getLogger(__name__)
#: One line per epoch of every fit (source, fine-tune, scratch); the entry point decides where it goes (the CLI:
#: stderr), so a long training is never silent.
progress = logging.getLogger("transferrec.progress")


#: A stop request for every fit in this process (set by the entry point's SIGINT/SIGTERM handler,
#: tasks.runtime.handle_signals): each fit, in any thread, stops at its next batch with :class:`FitStopped`.
STOP = threading.Event()


class FitStopped(Exception):
    """A fit ended early because the process was asked to stop (:data:`STOP`)."""


class _StopWhenAsked(pl_lightning.Callback):
    def _check(self) -> None:
        if STOP.is_set():
            raise FitStopped("stopped on request")

    def on_train_batch_start(self, *args: Any, **kwargs: Any) -> None:
        self._check()

    def on_validation_start(self, *args: Any, **kwargs: Any) -> None:
        self._check()


@dataclass(frozen=True)
class EpochReport:
    """How a fit stands after one epoch (``eta``: an upper bound, the epochs left at the mean epoch time; early
    stopping may end the fit sooner)."""

    label: str
    epoch: int  # 1-based
    max_epochs: int
    loss: float
    val_ndcg: float
    best_val_ndcg: float
    k: int
    elapsed: float
    eta: float

    def line(self) -> str:
        return (f"[{self.label}] epoch {self.epoch}/{self.max_epochs}  loss {self.loss:.4f}  "
                f"val NDCG@{self.k} {self.val_ndcg:.4f} (best {self.best_val_ndcg:.4f})  {self.elapsed:.1f}s  "
                f"ETA <= {self.eta:.0f}s")


class _EpochProgress(pl_lightning.Callback):
    """Reports every epoch: a :data:`progress` line, then ``on_epoch`` (e.g. live curves in the tracking store)."""

    def __init__(self, label: str, k: int, history: HistoryLogger,
                 on_epoch: Callable[[EpochReport], None] | None) -> None:
        self.label, self.k, self.history, self.on_epoch = label, k, history, on_epoch
        self.best = float("-inf")

    def on_train_epoch_end(self, trainer: pl_lightning.Trainer, module: pl_lightning.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        value = metrics.get(f"val/ndcg_at_{self.k}")
        if value is None:
            return
        ndcg = float(value)
        self.best = max(self.best, ndcg)
        epoch = trainer.current_epoch + 1
        elapsed = time.perf_counter() - self.history.started
        left = max(trainer.max_epochs - epoch, 0) if trainer.max_epochs and trainer.max_epochs > 0 else 0
        report = EpochReport(self.label, epoch, int(trainer.max_epochs or epoch),
                             module.epoch_loss(), ndcg, self.best, self.k, elapsed,
                             elapsed / epoch * left)
        progress.info(report.line())
        if self.on_epoch is not None:
            self.on_epoch(report)


@dataclass(frozen=True)
class FitResult:
    """A fitted model plus how the fit went."""

    model: FactorModel
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1  # -1: the initial weights were best
    epochs_run: int = 0
    initial_val_ndcg: float = float("nan")
    best_val_ndcg: float = float("nan")
    seconds: float = 0.0
    trainable_parameters: int = 0
    init_seconds: float = 0.0  # spent before fit_network (e.g. the transfer initialisation)
    resumed_from_epoch: int | None = None  # the epoch a killed fit was resumed at
    batch_size: int = 0  # as sized for the data (TrainConfig.sized_for)
    n_negatives: int = 0  # likewise (0: full softmax)
    patience: int = 0  # likewise (0: no early stopping, a fixed number of epochs)
    row_updates: bool = False  # the user table updated where batches read it (models.nets.optim.RowAdam)


def encode_pairs(frame: pl.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(user row, item row) of every interaction whose user and item are in the vocabularies."""
    users = index_of(user_ids, frame[USER_ID])
    items = index_of(item_ids, frame[ITEM_ID])
    keep = (users >= 0) & (items >= 0)
    return users[keep], items[keep]


def _resume_epoch(checkpoint: Path, module: RecommenderModule) -> int | None:
    """The epoch a fit resumes at from ``checkpoint`` (read once), or None when there is none to resume:
    missing, unreadable, holding anything but tensors and plain values, or holding weights of other shapes than
    ``module``'s (the data or the settings changed under the same folder; the fit then starts over, with a
    warning).

    The file is read with ``weights_only=True``: a checkpoint is data, never code. Our own checkpoints hold only
    tensors and plain values (weights, optimiser and loop state, callback state); a file that needs pickled
    objects was not written by a fit and is ignored, without running anything it carries.
    """
    if not checkpoint.exists():
        return None
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - a truncated, foreign or planted file: start over
        logger.warning("ignoring unreadable checkpoint %s: %s", checkpoint, error)
        return None
    weights, current = saved["state_dict"], module.state_dict()
    if set(weights) != set(current) or any(weights[k].shape != current[k].shape for k in current):
        logger.warning("ignoring checkpoint %s: its weights do not match this model", checkpoint)
        return None
    return int(saved["epoch"]) + 1


def validation_data(
    holdout: pl.DataFrame, seen: pl.DataFrame, *, user_ids: np.ndarray, item_ids: np.ndarray,
    max_users: int | None = None, seed: int = 0,
) -> ValidationData:
    """Validation rows of ``holdout`` against a network's vocabularies (users unknown to it get -1); with
    ``max_users``, a seeded sample of that many holdout users when there are more (scoring every user against
    every item grows with users x items: at 400 k users and 20 k items it was most of a training epoch)."""
    if max_users is not None:
        users = holdout[USER_ID].unique().sort()
        if len(users) > max_users:
            keep = np.random.default_rng(seed).choice(len(users), size=max_users, replace=False)
            holdout = holdout.filter(pl.col(USER_ID).is_in(users.gather(np.sort(keep)).implode()))
    task = build_ranking_task(item_ids, holdout, seen)
    return ValidationData(user_index=index_of(user_ids, task.user_ids), exclude=task.exclude,
                          relevant=task.relevant, n_items=len(item_ids))


class _PairTensors(TensorDataset):
    """Training pairs that a loader reads a batch at a time: one tensor index per batch instead of a Python
    call and a collate per pair (the per-pair path capped training near 60 k pairs/s). The shuffled order, the
    batches and Lightning's distributed sampler are the plain ``DataLoader``'s."""

    def __getitems__(self, indices: list[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(tensor[index] for tensor in self.tensors)


class _SliceBatches(BatchSampler):
    """A shuffled loader's batches as slices of one permutation tensor: the permutations the
    ``RandomSampler`` draws from its generator (two an epoch: the order, then its empty remainder), cut into
    the same batches, without a Python int per pair (at 8,192 pairs a batch that took about 4 ms a step). Any other
    sampler (Lightning's distributed one under DDP) is batched the plain way."""

    def __iter__(self):
        sampler = self.sampler
        plain = (type(sampler) is not RandomSampler or sampler.replacement or sampler.generator is None
                 or sampler.num_samples != len(sampler.data_source))
        if plain:
            yield from super().__iter__()
            return
        n = len(sampler.data_source)
        order = torch.randperm(n, generator=sampler.generator)
        torch.randperm(n, generator=sampler.generator)  # RandomSampler's remainder: num_samples % n == 0 pairs
        stop = n - n % self.batch_size if self.drop_last else n
        for low in range(0, stop, self.batch_size):
            yield order[low:low + self.batch_size]


def _as_batch(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate of :class:`_PairTensors`: its batches are already tensors."""
    return batch


def fit_network(
    network: MatrixFactorization,
    pairs: tuple[np.ndarray, np.ndarray] | IterableDataset,
    *,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    val: ValidationData,
    config: TrainConfig,
    seed: int,
    frozen_user_rows: np.ndarray | None = None,
    kind: str = "mf",
    checkpoint_dir: Path | None = None,
    transferred_lr_scale: float = 1.0,
    anchor: float = 0.0,
    callbacks: list[pl_lightning.Callback] | None = None,
    own_random_stream: bool = True,
    label: str | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
    restore_best: bool = True,
) -> FitResult:
    """Fit ``network`` on (user row, item row) pairs with early stopping on validation NDCG@k.

    Args:
        network: the network to train (its rows follow ``user_ids``/``item_ids``); modified in place.
        pairs: training interactions as row indices, or an iterable dataset that yields them batched and
            shuffled (pairs on disk, :class:`models.transfer.outofcore.ShuffledBlocks`).
        user_ids: raw ids of the network's user rows.
        item_ids: raw ids of the network's item rows.
        val: validation data for early stopping.
        config: optimiser, batch, epochs, patience, accelerator; the batch and the negatives are sized for the
            number of pairs (:meth:`TrainConfig.sized_for`).
        seed: seeds the data order and Lightning.
        frozen_user_rows: bool per user row; those rows keep their initial vectors.
        kind: recorded on the returned model.
        checkpoint_dir: where checkpoints go. Given, the fit resumes from ``last.ckpt`` there when one exists
            (a killed fit restarted with the same inputs) and deletes the folder once it has finished;
            None: a temporary folder, no resume.
        transferred_lr_scale: learning-rate factor of the network's transferred tensors.
        anchor: L2-SP weight: ``anchor * |w - w_initial|^2`` over the trainable weights joins the loss.
        callbacks: extra Lightning callbacks.
        own_random_stream: sampled negatives from the fit's own generator (reproducible when fits run in
            parallel threads) rather than torch's global one.
        label: the fit's name in its per-epoch :data:`progress` lines (default: ``kind``).
        on_epoch: called with an :class:`EpochReport` after every epoch.
        restore_best: early stopping and the best epoch's weights (or the initial ones when no epoch beat them);
            False: exactly ``config.max_epochs`` epochs and the last weights (a refit on all the data, whose
            epoch count validation chose before: its validation users are in the training data then).

    Raises:
        ValueError: when there is no training pair.
    """
    streamed = isinstance(pairs, IterableDataset)
    n_pairs = pairs.n_pairs if streamed else len(pairs[0])
    if n_pairs == 0:
        raise ValueError("no training interactions to fit on")
    config = config.sized_for(n_pairs)
    if streamed and pairs.batch_size != config.batch_size:
        raise ValueError(f"the streamed batches hold {pairs.batch_size} pairs, the config sizes {config.batch_size} "
                         "for them: build them with config.sized_for(n).batch_size")
    started = time.perf_counter()
    pl_lightning.seed_everything(seed, workers=True, verbose=False)
    module = RecommenderModule(network, lr=config.lr, weight_decay=config.weight_decay, l2=config.l2,
                               n_negatives=config.n_negatives, k=config.k, val=val,
                               frozen_user_rows=frozen_user_rows, transferred_lr_scale=transferred_lr_scale,
                               anchor=anchor, seed=seed if own_random_stream else None,
                               row_updates=config.updates_rows(network.user_emb.num_embeddings))
    initial = full_validation_ndcg(network, val, config.k)
    # what training can change, to return to when no epoch beats it (frozen tables and buffers stay as they are:
    # a copy of a frozen 4 M-user table is 1 GB)
    initial_state = {name: p.detach().clone() for name, p in network.named_parameters() if p.requires_grad}
    # the batch order's stream (checkpointed with the negatives')
    order = None if streamed else torch.Generator().manual_seed(seed)
    history = HistoryLogger(started)  # "elapsed" per epoch counts from the start of this fit
    monitor = f"val/ndcg_at_{config.k}"
    with tempfile.TemporaryDirectory(prefix="transferrec-ckpt-") as tmp:
        ckpt_dir = checkpoint_dir or Path(tmp)
        last = ckpt_dir / "last.ckpt"
        resumed_at = _resume_epoch(last, module) if checkpoint_dir is not None else None
        resume_from = last if resumed_at is not None else None
        # Full checkpoints (optimiser, early-stopping and history state) when they may be resumed from.
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=monitor, mode="max", save_top_k=1,
                                     auto_insert_metric_name=False, save_last=checkpoint_dir is not None,
                                     save_weights_only=checkpoint_dir is None)
        trainer = pl_lightning.Trainer(
            accelerator=config.accelerator, devices=config.devices, strategy=config.strategy,
            num_nodes=config.num_nodes,
            deterministic=config.deterministic, max_epochs=config.max_epochs, logger=history,
            default_root_dir=ckpt_dir,
            callbacks=[*([EarlyStopping(monitor=monitor, mode="max", patience=config.patience, min_delta=1e-5)]
                         if restore_best else []),
                       checkpoint, HistoryState(history), RandomState(order, module.negatives), _StopWhenAsked(),
                       _EpochProgress(label or kind, config.k, history, on_epoch), *(callbacks or [])],
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            log_every_n_steps=max(1, -(-n_pairs // config.batch_size)),  # the metrics are logged per epoch
        )
        if streamed:  # already batched and shuffled (models.transfer.outofcore.ShuffledBlocks)
            train_loader = DataLoader(pairs, batch_size=None)
        else:
            users, items = pairs
            # config.batch_size is the global batch: under DDP each of the world's processes takes its share
            dataset = _PairTensors(torch.from_numpy(users.astype(np.int64)), torch.from_numpy(items.astype(np.int64)))
            batches = _SliceBatches(RandomSampler(dataset, generator=order),
                                    max(1, min(config.batch_size, n_pairs) // trainer.world_size), drop_last=False)
            # the loader draws each epoch's base seed from the generator too, as a shuffled loader does
            train_loader = DataLoader(dataset, batch_sampler=batches, generator=order, collate_fn=_as_batch)
        if resume_from is not None:
            logger.info("resuming %s from %s (epoch %d)", kind, resume_from, resumed_at)
        with warnings.catch_warnings():  # resuming means the folder holds our own checkpoints
            warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty")
            # ShuffledBlocks knows its length; it is read in this process (no loader workers to duplicate it)
            warnings.filterwarnings("ignore", message=r".*IterableDataset. has .__len__. defined")
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val.loader(), ckpt_path=resume_from,
                        weights_only=True)
        epochs = history.epochs()
        best_score = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("-inf")
        if not restore_best:  # the last epoch's weights, as trained
            best_epoch = trainer.current_epoch - 1
            best_score = float(epochs[-1].get(monitor, float("nan"))) if epochs else initial
        elif best_score > initial and checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            network.load_state_dict({k.removeprefix("network."): v for k, v in state.items()
                                     if k.startswith("network.")})
            best_epoch = int(max(epochs, key=lambda e: e.get(monitor, float("-inf")))["epoch"]) if epochs else 0
        else:
            network.load_state_dict(initial_state, strict=False)
            best_epoch, best_score = -1, initial
    if checkpoint_dir is not None:  # finished: nothing left to resume
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    network.cpu()
    network.user_emb.sparse = False  # as it came: a dense table (row updates were this fit's)
    u, v, b = network.arrays()
    model = FactorModel(np.asarray(user_ids, dtype=object), np.asarray(item_ids, dtype=object), u, v, b, kind=kind)
    return FitResult(
        model=model,
        history=epochs,
        best_epoch=best_epoch,
        epochs_run=trainer.current_epoch,
        initial_val_ndcg=initial,
        best_val_ndcg=best_score,
        seconds=time.perf_counter() - started,
        trainable_parameters=module.trainable_parameters(),
        resumed_from_epoch=resumed_at,
        batch_size=config.batch_size,
        n_negatives=config.n_negatives,
        patience=config.patience if restore_best else 0,
        row_updates=module.row_updates,
    )
