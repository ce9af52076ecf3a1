"""Turn a registered source (model + profile) into a candidate for one target split.

:func:`prepare_source` aligns the source model to the target's ids (:mod:`models.transfer.alignment`), embeds
both catalogues' item texts in one space (:mod:`models.data.text`) and computes every similarity signal except
the probe (:mod:`models.selection.similarity`); the caller then runs the probe with
:func:`models.transfer.recipes.zero_shot_model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import polars as pl

from data_contracts.columns import DOMAIN, ITEM_ID
from models.data.datasets import Dataset
from models.data.text import EmbedderName, TextEmbeddings, embed_minilm, embed_pair, resolve_embedder
from models.factors import FactorModel, index_of
from models.selection.profiles import DomainProfile, build_profile, item_keys
from models.selection.similarity import candidate_signals
from models.split import TargetSplit, source_interactions
from models.transfer.alignment import AlignedSource, ItemMatch, align_source, interactions_on_target, item_mapping
from models.transfer.init import ItemText


def profile_embedder(name: EmbedderName, cache: Path | None = None) -> tuple[str, object] | None:
    """What a stored profile caches: MiniLM vectors (corpus-independent; with ``cache``, a folder of catalogues
    embedded before: :func:`models.data.text.embed_minilm`) or nothing (hashed TF-IDF is recomputed from the
    stored texts, its idf depends on the pair compared)."""
    return ("minilm", partial(embed_minilm, cache=cache)) if resolve_embedder(name) == "minilm" else None


def source_profile(interactions: pl.DataFrame, items: pl.DataFrame, *, dataset: str, domains: list[str],
                   cutoffs: pl.DataFrame | None, embedder: EmbedderName = "auto",
                   cache: Path | None = None) -> DomainProfile:
    """The profile of a source model: exactly the (time-safe) interactions and catalogue it is trained on."""
    frame = source_interactions(interactions, items, domains=domains, cutoffs=cutoffs)
    catalogue = items.filter(pl.col(DOMAIN).is_in(domains))
    return build_profile(frame, catalogue, dataset=dataset, domains=domains, embed=profile_embedder(embedder, cache))


def target_profile(split: TargetSplit, dataset: str, embedder: EmbedderName = "hashed",
                   cache: Path | None = None) -> DomainProfile:
    """The profile of the target's known data (train + validation) over its catalogue; with ``minilm`` its
    item texts are embedded once here for every candidate (read back from ``cache`` when the same catalogue
    texts were embedded before)."""
    return build_profile(pl.concat([split.train, split.val]), split.catalogue, dataset=dataset,
                         domains=[split.domain], embed=profile_embedder(embedder, cache))


@dataclass(frozen=True)
class PreparedSource:
    """A source ready to probe and fine-tune on one target."""

    aligned: AlignedSource
    text: ItemText
    embeddings: TextEmbeddings | None
    signals: dict[str, float]

    @property
    def model(self) -> FactorModel:
        return self.aligned.model


def _rows(profile_ids: pl.Series, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``vectors`` (rows of ``profile_ids``) rearranged to ``ids`` (zero rows where unknown)."""
    pos = index_of(profile_ids.to_numpy().astype(object), ids)
    out = np.zeros((len(ids), vectors.shape[1]), dtype=np.float32)
    out[pos >= 0] = vectors[pos[pos >= 0]]
    return out


def prepare_source(
    source: FactorModel,
    profile: DomainProfile,
    split: TargetSplit,
    target: DomainProfile,
    *,
    item_match: ItemMatch,
    shared_users: bool,
    embedder: EmbedderName,
) -> PreparedSource:
    """Align ``source`` to the target, embed item texts, compute the signals (see the module docstring)."""
    mapping = item_mapping(profile.items, target.items, how=item_match)
    aligned = align_source(source, mapping, shared_users=shared_users)
    embeddings = embed_pair(profile.items["text"].to_list(), target.items["text"].to_list(), embedder=embedder,
                            source_cache=(profile.embedder, profile.embeddings),
                            target_cache=(target.embedder, target.embeddings))
    text = ItemText(  # the fine-tuning config decides whether (and how) content is used
        source=_rows(profile.items[ITEM_ID], source.item_ids, embeddings.source),
        target=_rows(target.items[ITEM_ID], split.catalogue[ITEM_ID].to_numpy().astype(object), embeddings.target),
    )
    signals = candidate_signals(aligned.model, split, profile, target, embeddings, shared_users=shared_users)
    signals["matched_items"] = float(aligned.matched_items)
    return PreparedSource(aligned, text, embeddings, signals)


def other_on_target(other: Dataset, catalogue: pl.DataFrame, *, item_match: ItemMatch,
                    shared_users: bool) -> pl.DataFrame:
    """The interactions of ``other`` (another dataset) in the target's id space: the target ``catalogue``'s items
    matched as the sources' items are (``item_match``: by id, by ``Title (Year)`` key, or none) under their target
    ids; its own items and, unless ``shared_users``, its users in a namespace of their own
    (:func:`models.transfer.alignment.interactions_on_target`). Empty where neither an item nor a user is shared:
    nothing connects the two then."""
    keyed = [items.select(ITEM_ID, key=item_keys(items)) for items in (other.items, catalogue)]
    mapping = item_mapping(*keyed, how=item_match)
    if mapping.is_empty() and not shared_users:
        return other.interactions.clear()
    return interactions_on_target(other.interactions, mapping, shared_users=shared_users)
