"""tasks.tracking against a real MLflow SQLite store: runs, history, registry all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException

from models.factors import FactorModel
from tasks import tracking


def tiny_model() -> FactorModel:
    return FactorModel(np.array(["u"], dtype=object), np.array(["a", "b"], dtype=object),
                       np.ones((1, 2), np.float32), np.array([[1, 0], [0, 1]], np.float32),
                       np.zeros(2, np.float32))


def test_failed_block_marks_the_run_failed_with_the_error(mlflow_uri):
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    with pytest.raises(RuntimeError), tracking.run_context(mlflow_uri, exp, "boom") as run_id:
        raise RuntimeError("disk on fire")
    run = mlflow.MlflowClient(mlflow_uri).get_run(run_id)
    assert run.info.status == "FAILED" and "disk on fire" in run.data.tags["error"]


def test_a_stop_whose_interruption_was_dropped_still_ends_the_run_killed(mlflow_uri):
    """Python drops an exception raised inside a ``__del__``: when SIGINT's ``Interrupted`` is lost that way, the
    run unwinds through the stopped fit's error, and is still KILLED (not FAILED), with SIGINT's exit code."""
    import os
    import signal
    import time

    from models.nets.training import FitStopped
    from tasks.runtime import Interrupted, handle_signals, interruption

    exp = tracking.ensure_experiment(mlflow_uri, "t")
    restore = handle_signals()
    try:
        assert interruption() is None
        with pytest.raises(FitStopped), tracking.run_context(mlflow_uri, exp, "stopped") as run_id:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            except Interrupted:
                pass  # dropped on the way, as in a __del__
            raise FitStopped("stopped on request")
        assert interruption() is not None and interruption().exit_code == 130
    finally:
        restore()
    assert interruption() is None
    assert mlflow.MlflowClient(mlflow_uri).get_run(run_id).info.status == "KILLED"


def test_history_is_logged_per_epoch_under_curve(mlflow_uri):
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    with tracking.run_context(mlflow_uri, exp, "fit") as run_id:
        tracking.log_history(mlflow_uri, run_id, [{"epoch": 0, "val/ndcg_at_10": 0.1, "step": 3},
                                                  {"epoch": 1, "val/ndcg_at_10": 0.2, "step": 7}])
    history = mlflow.MlflowClient(mlflow_uri).get_metric_history(run_id, "curve/val_ndcg_at_10")
    assert [(m.step, m.value) for m in history] == [(0, 0.1), (1, 0.2)]


def test_live_curves_are_written_in_the_background_and_all_in_when_the_run_ends(mlflow_uri, caplog):
    """Every epoch's point is on the run once it ends, in order; a write the store refuses is a warning, never
    an error in the fit that reported the epoch."""
    from types import SimpleNamespace

    exp = tracking.ensure_experiment(mlflow_uri, "t")
    with tracking.run_context(mlflow_uri, exp, "fit") as run_id:
        report = tracking.live_curve(mlflow_uri, run_id, "transfer:Crime")
        for epoch in range(5):
            report(SimpleNamespace(epoch=epoch, loss=1.0 / (epoch + 1), val_ndcg=0.1 * epoch, k=10))
    client = mlflow.MlflowClient(mlflow_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "live/transfer-crime/train_loss")] == [
        (epoch, pytest.approx(1.0 / (epoch + 1))) for epoch in range(5)]
    assert len(client.get_metric_history(run_id, "live/transfer-crime/val_ndcg_at_10")) == 5
    tracking.live_curve(mlflow_uri, "no-such-run", "scratch")(SimpleNamespace(epoch=0, loss=1.0, val_ndcg=0.1, k=10))
    with tracking.run_context(mlflow_uri, exp, "after") as later:  # its end waits for the refused write too
        pass
    assert client.get_run(later).info.status == "FINISHED"
    assert any("live curve of scratch not logged" in r.getMessage() for r in caplog.records)


def test_writes_queued_for_later_land_in_order_before_their_run_ends_and_can_open_runs(mlflow_uri):
    """``later``: off the caller's thread, in the order queued; a queued write may open and end a child run
    (its end does not wait for itself); the parent's end waits for all of them."""
    import threading

    exp = tracking.ensure_experiment(mlflow_uri, "t")
    threads = []
    with tracking.open_run(mlflow_uri, exp, "t", "parent") as run:
        def probe(i: int) -> None:
            threads.append(threading.current_thread().name)
            with run.child(f"probe:{i}") as child:
                child.log_metrics({"val/ndcg_at_10": i / 10})
            run.log_metrics({"last_probe": float(i)})

        futures = [run.later(lambda i=i: probe(i)) for i in range(3)]
    client = mlflow.MlflowClient(mlflow_uri)
    assert all(f.done() for f in futures) and client.get_run(run.run_id).info.status == "FINISHED"
    assert set(threads) != {threading.current_thread().name}
    assert [m.value for m in client.get_metric_history(run.run_id, "last_probe")] == [0.0, 1.0, 2.0]
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{run.run_id}'")
    assert sorted((c.info.run_name, c.info.status, c.data.metrics["val/ndcg_at_10"]) for c in children) == [
        (f"probe:{i}", "FINISHED", i / 10) for i in range(3)]


