"""Fine-tuning on a target domain bigger than memory: the split and the training pairs live on disk.

* :func:`split_on_disk`: the target's interactions (a lazy scan, e.g. the parts written by batched validation)
  are read in batches and spread over buckets of users (Parquet parts); each bucket, small enough for memory,
  is split exactly as :func:`models.split.split_target_domain` splits a whole domain. Test and validation are
  per-user rules, so they are the same rows as in memory; the ``fraction`` sample is drawn per bucket (the same
  share, not the same rows). Buckets are independent (:func:`split_folder`): a
  :class:`~data_contracts.batched.PartMapper` may split them elsewhere, and the parts are the same.
* :func:`write_pairs`: every training interaction as an ``(user row, item row)`` int32 pair, in a shuffled
  order, in one file (8 bytes an interaction).
* :class:`ShuffledBlocks`: what the Lightning trainer reads: each epoch visits the file's blocks in a new random
  order and shuffles each block in memory (a block-wise shuffle; the file itself is already shuffled).
* :func:`fine_tune_on_disk` and :func:`ranking_sample`: the transfer fine-tune over those pairs, and
  validation/test tasks of a seeded sample of users.

Memory holds one batch or bucket, one block of pairs, the model (users x dim and items x dim), the vocabularies
and the samples -- and, during the transfer initialisation, a few bytes per training pair (it reads the
pair file mapped into memory).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch.utils.data import IterableDataset

from data_contracts.batched import InOrder, PartMapper
from data_contracts.columns import DOMAIN, ITEM_ID, TIMESTAMP, USER_ID
from models.config import FineTuneConfig, ModelConfig, SplitConfig, TrainConfig
from models.evaluation.ranking import RankingTask, build_ranking_task
from models.factors import FactorModel, popularity_model
from models.nets.network import MatrixFactorization
from models.nets.training import FitResult, fit_network, validation_data
from models.split import (
    InsufficientDataError,
    other_domains,
    source_cutoffs,
    source_interactions,
    split_target_domain,
    temporal_user_split,
)
from models.transfer.als import EncodedTrain
from models.transfer.init import target_user_vocabulary, transfer_init
from models.transfer.joint import MAX_JOINT_PAIRS, JointTrain
from models.transfer.peers import PeerTooLarge
from models.transfer.recipes import train_transferred, transferred_network

DEFAULT_BUCKET_ROWS = 2_000_000
DEFAULT_BLOCK_ROWS = 1_000_000
_BUCKET = "_bucket"
Part = Literal["train", "val", "test"]


@dataclass(frozen=True)
class DiskSplit:
    """A target split whose parts are Parquet folders under ``workdir`` (read lazily)."""

    domain: str
    workdir: Path
    catalogue: pl.DataFrame
    sizes: dict[str, int]
    train_parts: tuple[Part, ...] = ("train",)  # the folders read as ``train``

    def scan(self, part: Part) -> pl.LazyFrame:
        """The rows of ``part`` (``train``, ``val`` or ``test``); ``train`` reads every folder of
        ``train_parts``, each with the training part's columns."""
        if part != "train" or self.train_parts == ("train",):
            return pl.scan_parquet(self.workdir / part / "*.parquet")
        columns = pl.scan_parquet(self.workdir / "train" / "*.parquet").collect_schema().names()
        return pl.concat([pl.scan_parquet(self.workdir / p / "*.parquet").select(columns) for p in self.train_parts])

    def with_all_parts(self) -> DiskSplit:
        """This split with every target interaction (train, validation and test) read as its training part, as
        :func:`models.transfer.refit.all_data_split` in memory; validation and test stay for the fits'
        interfaces (nothing may be chosen or measured on them)."""
        return replace(self, train_parts=("train", "val", "test"))

    def users(self, part: Part) -> np.ndarray:
        """The sorted distinct users of ``part``."""
        users = self.scan(part).select(pl.col(USER_ID).unique()).collect(engine="streaming")[USER_ID]
        return np.sort(users.to_numpy()).astype(object)


