"""The dataset fingerprint: a content hash of the interactions and items that keys every source model.

It depends on the values alone: not on row order, and not on a library's version (polars' own ``hash_rows``,
used before, may change in any release; :func:`legacy_fingerprint` keeps it only to find the sources registered
under it).
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from models.data.datasets import Dataset

#: The algorithm of :func:`fingerprint`, stored with every source model it keys.
FINGERPRINT_ALGORITHM = "transferrec-rows-v1"

_GOLDEN = 0x9E3779B97F4A7C15  # splitmix64's increment (2^64 / golden ratio)


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over uint64 values (wrapping arithmetic): a fixed, published 64-bit mix."""
    z = values + np.uint64(_GOLDEN)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _column_words(column: pl.Series) -> tuple[str, np.ndarray]:
    """The column's type tag and one uint64 per value, in the canonical encoding of :func:`fingerprint`."""
    valid = column.is_not_null().to_numpy()
    dtype = column.dtype
    if dtype == pl.String or dtype == pl.Categorical or isinstance(dtype, pl.Enum):
        tag, texts = "str", column.cast(pl.String)
        digests = {value: int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")
                   for value in texts.drop_nulls().unique().to_list()}
        words = texts.replace_strict(digests, default=0, return_dtype=pl.UInt64).fill_null(0).to_numpy()
    elif dtype.is_float():
        tag, floats = "float", column.cast(pl.Float64).fill_null(0.0).to_numpy().copy()
        floats[floats == 0.0] = 0.0  # -0.0 and 0.0 are one value
        floats[np.isnan(floats)] = np.nan  # one NaN bit pattern
        words = floats.view(np.uint64)
    else:  # integers and booleans; temporal values by their integers (days; datetimes and durations in us)
        tag = {pl.Boolean: "bool", pl.Date: "date", pl.Datetime: "datetime-us", pl.Duration: "duration-us",
               pl.Time: "time-ns"}.get(dtype.base_type(), "int")
        if dtype == pl.Datetime or dtype == pl.Duration:
            column = column.dt.cast_time_unit("us")
        words = column.to_physical().cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    return tag, np.where(valid, _splitmix64(np.ascontiguousarray(words, dtype=np.uint64)), np.uint64(_GOLDEN))


def _table_digest(name: str, frame: pl.DataFrame) -> bytes:
    """A table's canonical digest: name, columns (sorted) with their type tags, row count, and the wrapping sum of
    the row hashes (each row: its columns' words mixed in column-name order), so the row order does not matter."""
    rows, header = np.zeros(frame.height, dtype=np.uint64), [name]
    for column in sorted(frame.columns):
        tag, words = _column_words(frame[column])
        rows = _splitmix64(rows ^ words)
        header.append(f"{column}:{tag}")
    total = int(rows.sum(dtype=np.uint64)) if frame.height else 0
    return "\x1f".join([*header, str(frame.height), str(total)]).encode()


def frame_fingerprint(name: str, frame: pl.DataFrame) -> str:
    """One table's content hash (16 hex digits) by the same algorithm as :func:`fingerprint` (values alone, not
    row order, not a library's version): the digest of a split part in the tracking store's lineage."""
    digest = hashlib.sha256(FINGERPRINT_ALGORITHM.encode())
    digest.update(_table_digest(name, frame))
    return digest.hexdigest()[:16]


def fingerprint(dataset: Dataset) -> str:
    """A content hash of the interactions and items (16 hex digits) that depends on their values alone: not on
    row order, and not on a library's version (the algorithm is ``FINGERPRINT_ALGORITHM``, defined here).

    Each value is encoded as one 64-bit word: integers, booleans and temporal values by their integer value
    (datetimes in microseconds), floats by their IEEE-754 bits (one NaN, -0.0 = 0.0), strings by the first 8
    bytes of the BLAKE2b digest of their UTF-8; each word goes through splitmix64; a null is a fixed word
    (0x9E3779B97F4A7C15). A row's hash folds its words in column-name order (``h = splitmix64(h ^ word)``,
    from 0); a table's digest joins (0x1F) its name, ``column:tag`` per column (our tags: ``int``, ``float``,
    ``str``, ``bool``, ``date``, ``datetime-us``..., not a library's type names), its row count and the
    wrapping 64-bit sum of its row hashes. The fingerprint is the first 16 hex digits of SHA-256 over the
    algorithm's name and both tables' digests.
    """
    digest = hashlib.sha256(FINGERPRINT_ALGORITHM.encode())
    for name, frame in (("interactions", dataset.interactions), ("items", dataset.items)):
        digest.update(_table_digest(name, frame))
    return digest.hexdigest()[:16]


def legacy_fingerprint(dataset: Dataset) -> str:
    """The fingerprint before ``FINGERPRINT_ALGORITHM`` (polars' ``hash_rows``, which polars may change in any
    release): only to find the sources registered under it and re-tag them (:mod:`tasks.sources`)."""
    digest = hashlib.sha256()
    for frame in (dataset.interactions, dataset.items):
        digest.update(str(frame.shape).encode())
        digest.update(str(frame.hash_rows(seed=0).sum()).encode())
    return digest.hexdigest()[:16]
