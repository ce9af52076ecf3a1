"""Server mode: a shared MLflow tracking server (PostgreSQL backend store, artifact root, basic auth) started by
`transferrec tracking-server`, and four onboarding flows writing to it at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from flows.services import free_port, stop_process, wait_healthy

BIN = Path(sys.executable).parent
DOMAINS = ("books", "movies", "music", "games")
ADMIN_PASSWORD = "admin-test-Secret-1"


def _status_without_credentials(url: str) -> int:
    try:
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_four_onboardings_at_once_on_postgres_behind_basic_auth(tmp_path: Path, postgres, synthetic_dir: Path):
    store = postgres.create_database("mlflow")
    users = postgres.create_database("mlflow_auth")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_env = {**os.environ, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD}
    server = subprocess.Popen(
        [str(BIN / "transferrec"), "tracking-server", "--backend-store-uri", store, "--artifacts-destination",
         str(tmp_path / "artifacts"), "--port", str(port), "--auth-db-uri", users, "--state-dir",
         str(tmp_path / "server")], env=server_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        wait_healthy(url, server, timeout=180)
        assert _status_without_credentials(url) == 401

        env = {**os.environ, "MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": "admin",
               "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD, "PREFECT_HOME": str(tmp_path / "prefect"),
               "TRANSFERREC_DATA_DIR": str(tmp_path / "cache")}
        warm = subprocess.run([sys.executable, "-c", "from prefect import flow\nflow(lambda: 1)()"], env=env,
                              capture_output=True, text=True, timeout=300)  # Prefect's own first start, once
        assert warm.returncode == 0, warm.stderr[-1500:]
        procs = {domain: subprocess.Popen(
            [str(BIN / "transferrec"), "onboard", "--data", str(synthetic_dir), "--target-domain", domain,
             "--target-fraction", "0.3", "--top-single", "1", "--dim", "8", "--max-epochs", "3", "--json",
             # the network fine-tune as transfer in every domain: the same metric keys (its curves) in each
             "--set", "finetune.closed_form=false"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path) for domain in DOMAINS}
        outputs = {domain: p.communicate(timeout=900) for domain, p in procs.items()}

        import mlflow

        mlflow.set_tracking_uri(url)
        os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")})
        client = mlflow.MlflowClient(url)
        transfer_keys = []
        for domain, p in procs.items():
            stdout, stderr = outputs[domain]
            assert p.returncode == 0, stderr[-3000:]
            assert "locked" not in stderr.lower() and "deadlock" not in stderr.lower()
            summary = json.loads(stdout.strip().splitlines()[-1])
            parent = client.get_run(summary["mlflow_run_id"])
            assert parent.info.status == "FINISHED"
            children = mlflow.search_runs(experiment_names=[f"transferrec-{domain}"],
                                          filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
            assert (children["status"] == "FINISHED").all()
            by_name = {row["tags.mlflow.runName"]: row for _, row in children.iterrows()}
            for model, metrics in summary["metrics"].items():  # every reported metric is stored, value for value
                assert by_name[model]["metrics.test/ndcg_at_10"] == pytest.approx(metrics["ndcg_at_10"])
            transfer = client.get_run(by_name["transfer"]["run_id"])
            transfer_keys.append(set(transfer.data.metrics))
            history = client.get_metric_history(transfer.info.run_id, "curve/val_ndcg_at_10")
            assert len(history) >= 1 and len({m.step for m in history}) == len(history)
            version = client.get_model_version_by_alias(f"transferrec-{domain}", "champion")
            assert version.run_id == summary["mlflow_run_id"] or version.run_id in set(children["run_id"])
        assert all(keys == transfer_keys[0] for keys in transfer_keys) and len(transfer_keys[0]) > 40
        assert any((tmp_path / "artifacts").rglob("MLmodel"))  # model artifacts went to the artifact root

        # the compare view of the server itself, signed in (skipped where there is no browser)
        if shutil.which("chromium") or os.environ.get("TRANSFERREC_REQUIRE_SERVICES") == "1":
            shot = subprocess.run([str(BIN / "transferrec"), "ui", "--snapshot", str(tmp_path / "c.png"),
                                   "--target-domain", "music"], env=env, capture_output=True, text=True, timeout=300)
            assert shot.returncode == 0, shot.stderr[-2000:]
            assert "transfer " in shot.stdout and (tmp_path / "c.png").stat().st_size > 20_000
    finally:
        stop_process(server, timeout=60)
    log = (tmp_path / "server" / "server.log").read_text(errors="replace")
    assert "database is locked" not in log and "deadlock detected" not in log
    with pytest.raises(OSError):  # stopped: nothing answers on the port any more
        urllib.request.urlopen(f"{url}/health", timeout=5)
