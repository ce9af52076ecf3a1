"""Tasks that rank the source candidates (signals + zero-shot probe) and settle the choice after fine-tuning."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import polars as pl
from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.config import FineTuneConfig, SelectionConfig, SourcesConfig
from models.evaluation.ranking import RankingTask, ndcg_at
from models.nets.training import FitResult
from models.selection.candidates import PreparedSource, prepare_source, target_profile
from models.selection.similarity import PROBE, rank_candidates, settle_finalists
from models.split import TargetSplit
from models.transfer.recipes import zero_shot_model
from tasks import tracking
from tasks.runtime import embedding_cache
from tasks.sources import SourceModel

VAL, TEST = "val_ndcg_at_10", "test_ndcg_at_10"


@dataclass(frozen=True)
class Selection:
    """The chosen source, the ranked candidate table, why, and each candidate ready to fine-tune."""

    chosen: str
    table: pl.DataFrame
    rationale: str
    decided_by: str
    prepared: dict[str, PreparedSource]

    def finalists(self, k: int) -> list[str]:
        """The ``k`` best-scored candidates (ranked order)."""
        return self.table.sort("rank")["name"].head(k).to_list()


def resolve_matching(config: SourcesConfig, *, same_dataset: bool) -> tuple[str, bool]:
    """``item_match`` and ``shared_users`` with their defaults filled: within a dataset ids match and users
    are shared; across datasets items match by title key and users are other people."""
    item_match = config.item_match if config.item_match != "auto" else ("id" if same_dataset else "title")
    shared = config.shared_users if config.shared_users is not None else same_dataset
    return item_match, shared


def log_selection(run: tracking.TrackingContext, table: pl.DataFrame, rationale: str, chosen: str,
                  signal: str) -> None:
    """The candidate table, the rationale and the choice: on the onboarding's run and as a Prefect artifact
    (both onboardings, in memory and out of core). Called once a run, with the final table (MLflow appends a
    table logged again to the one already there)."""
    run.log_table(table, "selection/candidates.json")
    run.log_text(rationale, "selection/rationale.txt")
    run.set_tags({"chosen_source": chosen, "selection_rationale": rationale[:4000], "selection_decided_by": signal})
    create_table_artifact(key="source-selection", table=table.to_dicts(), description=rationale)


def _log_probe_run(run: tracking.TrackingContext, name: str, signals: dict[str, float],
                   params: dict[str, Any]) -> None:
    with run.child(tracking.probe_run_name(name), tags={"role": "candidate", "source": name}) as probe_run:
        tracking.log_run_data(probe_run.uri, probe_run.run_id, metrics={
            **{f"signal/{k}": v for k, v in signals.items() if k != PROBE}, "val/ndcg_at_10": signals[PROBE]
        }, params=params)


@task(name="select-source", cache_policy=NO_CACHE)
def select_source(
    sources: dict[str, SourceModel], split: TargetSplit, val_task: RankingTask, run: tracking.TrackingContext, *,
    dataset: str, same_dataset: bool, config: SourcesConfig, finetune: FineTuneConfig, selection: SelectionConfig,
) -> Selection:
    """Every candidate's signals and zero-shot probe, the combined score, the ranked table and its rationale.

    Each candidate gets a child run ``probe:<name>`` with its signals, written in the background while the
    onboarding goes on (:meth:`~tasks.tracking.TrackingContext.later`). The caller logs the table once it is final
    (:func:`log_selection`; the onboarding's :func:`settle_selection` does).
    """
    item_match, shared_users = resolve_matching(config, same_dataset=same_dataset)
    target = target_profile(split, dataset, config.embedder, cache=embedding_cache())
    rows, prepared = [], {}
    for name, source in sources.items():
        ready = prepare_source(source.model, source.profile, split, target, item_match=item_match,
                               shared_users=shared_users, embedder=config.embedder)
        probe = ndcg_at(zero_shot_model(ready.model, split, ready.text, config=finetune), val_task)
        signals = {**ready.signals, PROBE: probe}
        prepared[name] = ready
        rows.append({"name": name, **signals, "source_version": source.version,
                     "source_domains": ",".join(source.spec.domains), "source_dataset": source.profile.dataset,
                     "embedder": ready.embeddings.embedder if ready.embeddings else "none"})
        run.later(partial(_log_probe_run, run, name, signals, params={
            "source_model": source.spec.registered_name, "source_version": source.version,
            "item_match": item_match, "shared_users": shared_users}))
    table, rationale, signal = rank_candidates(rows, selection.weights)
    chosen = str(table.row(0, named=True)["name"])
    table = table.with_columns(pl.lit(None, dtype=pl.Float64).alias(VAL), pl.lit(None, dtype=pl.Float64).alias(TEST))
    get_run_logger().info("ranked sources %s; %s", table["name"].to_list(), rationale)
    return Selection(chosen, table, rationale, signal, prepared)


@task(name="settle-selection", cache_policy=NO_CACHE)
def settle_selection(selection: Selection, fits: dict[str, FitResult], val_task: RankingTask,
                     test_task: RankingTask, run: tracking.TrackingContext, *, margin: float) -> Selection:
    """With the finalists fine-tuned: keep the best-scored one unless another wins on validation NDCG@10 by
    more than ``margin`` (test NDCG@10 is recorded for reporting, never used to choose); log the table
    (:func:`log_selection`)."""
    scores = {name: (ndcg_at(fit.model, val_task), ndcg_at(fit.model, test_task))
              for name, fit in fits.items()}
    table = selection.table.with_columns(
        pl.col("name").replace_strict({n: v for n, (v, _) in scores.items()}, default=None,
                                      return_dtype=pl.Float64).alias(VAL),
        pl.col("name").replace_strict({n: t for n, (_, t) in scores.items()}, default=None,
                                      return_dtype=pl.Float64).alias(TEST),
    )
    if len(fits) <= 1:  # the table written in the background while the onboarding goes on
        run.later(partial(log_selection, run, table, selection.rationale, selection.chosen, selection.decided_by))
        return replace(selection, table=table)
    ranked = [n for n in table.sort("rank")["name"].to_list() if n in scores]
    chosen = settle_finalists(ranked, {n: v for n, (v, _) in scores.items()}, margin=margin)
    listed = ", ".join(f"{n} {v:.4f}" for n, (v, _) in sorted(scores.items(), key=lambda kv: -kv[1][0]))
    rationale = (f"fine-tuned the top {len(fits)} by score; validation NDCG@10 {listed}; kept {chosen} (a lower-"
                 f"scored finalist needs +{margin:.0%} on validation); scoring: {selection.rationale}")
    decided_by = "fine-tuned validation" if chosen != selection.chosen else selection.decided_by
    run.later(partial(log_selection, run, table, rationale, chosen, decided_by))
    get_run_logger().info("selected source %s: %s", chosen, rationale)
    return replace(selection, chosen=chosen, table=table, rationale=rationale, decided_by=decided_by)

