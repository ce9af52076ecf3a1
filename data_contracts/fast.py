"""A polars evaluator of the great-expectations suites, for the common case: data that passes.

great-expectations is the reference: it reads the same JSON suites and writes the reports. It costs about
2 s on a million rows, while polars needs about a tenth of that, so ``validate_table(engine="auto")``
first evaluates the suite here and runs great-expectations only when something fails (to report it).
Users edit the suites, so the evaluator is fail-safe: it models the expectation types the suites use and,
for each, the options listed in ``MODELLED``; an unknown type, an option it does not model set to anything
but great-expectations' default (``mostly``, ``row_condition``, ``ignore_row_if``...), an unknown top-level
key, or any error while evaluating (a regex polars cannot compile) raises :class:`Unmodelled`, and the caller
runs great-expectations instead. The semantics follow great-expectations on pandas, quirks included (a missing value is
None or NaN; ``expect_column_values_to_be_of_type("int64")`` fails on an integer column with nulls because
pandas stores it as float64); a test checks that both engines agree on every rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

#: The options each expectation type is evaluated with here (any value).
MODELLED: dict[str, frozenset[str]] = {
    "expect_table_row_count_to_be_between": frozenset({"min_value", "max_value", "strict_min", "strict_max"}),
    "expect_column_values_to_not_be_null": frozenset({"column"}),
    "expect_column_values_to_not_match_regex": frozenset({"column", "regex"}),
    "expect_column_values_to_be_of_type": frozenset({"column", "type_"}),
    "expect_column_values_to_be_between": frozenset({"column", "min_value", "max_value", "strict_min",
                                                     "strict_max"}),
    "expect_compound_columns_to_be_unique": frozenset({"column_list"}),
    "expect_column_values_to_be_unique": frozenset({"column"}),
    "expect_column_values_to_be_in_set": frozenset({"column", "value_set"}),
}
SUPPORTED = frozenset(MODELLED)
#: Options that never change whether an expectation passes (how results are reported or raised: any error
#: here defers to great-expectations anyway).
NEUTRAL = frozenset({"result_format", "catch_exceptions"})
#: great-expectations' defaults of the options not modelled: at these values they change nothing.
DEFAULTS: dict[str, Any] = {"mostly": 1, "row_condition": None, "condition_parser": None, "windows": None,
                            "batch_id": None, "ignore_row_if": "all_values_are_missing"}
#: Top-level keys of an expectation that do not take part in its verdict.
DESCRIPTIVE = frozenset({"type", "kwargs", "meta", "notes", "description", "id", "rendered_content", "severity"})


class Unmodelled(KeyError):
    """The evaluator cannot give great-expectations' verdict on this expectation: run great-expectations."""


def check_modelled(expectation: dict[str, Any]) -> None:
    """Raise :class:`Unmodelled` unless every key and option of ``expectation`` is evaluated here exactly."""
    kind, kwargs = expectation["type"], expectation.get("kwargs", {})
    if kind not in MODELLED:
        raise Unmodelled(f"expectation type {kind}")
    unknown = set(expectation) - DESCRIPTIVE
    for option, value in kwargs.items():
        if option in MODELLED[kind] or option in NEUTRAL:
            continue
        if option not in DEFAULTS or value != DEFAULTS[option]:
            unknown.add(option)
    if unknown:
        raise Unmodelled(f"{kind}: option(s) {sorted(unknown)}")


@dataclass(frozen=True)
class FastOutcome:
    """One expectation's verdict: did it pass, and how many rows broke it."""

    expectation: dict[str, Any]
    success: bool
    unexpected_count: int | None


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    if isinstance(value, dict) and "$PARAMETER" in value:
        return parameters[value["$PARAMETER"]]
    return value


def _missing(frame: pl.DataFrame, column: str) -> pl.Expr:
    col = pl.col(column)
    return col.is_null() | col.is_nan() if frame.schema[column].is_float() else col.is_null()


def _pandas_dtype(frame: pl.DataFrame, column: str) -> str:
    dtype = frame.schema[column]
    if dtype == pl.String:
        return "str"
    if dtype.is_integer():
        return "float64" if frame[column].null_count() else str(dtype).lower()
    if dtype == pl.Boolean:
        return "object" if frame[column].null_count() else "bool"
    return str(dtype).lower()


