"""Tasks that train the transferred model and the target-only baselines."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.blas import one_blas_thread
from models.config import FineTuneConfig, ModelConfig, ModelFamily, TrainConfig
from models.evaluation.ranking import RankingTask
from models.factors import FactorModel
from models.nets.training import FitResult
from models.selection.candidates import PreparedSource
from models.split import TargetSplit
from models.transfer.als import EncodedTrain, TunedResult, fit_als
from models.transfer.closed_form import ClosedFormGrid, ClosedFormResult, fit_closed_form_transfer
from models.transfer.joint import JOINT, JointTrain
from models.transfer.peers import PEERS, PeerTooLarge
from models.transfer.recipes import fine_tune, fit_popularity, train_scratch
from models.transfer.transitions import TransitionGrid
from tasks import tracking
from tasks.runtime import closed_form_cache


def _one_blas_thread(fit: Callable) -> Callable:
    """The fit, its tuning and its validation scoring with BLAS on one thread, whichever runner runs it: matrix
    products' last bits follow BLAS's thread count, so a fit beside others would otherwise not reproduce alone."""
    @functools.wraps(fit)
    def fitted(*args, **kwargs):
        with one_blas_thread():
            return fit(*args, **kwargs)
    return fitted


def _resumed(fit: FitResult) -> str:
    return f" (resumed at epoch {fit.resumed_from_epoch})" if fit.resumed_from_epoch is not None else ""


@task(name="fine-tune", cache_policy=NO_CACHE, task_run_name="fine-tune-{name}")
@_one_blas_thread
def fine_tune_source(name: str, source: PreparedSource, split: TargetSplit, config: FineTuneConfig,
                     seed: int, checkpoint_dir: Path | None = None,
                     run: tracking.TrackingContext | None = None) -> FitResult:
    """Carry a source (aligned to the target) over and fine-tune it (mode and family from ``config``); with
    ``run``, its curves appear on that run while it trains."""
    label = f"transfer:{name}"
    fit = fine_tune(source.model, split, config=config, seed=seed, text=source.text, checkpoint_dir=checkpoint_dir,
                    label=label, on_epoch=run.live_curve(label) if run is not None else None)
    get_run_logger().info("fine-tuned %s (%s, %s, %d trainable parameters): val NDCG@10 %.4f -> %.4f in %d "
                          "epochs, %.1fs%s", name, config.family, config.mode, fit.trainable_parameters,
                          fit.initial_val_ndcg, fit.best_val_ndcg, fit.epochs_run, fit.seconds, _resumed(fit))
    return fit


@task(name="train-scratch", cache_policy=NO_CACHE)
@_one_blas_thread
def train_scratch_baseline(split: TargetSplit, model: ModelConfig, train: TrainConfig, seed: int, *,
                           family: ModelFamily = "mf", content: np.ndarray | None = None,
                           checkpoint_dir: Path | None = None,
                           run: tracking.TrackingContext | None = None) -> FitResult:
    """The same architecture (``family``; ``content``: catalogue text embeddings) on the target data only; with
    ``run``, its curves appear on that run while it trains."""
    fit = train_scratch(split, model=model, train=train, seed=seed, family=family, content=content,
                        checkpoint_dir=checkpoint_dir, label="scratch",
                        on_epoch=run.live_curve("scratch") if run is not None else None)
    get_run_logger().info("scratch (%s): val NDCG@10 %.4f in %d epochs, %.1fs%s", family, fit.best_val_ndcg,
                          fit.epochs_run, fit.seconds, _resumed(fit))
    return fit


@task(name="fit-als", cache_policy=NO_CACHE)
@_one_blas_thread
def fit_als_baseline(train: EncodedTrain, val_task: RankingTask, seed: int) -> TunedResult:
    """Implicit ALS on the target's training pairs only (encoded over its catalogue, in memory or mapped from
    the pair file on disk), tuned on a small grid by validation NDCG@10."""
    result = fit_als(train, None, val_task, seed=seed)
    get_run_logger().info("als: best %s, val NDCG@10 %.4f", result.params, result.val_ndcg_at_10)
    return result


@task(name="fit-peer", cache_policy=NO_CACHE, task_run_name="fit-{kind}")
@_one_blas_thread
def fit_peer_baseline(kind: str, train: EncodedTrain | JointTrain, val_task: RankingTask,
                      seed: int = 0) -> TunedResult | None:
    """A peer tuned on validation: target-only (``ease``, ``itemknn``: :data:`models.transfer.peers.PEERS`, on
    the target's pairs) or joint (``joint-als``, ``joint-ease``: :data:`models.transfer.joint.JOINT`, on the
    time-safe source pairs plus the target's). None, with the reason logged, when the data is too large for it."""
    try:
        result = JOINT[kind](train, val_task, seed=seed) if kind in JOINT else PEERS[kind](train, val_task)
    except PeerTooLarge as why:
        get_run_logger().warning("%s not fitted: %s", kind, why)
        return None
    get_run_logger().info("%s: best %s, val NDCG@10 %.4f", kind, result.params, result.val_ndcg_at_10)
    return result


@task(name="closed-form-transfer", cache_policy=NO_CACHE)
@_one_blas_thread
def fit_closed_form(joint: JointTrain, val_task: RankingTask, seed: int, transitions: bool = False) -> ClosedFormResult:
    """The closed-form transfer recipe (:mod:`models.transfer.closed_form`): an implicit-ALS model of the time-safe
    source interactions (read back from :func:`~tasks.runtime.closed_form_cache` when these inputs were fitted
    before), its users frozen, the target's item vectors solved on them; tuned on validation; with
    ``transitions``, blended with the cross-domain transitions where validation prefers them."""
    grid = ClosedFormGrid(transitions=TransitionGrid() if transitions else None)
    result = fit_closed_form_transfer(joint, val_task, grid=grid, seed=seed, cache=closed_form_cache())
    get_run_logger().info("closed-form transfer: best %s, val NDCG@10 %.4f", result.params, result.val_ndcg_at_10)
    return result


@task(name="fit-popularity", cache_policy=NO_CACHE)
@_one_blas_thread
def fit_popularity_baseline(split: TargetSplit) -> FactorModel:
    """Most-interacted target items first."""
    return fit_popularity(split)
