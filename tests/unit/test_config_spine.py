"""One spine: the CLI, the Python API, deployment runs and data-landed events resolve to the same config, and
the config models are the only place a default lives."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from flows.cli import build_parser, main, resolve_config
from flows.cli.options import VALUE, config_field, leaf_fields, set_path
from flows.cli.parser import DATA_COMMANDS, RUN_COMMANDS
from flows.config import DEMO, CurveConfig, OnboardConfig, PretrainConfig
from models.config import DataConfig
from models.data.datasets import parse_column_map

ROOT = Path(__file__).resolve().parents[2]


def value_at(config: Any, path: str) -> Any:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def parsed(*argv: str) -> Any:
    return resolve_config(build_parser().parse_args(list(argv)))


def subparser(command: str) -> argparse.ArgumentParser:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[command]


@pytest.mark.parametrize("command", [*RUN_COMMANDS, *DATA_COMMANDS])
def test_every_option_sets_real_fields_and_carries_no_default_of_its_own(command):
    config, options = RUN_COMMANDS.get(command) or (DataConfig, DATA_COMMANDS[command])
    flags = [o.flag for o in options]
    assert len(flags) == len(set(flags)), f"{command}: an option twice"
    actions = {a.dest: a for a in subparser(command)._actions}
    for option in options:
        fields = [config_field(config, path) for path in option.paths]  # KeyError: a path that is no field
        assert len({json.dumps(f.default, default=str) for f in fields}) == 1, (
            f"{option.flag}: its fields {option.paths} have different defaults, so --help cannot show one")
        action = actions[option.dest]
        assert action.default is argparse.SUPPRESS, f"{option.flag} has a default of its own"
        if option.const is VALUE and fields[0].choices is not None:
            assert tuple(action.choices) == fields[0].choices, f"{option.flag}: choices differ from the field's"


def test_no_options_resolve_to_the_config_models_defaults():
    assert parsed("onboard", "--target-domain", "x") == OnboardConfig(target_domain="x")
    assert parsed("curve", "--target-domain", "x") == CurveConfig(target_domain="x")
    assert parsed("pretrain", "--exclude-domain", "x") == PretrainConfig(exclude_domain="x")
    assert parsed("demo") == OnboardConfig.model_validate(DEMO)
    assert parsed("domains") == DataConfig()


SAMPLES = {  # options whose generic sample (below) the config would refuse or which need company
    "--registered-sources": ["--source-dataset", "movielens-1m"],
    "--out-of-core": [],
    "--eval-users": ["7", "--out-of-core"],
    "--on-violation": ["quarantine"],
    "--fractions": ["0.2,0.4"],
    "--devices": ["2"],
    "--target-fraction": ["0.25"],
    "--sources": ["Comedy,Drama"],
    "--combine": ["Comedy+Drama"],
}


def sample(field: Any) -> tuple[str, Any]:
    """A command-line text for ``field`` and the value it must resolve to (never the default)."""
    if field.choices is not None:
        choice = next(c for c in field.choices if c != field.default)
        return str(choice), choice
    kind = type(field.default) if field.default is not None else None
    if kind is float:
        value = field.default / 2 if field.default else 0.5
        return str(value), value
    if kind is int:
        return str(field.default + 1), field.default + 1
    if "batch_rows" in field.path or "max_users" in field.path or "workers" in field.path:
        return "7", 7
    return "sample-value", "sample-value"


@pytest.mark.parametrize("command", ["onboard", "pretrain", "curve"])
def test_every_option_reaches_its_fields(command, tmp_path):
    config, options = RUN_COMMANDS[command]
    base = ["--target-domain", "x"] if command != "pretrain" else ["--exclude-domain", "x"]
    column_map = tmp_path / "map.yaml"
    column_map.write_text("user_id: customer_id\n")
    for option in options:
        if option.flag in ("--target-domain", "--exclude-domain"):
            continue
        field = config_field(config, option.paths[0])
        if option.const is not VALUE:
            argv, expected = [option.flag, *SAMPLES.get(option.flag, [])], option.const
        elif option.flag == "--columns":
            argv, expected = [option.flag, str(column_map)], parse_column_map({"user_id": "customer_id"})
        elif option.flag in SAMPLES:
            argv = [option.flag, *SAMPLES[option.flag]]
            expected = None
        else:
            text, expected = sample(field)
            argv = [option.flag, text]
        resolved = parsed(command, *base, *argv)
        for path in option.paths:
            got = value_at(resolved, path)
            if option.flag in ("--data", "--source-data", "--data-dir", "--checkpoint-dir"):
                assert Path(got).name == "sample-value", option.flag
            elif expected is not None or option.const is not VALUE:
                assert got == expected, (option.flag, path, got)
            else:
                assert got != config_field(config, path).default, (option.flag, path)


def test_every_field_can_be_set_by_its_dotted_key():
    for path in leaf_fields(OnboardConfig):
        field = config_field(OnboardConfig, path)
        value = "x" if path == "target_domain" else field.default
        if path.startswith("sources.data.") and path.endswith("dataset"):
            value = "movielens-1m"
        text = json.dumps(value, default=str)
        resolved = parsed("onboard", "--target-domain", "x", "--set", f"{path}={text}")
        got = value_at(resolved, path)
        assert json.dumps(got, default=str) == text or got == value, path


def test_config_file_then_options_then_set(tmp_path):
    file = tmp_path / "run.yaml"
    file.write_text("target_domain: garden\nsplit: {fraction: 0.3, seed: 4}\nfinetune: {train: {lr: 0.002}}\n")
    assert parsed("onboard", "--config", str(file)).split.fraction == 0.3
    both = parsed("onboard", "--config", str(file), "--target-fraction", "0.5")
    assert (both.split.fraction, both.split.seed, both.finetune.train.lr) == (0.5, 4, 0.002)
    assert parsed("onboard", "--config", str(file), "--target-fraction", "0.5",
                  "--set", "split.fraction=0.2").split.fraction == 0.2
    with pytest.raises(ValueError, match="no field 'fractoin'"):
        parsed("onboard", "--config", str(file), "--set", "split.fractoin=0.2")
    file.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        parsed("onboard", "--config", str(file))


def test_print_config_prints_the_resolved_config_and_runs_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shop").mkdir()
    assert main(["onboard", "--target-domain", "garden", "--data", "shop", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    python_api = OnboardConfig(target_domain="garden", data={"path": tmp_path / "shop"})
    assert printed == python_api.model_dump(mode="json")
    assert printed["split"]["fraction"] == 1.0 and printed["data"]["dataset"] == "shop"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop"]  # no store, no cache, nothing ran
    assert main(["onboard", "--target-domain", "garden", "--target-fraction", "1.5", "--print-config"]) == 2
    assert "split.fraction: Input should be less than or equal to 1" in capsys.readouterr().err


def test_own_data_resolves_to_one_config_from_every_entry_point(tmp_path, monkeypatch):
    import yaml

    from flows.deployments import data_landed_parameters, data_landed_payload, fill_event_templates
    from models.data.synthetic import generate_retail, write_retail_export

    monkeypatch.chdir(tmp_path)
    shop = write_retail_export(generate_retail(n_customers=40, products_per_category=5, seed=0), tmp_path / "shop")
    cli = parsed("onboard", "--data", "shop", "--columns", "shop/columns.yaml", "--target-domain", "garden")
    python_api = OnboardConfig(target_domain="garden", data={"path": shop, "columns": shop / "columns.yaml"})
    payload = data_landed_payload("garden", Path("shop"), Path("shop/columns.yaml"))
    served = parsed("serve", "--target-domain", "Horror")  # a deployment served for another domain and dataset
    event = OnboardConfig.model_validate(fill_event_templates(data_landed_parameters(served), payload)["config"])
    nightly = next(d for d in yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
                   if d["name"] == "nightly")
    from_yaml = OnboardConfig.model_validate(fill_event_templates(nightly["triggers"][0]["parameters"],
                                                                  payload)["config"])
    assert cli == python_api == event == from_yaml
    assert cli.split.fraction == 1.0 and cli.data.dataset == "shop" and cli.data.columns["interactions"]
    no_map = fill_event_templates(data_landed_parameters(served), {**payload, "columns": ""})["config"]
    assert OnboardConfig.model_validate(no_map).data.columns is None


def test_prefect_yaml_is_the_served_deployments():
    from flows.deployments import build_deployments, deployment_specs, prefect_yaml

    served = OnboardConfig(target_domain="Horror")
    assert (ROOT / "prefect.yaml").read_text() == prefect_yaml(served), (
        "prefect.yaml is stale: transferrec deployments --target-domain Horror --write prefect.yaml")
    specs = deployment_specs(served)
    for spec, deployment in zip(specs, build_deployments(served), strict=True):
        assert (deployment.name, deployment.parameters) == (spec.name, spec.parameters)
        assert f"{deployment.flow_name}/{deployment.name}" == spec.deployment
        assert deployment.entrypoint.endswith(spec.entrypoint.split("/", 1)[1])  # the yaml points at the same flow
        assert [t.parameters for t in deployment.triggers] == [t["parameters"] for t in spec.triggers]
        assert [s.schedule.cron for s in deployment.schedules or []] == ([spec.cron] if spec.cron else [])


def test_the_registry_lock_orders_decisions_of_one_model(tmp_path):
    from tasks.locks import registry_lock

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    events: list[tuple[str, float]] = []

    def decide(name: str, hold: float) -> None:
        with registry_lock(uri, "transferrec-garden"):
            events.append((f"{name} in", time.monotonic()))
            time.sleep(hold)
            events.append((f"{name} out", time.monotonic()))

    first = threading.Thread(target=decide, args=("a", 0.6))
    first.start()
    time.sleep(0.1)
    decide("b", 0.0)
    first.join()
    assert [e for e, _ in events] == ["a in", "a out", "b in", "b out"]
    with registry_lock(uri, "transferrec-other"):  # another model is not held up
        pass
    holder = threading.Thread(target=decide, args=("c", 1.0))
    holder.start()
    time.sleep(0.1)
    with pytest.raises(TimeoutError, match="lock of transferrec-garden"), registry_lock(uri, "transferrec-garden",
                                                                                timeout=0.3):
        pass
    holder.join()


def test_commands_that_do_not_train_import_neither_torch_nor_lightning(tmp_path):
    from models.data.synthetic import generate_retail, write_retail_export

    shop = write_retail_export(generate_retail(n_customers=40, products_per_category=5, seed=0), tmp_path / "shop")
    script = f"""
