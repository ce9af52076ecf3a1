"""Every MLflow name transferrec uses: experiments, registered models, run names and aliases."""


from __future__ import annotations

import hashlib
import re

from models.selection.sources import slug

#: The longest name part a user's text (a domain, a dataset, a candidate) becomes in an MLflow name.
NAME_PART_LIMIT = 60


def name_part(text: str) -> str:
    """``text`` as a part of an MLflow name or folder: :func:`slug` when it is 1-60 characters, else its first
    characters and 8 hex digits of its SHA-256 (bounded, and still one per text). Distinct texts with the same
    slug (``Garden`` / ``garden``) are told apart by the experiment's owner tag (:func:`tasks.tracking.runs.
    ensure_experiment`), not here, so that existing names stay what they were."""
    part = slug(text)
    if part and len(part) <= NAME_PART_LIMIT:
        return part
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{part[:NAME_PART_LIMIT - 9].rstrip('-')}-{digest}" if part else f"x-{digest}"


def _label(text: str) -> str:
    """``text`` in a run name: as written, cut to 100 characters (run names are for people; ids are unique)."""
    return text if len(text) <= 100 else f"{text[:90]}...{name_part(text)[-8:]}"

#: The experiment of the source models (pretraining).
SOURCES_EXPERIMENT = "transferrec-sources"


#: Prefix of an onboarding's parent run name (``transferrec compare`` finds onboardings by it).
ONBOARD_RUN_PREFIX = "onboard:"


def experiment_name(domain: str) -> str:
    """The MLflow experiment of a target domain's onboardings: ``transferrec-<domain>``."""
    return f"transferrec-{name_part(domain)}"


def curve_experiment_name(domain: str) -> str:
    """The experiment of a domain's data-efficiency curves: ``transferrec-<domain>-curve``."""
    return f"transferrec-{name_part(domain)}-curve"


def registered_model_name(domain: str) -> str:
    """The registered model served for a target domain: ``transferrec-<domain>``."""
    return f"transferrec-{name_part(domain)}"


#: Prefix of every source model's registered name (the catalogue lists them by it).
SOURCE_PREFIX = "transferrec-source-"


def source_model_name(dataset: str, target: str | None, candidate: str) -> str:
    """Registered-model name of a source model trained time-safe for ``target`` (``None``: for any target,
    when the source comes from another dataset)."""
    if target is None:
        return f"{SOURCE_PREFIX}{name_part(dataset)}-{name_part(candidate)}"
    return f"{SOURCE_PREFIX}{name_part(dataset)}-for-{name_part(target)}-{name_part(candidate)}"


def onboard_run_name(domain: str, fraction: float, seed: int, *, out_of_core: bool = False) -> str:
    """The parent run of an onboarding: ``onboard:<domain>:f<fraction>:s<seed>[:out-of-core]``."""
    return f"{ONBOARD_RUN_PREFIX}{_label(domain)}:f{fraction}:s{seed}" + (":out-of-core" if out_of_core else "")


def source_run_name(source: str, target: str) -> str:
    """The run that trains a source model: ``source:<candidate>:for:<target>``."""
    return f"source:{_label(source)}:for:{_label(target)}"


def probe_run_name(source: str) -> str:
    """A candidate's zero-shot probe, a child of the onboarding's run: ``probe:<candidate>``."""
    return f"probe:{_label(source)}"


def dataset_tag(dataset: str) -> str:
    """The model-version tag naming a dataset of its lineage: ``dataset:<name>``, with every character MLflow
    refuses in a key (``+`` of a combined candidate, ``'`` of a genre) as ``-``."""
    return "dataset:" + re.sub(r"[^A-Za-z0-9_\-. :/]", "-", dataset)


def refit_run_name(winner: str) -> str:
    """The served model refitted on all of the target's data, a child of the onboarding's run: ``refit:<winner>``."""
    return f"refit:{winner}"


def curve_run_name(domain: str) -> str:
    return f"curve:{_label(domain)}"


def curve_point_run_name(fraction: float) -> str:
    return f"fraction:{fraction}"


#: Registry aliases: the served version, and the newest registered one.
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Tags of a served version (and of its refit run): the evaluated run and logged model that vouch for it.
EVALUATED_RUN_TAG = "evaluated_run_id"
EVALUATED_MODEL_TAG = "evaluated_model"
#: Artifact path of a logged model.
MODEL_ARTIFACT = "model"
#: Artifact folder of a model's weights on a run where it is not logged as an MLflow model (``factors.npz``,
#: ``users.parquet``, ``items.parquet``, ``meta.json``: :meth:`models.factors.FactorModel.save`).
WEIGHTS_ARTIFACT = "weights"
