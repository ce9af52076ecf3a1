"""Initialise a target-domain model from a source model.

What moves from the source, and how the rest is filled (in this order):

1. **Shared users** keep their source vectors (the main channel when domains share customers).
2. **Shared items** keep their source vectors (the channel when catalogues overlap). Every item's bias is
   its log popularity in the target training data; a shared item adds a share of its centred source bias,
   picked by the likelihood of held-out training interactions (another population's popularity can mislead,
   and users with no vector are ranked by bias alone).
3. **New items** seen in target training get the mean vector of the users who interacted with them,
   minus the mean vector of all target training users (what sets the item's audience apart from the
   average target user), times a scale ``alpha``.
4. **New items with a text** not filled by step 3 (no known user interacted with them: every item when
   the users are disjoint, cold items otherwise) get a *content* vector when item text embeddings are
   given: the softmax-weighted mean of the centred source vectors of their ``k`` nearest source items by
   text, times a scale ``gamma``. This is the only channel when neither users nor items are shared.
5. **New users** seen in target training get the centred mean vector of their items (after steps 3-4),
   times a scale ``beta``.
6. Anything left (items nobody interacted with, users with no known item) starts at zero, so an unknown
   user scores items by bias alone.

``alpha``, ``gamma`` and ``beta`` are picked from a small grid (0 included, which means "popularity only") by the
softmax log-likelihood of target *training* interactions: for ``alpha`` and ``beta`` on a held-out fifth
of them, with the directions built from the rest (in-sample, a user's mean item vector "predicts" its own
items whatever the vectors are). Validation data is never used.

``item_init`` picks which of steps 3-4 fill new items (``users-mean``: 3 only; ``content``: 4 for every new
item; ``random``: neither, random vectors with the spread of the source's; ``auto``: 3 then 4). Step 4's
content vectors come from the text-nearest source items (``knn``) or, for the two-tower family, from the
linear content tower :func:`content_projection` distilled from the source (``ridge``), which the two-tower
network then keeps training.

With this initialisation the model already ranks the target catalogue before any fine-tuning; evaluating
it unchanged is the *zero-shot probe* used to select a source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from models.factors import FactorModel, index_of


@dataclass(frozen=True)
class TransferInit:
    """Initial weights of a target model and which rows came from the source."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    item_bias: np.ndarray
    user_from_source: np.ndarray  # bool per user row
    item_from_source: np.ndarray  # bool per item row
    item_scale: float = 0.0  # alpha
    user_scale: float = 0.0  # beta
    content_scale: float = 0.0  # gamma
    items_from_content: int = 0
    bias_share: float = 0.0  # share of the centred source bias kept by shared items
    content_projection: np.ndarray | None = None  # (c, dim): gamma * ridge map text -> centred source vector
    item_init: str = "auto"

    def as_model(self, kind: str = "zero-shot") -> FactorModel:
        """The initialised model, unchanged (the zero-shot probe)."""
        return FactorModel(self.user_ids, self.item_ids, self.user_factors, self.item_factors, self.item_bias,
                           kind=kind)


def target_user_vocabulary(source: FactorModel, target_users: np.ndarray) -> np.ndarray:
    """Source users first (in source order), then target users the source does not know (sorted)."""
    known = set(source.user_ids.tolist())
    new = sorted({str(u) for u in target_users} - known)
    return np.concatenate([source.user_ids, np.array(new, dtype=object)]).astype(object)


GROUP_CHUNK = 262_144  # member rows gathered at a time


