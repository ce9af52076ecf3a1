"""``transferrec validate`` on files a data team really sends: exit 0 pass, 1 violation, 2 unreadable."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from flows.cli import main

HEADER = "user_id,item_id,timestamp,rating\n"
GOOD = "u1,a,978300760,4\nu1,b,978300800,3\nu2,a,978300900,5\n"


def write(tmp_path: Path, text: str, name: str = "interactions.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def put(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def validate(path: Path, capsys, *extra: str) -> tuple[int, dict, str]:
    code = main(["validate", str(path), "--table", "interactions", "--json", *extra])
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return code, (json.loads(lines[-1]) if lines else {}), captured.err


def rules(report: dict) -> set[tuple[str | None, str]]:
    return {(f["column"], f["rule"]) for f in report["failures"]}


def test_a_clean_file_passes(tmp_path, capsys):
    code, report, _ = validate(write(tmp_path, HEADER + GOOD), capsys)
    assert code == 0 and report["success"] and report["rows"] == 3


@pytest.mark.parametrize("name,content,expected", [
    ("empty file", "", (None, "table is not empty")),
    ("header only", HEADER, (None, "table is not empty")),
    ("wrong delimiter", HEADER.replace(",", ";") + GOOD.replace(",", ";"),
     ("user_id,item_id,timestamp,rating", "required column present")),
    ("missing column", "user_id,item_id,timestamp\nu1,a,978300760\n", ("rating", "required column present")),
    ("renamed column", HEADER.replace("user_id", "userId") + GOOD, ("user_id", "required column present")),
    ("string for a number", HEADER + GOOD + "u3,c,978300999,four\n", ("rating", "values convert to Float64")),
    ("NaN rating", HEADER + GOOD + "u3,c,978300999,NaN\n", ("rating", "rating is a finite number")),
    ("infinite rating", HEADER + GOOD + "u3,c,978300999,inf\n", ("rating", "rating within the declared scale")),
    ("negative timestamp", HEADER + GOOD + "u3,c,-978300999,4\n",
     ("timestamp", "timestamp within the sane window (not before timestamp_min, not in the future)")),
    ("future timestamp", HEADER + GOOD + "u3,c,4102444800,4\n",
     ("timestamp", "timestamp within the sane window (not before timestamp_min, not in the future)")),
    ("duplicate rows", HEADER + GOOD + "u2,a,978300900,5\n",
     ("user_id,item_id,timestamp", "no duplicate (user_id, item_id, timestamp) rows")),
    ("whitespace id", HEADER + GOOD + "u3 ,c,978300999,4\n", ("user_id", "key has no leading or trailing whitespace")),
    ("blank id", HEADER + GOOD + ",c,978300999,4\n", ("user_id", "key is not null")),
])
def test_each_broken_file_reports_its_rule(tmp_path, capsys, name, content, expected):
    code, report, err = validate(write(tmp_path, content), capsys)
    assert code == 1, name
    assert expected in rules(report), (name, rules(report))
    assert expected[1] in err and "Traceback" not in err


def test_row_numbers_point_at_the_bad_line(tmp_path, capsys):
    _, report, _ = validate(write(tmp_path, HEADER + GOOD + "u3,c,978300999,four\n"), capsys)
    (failure,) = report["failures"]
    assert failure["sample_rows"] == [3] and failure["sample_values"] == ["four"]


def test_hints_for_delimiter_and_renamed_columns(tmp_path, capsys):
    _, report, _ = validate(write(tmp_path, HEADER.replace(",", ";") + GOOD.replace(",", ";")), capsys)
    assert "';'-separated" in report["failures"][0]["detail"]
    _, report, _ = validate(write(tmp_path, HEADER.replace("user_id", "userId") + GOOD), capsys)
    assert "'userId' looks like 'user_id'" in report["failures"][0]["detail"]


@pytest.mark.parametrize("name,make", [
    ("byte-order mark", lambda p: write(p, "\ufeff" + HEADER + GOOD)),
    ("gzip", lambda p: put(p / "interactions.csv.gz", gzip.compress((HEADER + GOOD).encode()))),
    ("extra column", lambda p: write(p, "user_id,item_id,timestamp,rating,device\nu1,a,978300760,4,ios\n")),
    ("unicode ids", lambda p: write(p, HEADER + "josé,café,978300760,4\n用户,商品,978300800,3\n")),
    ("ISO datetimes", lambda p: write(p, HEADER + "u1,a,2001-01-01T10:00:00,4\nu2,a,2001-01-01 10:00:00+02:00,3\n")),
])
def test_harmless_variations_pass(tmp_path, capsys, name, make):
    code, report, err = validate(make(tmp_path), capsys)
    assert code == 0, (name, err)


def test_unknown_items_are_found_with_the_items_table(tmp_path, capsys):
    items = write(tmp_path, "item_id,domain\na,books\n", name="items.csv")
    code, report, _ = validate(write(tmp_path, HEADER + GOOD), capsys, "--items", str(items))
    assert code == 1
    assert ("item_id", "item exists in items (referential integrity)") in rules(report)
    assert report["failures"][0]["sample_values"] == ["b"]


def test_parquet_and_format_flag(tmp_path, capsys):
    import polars as pl

    path = tmp_path / "export.bin"
    pl.read_csv((HEADER + GOOD).encode(), infer_schema=False).write_parquet(path)
    code, report, _ = validate(path, capsys, "--format", "parquet")
    assert code == 0 and report["rows"] == 3


@pytest.mark.parametrize("make", [
    lambda p: p / "missing.csv",
    lambda p: put(p / "broken.parquet", b"not parquet at all"),
    lambda p: put(p / "notes.txt", b"hello"),
])
def test_unreadable_input_exits_2_without_a_traceback(tmp_path, capsys, make):
    code = main(["validate", str(make(tmp_path)), "--table", "interactions"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
