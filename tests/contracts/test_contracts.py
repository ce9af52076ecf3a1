"""Each rule of the table contracts: a passing frame and a failing frame naming table, column, rule and rows.

Every rule exists because real exports break that way (see each rule's ``why`` in data_contracts/*.json).
"""

from __future__ import annotations

import polars as pl
import pytest

from data_contracts.contracts import suite_definition, suite_version, validate_table
from data_contracts.report import ContractViolation
from data_contracts.validation import ContractSettings

NOW = 1_800_000_000.0
PARAMS = ContractSettings().parameters(NOW)


def interactions(**overrides) -> pl.DataFrame:
    base = {"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "timestamp": [978_300_000, 978_300_100,
                                                                                     978_300_200],
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
    (interactions(user_id=["u1", "  ", "u2"]), "user_id", "key is not blank", [1]),
    (interactions(item_id=["a", "b ", "a"]), "item_id", "key has no leading or trailing whitespace", [1]),
    (interactions(rating=[4.0, 9.0, 5.0]), "rating", "rating within the declared scale", [1]),
    (interactions(rating=[-1.0, 3.0, 5.0]), "rating", "rating within the declared scale", [0]),
    (interactions(rating=[4.0, float("inf"), 5.0]), "rating", "rating within the declared scale", [1]),
    (interactions(rating=[4.0, float("nan"), 5.0]), "rating", "rating is a finite number", [1]),
    (interactions(timestamp=[-5, 978_300_100, 978_300_200]), "timestamp",
     "timestamp within the sane window (not before timestamp_min, not in the future)", [0]),
    (interactions(timestamp=[978_300_000, 978_300_100, int(NOW) + 10 * 86_400]), "timestamp",
     "timestamp within the sane window (not before timestamp_min, not in the future)", [2]),
    (interactions(item_id=["a", "b", "zzz"]), "item_id", "item exists in items (referential integrity)", [2]),
    (interactions(user_id=["u1", "u1", "u1"], item_id=["a", "a", "b"], timestamp=[10**9, 10**9, 10**9 + 5]),
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


def test_unicode_ids_are_fine():
    assert check(interactions(user_id=["josé", "josé", "用户"])).success


def test_unknown_item_sample_shows_the_id_not_a_flag():
    failure = check(interactions(item_id=["a", "b", "zzz"])).failures[0]
    assert failure.sample_values == ["zzz"]


def test_rating_scale_is_a_parameter():
    frame = interactions(rating=[4.0, 9.0, 10.0])
    params = ContractSettings(rating_max=10).parameters(NOW)
    assert validate_table("interactions", frame, parameters=params, known_items=ITEMS["item_id"]).success


def test_empty_interactions_fail():
    report = check(interactions(user_id=[], item_id=[], timestamp=[], rating=[]))
    assert "table is not empty" in [f.rule for f in report.failures]


@pytest.mark.parametrize("items,rule,rows", [
    (ITEMS.with_columns(pl.Series("domain", ["books", None])), "every item has a domain", [1]),
    (ITEMS.with_columns(pl.Series("domain", ["books", " "])), "domain is not blank", [1]),
    (pl.concat([ITEMS, ITEMS.head(1)]), "item_id is unique", [0, 2]),
])
def test_item_rules(items, rule, rows):
    report = validate_table("items", items)
    failure = next(f for f in report.failures if f.rule == rule)
    assert failure.table == "items" and failure.sample_rows == rows


def impressions(**overrides) -> pl.DataFrame:
    base = {"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": [978_300_000, 978_300_100],
            "clicked": [1, 0], "propensity": [0.5, 1.0]}
    base.update(overrides)
    return pl.DataFrame(base, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                                      "clicked": pl.Int64, "propensity": pl.Float64})


@pytest.mark.parametrize("frame,rule,rows", [
    (impressions(clicked=[1, 2]), "clicked is 0 or 1", [1]),
    (impressions(propensity=[0.0, 1.0]), "propensity in (0, 1]", [0]),
    (impressions(propensity=[0.5, 1.5]), "propensity in (0, 1]", [1]),
    (impressions(item_id=["a", "nope"]), "item exists in items (referential integrity)", [1]),
])
def test_impression_rules(frame, rule, rows):
    report = validate_table("impressions", frame, parameters=PARAMS, known_items=ITEMS["item_id"])
    failure = next(f for f in report.failures if f.rule == rule)
    assert failure.table == "impressions" and failure.sample_rows == rows


def test_propensity_is_optional():
    frame = impressions().drop("propensity")
    assert validate_table("impressions", frame, parameters=PARAMS, known_items=ITEMS["item_id"]).success


def test_users_rules():
    users = pl.DataFrame({"user_id": ["u1", "u1", "u2"], "age": ["20", "20", "30"]})
    report = validate_table("users", users)
    assert [f.rule for f in report.failures] == ["user_id is unique"]


def test_suites_are_versioned_files_with_a_reason_per_rule():
    for table in ("interactions", "items", "users", "impressions"):
        assert suite_version(table) >= 1
        for expectation in suite_definition(table)["expectations"]:
            assert expectation["meta"]["rule"] and expectation["meta"]["why"]
    with pytest.raises(FileNotFoundError, match="no data contract"):
        suite_definition("orders")


def test_report_renders_markdown():
    text = check(interactions(rating=[4.0, 9.0, 5.0])).to_markdown()
    assert "FAILED" in text and "| rating |" in text
