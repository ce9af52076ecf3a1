"""Refit before serving: the winner again on all of the target's data, with what validation chose.

An onboarding evaluates models trained on the target's training split only; its newest interactions (the
validation and test periods) are the most valuable rows a served model can learn from. The refit trains the
registered winner once more on train + validation + test with the hyper-parameters and the epoch count that
validation chose, nothing chosen again (validation is inside the training data now). The evaluated model is what
the metrics and the champion gate speak for; the refit is what users get.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import polars as pl

from models.config import TrainConfig
from models.nets.training import FitResult
from models.split import TargetSplit
from models.transfer.als import AlsGrid
from models.transfer.joint import JointGrid
from models.transfer.peers import PeerGrid


def all_data_split(split: TargetSplit) -> TargetSplit:
    """``split`` with every target interaction (train, validation and test) in its training part; validation and
    test stay as they were for the fits' interfaces (they are inside the training data now: nothing may be chosen
    or measured on them)."""
    train = pl.concat([split.train, split.val.select(split.train.columns), split.test.select(split.train.columns)])
    return replace(split, train=train, train_full_size=train.height)


def fixed_epochs(train: TrainConfig, fit: FitResult) -> TrainConfig | None:
    """``train`` set to the epochs validation chose (the best epoch, counted from 1); None when the initial
    weights validated best (nothing to train: a transfer refit is then the initialisation on all the data)."""
    if fit.best_epoch < 0:
        return None
    epochs = fit.best_epoch + 1
    return train.model_copy(update={"max_epochs": epochs, "patience": epochs})


def one_point_grid(kind: str, params: dict[str, Any]) -> AlsGrid | PeerGrid | JointGrid:
    """The grid of a tuned peer holding only the point validation chose (``params`` as the peer reported them)."""
    if kind in ("als", "joint-als"):
        als = AlsGrid(factors=(int(params["factors"]),), regularization=(float(params["regularization"]),),
                      alpha=(float(params["alpha"]),), iterations=int(params["iterations"]))
        return als if kind == "als" else JointGrid(als=als)
    if kind in ("ease", "joint-ease"):
        ease = PeerGrid(lambdas=(float(params["l2"]),))
        return ease if kind == "ease" else JointGrid(ease=ease)
    if kind == "itemknn":
        return PeerGrid(neighbours=(int(params["neighbours"]),))
    raise ValueError(f"{kind!r} has no tuned grid")
