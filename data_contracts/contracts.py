"""Data contracts: great-expectations suites kept as reviewable JSON files beside this module.

``validate_table`` runs one table's suite on a typed polars frame (converted to pandas at this boundary
only, since great-expectations has no polars support) and returns a :class:`ContractReport`.
Suites are ``data_contracts/<table>.json``: each expectation's ``meta`` names its ``rule`` (what the
report says), ``why`` it exists, and optionally ``reports_column`` (the column to show samples from),
``optional`` (skip when the column is absent) and ``severity: warning`` (report, do not fail).
"""

from __future__ import annotations

import json
import logging
import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

import polars as pl

from data_contracts import fast
from data_contracts.columns import ITEM_ID
from data_contracts.conversion import ROW, json_safe, with_row_numbers
from data_contracts.report import MAX_SAMPLES, ContractReport, ContractViolation, RuleFailure

logger = logging.getLogger(__name__)

CONTRACTS_DIR = Path(__file__).parent
ITEM_KNOWN = "_item_in_items"

__all__ = ["ContractReport", "ContractViolation", "RuleFailure", "suite_definition", "suite_version",
           "validate_table"]


@cache
def suite_definition(table: str) -> dict[str, Any]:
    """The JSON definition of ``table``'s suite (``data_contracts/<table>.json``).

    Raises:
        FileNotFoundError: no contract for that table.
    """
    path = CONTRACTS_DIR / f"{table}.json"
    if not path.exists():
        raise FileNotFoundError(f"no data contract for table {table!r} ({path})")
    return json.loads(path.read_text())


def suite_version(table: str) -> int:
    """The version number recorded in a suite's ``meta``."""
    return int(suite_definition(table)["meta"]["version"])


def _gx():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX announces every ephemeral docs directory at INFO level (its module sets that level on import).
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return gx, context


def prepare_frame(table: str, frame: pl.DataFrame, *, known_items: pl.Series | None = None) -> pl.DataFrame:
    """Add the helper columns the suites check: row numbers and, where items are referenced, a known-item flag.

    The referential check is computed with polars (``is_in``) because a great-expectations value set of
    100k ids is slow; the suite then checks the flag.
    """
    out = with_row_numbers(frame)
    if table in ("interactions", "impressions"):
        known = pl.lit(True) if known_items is None else pl.col(ITEM_ID).is_in(known_items.implode())
        # a null item id is reported by the not-null rule, not as an unknown item
        out = out.with_columns((known | pl.col(ITEM_ID).is_null()).fill_null(False).alias(ITEM_KNOWN))
    return out


def applicable(definition: dict[str, Any], columns: list[str]) -> list[dict[str, Any]]:
    """The suite's expectations, without optional ones whose column is absent."""
    return [e for e in definition["expectations"]
            if not (e.get("meta", {}).get("optional") and e["kwargs"].get("column") not in columns)]


