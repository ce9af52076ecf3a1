"""A registered model served outside this project: a fresh virtual environment built from the model's own
``requirements.txt`` (pinned MLflow, numpy, pandas, polars: no torch, no transferrec), which then answers top-k
through the model's own code, checked against this environment's answer.

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
    here_items, _ = factors.top_k(np.array(users, dtype=object), k=5)
    same = there["items"] == here_items and there["fallback"] == [False, False, False, True]
    print(f"{model_uri}: requirements {pinned}\n"
          f"| step | seconds |\n|---|---|\n| venv | {venv_s:.1f} |\n"
          f"| pip install -r requirements.txt | {install_s:.1f} |\n"
          f"| load and predict there | {predict_s:.1f} |\n| total | {venv_s + install_s + predict_s:.1f} |\n"
          f"same top-5 as here, fallback said for the unknown user: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
