"""The closed-form transfer recipe: an implicit-ALS model of the source domains, carried over to the target by
solving the target's item vectors on its frozen user vectors.

1. **Source model**: implicit ALS (:mod:`models.transfer.als`) on the time-safe interactions of every other domain
   (each user's interactions before their first target test interaction, the pairs the joint peers read), at one
   fixed point of :class:`ClosedFormGrid`. It sees no target interaction.
2. **Recent interests**: each user's vector is solved again on the source model's item vectors (one ALS user step)
   with their source interactions weighted by recency: confidence ``1 + recency_alpha·exp(-rank/recency)``, where
   ``rank`` counts back from the user's most recent source interaction (0) before their cutoff. What a user did
   last in the other domains says most about what they take next in the new one; the whole history still counts
   (every interaction at least at confidence one). ``recency = 0`` weighs every interaction alike, at the source
   model's own confidence ``1 + source_alpha`` (the source fit's user step once more).
3. **Carry-over**: the users keep these vectors (frozen, as the network's ``freeze-users`` fine-tune keeps
   them); each target item's vector is one ALS item step on them, in closed form:
   ``v_i = (UᵀU + alpha·U_iᵀU_i + l2·I)⁻¹ (1 + alpha)·U_iᵀ1``, where ``U_i`` are the vectors of the users with a
   target training interaction with item ``i`` (every other user counts as a zero with confidence one). ``alpha``
   and ``l2`` are chosen on the target's validation NDCG@10 over the grid.

4. **Transitions** (optional: ``ClosedFormGrid.transitions``, ``FineTuneConfig.transitions``): the recipe's scores
   blended with which target items users took right after their latest source items
   (:mod:`models.transfer.transitions`), at a weight chosen on validation with every user's history, and the
   recipe's users, as of their validation period (:attr:`ClosedFormResult.val_model`: the model as validated).

Steps 2 and 3 read nothing of the source fit but its item vectors (:func:`carry_over`): the refit before serving
(:mod:`models.transfer.refit`) runs them again from the evaluated source model on every source interaction and
all of the target's pairs, without fitting the source again.

The onboarding keeps this recipe as its ``transfer`` model unless the network fine-tune validates better by more
than ``FineTuneConfig.recipe_margin`` (``FineTuneConfig.closed_form`` turns the recipe off). A user without
source interactions has a zero vector and sees the target's most popular items (the tie-breaking bias, as
implicit ALS ranks users it has no vector for).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl

from data_contracts.columns import TIMESTAMP, USER_ID
from models.cache import read_array, write_array
from models.evaluation.ranking import RankingTask, ndcg_at
from models.factors import FactorModel
from models.split import recency_ranks
from models.transfer.als import TIE_BREAK, TunedResult, fit_als_encoded
from models.transfer.joint import JointTrain
from models.transfer.recency import RECENCY, RECENCY_ALPHA, recency_confidence, user_step
from models.transfer.transitions import TransitionGrid, blended, spread, transition_scores

#: The source fit's version in :func:`source_key`: a change to what the ALS fit returns for the same inputs bumps
#: it, so a cached fit of the old one is not read back.
SOURCE_FIT_VERSION = 1
#: Source pairs hashed at once by :func:`source_key` (a pair file's columns are read in such blocks).
HASH_BLOCK = 1 << 22
#: Catalogue items whose Gram matrices are held at once by :func:`item_step` (64 · 64 · 8 bytes each).
ITEM_CHUNK = 512


@dataclass(frozen=True)
class ClosedFormGrid:
    """The source model's one point, its users' recency weighting, and the carry-over's grid (chosen on the
    development genres of ``bench/quality.py``): a strongly regularised 64-factor source; a user's last five or
    so source interactions weigh most; then strong confidence and heavy L2 on the few target pairs."""

    factors: int = 64
    regularization: float = 10.0
    source_alpha: float = 5.0
    iterations: int = 15
    recency: float = RECENCY  # interactions; 0: every source interaction alike
    recency_alpha: float = RECENCY_ALPHA
    alpha: tuple[float, ...] = (5.0, 20.0, 80.0, 320.0)
    l2: tuple[float, ...] = (30.0, 100.0, 300.0, 1000.0)
    transitions: TransitionGrid | None = None  # step 4 of the module docstring (FineTuneConfig.transitions)


def keeps_fine_tune(fine_tune_val: float, closed_form_val: float, margin: float) -> bool:
    """The recipe rule: the network fine-tune is kept over the closed-form recipe only when its validation NDCG@10
    beats the recipe's by more than ``margin`` (relative; ``FineTuneConfig.recipe_margin``)."""
    return fine_tune_val > closed_form_val * (1.0 + margin)