import sys
from flows.cli import main
calls = [["--help"], ["onboard", "--help"], ["validate", "{shop}/items.csv", "--table", "items",
          "--columns", "{shop}/columns.yaml"], ["domains", "--data", "{shop}", "--columns", "{shop}/columns.yaml"],
         ["sources"], ["compare", "--target-domain", "garden"],
         ["onboard", "--target-domain", "garden", "--data", "{shop}", "--print-config"]]
for argv in calls:
    try:
        code = main(argv)
    except SystemExit as done:
        code = done.code
    assert code == 0, (argv, code)
    heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"torch", "pytorch_lightning", "lightning"}})
    assert not heavy, (argv, heavy)
print("ok")
"""
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}", "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


BACKEND_SAMPLES = {  # a non-default value for fields the generic sample cannot make
    "sources.data.dataset": None, "data.columns": {"interactions": {"user_id": "customer_id"}},
    "selection.weights": {"probe": 1.0}, "sources.candidates": ("Comedy",), "sources.combinations": ("A+B",),
    "sources.shared_users": False, "sources.registered_only": True, "runner.address": "tcp://h:8786",
    "data.bucket_rows": 1000,
    "evaluation.ks": (5,), "finetune.train.devices": 2, "scratch.devices": 2, "sources.train.devices": 2,
    "sources.model.dim": 16, "data.path": "/data/shop", "data.url": "s3://b/shop",
    "tracking.tracking_uri": "sqlite:///x.db", "tracking.checkpoint_dir": "/tmp/ckpt", "data.data_dir": "/tmp/d",
}


@pytest.mark.parametrize("out_of_core", [False, True])
def test_every_option_works_on_both_backends_or_is_refused_by_name(out_of_core):
    """Each OnboardConfig field set to a non-default value: the backend honours it, or the config refuses the
    run naming the field; the refused ones are exactly the declared tables (no option silently ignored)."""
    from flows.config import IN_MEMORY_REFUSES, OUT_OF_CORE_REFUSES

    refused = set()
    for path in leaf_fields(OnboardConfig):
        source_data_field = path.startswith("sources.data.") and path != "sources.data.dataset"
        if path in ("target_domain", "out_of_core") or source_data_field:  # sources.data: refused as a whole
            continue
        field = config_field(OnboardConfig, path)
        if path in BACKEND_SAMPLES:
            values = [BACKEND_SAMPLES[path]]
        elif isinstance(field.default, bool):
            values = [not field.default]
        elif field.choices is not None:
            values = [c for c in field.choices if c != field.default]  # every other choice
        else:
            values = [sample(field)[1]]
        for value in values:
            payload: dict[str, Any] = {"target_domain": "x", "out_of_core": out_of_core}
            if path == "sources.data.dataset":
                payload["sources"] = {"data": {"dataset": "movielens-1m"}}
            elif path == "sources.registered_only":
                payload["sources"] = {"registered_only": True, "data": {"dataset": "movielens-1m"}}
            elif path == "data.on_violation":
                payload["data"] = {"on_violation": value}
            else:
                set_path(payload, path, value)
            try:
                OnboardConfig.model_validate(payload)
            except ValueError as error:
                named = [p for p in {**OUT_OF_CORE_REFUSES, **IN_MEMORY_REFUSES} if f"({p}=" in str(error)]
                assert named, f"{path}={value!r}: refused without naming an option: {error}"
                refused.update(named)
    expected = OUT_OF_CORE_REFUSES if out_of_core else IN_MEMORY_REFUSES
    assert refused == set(expected), refused ^ set(expected)


def test_both_data_backends_answer_every_step_of_the_one_onboarding_flow():
    """flows.onboard calls the backend's steps by name and argument: both backends define each step of the
    Backend protocol with its parameters, and the flow uses no step the protocol lacks."""
    import inspect

    import flows.onboard
    from flows.backends import Backend, InMemory, OutOfCore

    steps = {name: list(inspect.signature(member).parameters)
             for name, member in vars(Backend).items() if inspect.isfunction(member) and not name.startswith("_")}
    assert {"validate", "split", "sources", "select", "train", "analyse"} <= set(steps)
    for backend in (InMemory, OutOfCore):
        for name, parameters in steps.items():
            assert list(inspect.signature(getattr(backend, name)).parameters) == parameters, (backend, name)
    called = set(re.findall(r"backend\.(\w+)", inspect.getsource(flows.onboard)))
    assert called and called <= {*steps, "data"}, called
