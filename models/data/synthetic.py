"""A seeded synthetic multi-domain catalogue whose users share their taste across domains.

Users and items live in one latent space: user ``u`` has taste ``z_u``, item ``i`` (of any domain) has
``v_i`` and popularity ``b_i``; a user's interactions in a domain are drawn without replacement with
probability proportional to ``exp(z_u · v_i + b_i)``. A model that learned ``z_u`` in the source domains
therefore knows what the user will like in a new domain: transfer has something real to find.

Item titles carry three *tag words* named after the largest coordinates of ``v_i`` (a word per dimension and
sign), so item text says something about taste and content-only transfer has a signal too. Datasets
generated with the same ``item_seed`` sell the same items (same ids, vectors, titles) to other users
(``user_prefix``); a different ``item_seed`` and ``item_prefix`` give other items described with the same
tag vocabulary: the three transfer regimes of :mod:`models.transfer.alignment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from data_contracts.columns import DOMAIN, GENRES, ITEM_ID, RATING, TIMESTAMP, TITLE, USER_ID
from models.data.datasets import Dataset

DEFAULT_DOMAINS = ("books", "movies", "music", "games")
_VOCAB = {
    "books": ["Novel", "Atlas", "Memoir", "Guide", "Poems", "Saga"],
    "movies": ["Film", "Documentary", "Thriller", "Comedy", "Western", "Drama"],
    "music": ["Album", "Single", "Concerto", "Mixtape", "Anthem", "Ballad"],
    "games": ["Quest", "Puzzle", "Racer", "Arena", "Tactics", "Odyssey"],
    "garden": ["Rake", "Seeds", "Planter", "Hose", "Shears", "Compost"],
}
_ADJECTIVES = ["Red", "Silent", "Golden", "Wild", "Little", "Ancient", "Bright", "Hidden", "Northern", "Electric"]
_TAGS = ["amber", "azure", "coral", "ember", "frost", "ivory", "jade", "onyx", "pearl", "ruby", "sable", "slate",
         "topaz", "umber", "violet", "zinc", "cedar", "maple", "birch", "aspen", "willow", "hazel", "alder", "rowan",
         "lotus", "orchid", "tulip", "lily", "poppy", "daisy", "iris", "peony"]


def tag_words(vector: np.ndarray, n: int = 2) -> list[str]:
    """Words for the ``n`` largest coordinates of ``vector`` (one word per dimension and sign)."""
    top = np.argsort(-np.abs(vector))[:n]
    return [_TAGS[(2 * int(d) + int(vector[d] < 0)) % len(_TAGS)] for d in top]


def generate_multidomain(
    *,
    n_users: int = 300,
    domains: tuple[str, ...] = DEFAULT_DOMAINS,
    items_per_domain: int = 40,
    interactions_per_domain: float = 12.0,
    dim: int = 8,
    taste_strength: float = 2.5,
    seed: int = 0,
    start: int = 1_600_000_000,
    span_days: int = 365,
    name: str = "synthetic",
    item_seed: int | None = None,
    user_prefix: str = "u",
    item_prefix: str = "",
    impressions_per_user: int = 0,
    logging_temperature: float = 1.0,
    interactions_by_domain: dict[str, float] | None = None,
    vocabulary: dict[str, list[str]] | None = None,
    adjectives: list[str] | None = None,
) -> Dataset:
    """Generate a dataset (see module docstring).

    Args:
        n_users: number of users; every user is active in every domain.
        domains: domain names.
        items_per_domain: catalogue size of each domain.
        interactions_per_domain: mean interactions per user and domain (Poisson, at least 1).
        dim: latent dimension.
        taste_strength: scale of the taste term against popularity (0 = pure popularity).
        seed: everything is a function of the seed.
        start: first timestamp (Unix seconds).
        span_days: interactions are spread uniformly over this many days.
        name: dataset name.
        item_seed: seed of the items (vectors, popularity); default: drawn from ``seed`` like the rest.
        user_prefix: user ids are ``<prefix><number>``.
        item_prefix: prepended to item ids and title numbers (other items, same tag vocabulary).
        impressions_per_user: with > 0, an impressions table of the *last* domain, logged after every
            interaction: a stochastic popularity-biased logger shows item i with probability
            softmax(popularity / ``logging_temperature``) (recorded as ``propensity``) and the user clicks with
            probability sigmoid(taste term + popularity - 1). Drawn from its own generator: the interactions
            are the same with or without it.
        interactions_by_domain: per-domain override of ``interactions_per_domain`` (a small new domain).
        vocabulary: per-domain title nouns (default: the built-in ones, "Item" for unknown domains).
        adjectives: title adjectives (default: the built-in ones).
    """
    rng = np.random.default_rng(seed)
    item_rng = rng if item_seed is None else np.random.default_rng(item_seed)
    taste = rng.normal(size=(n_users, dim)) / np.sqrt(dim)
    users = np.array([f"{user_prefix}{u:05d}" for u in range(n_users)])
    item_rows, inter_parts = [], []
    for d, domain in enumerate(domains):
        vectors = item_rng.normal(size=(items_per_domain, dim))
        popularity = item_rng.normal(scale=1.0, size=items_per_domain)
        vocab = (vocabulary or _VOCAB).get(domain, ["Item"])
        words = adjectives or _ADJECTIVES
        ids = [f"{item_prefix}{domain}-{j:04d}" for j in range(items_per_domain)]
        for j in range(items_per_domain):
            title = f"{words[(j + d) % len(words)]} {vocab[j % len(vocab)]} {item_prefix}{j}"
            item_rows.append((ids[j], domain, f"{title}: {' '.join(tag_words(vectors[j], 3))}", domain))
        logits = taste_strength * taste @ vectors.T + popularity  # (users, items)
        mean = (interactions_by_domain or {}).get(domain, interactions_per_domain)
        counts = np.clip(rng.poisson(mean, size=n_users), 1, items_per_domain)
        gumbel = rng.gumbel(size=logits.shape)
        order = np.argsort(-(logits + gumbel), axis=1)  # sampling without replacement
        z = (logits - logits.mean()) / (logits.std() + 1e-9)
        for u in range(n_users):
            chosen = order[u, : counts[u]]
            inter_parts.append(pl.DataFrame({
                USER_ID: [users[u]] * len(chosen),
                ITEM_ID: [ids[j] for j in chosen],
                TIMESTAMP: (start + rng.integers(0, span_days * 86400, size=len(chosen))).astype(np.int64),
                RATING: np.clip(np.round(3.0 + z[u, chosen] + rng.normal(scale=0.7, size=len(chosen))), 1, 5),
            }))
    interactions = pl.concat(inter_parts).sort([USER_ID, TIMESTAMP, ITEM_ID])
    items = pl.DataFrame(item_rows, schema=[ITEM_ID, DOMAIN, TITLE, GENRES], orient="row")
    user_frame = pl.DataFrame({USER_ID: users})
    impressions = None
    if impressions_per_user > 0:  # the loop left the last domain's logits, ids and popularity in scope
        impressions = _log_impressions(users, ids, logits, popularity, impressions_per_user, logging_temperature,
                                       start + span_days * 86400, seed)
    return Dataset(name, interactions.with_columns(pl.col(RATING).cast(pl.Float64)), items, user_frame, impressions)


def _log_impressions(users: np.ndarray, ids: list[str], logits: np.ndarray, popularity: np.ndarray, per_user: int,
                     temperature: float, after: int, seed: int) -> pl.DataFrame:
    """One domain's impression log (see :func:`generate_multidomain`)."""
    rng = np.random.default_rng(seed + 7919)
    policy = np.exp((popularity - popularity.max()) / temperature)
    policy /= policy.sum()
    shown = rng.choice(len(ids), size=(len(users), per_user), p=policy)
    click = 1.0 / (1.0 + np.exp(-(np.take_along_axis(logits, shown, axis=1) - 1.0)))
    rows = np.repeat(np.arange(len(users)), per_user)
    return pl.DataFrame({
        USER_ID: users[rows].tolist(), ITEM_ID: [ids[j] for j in shown.reshape(-1)],
        TIMESTAMP: (after + np.arange(len(rows))).astype(np.int64),
        "clicked": (rng.random(click.shape) < click).reshape(-1).astype(np.int64),
        "propensity": policy[shown.reshape(-1)],
    })


