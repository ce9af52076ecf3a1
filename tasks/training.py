"""Tasks that train the transferred model and the target-only baselines."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.als import AlsResult, fit_als
from models.candidates import PreparedSource
from models.config import FineTuneConfig, ModelConfig, TrainConfig
from models.evaluation import RankingTask
from models.factors import FactorModel
from models.recipes import fine_tune, fit_popularity, train_scratch
from models.split import TargetSplit
from models.training import FitResult


@task(name="fine-tune", cache_policy=NO_CACHE, task_run_name="fine-tune-{name}")
def fine_tune_source(name: str, source: PreparedSource, split: TargetSplit, config: FineTuneConfig,
                     seed: int) -> FitResult:
    """Carry a source (aligned to the target) over and fine-tune it (mode from ``config``)."""
    fit = fine_tune(source.model, split, config=config, seed=seed, text=source.text)
    get_run_logger().info("fine-tuned %s (%s): val NDCG@10 %.4f -> %.4f in %d epochs, %.1fs",
                          name, config.mode, fit.initial_val_ndcg, fit.best_val_ndcg, fit.epochs_run,
                          fit.seconds)
    return fit


@task(name="train-scratch", cache_policy=NO_CACHE)
def train_scratch_baseline(split: TargetSplit, model: ModelConfig, train: TrainConfig, seed: int) -> FitResult:
    """The same architecture trained on the target data only."""
    fit = train_scratch(split, model=model, train=train, seed=seed)
    get_run_logger().info("scratch: val NDCG@10 %.4f in %d epochs, %.1fs", fit.best_val_ndcg, fit.epochs_run,
                          fit.seconds)
    return fit


@task(name="fit-als", cache_policy=NO_CACHE)
def fit_als_baseline(split: TargetSplit, val_task: RankingTask, seed: int) -> AlsResult:
    """Implicit ALS on the target data only, tuned on a small grid by validation NDCG@10."""
    result = fit_als(split.train, split.catalogue, val_task, seed=seed)
    get_run_logger().info("als: best %s, val NDCG@10 %.4f", result.params, result.val_ndcg_at_10)
    return result


@task(name="fit-popularity", cache_policy=NO_CACHE)
def fit_popularity_baseline(split: TargetSplit) -> FactorModel:
    """Most-interacted target items first."""
    return fit_popularity(split)
