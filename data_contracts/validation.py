"""Validate a dataset's tables against their contracts and apply the violation policy.

Order: schema and types (:mod:`data_contracts.conversion`), the great-expectations suite of each table
(:mod:`data_contracts.contracts`), then rules across rows (:mod:`data_contracts.checks`). Items are checked
first so interactions and impressions are checked against the items that passed.

Policies:

* ``fail`` (default): any failed rule raises :class:`ContractViolation` listing every failed rule.
* ``quarantine``: rows that break a row-level rule move to a quarantine table (with the rules they broke);
  the rest goes on if its share of the table is at least ``min_clean_share``. Table-level failures (a
  missing column, an empty table, too little target data) still fail. Of duplicate rows, the first copy
  stays and the later copies are quarantined. Nothing is ever changed in place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from data_contracts.checks import check_single_interaction_users, check_target_volume
from data_contracts.columns import ITEM_ID, ITEMS_SCHEMA, TABLE_SCHEMAS
from data_contracts.contracts import suite_version, validate_table
from data_contracts.conversion import ROW, convert_table, with_row_numbers
from data_contracts.report import ContractReport, ContractViolation, RuleFailure
from data_contracts.settings import ContractSettings

VIOLATIONS = "_violations"
CHECK_ORDER = ("items", "interactions", "users", "impressions")  # items first: the others reference them
UNIQUE_EXPECTATIONS = ("expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique")


@dataclass(frozen=True)
class ValidatedTables:
    """Typed tables that passed (quarantined rows removed), every report, and the quarantined rows."""

    tables: dict[str, pl.DataFrame]
    reports: list[ContractReport]
    quarantine: dict[str, pl.DataFrame] = field(default_factory=dict)


def canonical(table: str, typed: pl.DataFrame) -> pl.DataFrame:
    """Drop helper columns; interactions keep exactly their canonical columns, items get null title/genres
    when absent, other tables keep their extra columns."""
    frame = typed.drop([c for c in typed.columns if c.startswith("_")])
    if table == "interactions":
        return frame.select(list(TABLE_SCHEMAS["interactions"]))
    if table == "items":
        missing = [pl.lit(None, dtype=dtype).alias(c) for c, dtype in ITEMS_SCHEMA.items() if c not in frame.columns]
        return frame.with_columns(missing).select([*ITEMS_SCHEMA, *[c for c in frame.columns
                                                                     if c not in ITEMS_SCHEMA]])
    return frame


def convert_strict(table: str, raw: pl.DataFrame) -> pl.DataFrame:
    """Typed canonical frame of ``raw``; raises :class:`ContractViolation` when a column is missing or a value
    does not convert (used by readers of trusted formats)."""
    typed, failures = convert_table(table, raw)
    if failures or typed is None:
        raise ContractViolation([ContractReport(table, suite_version(table), raw.height, len(TABLE_SCHEMAS[table]),
                                                failures)])
    return canonical(table, typed)


def _later_duplicates(frame: pl.DataFrame, columns: list[str]) -> tuple[int, ...]:
    """Rows of ``frame`` that repeat an earlier row's key (the first copy is kept)."""
    keyed = frame.sort(ROW).with_columns(pl.struct(columns).is_first_distinct().alias("_first"))
    return tuple(keyed.filter(~pl.col("_first"))[ROW].to_list())


def _quarantine_rows(failure: RuleFailure, frame: pl.DataFrame) -> tuple[int, ...]:
    if failure.expectation in UNIQUE_EXPECTATIONS and failure.column:
        return _later_duplicates(frame, failure.column.split(","))
    return failure.rows or ()


@dataclass(frozen=True)
class TableCheck:
    """One table after its schema, type, suite and cross-row rules (no policy applied yet)."""

    frame: pl.DataFrame  # as read, with _row
    typed: pl.DataFrame | None  # None when a required column is missing
    checked: pl.DataFrame | None  # typed rows whose values all converted (what the suite saw)
    failures: list[RuleFailure]
    warnings: list[RuleFailure]
    checked_rules: int


def check_table(
    table: str, raw: pl.DataFrame, settings: ContractSettings, *, known_items: pl.Series | None,
    all_rows: bool = False, now: float | None = None,
) -> TableCheck:
    """Run every rule of ``table`` on ``raw`` and collect failures and warnings."""
    frame = with_row_numbers(raw)
    typed, failures = convert_table(table, frame)
    if typed is None:
        return TableCheck(frame, None, None, failures, [], 1)
    unconvertible = {r for f in failures for r in (f.rows or ())}
    checked = typed.filter(~pl.col(ROW).is_in(sorted(unconvertible))) if unconvertible else typed
    report = validate_table(table, checked, parameters=settings.parameters(now), known_items=known_items,
                            all_rows=all_rows, engine=settings.engine)
    warnings = list(report.warnings)
    if table == "interactions":
        warnings += check_single_interaction_users(checked, max_share=settings.max_single_interaction_share)
    return TableCheck(frame, typed, checked, failures + report.failures, warnings, report.checked_rules + 1)


