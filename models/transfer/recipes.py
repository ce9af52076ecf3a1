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
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data_contracts.columns import DOMAIN, ITEM_ID, USER_ID
from models.config import FineTuneConfig, ModelConfig, ModelFamily, TrainConfig
from models.evaluation.ranking import RankingTask, build_ranking_task
from models.factors import FactorModel, popularity_model
from models.nets.lightning import full_validation_ndcg
from models.nets.network import MatrixFactorization, TwoTower
from models.nets.training import FitResult, encode_pairs, fit_network, validation_data
from models.split import TargetSplit, source_interactions, temporal_user_split
from models.transfer.init import ItemText, TransferInit, target_user_vocabulary, transfer_init


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
    checkpoint_dir: Path | None = None,
    **fit_options: Any,
) -> FitResult:
    """Train a model on the source ``domains``, keeping only interactions before each user's cutoff.

    The last ``val_ratio`` of each user's source interactions is held out for early stopping;
    ``checkpoint_dir`` makes a killed training resumable; ``fit_options``: ``label``, ``on_epoch`` (see
    :func:`~models.nets.training.fit_network`).

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
        val=validation_data(val_part, fit_part, user_ids=user_ids, item_ids=item_ids, max_users=train.max_val_users,
                            seed=seed), config=train, seed=seed,
        kind="source", checkpoint_dir=checkpoint_dir, **fit_options,
        # sources train one at a time; the global stream keeps registered sources (and the numbers measured
        # with them) reproducible
        own_random_stream=False,
    )


def catalogue_ids(split: TargetSplit) -> np.ndarray:
    """The target catalogue's item ids (the ranking columns)."""
    return split.catalogue[ITEM_ID].to_numpy().astype(object)


def initialise_from_source(source: FactorModel, split: TargetSplit, text: ItemText | None = None, *,
                           config: FineTuneConfig | None = None, seed: int = 0) -> TransferInit:
    """Carry ``source`` (already in the target's id space, see :mod:`models.transfer.alignment`) over to the target
    vocabulary (see :mod:`models.transfer.init`); ``text`` enables content initialisation of new items, ``config``
    picks the new-item strategy and, for the two-tower family, the content tower."""
    return _start(source, split, text, config=config, seed=seed)[0]


def _start(source: FactorModel, split: TargetSplit, text: ItemText | None, *, config: FineTuneConfig | None,
           seed: int) -> tuple[TransferInit, tuple[np.ndarray, np.ndarray]]:
    """:func:`initialise_from_source` and the training pairs it encoded in the initialised vocabularies (the
    fine-tune's pairs: encoding them again took 1.4 s at 8 M pairs)."""
    config = config or FineTuneConfig()
    items = catalogue_ids(split)
    # the distinct training users (each user's id once: 400 k strings instead of 8 M at 10 M interactions)
    users = target_user_vocabulary(source, split.train[USER_ID].unique().to_numpy())
    pairs = encode_pairs(split.train, users, items)
    two_tower = config.family == "two-tower"  # its content tower needs the texts whatever the strategy
    uses_text = config.content_init or config.item_init == "content" or two_tower
    init = transfer_init(source, user_ids=users, item_ids=items, train_users=pairs[0], train_items=pairs[1],
                         text=text if uses_text else None, item_init=config.item_init,
                         content_model="ridge" if two_tower else "knn", seed=seed)
    return init, pairs


def zero_shot_model(source: FactorModel, split: TargetSplit, text: ItemText | None = None, *,
                    config: FineTuneConfig | None = None) -> FactorModel:
    """The transferred model before any target training (the zero-shot probe)."""
    return initialise_from_source(source, split, text, config=config).as_model("zero-shot")


def transferred_network(init: TransferInit, config: FineTuneConfig, text: ItemText | None) -> MatrixFactorization:
    """The network of ``config.family`` whose initial (effective) weights are ``init``'s."""
    if config.family == "two-tower":
        if text is None:
            raise ValueError("the two-tower family needs item text embeddings of the target catalogue")
        projection = init.content_projection
        if projection is None:  # no new item to fit it for: start the content tower at zero
            projection = np.zeros((text.target.shape[1], init.user_factors.shape[1]), dtype=np.float32)
        return TwoTower.from_arrays(init.user_factors, init.item_factors, init.item_bias, content=text.target,
                                    projection=projection)
    return MatrixFactorization.from_arrays(init.user_factors, init.item_factors, init.item_bias)


