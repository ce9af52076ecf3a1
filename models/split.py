"""Leakage-free splits of a target domain and time-safe filtering of source data.

The split of a target domain (see README, "How the split works"):

1. **Test**: per user, the last ``test_ratio`` of the user's target interactions by time
   (``ceil(test_ratio * n)``, only for users with at least two target interactions; ties in time are broken by
   item id so the split is deterministic).
2. **Scarcity**: a seeded random share ``fraction`` of the remaining (training) interactions is kept; this
   simulates a new, data-poor domain. The test set does not depend on ``fraction`` or the seed.
3. **Validation**: per user, the last ``val_ratio`` of the kept training interactions by time (users with at
   least two kept interactions), used for early stopping and source selection.

**Time safety of source models**: a source model may only see a user's source interactions that happened
strictly before that user's first target *test* interaction (``source_cutoffs``). Because the test set does not
depend on fraction or seed, source models trained for one target domain serve every fraction and seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from data_contracts.columns import DOMAIN, ITEM_ID, TIMESTAMP, USER_ID
from models.config import SplitConfig

Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)

_RANK = "_rank_in_user"


class InsufficientDataError(ValueError):
    """The target domain has too little data to train, validate and test on."""

_COUNT = "_n_in_user"


def temporal_user_split(
    interactions: pl.DataFrame, *, holdout_ratio: float, min_interactions: int = 2
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split each user's interactions into (earlier, later) by time.

    The later part holds ``ceil(holdout_ratio * n)`` interactions of every user with at least
    ``min_interactions`` interactions; other users keep everything in the earlier part.

    Args:
        interactions: frame with ``user_id``, ``item_id`` and ``timestamp``.
        holdout_ratio: share of each user's interactions held out, in (0, 1).
        min_interactions: users with fewer interactions contribute nothing to the later part.

    Returns:
        ``(earlier, later)``; both keep the input columns, sorted by user then time.

    Raises:
        ValueError: if ``holdout_ratio`` is not in (0, 1).
    """
    if not 0.0 < holdout_ratio < 1.0:
        raise ValueError(f"holdout_ratio must be in (0, 1), got {holdout_ratio}")
    ranked = interactions.sort([USER_ID, TIMESTAMP, ITEM_ID]).with_columns(
        pl.int_range(pl.len()).over(USER_ID).alias(_RANK),
        pl.len().over(USER_ID).alias(_COUNT),
    )
    n_holdout = (pl.col(_COUNT).cast(pl.Float64) * holdout_ratio).ceil().cast(pl.Int64)
    is_later = (pl.col(_COUNT) >= min_interactions) & (pl.col(_RANK) >= pl.col(_COUNT) - n_holdout)
    later = ranked.filter(is_later).drop(_RANK, _COUNT)
    earlier = ranked.filter(~is_later).drop(_RANK, _COUNT)
    return earlier, later


