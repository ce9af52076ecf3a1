"""Tasks that load, validate and split the data of an onboarding."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from data_contracts.batched import validate_scans
from data_contracts.columns import DOMAIN, TABLES
from data_contracts.report import ContractReport, ContractViolation
from data_contracts.validation import ContractSettings, ValidatedTables, validate_tables
from models.config import DataConfig, SplitConfig
from models.data.datasets import (
    Dataset,
    check_domain,
    find_table,
    is_object_store,
    parquet_parts,
    read_tables,
)
from models.data.fetch import cached_dir
from models.data.fingerprint import fingerprint, frame_fingerprint
from models.split import TargetSplit, split_with
from tasks import tracking
from tasks.runtime import default_data_dir, retry_transient


@dataclass(frozen=True)
class RawTables:
    """A dataset's tables as stored, before any contract ran."""

    name: str
    tables: dict[str, pl.DataFrame | pl.LazyFrame | None]  # lazy scans when read in batches
    source: str

    def in_user_terms(self, violation: ContractViolation, config: DataConfig) -> ContractViolation:
        """``violation`` naming the user's files, column names (their column map) and Parquet parts."""
        files = table_files(self.source)
        parts = {table: parquet_parts(Path(path)) for table, path in files.items()
                 if not is_object_store(path) and Path(path).is_dir()}
        return violation.in_user_terms(config.columns, files, parts)


def table_files(folder: Path | str) -> dict[str, str]:
    """Where each table of ``folder`` (a local folder or an object-store URL) is, as the reports name it."""
    if is_object_store(folder):
        return {table: f"{str(folder).rstrip('/')}/{table}" for table in TABLES}
    found = {table: find_table(Path(folder), table) for table in TABLES}
    return {table: str(path) for table, path in found.items() if path is not None}


def data_location(config: DataConfig) -> Path | str:
    """Where the data is read from: the object-store ``url``, else the folder ``path``, else the fetched cache of
    ``dataset``."""
    return config.url or config.path or cached_dir(config.data_dir or default_data_dir(), config.dataset)


@task(name="load-tables", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE,
      retry_condition_fn=retry_transient)
def load_tables(config: DataConfig) -> RawTables:
    """Read the tables as stored (columns renamed by ``config.columns``): the object-store ``url``, else the
    folder ``path``, else the fetched cache of ``dataset``. With ``config.batch_rows`` they are lazy scans,
    read batch by batch when validated."""
    folder = data_location(config)
    tables = read_tables(folder, config.columns, lazy=config.batch_rows is not None)
    if config.batch_rows is None:
        get_run_logger().info("read %s from %s: %s", config.dataset, folder,
                              {k: (v.height if v is not None else None) for k, v in tables.items()})
    else:
        get_run_logger().info("scanning %s at %s in batches of %d rows", config.dataset, folder, config.batch_rows)
    return RawTables(config.dataset, tables, str(folder))


@task(name="check-target-domain", cache_policy=NO_CACHE)
def check_target_domain(config: DataConfig, domain: str) -> None:
    """Stop at once, before any experiment exists for it, when ``domain`` is not a domain of the data (reads the
    items table's domain column only); the error lists the domains there are.

    Raises:
        UnknownDomain: no item is in ``domain``.
    """
    folder = data_location(config)
    items = read_tables(folder, config.columns, lazy=True)["items"]
    if items is None:
        return  # the contracts report the missing table
    theirs = (config.columns or {}).get("items", {}).get(DOMAIN, DOMAIN)
    local = None if is_object_store(folder) else find_table(Path(folder), "items")
    check_domain(items, domain, where=str(local or f"{folder} (items)"), column=theirs)


def log_contract_reports(reports: list[ContractReport], run: tracking.TrackingContext | None, failed: bool) -> str:
    """Log the contract reports (markdown, JSON, suite versions, a pass/fail tag) to ``run`` and as a Prefect
    artifact; returns the markdown."""
    markdown = "\n".join(r.to_markdown() for r in reports)
    if run is not None:
        run.log_text(markdown, "contracts/report.md")
        run.log_dict([r.to_dict() for r in reports], "contracts/report.json")
        run.log_params({f"contract.{r.table}.version": r.suite_version for r in reports})
        run.set_tags({"contracts": "failed" if failed else "passed"})
    create_markdown_artifact(key="contract-report", markdown=markdown,
                             description="data contract report" + (" (FAILED)" if failed else ""))
    return markdown