def item_step(user_factors: np.ndarray, users: np.ndarray, items: np.ndarray, n_items: int,
              points: list[tuple[float, float]]) -> list[np.ndarray]:
    """Item vectors by one implicit-ALS item step on fixed ``user_factors``, one (n_items, dim) array per
    ``(alpha, l2)`` of ``points``; ``(users, items)``: the training pairs (rows; repeats count once). An item
    without pairs gets a zero vector."""
    u = np.asarray(user_factors, dtype=np.float64)
    dim = u.shape[1]
    pairs = np.unique(np.stack([np.asarray(items, np.int64), np.asarray(users, np.int64)]), axis=1)
    by_item, by_user = pairs
    starts = np.searchsorted(by_item, np.arange(n_items + 1))
    gram, eye = u.T @ u, np.eye(dim)
    out = [np.zeros((n_items, dim)) for _ in points]
    for first in range(0, n_items, ITEM_CHUNK):
        chunk = range(first, min(first + ITEM_CHUNK, n_items))
        inner = np.zeros((len(chunk), dim, dim))
        sums = np.zeros((len(chunk), dim))
        for row, item in enumerate(chunk):
            seen = u[by_user[starts[item]:starts[item + 1]]]
            inner[row], sums[row] = seen.T @ seen, seen.sum(axis=0)
        for vectors, (alpha, l2) in zip(out, points, strict=True):
            vectors[first:first + len(chunk)] = np.linalg.solve(gram + alpha * inner + l2 * eye,
                                                                ((1.0 + alpha) * sums)[..., None])[..., 0]
    return [v.astype(np.float32) for v in out]


@dataclass(frozen=True)
class ClosedFormResult(TunedResult):
    """The tuned recipe and the ALS source model it was carried over from, which the refit reuses
    (:func:`carry_over`): its vectors of every joint item, without its users (the carry-over solves them again, and
    the recipe's model already holds one vector a user)."""

    source: FactorModel
    # the model as validated: every user's state as of their validation period (None: ``model`` itself)
    val_model: FactorModel | None = None


def _recent_users(joint: JointTrain, item_factors: np.ndarray, grid: ClosedFormGrid,
                  before: np.ndarray | None = None) -> np.ndarray:
    """The users' vectors of step 2 of the module docstring on ``item_factors`` (one row per joint item);
    ``before``: per user, only their source interactions before that time (their recency counted among those)."""
    users, items = joint.encoded.users[:joint.n_source], joint.encoded.items[:joint.n_source]
    ranks = joint.source_recency
    if before is not None:
        assert joint.timeline is not None, "a history as of a time needs the interactions' times"
        times = joint.timeline.times[:joint.n_source]
        keep = times < before[users]
        users, items = users[keep], items[keep]
        ranks = recency_ranks(pl.DataFrame({USER_ID: users, TIMESTAMP: times[keep]}))
    if not grid.recency:
        confidence = np.full(len(users), grid.source_alpha)
    elif ranks is None:
        raise ValueError("the closed-form recipe weighs source interactions by recency, and these came without "
                         "their times")
    else:
        confidence = recency_confidence(ranks, recency=grid.recency, alpha=grid.recency_alpha)
    return user_step(item_factors, users, items, confidence, len(joint.encoded.user_ids), l2=grid.regularization)


def _carried_over(joint: JointTrain, user_factors: np.ndarray,
                  points: list[tuple[float, float]]) -> list[FactorModel]:
    """The carry-over (module docstring, step 3) on the joint's target pairs: one model of the joint's users
    (``user_factors``: one row each, frozen) and the catalogue per ``(alpha, l2)`` of ``points``."""
    encoded, n_catalogue = joint.encoded, joint.n_catalogue
    target = slice(joint.n_source, len(encoded.users))
    users, items = encoded.users[target], encoded.items[target]
    popularity = np.bincount(np.unique(np.stack([items, users]), axis=1)[0], minlength=n_catalogue)
    bias = (TIE_BREAK * np.log1p(popularity)).astype(np.float32)
    catalogue = encoded.item_ids[:n_catalogue]
    return [FactorModel(encoded.user_ids, catalogue, user_factors, vectors, bias, kind="transfer")
            for vectors in item_step(user_factors, users, items, n_catalogue, points)]


