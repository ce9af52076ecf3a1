"""Canonical table and column names, defined once for loaders, contracts and metrics."""

from __future__ import annotations

import polars as pl

USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
RATING = "rating"
DOMAIN = "domain"
TITLE = "title"
GENRES = "genres"
CLICKED = "clicked"
PROPENSITY = "propensity"

#: Separator of the ``genres`` column (``"Action|Comedy"``), as in GroupLens files.
GENRE_SEPARATOR = "|"

INTERACTIONS_SCHEMA: dict[str, pl.DataType] = {
    USER_ID: pl.String(),
    ITEM_ID: pl.String(),
    TIMESTAMP: pl.Int64(),  # Unix seconds
    RATING: pl.Float64(),
}

ITEMS_SCHEMA: dict[str, pl.DataType] = {
    ITEM_ID: pl.String(),
    DOMAIN: pl.String(),
    TITLE: pl.String(),
    GENRES: pl.String(),
}

#: Users carry ``user_id`` plus any feature columns.
USERS_KEY_SCHEMA: dict[str, pl.DataType] = {USER_ID: pl.String()}

TABLES = ("interactions", "items", "users")