def _by_user_buckets(scan: pl.LazyFrame, workdir: Path, *, batch_rows: int, bucket_rows: int) -> list[Path]:
    """Spread the rows of ``scan`` over folders of Parquet parts, every user's rows in one folder (a hash of
    the user id), about ``bucket_rows`` rows a folder; one pass over the data."""
    total = int(scan.select(pl.len()).collect(engine="streaming").item())
    buckets = max(1, math.ceil(total / bucket_rows))
    spread = workdir / "by_user"
    shutil.rmtree(spread, ignore_errors=True)
    for index, batch in enumerate(scan.collect_batches(chunk_size=batch_rows)):
        keyed = batch.with_columns((pl.col(USER_ID).hash(seed=0) % buckets).alias(_BUCKET))
        for (bucket,), rows in keyed.partition_by(_BUCKET, as_dict=True).items():
            folder = spread / f"{bucket:05d}"
            folder.mkdir(parents=True, exist_ok=True)
            rows.drop(_BUCKET).write_parquet(folder / f"{index:06d}.parquet")
    return sorted(spread.iterdir()) if spread.exists() else []


BucketSplitter = Callable[[pl.DataFrame], dict[str, pl.DataFrame | int]]


def split_folder(folder: Path, workdir: Path, split_bucket: BucketSplitter) -> dict[str, int]:
    """One bucket of users: its rows (the Parquet parts in ``folder``) split by ``split_bucket`` (frame -> part
    name -> rows, or a count only), each part written to ``workdir/<part>/<bucket>.parquet``, the folder removed;
    returns the rows per part. A bucket is independent of the others, so it may run anywhere that sees ``workdir``
    (a :class:`~data_contracts.batched.PartMapper`)."""
    sizes = {}
    for part, rows in split_bucket(pl.read_parquet(folder / "*.parquet")).items():
        sizes[part] = rows if isinstance(rows, int) else rows.height
        if not isinstance(rows, int):
            rows.write_parquet(workdir / part / f"{folder.name}.parquet")
    shutil.rmtree(folder)
    return sizes


def _split_buckets(scan: pl.LazyFrame, workdir: Path, parts: tuple[str, ...], split_bucket: BucketSplitter, *,
                   batch_rows: int, bucket_rows: int, mapper: PartMapper | None, label: str) -> dict[str, int]:
    """Spread ``scan`` over buckets of users (one pass), then split every bucket with :func:`split_folder` (through
    ``mapper``, :class:`~data_contracts.batched.InOrder` by default) into ``workdir/<part>``; returns the rows per
    part."""
    mapper = mapper or InOrder()
    sizes = dict.fromkeys(parts, 0)
    for part in parts:
        (workdir / part).mkdir(parents=True, exist_ok=True)
    folders = _by_user_buckets(scan, workdir, batch_rows=batch_rows, bucket_rows=bucket_rows)
    for low in range(0, len(folders), mapper.width):
        calls = [(folder, workdir, split_bucket) for folder in folders[low:low + mapper.width]]
        for bucket in mapper(split_folder, calls, label):
            for part, rows in bucket.items():
                sizes[part] = sizes.get(part, 0) + rows
    shutil.rmtree(workdir / "by_user", ignore_errors=True)
    return sizes


def _target_bucket(frame: pl.DataFrame, *, catalogue: pl.DataFrame, domain: str, config: SplitConfig
                   ) -> dict[str, pl.DataFrame | int]:
    split = split_target_domain(frame, catalogue, domain=domain, fraction=config.fraction, seed=config.seed,
                                test_ratio=config.test_ratio, val_ratio=config.val_ratio, min_users=0)
    return {"train": split.train, "val": split.val, "test": split.test, "train_full": split.train_full_size}


def _source_bucket(frame: pl.DataFrame, *, val_ratio: float) -> dict[str, pl.DataFrame | int]:
    train, val = temporal_user_split(frame, holdout_ratio=val_ratio)
    return {"train": train, "val": val}