def validate_single_table(
    table: str, raw: pl.DataFrame, settings: ContractSettings, *, known_items: pl.Series | None = None
) -> ContractReport:
    """The contract report of one table on its own (``transferrec validate``); nothing is raised."""
    result = check_table(table, raw, settings, known_items=known_items)
    return ContractReport(table, suite_version(table), result.frame.height, result.checked_rules, result.failures,
                          result.warnings)


def validate_tables(
    raw: dict[str, pl.DataFrame | None], settings: ContractSettings, *, now: float | None = None
) -> ValidatedTables:
    """Validate every present table (see the module docstring).

    Args:
        raw: table name -> frame as read (``interactions`` and ``items`` required; ``users`` and
            ``impressions`` optional, None when absent).
        settings: scales, windows, volumes and the policy.
        now: the current time for the "not in the future" rule (default: now).

    Raises:
        ContractViolation: when the policy does not let the data through.
    """
    quarantine_mode = settings.on_violation == "quarantine"
    reports: list[ContractReport] = []
    tables: dict[str, pl.DataFrame] = {}
    quarantined: dict[str, pl.DataFrame] = {}
    fatal = False
    for table in CHECK_ORDER:
        frame = raw.get(table)
        if frame is None:
            if table in ("interactions", "items"):
                raise ValueError(f"the {table} table is required")
            continue
        known = tables["items"][ITEM_ID] if "items" in tables else None
        result = check_table(table, frame, settings, known_items=known, all_rows=quarantine_mode, now=now)
        frame, typed, checked, failures, warnings = (result.frame, result.typed, result.checked, result.failures,
                                                     result.warnings)
        if typed is None or checked is None:
            reports.append(ContractReport(table, suite_version(table), frame.height, 1, failures))
            fatal = True
            continue
        table_level = [f for f in failures if not f.row_level] if quarantine_mode else failures
        bad_rows: dict[int, list[str]] = {}
        if quarantine_mode and not table_level:
            for failure in failures:
                for row in _quarantine_rows(failure, checked if failure.rows is not None else typed):
                    bad_rows.setdefault(row, []).append(failure.rule)
            clean_share = 1.0 - len(bad_rows) / max(frame.height, 1)
            if clean_share < settings.min_clean_share:
                table_level = [RuleFailure(table, None, f"clean share at least {settings.min_clean_share:.0%}",
                                           "quarantine policy", len(bad_rows),
                                           detail=f"only {clean_share:.1%} of {frame.height} rows pass")]
            warnings += [RuleFailure(f.table, f.column, f.rule, f.expectation, f.unexpected_count, f.sample_values,
                                     f.sample_rows, "quarantined", "warning") for f in failures]
        by_rule: dict[str, int] = {}
        for rules in bad_rows.values():
            for rule in set(rules):
                by_rule[rule] = by_rule.get(rule, 0) + 1
        reports.append(ContractReport(table, suite_version(table), frame.height, result.checked_rules,
                                      table_level if quarantine_mode else failures, warnings,
                                      by_rule if not table_level else {}, len(bad_rows) if not table_level else 0))
        if table_level:
            fatal = True
            continue
        keep = ~pl.col(ROW).is_in(sorted(bad_rows)) if bad_rows else pl.lit(True)
        tables[table] = typed.filter(keep)
        if bad_rows:
            reasons = pl.DataFrame({ROW: list(bad_rows), VIOLATIONS: ["; ".join(sorted(set(r)))
                                                                     for r in bad_rows.values()]},
                                   schema={ROW: pl.Int64, VIOLATIONS: pl.String})
            quarantined[table] = frame.join(reasons, on=ROW, how="inner").sort(ROW)
    if not fatal and settings.target_domain is not None:
        volume = check_target_volume(tables["interactions"], tables["items"], domain=settings.target_domain,
                                     min_interactions=settings.min_target_interactions,
                                     min_users=settings.min_target_users, min_items=settings.min_target_items)
        if volume:
            reports = [_with_failures(r, volume) if r.table == "interactions" else r for r in reports]
            fatal = True
    if fatal or any(not r.success for r in reports):
        note = ""
        if quarantine_mode:
            note = "policy quarantine: table-level rules cannot be quarantined, or too few clean rows were left"
        raise ContractViolation(reports, note)
    return ValidatedTables({t: canonical(t, f) for t, f in tables.items()}, reports, quarantined)


def _with_failures(report: ContractReport, extra: list[RuleFailure]) -> ContractReport:
    return ContractReport(report.table, report.suite_version, report.rows, report.checked_rules + len(extra),
                          [*report.failures, *extra], report.warnings, report.quarantined, report.quarantined_rows)
