"""Tasks of the out-of-core onboarding (``onboard-large-domain``): the onboarding's steps over data on disk.

Each task wraps :mod:`data_contracts.batched` or :mod:`models.transfer.outofcore`; evaluation, logging, registration and
the summary are the in-memory onboarding's own tasks, fed with tasks of sampled users.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from data_contracts.batched import DEFAULT_BATCH_ROWS, PartMapper, ValidatedScans, validate_scans
from data_contracts.columns import ITEM_ID
from data_contracts.report import ContractViolation
from models.config import DataConfig, FineTuneConfig, ModelConfig, SourcesConfig, SplitConfig, TrainConfig
from models.data.datasets import domain_stats
from models.evaluation.ranking import RankingTask, build_ranking_task, ndcg_at
from models.factors import FactorModel
from models.nets.training import FitResult
from models.selection.sources import slug, source_candidates
from models.transfer.joint import JointTrain
from models.transfer.outofcore import (
    DEFAULT_BUCKET_ROWS,
    DiskFit,
    DiskSplit,
    fine_tune_on_disk,
    joint_train_on_disk,
    popularity_on_disk,
    ranking_sample,
    sample_users,
    source_cutoffs_on_disk,
    source_split_on_disk,
    split_on_disk,
    train_scratch_on_disk,
    train_source_on_disk,
)
from models.transfer.peers import PeerTooLarge
from tasks import tracking
from tasks.data import RawTables, log_contract_reports
from tasks.selection import Selection


def batch_rows(config: DataConfig) -> int:
    """The rows per batch of an out-of-core onboarding."""
    return config.batch_rows or DEFAULT_BATCH_ROWS


def bucket_rows(config: DataConfig) -> int:
    """The rows per bucket of users of an out-of-core onboarding's splits."""
    return config.bucket_rows or DEFAULT_BUCKET_ROWS


@task(name="validate-in-batches", cache_policy=NO_CACHE)
def validate_large(raw: RawTables, config: DataConfig, target_domain: str, run: tracking.TrackingContext,
                   workdir: Path, parts: PartMapper | None = None) -> ValidatedScans:
    """The data contracts, batch by batch (each batch's checks run by ``parts``); the report is logged as in
    memory; raises :class:`ContractViolation` when a rule fails."""
    scans = {table: frame.lazy() if frame is not None else None for table, frame in raw.tables.items()}
    try:
        result = validate_scans(scans, config.contract_settings(target_domain), workdir=workdir,
                                batch_rows=batch_rows(config), mapper=parts)
    except ContractViolation as found:
        violation = raw.in_user_terms(found, config)
        log_contract_reports(violation.reports, run, failed=True)
        get_run_logger().error("%s", violation)
        raise violation from None
    log_contract_reports(result.reports, run, failed=False)
    return result


@task(name="split-on-disk", cache_policy=NO_CACHE)
def split_large(tables: ValidatedScans, domain: str, config: SplitConfig, workdir: Path, rows: int, buckets: int,
                parts: PartMapper | None = None) -> DiskSplit:
    """The target's leakage-free split, bucket by bucket of users of about ``buckets`` rows (each bucket split by
    ``parts``), on disk."""
    split = split_on_disk(tables.tables["interactions"], tables.tables["items"].collect(), domain=domain,
                          config=config, workdir=workdir, batch_rows=rows, bucket_rows=buckets, mapper=parts)
    get_run_logger().info("split %s on disk: %s", domain, split.sizes)
    return split


@task(name="sample-ranking-tasks", cache_policy=NO_CACHE)
def sample_ranking_tasks(split: DiskSplit, users: int | None, seed: int, click_threshold: float
                         ) -> tuple[RankingTask, RankingTask]:
    """(validation task, test task) of seeded samples of ``users`` users each (all when None)."""
    catalogue = split.catalogue[ITEM_ID].to_numpy().astype(object)
    tasks = []
    for part in ("val", "test"):
        holdout, seen = ranking_sample(split, part, sample_users(split.users(part), users, seed))
        tasks.append(build_ranking_task(catalogue, holdout, seen, click_threshold=click_threshold))
    get_run_logger().info("evaluation users: validation %d, test %d", tasks[0].n_users, tasks[1].n_users)
    return tasks[0], tasks[1]