@dataclass(frozen=True)
class ImpressionLog:
    """Logged impressions of a known world: who was shown what with which propensity, and whether they
    clicked, plus the ground truth an estimator should recover."""

    frame: pl.DataFrame  # user_id, item_id, timestamp, clicked, propensity
    click_probability: np.ndarray  # (users, items): P(click | user, item), the true click model
    logging_policy: np.ndarray  # (users, items): P(item shown | user), rows sum to 1
    user_ids: np.ndarray
    item_ids: np.ndarray
    affinity: np.ndarray  # (users, items): z_u . v_i, what a good recommender would learn


def simulate_impressions(*, n_users: int = 500, n_items: int = 50, dim: int = 4, impressions_per_user: int = 20,
                         logging_temperature: float = 1.0, seed: int = 0) -> ImpressionLog:
    """A stochastic logging policy shows one item per impression, ``P(i | u)`` = softmax of item popularity
    / ``logging_temperature`` (it ignores taste: a popularity-biased logger), and records that probability
    as the propensity; the user clicks with ``P = sigmoid(z_u . v_i - 1)``. The logged click rate is the
    logger's CTR; a policy that follows taste has a different, computable one."""
    rng = np.random.default_rng(seed)
    users = rng.normal(0.0, 1.0, (n_users, dim))
    items = rng.normal(0.0, 1.0, (n_items, dim))
    popularity = rng.normal(0.0, 1.0, n_items)
    affinity = users @ items.T
    click = 1.0 / (1.0 + np.exp(-(affinity - 1.0)))
    logits = popularity / logging_temperature
    policy = np.exp(logits - logits.max())
    policy = np.tile(policy / policy.sum(), (n_users, 1))
    shown = np.stack([rng.choice(n_items, size=impressions_per_user, p=policy[u]) for u in range(n_users)])
    user_rows = np.repeat(np.arange(n_users), impressions_per_user)
    item_cols = shown.reshape(-1)
    clicked = rng.random(len(item_cols)) < click[user_rows, item_cols]
    user_ids = np.array([f"u{u:05d}" for u in range(n_users)], dtype=object)
    item_ids = np.array([f"i{i:04d}" for i in range(n_items)], dtype=object)
    frame = pl.DataFrame({
        USER_ID: user_ids[user_rows].tolist(), ITEM_ID: item_ids[item_cols].tolist(),
        TIMESTAMP: (1_000_000_000 + np.arange(len(item_cols))).tolist(), "clicked": clicked.tolist(),
        "propensity": policy[user_rows, item_cols].tolist(),
    })
    return ImpressionLog(frame, click, policy, user_ids, item_ids, affinity)


