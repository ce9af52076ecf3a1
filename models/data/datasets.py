"""Datasets and the readers that turn tables (files, folders, object stores) into canonical polars frames.

Canonical tables (column names in :mod:`data_contracts.columns`):

* interactions: ``user_id`` (str), ``item_id`` (str), ``timestamp`` (Int64, Unix seconds), ``rating`` (Float64)
* items: ``item_id`` (str), ``domain`` (str), ``title`` (str), ``genres`` (str, ``|``-separated)
* users (optional): ``user_id`` (str) plus feature columns

MovieLens files are read by :mod:`models.data.movielens`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from data_contracts.columns import (
    DESCRIPTION,
    DOMAIN,
    ITEM_ID,
    TABLE_SCHEMAS,
    TABLES,
    USER_ID,
)
from data_contracts.validation import convert_strict


class DatasetFormatError(ValueError):
    """Raised when files do not look like any supported dataset layout."""


@dataclass(frozen=True)
class Dataset:
    """Canonical tables of one dataset."""

    name: str
    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame | None = None
    impressions: pl.DataFrame | None = None

    def domains(self) -> pl.DataFrame:
        """Interaction, user and item counts per domain, largest first."""
        return domain_stats(self.interactions, self.items)


def domain_stats(interactions: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Count interactions, users and items per domain (largest domain first, ties by name)."""
    return (
        interactions.join(items.select(ITEM_ID, DOMAIN), on=ITEM_ID, how="inner", validate="m:1")
        .group_by(DOMAIN)
        .agg(
            pl.len().alias("interactions"),
            pl.col(USER_ID).n_unique().alias("users"),
            pl.col(ITEM_ID).n_unique().alias("items"),
        )
        .sort(["interactions", DOMAIN], descending=[True, False])
    )


