"""The joint peers: the non-transfer alternative a team would try first, one model retrained on everything.

A joint model is fitted once on the time-safe interactions of every source domain (each user's interactions
before their first target test interaction, as the source models see them) together with the target's training
interactions, over the union of the source items and the target catalogue; it is then scored, evaluated and
registered on the target catalogue only. With sources from another dataset, the source interactions are that
dataset's, in the target's id space (:meth:`JointTrain.of_other_dataset`). Two are fitted, each tuned on validation
NDCG@10 over its own grid:

- ``joint-als``: implicit ALS (:mod:`models.transfer.als`), then, where validation prefers it, each user's vector
  solved again with the recency step the transfer recipe takes (:mod:`models.transfer.recency`): a user's
  latest source interactions weigh most, their target training interactions count at ALS's own confidence;
- ``joint-ease``: EASE (:mod:`models.transfer.peers`), whose user rows then carry the users' source history.

Where transfer carries a source model's knowledge over by initialisation, a joint model learns source and target
together; when it wins on validation, the negative-transfer guard registers it instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import polars as pl

from data_contracts.columns import ITEM_ID, TIMESTAMP, USER_ID
from models.evaluation.ranking import RankingTask, ndcg_at
from models.factors import FactorModel
from models.split import TargetSplit, other_domains, recency_ranks, source_interactions, time_safe_source
from models.transfer.als import AlsGrid, EncodedTrain, TunedResult, fit_als
from models.transfer.peers import PeerGrid, fit_ease
from models.transfer.recency import RECENCY, RECENCY_ALPHA, recency_confidence, user_step
from models.transfer.transitions import Timeline, validation_cutoffs

#: Most source interactions the joint peers read into memory when the onboarding runs out of core (two id columns).
MAX_JOINT_PAIRS = 20_000_000


@dataclass(frozen=True)
class JointGrid:
    """The joint peers' grids (chosen on the development genres of ``bench/quality.py``; the held-out genres
    report them): ALS on the larger joint data prefers few factors and strong confidence, and converges in 8
    iterations (15 gave the same test NDCG@10 within 0.002 on four development cells, at twice the time), the
    best point after 3 fitted on (successive halving, :class:`~models.transfer.als.AlsGrid`); EASE, heavier L2.
    ALS's users with and without the recency step (``recency``: 0 is ALS's own user vectors), at the transfer
    recipe's numbers."""

    als: AlsGrid = AlsGrid(factors=(16, 32), regularization=(1.0, 10.0), alpha=(5.0,), iterations=8, rung=3,
                           survivors=1)
    ease: PeerGrid = PeerGrid(lambdas=(2000.0, 8000.0, 32000.0))
    recency: tuple[float, ...] = (0.0, RECENCY)
    recency_alpha: float = RECENCY_ALPHA


@dataclass(frozen=True)
class JointTrain:
    """The joint training pairs: catalogue items first (``n_catalogue`` of them), then the source-only items; the
    first ``n_source`` pairs are the source interactions, the rest the target's training ones. ``source_recency``:
    each source pair's place in its user's source history counted back from the most recent (0), when the
    source interactions came with their times (:func:`models.split.recency_ranks`); ``timeline``: every pair's
    time, when both sides came with them (:mod:`models.transfer.transitions`)."""

    encoded: EncodedTrain
    n_catalogue: int
    n_source: int
    source_recency: np.ndarray | None = None
    timeline: Timeline | None = None

    @classmethod
    def of(cls, source: pl.DataFrame, train: pl.DataFrame, catalogue: np.ndarray,
           val: pl.DataFrame | None = None) -> JointTrain:
        """Encode the time-safe ``source`` interactions and the target ``train`` ones over the target
        ``catalogue`` followed by the source items outside it; ``source``'s times, when it has them, give each
        source pair's recency, and with ``train``'s every pair's time (with ``val``, each user's first
        validation time)."""
        catalogue = np.asarray(catalogue, dtype=object)
        outside = (source.select(ITEM_ID).unique()
                   .filter(~pl.col(ITEM_ID).is_in(pl.Series(catalogue, dtype=pl.String)))
                   .sort(ITEM_ID)[ITEM_ID].to_numpy().astype(object))
        pairs = pl.concat([source.select(USER_ID, ITEM_ID), train.select(USER_ID, ITEM_ID)])
        recency = recency_ranks(source) if TIMESTAMP in source.columns else None
        encoded = EncodedTrain.of(pairs, np.concatenate([catalogue, outside]))
        timeline = None
        if TIMESTAMP in source.columns and TIMESTAMP in train.columns:
            times = np.concatenate([source[TIMESTAMP].to_numpy(), train[TIMESTAMP].to_numpy()]).astype(np.int64)
            timeline = Timeline(times, None if val is None or TIMESTAMP not in val.columns
                                else validation_cutoffs(encoded.user_ids, val))
        return cls(encoded, len(catalogue), source.height, recency, timeline)

    @classmethod
    def of_split(cls, interactions: pl.DataFrame, items: pl.DataFrame, split: TargetSplit, *,
                 time_safe: bool = True) -> JointTrain:
        """The pairs of every domain but the target's, before each user's cutoff (``time_safe``; without it every
        one, as a model served after the data's end may know), and the target's training pairs
        (:func:`models.transfer.outofcore.joint_train_on_disk` reads the same from disk)."""
        source = source_interactions(interactions, items, domains=other_domains(items, split.domain),
                                     cutoffs=split.cutoffs if time_safe else None)
        return cls.of(source, split.train, split.catalogue[ITEM_ID].to_numpy(), split.val)

    @classmethod
    def of_other_dataset(cls, source: pl.DataFrame, split: TargetSplit, *, shared_users: bool,
                         time_safe: bool = True) -> JointTrain:
        """Another dataset's interactions with the target's items, under the target's ids
        (:func:`models.transfer.alignment.interactions_on_target`), and the target's training pairs. Where that
        dataset's users are the target's (``shared_users``), only their interactions before each one's cutoff
        (``time_safe``, as :meth:`of_split`); other people's are kept whole, as the source models from that dataset
        keep them."""
        if shared_users and time_safe:
            source = time_safe_source(source, split.cutoffs)
        return cls.of(source, split.train, split.catalogue[ITEM_ID].to_numpy(), split.val)