def softmax_policy(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """``P(i | u)`` of a policy that shows item i with probability softmax(score / temperature) (rows)."""
    logits = scores / temperature
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


RETAIL_VOCABULARY = {
    "grocery": ["Coffee", "Tea", "Pasta", "Olive Oil", "Granola", "Chocolate", "Honey", "Rice"],
    "electronics": ["Headphones", "Charger", "Keyboard", "Speaker", "Webcam", "Monitor", "Mouse", "Router"],
    "home": ["Lamp", "Blanket", "Vase", "Candle", "Mug", "Cushion", "Rug", "Clock"],
    "beauty": ["Serum", "Shampoo", "Lipstick", "Moisturiser", "Perfume", "Sunscreen", "Soap", "Mask"],
    "toys": ["Puzzle", "Robot", "Doll", "Blocks", "Kite", "Board Game", "Train Set", "Yo-yo"],
    "garden": ["Rake", "Seeds", "Planter", "Hose", "Shears", "Compost", "Trowel", "Birdhouse"],
}
RETAIL_ADJECTIVES = ["Organic", "Compact", "Classic", "Deluxe", "Eco", "Premium", "Travel", "Family", "Smart",
                     "Handmade"]
RETAIL_CATEGORIES = ("grocery", "electronics", "home", "beauty", "toys", "garden")

#: How the retail export names its columns (a warehouse's names), as a ``--columns`` map: canonical: theirs.
RETAIL_COLUMN_MAP = {
    "user_id": "customer_id", "item_id": "sku", "rating": "stars", "domain": "category", "title": "product_name",
    "interactions": {"timestamp": "ordered_at"}, "impressions": {"timestamp": "shown_at"},
}


def generate_retail(*, n_customers: int = 800, categories: tuple[str, ...] = RETAIL_CATEGORIES,
                    products_per_category: int = 60, purchases_per_category: float = 10.0,
                    new_category: str = "garden", new_category_purchases: float = 3.0,
                    impressions_per_customer: int = 10, seed: int = 0) -> Dataset:
    """A seeded retail catalogue in canonical form: ``categories`` (the last one, ``new_category``, recently
    opened: ``new_category_purchases`` per customer instead of ``purchases_per_category``), product titles from
    category vocabularies, a description of taste words, customers shared by every category (ids ``c00000``...),
    star ratings, a users table (region, signup year) and an impression log of the new category with
    propensities. Built on :func:`generate_multidomain`: customers' taste carries over between categories."""
    if categories[-1] != new_category:
        categories = (*[c for c in categories if c != new_category], new_category)
    data = generate_multidomain(
        n_users=n_customers, domains=categories, items_per_domain=products_per_category,
        interactions_per_domain=purchases_per_category, interactions_by_domain={new_category: new_category_purchases},
        vocabulary=RETAIL_VOCABULARY, adjectives=RETAIL_ADJECTIVES, seed=seed, name="retail", user_prefix="c",
        impressions_per_user=impressions_per_customer, start=1_735_689_600, span_days=330)  # 2025-01-01 on
    title = pl.col(TITLE).str.split(": ")
    items = data.items.with_columns(
        title.list.first().alias(TITLE),
        (pl.lit("notes of ") + title.list.last().str.replace_all(" ", ", ")).alias("description"),
    ).drop(GENRES)
    rng = np.random.default_rng(seed + 11)
    regions = np.array(["north", "south", "east", "west"])
    users = data.users.with_columns(  # type: ignore[union-attr]
        pl.Series("region", regions[rng.integers(0, 4, size=n_customers)]),
        pl.Series("signup_year", rng.integers(2015, 2025, size=n_customers)),
    )
    return Dataset("retail", data.interactions, items, users, data.impressions)


def write_retail_export(dataset: Dataset, out: Path) -> Path:
    """Write ``dataset`` the way a warehouse exports it, under the retail column names
    (:data:`RETAIL_COLUMN_MAP`, also written as ``columns.yaml``): ``interactions/month=YYYY-MM/part-0.parquet``
    with ISO datetimes, ``items.csv``, ``users.parquet``, ``impressions.csv.gz`` with Unix seconds."""
    import gzip

    import yaml

    out.mkdir(parents=True, exist_ok=True)
    theirs = {k: v for k, v in RETAIL_COLUMN_MAP.items() if isinstance(v, str)}
    when = pl.from_epoch(pl.col(TIMESTAMP), time_unit="s")
    interactions = dataset.interactions.with_columns(when.dt.strftime("%Y-%m").alias("_month"),
                                                     when.dt.strftime("%Y-%m-%d %H:%M:%S").alias(TIMESTAMP))
    for (month,), part in interactions.partition_by("_month", as_dict=True).items():
        folder = out / "interactions" / f"month={month}"
        folder.mkdir(parents=True, exist_ok=True)
        part.drop("_month").rename({**theirs, TIMESTAMP: "ordered_at"}, strict=False).write_parquet(
            folder / "part-0.parquet")
    dataset.items.rename(theirs, strict=False).write_csv(out / "items.csv")
    if dataset.users is not None:
        dataset.users.rename(theirs, strict=False).write_parquet(out / "users.parquet")
    if dataset.impressions is not None:
        with gzip.open(out / "impressions.csv.gz", "wb") as handle:
            dataset.impressions.rename({**theirs, TIMESTAMP: "shown_at"}, strict=False).write_csv(handle)
    (out / "columns.yaml").write_text("# canonical column: the column in these files\n"
                                      + yaml.safe_dump(RETAIL_COLUMN_MAP, sort_keys=False))
    return out