def fine_tune(source: FactorModel, split: TargetSplit, *, config: FineTuneConfig, seed: int,
              text: ItemText | None = None, checkpoint_dir: Path | None = None, **fit_options: Any) -> FitResult:
    """Transfer ``source`` to the target and train on the target training data.

    Modes: ``full`` trains every weight; ``freeze-users`` keeps the users carried over from the source fixed
    and trains item vectors, item biases, new users (and the content tower); ``adapter`` freezes every weight
    and trains low-rank residual adapters on both towers plus the item biases; ``zero-shot`` trains nothing
    (the initialised model, no trainable parameters). ``checkpoint_dir`` and ``fit_options`` (``label``,
    ``on_epoch``, ``callbacks``): see :func:`~models.nets.training.fit_network`.
    """
    started = time.perf_counter()
    init, pairs = _start(source, split, text, config=config, seed=seed)
    network = transferred_network(init, config, text)
    init_seconds = time.perf_counter() - started
    val = validation_data(split.val, split.train, user_ids=init.user_ids, item_ids=init.item_ids,
                          max_users=config.train.max_val_users, seed=seed)
    fit = train_transferred(network, init, pairs, val, config=config, seed=seed, checkpoint_dir=checkpoint_dir,
                            **fit_options)
    return replace(fit, init_seconds=init_seconds)


def train_transferred(network: MatrixFactorization, init: TransferInit, pairs: Any, val: Any, *,
                      config: FineTuneConfig, seed: int, **fit_options: Any) -> FitResult:
    """The fine-tuning modes, for both kinds of training pairs (arrays in memory, or batches read from a pair
    file on disk, see :func:`~models.nets.training.fit_network`): ``zero-shot`` scores the initialised network
    and trains nothing; ``adapter`` adds low-rank adapters and freezes the rest; ``freeze-users`` keeps the users
    carried over from the source fixed; ``full`` trains every weight."""
    if config.mode == "zero-shot":
        score = full_validation_ndcg(network, val, config.train.k)
        return FitResult(model=init.as_model("transfer"), initial_val_ndcg=score, best_val_ndcg=score)
    if config.mode == "adapter":
        network.add_adapters(config.adapter_rank, seed=seed)
        network.freeze_base()
    return fit_network(network, pairs, user_ids=init.user_ids, item_ids=init.item_ids, val=val, config=config.train,
                       seed=seed, kind="transfer",
                       frozen_user_rows=init.user_from_source if config.mode == "freeze-users" else None,
                       transferred_lr_scale=config.transferred_lr_scale, anchor=config.anchor, **fit_options)


def train_scratch(split: TargetSplit, *, model: ModelConfig, train: TrainConfig, seed: int,
                  family: ModelFamily = "mf", content: np.ndarray | None = None,
                  checkpoint_dir: Path | None = None, **fit_options: Any) -> FitResult:
    """The same network trained on the target training data only (random initialisation).

    Args:
        family: ``mf`` or ``two-tower`` (then ``content``, the catalogue's text embeddings, is required).
        fit_options: ``checkpoint_dir``'s companions (``label``, ``on_epoch``, ``callbacks``): see
            :func:`~models.nets.training.fit_network`.

    Raises:
        ValueError: for the two-tower family without ``content``.
    """
    items = catalogue_ids(split)
    users = np.sort(split.train[USER_ID].unique().to_numpy()).astype(object)
    if family == "two-tower":
        if content is None:
            raise ValueError("the two-tower family needs item text embeddings of the target catalogue")
        network: MatrixFactorization = TwoTower(len(users), len(items), model.dim, content=content,
                                                init_std=model.init_std, seed=seed)
    else:
        network = MatrixFactorization(len(users), len(items), model.dim, init_std=model.init_std, seed=seed)
    return fit_network(
        network, encode_pairs(split.train, users, items), user_ids=users, item_ids=items,
        val=validation_data(split.val, split.train, user_ids=users, item_ids=items, max_users=train.max_val_users,
                            seed=seed), config=train, seed=seed,
        kind="scratch", checkpoint_dir=checkpoint_dir, **fit_options,
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
