"""Every MLflow name transferrec uses: experiments, registered models, run names and aliases."""


from __future__ import annotations

from models.selection.sources import slug

#: The experiment of the source models (pretraining).
SOURCES_EXPERIMENT = "transferrec-sources"


#: Prefix of an onboarding's parent run name (``transferrec compare`` finds onboardings by it).
ONBOARD_RUN_PREFIX = "onboard:"


def experiment_name(domain: str) -> str:
    """The MLflow experiment of a target domain's onboardings: ``transferrec-<domain>``."""
    return f"transferrec-{slug(domain)}"


def curve_experiment_name(domain: str) -> str:
    """The experiment of a domain's data-efficiency curves: ``transferrec-<domain>-curve``."""
    return f"transferrec-{slug(domain)}-curve"


def registered_model_name(domain: str) -> str:
    """The registered model served for a target domain: ``transferrec-<domain>``."""
    return f"transferrec-{slug(domain)}"


#: Prefix of every source model's registered name (the catalogue lists them by it).
SOURCE_PREFIX = "transferrec-source-"


def source_model_name(dataset: str, target: str | None, candidate: str) -> str:
    """Registered-model name of a source model trained time-safe for ``target`` (``None``: for any target,
    when the source comes from another dataset)."""
    if target is None:
        return f"{SOURCE_PREFIX}{slug(dataset)}-{slug(candidate)}"
    return f"{SOURCE_PREFIX}{slug(dataset)}-for-{slug(target)}-{slug(candidate)}"


def onboard_run_name(domain: str, fraction: float, seed: int, *, out_of_core: bool = False) -> str:
    """The parent run of an onboarding: ``onboard:<domain>:f<fraction>:s<seed>[:out-of-core]``."""
    return f"{ONBOARD_RUN_PREFIX}{domain}:f{fraction}:s{seed}" + (":out-of-core" if out_of_core else "")


def source_run_name(source: str, target: str) -> str:
    """The run that trains a source model: ``source:<candidate>:for:<target>``."""
    return f"source:{source}:for:{target}"


def probe_run_name(source: str) -> str:
    """A candidate's zero-shot probe, a child of the onboarding's run: ``probe:<candidate>``."""
    return f"probe:{source}"


def curve_run_name(domain: str) -> str:
    return f"curve:{domain}"


def curve_point_run_name(fraction: float) -> str:
    return f"fraction:{fraction}"


#: Registry aliases: the served version, and the newest registered one.
CHAMPION = "champion"
CHALLENGER = "challenger"
#: Artifact path of a logged model.
MODEL_ARTIFACT = "model"
