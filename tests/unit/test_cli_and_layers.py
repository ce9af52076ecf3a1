"""CLI parsing and the one-way import rule between layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flows.cli import build_parser, main, resolve_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command", ["fetch", "validate", "domains", "pretrain", "onboard", "demo", "ui", "curve",
                                     "sources", "compare", "recommend", "serve", "trigger", "notify", "deployments"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: transferrec" in capsys.readouterr().out


def test_onboard_arguments_become_the_flow_config(tmp_path):
    args = build_parser().parse_args([
        "onboard", "--dataset", "movielens-1m", "--target-domain", "Horror", "--target-fraction", "0.3",
        "--seed", "2", "--mode", "full", "--sources", "Comedy,Drama", "--no-all-others", "--max-epochs", "7",
        "--no-register", "--data-dir", str(tmp_path),
    ])
    config = resolve_config(args)
    assert config.target_domain == "Horror"
    assert (config.split.fraction, config.split.seed) == (0.3, 2)
    assert config.finetune.mode == "full" and config.finetune.train.max_epochs == 7
    assert config.sources.candidates == ("Comedy", "Drama") and not config.sources.all_others
    assert not config.tracking.registry and config.data.data_dir == tmp_path


def test_training_options_reach_every_model(tmp_path):
    args = build_parser().parse_args([
        "onboard", "--target-domain", "Horror", "--family", "two-tower", "--mode", "adapter", "--adapter-rank", "4",
        "--item-init", "content", "--transferred-lr-scale", "0.1", "--anchor", "0.01", "--accelerator", "cpu",
        "--devices", "2", "--strategy", "ddp", "--num-nodes", "3", "--checkpoint-dir", str(tmp_path), "--no-resume",
    ])
    config = resolve_config(args)
    finetune = config.finetune
    assert (finetune.family, finetune.mode, finetune.adapter_rank, finetune.item_init) == (
        "two-tower", "adapter", 4, "content")
    assert (finetune.transferred_lr_scale, finetune.anchor) == (0.1, 0.01)
    for train in (finetune.train, config.scratch, config.sources.train):  # hardware: every model, sources too
        assert (train.accelerator, train.devices, train.strategy, train.num_nodes) == ("cpu", 2, "ddp", 3)
    assert config.tracking.checkpoint_dir == tmp_path and not config.tracking.resume
    defaults = resolve_config(build_parser().parse_args(["onboard", "--target-domain", "Horror"]))
    assert defaults.finetune.train.accelerator == "auto" and defaults.tracking.resume
    assert defaults.runner.kind == "threads"
    assert defaults.split.fraction == 1.0  # all of the target's data unless scarcity is asked for
    own = resolve_config(build_parser().parse_args(["onboard", "--target-domain", "x", "--data", str(tmp_path)]))
    assert own.split.fraction == 1.0 and own.data.path == tmp_path.resolve()  # your own data: all of it


def test_out_of_core_arguments(tmp_path):
    def parsed(*extra: str):
        return resolve_config(build_parser().parse_args(["onboard", "--target-domain", "x", "--data", str(tmp_path),
                                                         *extra]))

    config = parsed("--out-of-core", "--batch-rows", "5000", "--eval-users", "300")
    assert config.out_of_core and config.data.batch_rows == 5000 and config.evaluation.max_users == 300
    assert not parsed().out_of_core and parsed().data.batch_rows is None
    with pytest.raises(ValueError, match=r"does not support the two-tower family \(finetune.family=.two-tower.\); "
                                         r"the quarantine policy"):
        parsed("--out-of-core", "--family", "two-tower", "--on-violation", "quarantine")
    with pytest.raises(ValueError, match="on_violation='fail' only"):
        parsed("--batch-rows", "10", "--on-violation", "quarantine")


def test_task_runner_arguments():
    def parsed(*extra: str):
        return resolve_config(build_parser().parse_args(["onboard", "--target-domain", "Horror", *extra]))

    dask = parsed("--task-runner", "dask", "--runner-address", "tcp://10.0.0.5:8786")
    assert (dask.runner.kind, dask.runner.address) == ("dask", "tcp://10.0.0.5:8786")
    local = parsed("--task-runner", "dask", "--runner-workers", "2", "--dask-processes")
    assert (local.runner.workers, local.runner.processes, local.runner.address) == (2, True, None)
    assert parsed("--task-runner", "sequential").runner.kind == "sequential"


def test_pretrain_arguments_become_the_flow_config():
    config = resolve_config(build_parser().parse_args(["pretrain", "--exclude-domain", "Drama", "--top-single",
                                                        "2", "--dim", "32"]))
    assert config.exclude_domain == "Drama" and config.sources.top_single == 2 and config.sources.model.dim == 32


def test_bad_fraction_is_a_usage_error_not_a_traceback(capsys, tmp_path):
    code = main(["onboard", "--target-domain", "x", "--target-fraction", "1.5", "--data", str(tmp_path)])
    assert code == 2
    assert "fraction" in capsys.readouterr().err


def test_missing_dataset_tells_how_to_fetch(capsys, tmp_path):
    assert main(["domains", "--dataset", "movielens-100k", "--data-dir", str(tmp_path)]) == 2
    assert "transferrec fetch movielens-100k" in capsys.readouterr().err


@pytest.mark.parametrize("error,code,expected", [
    (PermissionError(13, "Permission denied", "/srv/shop/items.csv"), 2,
     "error: cannot read /srv/shop/items.csv: permission denied"),
    (RuntimeError("the disk\nis full"), 1, "error: RuntimeError: the disk is full (--debug shows the traceback)"),
])
def test_every_failure_is_one_line_and_debug_adds_the_traceback(capsys, monkeypatch, tmp_path, error, code, expected):
    """A folder root cannot be kept out of (tests run as root) stands in for chmod 000: the reader raises what
    the file system would, and the command reports one line in the user's terms."""
    from models.data import datasets

    def unreadable(*args, **kwargs):
        raise error

    monkeypatch.setattr(datasets, "read_raw_tables", unreadable)
    assert main(["domains", "--data", str(tmp_path)]) == code
    assert capsys.readouterr().err.strip() == expected
    assert main(["--debug", "domains", "--data", str(tmp_path)]) == code
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("layer,forbidden", [
    ("data_contracts", {"prefect", "mlflow", "models", "tasks", "flows", "torch"}),
    ("models", {"prefect", "mlflow", "tasks", "flows"}),
    ("tasks", {"flows"}),
])
def test_imports_go_one_way(layer, forbidden):
    for path in (ROOT / layer).rglob("*.py"):
        bad = imports_of(path) & forbidden
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


