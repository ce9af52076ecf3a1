"""A company's first onboarding against one ALS fit on the same export.

Usage (after `make install`):

    python bench/first_onboarding.py [--customers 76000] [--out bench/results]

Writes the synthetic retail export (`transferrec synthetic retail`: six categories, garden recently opened)
with ``--customers`` customers (76,000 give about 4 M interactions) to a temporary folder, then times a fresh
`transferrec onboard --data ... --target-domain garden` into an empty MLflow store, as a new user's first run:
every source model is trained first. In the same run, after it, one implicit ALS fit (64 factors, 15 iterations,
every core) on all of the export's interactions, the yardstick. Prints the onboarding's wall, its stages (from
its JSON summary) and the ratio, and writes ``first_onboarding.json``.
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=76_000)
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
    stages = summary.get("timings_seconds", {})
    result = {"customers": customers, "interactions": rows, "items": items, "onboard_wall_s": round(wall, 1),
              "stages_s": {k: round(v, 1) for k, v in stages.items()}, "als_fit_s": round(als, 1),
              "ratio": round(wall / als, 1), "registered": summary.get("registered")}
    print(f"\nfirst onboarding of the synthetic retail export: {rows:,} interactions, {customers:,} customers, "
          f"{items:,} items (target garden; every source model trained)\n")
    print("| onboarding wall s | one ALS fit s (64 factors, 15 iterations) | ratio |\n|---|---|---|")
    print(f"| {wall:.1f} | {als:.1f} | x{wall / als:.1f} |\n")
    print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "first_onboarding.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
