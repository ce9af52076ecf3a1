"""A registered model served outside this project: a fresh virtual environment built from the model's own
``requirements.txt`` (pinned MLflow, numpy, pandas, polars: no torch, no transferrec), which then answers top-k
through the model's own code, as a pyfunc and over HTTP (that environment's ``mlflow models serve``), checked
against this environment's answer.

Downloads ``models:/transferrec-<domain>@<alias>`` from ``--tracking-uri`` (default: MLFLOW_TRACKING_URI, else
``./mlflow.db``, as `make demo` writes), creates the environment under a temporary folder (``python -m venv``, then
``pip install -r requirements.txt`` from the package index), predicts for a few known users and one unknown user
there, and prints the seconds each step took. Needs the package index (PyPI or a mirror); not part of the tests.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PREDICT = """
import json, sys
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.DataFrame({"user_id": json.loads(sys.argv[2])}), params={"k": 5})
print(json.dumps({"items": [list(map(str, x)) for x in out["item_ids"]], "fallback": out["fallback"].tolist()}))
"""


def _timed(command: list[str], **options) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, **options)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed: {done.stderr[-3000:]}")
    return time.perf_counter() - started, done


def _serve_there(folder: Path, model: str, users: list[str]) -> tuple[float, list[dict]]:
    """``mlflow models serve`` of the environment's own MLflow over the downloaded model: seconds from the start to
    the first answer of ``users`` (k = 5), and that answer."""
    import http.client
    import os

    from flows.services import free_port

    port = free_port()
    bin_dir = folder / "venv" / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    server = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m", model, "--env-manager", "local",
                               "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    body = json.dumps({"dataframe_records": [{"user_id": u} for u in users], "params": {"k": 5}})
    try:
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                if response.status != 200:
                    raise SystemExit(f"the served model answered {response.status}: {answer}")
                return time.perf_counter() - started, answer["predictions"]
            except OSError:
                if server.poll() is not None or time.perf_counter() - started > 300:
                    raise SystemExit("mlflow models serve did not answer") from None
                time.sleep(0.5)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--target-domain", default="Horror")
    parser.add_argument("--alias", default="champion")
    args = parser.parse_args(argv)

    import mlflow

    from tasks.tracking import default_tracking_uri, load_factor_model, registered_model_name

    uri = args.tracking_uri or default_tracking_uri()
    model_uri = f"models:/{registered_model_name(args.target_domain)}@{args.alias}"
    factors = load_factor_model(uri, model_uri)
    users = [str(u) for u in factors.user_ids[:3]] + ["someone-new"]
    with tempfile.TemporaryDirectory(prefix="transferrec-outside-") as tmp:
        folder = Path(tmp)
        mlflow.set_tracking_uri(uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder / "model"))
        requirements = Path(local) / "requirements.txt"
        pinned = requirements.read_text().split()
        venv_s, _ = _timed([sys.executable, "-m", "venv", str(folder / "venv")])
        python = folder / "venv" / "bin" / "python"
        install_s, _ = _timed([str(python), "-m", "pip", "install", "--quiet", "-r", str(requirements)])
        predict_s, done = _timed([str(python), "-c", PREDICT, local, json.dumps(users)], cwd=folder)
        there = json.loads(done.stdout.strip().splitlines()[-1])
        serve_s, served = _serve_there(folder, local, users)
    here_items, _ = factors.top_k(np.array(users, dtype=object), k=5)
    same = (there["items"] == here_items and there["fallback"] == [False, False, False, True]
            and [a["item_ids"] for a in served] == here_items and [a["fallback"] for a in served] == there["fallback"])
    print(f"{model_uri}: requirements {pinned}\n"
          f"| step | seconds |\n|---|---|\n| venv | {venv_s:.1f} |\n"
          f"| pip install -r requirements.txt | {install_s:.1f} |\n"
          f"| load and predict there | {predict_s:.1f} |\n"
          f"| `mlflow models serve` there: start to the first HTTP answer | {serve_s:.1f} |\n"
          f"| total | {venv_s + install_s + predict_s + serve_s:.1f} |\n"
          f"same top-5 as here (pyfunc and HTTP), fallback said for the unknown user: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
