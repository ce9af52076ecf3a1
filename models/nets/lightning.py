"""The LightningModule: trains a :mod:`models.nets.network` network and validates it by NDCG@K.

The module only orchestrates: the network is injected, the loss is a full softmax over the catalogue
(cross-entropy of the interacted item against every item), and validation ranks the whole catalogue for
each validation user, with the user's training items removed, and logs ``val/ndcg_at_{k}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, TensorDataset

from models.evaluation.metrics import per_user_metrics
from models.evaluation.ranking import MAX_SCORE_CELLS, Csr, topk_hits
from models.nets.network import MatrixFactorization
from models.nets.optim import RowAdam


@dataclass(frozen=True)
class ValidationData:
    """Validation users (as rows of the network's user table, -1 = unknown) and their exclusions/relevant items."""

    user_index: np.ndarray  # (users,) int64
    exclude: Csr
    relevant: Csr
    n_items: int

    def batch_size(self, most: int = 2048) -> int:
        """Users a validation batch scores: ``most``, fewer on a catalogue so large that the batch's scores would
        pass :data:`~models.evaluation.ranking.MAX_SCORE_CELLS`."""
        return max(1, min(most, MAX_SCORE_CELLS // max(self.n_items, 1)))

    def loader(self, batch_size: int = 2048) -> DataLoader:
        """Batches of validation row positions (at most :meth:`batch_size` ``(batch_size)`` each)."""
        return DataLoader(TensorDataset(torch.arange(len(self.user_index))), batch_size=self.batch_size(batch_size))


def validation_ndcg(network: MatrixFactorization, val: ValidationData, rows: np.ndarray, k: int) -> float:
    """Mean NDCG@k of the given validation rows (full ranking, training items excluded)."""
    with torch.no_grad():
        device = network.item_bias.device
        scores = network.score_users(torch.from_numpy(val.user_index[rows]).to(device)).cpu()
    _, hits = topk_hits(scores, rows, val.exclude, val.relevant, k)
    if hits.shape[1] < k:
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    return float(per_user_metrics(hits, val.relevant.lengths()[rows], k)["ndcg"].mean())


def full_validation_ndcg(network: MatrixFactorization, val: ValidationData, k: int, batch_size: int = 2048) -> float:
    """NDCG@k over all validation users."""
    total, batch_size = 0.0, val.batch_size(batch_size)
    for start in range(0, len(val.user_index), batch_size):
        rows = np.arange(start, min(start + batch_size, len(val.user_index)))
        total += validation_ndcg(network, val, rows, k) * len(rows)
    return total / max(len(val.user_index), 1)


class RecommenderModule(pl.LightningModule):
    """Softmax-loss training of an injected factor network, with optional frozen user rows."""

    def __init__(
        self,
        network: MatrixFactorization,
        *,
        lr: float,
        weight_decay: float = 0.0,
        l2: float = 0.0,
        n_negatives: int = 0,
        k: int = 10,
        val: ValidationData | None = None,
        frozen_user_rows: np.ndarray | None = None,
        transferred_lr_scale: float = 1.0,
        anchor: float = 0.0,
        seed: int | None = None,
        row_updates: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["network", "val", "frozen_user_rows"])
        self.network = network
        # With a seed, the module draws its negatives from its own random stream, so fits running side by side
        # in threads stay reproducible; without, from torch's global stream (seeded per fit).
        # the fit's own stream of negatives (None: torch's global one); checkpointed by RandomState
        self.negatives = torch.Generator().manual_seed(seed) if seed is not None else None
        self.val = val
        self._anchored: list[tuple[str, str]] = []  # (parameter name, buffer of its initial value)
        if anchor > 0:  # L2-SP: pull the trainable weights towards where they started (the transferred init)
            for index, (name, parameter) in enumerate(network.named_parameters()):
                if parameter.requires_grad:
                    self.register_buffer(f"_anchor_{index}", parameter.detach().clone())
                    self._anchored.append((name, f"_anchor_{index}"))
        self._loss_sum, self._loss_pairs = torch.zeros(()), 0  # the epoch's training loss (see training_step)
        self.n_frozen_user_rows = 0
        if frozen_user_rows is not None and frozen_user_rows.any():
            if frozen_user_rows.all():
                network.user_emb.weight.requires_grad_(False)
            else:
                # Only the transferred rows stay fixed; new users still learn.
                keep = torch.from_numpy(~frozen_user_rows).float().unsqueeze(1)
                self.register_buffer("_user_grad_mask", keep)
                network.user_emb.weight.register_hook(lambda grad: grad * self._user_grad_mask)
            self.n_frozen_user_rows = int(frozen_user_rows.sum())
        # the user table's rows updated only when a batch uses them (RowAdam: dense Adam's update, lazily), where
        # dense Adam's update applies: every row trainable, no weight decay and no anchor (whose gradients reach
        # every row at every step)
        self.row_updates = (row_updates and network.user_emb.weight.requires_grad and not self.n_frozen_user_rows
                            and weight_decay == 0 and anchor == 0)
        network.user_emb.sparse = self.row_updates

    def trainable_parameters(self) -> int:
        """Number of parameters the optimiser can change (frozen user rows excluded)."""
        total = sum(p.numel() for p in self.network.parameters() if p.requires_grad)
        if self.network.user_emb.weight.requires_grad:
            total -= self.n_frozen_user_rows * self.network.user_emb.embedding_dim
        return total

    def _row_adam(self) -> RowAdam | None:
        optimizer = self.trainer.optimizers[0] if self.row_updates and self.trainer.optimizers else None
        return optimizer if isinstance(optimizer, RowAdam) else None

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        users, items = batch
        optimizer = self._row_adam()
        if optimizer is not None:  # the batch's user rows take the steps they skipped before they are read
            optimizer.prepare(self.network.user_emb.weight, users)
        n_neg = self.hparams.n_negatives
        if n_neg and n_neg < self.network.n_items:
            loss = self._sampled_softmax(users, items, n_neg)
        else:
            loss = F.cross_entropy(self.network(users), items)  # full softmax over (B, n_items)
        if self.hparams.l2 > 0:
            reg = self.network.user_vectors(users).pow(2).sum(1) + self.network.item_vectors(items).pow(2).sum(1)
            loss = loss + self.hparams.l2 * reg.mean()
        if self._anchored:
            parameters = dict(self.network.named_parameters())
            drift = sum((parameters[name] - getattr(self, buffer)).pow(2).sum() for name, buffer in self._anchored)
            loss = loss + self.hparams.anchor * drift
        # the epoch's mean loss, summed here and logged once at the epoch's end: Lightning's self.log costs
        # about 0.6 ms a call (it copies the metric's metadata), a fifth of a 1,024-pair step. The same
        # float32 sum of loss x batch size over the pairs that Lightning's epoch mean computes.
        self._loss_sum = self._loss_sum + loss.detach() * len(users)
        self._loss_pairs += len(users)
        return loss

    def on_train_epoch_start(self) -> None:
        self._loss_sum, self._loss_pairs = torch.zeros((), device=self.device), 0

    def epoch_loss(self) -> float:
        """Mean training loss per pair of the epoch so far (NaN before the first step)."""
        return float(self._loss_sum / self._loss_pairs) if self._loss_pairs else float("nan")

    def on_train_epoch_end(self) -> None:
        if self._loss_pairs:
            self.log("train/loss", self._loss_sum / self._loss_pairs, on_step=False, on_epoch=True, batch_size=1)

    def _sampled_softmax(self, users: torch.Tensor, items: torch.Tensor, n_neg: int) -> torch.Tensor:
        """Softmax over the positive and ``n_neg`` uniformly sampled negatives shared by the batch.

        With uniform sampling every candidate has the same sampling probability, so the usual log-Q
        correction is a constant and drops out; negatives that equal the row's positive are masked.
        """
        net = self.network
        if self.negatives is not None:
            negatives = torch.randint(0, net.n_items, (n_neg,), generator=self.negatives).to(users.device)
        else:
            negatives = torch.randint(0, net.n_items, (n_neg,), device=users.device)
        u = net.user_vectors(users)  # (B, d)
        pos = (u * net.item_vectors(items)).sum(1) + net.item_bias[items]  # (B,)
        neg = u @ net.item_vectors(negatives).T + net.item_bias[negatives]  # (B, n_neg)
        neg = neg.masked_fill(negatives.unsqueeze(0) == items.unsqueeze(1), float("-inf"))
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(items))

    def on_validation_start(self) -> None:
        self._flush()

    def on_train_end(self) -> None:
        self._flush()

    def _flush(self) -> None:
        """Every row of a row-updated table up to date: before validation reads it and when training ends."""
        optimizer = self._row_adam()
        if optimizer is not None:
            optimizer.flush()

    def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        assert self.val is not None
        rows = batch[0].cpu().numpy()
        ndcg = validation_ndcg(self.network, self.val, rows, self.hparams.k)
        # sync_dist: under DDP each rank validates its share of users; early stopping needs their mean
        self.log(f"val/ndcg_at_{self.hparams.k}", ndcg, on_step=False, on_epoch=True, batch_size=len(rows),
                 sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam with discriminative learning rates: the transferred tensors (the user tower, and the content
        tower of a two-tower network) at ``lr * transferred_lr_scale``, everything else at ``lr``.

        The groups are whole tensors: with Adam a per-row gradient scale would cancel out, so new users
        inside the user table train at the transferred rate too. With ``row_updates``, :class:`RowAdam` (the user
        table's rows updated where batches read them, the same arithmetic).
        """
        transferred = {id(p) for p in self.network.transferred_parameters()}
        trainable = [p for p in self.network.parameters() if p.requires_grad]
        groups = [{"params": [p for p in trainable if id(p) not in transferred], "lr": self.hparams.lr},
                  {"params": [p for p in trainable if id(p) in transferred],
                   "lr": self.hparams.lr * self.hparams.transferred_lr_scale}]
        # fused: one pass over each tensor instead of one per operation (CPU and CUDA; the same update)
        fused = all(p.device.type in ("cpu", "cuda") for p in trainable)
        return (RowAdam if self.row_updates else torch.optim.Adam)(
            [g for g in groups if g["params"]], weight_decay=self.hparams.weight_decay, fused=fused)


class HistoryState(Callback):
    """Saves a :class:`HistoryLogger`'s entries in every checkpoint and restores them on resume, so a resumed
    fit reports the epochs run before it was killed."""

    def __init__(self, history: HistoryLogger) -> None:
        self.history = history

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history.history), "elapsed": time.perf_counter() - self.history.started}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history.history = list(state_dict["history"])
        # "elapsed" continues from where the killed fit stopped (the restart itself is not counted)
        self.history.started = time.perf_counter() - float(state_dict["elapsed"])


class RandomState(Callback):
    """Saves the fit's random streams (the batch order's and the negatives' generators, and torch's global one)
    in every checkpoint and restores them on resume: a resumed fit draws the same batches and negatives as the
    uninterrupted one from the epoch it resumes at, so it ends with the same weights. The states are uint8
    tensors (a checkpoint stays loadable with ``weights_only=True``)."""

    def __init__(self, *generators: torch.Generator | None) -> None:
        self.generators = generators

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [g.get_state() if g is not None else None for g in self.generators],
                "torch": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        for generator, state in zip(self.generators, state_dict["generators"], strict=True):
            if generator is not None and state is not None:
                generator.set_state(state)
        torch.set_rng_state(state_dict["torch"])


class HistoryLogger(Logger):
    """Keeps every logged metric in memory (``history``: one dict per logging step), for later tracking."""

    def __init__(self, started: float | None = None) -> None:
        super().__init__()
        self.history: list[dict[str, float]] = []
        self.started = time.perf_counter() if started is None else started

    @property
    def name(self) -> str:
        return "history"

    @property
    def version(self) -> str:
        return "0"

    @rank_zero_only
    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        """Hyperparameters are logged by the caller, not here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.history.append({"step": float(step or 0), "elapsed": time.perf_counter() - self.started,
                             **{k: float(v) for k, v in metrics.items()}})

    def epochs(self) -> list[dict[str, float]]:
        """Metrics merged per epoch (train and val entries of one epoch become one dict)."""
        merged: dict[int, dict[str, float]] = {}
        for entry in self.history:
            if "epoch" in entry:
                merged.setdefault(int(entry["epoch"]), {}).update(entry)
        return [merged[e] for e in sorted(merged)]
