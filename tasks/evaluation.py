"""Tasks that evaluate every model of an onboarding on the same split and log one child run per model."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts.columns import PROPENSITY
from models.config import EvalConfig
from models.evaluation.plots import plot_slices
from models.evaluation.ranking import (
    Evaluation,
    RankingTask,
    off_policy_by_model,
    test_period_impressions,
)
from models.evaluation.ranking import evaluate_models as evaluate_all  # the task below keeps the flow's name
from models.evaluation.slices import head_items, item_slice_recall, sliced_means, user_slices
from models.evaluation.uncertainty import Interval, mean_intervals, paired_lift_intervals
from models.factors import FactorModel
from models.nets.training import FitResult
from models.split import TargetSplit
from tasks import tracking


@dataclass(frozen=True)
class ModelReport:
    """One model's evaluation on validation and test, and where it was logged."""

    name: str
    model: FactorModel
    val: Evaluation
    test: Evaluation
    fit: FitResult | None = None
    run_id: str | None = None
    model_uri: str | None = None


@dataclass(frozen=True)
class Analysis:
    """What the onboarding adds to the metrics, computed before anything is logged: the bootstrap intervals, test
    metrics by slice and the off-policy CTR (None: not computed); what each model's child run gets of them
    (``metrics``) and what the parent run gets (``parent_metrics``)."""

    slices: dict[str, Any] | None = None
    off_policy: dict[str, Any] | None = None
    intervals: dict[str, Any] = field(default_factory=dict)  # :func:`intervals`
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    parent_metrics: dict[str, float] = field(default_factory=dict)  # the lift intervals, for the parent run


@task(name="evaluate-models", cache_policy=NO_CACHE)
def evaluate_models(
    models: dict[str, FactorModel], fits: dict[str, FitResult], val_task: RankingTask, test_task: RankingTask,
    config: EvalConfig, val_models: dict[str, FactorModel] | None = None,
) -> dict[str, ModelReport]:
    """Full-ranking metrics of every model on validation and test (same users, items and exclusions);
    ``val_models``: a model as validated where it differs from the one tested (its users as of their validation
    period)."""
    val = evaluate_all({**models, **(val_models or {})}, val_task, ks=config.ks, ctr_k=config.ctr_k)
    test = evaluate_all(models, test_task, ks=config.ks, ctr_k=config.ctr_k)
    return {name: ModelReport(name=name, model=model, fit=fits.get(name), val=val[name], test=test[name])
            for name, model in models.items()}


def _stage_metrics(report: ModelReport) -> dict[str, float]:
    metrics = {f"val/{k}": v for k, v in report.val.metrics.items()}
    metrics.update({f"test/{k}": v for k, v in report.test.metrics.items()})
    metrics["test/users"] = report.test.n_users
    metrics["val/users"] = report.val.n_users
    if report.fit is not None:
        metrics.update({"fit/seconds": report.fit.seconds, "fit/epochs": report.fit.epochs_run,
                        "fit/best_epoch": report.fit.best_epoch, "fit/initial_val_ndcg_at_10":
                        report.fit.initial_val_ndcg, "fit/trainable_parameters": report.fit.trainable_parameters,
                        "fit/init_seconds": report.fit.init_seconds, "fit/batch_size": report.fit.batch_size,
                        "fit/negatives": report.fit.n_negatives, "fit/patience": report.fit.patience,
                        "fit/row_updates": float(report.fit.row_updates)})
        if report.fit.resumed_from_epoch is not None:
            metrics["fit/resumed_from_epoch"] = report.fit.resumed_from_epoch
    return metrics


class ModelRuns:
    """Each model's child run, opened on the tracking's background thread as soon as the model is trained
    (:meth:`open`, :meth:`~tasks.tracking.TrackingContext.later`), while the others train and the models are
    evaluated: its tags, its datasets (the target's parts of ``datasets``, and for ``transfer`` the training data
    of its source) and its weights (``tracking.log_weights``). A trained network's run starts when its fit did.
    :func:`log_model_runs` finishes them."""

    def __init__(self, run: tracking.TrackingContext, tags: dict[str, str],
                 datasets: list[tracking.DatasetRecord] | None = None) -> None:
        self.run, self.tags, self.datasets = run, tags, datasets or []
        self.opened: dict[str, Future[str]] = {}

    def open(self, name: str, model: FactorModel, trained_for: float = 0.0, source: str | None = None) -> None:
        """Open ``name``'s run (once) with ``model``'s weights, started ``trained_for`` seconds ago."""
        if name not in self.opened:
            self.opened[name] = self.run.later(partial(self._open, name, model, trained_for, source))

    def open_all(self, models: dict[str, FactorModel], fits: dict[str, FitResult], source: str) -> None:
        """Open the runs of ``models`` not open yet (``transfer``'s with the training data of ``source``)."""
        for name, model in models.items():
            self.open(name, model, fits[name].seconds if name in fits else 0.0,
                      source if name == "transfer" else None)

    def run_id(self, name: str) -> str:
        """The id of ``name``'s run, once opened (raises what opening it raised)."""
        return self.opened[name].result()

    def _open(self, name: str, model: FactorModel, trained_for: float, source: str | None) -> str:
        run = self.run
        child_id = tracking.start_run(run.uri, run.experiment_id, name, parent_id=run.run_id,
                                      tags={**self.tags, "role": name}, started_seconds_ago=trained_for)
        tracking.log_datasets(run.uri, child_id, [d for d in self.datasets if d.context != "source"
                                                  or (source is not None and d.name == f"source:{source}")])
        tracking.log_weights(run.uri, child_id, model)
        return child_id


