"""Domain-similarity signals between a source model and a target split, and the candidate ranking.

Signals (all computed from the source model's vocabularies, no raw source data needed):

* ``user_jaccard``: |source users ∩ target users| / |source users ∪ target users|.
* ``user_coverage``: share of target users (train + validation) the source model knows.
* ``item_jaccard`` / ``item_coverage``: the same for items (non-zero when catalogues overlap).
* ``zero_shot_val_ndcg_at_10``: NDCG@10 on the target validation set of the source model carried over to
  the target (new items initialised, no fine-tuning). This is a direct measurement of usefulness, and it
  decides the ranking: overlap alone is a poor predictor of transfer (a domain can share most users and
  still carry little taste information about the target).
"""

from __future__ import annotations

import polars as pl

from data_contracts.columns import ITEM_ID, USER_ID
from models.factors import FactorModel
from models.split import TargetSplit

PROBE = "zero_shot_val_ndcg_at_10"


def _jaccard(a: set[str], b: set[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def overlap_signals(source: FactorModel, split: TargetSplit) -> dict[str, float]:
    """User and item overlap between ``source`` and the target's known (train + validation) data."""
    source_users = set(source.user_ids.tolist())
    source_items = set(source.item_ids.tolist())
    target_users = set(pl.concat([split.train, split.val])[USER_ID].unique().to_list())
    target_items = set(split.catalogue[ITEM_ID].to_list())
    return {
        "user_jaccard": _jaccard(source_users, target_users),
        "user_coverage": len(source_users & target_users) / max(len(target_users), 1),
        "item_jaccard": _jaccard(source_items, target_items),
        "item_coverage": len(source_items & target_items) / max(len(target_items), 1),
    }


def rank_candidates(rows: list[dict[str, float | str]]) -> tuple[pl.DataFrame, str]:
    """Rank candidates: by the zero-shot probe, then user coverage, then item coverage, then name.

    Args:
        rows: one dict per candidate with ``name``, the overlap signals and :data:`PROBE`.

    Returns:
        The ranked table (with ``rank`` and ``score`` = the probe) and a one-line rationale.

    Raises:
        ValueError: when there is no candidate.
    """
    if not rows:
        raise ValueError("no source candidate to rank")
    table = (
        pl.DataFrame(rows)
        .with_columns(pl.col(PROBE).alias("score"))
        .sort(["score", "user_coverage", "item_coverage", "name"], descending=[True, True, True, False])
        .with_row_index("rank", offset=1)
    )
    best = table.row(0, named=True)
    rationale = f"{best['name']} has the highest zero-shot validation NDCG@10 ({best['score']:.4f})"
    if table.height > 1:
        runner = table.row(1, named=True)
        rationale += f", ahead of {runner['name']} ({runner['score']:.4f})"
        if best["user_jaccard"] < runner["user_jaccard"]:
            rationale += " although its user overlap is lower"
    return table, rationale
