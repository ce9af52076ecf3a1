"""A company's first onboarding against one ALS fit on the same export.

Usage (after `make install`):

    python bench/first_onboarding.py [--customers 76000] [--jobs] [--out bench/results]

Writes the synthetic retail export (`transferrec synthetic retail`: six categories, garden recently opened)
with ``--customers`` customers (76,000 give about 4 M interactions) to a temporary folder, then times a fresh
`transferrec onboard --data ... --target-domain garden` into an empty MLflow store, as a new user's first run:
every source model is trained first. In the same run, after it, one implicit ALS fit (64 factors, 15 iterations,
every core) on all of the export's interactions, the yardstick. Prints the onboarding's wall, its stages (from
its JSON summary) and the ratio, and writes ``first_onboarding.json``. ``--jobs`` also times, after the ALS fit,
each tuned job of the train stage that is not a network alone on the export's split (the closed-form recipe,
ALS, EASE, ItemKNN and the joint peers, as the flow fits them: every core, one after another): wall and CPU
seconds each, what the train stage shares among its two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def als_wall(shop: Path, seed: int = 0) -> tuple[float, int, int, int]:
    """Seconds of one implicit ALS fit on every interaction of the export; with its rows, customers, items."""
    import polars as pl

    from models.data.datasets import load_column_map, read_tables
    from models.transfer.als import fit_als_once

    tables = read_tables(shop, load_column_map(shop / "columns.yaml"))  # as the onboarding reads them
    frame = tables["interactions"].select(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    items = frame["item_id"].unique().sort().to_numpy()
    started = time.perf_counter()
    fit_als_once(frame, items, factors=64, regularization=0.01, alpha=1.0, iterations=15, seed=seed)
    return time.perf_counter() - started, frame.height, frame["user_id"].n_unique(), len(items)


def job_seconds(shop: Path, target: str = "garden", seed: int = 0) -> dict[str, tuple[float, float]]:
    """``--jobs``: (wall, CPU) seconds of each tuned job of the train stage alone on the export's split, with the
    onboarding's defaults (networks and sources aside)."""
    from models.config import SplitConfig
    from models.data.datasets import load_column_map, read_canonical_dir
    from models.split import split_with
    from models.transfer.als import EncodedTrain, fit_als
    from models.transfer.closed_form import fit_closed_form_transfer
    from models.transfer.joint import JOINT, JointTrain
    from models.transfer.peers import PEERS
    from models.transfer.recipes import catalogue_ids, ranking_tasks

    data = read_canonical_dir(shop, "shop", load_column_map(shop / "columns.yaml"))
    split = split_with(data.interactions, data.items, domain=target, config=SplitConfig(seed=seed))
    val, _ = ranking_tasks(split, click_threshold=4.0)
    encoded = EncodedTrain.of(split.train, catalogue_ids(split))
    joint = JointTrain.of_split(data.interactions, data.items, split)
    jobs = {"closed-form recipe": lambda: fit_closed_form_transfer(joint, val, seed=seed),
            "als": lambda: fit_als(encoded, None, val, seed=seed),
            **{kind: (lambda fit=fit: fit(encoded, val)) for kind, fit in PEERS.items()},
            **{kind: (lambda fit=fit: fit(joint, val, seed=seed)) for kind, fit in JOINT.items()}}
    out = {}
    for name, job in jobs.items():
        wall, cpu = time.perf_counter(), time.process_time()
        job()
        out[name] = (time.perf_counter() - wall, time.process_time() - cpu)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=76_000)
    parser.add_argument("--jobs", action="store_true", help="also time each tuned job of the train stage alone")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    from tasks.runtime import configure_environment, quiet_libraries

    configure_environment()
    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="transferrec-first-") as tmp:
        folder = Path(tmp)
        shop = folder / "shop"
        subprocess.run([str(BIN / "transferrec"), "-q", "synthetic", "retail", "--out", str(shop), "--customers",
                        str(args.customers)], check=True, cwd=folder)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
        started = time.perf_counter()
        done = subprocess.run([str(BIN / "transferrec"), "-q", "onboard", "--data", str(shop), "--columns",
                               str(shop / "columns.yaml"), "--target-domain", "garden", "--json"], env=env, cwd=folder,
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-4000:], sep="\n")
            return done.returncode
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        als, rows, customers, items = als_wall(shop)
        jobs = job_seconds(shop) if args.jobs else {}
    stages = summary.get("timings_seconds", {})
    result = {"customers": customers, "interactions": rows, "items": items, "onboard_wall_s": round(wall, 1),
              "stages_s": {k: round(v, 1) for k, v in stages.items()}, "als_fit_s": round(als, 1),
              "ratio": round(wall / als, 1), "registered": summary.get("registered"),
              "jobs_s": {name: {"wall": round(w, 1), "cpu": round(c, 1)} for name, (w, c) in jobs.items()}}
    print(f"\nfirst onboarding of the synthetic retail export: {rows:,} interactions, {customers:,} customers, "
          f"{items:,} items (target garden; every source model trained)\n")
    print("| onboarding wall s | one ALS fit s (64 factors, 15 iterations) | ratio |\n|---|---|---|")
    print(f"| {wall:.1f} | {als:.1f} | x{wall / als:.1f} |\n")
    print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    if jobs:
        print("\n| train-stage job, alone | wall s | CPU s |\n|---|---|---|")
        for name, (w, c) in jobs.items():
            print(f"| {name} | {w:.1f} | {c:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "first_onboarding.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
