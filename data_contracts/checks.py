"""Contract rules that need more than one row at a time: onboarding volume and single-interaction users."""

from __future__ import annotations

import polars as pl

from data_contracts.columns import DOMAIN, ITEM_ID, USER_ID
from data_contracts.report import RuleFailure


def check_target_volume(
    interactions: pl.DataFrame,
    items: pl.DataFrame,
    *,
    domain: str,
    min_interactions: int,
    min_users: int,
    min_items: int,
) -> list[RuleFailure]:
    """Minimum volume of the target domain for an onboarding to be measurable (table-level failures)."""
    catalogue = items.filter(pl.col(DOMAIN) == domain)
    target = interactions.join(catalogue.select(ITEM_ID), on=ITEM_ID, how="semi")
    observed = {"interactions": target.height, "users": target[USER_ID].n_unique(),
                "items": target[ITEM_ID].n_unique()}
    minimum = {"interactions": min_interactions, "users": min_users, "items": min_items}
    return [
        RuleFailure("interactions", DOMAIN, f"target domain has at least {minimum[what]} {what}", "volume",
                    None, detail=f"domain {domain!r} has {observed[what]} {what}"
                                 + (" with interactions" if what == "items" else "")
                                 + f" ({catalogue.height} items in its catalogue)")
        for what in ("interactions", "users", "items") if observed[what] < minimum[what]
    ]


def check_single_interaction_users(interactions: pl.DataFrame, *, max_share: float) -> list[RuleFailure]:
    """Warn when more than ``max_share`` of the users have a single interaction (little to learn from)."""
    counts = interactions.group_by(USER_ID).len()
    if counts.is_empty():
        return []
    single = counts.filter(pl.col("len") == 1)
    share = single.height / counts.height
    if share <= max_share:
        return []
    return [RuleFailure("interactions", USER_ID, f"at most {max_share:.0%} of users have a single interaction",
                        "user activity", single.height, single[USER_ID].head(10).to_list(),
                        detail=f"{share:.1%} of {counts.height} users", severity="warning")]