def test_held_writes_start_when_the_block_ends_in_order_and_in_their_callers_context(mlflow_uri):
    import contextvars
    import time

    where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="nowhere")
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    done: list[tuple[int, str]] = []
    with tracking.open_run(mlflow_uri, exp, "t", "held") as run:
        with tracking.held_writes():
            futures = []
            for i in range(3):
                where.set(f"stage {i}")
                futures.append(run.later(lambda i=i: done.append((i, where.get())) or i))
            # a held write that queues another: that one is not held again once the hold is over
            futures.append(run.later(lambda: run.later(lambda: done.append((3, "queued by a held write")))))
            time.sleep(0.2)
            assert done == [] and not any(f.done() for f in futures)  # held
        assert [f.result(timeout=10) for f in futures[:3]] == [0, 1, 2]
        futures[3].result(timeout=10).result(timeout=10)
    assert done == [(0, "stage 0"), (1, "stage 1"), (2, "stage 2"), (3, "queued by a held write")]


def test_a_failed_write_queued_for_later_fails_its_run_and_ends_the_children_left_open(mlflow_uri):
    """The error of a background write is raised when its run ends (FAILED with the error), and a parent that
    does not finish ends the child runs still open (opened ahead of their results) with it; another run is not
    touched by that error."""
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    client = mlflow.MlflowClient(mlflow_uri)
    with pytest.raises(RuntimeError, match="store refused"), tracking.open_run(mlflow_uri, exp, "t", "p") as run:
        opened = run.later(lambda: tracking.start_run(mlflow_uri, exp, "opened", parent_id=run.run_id))

        def refuse() -> None:
            raise RuntimeError("store refused the probe run")

        run.later(refuse)
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert "store refused" in client.get_run(run.run_id).data.tags["error"]
    assert client.get_run(opened.result()).info.status == "FAILED"
    with tracking.run_context(mlflow_uri, exp, "next") as next_id:
        pass
    assert client.get_run(next_id).info.status == "FINISHED"


def test_a_runs_metrics_params_curves_and_tags_go_in_batches_within_mlflows_bounds(mlflow_uri):
    """More than MLflow takes in one write (1,000 entries, 100 params): everything arrives, split into batches."""
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    metrics = {f"test/m{i}": i / 10 for i in range(1100)}
    params = {f"p{i}": i for i in range(150)}
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val/ndcg_at_10": 0.1 * e} for e in range(3)]
    with tracking.run_context(mlflow_uri, exp, "big") as run_id:
        tracking.log_run_data(mlflow_uri, run_id, metrics={**metrics, "nan": float("nan")}, params=params,
                              history=history, tags={f"t{i}": i for i in range(120)})
    run = mlflow.MlflowClient(mlflow_uri).get_run(run_id)
    assert {k: v for k, v in run.data.metrics.items() if k.startswith("test/")} == pytest.approx(metrics)
    assert "nan" not in run.data.metrics
    assert run.data.params == {k: str(v) for k, v in params.items()}
    assert all(run.data.tags[f"t{i}"] == str(i) for i in range(120))
    curve = mlflow.MlflowClient(mlflow_uri).get_metric_history(run_id, "curve/val_ndcg_at_10")
    assert [(m.step, m.value) for m in curve] == [(e, pytest.approx(0.1 * e)) for e in range(3)]


