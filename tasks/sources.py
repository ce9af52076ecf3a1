"""Tasks that plan, find or train, and register source models."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.config import SourcesConfig
from models.data.datasets import Dataset
from models.data.fingerprint import FINGERPRINT_ALGORITHM, legacy_fingerprint
from models.factors import FactorModel
from models.selection.candidates import source_profile
from models.selection.profiles import DomainProfile
from models.selection.sources import source_candidates, source_fingerprint
from models.transfer.recipes import train_source_model
from tasks import tracking
from tasks.locks import registry_lock
from tasks.runtime import embedding_cache


@dataclass(frozen=True)
class SourceSpec:
    """One source model to find or train."""

    name: str
    domains: list[str]
    registered_name: str
    fingerprint: str
    # the fingerprint under the data fingerprint before FINGERPRINT_ALGORITHM: computed (it reads every row) only
    # when the stable one finds nothing
    legacy_fingerprint: Callable[[], str] | None = None


@dataclass(frozen=True)
class SourceModel:
    """A source model ready for transfer, with where it is registered."""

    spec: SourceSpec
    model: FactorModel
    profile: DomainProfile
    version: str
    trained_now: bool
    seconds: float


def hidden_target(target: str, *, same_dataset: bool, target_data: str | None) -> str | None:
    """The target whose test period the sources hide: within its dataset, or from another dataset of the same
    users (``target_data``, see :func:`plan_sources`); None for another dataset of other people."""
    return target if same_dataset or target_data is not None else None


@task(name="plan-sources", cache_policy=NO_CACHE)
def plan_sources(dataset: Dataset, data_fingerprint: str, target: str, test_ratio: float,
                 config: SourcesConfig, *, same_dataset: bool = True,
                 target_data: str | None = None) -> list[SourceSpec]:
    """The source candidates of ``target`` with their registry names and fingerprints.

    Sources from the target's own dataset hide the target's test period (time-safe, one set per target);
    sources from another dataset whose users are the target's (``target_data``: the target dataset's
    fingerprint, which with ``target`` and ``test_ratio`` fixes each user's cutoff) hide it too; sources from
    another dataset of other people serve every target of that dataset.
    """
    plan = source_candidates(dataset.domains(), target, candidates=config.candidates,
                             top_single=config.top_single, all_others=config.all_others,
                             combinations=config.combinations, same_dataset=same_dataset)
    hidden = hidden_target(target, same_dataset=same_dataset, target_data=target_data)
    legacy = cache(partial(legacy_fingerprint, dataset))  # finds sources registered before the stable fingerprint

    def keyed(data: str, domains: list[str]) -> str:
        data = data if target_data is None else f"{data}+{target_data}"
        return source_fingerprint(data_fingerprint=data, target=hidden, test_ratio=test_ratio if hidden else None,
                                  domains=domains, model=config.model, train=config.train, val_ratio=config.val_ratio,
                                  seed=config.seed)

    def keyed_legacy(domains: list[str]) -> str:
        return keyed(legacy(), domains)

    specs = [SourceSpec(name=name, domains=domains,
                        registered_name=tracking.source_model_name(dataset.name, hidden, name),
                        fingerprint=keyed(data_fingerprint, domains),
                        legacy_fingerprint=partial(keyed_legacy, domains))
             for name, domains in plan.items()]
    get_run_logger().info("source candidates for %s: %s", target, [s.name for s in specs])
    return specs


def _find_source(uri: str, spec: SourceSpec) -> tracking.RegisteredVersion | None:
    """The registered version of ``spec`` by its fingerprint; one registered under the legacy data fingerprint is
    found too and re-tagged with the stable one (once: later runs, on any polars version, find it directly)."""
    found = tracking.find_version(uri, spec.registered_name, tag="fingerprint", value=spec.fingerprint)
    if found is not None or spec.legacy_fingerprint is None:
        return found
    legacy = spec.legacy_fingerprint()
    found = tracking.find_version(uri, spec.registered_name, tag="fingerprint", value=legacy)
    if found is not None:
        tracking.set_version_tags(uri, spec.registered_name, found.version, {
            "fingerprint": spec.fingerprint, "fingerprint_algorithm": FINGERPRINT_ALGORITHM,
            "fingerprint_legacy": legacy})
    return found


@task(name="find-or-train-source", cache_policy=NO_CACHE)
def find_or_train_source(
    dataset: Dataset,
    cutoffs: pl.DataFrame | None,
    spec: SourceSpec,
    config: SourcesConfig,
    target: str | None,
    uri: str,
    *,
    force: bool = False,
    triggered_by: str | None = None,
    checkpoints: Path | None = None,
) -> SourceModel:
    """Reuse the registered source model with the same fingerprint, or train, log and register one with
    its domain profile (the source catalogue: selection then needs neither retraining nor raw source data).

    A source model only sees each user's interactions before that user's first target test interaction
    (``cutoffs``), so it never knows the future the target is evaluated on; ``None`` (a source from another
    dataset, no shared users) keeps all of its data. With ``checkpoints``, a killed training restarted later
    (by any flow that needs the same fingerprint) resumes from its last epoch.
    """
    # Two runs that need this source at once (a schedule and a data-landed event) train it once: the second
    # waits here, then finds it registered.
    with registry_lock(uri, f"{spec.registered_name}-{spec.fingerprint}"):
        log = get_run_logger()
        found = None if force else _find_source(uri, spec)
        if found is not None:
            log.info("reusing source %s v%s%s", spec.registered_name, found.version,
                     " (re-tagged with the stable fingerprint)" if found.tags.get("fingerprint") != spec.fingerprint
                     else "")
            model, profile = tracking.load_source(uri, spec.registered_name, found.version, str(found.run_id))
            return SourceModel(spec, model, profile, found.version, trained_now=False, seconds=0.0)
        experiment_id = tracking.ensure_experiment(uri, tracking.SOURCES_EXPERIMENT)
        target = target or "any"
        tags = {"role": "source", "target_domain": target, "source": spec.name, "dataset": dataset.name,
                "fingerprint": spec.fingerprint, "fingerprint_algorithm": FINGERPRINT_ALGORITHM}
        if triggered_by:
            tags["triggered_by_run"] = triggered_by
        started = time.perf_counter()
        with tracking.run_context(uri, experiment_id, tracking.source_run_name(spec.name, target), tags=tags) as run_id:
            tracking.log_params(uri, run_id, {
                "source_domains": ",".join(spec.domains), "target_domain": target, "val_ratio": config.val_ratio,
                "seed": config.seed, **{f"model.{k}": v for k, v in config.model.model_dump().items()},
                **{f"train.{k}": v for k, v in config.train.model_dump().items()},
            })
            fit = train_source_model(dataset.interactions, dataset.items, domains=spec.domains, cutoffs=cutoffs,
                                     model=config.model, train=config.train, val_ratio=config.val_ratio,
                                     seed=config.seed, label=f"source:{spec.name}",
                                     on_epoch=tracking.live_curve(uri, run_id, f"source:{spec.name}"),
                                     checkpoint_dir=checkpoints / f"source-{spec.fingerprint}" if checkpoints else None)
            if fit.resumed_from_epoch is not None:
                tracking.set_tags(uri, run_id, {"resumed_from_epoch": str(fit.resumed_from_epoch)})
            profile = source_profile(dataset.interactions, dataset.items, dataset=dataset.name, domains=spec.domains,
                                     cutoffs=cutoffs, embedder=config.embedder, cache=embedding_cache())
            tracking.log_profile(uri, run_id, profile)
            model_uri = tracking.log_factor_model(uri, run_id, fit.model)  # before the metrics: see its docstring
            tracking.log_history(uri, run_id, fit.history)
            tracking.log_metrics(uri, run_id, {
                "val/ndcg_at_10": fit.best_val_ndcg, "fit/seconds": fit.seconds, "fit/epochs": fit.epochs_run,
                "fit/best_epoch": fit.best_epoch, "fit/trainable_parameters": fit.trainable_parameters,
                "fit/batch_size": fit.batch_size, "fit/negatives": fit.n_negatives, "fit/patience": fit.patience,
                "fit/row_updates": float(fit.row_updates),
                "data/users": len(fit.model.user_ids), "data/items": len(fit.model.item_ids),
            }, model_uri=model_uri)
            version = tracking.register_model(
                uri, spec.registered_name, model_uri, run_id=run_id, aliases=[],
                tags={"fingerprint": spec.fingerprint, "fingerprint_algorithm": FINGERPRINT_ALGORITHM,
                      "source": spec.name, "target_domain": target,
                      "source_domains": ",".join(spec.domains), "dataset": dataset.name,
                      "profile": f"runs:/{run_id}/{tracking.PROFILE_ARTIFACT}",
                      "time_safe_for": target if cutoffs is not None else "any (no shared users)"},
                description=f"time-safe source model {spec.name} for target domain {target}",
            )
        seconds = time.perf_counter() - started
        log.info("trained source %s in %.1fs (val NDCG@10 %.4f), registered v%s", spec.name, seconds,
                 fit.best_val_ndcg, version.version)
        return SourceModel(spec, fit.model, profile, version.version, trained_now=True, seconds=seconds)


@task(name="registered-sources", cache_policy=NO_CACHE)
def registered_sources(uri: str, dataset: str) -> dict[str, SourceModel]:
    """Every registered source of ``dataset`` built for targets in other datasets, newest versions, with
    their profiles: selection from the catalogue alone, without the source dataset's raw data.

    Raises:
        ValueError: when the catalogue holds no such source.
    """
    entries = [e for e in tracking.source_catalogue(uri, with_stats=False)
               if e["dataset"] == dataset and str(e["time_safe_for"]).startswith("any")]
    if not entries:
        raise ValueError(f"the source catalogue at {uri} holds no source of dataset {dataset!r} for other datasets; "
                         f"build them with: transferrec pretrain --dataset {dataset} --any-target")
    sources = {}
    for entry in entries:
        spec = SourceSpec(entry["source"], entry["domains"], entry["registered_model"], entry["fingerprint"])
        model, profile = tracking.load_source(uri, entry["registered_model"], entry["version"], entry["run_id"])
        sources[spec.name] = SourceModel(spec, model, profile, entry["version"],
                                         trained_now=False, seconds=0.0)
    get_run_logger().info("sources of %s from the catalogue: %s", dataset, sorted(sources))
    return sources


def gather_sources(dataset: Dataset, data_fingerprint: str, target: str, cutoffs: pl.DataFrame | None,
                   test_ratio: float, config: SourcesConfig, uri: str, *, same_dataset: bool = True,
                   target_data: str | None = None, force: bool = False, triggered_by: str | None = None,
                   checkpoints: Path | None = None) -> dict[str, SourceModel]:
    """Plan the source candidates of ``target`` (:func:`plan_sources`) and find or train each
    (:func:`find_or_train_source`): every flow that needs sources names and reuses them alike.

    Within the target's dataset (``same_dataset``) the sources hide the target's test period (``cutoffs``); so
    do sources from another dataset whose users are the target's (``target_data``: the target dataset's
    fingerprint, with its ``cutoffs``); from another dataset of other people nothing is hidden (``cutoffs``
    None).
    """
    specs = plan_sources(dataset, data_fingerprint, target, test_ratio, config, same_dataset=same_dataset,
                         target_data=target_data)
    hidden = hidden_target(target, same_dataset=same_dataset, target_data=target_data)
    return {spec.name: find_or_train_source(dataset, cutoffs, spec, config, hidden, uri, force=force,
                                            triggered_by=triggered_by, checkpoints=checkpoints)
            for spec in specs}
