"""Validate tables bigger than memory: the same contracts, one batch at a time.

Each table is read from a lazy scan (a CSV, Parquet file or folder of parts, local or in an object store) in
batches of ``batch_rows`` rows. Per batch (:func:`check_batch`), the schema and type conversion and the suite's
row-level rules run exactly as in :func:`data_contracts.validation.validate_tables` (row numbers are the table's
own, not the batch's), and the typed rows go to a Parquet part under ``workdir``; a :class:`PartMapper` may run the
batches elsewhere (one Prefect task per batch on a Dask cluster). The rules about a whole table (row count,
uniqueness, single-interaction users, the target domain's volume) then run as streaming queries over those
parts. Memory holds one batch (``mapper.width`` when they are spread), the item ids (for the referential rule)
and the hash tables of the uniqueness and per-user counts, never a whole table; the reports are the ones the
in-memory validation writes (a test compares them rule by rule).

Only the ``fail`` policy is supported: a quarantine keeps the first copy of a duplicate and drops the later
ones, which needs the table's order across batches (use the in-memory validation for it).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

import polars as pl

from data_contracts.checks import check_single_interaction_users, check_target_volume
from data_contracts.columns import ITEM_ID, TABLE_SCHEMAS
from data_contracts.contracts import applicable, suite_definition, suite_position, suite_version, validate_table
from data_contracts.conversion import ROW, convert_table, json_safe
from data_contracts.report import MAX_SAMPLES, ContractReport, ContractViolation, RuleFailure
from data_contracts.validation import CHECK_ORDER, UNIQUE_EXPECTATIONS, ContractSettings, canonical

ROW_COUNT = "expect_table_row_count_to_be_between"
TABLE_WIDE = frozenset({ROW_COUNT, *UNIQUE_EXPECTATIONS})
DEFAULT_BATCH_ROWS = 1_000_000
T = TypeVar("T")


class PartMapper(Protocol):
    """Runs ``fn(*args)`` for every ``args`` of ``calls`` and returns the results in that order; ``label`` names
    the stage. ``width`` is how many parts it is handed at once (the batches or buckets held in memory together).
    :class:`InOrder` runs them here, one after the other; ``flows.runners.PartRunner`` runs each as a Prefect task
    on the onboarding's task runner (a Dask cluster spreads them)."""

    width: int

    def __call__(self, fn: Callable[..., T], calls: Sequence[tuple], label: str) -> list[T]: ...


class InOrder:
    """The parts one after the other, in this process."""

    width = 1

    def __call__(self, fn: Callable[..., T], calls: Sequence[tuple], label: str) -> list[T]:
        return [fn(*args) for args in calls]


class BatchReadError(ValueError):
    """A batch of a table could not be read (a corrupt part, a malformed CSV line)."""


@dataclass(frozen=True)
class ValidatedScans:
    """Typed canonical tables that passed, as lazy scans of the Parquet parts under ``workdir``, and the reports."""

    tables: dict[str, pl.LazyFrame]
    reports: list[ContractReport]
    workdir: Path

    def collect(self) -> dict[str, pl.DataFrame]:
        """Every table read into memory (for a dataset that fits once typed)."""
        return {table: scan.collect() for table, scan in self.tables.items()}


def batches(scan: pl.LazyFrame, batch_rows: int, table: str) -> Iterator[pl.DataFrame]:
    """``scan`` in batches of ``batch_rows`` rows with their table-wide ``_row`` numbers (one empty batch when the
    table has no rows, so that its contract still runs).

    Raises:
        BatchReadError: polars could not read a batch.
    """
    if not scan.collect_schema().names():  # an empty file: no header
        yield pl.DataFrame()
        return
    numbered = scan.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))
    empty = True
    try:
        for batch in numbered.collect_batches(chunk_size=batch_rows):
            if batch.height or empty:
                empty = False
                yield batch
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise BatchReadError(f"{table}: cannot read a batch: {type(exc).__name__}: {str(exc)[:300]}") from exc
    if empty:
        yield numbered.head(0).collect()


def _merge(found: dict[tuple, RuleFailure], failures: list[RuleFailure]) -> None:
    """Add one batch's failures: counts add up, samples are the first ones in table order."""
    for failure in failures:
        key = (failure.column, failure.rule, failure.expectation, failure.severity)
        seen = found.get(key)
        if seen is None:
            found[key] = replace(failure, rows=None)
            continue
        count = (None if seen.unexpected_count is None and failure.unexpected_count is None
                 else (seen.unexpected_count or 0) + (failure.unexpected_count or 0))
        found[key] = replace(seen, unexpected_count=count,
                             sample_values=(seen.sample_values + failure.sample_values)[:MAX_SAMPLES],
                             sample_rows=(seen.sample_rows + failure.sample_rows)[:MAX_SAMPLES])


