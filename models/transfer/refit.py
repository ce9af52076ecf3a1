"""Refit before serving: the winner again on all of the target's data, with what validation chose.

An onboarding evaluates models trained on the target's training split only; its newest interactions (the
validation and test periods) are the most valuable rows a served model can learn from. The refit trains the
registered winner once more on train + validation + test with the hyper-parameters and the epoch count that
validation chose, nothing chosen again (validation is inside the training data now). The evaluated model is what
the metrics and the champion gate speak for; the refit is what users get.

:func:`refit_model` is the one dispatch over the kinds of winner; the data it trains on is a
:class:`WholeTarget`: :class:`WholeInMemory` (tables in memory) or :class:`WholeOnDisk` (the split's Parquet
parts and pair files, as the out-of-core fits read them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import polars as pl

from data_contracts.columns import ITEM_ID
from models.config import FineTuneConfig, ModelConfig, ModelFamily, TrainConfig
from models.evaluation.ranking import RankingTask
from models.factors import FactorModel
from models.nets.training import FitResult
from models.split import TargetSplit
from models.transfer.als import AlsGrid, EncodedTrain, fit_als
from models.transfer.closed_form import ClosedFormGrid, carry_over, transitions_of, with_transitions
from models.transfer.init import ItemText
from models.transfer.joint import JOINT, JointGrid, JointTrain
from models.transfer.outofcore import (
    DiskSplit,
    encoded_train,
    fine_tune_on_disk,
    joint_train_on_disk,
    popularity_on_disk,
    train_scratch_on_disk,
    write_pairs,
)
from models.transfer.peers import PEERS, PeerGrid, PeerTooLarge
from models.transfer.recipes import catalogue_ids, fine_tune, fit_popularity, train_scratch

#: The parts a refit trains on (all of them), in the order they are counted.
PARTS = ("train", "val", "test")


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
        return als if kind == "als" else JointGrid(als=als, recency=(float(params["recency"]),),
                                                   recency_alpha=float(params["recency_alpha"]))
    if kind in ("ease", "joint-ease"):
        ease = PeerGrid(lambdas=(float(params["l2"]),))
        return ease if kind == "ease" else JointGrid(ease=ease)
    if kind == "itemknn":
        return PeerGrid(neighbours=(int(params["neighbours"]),))
    raise ValueError(f"{kind!r} has no tuned grid")


class WholeTarget(Protocol):
    """Every interaction of the target, as each kind of model is trained on it. The network fits take
    ``label`` and ``restore_best`` (see :func:`~models.nets.training.fit_network`)."""

    rows: dict[str, int]  # the target interactions, by part and ``all``

    def popularity(self) -> FactorModel: ...
    def encoded(self, seed: int) -> EncodedTrain: ...
    # the source (every interaction; time_safe: those before each user's cutoff, as evaluated), the target's whole
    def joint(self, *, time_safe: bool = False) -> JointTrain: ...
    def transfer(self, source: FactorModel, config: FineTuneConfig, seed: int, **options: Any) -> FactorModel: ...
    def scratch(self, model: ModelConfig, train: TrainConfig, seed: int, **options: Any) -> FactorModel: ...


@dataclass(frozen=True)
class WholeInMemory:
    """The target's split read whole: :func:`all_data_split` of it, with the tables the joint peers read."""

    split: TargetSplit  # as evaluated (train, val, test)
    interactions: pl.DataFrame
    items: pl.DataFrame
    text: ItemText | None = None  # the chosen source's item texts (transfer)
    family: ModelFamily = "mf"
    # sources from another dataset: its interactions with the target's items (the joint peers' source pairs;
    # :meth:`models.transfer.joint.JointTrain.of_other_dataset`), and whether its users are the target's
    other: pl.DataFrame | None = None
    other_shares_users: bool = False

    @property
    def whole(self) -> TargetSplit:
        return all_data_split(self.split)

    @property
    def rows(self) -> dict[str, int]:
        parts = {part: getattr(self.split, part).height for part in PARTS}
        return {**parts, "all": sum(parts.values())}

    def popularity(self) -> FactorModel:
        return fit_popularity(self.whole)

    def encoded(self, seed: int) -> EncodedTrain:
        whole = self.whole
        return EncodedTrain.of(whole.train, catalogue_ids(whole))

    def joint(self, *, time_safe: bool = False) -> JointTrain:
        if self.other is not None:
            return JointTrain.of_other_dataset(self.other, self.whole, shared_users=self.other_shares_users,
                                               time_safe=time_safe)
        return JointTrain.of_split(self.interactions, self.items, self.whole, time_safe=time_safe)

    def transfer(self, source: FactorModel, config: FineTuneConfig, seed: int, **options: Any) -> FactorModel:
        return fine_tune(source, self.whole, config=config, seed=seed, text=self.text, **options).model

    def scratch(self, model: ModelConfig, train: TrainConfig, seed: int, **options: Any) -> FactorModel:
        content = self.text.target if self.text is not None else None
        return train_scratch(self.whole, model=model, train=train, seed=seed, family=self.family, content=content,
                             **options).model


