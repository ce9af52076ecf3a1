"""The daemon's decisions (flows.daemon): which commands it takes, which it refuses and why, and what its code key
sees. The daemon itself runs in tests/integration/test_daemon.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows import daemon

KEY = "k1"
ENV = {"PREFECT_HOME": "/p", "PREFECT_LOGGING_LEVEL": "CRITICAL", "DO_NOT_TRACK": "true"}
DEFAULTS = {"PREFECT_LOGGING_LEVEL": "CRITICAL", "DO_NOT_TRACK": "true"}


def request(argv: list[str], env: dict[str, str] | None = None, key: str = KEY) -> dict:
    return {"run": argv, "cwd": "/", "env": {"PREFECT_HOME": "/p", "HOME": "/h"} if env is None else env,
            "key": key}


def refused(req: dict) -> str | None:
    return daemon.refusal(req, key=KEY, environment=ENV, defaults=DEFAULTS)


def test_a_command_in_the_same_code_and_environment_is_taken():
    # the caller's own variables that are not read at import (HOME, MLFLOW_TRACKING_URI) may differ; defaults the
    # command would set count as set
    assert refused(request(["onboard", "--target-domain", "X"])) is None
    own = {"PREFECT_HOME": "/p", "MLFLOW_TRACKING_URI": "x"}
    assert refused(request(["--quiet", "validate", "f.csv"], own)) is None


@pytest.mark.parametrize(("req", "says"), [
    (request(["onboard"], key="k2"), "runs other code"),
    (request(["-v", "onboard"]), "verbose logs (-v)"),
    (request(["--verbose", "onboard"]), "verbose logs (-v)"),
    (request(["onboard"], {"PREFECT_HOME": "/other"}), "differs from the transferrec daemon's in PREFECT_HOME"),
    (request(["onboard"], {"PREFECT_HOME": "/p", "OMP_NUM_THREADS": "1"}), "in OMP_NUM_THREADS"),
    # a caller with its own Prefect server: the daemon's Prefect was imported pointing at another
    (request(["onboard"], {"PREFECT_HOME": "/p", "PREFECT_API_URL": "http://h:4200/api"}), "in PREFECT_API_URL"),
    (request(["onboard"], {"PREFECT_HOME": "/p", "PREFECT_LOGGING_LEVEL": "INFO"}), "in PREFECT_LOGGING_LEVEL"),
])
def test_what_the_daemon_cannot_run_is_refused_with_the_reason(req: dict, says: str):
    answer = refused(req)
    assert answer is not None and says in answer, answer


def test_the_command_word_skips_the_top_level_flags():
    assert daemon._command(["-q", "--debug", "onboard", "-x"]) == "onboard"
    assert daemon._command(["--help"]) is None


def test_the_caller_runs_its_command_itself_without_a_daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(daemon.NO_DAEMON_ENV, raising=False)
    monkeypatch.setenv(daemon.SOCKET_ENV, str(tmp_path / "none.sock"))
    assert daemon.forward(["validate", "x.csv"]) is None  # no socket
    (tmp_path / "none.sock").write_text("")  # a dead daemon's leftover: nothing listens
    assert daemon.forward(["validate", "x.csv"]) is None
    assert daemon.status() is None
    assert daemon.stop() is False


def test_the_code_key_follows_the_source_files_only(tmp_path: Path):
    module = tmp_path / "flows" / "a.py"
    module.parent.mkdir()
    module.write_text("x = 1\n")
    first = daemon.code_key(tmp_path)
    (tmp_path / "flows" / "__pycache__").mkdir()
    (tmp_path / "flows" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "flows" / "notes.txt").write_text("n")
    assert daemon.code_key(tmp_path) == first  # compiled files and other files do not count
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert daemon.code_key(tmp_path) != first  # an edit does
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "suite.json").write_text("{}")
    assert daemon.code_key(tmp_path) not in (first, daemon.code_key())
