"""Whole-dataset validation: type conversion, cross-table rules, minimum volume and the quarantine policy."""

from __future__ import annotations

import polars as pl
import pytest

from data_contracts.report import ContractViolation
from data_contracts.validation import VIOLATIONS, ContractSettings, validate_tables

NOW = 1_800_000_000.0


def raw_tables(synthetic_dataset, interactions: pl.DataFrame | None = None) -> dict[str, pl.DataFrame | None]:
    """The synthetic tables as a CSV export would deliver them: every value a string."""
    inter = synthetic_dataset.interactions if interactions is None else interactions
    as_text = inter.with_columns(pl.all().cast(pl.String))
    return {"interactions": as_text, "items": synthetic_dataset.items, "users": synthetic_dataset.users,
            "impressions": None}


def break_rows(frame: pl.DataFrame, rows: list[int], column: str, value: str) -> pl.DataFrame:
    text = frame.with_columns(pl.all().cast(pl.String))
    return text.with_columns(pl.when(pl.int_range(pl.len()).is_in(rows)).then(pl.lit(value))
                             .otherwise(pl.col(column)).alias(column))


def test_valid_strings_convert_to_canonical_types(synthetic_dataset):
    result = validate_tables(raw_tables(synthetic_dataset), ContractSettings(target_domain="games"), now=NOW)
    inter = result.tables["interactions"]
    assert inter.schema == {"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64, "rating": pl.Float64}
    assert inter.height == synthetic_dataset.interactions.height
    assert {r.table for r in result.reports} == {"interactions", "items", "users"}
    assert all(r.success for r in result.reports) and result.quarantine == {}


def test_iso_datetimes_are_accepted(synthetic_dataset):
    inter = synthetic_dataset.interactions.with_columns(
        pl.from_epoch("timestamp", time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%S").alias("timestamp"))
    result = validate_tables(raw_tables(synthetic_dataset, inter), ContractSettings(), now=NOW)
    assert result.tables["interactions"]["timestamp"].to_list() == synthetic_dataset.interactions["timestamp"].to_list()


def test_fail_policy_reports_every_broken_rule_at_once(synthetic_dataset):
    inter = break_rows(synthetic_dataset.interactions, [3], "rating", "four")
    inter = inter.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(pl.lit("nope")).otherwise(
        pl.col("item_id")).alias("item_id"))
    with pytest.raises(ContractViolation) as err:
        validate_tables(raw_tables(synthetic_dataset, inter), ContractSettings(), now=NOW)
    found = {(f.column, f.rule, tuple(f.sample_rows)) for f in err.value.failures}
    assert ("rating", "values convert to Float64", (3,)) in found
    assert ("item_id", "item exists in items (referential integrity)", (7,)) in found
    assert len(err.value.failures) == 2  # the unconvertible row is not reported again by other rules


def test_minimum_target_volume(synthetic_dataset):
    with pytest.raises(ContractViolation) as err:
        validate_tables(raw_tables(synthetic_dataset),
                        ContractSettings(target_domain="games", min_target_items=100), now=NOW)
    (failure,) = err.value.failures
    assert failure.rule == "target domain has at least 100 items" and "40 items" in failure.detail


def test_quarantine_moves_bad_rows_and_keeps_the_rest(synthetic_dataset):
    inter = break_rows(synthetic_dataset.interactions, [0, 5], "rating", "9")
    inter = pl.concat([inter, inter.slice(10, 1)])  # a duplicate of row 10 at the end
    last = inter.height - 1
    result = validate_tables(raw_tables(synthetic_dataset, inter), ContractSettings(on_violation="quarantine"),
                             now=NOW)
    quarantined = result.quarantine["interactions"]
    assert quarantined["_row"].to_list() == [0, 5, last]  # the first copy of the duplicate stays
    assert quarantined[VIOLATIONS].to_list() == ["rating within the declared scale"] * 2 + [
        "no duplicate (user_id, item_id, timestamp) rows"]
    assert result.tables["interactions"].height == inter.height - 3
    report = next(r for r in result.reports if r.table == "interactions")
    assert report.success and report.quarantined_rows == 3
    assert "Quarantined 3 row(s)" in report.to_markdown()


def test_quarantine_refuses_when_too_little_is_left(synthetic_dataset):
    n = synthetic_dataset.interactions.height
    inter = break_rows(synthetic_dataset.interactions, list(range(n // 10)), "rating", "9")
    with pytest.raises(ContractViolation) as err:
        validate_tables(raw_tables(synthetic_dataset, inter), ContractSettings(on_violation="quarantine"), now=NOW)
    assert err.value.failures[0].rule == "clean share at least 95%"


def test_quarantine_never_hides_table_level_failures(synthetic_dataset):
    inter = synthetic_dataset.interactions.drop("rating")
    with pytest.raises(ContractViolation) as err:
        validate_tables(raw_tables(synthetic_dataset, inter), ContractSettings(on_violation="quarantine"), now=NOW)
    assert err.value.failures[0].rule == "required column present"


def test_a_single_bad_row_among_a_million_is_found(tmp_path):
    n = 1_000_000
    frame = pl.DataFrame({
        "user_id": (pl.int_range(n, eager=True) % 5000).cast(pl.String),
        "item_id": (pl.int_range(n, eager=True) % 700).cast(pl.String),
        "timestamp": pl.int_range(n, eager=True) + 978_300_000,
        "rating": pl.Series([4.0] * n),
    })
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == 654_321).then(7.5).otherwise(pl.col("rating"))
                               .alias("rating"))
    path = tmp_path / "interactions.csv"
    frame.write_csv(path)
    items = pl.DataFrame({"item_id": [str(i) for i in range(700)], "domain": ["d"] * 700})
    with pytest.raises(ContractViolation) as err:
        validate_tables({"interactions": pl.read_csv(path, infer_schema=False), "items": items},
                        ContractSettings(), now=NOW)
    (failure,) = err.value.failures
    assert (failure.column, failure.rule, failure.sample_rows, failure.unexpected_count) == (
        "rating", "rating within the declared scale", [654_321], 1)