def split_on_disk(
    interactions: pl.LazyFrame, items: pl.DataFrame, *, domain: str, config: SplitConfig, workdir: Path,
    batch_rows: int = 1_000_000, bucket_rows: int = DEFAULT_BUCKET_ROWS, mapper: PartMapper | None = None,
) -> DiskSplit:
    """Split the target ``domain`` bucket by bucket of users (see the module docstring); ``mapper`` runs the
    buckets' splits (default: one after the other, here).

    Raises:
        ValueError: the domain has no items or no interactions.
        InsufficientDataError: the train, validation or test set would have fewer than ``config.min_users`` users.
    """
    catalogue = items.filter(pl.col(DOMAIN) == domain).sort(ITEM_ID)
    if catalogue.is_empty():
        raise ValueError(f"target domain {domain!r} has no items")
    shutil.rmtree(workdir, ignore_errors=True)
    target = interactions.join(catalogue.lazy().select(ITEM_ID), on=ITEM_ID, how="semi")
    split_bucket = partial(_target_bucket, catalogue=catalogue, domain=domain, config=config)
    sizes = _split_buckets(target, workdir, ("train", "val", "test"), split_bucket, batch_rows=batch_rows,
                           bucket_rows=bucket_rows, mapper=mapper, label="split-bucket")
    if not sizes["train_full"] + sizes["test"]:
        raise ValueError(f"target domain {domain!r} has no interactions")
    result = DiskSplit(domain, workdir, catalogue, sizes)
    for part, name in (("test", "test"), ("val", "validation"), ("train", "training")):
        users = int(result.scan(part).select(pl.col(USER_ID).n_unique()).collect(engine="streaming").item())
        if users < config.min_users:
            raise InsufficientDataError(f"target domain {domain!r}: the {name} set has {users} user(s), fewer than "
                                        f"the minimum {config.min_users}")
    return result


def source_cutoffs_on_disk(split: DiskSplit) -> pl.DataFrame:
    """Per target test user, the time of the first test interaction (``user_id``, ``cutoff``), as
    :func:`models.split.source_cutoffs`."""
    return source_cutoffs(split.scan("test").select(USER_ID, TIMESTAMP).collect(engine="streaming"))


def joint_train_on_disk(interactions: pl.LazyFrame, items: pl.DataFrame, split: DiskSplit, *,
                        max_pairs: int = MAX_JOINT_PAIRS, time_safe: bool = True) -> JointTrain:
    """The joint peers' pairs (:class:`~models.transfer.joint.JointTrain`): every other domain's time-safe
    interactions (with their times, which give the closed-form recipe its recency) and the target's training ones,
    read into memory; ``time_safe``: as :meth:`~models.transfer.joint.JointTrain.of_split`.

    Raises:
        PeerTooLarge: above ``max_pairs`` source interactions (counted on disk first).
    """
    scan = source_interactions(interactions, items, domains=other_domains(items, split.domain),
                               cutoffs=source_cutoffs_on_disk(split) if time_safe else None
                               ).select(USER_ID, ITEM_ID, TIMESTAMP)
    count = scan.select(pl.len()).collect(engine="streaming").item()
    if count > max_pairs:
        raise PeerTooLarge(f"{count:,} source interactions are above the joint peers' in-memory bound "
                           f"({max_pairs:,})")
    return JointTrain.of(scan.collect(engine="streaming"), split.scan("train").select(USER_ID, ITEM_ID).collect(),
                         split.catalogue[ITEM_ID].to_numpy().astype(object))


def source_split_on_disk(
    interactions: pl.LazyFrame, items: pl.DataFrame, *, domains: list[str], cutoffs: pl.DataFrame | None,
    val_ratio: float, workdir: Path, batch_rows: int = 1_000_000, bucket_rows: int = DEFAULT_BUCKET_ROWS,
    mapper: PartMapper | None = None,
) -> DiskSplit:
    """The time-safe interactions of the source ``domains`` (before each user's cutoff), split per user into
    ``train`` and ``val`` as :func:`models.transfer.recipes.train_source_model` splits them (``mapper``: as
    :func:`split_on_disk`).

    Raises:
        ValueError: the source domains have no (time-safe) interactions.
    """
    catalogue = items.filter(pl.col(DOMAIN).is_in(domains)).sort(ITEM_ID)
    shutil.rmtree(workdir, ignore_errors=True)
    scan = source_interactions(interactions, items, domains=domains, cutoffs=cutoffs)
    sizes = _split_buckets(scan, workdir, ("train", "val"), partial(_source_bucket, val_ratio=val_ratio),
                           batch_rows=batch_rows, bucket_rows=bucket_rows, mapper=mapper, label="source-split-bucket")
    if not sum(sizes.values()):
        raise ValueError(f"source domains {domains} have no interactions before the cutoffs")
    return DiskSplit("+".join(domains), workdir, catalogue, sizes)