def test_registration_is_all_or_nothing(mlflow_uri):
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    with tracking.run_context(mlflow_uri, exp, "m") as run_id:
        uri = tracking.log_factor_model(mlflow_uri, run_id, tiny_model())
    good = tracking.register_model(mlflow_uri, "transferrec-x", uri, run_id=run_id, tags={"k": "v"},
                                   aliases=["champion"])
    # "latest" is a reserved alias: setting it fails after the version was created
    with pytest.raises(MlflowException, match="reserved"):
        tracking.register_model(mlflow_uri, "transferrec-x", uri, run_id=run_id, tags={}, aliases=["latest"])
    client = mlflow.MlflowClient(mlflow_uri)
    assert [str(v.version) for v in client.search_model_versions("name = 'transferrec-x'")] == [good.version]
    assert tracking.alias_version(mlflow_uri, "transferrec-x", "champion").version == good.version
    loaded = tracking.load_factor_model(mlflow_uri, "models:/transferrec-x@champion")
    np.testing.assert_array_equal(loaded.item_factors, tiny_model().item_factors)


def test_find_version_matches_tags(mlflow_uri):
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    with tracking.run_context(mlflow_uri, exp, "m") as run_id:
        uri = tracking.log_factor_model(mlflow_uri, run_id, tiny_model())
    tracking.register_model(mlflow_uri, "src", uri, run_id=run_id, tags={"fingerprint": "abc"}, aliases=[])
    assert tracking.find_version(mlflow_uri, "src", tag="fingerprint", value="abc").version == "1"
    assert tracking.find_version(mlflow_uri, "src", tag="fingerprint", value="zzz") is None
    assert tracking.find_version(mlflow_uri, "missing-model", tag="fingerprint", value="abc") is None


def test_a_source_registered_under_the_legacy_fingerprint_is_found_and_re_tagged(mlflow_uri):
    """Sources registered before the stable data fingerprint stay findable (no retraining after the upgrade);
    the first lookup re-tags them, so later lookups, on any polars version, match the stable fingerprint."""
    from tasks.sources import SourceSpec, _find_source

    exp = tracking.ensure_experiment(mlflow_uri, "t")
    with tracking.run_context(mlflow_uri, exp, "m") as run_id:
        uri = tracking.log_factor_model(mlflow_uri, run_id, tiny_model())
    tracking.register_model(mlflow_uri, "src", uri, run_id=run_id, tags={"fingerprint": "old"}, aliases=[])
    spec = SourceSpec("s", ["A"], "src", fingerprint="new", legacy_fingerprint=lambda: "old")
    assert _find_source(mlflow_uri, spec).version == "1"
    assert tracking.find_version(mlflow_uri, "src", tag="fingerprint", value="new").tags["fingerprint_legacy"] == "old"
    assert _find_source(mlflow_uri, SourceSpec("s", ["A"], "src", fingerprint="new")).version == "1"

    def not_needed() -> str:
        raise AssertionError("the legacy fingerprint reads every row: only computed when the stable one misses")

    assert _find_source(mlflow_uri, SourceSpec("s", ["A"], "src", "new", legacy_fingerprint=not_needed)).version == "1"
    assert _find_source(mlflow_uri, SourceSpec("s", ["A"], "src", fingerprint="other",
                                                legacy_fingerprint=lambda: "x")) is None


def test_default_tracking_uri_is_sqlite_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking.default_tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking.default_tracking_uri(tmp_path) == "http://tracking:5000"


