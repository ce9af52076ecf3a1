"""Data contracts: great-expectations suites kept as reviewable JSON files beside this module.

``validate_table`` runs one table's suite on a polars frame (converted to pandas at this boundary only,
since great-expectations has no polars support) and returns a :class:`ContractReport`;
``ContractReport.raise_for_failures`` turns failed rules into a :class:`ContractViolation` naming the
table, column and rule, with counts, sample values and their row numbers. Contracts fail, never fix.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import polars as pl

from data_contracts.columns import ITEM_ID

logger = logging.getLogger(__name__)

CONTRACTS_DIR = Path(__file__).parent
ROW = "_row"
ITEM_KNOWN = "_item_in_items"
MAX_SAMPLES = 10


@dataclass(frozen=True)
class RuleFailure:
    """One failed rule: where, what, how often and examples (row = 0-based data row of the table)."""

    table: str
    column: str | None
    rule: str
    expectation: str
    unexpected_count: int | None
    sample_values: list[Any] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    detail: str = ""

    def describe(self) -> str:
        """One readable line."""
        where = f"{self.table}.{self.column}" if self.column else self.table
        count = f"{self.unexpected_count} row(s)" if self.unexpected_count is not None else "failed"
        text = f"{where}: rule '{self.rule}' ({self.expectation}): {count}"
        if self.sample_values:
            pairs = ", ".join(f"row {r}: {v!r}" for r, v in zip(self.sample_rows, self.sample_values, strict=False))
            text += f"; e.g. {pairs}" if self.sample_rows else f"; e.g. {self.sample_values}"
        if self.detail:
            text += f" ({self.detail})"
        return text


@dataclass(frozen=True)
class ContractReport:
    """Outcome of one table's contract."""

    table: str
    suite_version: int
    rows: int
    checked_rules: int
    failures: list[RuleFailure]

    @property
    def success(self) -> bool:
        """True when every rule passed."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"table": self.table, "suite_version": self.suite_version, "rows": self.rows,
                "checked_rules": self.checked_rules, "success": self.success,
                "failures": [asdict(f) for f in self.failures]}

    def to_markdown(self) -> str:
        """A human-readable report."""
        status = "PASSED" if self.success else "FAILED"
        lines = [f"### `{self.table}` contract v{self.suite_version}: {status}",
                 f"{self.rows} rows, {self.checked_rules} rules, {len(self.failures)} failed.", ""]
        if self.failures:
            lines += ["| column | rule | expectation | rows | samples (row: value) |", "|---|---|---|---|---|"]
            for f in self.failures:
                samples = "; ".join(f"{r}: {v!r}" for r, v in zip(f.sample_rows, f.sample_values, strict=False))
                lines.append(f"| {f.column or '-'} | {f.rule} | `{f.expectation}` | {f.unexpected_count} | "
                             f"{samples.replace('|', '/') or f.detail} |")
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`ContractViolation` when a rule failed."""
        if self.failures:
            raise ContractViolation([self])


class ContractViolation(ValueError):
    """Data broke its contract. ``reports`` holds every table's report; ``str()`` lists each failed rule."""

    def __init__(self, reports: list[ContractReport]) -> None:
        self.reports = reports
        failures = [f for r in reports for f in r.failures]
        lines = [f"data contract violated: {len(failures)} rule(s) failed"] + [f"  - {f.describe()}" for f in failures]
        super().__init__("\n".join(lines))

    @property
    def failures(self) -> list[RuleFailure]:
        """Every failed rule of every table."""
        return [f for r in self.reports for f in r.failures]

    def to_markdown(self) -> str:
        """Markdown report of every table."""
        return "\n\n".join(r.to_markdown() for r in self.reports)


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