@dataclass(frozen=True)
class DiskPairs:
    """``n`` training pairs ``(user row, item row)`` as int32, row-major, in a shuffled order, in ``path``."""

    path: Path
    n: int

    def array(self) -> np.ndarray:
        """The pairs mapped into memory, read-only, shape (n, 2)."""
        return np.memmap(self.path, dtype=np.int32, mode="r", shape=(self.n, 2))


def write_pairs(
    scan: pl.LazyFrame, user_ids: np.ndarray, item_ids: np.ndarray, path: Path, *, seed: int,
    batch_rows: int = 1_000_000, block_rows: int = DEFAULT_BLOCK_ROWS,
) -> DiskPairs:
    """Encode the (user, item) of every row of ``scan`` known to both vocabularies and write them shuffled:
    each batch's pairs are dealt at random over ``n / block_rows`` bucket files, then each bucket is permuted in
    memory and appended to ``path``."""
    vocab_users = pl.LazyFrame({USER_ID: pl.Series(user_ids, dtype=pl.String)}).with_row_index("_u")
    vocab_items = pl.LazyFrame({ITEM_ID: pl.Series(item_ids, dtype=pl.String)}).with_row_index("_i")
    # the rows' own order (a join may reorder them otherwise): the same file, and the same fit, every run
    encoded = (scan.select(USER_ID, ITEM_ID).join(vocab_users, on=USER_ID, how="inner", maintain_order="left")
               .join(vocab_items, on=ITEM_ID, how="inner", maintain_order="left")
               .select(pl.col("_u").cast(pl.Int32), pl.col("_i").cast(pl.Int32)))
    total = int(encoded.select(pl.len()).collect(engine="streaming").item())
    buckets = max(1, math.ceil(total / block_rows))
    rng = np.random.default_rng(seed)
    scratch = path.with_name(path.name + ".buckets")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    handles = [open(scratch / f"{b:05d}.bin", "wb") for b in range(buckets)]  # noqa: SIM115 - closed below
    try:
        for batch in encoded.collect_batches(chunk_size=batch_rows):
            pairs = np.ascontiguousarray(batch.to_numpy(), dtype=np.int32)
            dealt = rng.integers(0, buckets, size=len(pairs))
            for bucket in np.unique(dealt):
                handles[bucket].write(pairs[dealt == bucket].tobytes())
    finally:
        for handle in handles:
            handle.close()
    written = 0
    with open(path, "wb") as out:
        for bucket in range(buckets):
            pairs = np.fromfile(scratch / f"{bucket:05d}.bin", dtype=np.int32).reshape(-1, 2)
            out.write(pairs[rng.permutation(len(pairs))].tobytes())
            written += len(pairs)
    shutil.rmtree(scratch)
    return DiskPairs(path, written)


