"""Initialise a target-domain model from a source model.

What moves from the source, and how the rest is filled (in this order):

1. **Shared users** keep their source vectors (the main channel when domains share customers).
2. **Shared items** keep their source vectors and biases (the channel when catalogues overlap).
3. **New items** seen in target training get the mean vector of the users who interacted with them,
   minus the mean vector of all target training users (what sets the item's audience apart from the
   average target user), times a scale ``alpha``; their bias is their log popularity in the target
   training data, on the source bias level.
4. **New users** seen in target training get the centred mean vector of their items (after step 3), times
   a scale ``beta``.
5. Anything left (items nobody interacted with, users with no known item) starts at zero, so an unknown
   user scores items by bias alone.

``alpha`` and ``beta`` are picked from a small grid (0 included, which means "popularity only") by the
softmax log-likelihood of the target *training* interactions; validation data is never used.

With this initialisation the model already ranks the target catalogue before any fine-tuning; evaluating
it unchanged is the *zero-shot probe* used to select a source.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def as_model(self, kind: str = "zero-shot") -> FactorModel:
        """The initialised model, unchanged (the zero-shot probe)."""
        return FactorModel(self.user_ids, self.item_ids, self.user_factors, self.item_factors, self.item_bias,
                           kind=kind)


def target_user_vocabulary(source: FactorModel, target_users: np.ndarray) -> np.ndarray:
    """Source users first (in source order), then target users the source does not know (sorted)."""
    known = set(source.user_ids.tolist())
    new = sorted({str(u) for u in target_users} - known)
    return np.concatenate([source.user_ids, np.array(new, dtype=object)]).astype(object)


def _group_mean(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` rows per group id, and the count per group (0 -> zero mean)."""
    sums = np.zeros((n_groups, values.shape[1]), dtype=np.float64)
    np.add.at(sums, groups, values)
    counts = np.bincount(groups, minlength=n_groups)
    means = np.divide(sums, np.maximum(counts, 1)[:, None])
    return means.astype(np.float32), counts


SCALE_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
MAX_LIKELIHOOD_PAIRS = 50_000


def _centred_group_mean(
    vectors: np.ndarray, members: np.ndarray, groups: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per group, the mean of its members' vectors minus the mean over all distinct members."""
    means, counts = _group_mean(vectors[members], groups, n_groups)
    centre = vectors[np.unique(members)].mean(axis=0) if members.size else np.zeros(vectors.shape[1])
    centred = np.where(counts[:, None] > 0, means - centre, 0.0).astype(np.float32)
    return centred, counts


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
    if u_rows.size > MAX_LIKELIHOOD_PAIRS:
        pick = np.random.default_rng(seed).choice(u_rows.size, MAX_LIKELIHOOD_PAIRS, replace=False)
        u_rows, i_rows = u_rows[pick], i_rows[pick]
    best, best_scale = -np.inf, 0.0
    for scale in SCALE_GRID:
        u, v = users, items
        if of == "items":
            v = items.copy()
            v[rows] = scale * direction[rows]
        else:
            u = users.copy()
            u[rows] = scale * direction[rows]
        logits = torch.from_numpy(u[u_rows]) @ torch.from_numpy(v).T + torch.from_numpy(bias)
        ll = float(torch.log_softmax(logits, dim=1)[torch.arange(len(i_rows)), torch.from_numpy(i_rows)].mean())
        if ll > best + 1e-9:
            best, best_scale = ll, scale
    return best_scale


def transfer_init(
    source: FactorModel,
    *,
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    train_users: np.ndarray,
    train_items: np.ndarray,
) -> TransferInit:
    """Initial target weights from ``source`` (see the module docstring).

    Args:
        source: the source model.
        user_ids: the target model's user vocabulary (e.g. :func:`target_user_vocabulary`).
        item_ids: the target catalogue.
        train_users: user row (into ``user_ids``) of every target training interaction.
        train_items: item row (into ``item_ids``) of every target training interaction.
    """
    n_users, n_items, dim = len(user_ids), len(item_ids), source.dim
    user_src = index_of(source.user_ids, user_ids)
    item_src = index_of(source.item_ids, item_ids)
    user_from_source, item_from_source = user_src >= 0, item_src >= 0

    users = np.zeros((n_users, dim), dtype=np.float32)
    users[user_from_source] = source.user_factors[user_src[user_from_source]]
    items = np.zeros((n_items, dim), dtype=np.float32)
    items[item_from_source] = source.item_factors[item_src[item_from_source]]
    bias = np.zeros(n_items, dtype=np.float32)
    bias[item_from_source] = source.item_bias[item_src[item_from_source]]

    # New item biases: log popularity in target training, on the source bias level.
    popularity = np.bincount(train_items, minlength=n_items).astype(np.float64)
    log_pop = np.log1p(popularity)
    level = float(np.median(source.item_bias)) if source.item_bias.size else 0.0
    new_items = ~item_from_source
    if new_items.any():
        bias[new_items] = (level + log_pop[new_items] - np.median(log_pop[new_items])).astype(np.float32)

    # New items: centred mean of their (source-known) users, scaled by likelihood on the training pairs.
    known_pair = user_from_source[train_users]
    direction, counts = _centred_group_mean(users, train_users[known_pair], train_items[known_pair], n_items)
    fill_items = np.flatnonzero(~item_from_source & (counts > 0))
    alpha = _best_scale(users, items, bias, (train_users[known_pair], train_items[known_pair]),
                        direction=direction, rows=fill_items, of="items")
    items[fill_items] = alpha * direction[fill_items]

    # New users: centred mean of their items (shared or just initialised), scaled the same way.
    new_pair = ~user_from_source[train_users]
    direction, counts = _centred_group_mean(items, train_items[new_pair], train_users[new_pair], n_users)
    fill_users = np.flatnonzero(~user_from_source & (counts > 0))
    beta = _best_scale(users, items, bias, (train_users[new_pair], train_items[new_pair]),
                       direction=direction, rows=fill_users, of="users")
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
    )
