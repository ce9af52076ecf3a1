"""Domain profiles: what selection needs to know about a domain, without its raw interactions.

A profile is stored beside every registered source model (the *source catalogue*), and one is built for
the target from its known data (train + validation). It holds:

* the user id set with each user's number of interactions, the item table (id, title key for
  cross-catalogue matching, text),
* the item text embeddings of one embedder and their centroid (so content similarity needs no
  re-encoding), and
* behaviour statistics: size, density, popularity Gini, the distribution of user activity (histogram of
  log2 interactions per user) and of ratings (share of each rounded rating 0-5).

:func:`behaviour_distances` compares two profiles' statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from data_contracts.columns import ITEM_ID, RATING, TITLE, USER_ID
from models.data.text import item_texts

PROFILE_VERSION = 1
ACTIVITY_BINS = 14  # log2(interactions per user) in [0, 14)
RATING_BINS = 6  # rounded ratings 0..5
_YEAR = r"\(\d{4}\)\s*$"


def item_keys(items: pl.DataFrame) -> pl.Series:
    """A catalogue-independent key per item: the lower-cased ``Title (Year)``, whitespace collapsed.

    MovieLens exports differ in where the year sits (GroupLens: in the title, id = a number; RecBole: id =
    ``Title (Year)``), so the key takes whichever of title and id ends with a year, else the title.
    """
    title = pl.col(TITLE) if TITLE in items.columns else pl.col(ITEM_ID)
    key = (
        pl.when(title.str.contains(_YEAR)).then(title)
        .when(pl.col(ITEM_ID).str.contains(_YEAR)).then(pl.col(ITEM_ID))
        .otherwise(pl.coalesce(title, pl.col(ITEM_ID)))
    )
    return items.select(
        key.str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars().alias("key")
    ).to_series()


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 = uniform, ->1 = concentrated on one item)."""
    values = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(values), values.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * values).sum()) / (n * total) - (n + 1) / n)


def behaviour_stats(interactions: pl.DataFrame, n_items: int) -> dict[str, float | list[float]]:
    """Size, density, popularity Gini, user-activity and rating distributions of ``interactions``.

    ``n_items`` is the catalogue size (items nobody interacted with count as zero popularity).
    """
    n_users = interactions[USER_ID].n_unique()
    per_item = interactions.group_by(ITEM_ID).len()["len"].to_numpy()
    popularity = np.concatenate([per_item, np.zeros(max(n_items - len(per_item), 0))])
    per_user = interactions.group_by(USER_ID).len()["len"].to_numpy()
    activity = np.bincount(np.clip(np.log2(np.maximum(per_user, 1)).astype(int), 0, ACTIVITY_BINS - 1),
                           minlength=ACTIVITY_BINS)
    ratings = interactions[RATING].drop_nulls().to_numpy() if RATING in interactions.columns else np.array([])
    rating_hist = np.bincount(np.clip(np.round(ratings).astype(int), 0, RATING_BINS - 1), minlength=RATING_BINS)
    return {
        "interactions": float(interactions.height),
        "users": float(n_users),
        "items": float(n_items),
        "density": float(interactions.height / max(n_users * n_items, 1)),
        "popularity_gini": gini(popularity),
        "activity_hist": (activity / max(activity.sum(), 1)).tolist(),
        "rating_hist": (rating_hist / max(rating_hist.sum(), 1)).tolist(),
    }


def behaviour_distances(source: dict, target: dict) -> dict[str, float]:
    """How differently two domains behave (0 = identical).

    * ``popularity_gini_gap``: |Gini_source - Gini_target|.
    * ``activity_distance``: earth mover's distance between the user-activity histograms, in log2 units.
    * ``rating_distance``: total variation distance between the rating distributions (0 when either
      domain has no ratings).
    * ``behaviour_distance``: the mean of the three, the activity distance first divided by 4 and capped at 1
      so each part lies in [0, 1].
    """
    gap = abs(float(source["popularity_gini"]) - float(target["popularity_gini"]))
    a, b = np.asarray(source["activity_hist"]), np.asarray(target["activity_hist"])
    activity = float(np.abs(np.cumsum(a) - np.cumsum(b)).sum())
    r, s = np.asarray(source["rating_hist"]), np.asarray(target["rating_hist"])
    rating = 0.5 * float(np.abs(r - s).sum()) if r.sum() > 0 and s.sum() > 0 else 0.0
    return {
        "popularity_gini_gap": gap,
        "activity_distance": activity,
        "rating_distance": rating,
        "behaviour_distance": (gap + min(activity / 4.0, 1.0) + rating) / 3.0,
    }


