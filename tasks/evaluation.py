"""Tasks that evaluate every model of an onboarding on the same split and log one child run per model."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE

from data_contracts.columns import PROPENSITY
from models.config import EvalConfig
from models.evaluation.plots import plot_learning_curves, plot_metric_at_k, plot_slices
from models.evaluation.ranking import (
    Evaluation,
    RankingTask,
    off_policy_by_model,
    test_period_impressions,
)
from models.evaluation.ranking import evaluate_models as evaluate_all  # the task below keeps the flow's name
from models.evaluation.slices import head_items, item_slice_recall, sliced_means, user_slices
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


@task(name="evaluate-models", cache_policy=NO_CACHE)
def evaluate_models(
    models: dict[str, FactorModel], fits: dict[str, FitResult], val_task: RankingTask, test_task: RankingTask,
    config: EvalConfig,
) -> dict[str, ModelReport]:
    """Full-ranking metrics of every model on validation and test (same users, items and exclusions)."""
    val = evaluate_all(models, val_task, ks=config.ks, ctr_k=config.ctr_k)
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
                        "fit/negatives": report.fit.n_negatives})
        if report.fit.resumed_from_epoch is not None:
            metrics["fit/resumed_from_epoch"] = report.fit.resumed_from_epoch
    return metrics


@task(name="log-model-runs", cache_policy=NO_CACHE)
def log_model_runs(
    reports: dict[str, ModelReport], run: tracking.TrackingContext, params: dict[str, dict[str, Any]],
    tags: dict[str, str], log_models: tuple[str, ...], datasets: list[tracking.DatasetRecord] | None = None,
    source: str | None = None,
) -> dict[str, ModelReport]:
    """One child run per model: params, per-epoch history, val/test metrics and (for ``log_models``) weights;
    its datasets: the target's parts of ``datasets`` (and for ``transfer``, the training data of ``source``)."""
    logged = {}
    target_parts = [d for d in datasets or [] if d.context != "source"]
    chosen = [d for d in datasets or [] if d.name == f"source:{source}"]
    for name, report in reports.items():
        trained_for = report.fit.seconds if report.fit is not None else 0.0
        estimator = {"ctr_estimator": report.test.ctr.estimator} if report.test.ctr is not None else {}
        with run.child(name, tags={**tags, "role": name, **estimator}, started_seconds_ago=trained_for) as child:
            child.log_datasets([*target_parts, *(chosen if name == "transfer" else [])])
            # the model first, then its metrics linked to it, with the params and curves, in one write (see
            # tracking.log_factor_model)
            uri = tracking.log_factor_model(child.uri, child.run_id, report.model) if name in log_models else None
            tracking.log_run_data(child.uri, child.run_id, metrics=_stage_metrics(report), model_uri=uri,
                                  params=params.get(name, {}),
                                  history=report.fit.history if report.fit is not None else None)
        logged[name] = ModelReport(report.name, report.model, report.val, report.test, report.fit, child.run_id,
                                   uri)
    return logged


@task(name="analyse-models", cache_policy=NO_CACHE)
def analyse_models(reports: dict[str, ModelReport], split: TargetSplit, test_task: RankingTask,
                   source_users: np.ndarray | None, run: tracking.TrackingContext) -> dict[str, Any]:
    """Test metrics by slice (see :mod:`models.evaluation.slices`) for every model, logged to its child run
    (``test_slice/<slice>/<metric>``) and as ``slices/slices.json``; plus the plots of the parent run:
    ``plots/learning_curves.png``, ``plots/ndcg_at_k.png`` and ``plots/slices_ndcg_at_10.png``."""
    masks = user_slices(test_task, split.train, source_users)
    head = head_items(test_task, split.train)
    slices: dict[str, dict[str, dict[str, float]]] = {}
    for name, report in reports.items():
        slices[name] = {**sliced_means(report.test.per_user, masks),
                        **{f"items:{group}": values
                           for group, values in item_slice_recall(report.model, test_task, head).items()}}
        if report.run_id:
            tracking.log_metrics(run.uri, report.run_id, {
                f"test_slice/{slice_name.replace(':', '.')}/{metric}": value
                for slice_name, values in slices[name].items() for metric, value in values.items()})
    run.log_dict(slices, "slices/slices.json")
    with tempfile.TemporaryDirectory(prefix="transferrec-plots-") as tmp:
        folder = Path(tmp)
        user_only = {m: {s: v for s, v in per.items() if not s.startswith("items:")} for m, per in slices.items()}
        for path in (
            plot_learning_curves({n: r.fit.history for n, r in reports.items() if r.fit is not None},
                                 folder / "learning_curves.png"),
            plot_metric_at_k({n: r.test.metrics for n, r in reports.items()}, folder / "ndcg_at_k.png"),
            plot_slices(user_only, folder / "slices_ndcg_at_10.png"),
        ):
            run.log_artifact(path, "plots")
    return slices


@task(name="off-policy-ctr", cache_policy=NO_CACHE)
def off_policy_ctr_report(reports: dict[str, ModelReport], impressions: pl.DataFrame | None, split: TargetSplit,
                          test_task: RankingTask, run: tracking.TrackingContext) -> dict[str, Any]:
    """IPS/SNIPS CTR of each model's top-1 policy on the test period's logged impressions, when the
    impressions table carries logging propensities; otherwise says why there is none. Logged as
    ``test/ctr_ips|snips[_ci_low|_ci_high]`` on each child run and ``ctr/off_policy.json`` on the parent."""
    if impressions is None or PROPENSITY not in impressions.columns or impressions[PROPENSITY].null_count():
        why = ("no impressions table" if impressions is None else
               "the impressions table has no (complete) propensity column, so no off-policy CTR can be computed")
        run.set_tags({"off_policy_ctr": why})
        return {"available": False, "why": why}
    logged = test_period_impressions(impressions, split.cutoffs, test_task.item_ids)
    out: dict[str, Any] = {"available": True, "impressions": logged.height, "models": {}}
    by_model = off_policy_by_model({name: report.model for name, report in reports.items()}, test_task, logged)
    for name, report in reports.items():
        results = by_model[name]
        out["models"][name] = {k: vars(v) for k, v in results.items()}
        if report.run_id and results:
            sides = (("", "ctr"), ("_ci_low", "low"), ("_ci_high", "high"))
            tracking.log_metrics(run.uri, report.run_id, {
                f"test/ctr_{k.lower()}{suffix}": getattr(v, field)
                for k, v in results.items() for suffix, field in sides})
    run.log_dict(out, "ctr/off_policy.json")
    return out
