"""Tables on an object store: an S3 API server on loopback (moto), the synthetic tables uploaded the way a
warehouse exports them (interactions as Parquet parts in partition folders), read back by `--data s3://...`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from flows.services import free_port, stop_process
from models.data.datasets import DatasetFormatError, read_canonical_dir, read_raw_tables

BIN = Path(sys.executable).parent
BUCKET = "warehouse"


@pytest.fixture
def s3(require_services, monkeypatch):
    """A moto S3 server on a free loopback port; the AWS_* variables polars and boto3 read point at it."""
    require_services("moto")
    port = free_port()
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, "moto_server exited"
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server did not answer within 60 s"
                time.sleep(0.2)
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield client, env
    finally:
        stop_process(server)


def _put_parquet(client, key: str, frame: pl.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    client.put_object(Bucket=BUCKET, Key=key, Body=buffer.getvalue())


def _upload_export(client, prefix: str, synthetic_dir: Path) -> None:
    """interactions as three parts in partition folders, items as one Parquet file, no users table."""
    local = read_raw_tables(synthetic_dir)
    assert local["interactions"] is not None and local["items"] is not None
    interactions = local["interactions"]
    third = interactions.height // 3
    for part, (start, length) in enumerate([(0, third), (third, third), (2 * third, interactions.height)]):
        _put_parquet(client, f"{prefix}/interactions/month={part}/part-{part}.parquet",
                     interactions.slice(start, length))
    _put_parquet(client, f"{prefix}/items.parquet", local["items"])


def test_tables_read_from_s3_equal_the_local_ones(s3, synthetic_dir: Path):
    client, _ = s3
    _upload_export(client, "shop/2026-11-28", synthetic_dir)
    remote = read_canonical_dir(f"s3://{BUCKET}/shop/2026-11-28")
    here = read_canonical_dir(synthetic_dir)
    assert remote.name == "2026-11-28" and "month" not in remote.interactions.columns  # no partition columns
    key = ["user_id", "item_id", "timestamp"]
    assert remote.interactions.sort(key).equals(here.interactions.sort(key))
    assert remote.items.sort("item_id").equals(here.items.sort("item_id"))
    assert remote.users is None  # not uploaded: the optional table is absent, not an error

    client.delete_object(Bucket=BUCKET, Key="shop/2026-11-28/items.parquet")
    with pytest.raises(DatasetFormatError, match="no items table"):
        read_canonical_dir(f"s3://{BUCKET}/shop/2026-11-28")


@pytest.mark.slow
def test_onboard_from_s3(s3, synthetic_dir: Path, tmp_path: Path):
    client, env = s3
    _upload_export(client, "shop/latest", synthetic_dir)
    run_env = {**os.environ, **env, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
               "PREFECT_HOME": str(tmp_path / "prefect"), "TRANSFERREC_DATA_DIR": str(tmp_path / "cache")}
    done = subprocess.run([str(BIN / "transferrec"), "onboard", "--data", f"s3://{BUCKET}/shop/latest",
                           "--target-domain", "games", "--target-fraction", "0.3", "--top-single", "1", "--dim", "8",
                           "--max-epochs", "2", "--no-register", "--json"], env=run_env, capture_output=True,
                          text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["target_domain"] == "games" and summary["metrics"]["transfer"]["ndcg_at_10"] > 0