class ShuffledBlocks(IterableDataset):
    """Batches of ``(users, items)`` LongTensors from a :class:`DiskPairs` file: each epoch (each ``iter``) reads
    its blocks of ``block_rows`` pairs in a new seeded order and permutes each block.

    Under DDP every process reads every block in the same order and keeps its share of each (rows ``rank``,
    ``rank + world``, ...), each block first cut to a multiple of the world size (dropping fewer than ``world``
    pairs a block, other ones each epoch): every process then runs the same number of steps, which DDP's
    gradient all-reduce needs (unequal shares left one process waiting for ever). ``batch_size`` is the global
    batch: each of ``world`` processes takes ``batch_size // world`` pairs a step, so a step sees as many pairs
    as in one process."""

    def __init__(self, pairs: DiskPairs, *, batch_size: int, seed: int, block_rows: int = DEFAULT_BLOCK_ROWS):
        self.pairs, self.batch_size, self.seed, self.block_rows = pairs, batch_size, seed, block_rows
        self.starts = list(range(0, pairs.n, block_rows))
        self.epoch = 0

    @staticmethod
    def _world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    @property
    def n_pairs(self) -> int:
        """Pairs on file (each epoch reads them all)."""
        return self.pairs.n

    def __len__(self) -> int:
        _, world = self._world()
        step = max(1, self.batch_size // world)
        return sum(math.ceil(min(self.block_rows, self.pairs.n - s) // world / step) for s in self.starts)

    def __iter__(self):
        rank, world = self._world()
        rng = np.random.default_rng([self.seed, self.epoch])  # the same on every process
        self.epoch += 1
        for block in rng.permutation(len(self.starts)):
            start = self.starts[block]
            count = min(self.block_rows, self.pairs.n - start)
            pairs = np.fromfile(self.pairs.path, dtype=np.int32, count=2 * count, offset=8 * start).reshape(-1, 2)
            pairs = pairs[rng.permutation(count)]
            if world > 1:
                pairs = pairs[:count // world * world][rank::world]
            # contiguous columns: each batch is a pair of contiguous views
            users, items = (torch.from_numpy(pairs[:, c].astype(np.int64)) for c in (0, 1))
            step = max(1, self.batch_size // world)
            for low in range(0, len(users), step):
                yield users[low:low + step], items[low:low + step]


def sample_users(users: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """A seeded sample of ``n`` of ``users`` (all of them when ``n`` is None or not smaller), sorted."""
    if n is None or len(users) <= n:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=n, replace=False))


def ranking_sample(split: DiskSplit, part: Literal["val", "test"], users: np.ndarray
                   ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(holdout rows, seen rows) of ``users`` for the ``val`` or ``test`` task: validation excludes training
    items, test excludes training and validation items (as :func:`models.transfer.recipes.ranking_tasks`)."""
    chosen = pl.Series(users, dtype=pl.String).implode()
    holdout = split.scan(part).filter(pl.col(USER_ID).is_in(chosen)).collect(engine="streaming")
    seen_parts = ["train"] if part == "val" else ["train", "val"]
    seen = pl.concat([split.scan(p).filter(pl.col(USER_ID).is_in(chosen)) for p in seen_parts]).collect(
        engine="streaming")
    return holdout, seen


def sample_test_task(split: DiskSplit, *, users: int | None, seed: int, click_threshold: float = 4.0) -> RankingTask:
    """The test task of a seeded sample of ``users`` test users (all when None)."""
    chosen = sample_users(split.users("test"), users, seed)
    holdout, seen = ranking_sample(split, "test", chosen)
    return build_ranking_task(split.catalogue[ITEM_ID].to_numpy().astype(object), holdout, seen,
                              click_threshold=click_threshold)


@dataclass(frozen=True)
class DiskFit:
    """A fit over pairs on disk, and where they were."""

    fit: FitResult
    pairs: DiskPairs


def _validation(split: DiskSplit, user_ids: np.ndarray, item_ids: np.ndarray, train: TrainConfig, seed: int):
    holdout, seen = ranking_sample(split, "val", sample_users(split.users("val"), train.max_val_users, seed))
    return validation_data(holdout, seen, user_ids=user_ids, item_ids=item_ids)


def _batches(pairs: DiskPairs, train: TrainConfig, seed: int, block_rows: int) -> ShuffledBlocks:
    """The pair file's shuffled batches, of the size ``train`` gives this many pairs (``TrainConfig.sized_for``,
    which fit_network checks them against)."""
    return ShuffledBlocks(pairs, batch_size=train.sized_for(pairs.n).batch_size, seed=seed, block_rows=block_rows)


def _fit(network: MatrixFactorization, pairs: DiskPairs, user_ids: np.ndarray, item_ids: np.ndarray,
         val: Any, train: TrainConfig, seed: int, block_rows: int, **options: Any) -> FitResult:
    return fit_network(network, _batches(pairs, train, seed, block_rows),
                       user_ids=user_ids, item_ids=item_ids, val=val, config=train, seed=seed, **options)


def train_source_on_disk(split: DiskSplit, *, model: ModelConfig, train: TrainConfig, seed: int,
                         batch_rows: int = 1_000_000, block_rows: int = DEFAULT_BLOCK_ROWS) -> DiskFit:
    """:func:`models.transfer.recipes.train_source_model` over a :func:`source_split_on_disk`."""
    users, items = split.users("train"), split.catalogue[ITEM_ID].to_numpy().astype(object)
    pairs = write_pairs(split.scan("train"), users, items, split.workdir / "train_pairs.bin", seed=seed,
                        batch_rows=batch_rows, block_rows=block_rows)
    network = MatrixFactorization(len(users), len(items), model.dim, init_std=model.init_std, seed=seed)
    fit = _fit(network, pairs, users, items, _validation(split, users, items, train, seed), train, seed, block_rows,
               kind="source", own_random_stream=False)
    return DiskFit(fit, pairs)


def train_scratch_on_disk(split: DiskSplit, *, model: ModelConfig, train: TrainConfig, seed: int,
                          batch_rows: int = 1_000_000, block_rows: int = DEFAULT_BLOCK_ROWS,
                          pairs_file: str = "scratch_pairs.bin", **fit_options: Any) -> DiskFit:
    """:func:`models.transfer.recipes.train_scratch` (``mf``) over pairs on disk; its pair file (the target's own users
    and catalogue) also serves :func:`encoded_train` (ALS) and :func:`popularity_on_disk`. ``fit_options``:
    ``label``, ``restore_best`` (see :func:`~models.nets.training.fit_network`)."""
    users, items = split.users("train"), split.catalogue[ITEM_ID].to_numpy().astype(object)
    pairs = write_pairs(split.scan("train"), users, items, split.workdir / pairs_file, seed=seed,
                        batch_rows=batch_rows, block_rows=block_rows)
    network = MatrixFactorization(len(users), len(items), model.dim, init_std=model.init_std, seed=seed)
    fit = _fit(network, pairs, users, items, _validation(split, users, items, train, seed), train, seed, block_rows,
               kind="scratch", **fit_options)
    return DiskFit(fit, pairs)


def encoded_train(split: DiskSplit, pairs: DiskPairs) -> EncodedTrain:
    """The target's training pairs as ALS reads them (the scratch model's pair file, mapped into memory)."""
    mapped = pairs.array()
    return EncodedTrain(split.users("train"), split.catalogue[ITEM_ID].to_numpy().astype(object), mapped[:, 0],
                        mapped[:, 1])


def popularity_on_disk(split: DiskSplit) -> FactorModel:
    """:func:`models.transfer.recipes.fit_popularity`: catalogue items by their number of training interactions."""
    counts = split.scan("train").group_by(ITEM_ID).len().collect(engine="streaming")
    ordered = split.catalogue.select(ITEM_ID).join(counts, on=ITEM_ID, how="left", maintain_order="left")
    return popularity_model(split.catalogue[ITEM_ID].to_numpy().astype(object),
                            ordered["len"].fill_null(0).to_numpy())


def fine_tune_on_disk(
    source: FactorModel, split: DiskSplit, *, config: FineTuneConfig, seed: int, batch_rows: int = 1_000_000,
    block_rows: int = DEFAULT_BLOCK_ROWS, pairs_file: str = "transfer_pairs.bin", **fit_options: Any,
) -> DiskFit:
    """:func:`models.transfer.recipes.fine_tune` (``mf`` family, no item texts) with the training pairs on disk
    (``pairs_file`` under the split's folder: one per source when several are fine-tuned side by side);
    ``fit_options``: ``label``, ``restore_best`` (see :func:`~models.nets.training.fit_network`).

    Raises:
        ValueError: the ``two-tower`` family (it needs the catalogue's texts: not supported here yet).
    """
    if config.family != "mf":
        raise ValueError("fine-tuning on disk supports the mf family only")
    items = split.catalogue[ITEM_ID].to_numpy().astype(object)
    users = target_user_vocabulary(source, split.users("train"))
    pairs = write_pairs(split.scan("train"), users, items, split.workdir / pairs_file, seed=seed,
                        batch_rows=batch_rows, block_rows=block_rows)
    mapped = pairs.array()
    init = transfer_init(source, user_ids=users, item_ids=items, train_users=mapped[:, 0], train_items=mapped[:, 1],
                         item_init=config.item_init, seed=seed)
    del mapped
    network = transferred_network(init, config, None)
    val = _validation(split, init.user_ids, init.item_ids, config.train, seed)
    batches = _batches(pairs, config.train, seed, block_rows)
    return DiskFit(train_transferred(network, init, batches, val, config=config, seed=seed, **fit_options), pairs)
