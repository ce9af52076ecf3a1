"""Source candidates for a target domain and their identity (name and fingerprint)."""

from __future__ import annotations

import hashlib
import json
import re

import polars as pl

from data_contracts.columns import DOMAIN
from models.config import ModelConfig, TrainConfig
from models.selection.profiles import PROFILE_VERSION

ALL_OTHERS = "all-others"
ALL_DOMAINS = "all-domains"
COMBINE = "+"


def source_candidates(
    domain_stats: pl.DataFrame,
    target: str,
    *,
    candidates: tuple[str, ...] | None,
    top_single: int,
    all_others: bool,
    combinations: tuple[str, ...] = (),
    same_dataset: bool = True,
) -> dict[str, list[str]]:
    """Candidate name -> its source domains.

    Within one dataset (``same_dataset``) the target domain is never a source: single-domain candidates
    are ``candidates`` when given, else the ``top_single`` largest other domains, and ``all-others`` (every
    domain but the target) is added when ``all_others``. From another dataset every domain may be a
    source: the singles are the ``top_single`` largest plus the target's namesake when it exists there, and
    the all-domain candidate is ``all-domains``. Each of ``combinations`` (``"A+B"``) adds a candidate over
    those domains.

    Raises:
        ValueError: when a named candidate is not an allowed source domain, or nothing is left.
    """
    names = domain_stats[DOMAIN].to_list()
    others = [d for d in names if d != target] if same_dataset else names
    where = "other domains of the data" if same_dataset else "domains of the source dataset"

    def known(domains: list[str]) -> list[str]:
        unknown = [c for c in domains if c not in others]
        if unknown:
            raise ValueError(f"source domains {unknown} are not {where}; choose from {others}")
        return domains

    if candidates is not None:
        singles = known(list(candidates))
    else:
        singles = others[:top_single]
        if not same_dataset and target in others and target not in singles:
            singles.append(target)
    result = {name: [name] for name in singles}
    for combination in combinations:
        parts = known([p.strip() for p in combination.split(COMBINE) if p.strip()])
        result[COMBINE.join(parts)] = parts
    if all_others and others:
        result[ALL_OTHERS if same_dataset else ALL_DOMAINS] = others
    if not result:
        raise ValueError(f"no source domain besides {target!r}")
    return result


def slug(text: str) -> str:
    """Lower-case, ``[a-z0-9-]`` only (for model and experiment names)."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def source_fingerprint(
    *,
    data_fingerprint: str,
    target: str | None,
    test_ratio: float | None,
    domains: list[str],
    model: ModelConfig,
    train: TrainConfig,
    val_ratio: float,
    seed: int,
) -> str:
    """Hash of everything a source model (and its stored profile) depends on; equal fingerprints mean the
    model can be reused. ``target``/``test_ratio`` are ``None`` when no target period is hidden from it."""
    payload = json.dumps({
        "profile": PROFILE_VERSION,
        "data": data_fingerprint, "target": target, "test_ratio": test_ratio, "domains": sorted(domains),
        "model": model.model_dump(), "train": _train_identity(train), "val_ratio": val_ratio, "seed": seed,
    }, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


HARDWARE_FIELDS = {"accelerator", "devices", "strategy", "num_nodes"}
#: TrainConfig fields added after source models were first registered (the data-sized batch among them).
LATER_FIELDS = {"max_val_users", "steps_per_epoch", "max_batch_size", "min_negatives", "sized_patience",
                "row_update_ratio"}


def _train_identity(train: TrainConfig) -> dict[str, object]:
    """The training settings that make a model what it is: where it ran is not one of them. The hardware
    fields are written as the fixed values models registered before they were configurable carry, so those
    models keep their fingerprints; fields added later (:data:`LATER_FIELDS`) count only away from their
    defaults, for the same reason."""
    identity = {**train.model_dump(exclude=HARDWARE_FIELDS | LATER_FIELDS), "accelerator": "cpu", "devices": 1}
    defaults = TrainConfig.model_fields
    identity.update({name: getattr(train, name) for name in sorted(LATER_FIELDS)
                     if getattr(train, name) != defaults[name].default})
    return identity