def sample_fraction(interactions: pl.DataFrame, *, fraction: float, seed: int) -> pl.DataFrame:
    """Keep a seeded random share of the interactions (rounded down, at least one row when non-empty).

    Raises:
        ValueError: if ``fraction`` is not in (0, 1].
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0 or interactions.is_empty():
        return interactions
    n = max(1, int(interactions.height * fraction))
    # Sort first so the sample depends only on the data and the seed, not on input row order.
    ordered = interactions.sort([USER_ID, TIMESTAMP, ITEM_ID])
    return ordered.sample(n=n, seed=seed, shuffle=False).sort([USER_ID, TIMESTAMP, ITEM_ID])


@dataclass(frozen=True)
class TargetSplit:
    """The frames of one onboarding: target train/val/test, the target catalogue and the source cutoffs."""

    domain: str
    train: pl.DataFrame
    val: pl.DataFrame
    test: pl.DataFrame
    catalogue: pl.DataFrame  # item_id (+ title, genres) of every item of the target domain
    cutoffs: pl.DataFrame  # user_id, cutoff: first target test timestamp per user
    train_full_size: int

    def summary(self) -> dict[str, int | str]:
        """Row and user counts, for logging."""
        return {
            "target_domain": self.domain,
            "train_full_interactions": self.train_full_size,
            "train_interactions": self.train.height,
            "val_interactions": self.val.height,
            "test_interactions": self.test.height,
            "train_users": self.train[USER_ID].n_unique(),
            "val_users": self.val[USER_ID].n_unique(),
            "test_users": self.test[USER_ID].n_unique(),
            "catalogue_items": self.catalogue.height,
            "train_items": self.train[ITEM_ID].n_unique(),
        }


def split_target_domain(
    interactions: pl.DataFrame,
    items: pl.DataFrame,
    *,
    domain: str,
    fraction: float,
    seed: int,
    test_ratio: float = 0.2,
    val_ratio: float = 0.2,
    min_users: int = 5,
) -> TargetSplit:
    """Split the target ``domain`` into train/val/test (see the module docstring).

    Raises:
        ValueError: if the domain has no items or no interactions.
        InsufficientDataError: if the train, validation or test set would have fewer than ``min_users`` users.
    """
    catalogue = items.filter(pl.col(DOMAIN) == domain).sort(ITEM_ID)
    if catalogue.is_empty():
        known = sorted(items[DOMAIN].drop_nulls().unique().to_list())
        raise ValueError(f"target domain {domain!r} has no items; known domains: {known}")
    target = interactions.join(catalogue.select(ITEM_ID), on=ITEM_ID, how="semi")
    if target.is_empty():
        raise ValueError(f"target domain {domain!r} has no interactions")
    train_full, test = temporal_user_split(target, holdout_ratio=test_ratio)
    kept = sample_fraction(train_full, fraction=fraction, seed=seed)
    train, val = temporal_user_split(kept, holdout_ratio=val_ratio)
    for part, frame, minimum, hint in (
        ("test", test, min_users, "users with at least two target interactions"),
        ("validation", val, min_users, f"users with at least two of the {kept.height} kept training "
                                       "interactions; raise the target fraction"),
        ("training", train, min_users, "raise the target fraction"),
    ):
        users = frame[USER_ID].n_unique()
        if users < minimum:
            raise InsufficientDataError(
                f"target domain {domain!r}: the {part} set has {users} user(s), fewer than the minimum {minimum} "
                f"({target.height} interactions of {target[USER_ID].n_unique()} users in the domain; it needs "
                f"{hint})"
            )
    return TargetSplit(
        domain=domain,
        train=train,
        val=val,
        test=test,
        catalogue=catalogue,
        cutoffs=source_cutoffs(test),
        train_full_size=train_full.height,
    )


def split_with(interactions: pl.DataFrame, items: pl.DataFrame, *, domain: str, config: SplitConfig) -> TargetSplit:
    """:func:`split_target_domain` with the settings of a :class:`~models.config.SplitConfig`."""
    return split_target_domain(interactions, items, domain=domain, fraction=config.fraction, seed=config.seed,
                               test_ratio=config.test_ratio, val_ratio=config.val_ratio, min_users=config.min_users)


def source_cutoffs(test: pl.DataFrame) -> pl.DataFrame:
    """Per user, the time of the first target test interaction (``user_id``, ``cutoff``)."""
    return test.group_by(USER_ID).agg(pl.col(TIMESTAMP).min().alias("cutoff")).sort(USER_ID)


def _beside(frame: pl.DataFrame | pl.LazyFrame, other: pl.DataFrame) -> pl.DataFrame | pl.LazyFrame:
    """``other`` lazy when ``frame`` is, to be joined with it."""
    return other.lazy() if isinstance(frame, pl.LazyFrame) else other


def time_safe_source(interactions: Frame, cutoffs: pl.DataFrame) -> Frame:
    """Drop every interaction at or after its user's cutoff; users without a cutoff keep all of theirs (in
    memory, or lazily over files on disk)."""
    lazy = isinstance(interactions, pl.LazyFrame)  # a streaming join checks nothing: cutoffs are one row per user
    joined = interactions.join(_beside(interactions, cutoffs), on=USER_ID, how="left",
                               **({} if lazy else {"validate": "m:1"}))
    return joined.filter(pl.col("cutoff").is_null() | (pl.col(TIMESTAMP) < pl.col("cutoff"))).drop("cutoff")


def recency_ranks(interactions: pl.DataFrame) -> np.ndarray:
    """Each interaction's place in its user's history counted back from the most recent (0; then 1, 2, ...), in
    the frame's row order; interactions at the same time share the mean of their places (many are logged in the
    same second), so no order of rows or ids decides between them."""
    ranks = pl.col(TIMESTAMP).rank("average", descending=True).over(USER_ID) - 1.0
    return interactions.select(ranks.cast(pl.Float32)).to_series().to_numpy()  # halves are exact to 2^23


def other_domains(items: pl.DataFrame, domain: str) -> list[str]:
    """Every domain of ``items`` but ``domain``: what the joint peers learn from."""
    return items.filter(pl.col(DOMAIN) != domain)[DOMAIN].unique().sort().to_list()


def source_interactions(
    interactions: Frame,
    items: pl.DataFrame,
    *,
    domains: list[str],
    cutoffs: pl.DataFrame | None,
) -> Frame:
    """Interactions of the source ``domains``, made time-safe with ``cutoffs`` when given (a frame, or a lazy
    scan)."""
    source_items = items.filter(pl.col(DOMAIN).is_in(domains)).select(ITEM_ID)
    frame = interactions.join(_beside(interactions, source_items), on=ITEM_ID, how="semi")
    return time_safe_source(frame, cutoffs) if cutoffs is not None else frame
