"""Task that refits the registered winner on all of the target's data before it is served
(:mod:`models.transfer.refit`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.config import FineTuneConfig, ModelConfig, ModelFamily, TrainConfig
from models.evaluation.ranking import RankingTask
from models.factors import FactorModel
from models.nets.training import FitResult
from models.selection.candidates import PreparedSource
from models.split import TargetSplit
from models.transfer.als import EncodedTrain, fit_als
from models.transfer.joint import JOINT, JointTrain
from models.transfer.peers import PEERS
from models.transfer.recipes import catalogue_ids, fine_tune, fit_popularity, train_scratch
from models.transfer.refit import all_data_split, fixed_epochs, one_point_grid
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
    winner: str, split: TargetSplit, val_task: RankingTask, *, seed: int, tuned: dict[str, dict[str, Any]],
    fits: dict[str, FitResult], source: PreparedSource | None, finetune: FineTuneConfig, model: ModelConfig,
    scratch: TrainConfig, family: ModelFamily, content: np.ndarray | None, interactions: pl.DataFrame,
    items: pl.DataFrame,
) -> Refit:
    """``winner`` trained again on train + validation + test of ``split`` with what validation chose: the tuned
    peers at their chosen grid point, the networks for their best epoch count (the last epoch's weights, no early
    stopping), transfer from the same source; popularity counts every interaction. ``val_task`` only satisfies
    the fits' interface (its users are in the training data now: the score it gives means nothing)."""
    started = time.perf_counter()
    whole = all_data_split(split)
    params: dict[str, Any] = dict(tuned.get(winner, {}))
    if winner == "popularity":
        fitted = fit_popularity(whole)
    elif winner == "transfer":
        assert source is not None, "a transfer refit needs the chosen source"
        train = fixed_epochs(finetune.train, fits["transfer"])
        config = (finetune.model_copy(update={"mode": "zero-shot"}) if train is None
                  else finetune.model_copy(update={"train": train}))
        params = {"epochs": 0 if train is None else train.max_epochs, "mode": config.mode}
        fitted = fine_tune(source.model, whole, config=config, seed=seed, text=source.text, label="refit:transfer",
                           restore_best=False).model
    elif winner == "scratch":  # random initial weights that validated best are not served: one epoch then
        train = fixed_epochs(scratch, fits["scratch"]) or scratch.model_copy(update={"max_epochs": 1,
                                                                                      "patience": 1})
        params = {"epochs": train.max_epochs}
        fitted = train_scratch(whole, model=model, train=train, seed=seed, family=family, content=content,
                               label="refit:scratch", restore_best=False).model
    elif winner == "als":
        fitted = fit_als(EncodedTrain.of(whole.train, catalogue_ids(whole)), None, val_task,
                         grid=one_point_grid(winner, params), seed=seed).model
    elif winner in PEERS:
        fitted = PEERS[winner](EncodedTrain.of(whole.train, catalogue_ids(whole)), val_task,
                               grid=one_point_grid(winner, params)).model
    elif winner in JOINT:
        joint = JointTrain.of_split(interactions, items, whole)
        fitted = JOINT[winner](joint, val_task, grid=one_point_grid(winner, params), seed=seed).model
    else:
        raise ValueError(f"no refit for {winner!r}")
    rows = {"train": split.train.height, "val": split.val.height, "test": split.test.height,
            "all": whole.train.height}
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
    with run.child(name, tags={**tags, "role": "refit", "evaluated_run_id": evaluated.run_id,
                               "evaluated_model": evaluated.model_uri},
                   started_seconds_ago=refit.seconds) as child:
        child.log_datasets([replace(d, context="training") for d in datasets if d.context != "source"])
        model_uri = tracking.log_factor_model(child.uri, child.run_id, refit.model)
        child.log_params({"model": refit.winner, "refit": "train+validation+test",
                          **{f"refit.{k}": v for k, v in refit.params.items()}})
        child.log_metrics({**{f"refit/rows_{part}": rows for part, rows in refit.rows.items()},
                           "refit/seconds": refit.seconds,
                           **{f"evaluated/val/{k}": v for k, v in evaluated.val.metrics.items()},
                           **{f"evaluated/test/{k}": v for k, v in evaluated.test.metrics.items()}},
                          model_uri=model_uri)
    return Served(refit, child.run_id, model_uri, evaluated.run_id, evaluated.model_uri)
