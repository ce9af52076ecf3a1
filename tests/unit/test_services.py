"""The tracking-server launcher's command, auth config and password rule (the server itself runs in
tests/integration/test_server_mode.py)."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from flows.services import TrackingServer
from flows.ui import compare_url


def test_tracking_server_command_and_auth_config(tmp_path: Path, monkeypatch):
    server = TrackingServer("postgresql://u:p@db:5432/mlflow", "s3://bucket/artifacts", port=5055,
                            auth_db_uri="postgresql://u:p@db:5432/auth", state_dir=tmp_path / "state")
    args = server.command()
    assert args[:1] == ["server"] and args[-2:] == ["--app-name", "basic-auth"]
    def value(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert value("--backend-store-uri") == value("--registry-store-uri") == "postgresql://u:p@db:5432/mlflow"
    assert value("--artifacts-destination") == "s3://bucket/artifacts" and value("--port") == "5055"
    assert "--serve-artifacts" in args and server.url == "http://127.0.0.1:5055"

    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "long-enough-secret")
    monkeypatch.delenv("MLFLOW_FLASK_SERVER_SECRET_KEY", raising=False)
    env = server.environment()
    ini = configparser.ConfigParser()
    ini.read(env["MLFLOW_AUTH_CONFIG_PATH"])
    assert ini["mlflow"]["database_uri"] == "postgresql://u:p@db:5432/auth"
    assert ini["mlflow"]["default_permission"] == "READ" and int(ini["mlflow"]["auth_cache_ttl_seconds"]) > 0
    assert "long-enough-secret" not in Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()  # never on disk
    assert len(env["MLFLOW_FLASK_SERVER_SECRET_KEY"]) >= 32


@pytest.mark.parametrize("password", [None, "short"])
def test_basic_auth_refuses_a_missing_or_short_admin_password(tmp_path: Path, monkeypatch, password):
    if password is None:
        monkeypatch.delenv("MLFLOW_AUTH_ADMIN_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", password)
    with pytest.raises(ValueError, match="at least 12 characters"):
        TrackingServer("sqlite:///x.db", str(tmp_path), state_dir=tmp_path).environment()
    assert TrackingServer("sqlite:///x.db", str(tmp_path), basic_auth=False).environment() == {}


def test_compare_url_names_runs_and_experiment():
    url = compare_url("http://127.0.0.1:5000", "7", ["a1", "b2"])
    assert url.startswith("http://127.0.0.1:5000/#/compare-runs?runs=")
    assert "%22a1%22%2C%20%22b2%22" in url and url.endswith("experiments=%5B%227%22%5D")