PACKAGES = ("flows", "tasks", "models", "data_contracts")


def module_graph() -> dict[str, set[str]]:
    """Every module of the project -> the project modules it imports (anywhere in the file, lazy imports too)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                submodules = {f"{node.module}.{a.name}" for a in node.names} & modules.keys()
                found |= submodules
                if len(submodules) < len(node.names):
                    found.add(node.module)
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_no_import_cycles():
    graph = module_graph()
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                cycles.append([*path[path.index(child):], child])
            elif child not in state:
                visit(child, [*path, child])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
    assert "flows.onboard" in graph and graph["flows.cli.commands"]  # the walk saw the project


@pytest.mark.parametrize("package", ["flows", "tasks", "models"])
def test_no_module_over_500_lines(package):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / package).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"split these modules: {long}"


def test_the_printed_summary_carries_the_lift_and_its_intervals():
    import io

    from flows.cli import print_summary
    from tasks.report import OnboardingSummary

    out = io.StringIO()
    summary = OnboardingSummary(
        target_domain="Horror", mlflow_run_id="abc", experiment="transferrec-horror", chosen_source="all-others",
        selection_rationale="why", table_markdown="| table |",
        lift={"val/lift_ndcg_at_10": 0.345, "test/lift_ndcg_at_10": 0.245},
        lift_markdown="- over popularity: +24.5% (95 % CI +18.0% .. +31.0%, 900 users)",
        transfer_recipe={"recipe": "closed-form", "network_val_ndcg_at_10": 0.1066,
                         "closed_form_val_ndcg_at_10": 0.12194})
    print_summary(summary, out)
    assert "lift_markdown" not in summary.to_json() and summary.to_json()["target_domain"] == "Horror"
    text = out.getvalue()
    assert "validation +34.5%, test +24.5%" in text and "- over popularity: +24.5% (95 % CI" in text
    assert "Transfer recipe: closed-form (validation NDCG@10: network 0.1066, closed-form 0.1219)." in text
    print_summary(summary.model_copy(update={"transfer_recipe": {}}), out := io.StringIO())
    assert "recipe" not in out.getvalue()  # one recipe trained: nothing to say


def test_orchestration_commands_need_a_prefect_server(capsys, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # the flow tests' harness sets one
        code = main(["notify", "data-landed", "--domain", "Horror", "--path", "/data/new"])
    assert code == 2 and "needs a Prefect server" in capsys.readouterr().err


def test_sigterm_and_sigint_take_one_path_and_the_previous_handlers_come_back():
    import os
    import signal
    import time

    from models.nets.training import STOP
    from tasks.runtime import Interrupted, handle_signals

    before = signal.getsignal(signal.SIGTERM)
    for signum, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        restore = handle_signals()
        try:
            with pytest.raises(Interrupted) as stopped:
                os.kill(os.getpid(), signum)
                time.sleep(5)  # interrupted at once by the handler
            assert stopped.value.exit_code == code and STOP.is_set()  # every fit stops at its next batch
            assert signal.getsignal(signum) == signal.SIG_DFL  # a second signal ends the process at once
        finally:
            restore()
        assert not STOP.is_set() and signal.getsignal(signal.SIGTERM) == before


def test_flows_on_a_temporary_api_send_no_heartbeats_and_a_shared_server_keeps_them(monkeypatch):
    """Heartbeats tell a Prefect server that a run is alive; on an API that ends with the process nobody reads
    them, and each flow's end would wait for the heartbeat thread's 1-s sleep."""
    from prefect.settings import get_current_settings

    from tasks.runtime import TEMPORARY_API_ENV, flow_settings

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None
    for url, temporary, expected in ((None, None, None), ("http://127.0.0.1:1/api", "1", None),
                                     ("http://prefect.example:4200/api", None, default)):
        for key, value in (("PREFECT_API_URL", url), (TEMPORARY_API_ENV, temporary)):
            if value is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)
        with flow_settings():
            assert get_current_settings().flows.heartbeat_frequency == expected, url
        assert get_current_settings().flows.heartbeat_frequency == default


def test_prefects_exit_drain_notices_stay_off_a_one_line_error():
    """Prefect's event and log shippers log "Still processing items..." (a logger named after their class) while
    they drain at exit on a slow API: under a one-line error that was a second line (seen in CI)."""
    import logging

    from prefect._internal.concurrency.services import QueueService
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    from tasks.runtime import quiet_libraries

    quiet_libraries()
    for worker in (EventsWorker, APILogWorker):
        assert issubclass(worker, QueueService)
        shipper = logging.getLogger(worker.__name__)  # as QueueService names its logger
        assert not shipper.isEnabledFor(logging.WARNING), worker.__name__
        assert shipper.isEnabledFor(logging.ERROR)


FREEZE = """
import gc, json
import polars
from tasks.runtime import freeze_heap
before = len(gc.get_objects())
freeze_heap()
after = len(gc.get_objects())
class Cycle:
    pass
made = Cycle()
made.me = made
del made
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "after": after, "collected": gc.collect()}))
"""


def test_freeze_heap_takes_what_the_imports_left_out_of_the_collectors_walk():
    """After the imports a command freezes the heap: a full collection no longer walks the libraries' objects
    (nor, in a fork of the daemon, writes to their pages); what the run makes afterwards is collected as before."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FREEZE], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["before"] > 10_000 and found["frozen"] >= found["before"]  # polars and the rest, all frozen
    assert found["after"] < found["before"] / 100  # left in the collector's generations: next to nothing
    assert found["collected"] >= 1  # a cycle made after the freeze is still collected
