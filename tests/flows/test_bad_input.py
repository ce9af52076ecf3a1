"""Bad input stops an onboarding before any model trains: the run is FAILED with the report, the registry
and the current champion are untouched. Quarantine lets a mostly clean dataset through, with a record."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import polars as pl
import pytest

from data_contracts.report import ContractViolation
from flows.config import OnboardConfig
from flows.onboard import onboard_domain_flow
from models.config import DataConfig

TARGET = "games"
MODEL = "transferrec-games"
WINDOW = "timestamp within the sane window (not before timestamp_min, not in the future)"


@pytest.fixture(scope="module")
def store(tmp_path_factory, _mlflow_template, synthetic_dir):
    """One MLflow store for the module, with a champion from a good onboarding."""
    root = tmp_path_factory.mktemp("bad-input")
    shutil.copy(_mlflow_template, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    good = onboard_domain_flow(OnboardConfig.smoke(TARGET, synthetic_dir, uri))
    assert good.promoted, "the good onboarding should leave a champion behind"
    yield uri, root
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous


def registry_state(uri: str) -> tuple[list[str], str]:
    client = mlflow.MlflowClient(uri)
    versions = sorted(str(v.version) for v in client.search_model_versions(f"name = '{MODEL}'"))
    return versions, str(client.get_model_version_by_alias(MODEL, "champion").version)


def csv_text(synthetic_dir: Path) -> str:
    return pl.read_parquet(synthetic_dir / "interactions.parquet").write_csv()


def data_dir(root: Path, synthetic_dir: Path, name: str, interactions: str) -> Path:
    folder = root / name.replace(" ", "-")
    folder.mkdir()
    (folder / "interactions.csv").write_text(interactions)
    shutil.copy(synthetic_dir / "items.parquet", folder / "items.parquet")
    return folder


def replace_first_row(text: str, row: str) -> str:
    header, _first, rest = text.split("\n", 2)
    return f"{header}\n{row}\n{rest}"


CASES = [
    ("empty file", lambda t: "", (None, "table is not empty")),
    ("header only", lambda t: t.split("\n", 1)[0] + "\n", (None, "table is not empty")),
    ("wrong delimiter", lambda t: t.replace(",", ";"), ("user_id,item_id,timestamp,rating",
                                                         "required column present")),
    ("renamed column", lambda t: t.replace("user_id", "customer", 1), ("user_id", "required column present")),
    ("string for a number", lambda t: replace_first_row(t, "u00000,games-0001,1600000000,great"),
     ("rating", "values convert to Float64")),
    ("NaN rating", lambda t: replace_first_row(t, "u00000,games-0001,1600000000,NaN"),
     ("rating", "rating is a finite number")),
    ("negative timestamp", lambda t: replace_first_row(t, "u00000,games-0001,-1600000000,4"),
     ("timestamp", WINDOW)),
    ("future timestamp", lambda t: replace_first_row(t, "u00000,games-0001,4102444800,4"), ("timestamp", WINDOW)),
    ("duplicate rows", lambda t: t + t.split("\n")[1] + "\n",
     ("user_id,item_id,timestamp", "no duplicate (user_id, item_id, timestamp) rows")),
    ("unknown item", lambda t: replace_first_row(t, "u00000,games-9999,1600000000,4"),
     ("item_id", "item exists in items (referential integrity)")),
    ("whitespace id", lambda t: replace_first_row(t, " u00000,games-0001,1600000000,4"),
     ("user_id", "key has no leading or trailing whitespace")),
]


@pytest.mark.parametrize("name,make,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_the_run_and_leaves_the_registry_alone(store, synthetic_dir, name, make, expected):
    uri, root = store
    before = registry_state(uri)
    folder = data_dir(root, synthetic_dir, name, make(csv_text(synthetic_dir)))
    with pytest.raises(ContractViolation) as err:
        onboard_domain_flow(OnboardConfig.smoke(TARGET, folder, uri))
    assert expected in {(f.column, f.rule) for f in err.value.failures}
    assert registry_state(uri) == before
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["transferrec-games"], order_by=["start_time DESC"], max_results=1)
    latest = runs.iloc[0]
    assert latest["status"] == "FAILED" and latest["tags.contracts"] == "failed"
    assert expected[1] in latest["tags.error"]


def test_too_little_target_data_fails_on_volume(store, synthetic_dir):
    uri, _ = store
    before = registry_state(uri)
    config = OnboardConfig.smoke(TARGET, synthetic_dir, uri)
    config = config.model_copy(update={"data": config.data.model_copy(update={"min_target_interactions": 10_000})})
    with pytest.raises(ContractViolation, match="target domain has at least 10000 interactions"):
        onboard_domain_flow(config)
    assert registry_state(uri) == before


def test_quarantine_goes_on_and_records_what_it_dropped(synthetic_dir, mlflow_uri, tmp_path):
    text = replace_first_row(csv_text(synthetic_dir), "u00000,games-0001,1600000000,11")
    folder = data_dir(tmp_path, synthetic_dir, "quarantine", text)
    config = OnboardConfig.smoke(TARGET, folder, mlflow_uri)
    config = config.model_copy(update={"data": DataConfig(dataset="synthetic", path=folder,
                                                          on_violation="quarantine")})
    summary = onboard_domain_flow(config)
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(summary.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["contracts/quarantined_interactions"] == 1
    local = client.download_artifacts(run.info.run_id, "contracts/quarantine/interactions.parquet", str(tmp_path))
    quarantined = pl.read_parquet(local)
    assert quarantined["_row"].to_list() == [0]
    assert quarantined["_violations"].to_list() == ["rating within the declared scale"]
    report = Path(client.download_artifacts(run.info.run_id, "contracts/report.md", str(tmp_path))).read_text()
    assert "Quarantined 1 row(s)" in report