def _transition_scores(joint: JointTrain, grid: TransitionGrid, before: np.ndarray | None = None) -> np.ndarray | None:
    """The transition scores of every joint user over the catalogue (:mod:`models.transfer.transitions`); None
    without the pairs' times, above the dense bound, or where no user's history leads to a target item."""
    if joint.timeline is None:
        return None
    encoded = joint.encoded
    scores = transition_scores(encoded.users, encoded.items, joint.timeline.times, n_source=joint.n_source,
                               n_users=len(encoded.user_ids), n_items=len(encoded.item_ids),
                               n_catalogue=joint.n_catalogue, grid=grid, before=before)
    return scores if scores is not None and scores.std() > 0 else None


def transition_params(grid: TransitionGrid, weight: float) -> dict[str, float]:
    """The transitions' numbers and the blend weight as a run's parameters (read back by :func:`transitions_of`)."""
    return {"transition_weight": weight, "transition_window": grid.window, "transition_decay": grid.decay,
            "transition_popularity": grid.popularity, "transition_history": grid.history,
            "transition_recency": grid.recency}


def transitions_of(params: dict) -> tuple[TransitionGrid, float] | None:
    """The transitions and their weight that :func:`transition_params` wrote; None where the recipe was kept alone."""
    if not float(params.get("transition_weight", 0.0)):
        return None
    return TransitionGrid(window=int(params["transition_window"]), decay=float(params["transition_decay"]),
                          popularity=float(params["transition_popularity"]),
                          history=int(params["transition_history"]),
                          recency=float(params["transition_recency"])), float(params["transition_weight"])


def with_transitions(joint: JointTrain, model: FactorModel, grid: TransitionGrid, weight: float,
                     scores: np.ndarray | None = None) -> FactorModel:
    """The recipe's ``model`` (its users as of their test period: every source interaction ``joint`` holds)
    blended with the transitions at ``weight`` (step 4 of the module docstring; ``scores``: their scores on
    ``joint`` when already computed); ``model`` itself where the transitions have nothing to add (weight 0, no
    times, above the dense bound)."""
    scores = None if not weight else scores if scores is not None else _transition_scores(joint, grid)
    if scores is None:
        return model
    return blended(model, scores, weight, spread(model, joint.n_catalogue) / float(scores.std()))


def carry_over(joint: JointTrain, source: FactorModel, grid: ClosedFormGrid) -> list[FactorModel]:
    """Steps 2 and 3 of the module docstring on ``joint`` from the item vectors of ``source`` (matched to the joint
    items by id; an item it lacks counts as a zero vector): one model per ``(alpha, l2)`` of ``grid``, in
    ``itertools.product`` order.

    Raises:
        ValueError: ``grid.recency`` is set and ``joint`` has no source recency (its source came without times).
    """
    _, item_factors, _ = source.aligned(np.empty(0, dtype=object), joint.encoded.item_ids)
    return _carried_over(joint, _recent_users(joint, item_factors, grid), list(itertools.product(grid.alpha, grid.l2)))


def source_key(joint: JointTrain, grid: ClosedFormGrid, seed: int) -> str:
    """What the recipe's source fit depends on, hashed: the fit's version and point, the seed, the joint's item
    ids and user count (its rows) and every source pair. Equal keys mean the same item vectors."""
    encoded = joint.encoded
    digest = hashlib.sha256(json.dumps({
        "fit": SOURCE_FIT_VERSION, "factors": grid.factors, "regularization": grid.regularization,
        "alpha": grid.source_alpha, "iterations": grid.iterations, "seed": seed, "users": len(encoded.user_ids),
    }, sort_keys=True).encode())
    for item in encoded.item_ids:
        digest.update(b"\x1f" + str(item).encode())
    for column in (encoded.users, encoded.items):  # arrays or columns of a pair file: read in blocks
        for start in range(0, joint.n_source, HASH_BLOCK):
            digest.update(np.ascontiguousarray(column[start:min(start + HASH_BLOCK, joint.n_source)],
                                               dtype=np.int64).tobytes())
    return digest.hexdigest()