def test_metrics_logged_after_the_model_are_linked_to_it(mlflow_uri, tmp_path, monkeypatch):
    """The model is the run's output, in the run's experiment and artifact root (never the default experiment's
    ``./mlruns``), READY; logging it leaves the run running; metrics logged after it are linked to it."""
    monkeypatch.chdir(tmp_path)
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    with tracking.run_context(mlflow_uri, exp, "m") as run_id:
        uri = tracking.log_factor_model(mlflow_uri, run_id, tiny_model())
        assert mlflow.MlflowClient(mlflow_uri).get_run(run_id).info.status == "RUNNING"
        tracking.log_metrics(mlflow_uri, run_id, {"test/ndcg_at_10": 0.25, "fit/epochs": 3.0}, model_uri=uri)
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_run(run_id).data.metrics == {"test/ndcg_at_10": 0.25, "fit/epochs": 3.0}
    logged = client.get_logged_model(tracking.logged_model_id(uri))
    assert {m.key: m.value for m in logged.metrics} == {"test/ndcg_at_10": 0.25, "fit/epochs": 3.0}
    assert logged.experiment_id == exp and str(logged.status) == "READY" and logged.source_run_id == run_id
    assert logged.artifact_location.startswith(client.get_experiment(exp).artifact_location)
    assert [o.model_id for o in client.get_run(run_id).outputs.model_outputs] == [logged.model_id]
    assert not (tmp_path / "mlruns").exists()
    assert tracking.logged_model_id("models:/transferrec-x/1") is None



def test_domain_names_become_bounded_unique_names_and_a_collision_is_refused(mlflow_uri):
    """Any domain a user types gives an MLflow name of bounded length (file names under mlartifacts/ too);
    two spellings that map to one name are refused with a message; MLflow errors other than a creation race
    are not hidden."""
    from mlflow.exceptions import MlflowException

    from tasks.tracking.runs import NameCollision

    assert tracking.experiment_name("Horror") == "transferrec-horror"  # existing names do not change
    long_a, long_b = "garden " * 50, "garden " * 49 + "tools"
    assert len(tracking.experiment_name(long_a)) <= 80
    assert tracking.experiment_name(long_a) != tracking.experiment_name(long_b)
    assert tracking.registered_model_name("!!!") != "transferrec-"
    assert len(tracking.onboard_run_name("x" * 5000, 0.1, 0)) < 200
    long_id = tracking.ensure_experiment(mlflow_uri, tracking.experiment_name(long_a), domain=long_a)
    assert tracking.ensure_experiment(mlflow_uri, tracking.experiment_name(long_a), domain=long_a) == long_id

    tracking.ensure_experiment(mlflow_uri, tracking.experiment_name("Garden"), domain="Garden")
    for other in ("garden", "GARDEN!"):
        with pytest.raises(NameCollision, match="belong to domain 'Garden'"):
            tracking.ensure_experiment(mlflow_uri, tracking.experiment_name(other), domain=other)
    with pytest.raises(MlflowException, match="exceeds the maximum length"):
        tracking.ensure_experiment(mlflow_uri, "x" * 600)


def test_a_logged_model_carries_its_code_and_serves_without_this_repository(mlflow_uri, tmp_path):
    """Signature, input example, pinned requirements and its own code: loaded by a Python that cannot import this
    repository (another working directory, the project's install hidden), it answers top-K with scores, and says
    which users got the popularity fallback."""
    import json
    import subprocess
    import sys

    import mlflow

    model = tiny_model()
    experiment = tracking.ensure_experiment(mlflow_uri, "serve")
    with tracking.run_context(mlflow_uri, experiment, "m") as run_id:
        uri = tracking.log_factor_model(mlflow_uri, run_id, model)
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp_path / "model")))
    requirements = (local / "requirements.txt").read_text().split()
    assert {r.split("==")[0] for r in requirements if "==" in r} >= {"mlflow", "numpy", "pandas", "polars"}
    assert not any(r.startswith("transferrec") for r in requirements)
    assert (local / "code" / "models" / "factors.py").exists() and (local / "code" / "tasks" / "serving.py").exists()
    assert (local / "serving_input_example.json").exists()
    import sysconfig

    # -S: no site hooks, so neither the editable install's finder nor the repository is on the path
    script = f"""
import json, sys
sys.path.append({sysconfig.get_paths()["purelib"]!r})
import importlib.util
assert importlib.util.find_spec('flows') is None  # this repository is out of reach
import mlflow.pyfunc, pandas as pd
m = mlflow.pyfunc.load_model({str(local)!r})
out = m.predict(pd.DataFrame({{'user_id': ['u', 'stranger']}}), params={{'k': 2}})
print(json.dumps({{'items': [list(map(str, x)) for x in out['item_ids']], 'scores': [list(x) for x in out['scores']],
                  'fallback': out['fallback'].tolist()}}))
"""
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    expected_items, expected_scores = model.top_k(np.array(["u", "stranger"], dtype=object), k=2)
    assert answer["items"] == expected_items and answer["fallback"] == [False, True]
    assert np.allclose(answer["scores"], expected_scores)


