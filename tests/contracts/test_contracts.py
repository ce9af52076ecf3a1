"""Each rule of the interaction and item contracts: a passing frame and a failing frame.

Every rule exists because a real export broke that way (see each rule's ``why`` in data_contracts/*.json).
"""

from __future__ import annotations

import polars as pl
import pytest

from data_contracts.contracts import ContractViolation, suite_definition, suite_version, validate_table

PARAMS = {"rating_min": 0.0, "rating_max": 5.0}


def interactions(**overrides) -> pl.DataFrame:
    base = {"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "timestamp": [10, 20, 30],
            "rating": [4.0, 3.0, 5.0]}
    base.update(overrides)
    return pl.DataFrame(base, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                                      "rating": pl.Float64})


ITEMS = pl.DataFrame({"item_id": ["a", "b"], "domain": ["books", "books"], "title": ["A", "B"],
                      "genres": ["books", "books"]})


def check(frame: pl.DataFrame, table: str = "interactions"):
    return validate_table(table, frame, parameters=PARAMS, known_items=ITEMS["item_id"])


def test_clean_tables_pass():
    assert check(interactions()).success
    assert validate_table("items", ITEMS).success


@pytest.mark.parametrize("frame,column,rule,rows", [
    (interactions(user_id=["u1", None, "u2"]), "user_id", "key is not null", [1]),
    (interactions(item_id=["a", "b", None]), "item_id", "key is not null", [2]),
    (interactions(rating=[4.0, 9.0, 5.0]), "rating", "rating within the declared scale", [1]),
    (interactions(rating=[-1.0, 3.0, 5.0]), "rating", "rating within the declared scale", [0]),
    (interactions(item_id=["a", "b", "zzz"]), "item_id", "item exists in items (referential integrity)", [2]),
    (interactions(user_id=["u1", "u1", "u1"], item_id=["a", "a", "b"], timestamp=[10, 10, 30]),
     "user_id,item_id,timestamp", "no duplicate (user_id, item_id, timestamp) rows", [0, 1]),
])
def test_each_rule_names_table_column_rule_and_rows(frame, column, rule, rows):
    report = check(frame)
    assert not report.success
    failure = next(f for f in report.failures if f.rule == rule)
    assert (failure.table, failure.column) == ("interactions", column)
    assert failure.sample_rows == rows
    assert failure.unexpected_count == len(rows)
    with pytest.raises(ContractViolation, match=rule.replace("(", r"\(").replace(")", r"\)")):
        report.raise_for_failures()


def test_unknown_item_sample_shows_the_id_not_a_flag():
    failure = check(interactions(item_id=["a", "b", "zzz"])).failures[0]
    assert failure.sample_values == ["zzz"]


def test_rating_scale_is_a_parameter():
    frame = interactions(rating=[4.0, 9.0, 10.0])
    assert validate_table("interactions", frame, parameters={"rating_min": 0, "rating_max": 10},
                          known_items=ITEMS["item_id"]).success


def test_empty_interactions_fail():
    report = check(interactions(user_id=[], item_id=[], timestamp=[], rating=[]))
    assert "table is not empty" in [f.rule for f in report.failures]


@pytest.mark.parametrize("items,rule,rows", [
    (ITEMS.with_columns(pl.Series("domain", ["books", None])), "every item has a domain", [1]),
    (pl.concat([ITEMS, ITEMS.head(1)]), "item_id is unique", [0, 2]),
])
def test_item_rules(items, rule, rows):
    report = validate_table("items", items)
    failure = next(f for f in report.failures if f.rule == rule)
    assert failure.table == "items" and failure.sample_rows == rows


def test_suites_are_versioned_files_with_a_reason_per_rule():
    for table in ("interactions", "items"):
        assert suite_version(table) >= 1
        for expectation in suite_definition(table)["expectations"]:
            assert expectation["meta"]["rule"] and expectation["meta"]["why"]
    with pytest.raises(FileNotFoundError, match="no data contract"):
        suite_definition("orders")


def test_report_renders_markdown():
    text = check(interactions(rating=[4.0, 9.0, 5.0])).to_markdown()
    assert "FAILED" in text and "| rating |" in text
