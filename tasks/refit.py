"""Task that refits the registered winner on all of the target's data before it is served
(:mod:`models.transfer.refit`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.blas import one_blas_thread
from models.config import FineTuneConfig, ModelConfig, TrainConfig
from models.evaluation.ranking import RankingTask
from models.factors import FactorModel
from models.nets.training import FitResult
from models.transfer.refit import WholeTarget, refit_model
from tasks import tracking
from tasks.evaluation import ModelReport


@dataclass(frozen=True)
class Refit:
    """The served model: the winner refitted on all of the target's data."""

    winner: str
    model: FactorModel
    params: dict[str, Any] = field(default_factory=dict)  # what validation chose, reused (epochs, grid point)
    rows: dict[str, int] = field(default_factory=dict)  # the target interactions it saw, by part
    seconds: float = 0.0


@task(name="refit-winner", cache_policy=NO_CACHE)
def refit_winner(
    winner: str, whole: WholeTarget, val_task: RankingTask, *, seed: int, tuned: dict[str, dict[str, Any]],
    fits: dict[str, FitResult], source: FactorModel | None, finetune: FineTuneConfig, model: ModelConfig,
    scratch: TrainConfig, recipe_source: FactorModel | None = None,
) -> Refit:
    """``winner`` trained again on every target interaction of ``whole`` (in memory or on disk) with what
    validation chose (:func:`models.transfer.refit.refit_model`)."""
    started = time.perf_counter()
    with one_blas_thread():  # as the evaluated fits ran (tasks.training): the same arithmetic
        fitted, params = refit_model(winner, whole, val_task, seed=seed, params=tuned.get(winner, {}), fits=fits,
                                     source=source, finetune=finetune, model=model, scratch=scratch,
                                     recipe_source=recipe_source)
    rows = whole.rows
    get_run_logger().info("refitted %s on all %d target interactions (%s) in %.1fs", winner, rows["all"], params,
                          time.perf_counter() - started)
    return Refit(winner, fitted, params, rows, time.perf_counter() - started)


@dataclass(frozen=True)
class Served:
    """A refit as logged: the child run ``refit:<winner>`` and its model, and the evaluation that vouches for it."""

    refit: Refit
    run_id: str
    model_uri: str
    evaluated_run_id: str
    evaluated_model_uri: str


@task(name="log-refit", cache_policy=NO_CACHE)
def log_refit(refit: Refit, evaluated: ModelReport, run: tracking.TrackingContext, tags: dict[str, str],
              datasets: list[tracking.DatasetRecord]) -> Served:
    """The refit as a child run ``refit:<winner>``: its model, the choices it reused and the rows it saw, the
    evaluated run it comes from (tag ``evaluated_run_id``) and that run's metrics as ``evaluated/...``, so the
    MLflow UI shows which evaluation vouches for the served weights; its datasets are every target part, all
    as training data."""
    assert evaluated.run_id is not None and evaluated.model_uri is not None, "log the evaluated model first"
    name = tracking.refit_run_name(refit.winner)
    with run.child(name, tags={**tags, "role": "refit", tracking.EVALUATED_RUN_TAG: evaluated.run_id,
                               tracking.EVALUATED_MODEL_TAG: evaluated.model_uri},
                   started_seconds_ago=refit.seconds) as child:
        child.log_datasets([replace(d, context="training") for d in datasets if d.context != "source"])
        model_uri = tracking.log_factor_model(child.uri, child.run_id, refit.model)
        params = {"model": refit.winner, "refit": "train+validation+test",
                  **{f"refit.{k}": v for k, v in refit.params.items()}}
        metrics = {**{f"refit/rows_{part}": rows for part, rows in refit.rows.items()}, "refit/seconds": refit.seconds,
                   **{f"evaluated/val/{k}": v for k, v in evaluated.val.metrics.items()},
                   **{f"evaluated/test/{k}": v for k, v in evaluated.test.metrics.items()}}
        tracking.log_run_data(child.uri, child.run_id, params=params, metrics=metrics, model_uri=model_uri)
    return Served(refit, child.run_id, model_uri, evaluated.run_id, evaluated.model_uri)
