"""Reading the store back: the source catalogue, recent onboardings, a run's children."""


from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd

from tasks.tracking.models import load_profile
from tasks.tracking.names import ONBOARD_RUN_PREFIX, SOURCE_PREFIX
from tasks.tracking.runs import client


def source_catalogue(uri: str, *, with_stats: bool = True) -> list[dict[str, Any]]:
    """The newest version of every registered source model (with its profile's size and behaviour stats
    unless ``with_stats`` is False: that downloads each profile)."""
    c = client(uri)
    out = []
    for registered in c.search_registered_models(filter_string=f"name LIKE '{SOURCE_PREFIX}%'"):
        versions = c.search_model_versions(f"name = '{registered.name}'")
        if not versions:
            continue
        newest = max(versions, key=lambda v: int(v.version))
        entry: dict[str, Any] = {"registered_model": registered.name, "version": str(newest.version),
                                 "run_id": newest.run_id, "source": newest.tags.get("source"),
                                 "dataset": newest.tags.get("dataset"),
                                 "domains": newest.tags.get("source_domains", "").split(","),
                                 "time_safe_for": newest.tags.get("time_safe_for", newest.tags.get("target_domain")),
                                 "fingerprint": newest.tags.get("fingerprint")}
        if not with_stats:
            out.append(entry)
            continue
        try:
            stats = load_profile(uri, str(newest.run_id)).stats
            entry.update({k: int(stats[k]) for k in ("users", "items", "interactions")})
            entry["popularity_gini"] = stats["popularity_gini"]
        except FileNotFoundError:
            entry.update({"users": None, "items": None, "interactions": None, "popularity_gini": None})
        out.append(entry)
    return sorted(out, key=lambda e: e["registered_model"])


COMPARE_METRICS = ("test/ndcg_at_10", "val/ndcg_at_10", "test/lift_ndcg_at_10",
                   "test/lift_ndcg_at_10_vs_popularity_ci_low", "test/lift_ndcg_at_10_vs_popularity_ci_high")


def recent_onboardings(uri: str, experiment_name: str, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest onboarding (parent) runs of an experiment, newest first, with what tells them apart: status,
    source, family, mode, fraction, seed, transfer's test/val NDCG@10, the lift over the best baseline and its
    interval over popularity, the winner and whether it was promoted."""
    c = client(uri)
    experiment = c.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    found = c.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name LIKE '{ONBOARD_RUN_PREFIX}%'",
                          order_by=["attributes.start_time DESC"], max_results=limit)
    rows = []
    for run in found:
        tags, metrics = run.data.tags, run.data.metrics
        rows.append({
            "run_id": run.info.run_id, "started": run.info.start_time, "status": run.info.status,
            "source": tags.get("chosen_source"), "family": tags.get("family", "mf"), "mode": tags.get("mode"),
            "fraction": tags.get("fraction"), "seed": tags.get("seed"), "winner": tags.get("winner"),
            "model_version": tags.get("model_version"), "promotion": tags.get("promotion"),
            **{key: metrics.get(key) for key in COMPARE_METRICS},
        })
    return rows


def runs_table(uri: str, experiment_name: str, *, parent_id: str) -> pd.DataFrame:
    """The child runs of ``parent_id`` (for summaries and tests)."""
    client(uri)
    return mlflow.search_runs(experiment_names=[experiment_name],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")
