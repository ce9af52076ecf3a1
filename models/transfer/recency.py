"""Users weighted towards their latest interactions: one implicit-ALS user step at recency confidences.

What a user did last in the other domains says most about what they take next in a new one. A user's vector is
solved again on fixed item vectors with each of their source interactions at confidence
``1 + RECENCY_ALPHA·exp(-rank/RECENCY)``, ``rank`` counting back from their most recent source interaction (0;
:func:`models.split.recency_ranks`); every interaction still counts at least at confidence one. The closed-form
transfer recipe (:mod:`models.transfer.closed_form`) and the joint ALS peer (:mod:`models.transfer.joint`, where
validation chooses it) take this step with the same two numbers.
"""

from __future__ import annotations

import numpy as np

#: The recency step's two numbers, chosen on the development genres of ``bench/quality.py`` (``bench/
#: transfer_variants.py --recency``): a user's last five or so source interactions weigh most.
RECENCY = 5.0  # interactions
RECENCY_ALPHA = 20.0

#: Users whose Gram matrices are held at once by :func:`user_step` (64 · 64 · 8 bytes each).
USER_CHUNK = 512


def recency_confidence(ranks: np.ndarray, *, recency: float, alpha: float) -> np.ndarray:
    """``alpha·exp(-rank/recency)`` per pair (``ranks``: its place counted back from its user's most recent, 0)."""
    return alpha * np.exp(-np.asarray(ranks, np.float64) / recency)


def user_step(item_factors: np.ndarray, users: np.ndarray, items: np.ndarray, confidence: np.ndarray,
              n_users: int, *, l2: float) -> np.ndarray:
    """User vectors by one implicit-ALS user step on fixed ``item_factors``: each item of a user's pairs ``(users,
    items)`` at preference one and confidence ``1 + c_i`` (``c_i``: the sum of its pairs' ``confidence``, so
    repeated pairs add confidence, as implicit ALS counts them), every other item at confidence one with
    preference zero, ``x_u = (VᵀV + Σ_i c_i·v_i v_iᵀ + l2·I)⁻¹ Σ_i (1 + c_i)·v_i``; solved in chunks of users. A
    user without pairs gets a zero vector."""
    v = np.asarray(item_factors, dtype=np.float64)
    dim = v.shape[1]
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    pairs = np.lexsort((items, users))  # each (user, item) counts its preference once: at its first row here
    once = np.ones(len(pairs))
    once[pairs[1:]] = (users[pairs[1:]] != users[pairs[:-1]]) | (items[pairs[1:]] != items[pairs[:-1]])
    order = np.argsort(users, kind="stable")
    by_user, by_item, once = users[order], items[order], once[order]
    weights = np.asarray(confidence, np.float64)[order]
    starts = np.searchsorted(by_user, np.arange(n_users + 1))
    regularised = v.T @ v + l2 * np.eye(dim)
    out = np.zeros((n_users, dim))
    for first in range(0, n_users, USER_CHUNK):
        chunk = range(first, min(first + USER_CHUNK, n_users))
        inner = np.broadcast_to(regularised, (len(chunk), dim, dim)).copy()
        sums = np.zeros((len(chunk), dim))
        for row, user in enumerate(chunk):
            span = slice(starts[user], starts[user + 1])
            seen, weight = v[by_item[span]], weights[span]
            inner[row] += (seen.T * weight) @ seen
            sums[row] = (once[span] + weight) @ seen
        out[first:first + len(chunk)] = np.linalg.solve(inner, sums[..., None])[..., 0]
    return out.astype(np.float32)