def validate_table(
    table: str,
    frame: pl.DataFrame,
    *,
    parameters: dict[str, Any] | None = None,
    known_items: pl.Series | None = None,
    all_rows: bool = False,
    engine: Literal["auto", "great_expectations"] = "auto",
    skip: frozenset[str] = frozenset(),
) -> ContractReport:
    """Run ``table``'s suite on a typed ``frame`` and report every failed rule (nothing is raised or fixed).

    Args:
        table: ``interactions``, ``items``, ``users`` or ``impressions``.
        frame: the table with canonical column names and types; a ``_row`` column, when present, gives the
            row numbers reported (else the frame's own order).
        parameters: values for ``$PARAMETER`` placeholders (``rating_min``, ``rating_max``,
            ``timestamp_min``, ``timestamp_max``).
        known_items: item ids of the items table, for the referential check; None skips it.
        all_rows: collect every failing row (for a quarantine), not only the first samples.
        engine: ``auto`` evaluates the suite with polars first (:mod:`data_contracts.fast`) and runs
            great-expectations only when a rule fails, to report it; ``great_expectations`` always runs it.
        skip: expectation types left out (batched validation checks table-wide rules over all batches).
    """
    definition = suite_definition(table)
    prepared = prepare_frame(table, frame, known_items=known_items)
    body = {k: v for k, v in definition.items() if k != "id"}
    body["expectations"] = [e for e in applicable(definition, prepared.columns) if e["type"] not in skip]
    version = int(definition["meta"]["version"])
    if engine == "auto":
        try:
            outcomes = fast.evaluate(prepared, body["expectations"], parameters or {})
        except fast.Unmodelled:  # great-expectations decides
            outcomes = []
        if outcomes and all(o.success for o in outcomes):
            return ContractReport(table, version, frame.height, len(body["expectations"]), [], [])
    gx, context = _gx()
    suite = gx.ExpectationSuite(**json.loads(json.dumps(body)))
    batch = (
        context.data_sources.add_or_update_pandas("transferrec")
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": prepared.to_pandas()})
    )
    result = batch.validate(
        suite,
        result_format={"result_format": "COMPLETE" if all_rows else "SUMMARY",
                       "unexpected_index_column_names": [ROW], "partial_unexpected_count": MAX_SAMPLES},
        expectation_parameters=parameters or {},
    )
    failures: list[RuleFailure] = []
    warnings: list[RuleFailure] = []
    for outcome in sorted((o for o in result.results if not o.success),  # GX's order is not the suite's
                          key=lambda o: suite_position(table, o.expectation_config.type,
                                                       (o.expectation_config.meta or {}).get("rule"))):
        failure = _failure(table, prepared, outcome, all_rows)
        (warnings if failure.severity == "warning" else failures).append(failure)
    return ContractReport(table, version, frame.height, len(body["expectations"]), failures, warnings)


def suite_position(table: str, expectation: str, rule: str | None) -> int:
    """Where an expectation (type and ``meta.rule``) sits in ``table``'s suite; reports follow that order."""
    for index, candidate in enumerate(suite_definition(table)["expectations"]):
        if candidate["type"] == expectation and candidate.get("meta", {}).get("rule", expectation) == (
                rule or expectation):
            return index
    return len(suite_definition(table)["expectations"])


def _failure(table: str, prepared: pl.DataFrame, outcome: Any, all_rows: bool) -> RuleFailure:
    kwargs = outcome.expectation_config.kwargs
    meta = outcome.expectation_config.meta or {}
    column = meta.get("reports_column") or kwargs.get("column")
    if column is None and kwargs.get("column_list"):
        column = ",".join(kwargs["column_list"])
    res = outcome.result or {}
    index_key = "unexpected_index_list" if all_rows and "unexpected_index_list" in res else \
        "partial_unexpected_index_list"
    index_rows = [int(d[ROW]) for d in res.get(index_key) or [] if isinstance(d, dict) and ROW in d]
    samples_rows = index_rows[:MAX_SAMPLES]
    lookup = prepared.filter(pl.col(ROW).is_in(samples_rows)) if samples_rows else prepared.head(0)
    if samples_rows and column in prepared.columns:
        by_row = dict(zip(lookup[ROW].to_list(), lookup[column].to_list(), strict=True))
        values = [json_safe(by_row.get(r)) for r in samples_rows]
    elif samples_rows and column and "," in column:
        by_row = {r[0]: r[1:] for r in lookup.select([ROW, *column.split(",")]).rows()}
        values = [list(by_row.get(r, ())) for r in samples_rows]
    else:
        values = [json_safe(v) for v in (res.get("partial_unexpected_list") or [])][:MAX_SAMPLES]
    detail = ""
    if outcome.exception_info and outcome.exception_info.get("raised_exception"):
        detail = str(outcome.exception_info.get("exception_message", ""))[:300]
    elif "observed_value" in res:
        detail = f"observed {json_safe(res['observed_value'])}"
    row_level = "unexpected_count" in res and ("unexpected_index_list" in res or bool(index_rows))
    return RuleFailure(
        table=table, column=column, rule=meta.get("rule", outcome.expectation_config.type),
        expectation=outcome.expectation_config.type, unexpected_count=json_safe(res.get("unexpected_count")),
        sample_values=values, sample_rows=samples_rows, detail=detail,
        severity="warning" if meta.get("severity") == "warning" else "error",
        rows=tuple(index_rows) if all_rows and row_level else None,
    )