def _unexpected(frame: pl.DataFrame, kind: str, kwargs: dict[str, Any], parameters: dict[str, Any]) -> pl.Expr:
    """A boolean expression: True where a row breaks a column-map expectation."""
    column = kwargs.get("column")
    present = ~_missing(frame, column) if column else pl.lit(True)
    col = pl.col(column) if column else None
    if kind == "expect_column_values_to_not_be_null":
        return ~present
    if kind == "expect_column_values_to_not_match_regex":
        return present & col.cast(pl.String).str.contains(kwargs["regex"])
    if kind == "expect_column_values_to_be_between":
        low, high = _resolve(kwargs.get("min_value"), parameters), _resolve(kwargs.get("max_value"), parameters)
        ok = pl.lit(True)
        if low is not None:
            ok = ok & ((col > low) if kwargs.get("strict_min") else (col >= low))
        if high is not None:
            ok = ok & ((col < high) if kwargs.get("strict_max") else (col <= high))
        return present & ~ok.fill_null(False)
    if kind == "expect_column_values_to_be_in_set":
        values = _resolve(kwargs["value_set"], parameters)
        return present & ~col.is_in(pl.Series(values).cast(frame.schema[column]).implode())
    raise KeyError(kind)


def _duplicates(frame: pl.DataFrame, kind: str, kwargs: dict[str, Any]) -> int:
    """Rows minus distinct keys among rows with a key: 0 means unique.

    Keys are compared by hash (a third of the cost of comparing them): a collision can only make unique
    data look duplicated, which sends it to great-expectations for an exact verdict, never the reverse.
    """
    columns = kwargs["column_list"] if kind == "expect_compound_columns_to_be_unique" else [kwargs["column"]]
    keyed = frame.filter(pl.any_horizontal([~_missing(frame, c) for c in columns]))
    if keyed.is_empty():
        return 0
    return keyed.height - int(keyed.select(pl.struct(columns).hash().n_unique()).item())


def evaluate(frame: pl.DataFrame, expectations: list[dict[str, Any]], parameters: dict[str, Any]) -> list[FastOutcome]:
    """Evaluate the (already filtered) suite expectations on ``frame``.

    Raises:
        Unmodelled: an expectation, an option or a value this evaluator cannot judge exactly (callers run
            great-expectations instead).
    """
    for expectation in expectations:
        check_modelled(expectation)
    try:
        return _evaluate(frame, expectations, parameters)
    except (pl.exceptions.PolarsError, ValueError, TypeError, KeyError) as error:  # e.g. a regex polars rejects
        raise Unmodelled(f"{type(error).__name__}: {error}") from error


def _evaluate(frame: pl.DataFrame, expectations: list[dict[str, Any]], parameters: dict[str, Any]
              ) -> list[FastOutcome]:
    outcomes: list[FastOutcome] = []
    column_maps: list[tuple[dict[str, Any], pl.Expr]] = []
    for expectation in expectations:
        kind, kwargs = expectation["type"], expectation["kwargs"]
        missing_columns = [c for c in ([kwargs["column"]] if "column" in kwargs else kwargs.get("column_list", []))
                           if c not in frame.columns]
        if missing_columns:
            outcomes.append(FastOutcome(expectation, False, None))
        elif kind == "expect_table_row_count_to_be_between":
            low = _resolve(kwargs.get("min_value"), parameters)
            high = _resolve(kwargs.get("max_value"), parameters)
            ok = ((low is None or (frame.height > low if kwargs.get("strict_min") else frame.height >= low))
                  and (high is None or (frame.height < high if kwargs.get("strict_max") else frame.height <= high)))
            outcomes.append(FastOutcome(expectation, ok, None))
        elif kind in ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"):
            duplicates = _duplicates(frame, kind, kwargs)
            outcomes.append(FastOutcome(expectation, duplicates == 0, duplicates))
        elif kind == "expect_column_values_to_be_of_type":
            outcomes.append(FastOutcome(expectation, _pandas_dtype(frame, kwargs["column"]) == kwargs["type_"], None))
        else:
            column_maps.append((expectation, _unexpected(frame, kind, kwargs, parameters).sum()))
    if column_maps:
        counts = frame.select([expr.alias(f"e{i}") for i, (_, expr) in enumerate(column_maps)]).row(0)
        outcomes += [FastOutcome(e, int(n or 0) == 0, int(n or 0)) for (e, _), n in zip(column_maps, counts,
                                                                                         strict=True)]
    return outcomes