def to_canonical_interactions(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and convert the canonical interaction columns (timestamps may be Unix seconds or ISO datetimes).

    Raises:
        ContractViolation: a required column is missing or a value does not convert to its type.
    """
    return convert_strict("interactions", frame)


def to_canonical_items(frame: pl.DataFrame) -> pl.DataFrame:
    """Select and convert the canonical item columns; a missing ``title``/``genres`` becomes null.

    Raises:
        ContractViolation: ``item_id`` or ``domain`` is missing.
    """
    return convert_strict("items", frame)


TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz", ".tsv")


def find_table(directory: Path, table: str) -> Path | None:
    """Return the file (or Parquet folder, parts at any depth) holding ``table`` in ``directory``, or None."""
    for suffix in TABLE_SUFFIXES:
        candidate = directory / f"{table}{suffix}"
        if candidate.exists():
            return candidate
    folder = directory / table
    if folder.is_dir() and any(folder.rglob("*.parquet")):
        return folder
    return None


TableFormat = Literal["csv", "parquet"]


def _table_format(path: Path, table_format: TableFormat | None) -> TableFormat:
    if not path.exists():
        raise DatasetFormatError(f"{path}: no such file or folder")
    kind = table_format or ("parquet" if path.is_dir() or path.name.endswith(".parquet") else
                            "csv" if path.name.endswith((".csv", ".csv.gz", ".tsv")) else None)
    if kind is None:
        raise DatasetFormatError(f"{path}: unsupported file type (expected .parquet, .csv or .csv.gz, "
                                 "or say --format)")
    return kind


def scan_table(path: Path, table_format: TableFormat | None = None) -> pl.LazyFrame:
    """A lazy scan of a CSV, gzipped CSV, Parquet file or folder of Parquet parts, as stored (CSV values as
    strings); nothing is read beyond the header or footer until it is collected.

    Raises:
        DatasetFormatError: the file is missing or of an unknown type.
    """
    if _table_format(path, table_format) == "parquet":
        # a folder: its parts at any depth (warehouse exports nest them, e.g. date=2026-11-28/part-0.parquet);
        # partition folder names are not turned into columns
        return pl.scan_parquet(path / "**" / "*.parquet" if path.is_dir() else path, hive_partitioning=False)
    if path.stat().st_size == 0:
        return pl.LazyFrame()
    return pl.scan_csv(path, infer_schema=False, separator="\t" if path.name.endswith(".tsv") else ",")


def read_table(path: Path, table_format: TableFormat | None = None) -> pl.DataFrame:
    """Read a table whole (see :func:`scan_table`). An empty file reads as a frame with no columns (its
    contract then fails); a UTF-8 byte-order mark is accepted.

    Raises:
        DatasetFormatError: the file is missing, of an unknown type, or cannot be parsed.
    """
    scan = scan_table(path, table_format)
    try:
        frame = scan.collect()
        if _table_format(path, table_format) == "csv":
            _refuse_repeated_header(frame, path)
        return frame
    except pl.exceptions.NoDataError:
        return pl.DataFrame()
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as exc:
        kind = _table_format(path, table_format)
        if path.is_dir():
            parts = sorted(path.rglob("*.parquet"))
            for part in parts:  # name the broken part, not the folder
                try:
                    pl.read_parquet(part)
                except (pl.exceptions.PolarsError, OSError) as broken:
                    raise DatasetFormatError(f"{part}: cannot read this Parquet part ({parts.index(part) + 1} of "
                                             f"{len(parts)} under {path}): {str(broken)[:200]}") from exc
        raise DatasetFormatError(f"{path}: cannot read as {kind}: {type(exc).__name__}: {str(exc)[:300]}") from exc


def parquet_parts(path: Path) -> list[tuple[str, int]]:
    """The Parquet parts of a folder table in the order they are read (sorted paths), each with its row count
    (from its footer): how a row of the table is found in its part (``data_contracts.report.part_row``)."""
    parts = sorted(path.rglob("*.parquet"))
    return [(str(part.relative_to(path)), pl.scan_parquet(part).select(pl.len()).collect().item()) for part in parts]


def _refuse_repeated_header(frame: pl.DataFrame, path: Path) -> None:
    """A CSV row whose every value is its own column's name is the header again (files joined with their
    headers): as data it would pass every rule (an item ``sku`` in category ``category``), so it is refused.

    Raises:
        DatasetFormatError: naming the file, the row and the columns.
    """
    if frame.width < 2 or frame.height == 0:
        return
    hits = frame.select(pl.arg_where(pl.all_horizontal([pl.col(c) == pl.lit(c) for c in frame.columns])))
    if hits.height:
        row = int(hits.item(0, 0)) + 1
        raise DatasetFormatError(f"{path}: data row {row} (line {row + 1}) repeats the header "
                                 f"({', '.join(frame.columns)}): were files joined with their headers? Remove "
                                 f"{'that line' if hits.height == 1 else f'those {hits.height} lines'}")


def read_raw_tables(path: Path, *, lazy: bool = False) -> dict[str, pl.DataFrame | pl.LazyFrame | None]:
    """The tables of a folder as stored: ``interactions`` and ``items`` required, ``users`` and
    ``impressions`` None when absent; with ``lazy``, scans that are read only when collected (for tables
    bigger than memory, validated in batches by :mod:`data_contracts.batched`).

    Raises:
        DatasetFormatError: a required table is missing or a file cannot be read.
    """
    if not path.is_dir():
        raise DatasetFormatError(f"{path}: not a folder of tables")
    tables: dict[str, pl.DataFrame | pl.LazyFrame | None] = {}
    for table in ("interactions", "items", "users", "impressions"):
        found = find_table(path, table)
        if found is None and table in ("interactions", "items"):
            raise DatasetFormatError(f"{path}: no {table} table ({', '.join(table + s for s in TABLE_SUFFIXES)} "
                                     f"or a folder {table}/ of Parquet parts)")
        tables[table] = None if found is None else scan_table(found) if lazy else read_table(found)
        if lazy and found is not None and table in ("items", "users") and _table_format(found, None) == "csv":
            # small tables: read once here for the repeated-header check (a repeated header in the interactions
            # fails their contract's type conversion, naming the row)
            _refuse_repeated_header(read_table(found), found)
    return tables


OBJECT_STORE_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://", "azure://")


def is_object_store(location: str | Path) -> bool:
    """Whether ``location`` is an object-store URL (``s3://bucket/prefix``, ``gs://...``, ``az://...``)."""
    return isinstance(location, str) and location.startswith(OBJECT_STORE_SCHEMES)


def location_name(location: Path | str) -> str:
    """The last part of a folder or object-store URL (a dataset's default name)."""
    return str(location).rstrip("/").rsplit("/", 1)[-1] if is_object_store(location) else Path(location).name


def _scan_remote(url: str, storage_options: dict[str, str] | None) -> pl.LazyFrame | None:
    """A lazy scan of the table at ``url`` (Parquet file, glob of Parquet parts, or CSV), None when absent."""
    try:
        if url.endswith(".csv"):
            scan = pl.scan_csv(url, infer_schema=False, storage_options=storage_options)
        else:
            scan = pl.scan_parquet(url, hive_partitioning=False, storage_options=storage_options)
        scan.collect_schema()  # reads the footer / header only: cheap existence and format check
        return scan
    except FileNotFoundError:  # no such object (or bucket)
        return None
    except pl.exceptions.ComputeError as exc:
        if "expanded paths were empty" in str(exc):  # a glob that matched no part
            return None
        raise


def read_remote_tables(url: str, storage_options: dict[str, str] | None = None, *, lazy: bool = False
                       ) -> dict[str, pl.DataFrame | pl.LazyFrame | None]:
    """The tables of an object-store folder as stored, like :func:`read_raw_tables`: per table
    ``<url>/<table>.parquet``, ``<url>/<table>/**/*.parquet`` (parts) or ``<url>/<table>.csv``. Credentials and
    endpoint come from ``storage_options`` or polars' usual environment variables (``AWS_ACCESS_KEY_ID``,
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``; ``GOOGLE_*``; ``AZURE_*``).

    Raises:
        DatasetFormatError: a required table is missing, or a table cannot be read.
    """
    base = url.rstrip("/")
    tables: dict[str, pl.DataFrame | pl.LazyFrame | None] = {}
    for table in ("interactions", "items", "users", "impressions"):
        found = None
        for candidate in (f"{base}/{table}.parquet", f"{base}/{table}/**/*.parquet", f"{base}/{table}.csv"):
            try:
                found = _scan_remote(candidate, storage_options)
            except (pl.exceptions.PolarsError, OSError) as exc:
                raise DatasetFormatError(f"{candidate}: cannot read: {type(exc).__name__}: {str(exc)[:300]}") from exc
            if found is not None:
                break
        if found is None and table in ("interactions", "items"):
            raise DatasetFormatError(f"{base}: no {table} table ({table}.parquet, {table}/ of Parquet parts, "
                                     f"or {table}.csv)")
        if lazy or found is None:
            tables[table] = found
            continue
        try:
            tables[table] = found.collect()
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DatasetFormatError(f"{base}/{table}: cannot read: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return tables


#: Extra canonical columns a mapping may name besides the tables' schemas (item text for content features).
EXTRA_COLUMNS = {"items": (DESCRIPTION,)}

ColumnMap = dict[str, dict[str, str]]  # table -> {canonical column: the file's column}
Frame = pl.DataFrame | pl.LazyFrame


def parse_column_map(spec: dict[str, Any]) -> ColumnMap:
    """Normalise a column mapping (``canonical: yours``): flat entries apply to every table, a table name with
    its own mapping overrides them for that table.

    Raises:
        ValueError: an unknown table or canonical column, a non-string name, or two canonical columns taken
            from the same column of a table -- naming what is wrong.
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a column map is a mapping of canonical names to yours, got {type(spec).__name__}")
    flat = {k: v for k, v in spec.items() if not isinstance(v, dict)}
    nested = {k: v for k, v in spec.items() if isinstance(v, dict)}
    unknown_tables = sorted(set(nested) - set(TABLES))
    if unknown_tables:
        raise ValueError(f"column map: unknown table(s) {unknown_tables}; tables are {list(TABLES)}")
    known = {t: [*TABLE_SCHEMAS[t], *EXTRA_COLUMNS.get(t, ())] for t in TABLES}
    every = sorted({c for columns in known.values() for c in columns})
    out: ColumnMap = {}
    for table in TABLES:
        merged = {**{k: v for k, v in flat.items() if k in known[table]}, **nested.get(table, {})}
        for canonical, theirs in merged.items():
            if canonical not in known[table] and table != "users":
                raise ValueError(f"column map: {table}.{canonical} is not a canonical column of {table} "
                                 f"({known[table]})")
            if not isinstance(theirs, str) or not theirs:
                raise ValueError(f"column map: {table}.{canonical} must name one column, got {theirs!r}")
        sources = list(merged.values())
        twice = sorted({c for c in sources if sources.count(c) > 1})
        if twice:
            raise ValueError(f"column map: {table} takes several canonical columns from {twice}")
        out[table] = merged
    stray = sorted(k for k in flat if k not in every)
    if stray:
        raise ValueError(f"column map: {stray} are not canonical columns (known: {every})")
    return out


def load_column_map(path: Path) -> ColumnMap:
    """Read a YAML column map (see :func:`parse_column_map`).

    Raises:
        DatasetFormatError: the file cannot be read or is not valid YAML.
        ValueError: the mapping itself is wrong.
    """
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetFormatError(f"{path}: cannot read the column map: {exc}") from exc
    return parse_column_map(spec or {})


def apply_column_map(tables: dict[str, Frame | None], mapping: ColumnMap | None) -> dict[str, Frame | None]:
    """Rename each table's columns to the canonical names (a mapped column the table lacks is left for the
    contract to report as missing, with the mapping named in its hint); a canonical column the file already
    has under that name is replaced by the mapped one. Lazy scans stay lazy."""
    if not mapping:
        return tables
    out: dict[str, Frame | None] = {}
    for table, frame in tables.items():
        names = frame.collect_schema().names() if frame is not None else []
        pairs = {theirs: canonical for canonical, theirs in mapping.get(table, {}).items()
                 if theirs in names and theirs != canonical}
        if frame is not None and pairs:
            frame = frame.drop([c for c in pairs.values() if c in names]).rename(pairs)
        out[table] = frame
    return out


def read_tables(location: Path | str, columns: ColumnMap | None = None, *, lazy: bool = False
                ) -> dict[str, Frame | None]:
    """The tables of a folder or an object-store URL as stored, columns renamed by ``columns``; with ``lazy``,
    scans read only when collected.

    Raises:
        DatasetFormatError: a required table is missing or a table cannot be read.
    """
    tables = (read_remote_tables(str(location), lazy=lazy) if is_object_store(location)
              else read_raw_tables(Path(location), lazy=lazy))
    return apply_column_map(tables, columns)


class UnknownDomain(ValueError):
    """The target domain is not a domain of the data."""


def check_domain(items: Frame, domain: str, *, where: str, column: str) -> None:
    """Pass when some item of ``items`` is in ``domain``; otherwise raise :class:`UnknownDomain` listing the
    domains there are (and the closest spelling). ``where`` and ``column`` name the table and the domain column
    as the user knows them. A table without the column passes: its contract reports that.

    Raises:
        UnknownDomain: no item is in ``domain``.
    """
    if DOMAIN not in items.collect_schema().names():
        return
    found = items.lazy().select(pl.col(DOMAIN).cast(pl.String).drop_nulls().unique()).collect()[DOMAIN]
    domains = sorted(found.to_list())
    if domain in domains:
        return
    import difflib

    closest = difflib.get_close_matches(domain, domains, n=1, cutoff=0.6)
    listed = ", ".join(domains[:40]) + (f" (and {len(domains) - 40} more)" if len(domains) > 40 else "")
    raise UnknownDomain(f"target domain {domain!r} is not in {where} (column {column!r}); its domains are: "
                        f"{listed or 'none'}" + (f"; did you mean {closest[0]!r}?" if closest else ""))


def read_canonical_dir(path: Path | str, name: str | None = None, columns: ColumnMap | None = None) -> Dataset:
    """Read the tables of ``path`` (a folder, or an object-store URL), rename columns by ``columns``, and convert
    them to canonical types (no contract rules beyond types).

    Raises:
        DatasetFormatError: when a required table is missing or unreadable.
        ContractViolation: when a column is missing or a value does not convert.
    """
    tables = read_tables(path, columns)
    interactions, items = tables["interactions"], tables["items"]
    assert interactions is not None and items is not None
    return Dataset(
        name or location_name(path),
        interactions.pipe(to_canonical_interactions),
        items.pipe(to_canonical_items),
        tables["users"],
        tables["impressions"],
    )


def write_canonical_dir(dataset: Dataset, path: Path) -> Path:
    """Write a dataset's tables as Parquet files into ``path`` (created if needed)."""
    path.mkdir(parents=True, exist_ok=True)
    dataset.interactions.write_parquet(path / "interactions.parquet")
    dataset.items.write_parquet(path / "items.parquet")
    if dataset.users is not None:
        dataset.users.write_parquet(path / "users.parquet")
    if dataset.impressions is not None:
        dataset.impressions.write_parquet(path / "impressions.parquet")
    return path


def interactions_with_domain(interactions: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """Attach each interaction's item domain (inner join: interactions of unknown items are dropped)."""
    return interactions.join(items.select(ITEM_ID, DOMAIN), on=ITEM_ID, how="inner", validate="m:1")


