"""Time to quality at scale: does adapting an existing domain's model reach a from-scratch model's quality sooner
when scratch costs minutes?

Usage:  python bench/time_to_quality.py [--size 1e7] [--source-epochs 5] [--personal 0.8] [--taste 6]
            [--set KEY=VALUE ...] [--out bench/results]

Generates two synthetic domains of bench/scale.py's shape (``old`` and ``new``, ``--size`` interactions each over
the same users, users = size / 25, items = size / 500 per domain; a user's taste cluster holds across the
domains; ``--personal`` of a user's draws follow its cluster's order, with ranks items x U^``--taste``), then
runs the product's own `transferrec curve --data DIR --target-domain new --fractions 1.0` in a fresh MLflow
store and Prefect home: the flow trains the source model of ``old`` (``--source-epochs`` at most; not part of
the figure: in production it is already registered), then fine-tunes it and trains the same network from
scratch on all of ``new``'s training data, each with early stopping, and reports the wall time each needs to
reach scratch's best validation NDCG@10 (transfer's includes its initialisation). Hashed item texts (the
titles carry no meaning here). Prints the curve's row and writes ``time_to_quality.json``.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=lambda t: int(float(t)), default=10_000_000)
    parser.add_argument("--source-epochs", type=int, default=5)
    # the scale bench's shape (0.5, 3) holds too little taste to learn: the source model stays near a validation
    # NDCG@10 of 0.005 at 10 M while its training loss falls (docs/benchmarks.md)
    parser.add_argument("--personal", type=float, default=0.8, help="share of a user's draws from its cluster")
    parser.add_argument("--taste", type=float, default=6.0, help="rank exponent of those draws")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override passed to `transferrec curve` (e.g. scratch.lr=0.001)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    from scale import generate

    with tempfile.TemporaryDirectory(prefix="ttq-") as tmp:
        folder = Path(tmp)
        shape = generate(args.size, folder / "data", domains=("old", "new"), personal=args.personal,
                         taste=args.taste)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
               "PREFECT_HOME": str(folder / "prefect")}
        started = time.perf_counter()
        done = subprocess.run(
            [str(Path(sys.executable).parent / "transferrec"), "-q", "curve", "--data", str(folder / "data"),
             "--target-domain", "new", "--fractions", "1.0", "--embedder", "hashed", "--top-single", "1",
             "--no-all-others", "--set", f"sources.train.max_epochs={args.source_epochs}",
             *[option for pair in args.set for option in ("--set", pair)], "--json"],
            capture_output=True, text=True, env=env, cwd=folder)
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"curve failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout)
    row = result["points"][0]
    print(f"{args.size:,} interactions a domain ({shape['users']:,} users, {shape['items']:,} items a domain); "
          f"`transferrec curve` took {wall:.0f} s in all (the source's training included)\n")
    print("| train pairs | scratch best val NDCG@10 | transfer best val NDCG@10 | test NDCG@10 transfer / scratch "
          "| transfer s to scratch's best | scratch s to its best | speed-up | transfer fit s | scratch fit s |\n"
          "|---|---|---|---|---|---|---|---|---|")
    speedup = row.get("speedup")
    print(f"| {row['train_interactions']:,} | {row['scratch_best_val_ndcg_at_10']:.4f} | "
          f"{row['transfer_best_val_ndcg_at_10']:.4f} | {row['transfer_test_ndcg_at_10']:.4f} / "
          f"{row['scratch_test_ndcg_at_10']:.4f} | {row['transfer_seconds_to_target'] or float('nan'):.1f} | "
          f"{row['scratch_seconds_to_target'] or float('nan'):.1f} | "
          f"{f'{speedup:.1f}x' if speedup else '-'} | {row['transfer_fit_seconds']:.1f} | "
          f"{row['scratch_fit_seconds']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "time_to_quality.json").write_text(json.dumps(
        {"size": args.size, "personal": args.personal, "taste": args.taste, "set": args.set, **shape, "wall_s": wall,
         "row": row},
        indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