def _rank(table: str, failure: RuleFailure) -> tuple[int, int]:
    """The in-memory report's order: conversion failures by column, then the suite's order."""
    if failure.expectation in ("schema", "type"):
        columns = list(TABLE_SCHEMAS[table])
        return 0, columns.index(failure.column) if failure.column in columns else len(columns)
    return 1, suite_position(table, failure.expectation, failure.rule)


def _row_count_failure(table: str, expectation: dict, rows: int) -> RuleFailure | None:
    low, high = expectation["kwargs"].get("min_value"), expectation["kwargs"].get("max_value")
    if (low is None or rows >= low) and (high is None or rows <= high):
        return None
    meta = expectation.get("meta", {})
    return RuleFailure(table, None, meta.get("rule", ROW_COUNT), ROW_COUNT, None, detail=f"observed {rows}",
                       severity="warning" if meta.get("severity") == "warning" else "error")


#: Rows whose key hashes one pass of the uniqueness rule counts: its hash table took about 44 bytes a row
#: (4.4 GB at 100 M rows in one pass); above this the hashes are counted in several passes over the parts, each
#: over one residue class of the hash.
UNIQUE_PASS_ROWS = 25_000_000


def _uniqueness_failure(table: str, expectation: dict, parts: pl.LazyFrame, rows: int) -> RuleFailure | None:
    """Rows whose key (ignoring rows with every key column missing) occurs more than once, all copies counted;
    ``rows``: the parts' row count (it sets the passes, :data:`UNIQUE_PASS_ROWS`)."""
    kwargs, meta = expectation["kwargs"], expectation.get("meta", {})
    columns = kwargs.get("column_list") or [kwargs["column"]]
    keyed = parts.filter(pl.any_horizontal([pl.col(c).is_not_null() for c in columns]))
    # Keys are counted by a 64-bit hash first (a hash table of the keys themselves took gigabytes at 10 M rows);
    # only the rows whose hash repeats are compared exactly.
    hashed = keyed.with_columns(pl.struct(columns).hash(seed=0).alias("_key"))
    passes = max(1, -(-rows // UNIQUE_PASS_ROWS))
    colliding = pl.concat([
        (hashed if passes == 1 else hashed.filter(pl.col("_key") % passes == residue))
        .group_by("_key").len().filter(pl.col("len") > 1).select("_key").collect(engine="streaming")
        for residue in range(passes)])
    if colliding.is_empty():
        return None
    candidates = hashed.join(colliding.lazy(), on="_key", how="semi").drop("_key").collect(engine="streaming")
    repeated = candidates.group_by(columns).agg(pl.len().alias("_copies")).filter(pl.col("_copies") > 1)
    count = int(repeated["_copies"].sum() or 0)
    if count == 0:
        return None
    samples = (candidates.join(repeated.select(columns), on=columns, how="semi", nulls_equal=True)
               .select(ROW, *columns).sort(ROW).head(MAX_SAMPLES))
    values = ([json_safe(v) for v in samples[columns[0]].to_list()] if len(columns) == 1
              else [list(row[1:]) for row in samples.rows()])
    return RuleFailure(table, ",".join(columns), meta.get("rule", expectation["type"]), expectation["type"],
                       count, values, samples[ROW].to_list(),
                       severity="warning" if meta.get("severity") == "warning" else "error")


@dataclass(frozen=True)
class _TableResult:
    report: ContractReport
    parts: pl.LazyFrame | None  # None: a required column is missing, nothing was written


@dataclass(frozen=True)
class _BatchResult:
    """What one batch contributes to its table's report."""

    rows: int  # raw rows read
    checked: int  # rows that converted and were checked (and written); -1: a required column is missing
    rules: int
    failures: list[RuleFailure]


def check_batch(table: str, batch: pl.DataFrame, index: int, parameters: dict, known_items: pl.Series | None,
                engine: str, folder: Path) -> _BatchResult:
    """One batch of ``table``: types converted, the row-level rules checked, the typed rows written as part
    ``index`` under ``folder``. Pure but for that file, so batches can run anywhere (see :class:`PartMapper`)."""
    typed, failures = convert_table(table, batch)
    if typed is None:  # a required column is missing: the same in every batch
        return _BatchResult(batch.height, -1, 1, failures)
    unconvertible = {r for f in failures for r in (f.rows or ())}
    checked = typed.filter(~pl.col(ROW).is_in(sorted(unconvertible))) if unconvertible else typed
    report = validate_table(table, checked, parameters=parameters, known_items=known_items, engine=engine,
                            skip=TABLE_WIDE)
    canonical(table, checked).with_columns(checked[ROW]).write_parquet(folder / f"part-{index:06d}.parquet")
    return _BatchResult(batch.height, checked.height, report.checked_rules,
                        failures + report.failures + report.warnings)


def _windows(items: Iterator[T], size: int) -> Iterator[list[T]]:
    """``items`` in consecutive lists of ``size`` (the last may be shorter)."""
    window: list[T] = []
    for item in items:
        window.append(item)
        if len(window) == size:
            yield window
            window = []
    if window:
        yield window


def _check_table(
    table: str, scan: pl.LazyFrame, settings: ContractSettings, *, known_items: pl.Series | None,
    folder: Path, batch_rows: int, now: float | None, mapper: PartMapper,
) -> _TableResult:
    folder.mkdir(parents=True, exist_ok=True)
    parameters = settings.parameters(now)
    found: dict[tuple, RuleFailure] = {}
    raw_rows = checked_rows = rules = 0
    # read here in order, checked ``mapper.width`` batches at a time by ``mapper``, merged in table order
    for numbered in _windows(enumerate(batches(scan, batch_rows, table)), mapper.width):
        calls = [(table, batch, index, parameters, known_items, settings.engine, folder) for index, batch in numbered]
        for (_, batch), result in zip(numbered, mapper(check_batch, calls, f"validate-{table}"), strict=True):
            raw_rows += result.rows
            if result.checked < 0:  # a required column is missing: nothing was written
                return _TableResult(ContractReport(table, suite_version(table), scan.select(pl.len()).collect().item()
                                                   if batch.width else 0, 1, result.failures), None)
            _merge(found, result.failures)
            rules = result.rules
            checked_rows += result.checked
    parts = pl.scan_parquet(folder / "*.parquet")
    definition = suite_definition(table)
    wide = [e for e in applicable(definition, [*parts.collect_schema().names(), "_item_in_items"])
            if e["type"] in TABLE_WIDE]
    for expectation in wide:
        failure = (_row_count_failure(table, expectation, checked_rows) if expectation["type"] == ROW_COUNT
                   else _uniqueness_failure(table, expectation, parts, checked_rows))
        _merge(found, [failure] if failure else [])
    if table == "interactions":
        _merge(found, check_single_interaction_users(parts, max_share=settings.max_single_interaction_share))
    merged = sorted(found.values(), key=lambda f: _rank(table, f))
    report = ContractReport(table, suite_version(table), raw_rows, rules + len(wide) + 1,
                            [f for f in merged if f.severity == "error"],
                            [f for f in merged if f.severity == "warning"])
    return _TableResult(report, parts.drop(ROW))


def validate_scans(
    scans: dict[str, pl.LazyFrame | None], settings: ContractSettings, *, workdir: Path,
    batch_rows: int = DEFAULT_BATCH_ROWS, now: float | None = None, mapper: PartMapper | None = None,
) -> ValidatedScans:
    """Validate every present table batch by batch (see the module docstring).

    Args:
        scans: table name -> lazy scan as stored (``interactions`` and ``items`` required; ``users`` and
            ``impressions`` optional, None when absent).
        settings: scales, windows, volumes; ``on_violation`` must be ``fail``.
        workdir: where the typed Parquet parts go (one folder per table, replaced when present).
        batch_rows: rows per batch.
        now: the current time for the "not in the future" rule (default: now).
        mapper: runs the batches' checks (default :class:`InOrder`); the table-wide rules run here.

    Raises:
        ContractViolation: a table broke its contract (every table's report attached).
        BatchReadError: a batch could not be read.
        ValueError: a required table is absent, the policy is not ``fail``, or ``batch_rows`` < 1.
    """
    if settings.on_violation != "fail":
        raise ValueError("batched validation supports on_violation='fail' only (a quarantine keeps the first "
                         "copy of a duplicate, which needs the whole table: validate in memory for it)")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    reports: list[ContractReport] = []
    tables: dict[str, pl.LazyFrame] = {}
    for table in CHECK_ORDER:
        scan = scans.get(table)
        if scan is None:
            if table in ("interactions", "items"):
                raise ValueError(f"the {table} table is required")
            continue
        known = tables["items"].select(ITEM_ID).collect()[ITEM_ID] if "items" in tables else None
        folder = workdir / table
        shutil.rmtree(folder, ignore_errors=True)
        result = _check_table(table, scan, settings, known_items=known, folder=folder, batch_rows=batch_rows,
                              now=now, mapper=mapper or InOrder())
        reports.append(result.report)
        if result.parts is not None and result.report.success:
            tables[table] = result.parts
    fatal = any(not r.success for r in reports)
    if not fatal and settings.target_domain is not None:
        volume = check_target_volume(tables["interactions"], tables["items"], domain=settings.target_domain,
                                     min_interactions=settings.min_target_interactions,
                                     min_users=settings.min_target_users, min_items=settings.min_target_items)
        if volume:
            reports = [replace(r, failures=[*r.failures, *volume], checked_rules=r.checked_rules + len(volume))
                       if r.table == "interactions" else r for r in reports]
            fatal = True
    if fatal:
        raise ContractViolation(reports)
    return ValidatedScans(tables, reports, workdir)