def _group_mean(vectors: np.ndarray, members: np.ndarray, groups: np.ndarray, n_groups: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the ``vectors`` rows ``members`` per group id, and the count per group (0 -> zero mean).

    Only the groups with members are summed (float64) and written: the means array is allocated zeroed, so the
    rows of empty groups cost no memory until they are touched. Summing every group, as before, took 2 GB of
    float64 per call at 4 M users, where few users are new. The member rows are gathered a chunk at a time:
    gathering them all at once (members x dim, in float64) took 3 GB at 6 M training pairs."""
    import torch

    counts = np.bincount(groups, minlength=n_groups)
    present = np.flatnonzero(counts)
    slot = np.zeros(n_groups, dtype=np.int64)
    slot[present] = np.arange(len(present))
    # index_add_ rather than np.add.at: the same sums, ~50x faster (np.add.at dominated the initialisation)
    sums = torch.zeros((len(present), vectors.shape[1]), dtype=torch.float64)
    for low in range(0, len(members), GROUP_CHUNK):
        rows = np.asarray(members[low:low + GROUP_CHUNK])
        sums.index_add_(0, torch.from_numpy(slot[np.asarray(groups[low:low + GROUP_CHUNK])]),
                        torch.from_numpy(vectors[rows].astype(np.float64)))
    means = np.zeros((n_groups, vectors.shape[1]), dtype=np.float32)
    means[present] = (sums.numpy() / counts[present][:, None]).astype(np.float32)
    return means, counts


SCALE_CRITERION = "likelihood"
HOLDOUT_SHARE = 0.2
MIN_HELD_OUT = 20
SCALE_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
MAX_LIKELIHOOD_PAIRS = 10_000  # a subsample this size pins the likelihood down; more only costs time
# ... and on large catalogues fewer do: the search's cost is pairs x items x grid, so above 4,096 items the
# subsample holds this many logits a grid point (at least MIN_LIKELIHOOD_PAIRS pairs): 2,048 pairs at 20 k items
MAX_LIKELIHOOD_CELLS = MAX_LIKELIHOOD_PAIRS * 4_096
MIN_LIKELIHOOD_PAIRS = 1_000
PAIR_CHUNK_CELLS = 1 << 24  # logits held at once by the scale search (64 MB of float32)


def _centred_group_mean(
    vectors: np.ndarray, members: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the mean of its members' vectors minus the mean over all distinct members."""
    means, counts = _group_mean(vectors, members, groups, n_groups)
    if members.size:
        present = np.zeros(len(vectors), dtype=bool)
        present[members] = True  # the distinct members in row order, as np.unique gives them, without its sort
        means[counts > 0] -= vectors[present].mean(axis=0)  # in place: empty groups stay zero (and untouched)
    return means, counts


def _best_scale(
    users: np.ndarray, items: np.ndarray, bias: np.ndarray, pairs: tuple[np.ndarray, np.ndarray],
    *, direction: np.ndarray, rows: np.ndarray, of: str, seed: int = 0,
) -> float:
    """The grid scale of ``direction`` (added to the ``of`` factor rows ``rows``) that maximises the softmax
    log-likelihood of ``pairs``; ties go to the smaller scale."""
    import torch

    u_rows, i_rows = pairs
    if rows.size == 0 or u_rows.size == 0:
        return 0.0
    most = max(MIN_LIKELIHOOD_PAIRS, min(MAX_LIKELIHOOD_PAIRS, MAX_LIKELIHOOD_CELLS // max(len(items), 1)))
    if u_rows.size > most:
        pick = np.random.default_rng(seed).choice(u_rows.size, most, replace=False)
        u_rows, i_rows = u_rows[pick], i_rows[pick]
    # Scaling rows of one side is linear in the logits: logits(s) = base + s * step, with base computed
    # with those rows at zero and step with only their direction (two matmuls for the whole grid). The pairs
    # go through in chunks of at most PAIR_CHUNK_CELLS logits: 10 k pairs x 60 k items at once took 13 GB.
    chosen = np.zeros(len(users) if of == "users" else len(items), dtype=bool)
    chosen[rows] = True
    if of == "items":
        zeroed = torch.from_numpy(np.where(chosen[:, None], 0.0, items).astype(np.float32))
        only = torch.from_numpy(np.where(chosen[:, None], direction, 0.0).astype(np.float32))
    item_matrix = torch.from_numpy(items).T
    chunk = max(1, PAIR_CHUNK_CELLS // max(len(items), 1))
    totals = np.zeros(len(SCALE_GRID))
    for low in range(0, len(u_rows), chunk):
        part_users, part_items = u_rows[low:low + chunk], i_rows[low:low + chunk]
        pair_users = torch.from_numpy(users[part_users])
        if of == "items":
            base, step = pair_users @ zeroed.T, pair_users @ only.T
        else:
            on_rows = torch.from_numpy(chosen[part_users])[:, None]
            base = torch.where(on_rows, 0.0, pair_users) @ item_matrix
            step = torch.where(on_rows, torch.from_numpy(direction[part_users]), 0.0) @ item_matrix
        base = base + torch.from_numpy(bias)
        picked = (torch.arange(len(part_items)), torch.from_numpy(part_items))
        for index, scale in enumerate(SCALE_GRID):
            logits = base + scale * step
            true = logits[picked]
            if SCALE_CRITERION == "mrr":  # mean reciprocal rank of the held-out item among all items
                per_pair = 1.0 / (1.0 + (logits > true[:, None]).sum(dim=1).float())
            else:
                per_pair = true - torch.logsumexp(logits, dim=1)
            # one chunk (every catalogue up to PAIR_CHUNK_CELLS / 10 k items): the plain float32 mean as before
            totals[index] += (float(per_pair.mean()) * len(part_items) if chunk >= len(u_rows)
                              else float(per_pair.double().sum()))
    best, best_scale = -np.inf, 0.0
    for scale, total in zip(SCALE_GRID, totals, strict=True):
        value = total / len(u_rows)
        if value > best + 1e-9:
            best, best_scale = value, scale
    return best_scale


CONTENT_NEIGHBOURS = 10
CONTENT_TEMPERATURE = 0.05


@dataclass(frozen=True)
class ItemText:
    """Item text embeddings of the source model's items and of the target catalogue (rows normalised)."""

    source: np.ndarray  # (n_source_items, d), rows of ``source.item_ids``
    target: np.ndarray  # (n_target_items, d), rows of the target ``item_ids``


def content_directions(
    source_vectors: np.ndarray, text: ItemText, rows: np.ndarray, *, k: int = CONTENT_NEIGHBOURS,
    temperature: float = CONTENT_TEMPERATURE, batch: int = 1024,
) -> np.ndarray:
    """For each target item in ``rows``: the softmax(similarity / temperature)-weighted mean of the centred
    source vectors of its ``k`` most text-similar source items. Shape ``(len(rows), dim)``."""
    centred = source_vectors - source_vectors.mean(axis=0)
    k = min(k, len(source_vectors))
    out = np.zeros((len(rows), source_vectors.shape[1]), dtype=np.float32)
    for start in range(0, len(rows), batch):
        sims = text.target[rows[start:start + batch]] @ text.source.T  # (B, n_source_items)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1) / temperature
        weights = np.exp(top_sims - top_sims.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        out[start:start + batch] = np.einsum("bk,bkd->bd", weights, centred[top])
    return out


CONTENT_RIDGE = 1.0


def content_projection(source_vectors: np.ndarray, source_text: np.ndarray, *, ridge: float = CONTENT_RIDGE
                       ) -> np.ndarray:
    """The linear content tower distilled from a source: ``P`` (c, dim) minimising
    ``|centred text @ P - centred source vectors|^2 + ridge |P|^2`` (closed form). Shape ``(c, dim)``.

    ``text @ P`` is then off by one constant vector, which moves every item's score for a user by the same
    amount: rankings and softmax likelihoods do not see it.
    """
    centred = (source_vectors - source_vectors.mean(axis=0)).astype(np.float64)
    x = (source_text - source_text.mean(axis=0)).astype(np.float64)
    gram = x.T @ x + ridge * np.eye(x.shape[1])
    return np.linalg.solve(gram, x.T @ centred).astype(np.float32)


BIAS_SHARES = (0.0, 0.25, 0.5, 1.0)
ItemInitName = Literal["auto", "users-mean", "content", "random"]
ContentModel = Literal["knn", "ridge"]


def _target_bias(train_items: np.ndarray, n_items: int, level: float) -> np.ndarray:
    """``level`` + log(1 + target training count) - its median: popularity on the source's bias level."""
    log_pop = np.log1p(np.bincount(train_items, minlength=n_items).astype(np.float64))
    return (level + log_pop - np.median(log_pop)).astype(np.float32)


def _bias_share(train_items: np.ndarray, n_items: int, level: float, source_bias: np.ndarray, seed: int = 0) -> float:
    """The share of the centred source bias to add to the target popularity bias, picked by the softmax
    likelihood of held-out training interactions under a bias-only model (popularity from the others)."""
    held = np.random.default_rng(seed).random(len(train_items)) < HOLDOUT_SHARE
    if held.sum() < MIN_HELD_OUT or (~held).sum() == 0:
        return 0.0
    base = _target_bias(train_items[~held], n_items, level).astype(np.float64)
    best, best_share = -np.inf, 0.0
    for share in BIAS_SHARES:
        logits = base + share * source_bias
        value = float(logits[train_items[held]].mean() - np.log(np.exp(logits - logits.max()).sum()) - logits.max())
        if value > best + 1e-9:
            best, best_share = value, share
    return best_share


def _fit_scale(
    users: np.ndarray, items: np.ndarray, bias: np.ndarray, *, of: str, vectors: np.ndarray, members: np.ndarray,
    groups: np.ndarray, eligible: np.ndarray, seed: int = 0,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale, direction and member count of the centred group means that fill rows of ``of``.

    The scale is chosen on held-out pairs (:data:`HOLDOUT_SHARE`) with directions built
    from the other pairs: a vector built from a pair always "predicts" that pair, so an in-sample likelihood
    rewards any direction, noise included, and most so when each vector is the mean of a few members (new
    users with two or three interactions, items with one or two users). Measured on ML-1M Horror, zero-shot
    test NDCG@10 with in-sample vs held-out item scales: 1 % of the data 0.090 vs 0.171 (popularity 0.150),
    5 % 0.183 vs 0.189, 10 % 0.197 vs 0.192. The returned direction uses every pair.
    """
    n_groups = len(eligible)
    held = np.random.default_rng(seed).random(len(members)) < HOLDOUT_SHARE
    if held.sum() < MIN_HELD_OUT or (~held).sum() == 0:
        held = np.ones(len(members), dtype=bool)  # too few pairs to hold out: fall back to in-sample
        fit_direction, fit_counts = _centred_group_mean(vectors, members, groups, n_groups)
    else:
        fit_direction, fit_counts = _centred_group_mean(vectors, members[~held], groups[~held], n_groups)
    rows = np.flatnonzero(eligible & (fit_counts > 0))
    pairs = (members[held], groups[held]) if of == "items" else (groups[held], members[held])
    scale = _best_scale(users, items, bias, pairs, direction=fit_direction, rows=rows, of=of)
    direction, counts = _centred_group_mean(vectors, members, groups, n_groups)
    return scale, direction, counts


def transfer_init(
    source: FactorModel,
    *,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    train_users: np.ndarray,
    train_items: np.ndarray,
    text: ItemText | None = None,
    item_init: ItemInitName = "auto",
    content_model: ContentModel = "knn",
    seed: int = 0,
) -> TransferInit:
    """Initial target weights from ``source`` (see the module docstring).

    Args:
        source: the source model.
        user_ids: the target model's user vocabulary (e.g. :func:`target_user_vocabulary`).
        item_ids: the target catalogue.
        train_users: user row (into ``user_ids``) of every target training interaction.
        train_items: item row (into ``item_ids``) of every target training interaction.
        text: item text embeddings for content initialisation (step 4); ``None`` skips it.
        item_init: which steps fill new items: ``auto`` 3 then 4, ``users-mean`` 3 only, ``content`` 4 only,
            ``random`` neither (normal vectors with the spread of the source's item vectors).
        content_model: step 4's content vectors: ``knn`` (text-nearest source items) or ``ridge`` (the linear
            content tower :func:`content_projection`, returned scaled as ``content_projection``).
        seed: of the random strategy.
    """
    n_users, n_items, dim = len(user_ids), len(item_ids), source.dim
    user_src = index_of(source.user_ids, user_ids)
    item_src = index_of(source.item_ids, item_ids)
    user_from_source, item_from_source = user_src >= 0, item_src >= 0

    users = np.zeros((n_users, dim), dtype=np.float32)
    users[user_from_source] = source.user_factors[user_src[user_from_source]]
    items = np.zeros((n_items, dim), dtype=np.float32)
    items[item_from_source] = source.item_factors[item_src[item_from_source]]

    # Item biases: log popularity in target training (on the source bias level) for every item; a shared
    # item adds a share of its centred source bias. The source's popularity is another population's (or
    # another period's), and users the target model has no vector for are ranked by bias alone.
    level = float(np.median(source.item_bias)) if source.item_bias.size else 0.0
    bias = _target_bias(train_items, n_items, level)
    source_bias = np.zeros(n_items, dtype=np.float32)
    if item_from_source.any():
        shared_bias = source.item_bias[item_src[item_from_source]]
        source_bias[item_from_source] = shared_bias - np.median(shared_bias)
    bias_share = _bias_share(train_items, n_items, level, source_bias) if item_from_source.any() else 0.0
    bias = (bias + bias_share * source_bias).astype(np.float32)

    # New items: centred mean of their (source-known) users, scaled by likelihood on held-out pairs.
    known_pair = user_from_source[train_users]
    alpha, fill_items = 0.0, np.array([], dtype=np.int64)
    if item_init in ("auto", "users-mean"):
        alpha, direction, counts = _fit_scale(users, items, bias, of="items", vectors=users,
                                              members=train_users[known_pair], groups=train_items[known_pair],
                                              eligible=~item_from_source)
        fill_items = np.flatnonzero(~item_from_source & (counts > 0))
        items[fill_items] = alpha * direction[fill_items]
    elif item_init == "random" and source.item_factors.size:
        new_rows = np.flatnonzero(~item_from_source)
        spread = float(source.item_factors.std())
        items[new_rows] = np.random.default_rng(seed).normal(0.0, spread, (len(new_rows), dim)).astype(np.float32)

    # New items by content: gamma is picked as if every new item were content-initialised (pairs with
    # known users); without known users there is nothing to pick it on, and beta absorbs the scale.
    # The directions cost new items x source items x text dimensions (at 20,000 items each side and 4,096 hashed
    # dimensions, 20-40 s): they are computed only when some item takes them, or for the content tower's scale.
    gamma, content_rows, projection = 0.0, np.array([], dtype=np.int64), None
    candidates = np.flatnonzero(~item_from_source)
    wanted = (np.setdiff1d(candidates, fill_items if alpha > 0 else np.array([], dtype=np.int64))
              if item_init in ("auto", "content") else np.array([], dtype=np.int64))
    if (text is not None and source.item_factors.shape[0] > 0 and len(candidates)
            and (len(wanted) or content_model == "ridge")):
        direction = np.zeros_like(items)
        if content_model == "ridge":
            projection = content_projection(source.item_factors, text.source)
            direction[candidates] = text.target[candidates] @ projection
        else:
            direction[candidates] = content_directions(source.item_factors, text, candidates)
        on_new = known_pair & ~item_from_source[train_items]
        gamma = (_best_scale(users, items, bias, (train_users[on_new], train_items[on_new]), direction=direction,
                             rows=candidates, of="items") if on_new.any() else 1.0)
        if projection is not None:
            projection = gamma * projection
        content_rows = wanted
        items[content_rows] = gamma * direction[content_rows]

    # New users: centred mean of their items (shared or just initialised), scaled the same way.
    new_pair = ~user_from_source[train_users]
    beta, direction, counts = _fit_scale(users, items, bias, of="users", vectors=items,
                                         members=train_items[new_pair], groups=train_users[new_pair],
                                         eligible=~user_from_source)
    fill_users = np.flatnonzero(~user_from_source & (counts > 0))
    users[fill_users] = beta * direction[fill_users]

    return TransferInit(
        user_ids=np.asarray(user_ids, dtype=object),
        item_ids=np.asarray(item_ids, dtype=object),
        user_factors=users,
        item_factors=items,
        item_bias=bias,
        user_from_source=user_from_source,
        item_from_source=item_from_source,
        item_scale=alpha,
        user_scale=beta,
        content_scale=gamma,
        items_from_content=int(len(content_rows)) if gamma > 0 else 0,
        bias_share=bias_share,
        content_projection=projection,
        item_init=item_init,
    )