@task(name="train-sources-on-disk", cache_policy=NO_CACHE)
def train_large_sources(tables: ValidatedScans, split: DiskSplit, domain: str, config: SourcesConfig,
                        workdir: Path, rows: int, buckets: int, parts: PartMapper | None = None
                        ) -> dict[str, FitResult]:
    """The source candidates of ``domain`` in its own dataset, each trained on its time-safe interactions
    (before each user's first target test interaction, split bucket by bucket by ``parts``) with the pairs on
    disk."""
    interactions, items = tables.tables["interactions"], tables.tables["items"].collect()
    stats = domain_stats(interactions, items.lazy()).collect(engine="streaming")
    plan = source_candidates(stats, domain, candidates=config.candidates, top_single=config.top_single,
                             all_others=config.all_others, combinations=config.combinations, same_dataset=True)
    cutoffs = source_cutoffs_on_disk(split)
    fits = {}
    for name, domains in plan.items():
        source_split = source_split_on_disk(interactions, items, domains=domains, cutoffs=cutoffs,
                                            val_ratio=config.val_ratio, workdir=workdir / slug(name), batch_rows=rows,
                                            bucket_rows=buckets, mapper=parts)
        fits[name] = train_source_on_disk(source_split, model=config.model, train=config.train, seed=config.seed,
                                          batch_rows=rows).fit
        shutil.rmtree(source_split.workdir, ignore_errors=True)
        get_run_logger().info("source %s (%s): val NDCG@10 %.4f, %d epochs, %.1fs", name, "+".join(domains),
                              fits[name].best_val_ndcg, fits[name].epochs_run, fits[name].seconds)
    return fits


@task(name="joint-pairs", cache_policy=NO_CACHE)
def joint_pairs_large(tables: ValidatedScans, split: DiskSplit) -> JointTrain | None:
    """The joint peers' pairs (every other domain's time-safe interactions and the target's training ones);
    None, with the reason logged, above their in-memory bound."""
    try:
        return joint_train_on_disk(tables.tables["interactions"], tables.tables["items"].collect(), split)
    except PeerTooLarge as why:
        get_run_logger().warning("joint peers not fitted: %s", why)
        return None


@task(name="probe-sources", cache_policy=NO_CACHE)
def probe_large_sources(sources: dict[str, FactorModel], split: DiskSplit, val_task: RankingTask,
                        finetune: FineTuneConfig, seed: int, rows: int) -> Selection:
    """Rank the sources by their zero-shot validation NDCG@10 (each carried over to the target untrained); the
    flow logs the table once settled (:func:`tasks.selection.settle_selection`)."""
    zero_shot = finetune.model_copy(update={"mode": "zero-shot"})
    scores = {name: ndcg_at(fine_tune_on_disk(model, split, config=zero_shot, seed=seed, batch_rows=rows).fit.model,
                             val_task) for name, model in sources.items()}
    table = (pl.DataFrame({"name": list(scores), "zero_shot_val_ndcg_at_10": list(scores.values())})
             .sort(["zero_shot_val_ndcg_at_10", "name"], descending=[True, False])
             .with_row_index("rank", offset=1).with_columns(pl.col("rank").cast(pl.Int64)))
    chosen = table["name"][0]
    rationale = (f"{chosen}: best zero-shot validation NDCG@10 ({scores[chosen]:.4f}) of {len(scores)} source(s) "
                 "(out-of-core onboarding: the zero-shot probe is the selection signal)")
    return Selection(chosen, table, rationale, "zero-shot probe", {})


@task(name="fine-tune-on-disk", cache_policy=NO_CACHE, task_run_name="fine-tune-on-disk-{name}")
def fine_tune_large(name: str, source: FactorModel, split: DiskSplit, config: FineTuneConfig, seed: int,
                    rows: int) -> FitResult:
    """Carry the chosen source over and fine-tune it on the target's pairs on disk."""
    fit = fine_tune_on_disk(source, split, config=config, seed=seed, batch_rows=rows,
                            pairs_file=f"transfer-{slug(name)}_pairs.bin").fit
    get_run_logger().info("fine-tuned %s on disk: val NDCG@10 %.4f -> %.4f in %d epochs, %.1fs", name,
                          fit.initial_val_ndcg, fit.best_val_ndcg, fit.epochs_run, fit.seconds)
    return fit


@task(name="train-scratch-on-disk", cache_policy=NO_CACHE)
def scratch_large(split: DiskSplit, model: ModelConfig, train: TrainConfig, seed: int, rows: int) -> DiskFit:
    """The same architecture on the target's pairs only."""
    fit = train_scratch_on_disk(split, model=model, train=train, seed=seed, batch_rows=rows)
    get_run_logger().info("scratch on disk: val NDCG@10 %.4f in %d epochs, %.1fs", fit.fit.best_val_ndcg,
                          fit.fit.epochs_run, fit.fit.seconds)
    return fit


@task(name="fit-popularity-on-disk", cache_policy=NO_CACHE)
def popularity_large(split: DiskSplit) -> FactorModel:
    """Most-interacted target items first (counted by a streaming query)."""
    return popularity_on_disk(split)


def split_summary(split: DiskSplit, val_task: RankingTask, test_task: RankingTask) -> dict[str, int | str]:
    """What the in-memory onboarding logs of its split, as far as it is known without reading it whole."""
    return {"target_domain": split.domain, "train_full_interactions": split.sizes["train_full"],
            "train_interactions": split.sizes["train"], "val_interactions": split.sizes["val"],
            "test_interactions": split.sizes["test"], "train_users": len(split.users("train")),
            "val_users": len(split.users("val")), "test_users": len(split.users("test")),
            "catalogue_items": split.catalogue.height, "val_users_evaluated": val_task.n_users,
            "test_users_evaluated": test_task.n_users}
