"""Batched validation (tables bigger than memory) writes the reports the in-memory validation writes."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from data_contracts.batched import BatchReadError, validate_scans
from data_contracts.report import ContractViolation
from data_contracts.validation import ContractSettings, validate_tables
from models.data.datasets import read_raw_tables

NOW = 1_800_000_000.0


def export(folder: Path, synthetic_dataset, interactions: pl.DataFrame | None = None, parts: int = 3) -> Path:
    """The synthetic dataset as an export: interactions as CSV strings in Parquet parts, items and users as CSV."""
    inter = (synthetic_dataset.interactions if interactions is None else interactions).with_columns(
        pl.all().cast(pl.String))
    (folder / "interactions").mkdir(parents=True)
    step = -(-inter.height // parts)
    for part in range(parts):
        inter.slice(part * step, step).write_parquet(folder / "interactions" / f"day={part}" / "p.parquet",
                                                     mkdir=True)
    synthetic_dataset.items.write_csv(folder / "items.csv")
    synthetic_dataset.users.write_csv(folder / "users.csv")
    return folder


def both(folder: Path, settings: ContractSettings, batch_rows: int, workdir: Path, mapper=None):
    """(in-memory outcome, batched outcome): validated tables, or the ContractViolation."""
    outcomes = []
    for run in (lambda: validate_tables(read_raw_tables(folder), settings, now=NOW).tables,
                lambda: validate_scans(read_raw_tables(folder, lazy=True), settings, workdir=workdir,
                                       batch_rows=batch_rows, now=NOW, mapper=mapper).collect()):
        try:
            outcomes.append(run())
        except ContractViolation as violation:
            outcomes.append(violation)
    return outcomes


def test_clean_data_gives_the_same_tables_in_any_batch_size(tmp_path, synthetic_dataset):
    folder = export(tmp_path / "in", synthetic_dataset)
    for batch_rows in (97, 1_000_000):
        whole, batched = both(folder, ContractSettings(target_domain="games"), batch_rows, tmp_path / "work")
        assert set(batched) == set(whole) == {"interactions", "items", "users"}
        for table, frame in whole.items():
            assert batched[table].schema == frame.schema
            assert batched[table].sort(pl.all()).equals(frame.sort(pl.all())), table


@pytest.mark.parametrize("way", ["in order", "spread", "uniqueness in passes"])
def test_broken_rows_in_many_batches_are_reported_as_in_memory(tmp_path, synthetic_dataset, backwards_mapper, way,
                                                               monkeypatch):
    """Also when the batches are checked a window at a time out of order (as a cluster runs them), and when the
    uniqueness rule counts its key hashes in several passes (as above 25 M rows)."""
    import data_contracts.batched

    spread = way == "spread"
    if way == "uniqueness in passes":
        monkeypatch.setattr(data_contracts.batched, "UNIQUE_PASS_ROWS", 1_000)
    inter = synthetic_dataset.interactions.with_columns(pl.all().cast(pl.String))
    n = inter.height
    row = pl.int_range(pl.len())
    inter = inter.with_columns(
        pl.when(row.is_in([3, 250, n - 2])).then(pl.lit("four")).when(row.is_in([5, 400])).then(pl.lit("9"))
        .otherwise(pl.col("rating")).alias("rating"),
        pl.when(row.is_in([7, 640])).then(pl.lit("nope")).when(row == 12).then(pl.lit(" padded"))
        .otherwise(pl.col("item_id")).alias("item_id"),
        pl.when(row == 800).then(None).otherwise(pl.col("user_id")).alias("user_id"),
        pl.when(row == 900).then(pl.lit("4102444800")).otherwise(pl.col("timestamp")).alias("timestamp"),
    )
    # duplicates whose copies sit in different batches (and parts)
    inter = pl.concat([inter, inter.slice(20, 2), inter.slice(500, 1)])
    folder = export(tmp_path / "in", synthetic_dataset, inter)
    mapper = backwards_mapper if spread else None
    whole, batched = both(folder, ContractSettings(), 101, tmp_path / "work", mapper)
    assert (backwards_mapper.calls > inter.height // 101) is spread  # every batch of every table went through it
    assert isinstance(whole, ContractViolation) and isinstance(batched, ContractViolation)
    assert [r.to_dict() for r in batched.reports] == [r.to_dict() for r in whole.reports]
    rules = {(f.column, f.rule) for f in batched.failures}
    assert ("user_id,item_id,timestamp", "no duplicate (user_id, item_id, timestamp) rows") in rules
    duplicate = next(f for f in batched.failures if f.column == "user_id,item_id,timestamp")
    assert duplicate.unexpected_count == 6 and duplicate.sample_rows == [20, 21, 500, n, n + 1, n + 2]
    assert batched.to_markdown() == whole.to_markdown()


@pytest.mark.parametrize("case", ["missing column", "empty file", "header only", "too few target items"])
def test_table_level_failures_match(tmp_path, synthetic_dataset, case):
    folder = export(tmp_path / "in", synthetic_dataset)
    settings = ContractSettings(target_domain="games", min_target_items=100 if case == "too few target items" else 5)
    text = {"missing column": "item_id,title\ni1,x\n", "empty file": "", "header only": "item_id,domain\n"}
    if case in text:
        (folder / "items.csv").write_text(text[case])
    whole, batched = both(folder, settings, 50, tmp_path / "work")
    assert isinstance(batched, ContractViolation), case
    assert [r.to_dict() for r in batched.reports] == [r.to_dict() for r in whole.reports]


def test_only_the_fail_policy_and_readable_batches(tmp_path, synthetic_dataset):
    folder = export(tmp_path / "in", synthetic_dataset)
    with pytest.raises(ValueError, match="on_violation='fail' only"):
        validate_scans(read_raw_tables(folder, lazy=True), ContractSettings(on_violation="quarantine"),
                       workdir=tmp_path / "work")
    (folder / "interactions" / "day=1" / "p.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(BatchReadError, match="^interactions: cannot read a batch"):
        validate_scans(read_raw_tables(folder, lazy=True), ContractSettings(), workdir=tmp_path / "work")
