"""Task that ranks the source candidates by domain similarity and a zero-shot probe."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.evaluation import RankingTask, evaluate_model
from models.recipes import zero_shot_model
from models.similarity import PROBE, overlap_signals, rank_candidates
from models.split import TargetSplit
from tasks import tracking
from tasks.sources import SourceModel


@dataclass(frozen=True)
class Selection:
    """The chosen source, the ranked candidate table and why."""

    chosen: str
    table: pl.DataFrame
    rationale: str
    probe_runs: dict[str, str]


@task(name="select-source", cache_policy=NO_CACHE)
def select_source(
    sources: dict[str, SourceModel], split: TargetSplit, val_task: RankingTask, run: tracking.TrackingContext
) -> Selection:
    """Compute every candidate's signals (overlap, zero-shot validation NDCG@10), rank them, log the table."""
    rows, probe_runs = [], {}
    for name, source in sources.items():
        probe = evaluate_model(zero_shot_model(source.model, split), val_task, ks=(10,))
        signals = overlap_signals(source.model, split)
        rows.append({"name": name, **signals, PROBE: probe.metrics["ndcg_at_10"],
                     "source_version": source.version, "source_domains": ",".join(source.spec.domains)})
        probe_runs[name] = tracking.start_run(run.uri, run.experiment_id, f"probe:{name}", parent_id=run.run_id,
                                              tags={"role": "candidate", "source": name})
        tracking.log_metrics(run.uri, probe_runs[name], {
            **{f"signal/{k}": v for k, v in signals.items()}, "val/ndcg_at_10": probe.metrics["ndcg_at_10"],
        })
        tracking.log_params(run.uri, probe_runs[name], {"source_model": source.spec.registered_name,
                                                        "source_version": source.version})
        tracking.end_run(run.uri, probe_runs[name])
    table, rationale = rank_candidates(rows)
    chosen = str(table.row(0, named=True)["name"])
    tracking.log_table(run.uri, run.run_id, table, "selection/candidates.json")
    tracking.log_text(run.uri, run.run_id, rationale, "selection/rationale.txt")
    tracking.set_tags(run.uri, run.run_id, {"chosen_source": chosen, "selection_rationale": rationale})
    create_table_artifact(key="source-selection", table=table.to_dicts(), description=rationale)
    get_run_logger().info("selected source %s: %s", chosen, rationale)
    return Selection(chosen, table, rationale, probe_runs)