def _json_safe(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


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
    """Add the helper columns the suites check: row numbers and, for interactions, item-in-catalogue flags.

    The referential check is computed with polars (a join-free ``is_in``) because a great-expectations
    value set of 100k ids is slow; the suite then checks the flag.
    """
    out = frame.with_row_index(ROW)
    if table == "interactions":
        if known_items is None:
            out = out.with_columns(pl.lit(True).alias(ITEM_KNOWN))
        else:
            out = out.with_columns(pl.col(ITEM_ID).is_in(known_items.implode()).fill_null(False).alias(ITEM_KNOWN))
    return out


def validate_table(
    table: str,
    frame: pl.DataFrame,
    *,
    parameters: dict[str, Any] | None = None,
    known_items: pl.Series | None = None,
) -> ContractReport:
    """Run ``table``'s suite on ``frame`` and report every failed rule (nothing is raised or fixed here).

    Args:
        table: ``interactions`` or ``items``.
        frame: the table as a polars frame with canonical column names.
        parameters: values for ``$PARAMETER`` placeholders (e.g. ``rating_min``, ``rating_max``).
        known_items: item ids of the items table, for the referential check of interactions.
    """
    definition = suite_definition(table)
    prepared = prepare_frame(table, frame, known_items=known_items)
    gx, context = _gx()
    body = {k: v for k, v in definition.items() if k != "id"}
    suite = gx.ExpectationSuite(**json.loads(json.dumps(body)))
    batch = (
        context.data_sources.add_or_update_pandas("transferrec")
        .add_dataframe_asset(table)
        .add_batch_definition_whole_dataframe("all")
        .get_batch(batch_parameters={"dataframe": prepared.to_pandas()})
    )
    result = batch.validate(
        suite,
        result_format={"result_format": "SUMMARY", "unexpected_index_column_names": [ROW],
                       "partial_unexpected_count": MAX_SAMPLES},
        expectation_parameters=parameters or {},
    )
    failures: list[RuleFailure] = []
    for outcome in result.results:
        if outcome.success:
            continue
        kwargs = outcome.expectation_config.kwargs
        meta = outcome.expectation_config.meta or {}
        column = meta.get("reports_column") or kwargs.get("column")
        if column is None and kwargs.get("column_list"):
            column = ",".join(kwargs["column_list"])
        res = outcome.result or {}
        rows = [int(d[ROW]) for d in res.get("partial_unexpected_index_list") or [] if ROW in d][:MAX_SAMPLES]
        if rows and column in frame.columns:
            values = [_json_safe(v) for v in frame[column].gather(rows).to_list()]
        elif rows and column and "," in column:
            values = frame.select(column.split(",")).gather(rows).rows()
        else:
            values = [_json_safe(v) for v in (res.get("partial_unexpected_list") or [])][:MAX_SAMPLES]
        detail = ""
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            detail = str(outcome.exception_info.get("exception_message", ""))[:300]
        elif "observed_value" in res:
            detail = f"observed {_json_safe(res['observed_value'])}"
        failures.append(RuleFailure(
            table=table, column=column, rule=meta.get("rule", outcome.expectation_config.type),
            expectation=outcome.expectation_config.type,
            unexpected_count=_json_safe(res.get("unexpected_count")),
            sample_values=values, sample_rows=rows, detail=detail,
        ))
    return ContractReport(table, int(definition["meta"]["version"]), frame.height,
                          len(definition["expectations"]), failures)


def check_schema(table: str, frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> ContractReport:
    """Check that the required columns exist and that every value converts to its canonical type.

    This runs before the great-expectations suite, on the frame as read (e.g. all strings from a CSV), so
    that "a string where a number belongs" is reported with its row instead of failing a cast.
    """
    failures: list[RuleFailure] = []
    missing = [c for c in schema if c not in frame.columns]
    if missing:
        failures.append(RuleFailure(table, ",".join(missing), "required column present", "schema",
                                    None, detail=f"found columns {frame.columns}"))
    for column, dtype in schema.items():
        if column in missing:
            continue
        source = pl.col(column)
        if dtype == pl.Int64() and frame.schema[column] == pl.String():
            # Unix seconds may arrive as "978300760" or "978300760.0".
            source = source.cast(pl.Float64, strict=False)
        converted = frame.select(source.cast(dtype, strict=False).alias("v"), pl.col(column).alias("raw"))
        bad = converted.with_row_index(ROW).filter(pl.col("v").is_null() & pl.col("raw").is_not_null())
        if bad.height:
            failures.append(RuleFailure(
                table, column, f"values convert to {dtype}", "type", bad.height,
                [_json_safe(v) for v in bad["raw"].head(MAX_SAMPLES).to_list()],
                bad[ROW].head(MAX_SAMPLES).to_list(),
            ))
    return ContractReport(table, suite_version(table), frame.height, len(schema) + 1, failures)
