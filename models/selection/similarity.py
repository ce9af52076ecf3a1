"""Domain-similarity signals between a source (model + profile) and a target, and the ranked decision.

Signals of each candidate (all from the source model and its profile; no raw source data needed):

* ``user_jaccard``: |source users ∩ target users| / |source users ∪ target users| (target = train + val).
* ``user_coverage``: share of target users the source model knows.
* ``item_jaccard`` / ``item_coverage``: the same for items, after matching (by id or title key).
* ``content_similarity``: cosine of the mean item-text embeddings of source and target catalogues.
* ``content_coverage``: mean over target items of the text similarity to their nearest source item.
* ``popularity_gini_gap``, ``activity_distance``, ``rating_distance``, ``behaviour_distance``: how
  differently the domains behave (:func:`models.selection.profiles.behaviour_distances`).
* ``user_support``: mean over target users of log2(1 + their interactions in the source), 0 for users it
  does not know: how much evidence backs the user vectors it hands over (with frozen users, fine-tuning
  cannot improve them, so they bound the final quality).
* ``zero_shot_val_ndcg_at_10`` (the *probe*): NDCG@10 on the target validation set of the source model
  carried over to the target (new items initialised, no fine-tuning).

The combined score is a weighted sum of signals on a common scale (:data:`DEFAULT_WEIGHTS`): the probe and
the user support relative to the best candidate's (1.0 = best), the others as they are (each in [0, 1]). The probe
dominates because it measures usefulness directly (overlap alone is a poor predictor: a domain can share
most users and still carry little taste information about the target). User support adds what the probe
cannot see: fine-tuning retrains items, not the (frozen) transferred users, so the source with more
evidence per user fine-tunes better even when its zero-shot probe is a few percent lower. Its weight
(0.2) is the smallest that picked the best fine-tuned source on every ML-1M Horror and Crime target of
``bench/selection.py`` (tuning set); Sci-Fi, Thriller and Adventure are held out. The tiny weights of
the other signals only break near-ties.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import polars as pl

from data_contracts.columns import ITEM_ID, USER_ID
from models.data.text import TextEmbeddings, centroid_similarity, nearest_coverage
from models.factors import FactorModel
from models.selection.profiles import DomainProfile, behaviour_distances, user_support
from models.split import TargetSplit

PROBE = "zero_shot_val_ndcg_at_10"
PROBE_RELATIVE = "probe_relative"
SUPPORT_RELATIVE = "support_relative"
SIGNALS = (
    "user_jaccard", "user_coverage", "item_jaccard", "item_coverage", "content_similarity", "content_coverage",
    "popularity_gini_gap", "activity_distance", "rating_distance", "behaviour_distance", "user_support", PROBE,
)  # fmt: skip
#: Weight of each signal in the combined score (``probe_relative`` = probe / best probe).
DEFAULT_WEIGHTS: dict[str, float] = {
    PROBE_RELATIVE: 1.0,
    SUPPORT_RELATIVE: 0.2,
    "user_coverage": 0.02,
    "item_coverage": 0.02,
    "content_coverage": 0.01,
    "behaviour_distance": -0.02,
}
_LABELS = {
    PROBE_RELATIVE: "the zero-shot probe", SUPPORT_RELATIVE: "user support", "user_coverage": "user coverage",
    "item_coverage": "item coverage",
    "content_coverage": "content coverage", "content_similarity": "content similarity",
    "behaviour_distance": "behaviour distance", "user_jaccard": "user Jaccard", "item_jaccard": "item Jaccard",
}


def _jaccard(a: set[str], b: set[str]) -> float:
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def overlap_signals(source: FactorModel, split: TargetSplit) -> dict[str, float]:
    """User and item overlap between ``source`` (in the target's id space) and the target's known data."""
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


def content_signals(text: TextEmbeddings | None) -> dict[str, float]:
    """Centroid cosine and nearest-item coverage of the item texts (0 without embeddings)."""
    if text is None:
        return {"content_similarity": 0.0, "content_coverage": 0.0}
    return {"content_similarity": centroid_similarity(text.source, text.target),
            "content_coverage": nearest_coverage(text.target, text.source)}


def candidate_signals(aligned: FactorModel, split: TargetSplit, source: DomainProfile, target: DomainProfile,
                      text: TextEmbeddings | None, *, shared_users: bool) -> dict[str, float]:
    """Every signal but the probe (see the module docstring)."""
    target_users = pl.concat([split.train, split.val])[USER_ID].unique().to_list()
    return {**overlap_signals(aligned, split), **content_signals(text),
            **behaviour_distances(source.stats, target.stats),
            "user_support": user_support(source, target_users) if shared_users else 0.0}


def combined_scores(table: pl.DataFrame, weights: Mapping[str, float]) -> pl.DataFrame:
    """Add ``probe_relative``, ``support_relative``, one ``contribution/<signal>`` column per weighted
    signal and ``score``."""
    def relative(column: str) -> pl.Expr:
        best = table[column].max() if column in table.columns else None
        return (pl.col(column) / best) if best and best > 0 else pl.lit(0.0)

    out = table.with_columns(relative(PROBE).alias(PROBE_RELATIVE),
                             relative("user_support").alias(SUPPORT_RELATIVE))
    unknown = sorted(set(weights) - set(out.columns))
    if unknown:
        raise ValueError(f"selection weights name unknown signals {unknown}; known: {sorted(out.columns)}")
    out = out.with_columns([(pl.col(s) * w).alias(f"contribution/{s}") for s, w in weights.items()])
    return out.with_columns(pl.sum_horizontal([f"contribution/{s}" for s in weights]).alias("score"))


def decisive_signal(best: Mapping[str, float], runner: Mapping[str, float], weights: Mapping[str, float]) -> str:
    """The signal whose weighted difference favours ``best`` over ``runner`` the most."""
    gains = {s: float(best[f"contribution/{s}"]) - float(runner[f"contribution/{s}"]) for s in weights}
    return max(gains, key=lambda s: gains[s])


def rank_candidates(rows: list[dict[str, float | str]],
                    weights: Mapping[str, float] | None = None) -> tuple[pl.DataFrame, str, str]:
    """Rank candidates by their combined score (ties: probe, user coverage, name).

    Args:
        rows: one dict per candidate with ``name``, the signals and :data:`PROBE`.
        weights: signal weights (default :data:`DEFAULT_WEIGHTS`).

    Returns:
        The ranked table (``rank``, ``score``, contributions), a one-line rationale, and the decisive signal.

    Raises:
        ValueError: when there is no candidate, or a weight names an unknown signal.
    """
    if not rows:
        raise ValueError("no source candidate to rank")
    weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
    table = (
        combined_scores(pl.DataFrame(rows), weights)
        .sort(["score", PROBE, "user_coverage", "name"], descending=[True, True, True, False])
        .with_row_index("rank", offset=1)
    )
    best = table.row(0, named=True)
    if table.height == 1:
        return table, f"{best['name']} is the only candidate (probe {best[PROBE]:.4f})", "only-candidate"
    runner = table.row(1, named=True)
    signal = decisive_signal(best, runner, weights)
    rationale = (
        f"{best['name']} scores {best['score']:.4f} ahead of {runner['name']} ({runner['score']:.4f}); decided by "
        f"{_LABELS.get(signal, signal)} (zero-shot val NDCG@10 {best[PROBE]:.4f} vs {runner[PROBE]:.4f}, "
        f"user coverage {best['user_coverage']:.2f} vs {runner['user_coverage']:.2f})"
    )
    if best["user_jaccard"] < runner["user_jaccard"]:
        rationale += "; its user overlap is lower"
    return table, rationale, signal


def kendall_tau(a: list[str], b: list[str]) -> float:
    """Kendall's tau-a between two rankings of the same names (1 = same order, -1 = reversed)."""
    position = {name: i for i, name in enumerate(b)}
    ranks = np.array([position[name] for name in a])
    n = len(ranks)
    if n < 2:
        return 1.0
    concordant = discordant = 0
    for i in range(n):
        diff = ranks[i + 1:] - ranks[i]
        concordant += int((diff > 0).sum())
        discordant += int((diff < 0).sum())
    return (concordant - discordant) / (n * (n - 1) / 2)


def settle_finalists(ranked: list[str], val: Mapping[str, float], *, margin: float) -> str:
    """The finalist to keep after fine-tuning: the best-scored one (``ranked[0]``) unless another's
    validation NDCG@10 beats it by more than ``margin`` (relative); then the best on validation."""
    first = ranked[0]
    best = max(ranked, key=lambda n: (val[n], -ranked.index(n)))
    return best if val[best] > val[first] * (1.0 + margin) else first