@task(name="log-model-runs", cache_policy=NO_CACHE)
def log_model_runs(
    reports: dict[str, ModelReport], runs: ModelRuns, params: dict[str, dict[str, Any]],
    log_models: tuple[str, ...], analysis: Analysis | None = None,
) -> dict[str, ModelReport]:
    """Finish each model's child run (:class:`ModelRuns`): for ``log_models``, a servable MLflow model
    (``tracking.log_factor_model``; every run keeps its weights); then its params, per-epoch history, val/test
    metrics and, with ``analysis``, its slices, intervals and off-policy CTR, in one write; FINISHED."""
    logged, uri = {}, runs.run.uri
    for name, report in reports.items():
        child_id = runs.run_id(name)
        with tracking.closing_run(uri, child_id):
            # the model first, then its metrics linked to it, with the params and curves, in one write (see
            # tracking.log_factor_model)
            model_uri = tracking.log_factor_model(uri, child_id, report.model) if name in log_models else None
            metrics = {**_stage_metrics(report), **(analysis.metrics.get(name, {}) if analysis else {})}
            estimator = {"ctr_estimator": report.test.ctr.estimator} if report.test.ctr is not None else {}
            tracking.log_run_data(uri, child_id, metrics=metrics, model_uri=model_uri, params=params.get(name, {}),
                                  history=report.fit.history if report.fit is not None else None, tags=estimator)
        logged[name] = ModelReport(report.name, report.model, report.val, report.test, report.fit, child_id,
                                   model_uri)
    return logged


HEADLINE = ("ndcg_at_10", "precision_at_10", "recall_at_10")


def intervals(reports: dict[str, ModelReport], baselines: list[str], *, metric: str, seed: int = 0) -> dict[str, Any]:
    """Bootstrap 95 % intervals (users resampled) of each model's headline test metrics, and paired intervals
    of transfer's relative test ``metric`` lift over each of ``baselines`` (the same users resampled for both)."""
    # one set of resamples for every column: the models are scored on the same test users
    found = mean_intervals({(name, m): r.test.per_user[m] for name, r in reports.items() for m in HEADLINE
                            if m in r.test.per_user}, seed=seed)
    metrics: dict[str, dict[str, Interval]] = {name: {} for name in reports}
    for (name, m), interval in found.items():
        metrics[name][m] = interval
    lift = paired_lift_intervals(reports["transfer"].test.per_user[metric],
                                 {b: reports[b].test.per_user[metric] for b in baselines}, seed=seed)
    return {"metrics": metrics, "lift": lift}


def interval_metrics(found: dict[str, Any], *, metric: str) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """MLflow metrics of :func:`intervals`: per model (its child run) and for the parent run."""
    per_model = {name: {f"test/{m}_ci_{side}": getattr(i, side) for m, i in metrics.items()
                        for side in ("low", "high")} for name, metrics in found["metrics"].items()}
    parent = {}
    for baseline, i in found["lift"].items():
        parent[f"test/lift_{metric}_vs_{baseline}"] = i.estimate
        parent[f"test/lift_{metric}_vs_{baseline}_ci_low"] = i.low
        parent[f"test/lift_{metric}_vs_{baseline}_ci_high"] = i.high
    return per_model, parent


def _slice_metrics(per_slice: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"test_slice/{slice_name.replace(':', '.')}/{metric}": value
            for slice_name, values in per_slice.items() for metric, value in values.items()}


def _ctr_metrics(results: dict[str, Any]) -> dict[str, float]:
    sides = (("", "ctr"), ("_ci_low", "low"), ("_ci_high", "high"))
    return {f"test/ctr_{k.lower()}{suffix}": getattr(v, attr) for k, v in results.items() for suffix, attr in sides}


