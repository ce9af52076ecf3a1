"""Tasks of the data-efficiency curve: one point per target fraction, then the table and the plot."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from models.config import SplitConfig
from models.data.datasets import Dataset
from models.evaluation.curve import plot_curve, time_to_quality
from models.evaluation.ranking import RankingTask, ndcg_at
from models.factors import FactorModel
from models.nets.training import FitResult
from models.split import InsufficientDataError, TargetSplit, split_with
from tasks import tracking

COLUMNS = (("fraction", "fraction"), ("train", "train_interactions"), ("source", "source"),
           ("transfer", "transfer_test_ndcg_at_10"), ("scratch", "scratch_test_ndcg_at_10"),
           ("popularity", "popularity_test_ndcg_at_10"), ("transfer s", "transfer_seconds_to_target"),
           ("scratch s", "scratch_seconds_to_target"), ("transfer epochs", "transfer_epochs_to_target"),
           ("scratch epochs", "scratch_epochs_to_target"), ("speed-up", "speedup"),
           ("transfer fit s", "transfer_fit_seconds"), ("scratch fit s", "scratch_fit_seconds"))


@task(name="split-fractions", cache_policy=NO_CACHE)
def split_fractions(dataset: Dataset, domain: str, config: SplitConfig, fractions: tuple[float, ...]
                    ) -> tuple[dict[float, TargetSplit], dict[float, str]]:
    """One split per fraction; a fraction that leaves too little data is skipped with its reason (the curve
    goes on with the others)."""
    splits, skipped = {}, {}
    for fraction in fractions:
        try:
            splits[fraction] = split_with(dataset.interactions, dataset.items, domain=domain,
                                          config=config.model_copy(update={"fraction": fraction}))
        except InsufficientDataError as error:
            skipped[fraction] = str(error)
            get_run_logger().warning("skipping fraction %s: %s", fraction, error)
    return splits, skipped


@task(name="curve-point", cache_policy=NO_CACHE)
def curve_point(split: TargetSplit, fraction: float, source: str, transfer: FitResult, scratch: FitResult,
                popularity: FactorModel, test_task: RankingTask) -> dict[str, Any]:
    """Test NDCG@10 of each model, and the time and epochs each needs to reach scratch's best validation."""
    target = scratch.best_val_ndcg
    t_seconds, t_epochs = time_to_quality(transfer.history, initial=transfer.initial_val_ndcg, target=target,
                                          setup_seconds=transfer.init_seconds)
    s_seconds, s_epochs = time_to_quality(scratch.history, initial=scratch.initial_val_ndcg, target=target)
    test = {name: ndcg_at(model, test_task)
            for name, model in (("transfer", transfer.model), ("scratch", scratch.model), ("popularity", popularity))}
    return {
        "target_domain": split.domain, "fraction": fraction, "train_interactions": split.train.height,
        "source": source, **{f"{name}_test_ndcg_at_10": value for name, value in test.items()},
        "scratch_best_val_ndcg_at_10": target, "transfer_best_val_ndcg_at_10": transfer.best_val_ndcg,
        "transfer_seconds_to_target": t_seconds, "transfer_epochs_to_target": t_epochs,
        "scratch_seconds_to_target": s_seconds, "scratch_epochs_to_target": s_epochs,
        "speedup": (s_seconds / t_seconds) if t_seconds and s_seconds else None,
        "transfer_fit_seconds": transfer.init_seconds + transfer.seconds, "scratch_fit_seconds": scratch.seconds,
    }


def curve_markdown(rows: list[dict[str, Any]]) -> str:
    """The curve as a Markdown table (``never`` where transfer does not reach scratch's best)."""
    lines = ["| " + " | ".join(c[0] for c in COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    for row in rows:
        cells = []
        for _, key in COLUMNS:
            value = row.get(key)
            if value is None:
                cells.append("never" if key.startswith("transfer") else "-")
            elif isinstance(value, float):
                cells.append(f"{value:.4f}" if "ndcg" in key else f"{value:.2f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@task(name="log-curve", cache_policy=NO_CACHE)
def log_curve(rows: list[dict[str, Any]], run: tracking.TrackingContext,
              skipped: dict[float, str] | None = None) -> str:
    """The table (``curve/curve.json``), the plot (``curve/curve.png``), metrics per fraction (step = index);
    skipped fractions are listed under the table."""
    for step, row in enumerate(rows):
        run.log_metrics({
            f"curve/{k}": float(v) for k, v in row.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "fraction"}, step=step)
    run.log_table(pl.DataFrame(rows, infer_schema_length=None), "curve/curve.json")
    with tempfile.TemporaryDirectory(prefix="transferrec-curve-") as tmp:
        run.log_artifact(plot_curve(rows, Path(tmp) / "curve.png"), "curve")
    markdown = curve_markdown(rows)
    if skipped:
        markdown += "\n\n" + "\n".join(f"- fraction {f}: skipped ({reason})" for f, reason in skipped.items())
    run.log_text(markdown, "curve/curve.md")
    create_markdown_artifact(key="data-efficiency-curve", markdown=markdown, description="transfer vs scratch")
    return markdown
