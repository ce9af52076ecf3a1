"""Put a source model into the target's id space: the three transfer regimes.

* **Shared users** (genres of one catalogue): user ids mean the same person on both sides; item ids match
  by id (``item_match="id"``), and the target's items are new.
* **Shared items, disjoint users** (ML-1M -> ML-100k): the same movies under other ids; items match by
  their ``Title (Year)`` key (``item_match="title"``); users of the source are other people, so their ids
  are moved into a namespace of their own (``shared_users=False``) even when the numbers collide.
* **Neither**: no item matches (``item_match="none"`` or simply no overlap) and no user is shared; only
  the item texts connect the domains (content transfer in :mod:`models.transfer.init`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl

from data_contracts.columns import ITEM_ID, USER_ID
from models.factors import FactorModel

ItemMatch = Literal["id", "title", "none"]
SOURCE_NAMESPACE = "source::"


@dataclass(frozen=True)
class AlignedSource:
    """A source model re-keyed to the target's ids, and how much matched."""

    model: FactorModel
    matched_items: int


def item_mapping(source_items: pl.DataFrame, target_items: pl.DataFrame, *, how: ItemMatch) -> pl.DataFrame:
    """Pairs ``source_id -> target_id`` of the items both catalogues hold (one-to-one).

    Args:
        source_items / target_items: frames with ``item_id`` and ``key`` (see
            :func:`models.selection.profiles.item_keys`).
        how: ``id`` (same id), ``title`` (same key) or ``none`` (nothing matches).
    """
    empty = pl.DataFrame(schema={"source_id": pl.String, "target_id": pl.String})
    if how == "none":
        return empty
    on = ITEM_ID if how == "id" else "key"
    left = source_items.select(pl.col(ITEM_ID).alias("source_id"), pl.col(on).alias("_k")).unique("_k", keep="first")
    right = target_items.select(pl.col(ITEM_ID).alias("target_id"), pl.col(on).alias("_k")).unique("_k", keep="first")
    pairs = left.join(right, on="_k", how="inner").drop("_k")
    # One-to-one: a key duplicated on either side must not map two items onto one.
    return pairs.unique("source_id", keep="first").unique("target_id", keep="first").sort("target_id")


def align_source(source: FactorModel, mapping: pl.DataFrame, *, shared_users: bool) -> AlignedSource:
    """``source`` with matched items renamed to their target ids, the rest (and, unless ``shared_users``,
    every user) moved into :data:`SOURCE_NAMESPACE` so no id collides by accident."""
    ids = pl.DataFrame({"source_id": pl.Series(source.item_ids, dtype=pl.String)})
    renamed = ids.join(mapping, on="source_id", how="left", maintain_order="left")
    item_ids = renamed.select(
        pl.coalesce(pl.col("target_id"), pl.lit(SOURCE_NAMESPACE) + pl.col("source_id"))
    ).to_series().to_numpy().astype(object)
    user_ids = source.user_ids if shared_users else np.array(
        [SOURCE_NAMESPACE + str(u) for u in source.user_ids], dtype=object)
    model = FactorModel(user_ids, item_ids, source.user_factors, source.item_factors, source.item_bias,
                        kind=source.kind, meta=source.meta)
    return AlignedSource(model, int(renamed["target_id"].is_not_null().sum()))


def interactions_on_target(interactions: pl.DataFrame, mapping: pl.DataFrame, *, shared_users: bool) -> pl.DataFrame:
    """Another catalogue's ``interactions`` in the target's id space, as :func:`align_source` puts its models:
    the items ``mapping`` matches (:func:`item_mapping`) under their target ids, the others and, unless
    ``shared_users``, every user moved into :data:`SOURCE_NAMESPACE` (other people, even where the numbers
    collide). What the joint peers learn from when the sources come from another dataset
    (:meth:`models.transfer.joint.JointTrain.of_other_dataset`)."""
    renamed = (interactions.join(mapping.rename({"source_id": ITEM_ID}), on=ITEM_ID, how="left",
                                 maintain_order="left")
               .with_columns(pl.coalesce(pl.col("target_id"), pl.lit(SOURCE_NAMESPACE) + pl.col(ITEM_ID))
                             .alias(ITEM_ID)))
    if not shared_users:
        renamed = renamed.with_columns((pl.lit(SOURCE_NAMESPACE) + pl.col(USER_ID).cast(pl.String)).alias(USER_ID))
    return renamed.select(interactions.columns)
