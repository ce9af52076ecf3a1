"""The out-of-core onboarding (data bigger than memory) as a real Prefect flow with MLflow, GX and Lightning."""

from __future__ import annotations

from pathlib import Path

import mlflow
import polars as pl
import pytest

from data_contracts.contracts import ContractViolation
from flows.config import OnboardConfig
from flows.onboard import onboard_domain_flow
from models.config import SplitConfig
from models.split import split_with
from tasks.registry import BASELINES

TARGET = "games"


def test_out_of_core_onboarding_trains_on_disk_and_registers(synthetic_dir: Path, synthetic_dataset, mlflow_uri: str,
                                                               tmp_path: Path):
    base = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    config = base.model_copy(update={
        "out_of_core": True,
        "sources": base.sources.model_copy(update={"train": base.sources.train.model_copy(update={"max_epochs": 5})}),
        "data": base.data.model_copy(update={"batch_rows": 997, "data_dir": tmp_path / "cache"}),
        "evaluation": base.evaluation.model_copy(update={"max_users": 150}),
        "selection": base.selection.model_copy(update={"top_k": 2}),  # two finalists fine-tuned side by side
    })
    summary = onboard_domain_flow(config)

    assert set(summary.metrics) == {"transfer", *BASELINES}
    assert all(0.0 <= m["ndcg_at_10"] <= 1.0 for m in summary.metrics.values())
    assert summary.chosen_source in {c["name"] for c in summary.candidates}
    assert summary.model_version == "1" and summary.winner in summary.metrics
    # the same flow as in memory: both finalists fine-tuned on disk, validation and test NDCG@10 recorded
    finalists = [c for c in summary.candidates if c["val_ndcg_at_10"] is not None]
    assert len(finalists) == 2 and all(0.0 < c["test_ndcg_at_10"] <= 1.0 for c in finalists)
    assert summary.chosen_source in {c["name"] for c in finalists}
    # per-user rules: the same test rows as the in-memory split; evaluation on a sample of 150 users
    memory = split_with(synthetic_dataset.interactions, synthetic_dataset.items, domain=TARGET,
                        config=SplitConfig.smoke())
    logged = mlflow.MlflowClient(mlflow_uri).get_run(summary.mlflow_run_id)
    assert logged.data.params["split.test_interactions"] == str(memory.test.height)
    assert logged.data.params["split.test_users_evaluated"] == "150"
    assert logged.data.tags["out_of_core"] == "true" and logged.info.status == "FINISHED"
    # the plots whose figures exist out of core (no slices here)
    plots = {a.path for a in mlflow.MlflowClient(mlflow_uri).list_artifacts(summary.mlflow_run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/ndcg_at_k.png"}
    # lineage on disk: the three parts by their locations and settings (not re-read to hash), and the sources
    inputs = {d.dataset.name: d.dataset for d in logged.inputs.dataset_inputs}
    assert {"target:train", "target:val", "target:test"} <= set(inputs)
    assert {name for name in inputs if name.startswith("source:")} == {f"source:{c['name']}"
                                                                       for c in summary.candidates}
    assert len({inputs[f"target:{part}"].digest for part in ("train", "val", "test")}) == 3
    children = mlflow.search_runs(experiment_names=["transferrec-games"],
                                  filter_string=f"tags.mlflow.parentRunId = '{summary.mlflow_run_id}'")
    assert sorted(children["tags.role"]) == sorted(["transfer", *BASELINES, "refit"])
    assert (children["status"] == "FINISHED").all()
    evaluated = children[children["tags.role"] != "refit"]
    assert (evaluated["metrics.test/users"] == 150).all()
    # served: the winner refitted on every part on disk, vouched for by its evaluated run
    refit = children[children["tags.role"] == "refit"].iloc[0]
    assert refit["tags.mlflow.runName"] == f"refit:{summary.winner}"
    split = {k.removeprefix("split."): int(v) for k, v in logged.data.params.items()
             if k.removeprefix("split.") in ("train_interactions", "val_interactions", "test_interactions")}
    assert refit["metrics.refit/rows_all"] == sum(split.values())
    version = mlflow.MlflowClient(mlflow_uri).get_model_version("transferrec-games", summary.model_version)
    assert version.run_id == refit["run_id"] and version.tags["served"].startswith("refit")
    winner_run = evaluated[evaluated["tags.role"] == summary.winner].iloc[0]
    assert version.tags["evaluated_run_id"] == winner_run["run_id"]
    assert not (tmp_path / "cache" / "work" / summary.mlflow_run_id).exists()  # scratch files removed

    # bad data: the batched contracts fail the run before anything trains, and the registry is untouched
    bad = tmp_path / "bad"
    bad.mkdir()
    frame = pl.read_parquet(synthetic_dir / "interactions.parquet")
    frame.with_columns(pl.when(pl.int_range(pl.len()) == 1500).then(9.0).otherwise(pl.col("rating"))
                       .alias("rating")).write_parquet(bad / "interactions.parquet")
    pl.read_parquet(synthetic_dir / "items.parquet").write_parquet(bad / "items.parquet")
    # in the user's words: the file and the column as the export names them
    with pytest.raises(ContractViolation, match=r"bad/interactions.parquet, column 'rating' \(interactions.rating\): "
                                                r"rule 'rating within the declared scale'.*row 1500"):
        onboard_domain_flow(config.model_copy(update={"data": config.data.model_copy(update={"path": bad})}))
    versions = mlflow.MlflowClient(mlflow_uri).search_model_versions("name = 'transferrec-games'")
    assert [str(v.version) for v in versions] == ["1"]


def _part_runs(flow_run_id: str) -> list[str]:
    """The names of the flow run's part task runs (a validation batch, a bucket of users)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                     limit=200)
    parts = ("validate-interactions-", "validate-items-", "validate-users-", "split-bucket-", "source-split-bucket-")
    return [run.name for run in runs if run.name.startswith(parts)]


@pytest.mark.slow
def test_out_of_core_parts_on_a_dask_cluster_give_the_run_of_one_process(synthetic_dir: Path, mlflow_uri: str,
                                                                           tmp_path: Path, monkeypatch):
    """The validation batches and the buckets of users (the target's split and the sources') as Prefect tasks on
    a local Dask cluster of two worker processes: the same split, selection and metrics as one process."""
    from prefect.settings import PREFECT_API_URL

    from flows.config import RunnerConfig

    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())  # the workers report to this test's API
    base = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    config = base.model_copy(update={
        "out_of_core": True,
        "data": base.data.model_copy(update={"batch_rows": 997, "bucket_rows": 1000, "data_dir": tmp_path / "c"}),
        "evaluation": base.evaluation.model_copy(update={"max_users": 150}),
    })
    one = onboard_domain_flow(config.model_copy(update={"runner": RunnerConfig(kind="sequential")}))
    spread = onboard_domain_flow(config.model_copy(update={"runner": RunnerConfig(kind="dask", workers=2,
                                                                                  processes=True)}))

    assert spread.split == one.split and spread.chosen_source == one.chosen_source
    assert spread.candidates == one.candidates
    for model in one.metrics:
        assert spread.metrics[model] == pytest.approx(one.metrics[model], abs=1e-9), model
    client = mlflow.MlflowClient(mlflow_uri)
    names = {run: _part_runs(client.get_run(run).data.tags["prefect.flow_run_id"])
             for run in (one.mlflow_run_id, spread.mlflow_run_id)}
    assert sorted(names[one.mlflow_run_id]) == sorted(names[spread.mlflow_run_id])
    buckets = [n for n in names[spread.mlflow_run_id] if n.startswith("split-bucket-")]
    batches = [n for n in names[spread.mlflow_run_id] if n.startswith("validate-interactions-")]
    assert len(buckets) >= 3 and len(batches) >= 10, names[spread.mlflow_run_id]
