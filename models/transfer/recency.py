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
from scipy import sparse

from models.blas import one_blas_thread

#: The recency step's two numbers, chosen on the development genres of ``bench/quality.py`` (``bench/
#: transfer_variants.py --recency``): a user's last five or so source interactions weigh most.
RECENCY = 5.0  # interactions
RECENCY_ALPHA = 20.0


def recency_confidence(ranks: np.ndarray, *, recency: float, alpha: float) -> np.ndarray:
    """``alpha·exp(-rank/recency)`` per pair (``ranks``: its place counted back from its user's most recent, 0)."""
    return alpha * np.exp(-np.asarray(ranks, np.float64) / recency)


def user_step(item_factors: np.ndarray, users: np.ndarray, items: np.ndarray, confidence: np.ndarray,
              n_users: int, *, l2: float, threads: int = 0) -> np.ndarray:
    """User vectors by one implicit-ALS user step on fixed ``item_factors``: each item of a user's pairs ``(users,
    items)`` at preference one and confidence ``1 + c_i`` (``c_i``: the sum of its pairs' ``confidence``, so
    repeated pairs add confidence, as implicit ALS counts them), every other item at confidence one with
    preference zero, ``x_u = (VᵀV + Σ_i c_i·v_i v_iᵀ + l2·I)⁻¹ Σ_i (1 + c_i)·v_i``, in float64. A user without
    pairs gets a zero vector.

    Solved by the ``implicit`` library's user step (its compiled least squares, on ``threads`` threads, 0: every
    core), which holds no Python lock while it works: the flow logs the evaluated models while a refit takes this
    step. Each user's solve is its own, so the vectors do not depend on the thread count (unit test)."""
    from models.transfer.als import implicit_cpu

    _, least_squares = implicit_cpu()

    v = np.ascontiguousarray(item_factors, dtype=np.float64)
    c = sparse.csr_matrix((np.asarray(confidence, np.float64), (np.asarray(users, np.int64),
                                                                 np.asarray(items, np.int64))),
                          shape=(n_users, v.shape[0]))
    c.sum_duplicates()  # a repeated pair: its confidences add, its preference counts once
    c.data += 1.0
    out = np.zeros((n_users, v.shape[1]))
    with one_blas_thread():  # as implicit's fits: its own threads, and V'V's last bits fixed
        least_squares(c, out, v, l2, threads)
    return out.astype(np.float32)