@dataclass(frozen=True)
class DomainProfile:
    """A domain's users, items, behaviour statistics and (optionally) item text embeddings."""

    dataset: str
    domains: list[str]
    user_ids: np.ndarray  # (n_users,) str
    items: pl.DataFrame  # item_id, key, text
    stats: dict[str, float | list[float]]
    embedder: str | None = None
    embeddings: np.ndarray | None = None  # rows of ``items``
    meta: dict[str, object] = field(default_factory=dict)
    user_counts: np.ndarray | None = None  # interactions per user (rows of ``user_ids``); older profiles: None

    def save(self, directory: Path) -> Path:
        """Write ``profile.json``, ``users.parquet``, ``items.parquet`` and ``embeddings.npy`` (if any)."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "profile.json").write_text(json.dumps({
            "version": PROFILE_VERSION, "dataset": self.dataset, "domains": self.domains, "stats": self.stats,
            "embedder": self.embedder, "meta": self.meta,
        }, indent=2, default=str))
        users = pl.DataFrame({USER_ID: pl.Series(self.user_ids, dtype=pl.String)})
        if self.user_counts is not None:
            users = users.with_columns(pl.Series("interactions", self.user_counts, dtype=pl.Int64))
        users.write_parquet(directory / "users.parquet")
        self.items.write_parquet(directory / "items.parquet")
        if self.embeddings is not None:
            np.save(directory / "embeddings.npy", self.embeddings.astype(np.float16), allow_pickle=False)
        return directory

    @classmethod
    def load(cls, directory: Path) -> DomainProfile:
        """Read a profile written by :meth:`save`."""
        meta = json.loads((directory / "profile.json").read_text())
        embeddings_file = directory / "embeddings.npy"
        users = pl.read_parquet(directory / "users.parquet")
        return cls(
            dataset=meta["dataset"], domains=list(meta["domains"]),
            user_ids=users[USER_ID].to_numpy().astype(object),
            user_counts=users["interactions"].to_numpy() if "interactions" in users.columns else None,
            items=pl.read_parquet(directory / "items.parquet"), stats=meta["stats"], embedder=meta.get("embedder"),
            embeddings=(np.load(embeddings_file, allow_pickle=False).astype(np.float32)
                        if embeddings_file.exists() else None),
            meta=meta.get("meta", {}),
        )


def build_profile(interactions: pl.DataFrame, items: pl.DataFrame, *, dataset: str, domains: list[str],
                  embed: object | None = None) -> DomainProfile:
    """Profile of ``interactions`` over the catalogue ``items``.

    Args:
        interactions: the domain's interactions (for a source: exactly what its model was trained on).
        items: the domain's catalogue (``item_id``, optional ``title``/``genres``).
        dataset: dataset name.
        domains: the domain names the profile covers.
        embed: optional ``(name, fn)`` where ``fn(list[str]) -> np.ndarray`` embeds item texts to store.
    """
    catalogue = items.sort(ITEM_ID)
    table = pl.DataFrame({
        ITEM_ID: catalogue[ITEM_ID], "key": item_keys(catalogue), "text": pl.Series(item_texts(catalogue),
                                                                                  dtype=pl.String),
    })
    name, vectors, meta = None, None, {}
    if embed is not None:
        name, fn = embed
        vectors = np.asarray(fn(table["text"].to_list()), dtype=np.float32)
        if len(vectors):
            meta["content_centroid"] = vectors.mean(axis=0).round(6).tolist()
    per_user = interactions.group_by(USER_ID).len().sort(USER_ID)
    return DomainProfile(
        dataset=dataset, domains=list(domains),
        user_ids=per_user[USER_ID].to_numpy().astype(object), user_counts=per_user["len"].to_numpy(),
        items=table, stats=behaviour_stats(interactions, catalogue.height), embedder=name, embeddings=vectors,
        meta=meta,
    )


def user_support(profile: DomainProfile, target_users: list[str]) -> float:
    """Mean over ``target_users`` of log2(1 + the user's interactions in ``profile``), 0 for unknown users:
    how much evidence backs the user vectors a source hands over.

    Profiles stored without per-user counts use the mean log2 activity of all their users (from the
    activity histogram) for every known target user.
    """
    if not target_users:
        return 0.0
    known = pl.DataFrame({USER_ID: pl.Series(profile.user_ids, dtype=pl.String)})
    if profile.user_counts is not None:
        known = known.with_columns(pl.Series("n", profile.user_counts, dtype=pl.Float64))
    else:
        hist = np.asarray(profile.stats["activity_hist"], dtype=np.float64)
        known = known.with_columns(pl.lit(float(2 ** (hist * (np.arange(len(hist)) + 0.5)).sum()) - 1.0).alias("n"))
    joined = pl.DataFrame({USER_ID: pl.Series(sorted(set(target_users)), dtype=pl.String)}).join(
        known, on=USER_ID, how="left", validate="1:1")
    return float(np.log2(1.0 + joined["n"].fill_null(0.0).to_numpy()).mean())