@dataclass(frozen=True)
class WholeOnDisk:
    """The out-of-core split with its training part read over every part (:meth:`DiskSplit.with_all_parts`):
    the fits stream pair files as the evaluated ones did, nothing is read whole."""

    split: DiskSplit  # as evaluated
    interactions: pl.LazyFrame
    items: pl.DataFrame
    batch_rows: int  # rows read per batch, the onboarding's

    @property
    def whole(self) -> DiskSplit:
        return self.split.with_all_parts()

    @property
    def rows(self) -> dict[str, int]:
        parts = {part: int(self.split.sizes[part]) for part in PARTS}
        return {**parts, "all": sum(parts.values())}

    def popularity(self) -> FactorModel:
        return popularity_on_disk(self.whole)

    def encoded(self, seed: int) -> EncodedTrain:
        whole = self.whole
        pairs = write_pairs(whole.scan("train"), whole.users("train"),
                            whole.catalogue[ITEM_ID].to_numpy().astype(object),
                            whole.workdir / "refit_pairs.bin", seed=seed, batch_rows=self.batch_rows)
        return encoded_train(whole, pairs)

    def joint(self, *, time_safe: bool = False) -> JointTrain:
        return joint_train_on_disk(self.interactions, self.items, self.whole, time_safe=time_safe)

    def transfer(self, source: FactorModel, config: FineTuneConfig, seed: int, **options: Any) -> FactorModel:
        return fine_tune_on_disk(source, self.whole, config=config, seed=seed, batch_rows=self.batch_rows,
                                 pairs_file="refit-transfer_pairs.bin", **options).fit.model

    def scratch(self, model: ModelConfig, train: TrainConfig, seed: int, **options: Any) -> FactorModel:
        return train_scratch_on_disk(self.whole, model=model, train=train, seed=seed, batch_rows=self.batch_rows,
                                     pairs_file="refit-scratch_pairs.bin", **options).fit.model


def on_the_joint_pairs(whole: WholeTarget, fit: Callable[[JointTrain], FactorModel],
                       params: dict[str, Any]) -> tuple[FactorModel, dict[str, Any]]:
    """``fit`` on every source interaction and the target's whole, and ``params``; where every source interaction
    is above a bound of the joint pairs that the time-safe ones, as evaluated, were under
    (:class:`~models.transfer.peers.PeerTooLarge`), on those, and ``params`` say so (``refit_source``)."""
    try:
        return fit(whole.joint()), dict(params)
    except PeerTooLarge as why:
        return fit(whole.joint(time_safe=True)), {**params, "refit_source": f"time-safe ({why})"}


def refit_model(
    winner: str, whole: WholeTarget, val_task: RankingTask, *, seed: int, params: dict[str, Any],
    fits: dict[str, FitResult], source: FactorModel | None, finetune: FineTuneConfig, model: ModelConfig,
    scratch: TrainConfig, recipe_source: FactorModel | None = None,
) -> tuple[FactorModel, dict[str, Any]]:
    """``winner`` trained on ``whole`` with what validation chose, and those choices: the tuned peers at their
    chosen grid point (``params``), the networks for their best epoch count (the last epoch's weights, no early
    stopping), transfer from the same ``source``; popularity counts every interaction. The closed-form recipe, when
    ``params`` say it was kept, is carried over again at its chosen point from the item vectors of the source model
    it was evaluated with (``recipe_source``, :attr:`~models.transfer.closed_form.ClosedFormResult.source`): its
    users solved on every source interaction, its catalogue on all of the target's pairs; the source is not
    fitted again. The joint pairs (``whole.joint()``: the joint peers and the recipe) hold every source
    interaction, not only those before each user's first test interaction: the served model knows what each user
    did last in the other domains, which the recipe's recency step weighs most. ``val_task`` only satisfies the
    fits' interface (its users are in the training data now: the score it gives means nothing).

    Raises:
        ValueError: a winner this module does not know.
    """
    if winner == "popularity":
        return whole.popularity(), dict(params)
    if winner == "transfer" and params.get("recipe") == "closed-form":
        grid = ClosedFormGrid(factors=int(params["source_factors"]),
                              regularization=float(params["source_regularization"]),
                              source_alpha=float(params["source_alpha"]), iterations=int(params["source_iterations"]),
                              recency=float(params["recency"]), recency_alpha=float(params["recency_alpha"]),
                              alpha=(float(params["alpha"]),), l2=(float(params["l2"]),))
        assert recipe_source is not None, "a closed-form refit needs the source model the recipe was evaluated with"
        transitions = transitions_of(params)

        def recipe(joint: JointTrain) -> FactorModel:
            model = carry_over(joint, recipe_source, grid)[0]
            return model if transitions is None else with_transitions(joint, model, *transitions)

        return on_the_joint_pairs(whole, recipe, params)
    if winner == "transfer":
        assert source is not None, "a transfer refit needs the chosen source"
        train = fixed_epochs(finetune.train, fits["transfer"])
        config = (finetune.model_copy(update={"mode": "zero-shot"}) if train is None
                  else finetune.model_copy(update={"train": train}))
        return (whole.transfer(source, config, seed, label="refit:transfer", restore_best=False),
                {"epochs": 0 if train is None else train.max_epochs, "mode": config.mode})
    if winner == "scratch":  # random initial weights that validated best are not served: one epoch then
        train = fixed_epochs(scratch, fits["scratch"]) or scratch.model_copy(update={"max_epochs": 1,
                                                                                      "patience": 1})
        return (whole.scratch(model, train, seed, label="refit:scratch", restore_best=False),
                {"epochs": train.max_epochs})
    if winner == "als":
        als = fit_als(whole.encoded(seed), None, val_task, grid=one_point_grid(winner, params), seed=seed)
        return als.model, dict(params)
    if winner in PEERS:
        return PEERS[winner](whole.encoded(seed), val_task, grid=one_point_grid(winner, params)).model, dict(params)
    if winner in JOINT:
        grid = one_point_grid(winner, params)
        return on_the_joint_pairs(whole, lambda joint: JOINT[winner](joint, val_task, grid=grid, seed=seed).model,
                                  params)
    raise ValueError(f"no refit for {winner!r}")
