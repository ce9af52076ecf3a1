"""Contract rules that need more than one row at a time: onboarding volume and single-interaction users."""

from __future__ import annotations

import polars as pl

from data_contracts.columns import DOMAIN, ITEM_ID, USER_ID
from data_contracts.report import RuleFailure


def check_target_volume(
    interactions: pl.DataFrame | pl.LazyFrame,
    items: pl.DataFrame | pl.LazyFrame,
    *,
    domain: str,
    min_interactions: int,
    min_users: int,
    min_items: int,
) -> list[RuleFailure]:
    """Minimum volume of the target domain for an onboarding to be measurable (table-level failures); lazy
    frames are counted with the streaming engine."""
    catalogue = items.lazy().filter(pl.col(DOMAIN) == domain).select(ITEM_ID)
    target = interactions.lazy().join(catalogue, on=ITEM_ID, how="semi")
    counts = pl.concat([target.select(pl.len().alias("interactions"), pl.col(USER_ID).n_unique().alias("users"),
                                      pl.col(ITEM_ID).n_unique().alias("items")),
                        catalogue.select(pl.len().alias("catalogue"))], how="horizontal").collect(engine="streaming")
    observed = counts.row(0, named=True)
    minimum = {"interactions": min_interactions, "users": min_users, "items": min_items}
    return [
        RuleFailure("interactions", DOMAIN, f"target domain has at least {minimum[what]} {what}", "volume",
                    None, detail=f"domain {domain!r} has {observed[what]} {what}"
                                 + (" with interactions" if what == "items" else "")
                                 + f" ({observed['catalogue']} items in its catalogue)")
        for what in ("interactions", "users", "items") if observed[what] < minimum[what]
    ]


def check_single_interaction_users(interactions: pl.DataFrame | pl.LazyFrame, *, max_share: float
                                   ) -> list[RuleFailure]:
    """Warn when more than ``max_share`` of the users have a single interaction (little to learn from)."""
    counts = interactions.lazy().group_by(USER_ID).len().collect(engine="streaming")
    if counts.is_empty():
        return []
    single = counts.filter(pl.col("len") == 1)
    share = single.height / counts.height
    if share <= max_share:
        return []
    return [RuleFailure("interactions", USER_ID, f"at most {max_share:.0%} of users have a single interaction",
                        "user activity", single.height, single[USER_ID].sort().head(10).to_list(),
                        detail=f"{share:.1%} of {counts.height} users", severity="warning")]
