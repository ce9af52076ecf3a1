"""The polars evaluator agrees with great-expectations on every rule of every suite.

validate_table(engine="auto") trusts the polars verdict when all rules pass, so a rule that polars passes
while great-expectations fails it would let bad data through: these cases pin both engines together.
"""

from __future__ import annotations

import polars as pl
import pytest

from data_contracts import fast
from data_contracts.contracts import applicable, prepare_frame, suite_definition, validate_table
from data_contracts.validation import ContractSettings

PARAMS = ContractSettings().parameters(1_800_000_000.0)
KNOWN = pl.Series("item_id", ["a", "b"])


def inter(**overrides) -> pl.DataFrame:
    base = {"user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"],
            "timestamp": [978_300_000, 978_300_100, 978_300_200], "rating": [4.0, 3.0, 5.0]}
    base.update(overrides)
    return pl.DataFrame(base, schema={"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                                      "rating": pl.Float64})


CASES = [
    ("interactions", inter()),
    ("interactions", inter(user_id=["u1", None, "u2"])),
    ("interactions", inter(user_id=["u1", "", "u2"])),
    ("interactions", inter(user_id=["u1", "\t", "u2"])),
    ("interactions", inter(item_id=["a", "b\u00a0", "a"])),  # no-break space
    ("interactions", inter(item_id=["a", "b\x1c", "a"])),  # whitespace to Python, not to Unicode
    ("interactions", inter(user_id=["u1", "\u2003", "u2"])),  # em space
    ("interactions", inter(user_id=["josé", "用户", "u2"])),
    ("interactions", inter(rating=[4.0, float("nan"), 5.0])),
    ("interactions", inter(rating=[4.0, float("inf"), 5.0])),
    ("interactions", inter(rating=[None, 3.0, 5.0])),
    ("interactions", inter(rating=[0.0, 5.0, 5.0])),
    ("interactions", inter(timestamp=[None, 978_300_100, 978_300_200])),
    ("interactions", inter(timestamp=[-1, 978_300_100, 2_000_000_000])),
    ("interactions", inter(user_id=["u1", "u1", "u1"], item_id=["a", "a", "b"], timestamp=[5, 5, 6])),
    ("interactions", inter(user_id=[None, None, "u1"], item_id=["a", "a", "b"])),
    ("interactions", inter(item_id=["a", "b", "zzz"])),
    ("interactions", inter(user_id=[], item_id=[], timestamp=[], rating=[])),
    ("items", pl.DataFrame({"item_id": ["a", "b", "a"], "domain": ["x", None, " "]})),
    ("items", pl.DataFrame({"item_id": ["a", "b"], "domain": ["x", "y"]})),
    ("users", pl.DataFrame({"user_id": ["u1", "u1", None, "u3 "]})),
    ("impressions", pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "zzz"], "timestamp": [978_300_000] * 2,
                                  "clicked": [1, 2], "propensity": [0.0, 1.0]})),
    ("impressions", pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "b"], "timestamp": [978_300_000] * 2,
                                  "clicked": [None, 0]})),
]


@pytest.mark.parametrize("table,frame", CASES)
def test_polars_and_great_expectations_agree(table, frame):
    prepared = prepare_frame(table, frame, known_items=KNOWN)
    expectations = applicable(suite_definition(table), prepared.columns)
    polars_failed = {(o.expectation["type"], o.expectation["meta"]["rule"], str(o.expectation["kwargs"]))
                     for o in fast.evaluate(prepared, expectations, PARAMS) if not o.success}
    report = validate_table(table, frame, parameters=PARAMS, known_items=KNOWN, engine="great_expectations")
    gx_failed = {f.rule for f in report.failures + report.warnings}
    assert {rule for _, rule, _ in polars_failed} == gx_failed
    auto = validate_table(table, frame, parameters=PARAMS, known_items=KNOWN, engine="auto")
    assert [f.to_dict() for f in auto.failures] == [f.to_dict() for f in report.failures]
