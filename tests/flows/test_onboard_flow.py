"""The onboard-domain and pretrain-source flows with real Prefect, MLflow (tmp SQLite), GX and Lightning."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import polars as pl
import pytest

from data_contracts.contracts import ContractViolation
from flows.cli import main
from flows.config import OnboardConfig, PretrainConfig
from flows.onboard import onboard_domain_flow
from flows.pretrain import pretrain_source_flow
from models.config import FineTuneConfig
from models.data.datasets import read_canonical_dir
from models.evaluation.ranking import evaluate_models
from models.selection.sources import slug
from models.split import split_with
from models.transfer.closed_form import ClosedFormGrid
from models.transfer.recipes import ranking_tasks
from tasks import tracking
from tasks.registry import BASELINES
from tasks.runtime import closed_form_cache
from tasks.tracking import SOURCES_EXPERIMENT

TARGET = "games"
MODEL = "transferrec-games"


def runs(uri: str, experiment: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def versions(uri: str) -> list[str]:
    client = mlflow.MlflowClient(uri)
    try:
        return sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    except mlflow.exceptions.MlflowException:
        return []


def champion(uri: str) -> str | None:
    try:
        return str(mlflow.MlflowClient(uri).get_model_version_by_alias(MODEL, "champion").version)
    except mlflow.exceptions.MlflowException:
        return None


def test_onboarding_logs_compares_and_registers(synthetic_dir: Path, mlflow_uri: str, tmp_path: Path):
    summary = onboard_domain_flow(OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri))

    assert summary.target_domain == TARGET
    assert summary.chosen_source in {c["name"] for c in summary.candidates}
    assert set(summary.metrics) == {"transfer", *BASELINES}
    for metrics in summary.metrics.values():
        for key in ("ndcg_at_10", "precision_at_10", "recall_at_10", "hit_rate_at_10", "ctr_at_3"):
            assert 0.0 <= metrics[key] <= 1.0

    table = runs(mlflow_uri, "transferrec-games")
    parent = table[table["run_id"] == summary.mlflow_run_id].iloc[0]
    assert parent["status"] == "FINISHED"
    assert parent["tags.target_domain"] == TARGET and parent["params.split.fraction"] == "0.3"
    children = table[table["tags.mlflow.parentRunId"] == summary.mlflow_run_id]
    names = set(children["tags.mlflow.runName"])
    assert {"transfer", *BASELINES} <= names
    assert {f"probe:{c['name']}" for c in summary.candidates} <= names
    assert (children["status"] == "FINISHED").all()
    transfer = children[children["tags.mlflow.runName"] == "transfer"].iloc[0]
    # what the run logged is what the summary reports
    assert transfer["metrics.test/ndcg_at_10"] == pytest.approx(summary.metrics["transfer"]["ndcg_at_10"])
    # bootstrap intervals: each headline metric inside its own interval, the lift per baseline with a paired one
    assert transfer["metrics.test/ndcg_at_10_ci_low"] <= transfer["metrics.test/ndcg_at_10"] \
        <= transfer["metrics.test/ndcg_at_10_ci_high"]
    assert set(summary.lift_intervals) == set(BASELINES)
    metrics = summary.metrics
    for baseline, interval in summary.lift_intervals.items():
        assert interval["estimate"] == pytest.approx(
            metrics["transfer"]["ndcg_at_10"] / metrics[baseline]["ndcg_at_10"] - 1, abs=1e-6)
        assert interval["low"] <= interval["estimate"] <= interval["high"]
    assert parent["metrics.test/lift_ndcg_at_10_vs_popularity_ci_low"] == pytest.approx(
        summary.lift_intervals["popularity"]["low"])

    # the transfer recipe kept: the closed-form one unless the network fine-tune validates better by the margin
    network, closed_form = (float(transfer[f"params.transfer.{r}_val_ndcg_at_10"]) for r in ("network", "closed_form"))
    network_kept = network > closed_form * (1 + FineTuneConfig().recipe_margin)
    assert transfer["params.transfer.recipe"] == ("network" if network_kept else "closed-form")
    assert transfer["metrics.val/ndcg_at_10"] == pytest.approx(network if network_kept else closed_form)

    client = mlflow.MlflowClient(mlflow_uri)
    # the fine-tune's curve was on the parent run while it trained (step = epoch, from 1), and is the transfer
    # run's own when the fine-tune was kept
    live = client.get_metric_history(summary.mlflow_run_id,
                                     f"live/transfer-{slug(summary.chosen_source)}/val_ndcg_at_10")
    assert live
    history = client.get_metric_history(transfer["run_id"], "curve/val_ndcg_at_10")
    if transfer["params.transfer.recipe"] == "network":
        assert history and [m.step for m in history] == sorted(m.step for m in history)
        assert sorted((m.step, m.value) for m in live) == [(m.step + 1, pytest.approx(m.value)) for m in history]
    else:
        assert not history and float(transfer["params.transfer.alpha"]) in ClosedFormGrid().alpha
    assert client.get_metric_history(summary.mlflow_run_id, "live/scratch/train_loss")
    # lineage: the parent run read the target's three parts and every candidate's training data; each model's
    # run names the parts it was scored on (and the transfer run its source), so the registered version's run does
    parent_inputs = {d.dataset.name: d for d in client.get_run(summary.mlflow_run_id).inputs.dataset_inputs}
    assert set(parent_inputs) == {"target:train", "target:val", "target:test",
                                  *(f"source:{c['name']}" for c in summary.candidates)}
    contexts = {name: {t.key: t.value for t in d.tags}["mlflow.data.context"] for name, d in parent_inputs.items()}
    assert contexts["target:train"] == "training" and contexts["target:test"] == "test"
    for part in ("train", "val", "test"):
        profile = json.loads(parent_inputs[f"target:{part}"].dataset.profile)
        assert profile["num_rows"] == summary.split[f"{part}_interactions"]
    sources_table = runs(mlflow_uri, SOURCES_EXPERIMENT)
    fingerprints = dict(zip(sources_table["tags.source"], sources_table["tags.fingerprint"], strict=True))
    for candidate in summary.candidates:
        assert parent_inputs[f"source:{candidate['name']}"].dataset.digest == fingerprints[candidate["name"]]
    transfer_inputs = {d.dataset.name for d in client.get_run(transfer["run_id"]).inputs.dataset_inputs}
    assert transfer_inputs == {"target:train", "target:val", "target:test", f"source:{summary.chosen_source}"}
    served_version = client.get_model_version(MODEL, summary.model_version)
    # and the version's own page lists them (tags: digest and location)
    assert {name: served_version.tags[tracking.dataset_tag(name)].split()[0] for name in parent_inputs} == {
        name: d.dataset.digest for name, d in parent_inputs.items()}
    served_run = served_version.run_id
    assert {"target:train", "target:val", "target:test"} <= {
        d.dataset.name for d in client.get_run(served_run).inputs.dataset_inputs}
    # the flow run's progress artifact went through every stage to the end
    from prefect.artifacts import Artifact

    artifact = Artifact.get("progress-onboard-games")
    assert artifact is not None and artifact.data == 100.0 and artifact.description == "onboard games: done"
    artifacts = {a.path for a in client.list_artifacts(summary.mlflow_run_id)}
    assert {"summary.json", "summary.md", "config.json", "contracts", "selection", "slices", "plots"} <= artifacts
    # the candidate table, once: every candidate in one row, the chosen finalist's fine-tuned scores filled
    logged = json.loads(Path(client.download_artifacts(summary.mlflow_run_id, "selection/candidates.json",
                                                       str(tmp_path))).read_text())
    rows = [dict(zip(logged["columns"], row, strict=True)) for row in logged["data"]]
    assert sorted(row["name"] for row in rows) == sorted(c["name"] for c in summary.candidates)
    assert next(row for row in rows if row["name"] == summary.chosen_source)["val_ndcg_at_10"] is not None
    plots = {a.path for a in client.list_artifacts(summary.mlflow_run_id, "plots")}
    assert plots == {"plots/learning_curves.png", "plots/ndcg_at_k.png", "plots/slices_ndcg_at_10.png"}
    # slices: every test user in exactly one activity group; the groups' user-weighted mean is the overall mean
    slices = summary.slices["transfer"]
    activity = [slices[s] for s in ("target_train:cold", "target_train:light", "target_train:warm") if s in slices]
    assert sum(s["users"] for s in activity) == transfer["metrics.test/users"]
    weighted = sum(s["users"] * s["ndcg_at_10"] for s in activity) / sum(s["users"] for s in activity)
    assert weighted == pytest.approx(summary.metrics["transfer"]["ndcg_at_10"])
    assert {"items:head", "items:tail"} <= set(slices)
    # no impressions table: no off-policy CTR, and the summary says why
    assert summary.off_policy_ctr == {"available": False, "why": "no impressions table"}
    assert any(k.startswith("metrics.test_slice/target_train.") for k, v in transfer.items() if v == v)

    # registry: the winner is a challenger; the first winner also becomes champion
    version = client.get_model_version(MODEL, summary.model_version)
    assert "challenger" in version.aliases
    assert version.tags["winner"] == summary.winner
    # what is served is the winner refitted on all of the target's data; the evaluated run vouches for it
    winner_run = children[children["tags.mlflow.runName"] == summary.winner].iloc[0]
    refit = children[children["tags.mlflow.runName"] == f"refit:{summary.winner}"].iloc[0]
    assert version.run_id == refit["run_id"] and version.tags["evaluated_run_id"] == winner_run["run_id"]
    assert version.tags["served"].startswith("refit")
    assert refit["tags.evaluated_run_id"] == winner_run["run_id"]
    assert refit["metrics.evaluated/test/ndcg_at_10"] == pytest.approx(winner_run["metrics.test/ndcg_at_10"])
    split = summary.split
    assert refit["metrics.refit/rows_all"] == split["train_interactions"] + split["val_interactions"] \
        + split["test_interactions"] == int(version.tags["refit_rows_all"])
    served = tracking.load_factor_model(mlflow_uri, f"models:/{MODEL}/{summary.model_version}")
    evaluated = tracking.load_factor_model(mlflow_uri, version.tags["evaluated_model"])
    assert len(served.user_ids) >= len(evaluated.user_ids)  # it has seen the validation and test users too
    assert not np.array_equal(served.item_bias, evaluated.item_bias) or len(served.user_ids) > len(
        evaluated.user_ids)
    assert (champion(mlflow_uri) == summary.model_version) == summary.promoted
    # the winner (evaluated and refitted) is logged as a servable model; every other model keeps its weights on
    # its run, which score as the run's metrics say
    experiment = client.get_experiment_by_name("transferrec-games").experiment_id
    logged = {client.get_run(m.source_run_id).info.run_name for m in client.search_logged_models([experiment])}
    assert logged == {summary.winner, f"refit:{summary.winner}"}
    other = next(n for n in ("popularity", "ease", "scratch") if n != summary.winner)
    other_run = children[children["tags.mlflow.runName"] == other].iloc[0]
    weights = tracking.load_factor_model(mlflow_uri, f"runs:/{other_run['run_id']}/{tracking.WEIGHTS_ARTIFACT}")
    config = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    data = read_canonical_dir(synthetic_dir, "synthetic")
    _, test_task = ranking_tasks(split_with(data.interactions, data.items, domain=TARGET, config=config.split),
                                 click_threshold=config.evaluation.click_threshold)
    scored = evaluate_models({other: weights}, test_task, ks=config.evaluation.ks, ctr_k=config.evaluation.ctr_k)
    assert scored[other].metrics["ndcg_at_10"] == pytest.approx(other_run["metrics.test/ndcg_at_10"])

    # the registered model serves top-K through the pyfunc flavour
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{summary.model_version}")
    out = model.predict(pd.DataFrame({"user_id": ["u00001", "someone-new"]}), params={"k": 5})
    assert [len(x) for x in out["item_ids"]] == [5, 5]
    assert all(str(i).startswith("games-") for i in out["item_ids"][0])

    # `transferrec recommend` serves the same model by alias and writes top-K per user
    users = tmp_path / "users.csv"
    pl.DataFrame({"user_id": ["u00001", "someone-new"]}).write_csv(users)
    written = tmp_path / "out" / "top.parquet"
    assert main(["recommend", "--target-domain", TARGET, "--users", str(users), "--k", "5", "--out", str(written),
                 "--alias", "challenger"]) == 0
    top = pl.read_parquet(written)
    assert top.height == 10 and top.filter(pl.col("user_id") == "u00001")["rank"].to_list() == [1, 2, 3, 4, 5]
    challenger_model = mlflow.pyfunc.load_model(f"models:/{MODEL}@challenger")
    expected = challenger_model.predict(pd.DataFrame({"user_id": ["u00001"]}), params={"k": 5})["item_ids"][0]
    assert top.filter(pl.col("user_id") == "u00001")["item_id"].to_list() == [str(i) for i in expected]
    assert main(["recommend", "--target-domain", "nowhere", "--users", str(users), "--out", str(written)]) == 1
    pl.DataFrame({"customer": ["x"]}).write_csv(users)
    assert main(["recommend", "--target-domain", TARGET, "--users", str(users), "--out", str(written)]) == 2

    # the source models were registered with their fingerprints
    sources = runs(mlflow_uri, SOURCES_EXPERIMENT)
    assert len(sources) == len(summary.candidates) and (sources["status"] == "FINISHED").all()


def test_second_onboarding_reuses_sources_and_gates_the_champion(synthetic_dir: Path, mlflow_uri: str, capsys):
    first = onboard_domain_flow(OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri))
    n_sources = len(runs(mlflow_uri, SOURCES_EXPERIMENT))
    config = OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    # the second reads and validates the tables in batches (as for tables bigger than memory): the same data,
    # so the same fingerprint, and its sources are found
    second = onboard_domain_flow(config.model_copy(update={"split": config.split.model_copy(update={"seed": 1}),
                                                           "data": config.data.model_copy(update={"batch_rows": 997})}))

    assert len(runs(mlflow_uri, SOURCES_EXPERIMENT)) == n_sources  # nothing retrained
    assert versions(mlflow_uri) == ["1", "2"]
    # the closed-form recipe's ALS source, kept by its inputs: one per seed (the seed is one of them)
    assert len(list(closed_form_cache().glob("closed-form-source-*.npy"))) == 2
    tags = mlflow.MlflowClient(mlflow_uri).get_model_version(MODEL, "2").tags
    if first.promoted:  # whichever model won the second run's guard
        # the champion was re-evaluated on the second run's test users, with a paired interval of the lift
        assert "champion_test_ndcg_at_10" in tags
        lift, low = float(tags["lift_over_champion"]), float(tags["lift_over_champion_ci_low"])
        assert lift == pytest.approx(float(tags["challenger_test_ndcg_at_10"]) / float(tags["champion_test_ndcg_at_10"])
                                     - 1, abs=1e-5)
        assert second.promoted == (lift > 0 and low > 0)
    expected = "2" if second.promoted else ("1" if first.promoted else None)
    assert champion(mlflow_uri) == expected
    assert tags["promotion"] == ("promoted" if second.promoted else "not-promoted")

    # `transferrec compare` lines the two runs up, newest first, with what the runs logged
    capsys.readouterr()
    assert main(["compare", "--target-domain", TARGET, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [r["run_id"] for r in rows] == [second.mlflow_run_id, first.mlflow_run_id]
    assert rows[0]["test/ndcg_at_10"] == pytest.approx(second.metrics["transfer"]["ndcg_at_10"])
    assert [r["seed"] for r in rows] == ["1", "0"] and rows[0]["model_version"] == "2"
    assert rows[0]["promotion"] == tags["promotion"]
    assert main(["compare", "--target-domain", TARGET]) == 0
    assert second.mlflow_run_id[:8] in capsys.readouterr().out


def write_bad_copy(source: Path, target: Path) -> Path:
    target.mkdir()
    bad = pl.read_parquet(source / "interactions.parquet").with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(9.0).otherwise(pl.col("rating")).alias("rating"))
    bad.write_parquet(target / "interactions.parquet")
    pl.read_parquet(source / "items.parquet").write_parquet(target / "items.parquet")
    return target


def test_bad_data_fails_the_run_and_touches_nothing(synthetic_dir: Path, mlflow_uri: str, tmp_path: Path):
    good = onboard_domain_flow(OnboardConfig.smoke(TARGET, synthetic_dir, mlflow_uri))
    before_versions, before_champion = versions(mlflow_uri), champion(mlflow_uri)
    bad_dir = write_bad_copy(synthetic_dir, tmp_path / "bad")

    with pytest.raises(ContractViolation) as err:
        onboard_domain_flow(OnboardConfig.smoke(TARGET, bad_dir, mlflow_uri))
    failure = err.value.failures[0]
    assert (failure.table, failure.column, failure.rule) == ("interactions", "rating",
                                                             "rating within the declared scale")
    assert failure.sample_rows == [0, 1, 2]

    table = runs(mlflow_uri, "transferrec-games")
    failed = table[(table["status"] == "FAILED") & table["tags.mlflow.parentRunId"].isna()]
    assert len(failed) == 1
    failed_id = failed.iloc[0]["run_id"]
    assert not (table["tags.mlflow.parentRunId"] == failed_id).any()  # stopped before any model ran
    client = mlflow.MlflowClient(mlflow_uri)
    paths = {a.path for a in client.list_artifacts(failed_id, "contracts")}
    assert "contracts/violation.md" in paths
    report = Path(client.download_artifacts(failed_id, "contracts/violation.md", str(tmp_path))).read_text()
    assert "rating within the declared scale" in report
    assert versions(mlflow_uri) == before_versions and champion(mlflow_uri) == before_champion
    assert good.model_version in before_versions


def test_cli_reports_violations_with_exit_code_1(synthetic_dir: Path, mlflow_uri: str, tmp_path: Path, capsys):
    bad_dir = write_bad_copy(synthetic_dir, tmp_path / "bad")
    code = main(["onboard", "--data", str(bad_dir), "--target-domain", TARGET, "--dim", "8", "--top-single", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert "interactions.rating" in err and "rating within the declared scale" in err and "row 0" in err
    assert versions(mlflow_uri) == []


def test_cli_json_last_line(synthetic_dir: Path, mlflow_uri: str, capsys):
    code = main(["onboard", "--data", str(synthetic_dir), "--target-domain", TARGET, "--target-fraction", "0.3",
                 "--dim", "8", "--top-single", "1", "--max-epochs", "3", "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"mlflow_run_id", "target_domain", "chosen_source", "registered_model", "model_version", "alias",
            "metrics", "candidates"} <= set(payload)
    assert payload["registered_model"] == MODEL and payload["alias"] in {"champion", "challenger"}
    assert {"transfer", *BASELINES} <= set(payload["metrics"])


def test_pretrain_flow_trains_once_then_reuses(synthetic_dir: Path, mlflow_uri: str):
    config = PretrainConfig.smoke(TARGET, synthetic_dir, mlflow_uri)
    first = pretrain_source_flow(config)
    assert {s["name"] for s in first["sources"]} == {"music", "all-others"}  # largest other domain + all
    assert all(s["trained_now"] for s in first["sources"])
    again = pretrain_source_flow(config)
    assert not any(s["trained_now"] for s in again["sources"])
    forced = pretrain_source_flow(config.model_copy(update={"force": True}))
    assert all(s["trained_now"] and s["version"] == "2" for s in forced["sources"])