def source_model(joint: JointTrain, grid: ClosedFormGrid = ClosedFormGrid(), *, seed: int = 0,
                 cache: Path | None = None) -> FactorModel:
    """Step 1 of the module docstring: the ALS source fitted on the joint's source pairs at ``grid``'s point, as
    its vectors of every joint item (no user: steps 2 and 3 solve them again). With ``cache`` (a folder) a fit of
    the same inputs (:func:`source_key`) is read back from ``<cache>/closed-form-source-<key>.npy`` (a plain
    array, no pickle) instead of fitted again, and a new fit is written there: an onboarding of data seen
    before (a rerun, a schedule on unchanged data) skips the fit, as it reuses its registered source models."""
    encoded, pairs = joint.encoded, slice(0, joint.n_source)
    rows, dim = len(encoded.item_ids), grid.factors
    file = cache / f"closed-form-source-{source_key(joint, grid, seed)}.npy" if cache is not None else None
    stored = read_array(file, (rows, dim + 1), np.float32) if file is not None else None
    if stored is None:
        fitted = fit_als_encoded(  # over every joint item; the catalogue's vectors are solved again later
            replace(encoded, users=encoded.users[pairs], items=encoded.items[pairs]), factors=dim,
            regularization=grid.regularization, alpha=grid.source_alpha, iterations=grid.iterations, seed=seed)
        stored = np.column_stack([fitted.item_factors, fitted.item_bias]).astype(np.float32)  # (items, dim + 1)
        if file is not None:
            write_array(file, stored)
    return FactorModel(np.empty(0, dtype=object), encoded.item_ids, np.empty((0, dim), dtype=np.float32),
                       np.ascontiguousarray(stored[:, :dim]), np.ascontiguousarray(stored[:, dim]), kind="als")


def fit_closed_form_transfer(joint: JointTrain, val_task: RankingTask, *, grid: ClosedFormGrid = ClosedFormGrid(),
                             seed: int = 0, cache: Path | None = None) -> ClosedFormResult:
    """The closed-form recipe (module docstring) on the joint pairs: the source model on the source pairs
    (:func:`source_model`, read from ``cache`` when fitted before), its users' recent interests, the carry-over on
    the target's training pairs; tuned on ``val_task``, kind ``transfer``.

    Raises:
        ValueError: ``grid.recency`` is set and ``joint`` has no source recency (its source came without times).
    """
    source = source_model(joint, grid, seed=seed, cache=cache)
    points = list(itertools.product(grid.alpha, grid.l2))
    tried, best = [], None
    for (alpha, l2), model in zip(points, carry_over(joint, source, grid), strict=True):
        score = ndcg_at(model, val_task)
        params = {"recipe": "closed-form", "source_factors": grid.factors,
                  "source_regularization": grid.regularization, "source_alpha": grid.source_alpha,
                  "source_iterations": grid.iterations, "recency": grid.recency,
                  "recency_alpha": grid.recency_alpha, "alpha": alpha, "l2": l2}
        tried.append({**params, "val_ndcg_at_10": score})
        if best is None or score > best[2] + 1e-12:
            best = (model, params, score)
    assert best is not None  # the grid is never empty
    model, params, score = best
    timeline, val_model = joint.timeline, None
    if grid.transitions is not None and timeline is not None and timeline.validation is not None:
        test_scores = _transition_scores(joint, grid.transitions)
        val_scores = _transition_scores(joint, grid.transitions, before=timeline.validation)
        if test_scores is not None and val_scores is not None:
            # validated as a served model would have been: every user's history as of their validation period
            _, item_factors, _ = source.aligned(np.empty(0, dtype=object), joint.encoded.item_ids)
            as_of_val = replace(model, user_factors=_recent_users(joint, item_factors, grid, timeline.validation))
            scale = spread(as_of_val, joint.n_catalogue) / float(val_scores.std())
            chosen = None
            for weight in grid.transitions.weights:
                weighted = ndcg_at(blended(as_of_val, val_scores, weight, scale), val_task)
                tried.append({**params, **transition_params(grid.transitions, weight), "val_ndcg_at_10": weighted})
                if chosen is None or weighted > chosen[1] + 1e-12:
                    chosen = (weight, weighted)
            assert chosen is not None  # the weights are never empty
            weight, score = chosen
            params = {**params, **transition_params(grid.transitions, weight)}
            val_model = blended(as_of_val, val_scores, weight, scale) if weight else as_of_val
            model = with_transitions(joint, model, grid.transitions, weight, test_scores)
    return ClosedFormResult(model, params, score, tried, source, val_model)
