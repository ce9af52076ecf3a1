"""Source candidates for a target domain and their identity (name and fingerprint)."""

from __future__ import annotations

import hashlib
import json
import re

import polars as pl

from data_contracts.columns import DOMAIN
from models.config import ModelConfig, TrainConfig

ALL_OTHERS = "all-others"


def source_candidates(
    domain_stats: pl.DataFrame,
    target: str,
    *,
    candidates: tuple[str, ...] | None,
    top_single: int,
    all_others: bool,
) -> dict[str, list[str]]:
    """Candidate name -> its source domains.

    Single-domain candidates are ``candidates`` when given, else the ``top_single`` largest domains other
    than ``target``; ``all-others`` (every domain but the target) is added when ``all_others``.

    Raises:
        ValueError: when a named candidate is not a domain, is the target, or nothing is left.
    """
    others = [d for d in domain_stats[DOMAIN].to_list() if d != target]
    if candidates is not None:
        unknown = [c for c in candidates if c not in others]
        if unknown:
            raise ValueError(f"source domains {unknown} are not other domains of the data; choose from {others}")
        singles = list(candidates)
    else:
        singles = others[:top_single]
    result = {name: [name] for name in singles}
    if all_others and others:
        result[ALL_OTHERS] = others
    if not result:
        raise ValueError(f"no source domain besides {target!r}")
    return result


def slug(text: str) -> str:
    """Lower-case, ``[a-z0-9-]`` only (for model and experiment names)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def source_model_name(dataset: str, target: str, candidate: str) -> str:
    """Registered-model name of a source model trained time-safe for ``target``."""
    return f"transferrec-source-{slug(dataset)}-for-{slug(target)}-{slug(candidate)}"


def source_fingerprint(
    *,
    data_fingerprint: str,
    target: str,
    test_ratio: float,
    domains: list[str],
    model: ModelConfig,
    train: TrainConfig,
    val_ratio: float,
    seed: int,
) -> str:
    """Hash of everything a source model depends on; equal fingerprints mean the model can be reused."""
    payload = json.dumps({
        "data": data_fingerprint, "target": target, "test_ratio": test_ratio, "domains": sorted(domains),
        "model": model.model_dump(), "train": train.model_dump(), "val_ratio": val_ratio, "seed": seed,
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
