"""Schema and type rules: required columns exist and every value converts to its canonical type.

This runs on a table as read (a CSV comes in as strings), before the great-expectations suite, so that a
string where a number belongs is reported with its row instead of failing a cast. Nothing is repaired:
a value that does not convert becomes null *and* is reported.
"""

from __future__ import annotations

import difflib

import polars as pl

from data_contracts.columns import REQUIRED_COLUMNS, TABLE_SCHEMAS, TIMESTAMP
from data_contracts.report import MAX_SAMPLES, RuleFailure

ROW = "_row"
_DELIMITERS = (";", "\t", "|")


def json_safe(value: object) -> object:
    """A plain Python value for reports: numpy scalars unwrapped, NaN spelled "NaN"."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return "NaN"
    return value


def with_row_numbers(frame: pl.DataFrame) -> pl.DataFrame:
    """Add ``_row`` (0-based data row) unless the frame already carries it."""
    return frame if ROW in frame.columns else frame.with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def _missing_hint(frame: pl.DataFrame, missing: list[str]) -> str:
    hints = []
    found = [c for c in frame.columns if c != ROW]
    if len(found) == 1:
        delimiter = next((d for d in _DELIMITERS if d in found[0]), None)
        if delimiter:
            hints.append(f"the header looks {delimiter!r}-separated, not comma-separated")
    for column in missing:
        close = difflib.get_close_matches(column, [c for c in frame.columns if c != ROW], n=1, cutoff=0.6)
        if close:
            hints.append(f"{close[0]!r} looks like {column!r} (rename it, or map it with --columns: "
                         f"`{column}: {close[0]}`)")
    return "; ".join([f"found columns {found}", *hints])


def _parse_datetimes(text: pl.Series) -> pl.Series:
    """Unix seconds of ISO datetime strings (naive = UTC, or with an offset); null where none applies."""
    frame = text.to_frame("t")
    naive = pl.col("t").str.to_datetime(strict=False, time_zone="UTC", time_unit="us")
    offset = [pl.col("t").str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC")
              for fmt in ("%Y-%m-%d %H:%M:%S%:z", "%Y-%m-%dT%H:%M:%S%:z")]
    return frame.select(pl.coalesce(naive, *offset).dt.epoch("s"))["t"]


def timestamp_seconds(values: pl.Series) -> pl.Series:
    """Unix seconds from numbers, numeric strings, ISO datetimes or a datetime column (null where none fits).

    Numbers are tried first; only the values that are not numbers are parsed as datetimes, which keeps a
    million numeric strings fast.
    """
    if values.dtype.is_temporal():
        return values.cast(pl.Datetime("us")).dt.epoch("s")
    if values.dtype.is_numeric():
        return values.cast(pl.Float64, strict=False).cast(pl.Int64, strict=False)
    text = values.cast(pl.String)
    seconds = text.cast(pl.Int64, strict=False)  # the common case, and the fastest parse
    todo = seconds.is_null() & text.is_not_null()
    if todo.any():  # padded, fractional or exponent numbers, then ISO datetimes
        rest = text.filter(todo).str.strip_chars()
        numbers = rest.cast(pl.Float64, strict=False)
        parsed = pl.select(pl.when(numbers.is_finite()).then(numbers).cast(pl.Int64, strict=False)).to_series()
        still = parsed.is_null() & rest.is_not_null()
        if still.any():
            parsed = parsed.scatter(still.arg_true(), _parse_datetimes(rest.filter(still)))
        seconds = seconds.scatter(todo.arg_true(), parsed)
    return seconds.alias(values.name)


def _converted(column: str, target: pl.DataType) -> pl.Expr:
    expr = pl.col(column)
    if target == pl.String():
        return expr.cast(pl.String)
    if target == pl.Int64():
        as_float = expr.cast(pl.Float64, strict=False)
        # "1" and "1.0" convert; "1.5" does not (not an integer)
        return pl.when(as_float == as_float.round(0)).then(as_float).cast(pl.Int64, strict=False)
    return expr.cast(target, strict=False)


def convert_table(table: str, raw: pl.DataFrame) -> tuple[pl.DataFrame | None, list[RuleFailure]]:
    """Check required columns and convert every canonical column to its type.

    Returns:
        ``(typed, failures)``: ``typed`` has ``_row`` plus the canonical columns (converted; values that
        did not convert are null) plus any other columns as read; it is None when a required column is
        missing (nothing else can be checked then).
    """
    schema = TABLE_SCHEMAS[table]
    frame = with_row_numbers(raw)
    if len(frame.columns) == 1:  # only _row: the file had no header at all
        return None, [RuleFailure(table, None, "table is not empty", "schema", None,
                                  detail="the file is empty: no header and no rows")]
    missing = [c for c in REQUIRED_COLUMNS[table] if c not in frame.columns]
    if missing:
        return None, [RuleFailure(table, ",".join(missing), "required column present", "schema", None,
                                  detail=_missing_hint(frame, missing))]
    conversions = {}
    for column, target in schema.items():
        if column not in frame.columns:
            continue
        if column == TIMESTAMP:
            conversions[column] = pl.lit(timestamp_seconds(frame[column])).alias(column)
        elif frame.schema[column] != target:
            conversions[column] = _converted(column, target).alias(column)
    typed = frame.with_columns(list(conversions.values()))
    # one pass to count values that did not convert, then rows only for the columns that have some
    lost = {c: (typed[c].is_null() & frame[c].is_not_null()) for c in conversions}
    failures = []
    for column, mask in lost.items():
        if not mask.any():
            continue
        bad = frame.filter(mask).select(ROW, pl.col(column).alias("raw"))
        target = schema[column]
        failures.append(RuleFailure(
            table, column, f"values convert to {target}" + (" (Unix seconds or ISO datetime)"
                                                            if column == TIMESTAMP else ""),
            "type", bad.height, [json_safe(v) for v in bad["raw"].head(MAX_SAMPLES).to_list()],
            bad[ROW].head(MAX_SAMPLES).to_list(), rows=tuple(bad[ROW].to_list()),
        ))
    return typed, failures