def on_catalogue(model: FactorModel, n_catalogue: int) -> FactorModel:
    """``model`` with only its first ``n_catalogue`` items (the target catalogue): what is evaluated, logged
    and served."""
    return replace(model, item_ids=model.item_ids[:n_catalogue], item_factors=model.item_factors[:n_catalogue],
                   item_bias=model.item_bias[:n_catalogue])


def _on_catalogue(result: TunedResult, n_catalogue: int, kind: str) -> TunedResult:
    return replace(result, model=replace(on_catalogue(result.model, n_catalogue), kind=kind))


def recent_joint_users(joint: JointTrain, model: FactorModel, *, recency: float, recency_alpha: float,
                       alpha: float, l2: float) -> np.ndarray:
    """The users of ``model`` (ALS over every joint item) solved again by one ALS user step on its item vectors:
    their source pairs at the recency confidence (:mod:`models.transfer.recency`), their target training pairs at
    ALS's own ``alpha``."""
    assert joint.source_recency is not None, "the recency step needs the source interactions' times"
    confidence = np.concatenate([recency_confidence(joint.source_recency, recency=recency, alpha=recency_alpha),
                                 np.full(len(joint.encoded.users) - joint.n_source, alpha)])
    return user_step(model.item_factors, joint.encoded.users, joint.encoded.items, confidence,
                     len(joint.encoded.user_ids), l2=l2)


def fit_joint_als(joint: JointTrain, val_task: RankingTask, *, grid: JointGrid = JointGrid(),
                  seed: int = 0) -> TunedResult:
    """Implicit ALS on the joint pairs, tuned on the target's validation task over ``grid.als``; then, at its
    chosen point, its users as they are (``recency`` 0) or solved again by the recency step at each other
    ``grid.recency`` (:func:`recent_joint_users`; only where the source interactions came with their times), the
    best on validation kept (ties: the earlier); kept on the target catalogue."""
    tuned = fit_als(joint.encoded, None, val_task, grid=grid.als, seed=seed)
    points = [r for r in grid.recency if not r or joint.source_recency is not None] or [0.0]
    tried, best = [], None
    for recency in points:
        model = tuned.model if not recency else replace(tuned.model, user_factors=recent_joint_users(
            joint, tuned.model, recency=recency, recency_alpha=grid.recency_alpha, alpha=tuned.params["alpha"],
            l2=tuned.params["regularization"]))
        score = tuned.val_ndcg_at_10 if not recency else ndcg_at(model, val_task)
        params = {**tuned.params, "recency": recency, "recency_alpha": grid.recency_alpha}
        tried.append({**params, "val_ndcg_at_10": score})
        if best is None or score > best[2] + 1e-12:
            best = (model, params, score)
    assert best is not None  # points is never empty
    return _on_catalogue(TunedResult(best[0], best[1], best[2], [*tuned.grid, *tried]), joint.n_catalogue,
                         "joint-als")


def fit_joint_ease(joint: JointTrain, val_task: RankingTask, *, grid: JointGrid = JointGrid(),
                   seed: int = 0) -> TunedResult:
    """EASE on the joint pairs, tuned on the target's validation task, kept on the target catalogue.

    Raises:
        models.transfer.peers.PeerTooLarge: when the joint catalogue is above the dense bound.
    """
    del seed  # closed form
    return _on_catalogue(fit_ease(joint.encoded, val_task, grid=grid.ease, columns=joint.n_catalogue),
                         joint.n_catalogue, "joint-ease")


#: Every joint peer by its model name in an onboarding (tasks.registry.BASELINES lists them with the others).
JOINT: dict[str, Callable[..., TunedResult]] = {"joint-als": fit_joint_als, "joint-ease": fit_joint_ease}