@task(name="validate-dataset", cache_policy=NO_CACHE)
def validate_dataset(
    raw: RawTables, config: DataConfig, target_domain: str | None, run: tracking.TrackingContext | None
) -> tuple[Dataset, str]:
    """Run the data contracts; log the report (and any quarantined rows); raise :class:`ContractViolation`
    when the policy does not let the data through. Returns the validated dataset and its fingerprint."""
    log = get_run_logger()
    settings = config.contract_settings(target_domain)
    try:
        if config.batch_rows is None:
            result = validate_tables(raw.tables, settings)
        else:
            result = _validate_in_batches(raw, settings, config.batch_rows)
    except ContractViolation as found:
        violation = raw.in_user_terms(found, config)
        log_contract_reports(violation.reports, run, failed=True)
        log.error("%s", violation)
        raise violation from None
    if run is None:
        log_contract_reports(result.reports, run, failed=False)
    else:  # the data passed: the report is written in the background (on a violation, before the run fails)
        run.later(partial(log_contract_reports, result.reports, run, failed=False))
    if result.quarantine and run is not None:
        with tempfile.TemporaryDirectory(prefix="transferrec-quarantine-") as tmp:
            for table, rows in result.quarantine.items():
                path = Path(tmp) / f"{table}.parquet"
                rows.write_parquet(path)
                run.log_artifact(path, "contracts/quarantine")
        run.log_metrics({f"contracts/quarantined_{t}": f.height
                                                   for t, f in result.quarantine.items()})
    for table, rows in result.quarantine.items():
        log.warning("quarantined %d %s row(s)", rows.height, table)
    t = result.tables
    dataset = Dataset(raw.name, t["interactions"], t["items"], t.get("users"), t.get("impressions"))
    return dataset, fingerprint(dataset)


def _validate_in_batches(raw: RawTables, settings: ContractSettings, batch_rows: int) -> ValidatedTables:
    """Batched validation (:mod:`data_contracts.batched`); the typed tables that passed are then read whole
    (validation never holds a raw table in memory; training still needs the typed tables)."""
    with tempfile.TemporaryDirectory(prefix="transferrec-validated-") as tmp:
        scans = {table: frame.lazy() if frame is not None else None for table, frame in raw.tables.items()}
        validated = validate_scans(scans, settings, workdir=Path(tmp), batch_rows=batch_rows)
        return ValidatedTables(validated.collect(), validated.reports)


@task(name="split-target", cache_policy=NO_CACHE)
def split_target(dataset: Dataset, domain: str, config: SplitConfig) -> TargetSplit:
    """Leakage-free train/val/test split of the target domain (see :mod:`models.split`)."""
    split = split_with(dataset.interactions, dataset.items, domain=domain, config=config)
    get_run_logger().info("split %s: %s", domain, split.summary())
    return split


#: The target split's parts as lineage names them: (part, MLflow dataset context).
SPLIT_PARTS = (("train", "training"), ("val", "validation"), ("test", "test"))


def split_lineage(split: TargetSplit | Any, location: str, settings: str) -> list[tracking.DatasetRecord]:
    """The target's train, validation and test parts as datasets of the run (``target:<part>``). In memory each
    carries its content fingerprint and the table; a split on disk (:class:`models.transfer.outofcore.DiskSplit`)
    is named by where it came from, the split ``settings`` and its row count (its content is not read again)."""
    records = []
    for part, context in SPLIT_PARTS:
        frame = getattr(split, part, None)
        if isinstance(frame, pl.DataFrame):
            digest = frame_fingerprint(part, frame)
        else:
            frame = None
            rows = split.sizes.get(part, 0)
            digest = hashlib.sha256(f"{location}|{settings}|{part}|{rows}".encode()).hexdigest()[:16]
        records.append(tracking.DatasetRecord(f"target:{part}", context, location, digest, frame))
    return records


def source_lineage(fingerprints: dict[str, str], location: str) -> list[tracking.DatasetRecord]:
    """Each source model's training data (``source:<name>``), by the source's stable fingerprint (its data,
    domains, cut-offs and settings: what the registry finds it by)."""
    return [tracking.DatasetRecord(f"source:{name}", "source", location, digest)
            for name, digest in sorted(fingerprints.items())]