def test_a_registered_source_is_read_from_the_store_once_a_process(mlflow_uri, monkeypatch):
    """load_source reads a version's factors and its run's profile once, then hands out copies; another run behind
    the same name and version (a version number used again after a deletion) is read again."""
    import polars as pl

    import tasks.tracking.models as logged
    from models.selection.profiles import build_profile

    interactions = pl.DataFrame({"user_id": ["u", "u"], "item_id": ["a", "b"], "rating": [4.0, 5.0],
                                 "timestamp": [1, 2]})
    items = pl.DataFrame({"item_id": ["a", "b"], "domain": ["A", "A"], "title": ["x", "y"]})
    exp = tracking.ensure_experiment(mlflow_uri, "t")
    runs = []
    for _ in range(2):
        with tracking.run_context(mlflow_uri, exp, "src") as run_id:
            tracking.log_profile(mlflow_uri, run_id, build_profile(interactions, items, dataset="d", domains=["A"]))
            uri = tracking.log_factor_model(mlflow_uri, run_id, tiny_model())
        runs.append(run_id)
    tracking.register_model(mlflow_uri, "src", uri, run_id=runs[1], tags={}, aliases=[])
    reads = []
    real = logged.load_factor_model
    monkeypatch.setattr(logged, "load_factor_model", lambda *a: reads.append(a) or real(*a))
    first, profile = tracking.load_source(mlflow_uri, "src", "1", runs[1])
    first.item_factors[:] = 7.0  # a caller's copy: the next one is untouched
    second, again = tracking.load_source(mlflow_uri, "src", "1", runs[1])
    assert len(reads) == 1
    np.testing.assert_array_equal(second.item_factors, tiny_model().item_factors)
    assert list(again.user_ids) == list(profile.user_ids) == ["u"]
    tracking.load_source(mlflow_uri, "src", "1", runs[0])
    assert len(reads) == 2


def test_runs_logging_the_same_datasets_at_once_all_get_them(mlflow_uri, tmp_path):
    """Two refreshes of one domain log the same split at the same moment: MLflow looks each dataset up, then
    inserts it, so both can miss it and the second insert breaks the experiment's unique (name, digest)."""
    import threading

    from tasks.tracking.runs import DatasetRecord, client, log_datasets

    for trial in range(3):  # without the second write, six threads broke it in 10 of 10 tries
        experiment = tracking.ensure_experiment(mlflow_uri, f"race-{trial}")
        runs = [client(mlflow_uri).create_run(experiment).info.run_id for _ in range(6)]
        records = [DatasetRecord(name=f"target:{k}", context="training", location=str(tmp_path), digest=f"d{k}")
                   for k in range(5)]
        start, errors = threading.Barrier(len(runs)), []

        def log(run_id: str, start: threading.Barrier, records: list, errors: list) -> None:
            start.wait()
            try:
                log_datasets(mlflow_uri, run_id, records)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=log, args=(run_id, start, records, errors)) for run_id in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        for run_id in runs:
            inputs = client(mlflow_uri).get_run(run_id).inputs.dataset_inputs
            assert sorted((i.dataset.name, i.dataset.digest) for i in inputs) == [(f"target:{k}", f"d{k}")
                                                                                   for k in range(5)]
