"""Tasks that load, validate and split the data of an onboarding."""

from __future__ import annotations

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from data_contracts.columns import ITEM_ID
from data_contracts.contracts import ContractReport, ContractViolation, validate_table
from models.config import DataConfig, SplitConfig
from models.datasets import Dataset, fingerprint, read_canonical_dir
from models.fetch import load_cached
from models.split import TargetSplit, split_target_domain
from tasks import tracking
from tasks.runtime import default_data_dir


@task(name="load-dataset", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def load_dataset(config: DataConfig) -> tuple[Dataset, str]:
    """Read the canonical tables (a folder given by ``path``, else the fetch cache) and fingerprint them."""
    dataset = (
        read_canonical_dir(config.path, config.dataset)
        if config.path is not None
        else load_cached(config.data_dir or default_data_dir(), config.dataset)
    )
    get_run_logger().info("loaded %s: %d interactions, %d items", dataset.name, dataset.interactions.height,
                          dataset.items.height)
    return dataset, fingerprint(dataset)


@task(name="validate-dataset", cache_policy=NO_CACHE)
def validate_dataset(
    dataset: Dataset, config: DataConfig, run: tracking.TrackingContext | None
) -> list[ContractReport]:
    """Run the data contracts; log the report; raise :class:`ContractViolation` when a rule fails."""
    reports = [
        validate_table("items", dataset.items),
        validate_table("interactions", dataset.interactions,
                       parameters={"rating_min": config.rating_min, "rating_max": config.rating_max},
                       known_items=dataset.items[ITEM_ID]),
    ]
    markdown = "\n\n".join(r.to_markdown() for r in reports)
    if run is not None:
        tracking.log_text(run.uri, run.run_id, markdown, "contracts/report.md")
        tracking.log_dict(run.uri, run.run_id, [r.to_dict() for r in reports], "contracts/report.json")
        tracking.log_params(run.uri, run.run_id, {f"contract_{r.table}_version": r.suite_version for r in reports})
    create_markdown_artifact(key="contract-report", markdown=markdown, description="data contract report")
    failed = [r for r in reports if not r.success]
    if failed:
        get_run_logger().error("data contract violated:\n%s", ContractViolation(failed))
        raise ContractViolation(failed)
    return reports


@task(name="split-target", cache_policy=NO_CACHE)
def split_target(dataset: Dataset, domain: str, config: SplitConfig) -> TargetSplit:
    """Leakage-free train/val/test split of the target domain (see :mod:`models.split`)."""
    split = split_target_domain(dataset.interactions, dataset.items, domain=domain, fraction=config.fraction,
                                seed=config.seed, test_ratio=config.test_ratio, val_ratio=config.val_ratio,
                                min_users=config.min_users)
    get_run_logger().info("split %s: %s", domain, split.summary())
    return split


def domain_table(dataset: Dataset) -> pl.DataFrame:
    """Per-domain counts (for plans and logs)."""
    return dataset.domains()
