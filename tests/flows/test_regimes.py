"""The three transfer regimes end to end (real Prefect, MLflow, GX, Lightning) on synthetic catalogues.

* shared users: genres of one catalogue (also covered by test_onboard_flow) — here with --top-k 2;
* shared items, disjoint users: a second dataset selling the same items to other people (colliding ids);
* neither: other items described with the same tag vocabulary; only item text connects them.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from flows.cli import main
from flows.config import OnboardConfig, PretrainConfig
from flows.onboard import onboard_domain_flow
from flows.pretrain import pretrain_source_flow
from models.config import DataConfig, SelectionConfig, SourcesConfig
from models.data.datasets import write_canonical_dir
from models.data.synthetic import generate_multidomain
from models.transfer.joint import JOINT
from tasks.registry import BASELINES
from tasks.tracking import SOURCES_EXPERIMENT

TARGET = "movies"


@pytest.fixture(scope="module")
def catalogues(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("regimes")
    shared = dict(items_per_domain=30, interactions_per_domain=12.0, item_seed=11)
    # the source shop and the same-items shop sell the same items (item_seed) to other people
    return {
        "source": write_canonical_dir(generate_multidomain(n_users=300, seed=3, name="shop-a", **shared),
                                      root / "shop-a"),
        "same-items": write_canonical_dir(generate_multidomain(n_users=300, seed=4, name="shop-b", **shared),
                                          root / "shop-b"),
        "other-items": write_canonical_dir(
            generate_multidomain(n_users=200, seed=5, name="shop-c", items_per_domain=30, item_seed=12,
                                 item_prefix="c", user_prefix="c"), root / "shop-c"),
    }


def cross_config(target_dir: Path, source_dir: Path, uri: str, **sources) -> OnboardConfig:
    base = OnboardConfig.smoke(TARGET, target_dir, uri)
    return base.model_copy(update={
        "data": DataConfig(dataset=target_dir.name, path=target_dir),
        "sources": SourcesConfig.smoke().model_copy(update={
            "data": DataConfig(dataset=source_dir.name, path=source_dir), "embedder": "hashed", **sources}),
        "selection": SelectionConfig(top_k=2),
    })


def runs(uri: str, experiment: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=[experiment])


def by_name(summary: dict) -> dict[str, dict]:
    return {c["name"]: c for c in summary.candidates}


def test_shared_items_disjoint_users(catalogues, mlflow_uri: str, capsys):
    # the source shop's catalogue is built once for targets in other datasets, then reused by fingerprint
    config = cross_config(catalogues["same-items"], catalogues["source"], mlflow_uri)
    pretrained = pretrain_source_flow(PretrainConfig(exclude_domain=None, data=config.sources.data,
                                                     sources=config.sources, tracking=config.tracking))
    assert all(s["trained_now"] for s in pretrained["sources"])
    trained = len(runs(mlflow_uri, SOURCES_EXPERIMENT))
    summary = onboard_domain_flow(config)
    assert len(runs(mlflow_uri, SOURCES_EXPERIMENT)) == trained
    candidates = by_name(summary)
    # the namesake domain of the other shop and the all-domain model are candidates
    assert {"movies", "all-domains"} <= set(candidates) and summary.chosen_source in candidates
    for c in candidates.values():
        assert c["user_coverage"] == 0.0  # same id numbers, other people
    assert candidates["movies"]["item_coverage"] == 1.0 and candidates["movies"]["matched_items"] == 30
    finalists = [c for c in candidates.values() if c["val_ndcg_at_10"] is not None]
    assert len(finalists) == 2 and all(c["test_ndcg_at_10"] is not None for c in finalists)
    # carried-over item vectors make a better start than random ones: the fine-tuned transfer beats the same
    # network trained from scratch (by several percent on this data with the 5-epoch smoke budget)
    assert summary.val_metrics["transfer"]["ndcg_at_10"] > summary.val_metrics["scratch"]["ndcg_at_10"]
    # the joint peers learn from the other shop's interactions with these items, as every peer in the guard; the
    # closed-form recipe, which carries the source's users over, is not fitted for other people
    assert set(summary.metrics) == {"transfer", *BASELINES}
    assert summary.transfer_recipe["recipe"] == "network" and "closed_form_val_ndcg_at_10" not in \
        summary.transfer_recipe
    peers = runs(mlflow_uri, "transferrec-movies")
    joint = peers[peers["tags.mlflow.parentRunId"] == summary.mlflow_run_id].set_index("tags.mlflow.runName")
    for kind in JOINT:
        assert joint.loc[kind, "status"] == "FINISHED" and joint.loc[kind, "metrics.test/ndcg_at_10"] > 0

    # the sources serve any target of another dataset: registered once, with their profile
    client = mlflow.MlflowClient(mlflow_uri)
    name = "transferrec-source-shop-a-movies"
    version = client.search_model_versions(f"name = '{name}'")[0]
    assert version.tags["time_safe_for"].startswith("any") and version.tags["dataset"] == "shop-a"
    assert {a.path for a in client.list_artifacts(version.run_id, "profile")} >= {
        "profile/profile.json", "profile/items.parquet", "profile/users.parquet"}

    # `transferrec sources` lists the catalogue
    capsys.readouterr()
    assert main(["sources", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["sources"]
    movies = next(s for s in listed if s["registered_model"] == "transferrec-source-shop-a-movies")
    assert movies["domains"] == ["movies"] and movies["dataset"] == "shop-a" and movies["items"] == 30
    assert movies["users"] == 300 and movies["interactions"] > 300


def test_nothing_shared_transfers_through_item_text(catalogues, mlflow_uri: str, tmp_path: Path):
    summary = onboard_domain_flow(cross_config(catalogues["other-items"], catalogues["source"], mlflow_uri))
    candidates = by_name(summary)
    for c in candidates.values():
        assert c["user_coverage"] == 0.0 and c["item_coverage"] == 0.0
        assert c["content_coverage"] > 0.0  # the shared tag vocabulary
    assert set(summary.metrics) == {"transfer", *BASELINES} - set(JOINT)  # joint peers: same-dataset sources
    table = runs(mlflow_uri, "transferrec-movies")
    parent = table[table["run_id"] == summary.mlflow_run_id].iloc[0]
    assert parent["status"] == "FINISHED" and parent["tags.chosen_source"] == summary.chosen_source

    # selection from the catalogue alone: the source shop's raw data is gone, its models and profiles remain
    config = cross_config(catalogues["other-items"], catalogues["source"], mlflow_uri)
    gone = DataConfig(dataset="shop-a", path=tmp_path / "no-such-folder")
    again = onboard_domain_flow(config.model_copy(update={"sources": config.sources.model_copy(
        update={"data": gone, "registered_only": True})}))
    assert {n: c["zero_shot_val_ndcg_at_10"] for n, c in by_name(again).items()} == {
        n: c["zero_shot_val_ndcg_at_10"] for n, c in candidates.items()}


def test_shared_users_with_a_configured_combination(synthetic_dir: Path, mlflow_uri: str):
    config = OnboardConfig.smoke("games", synthetic_dir, mlflow_uri).model_copy(update={
        "sources": SourcesConfig.smoke().model_copy(update={"combinations": ("books+music",), "embedder": "hashed"}),
        "selection": SelectionConfig(top_k=3)})
    summary = onboard_domain_flow(config)
    candidates = by_name(summary)
    assert "books+music" in candidates and "all-others" in candidates
    assert all(c["user_coverage"] > 0.9 for c in candidates.values())  # genres of one catalogue share users
    ranked = sorted(candidates.values(), key=lambda c: c["rank"])
    assert [c["val_ndcg_at_10"] is not None for c in ranked] == [True, True, True] + [False] * (len(ranked) - 3)
    assert summary.chosen_source in [c["name"] for c in ranked[:3]]
    for c in ranked:
        assert c["score"] == pytest.approx(sum(v for k, v in c.items() if k.startswith("contribution/")))
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(summary.mlflow_run_id)
    assert run.data.tags["selection_decided_by"] and run.data.tags["chosen_source"] == summary.chosen_source


def test_another_export_of_the_same_customers_hides_the_targets_test_period(synthetic_dataset, mlflow_uri: str,
                                                                            tmp_path: Path):
    """A company's new category in one export, its other categories in another, the same customer ids
    (``sources.shared_users``): the source models, the closed-form recipe and the joint peers see each customer's
    other purchases before their first target test interaction only, as within one dataset, and the sources are
    registered for this target, not for any."""
    import polars as pl

    from data_contracts.columns import DOMAIN, ITEM_ID
    from models.data.datasets import Dataset
    from models.split import split_with, time_safe_source
    from tasks import tracking

    data = synthetic_dataset
    parts = {}
    for name, keep in (("new-category", pl.col(DOMAIN) == "games"), ("old-categories", pl.col(DOMAIN) != "games")):
        items = data.items.filter(keep)
        interactions = data.interactions.join(items.select(ITEM_ID), on=ITEM_ID, how="semi")
        parts[name] = (write_canonical_dir(Dataset(name, interactions, items), tmp_path / name), interactions)
    target_dir, old_dir = parts["new-category"][0], parts["old-categories"][0]
    config = OnboardConfig.smoke("games", target_dir, mlflow_uri).model_copy(update={
        "data": DataConfig(dataset=target_dir.name, path=target_dir),
        "sources": SourcesConfig.smoke().model_copy(update={
            "data": DataConfig(dataset=old_dir.name, path=old_dir), "embedder": "hashed", "shared_users": True})})
    summary = onboard_domain_flow(config)

    cutoffs = split_with(parts["new-category"][1], data.items, domain="games", config=config.split).cutoffs
    hidden = parts["old-categories"][1].height - time_safe_source(parts["old-categories"][1], cutoffs).height
    assert hidden > 0  # the old export holds purchases after some customers' cutoffs
    sources = [e for e in tracking.source_catalogue(mlflow_uri) if e["dataset"] == "old-categories"]
    assert sources and all(e["time_safe_for"] == "games" for e in sources)
    everything = next(e for e in sources if set(e["domains"]) == {"books", "music", "movies"})
    assert everything["interactions"] == parts["old-categories"][1].height - hidden
    # the users are known: the closed-form recipe is fitted beside the fine-tune, and the joint peers
    assert "closed_form_val_ndcg_at_10" in summary.transfer_recipe
    assert set(summary.metrics) == {"transfer", *BASELINES}
    assert {c["name"]: c["user_coverage"] for c in summary.candidates}[everything["source"]] > 0.9
