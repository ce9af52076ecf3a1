"""The models of one onboarding, each built from a split by one pure function.

* :func:`train_source_model`: an id-embedding model of one or more source domains (time-safe).
* :func:`zero_shot_model`: a source model carried over to the target with no target training.
* :func:`fine_tune`: the source model carried over, then trained on the scarce target data.
* :func:`train_scratch`: the same architecture trained on the target data only.
* :func:`fit_popularity`: items ranked by their number of target training interactions.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import polars as pl

from data_contracts.columns import DOMAIN, ITEM_ID, USER_ID
from models.config import FineTuneConfig, ModelConfig, TrainConfig
from models.evaluation import RankingTask, build_ranking_task
from models.factors import FactorModel, popularity_model
from models.lightning import full_validation_ndcg
from models.network import MatrixFactorization
from models.split import TargetSplit, source_interactions, temporal_user_split
from models.training import FitResult, encode_pairs, fit_network, validation_data
from models.transfer import ItemText, TransferInit, target_user_vocabulary, transfer_init


def train_source_model(
    interactions: pl.DataFrame,
    items: pl.DataFrame,
    *,
    domains: list[str],
    cutoffs: pl.DataFrame | None,
    model: ModelConfig,
    train: TrainConfig,
    val_ratio: float = 0.1,
    seed: int = 0,
) -> FitResult:
    """Train a model on the source ``domains``, keeping only interactions before each user's cutoff.

    The last ``val_ratio`` of each user's source interactions is held out for early stopping.

    Raises:
        ValueError: when the source domains have no (time-safe) interactions.
    """
    source = source_interactions(interactions, items, domains=domains, cutoffs=cutoffs)
    if source.is_empty():
        raise ValueError(f"source domains {domains} have no interactions before the cutoffs")
    fit_part, val_part = temporal_user_split(source, holdout_ratio=val_ratio)
    user_ids = np.sort(source[USER_ID].unique().to_numpy()).astype(object)
    item_ids = np.sort(items.filter(pl.col(DOMAIN).is_in(domains))[ITEM_ID].to_numpy()).astype(object)
    network = MatrixFactorization(len(user_ids), len(item_ids), model.dim, init_std=model.init_std, seed=seed)
    return fit_network(
        network, encode_pairs(fit_part, user_ids, item_ids), user_ids=user_ids, item_ids=item_ids,
        val=validation_data(val_part, fit_part, user_ids=user_ids, item_ids=item_ids), config=train, seed=seed,
        kind="source",
    )


def catalogue_ids(split: TargetSplit) -> np.ndarray:
    """The target catalogue's item ids (the ranking columns)."""
    return split.catalogue[ITEM_ID].to_numpy().astype(object)


def initialise_from_source(source: FactorModel, split: TargetSplit, text: ItemText | None = None) -> TransferInit:
    """Carry ``source`` (already in the target's id space, see :mod:`models.alignment`) over to the target
    vocabulary (see :mod:`models.transfer`); ``text`` enables content initialisation of new items."""
    items = catalogue_ids(split)
    users = target_user_vocabulary(source, split.train[USER_ID].to_numpy())
    train_users, train_items = encode_pairs(split.train, users, items)
    return transfer_init(source, user_ids=users, item_ids=items, train_users=train_users, train_items=train_items,
                         text=text)


def zero_shot_model(source: FactorModel, split: TargetSplit, text: ItemText | None = None) -> FactorModel:
    """The transferred model before any target training (the zero-shot probe)."""
    return initialise_from_source(source, split, text).as_model("zero-shot")


def fine_tune(source: FactorModel, split: TargetSplit, *, config: FineTuneConfig, seed: int,
              text: ItemText | None = None) -> FitResult:
    """Transfer ``source`` to the target and train on the target training data.

    Modes: ``full`` trains every weight; ``freeze-users`` keeps the users carried over from the source fixed
    and trains item vectors, item biases and new users; ``zero-shot`` trains nothing (the initialised model,
    no trainable parameters).
    """
    started = time.perf_counter()
    init = initialise_from_source(source, split, text)
    init_seconds = time.perf_counter() - started
    network = MatrixFactorization.from_arrays(init.user_factors, init.item_factors, init.item_bias)
    val = validation_data(split.val, split.train, user_ids=init.user_ids, item_ids=init.item_ids)
    if config.mode == "zero-shot":
        score = full_validation_ndcg(network, val, config.train.k)
        return FitResult(model=init.as_model("transfer"), history=[], best_epoch=-1, epochs_run=0,
                         initial_val_ndcg=score, best_val_ndcg=score, seconds=0.0, trainable_parameters=0,
                         init_seconds=init_seconds)
    frozen = init.user_from_source if config.mode == "freeze-users" else None
    fit = fit_network(
        network, encode_pairs(split.train, init.user_ids, init.item_ids),
        user_ids=init.user_ids, item_ids=init.item_ids, val=val,
        config=config.train, seed=seed, frozen_user_rows=frozen, kind="transfer",
    )
    return replace(fit, init_seconds=init_seconds)


def train_scratch(split: TargetSplit, *, model: ModelConfig, train: TrainConfig, seed: int) -> FitResult:
    """The same network trained on the target training data only (random initialisation)."""
    items = catalogue_ids(split)
    users = np.sort(split.train[USER_ID].unique().to_numpy()).astype(object)
    network = MatrixFactorization(len(users), len(items), model.dim, init_std=model.init_std, seed=seed)
    return fit_network(
        network, encode_pairs(split.train, users, items), user_ids=users, item_ids=items,
        val=validation_data(split.val, split.train, user_ids=users, item_ids=items), config=train, seed=seed,
        kind="scratch",
    )


def fit_popularity(split: TargetSplit) -> FactorModel:
    """Popularity of each catalogue item in the target training data."""
    items = catalogue_ids(split)
    counts = (
        pl.DataFrame({ITEM_ID: pl.Series(items, dtype=pl.String)})
        .join(split.train.group_by(ITEM_ID).len(), on=ITEM_ID, how="left", maintain_order="left")["len"]
        .fill_null(0)
        .to_numpy()
    )
    return popularity_model(items, counts)


def ranking_tasks(split: TargetSplit, *, click_threshold: float) -> tuple[RankingTask, RankingTask]:
    """(validation task, test task) over the target catalogue.

    Validation excludes each user's training items; test excludes training and validation items.
    """
    items = catalogue_ids(split)
    val = build_ranking_task(items, split.val, split.train, click_threshold=click_threshold)
    test = build_ranking_task(items, split.test, pl.concat([split.train, split.val]), click_threshold=click_threshold)
    return val, test