def slices_by_model(reports: dict[str, ModelReport], split: TargetSplit, test_task: RankingTask,
                    source_users: np.ndarray | None) -> dict[str, dict[str, dict[str, float]]]:
    """Test metrics by slice (see :mod:`models.evaluation.slices`) for every model."""
    masks = user_slices(test_task, split.train, source_users)
    head = head_items(test_task, split.train)
    return {name: {**sliced_means(report.test.per_user, masks),
                   **{f"items:{group}": values
                      for group, values in item_slice_recall(report.model, test_task, head).items()}}
            for name, report in reports.items()}


def off_policy_ctr(reports: dict[str, ModelReport], impressions: pl.DataFrame | None, split: TargetSplit,
                   test_task: RankingTask) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """IPS/SNIPS CTR of each model's top-1 policy on the test period's logged impressions, when the impressions
    table carries logging propensities (otherwise ``{"available": False, "why": ...}``); and each model's
    ``test/ctr_ips|snips[_ci_low|_ci_high]``."""
    if impressions is None or PROPENSITY not in impressions.columns or impressions[PROPENSITY].null_count():
        why = ("no impressions table" if impressions is None else
               "the impressions table has no (complete) propensity column, so no off-policy CTR can be computed")
        return {"available": False, "why": why}, {}
    logged = test_period_impressions(impressions, split.cutoffs, test_task.item_ids)
    by_model = off_policy_by_model({name: report.model for name, report in reports.items()}, test_task, logged)
    out: dict[str, Any] = {"available": True, "impressions": logged.height,
                           "models": {name: {k: vars(v) for k, v in by_model[name].items()} for name in reports}}
    return out, {name: _ctr_metrics(by_model[name]) for name in reports if by_model[name]}


@task(name="analyse-models", cache_policy=NO_CACHE)
def analyse_models(reports: dict[str, ModelReport], test_task: RankingTask, baselines: list[str], *, metric: str,
                   split: TargetSplit | None = None, source_users: np.ndarray | None = None,
                   impressions: pl.DataFrame | None = None) -> Analysis:
    """The bootstrap intervals of every model (``test/<metric>_ci_low|high``) and of transfer's lift over each
    of ``baselines`` (the parent run's ``test/lift_<metric>_vs_<baseline>[_ci_low|_ci_high]``); with the
    ``split`` in memory, also the slices (``test_slice/<slice>/<metric>``) and the off-policy CTR
    (``test/ctr_ips|snips[_ci_low|_ci_high]``). Figures only: :func:`log_model_runs` writes each model's with its
    other metrics, :func:`log_analysis` and the summary the parent run's."""
    found = intervals(reports, baselines, metric=metric)
    per_model, parent = interval_metrics(found, metric=metric)
    if split is None:  # out of core: slices and off-policy CTR read whole tables
        return Analysis(intervals=found, metrics=per_model, parent_metrics=parent)
    slices = slices_by_model(reports, split, test_task, source_users)
    off_policy, ctr = off_policy_ctr(reports, impressions, split, test_task)
    return Analysis(slices, off_policy, found, {name: {**per_model.get(name, {}), **_slice_metrics(slices[name]),
                                                       **ctr.get(name, {})} for name in reports}, parent)


def plot_later(run: tracking.TrackingContext, plot: Callable[[Any, Path], Path], data: Any, file: str) -> None:
    """Draw ``plot(data, path)`` and log it as the run's ``plots/<file>`` on the tracking's background thread
    (:meth:`~tasks.tracking.TrackingContext.later`): the flow goes on meanwhile, the run ends once it is
    written, and an error fails the run. The flow queues each plot as soon as what it shows is known."""
    run.later(partial(_draw_and_log, run, plot, data, file))


def _draw_and_log(run: tracking.TrackingContext, plot: Callable[[Any, Path], Path], data: Any, file: str) -> None:
    with tempfile.TemporaryDirectory(prefix="transferrec-plots-") as tmp:
        run.log_artifact(plot(data, Path(tmp) / file), "plots")


@task(name="log-analysis", cache_policy=NO_CACHE)
def log_analysis(analysis: Analysis, run: tracking.TrackingContext) -> None:
    """The parent run's part of the analysis: ``slices/slices.json`` and the plot ``plots/slices_ndcg_at_10.png``
    (:func:`plot_later`); ``ctr/off_policy.json``, or the tag ``off_policy_ctr`` saying why there is none."""
    if analysis.slices is not None:
        slices = analysis.slices
        run.log_dict(slices, "slices/slices.json")
        user_only = {m: {s: v for s, v in per.items() if not s.startswith("items:")} for m, per in slices.items()}
        plot_later(run, plot_slices, user_only, "slices_ndcg_at_10.png")
    if analysis.off_policy is not None:
        if analysis.off_policy["available"]:
            run.log_dict(analysis.off_policy, "ctr/off_policy.json")
        else:
            run.set_tags({"off_policy_ctr": analysis.off_policy["why"]})
