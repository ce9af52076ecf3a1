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
DESCRIPTION = "description"  # optional item text (content features)
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

IMPRESSIONS_SCHEMA: dict[str, pl.DataType] = {
    USER_ID: pl.String(),
    ITEM_ID: pl.String(),
    TIMESTAMP: pl.Int64(),
    CLICKED: pl.Int64(),
    PROPENSITY: pl.Float64(),
}

#: Per table: the canonical columns and their types, and which of them must be present.
TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "interactions": INTERACTIONS_SCHEMA,
    "items": ITEMS_SCHEMA,
    "users": USERS_KEY_SCHEMA,
    "impressions": IMPRESSIONS_SCHEMA,
}
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "interactions": (USER_ID, ITEM_ID, TIMESTAMP, RATING),
    "items": (ITEM_ID, DOMAIN),
    "users": (USER_ID,),
    "impressions": (USER_ID, ITEM_ID, TIMESTAMP, CLICKED),
}

TABLES = ("interactions", "items", "users", "impressions")
