"""Training throughput: pairs per second of one network fit (Lightning, the product's fit loop), in memory.

Usage:  python bench/throughput.py [--sizes 1e6,1e7] [--epochs 1] [--fit fine-tune|scratch]
                                   [--batch-size B] [--negatives N] [--fixed-batch] [--repeats R]
                                   [--accelerator auto|cpu|gpu] [--row-updates default|off|both]

For each size n: n seeded (user, item) pairs over n/25 users and n/500 items (the shape of bench/scale.py), the
id network of 64 dimensions trained with the product's target settings (FineTuneConfig().train: batch and sampled
negatives sized for the data by TrainConfig.sized_for, fused Adam) for --epochs epochs, validation on 1,000 users
after each (a small share of the time). --fit fine-tune (default) freezes every user row, as a fine-tune from a
source that knows every user does (bench/scale.py's case); scratch trains them too. --batch-size / --negatives
override the configured pair, --fixed-batch turns the data-sized batch off. --row-updates off updates the
user table by dense Adam whatever its size (TrainConfig.row_update_ratio None), both fits each size both ways,
one after the other in each repeat (the column *row updates* says whether the fit updated rows: models.nets.optim,
RowAdam; only a trained user table far larger than a batch is). Reports the fit's wall time and
pairs/s = n * epochs / wall; with --repeats R each size is fitted R times (the same data and seed) and the table
shows the best and the median run (a shared machine's figures move by a third from run to run). Prints a table
and writes bench/results/throughput.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def sizes(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",")]


def fit_once(n: int, epochs: int, fit: str = "fine-tune", batch_size: int | None = None,
             negatives: int | None = None, fixed_batch: bool = False, seed: int = 0,
             accelerator: str | None = None, row_updates: bool = True) -> dict:
    import numpy as np
    import polars as pl
    import torch

    from models.blas import one_blas_thread
    from models.config import FineTuneConfig, ModelConfig
    from models.nets.network import MatrixFactorization
    from models.nets.training import fit_network, validation_data

    rng = np.random.default_rng(seed)
    n_users, n_items = max(1, n // 25), max(1, n // 500)
    users, items = rng.integers(0, n_users, n).astype(np.int32), rng.integers(0, n_items, n).astype(np.int32)
    user_ids = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    item_ids = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    held = rng.choice(n_users, size=min(1_000, n_users), replace=False)
    holdout = pl.DataFrame({"user_id": user_ids[held].astype(str),
                            "item_id": item_ids[rng.integers(0, n_items, len(held))].astype(str),
                            "rating": np.full(len(held), 5.0)})
    seen = pl.DataFrame({"user_id": user_ids[users[:10_000]].astype(str),
                         "item_id": item_ids[items[:10_000]].astype(str)})
    val = validation_data(holdout, seen, user_ids=user_ids, item_ids=item_ids)
    overrides = {"max_epochs": epochs, "patience": epochs, "batch_size": batch_size, "n_negatives": negatives,
                 "accelerator": accelerator,
                 "steps_per_epoch": None if fixed_batch else FineTuneConfig().train.steps_per_epoch,
                 "row_update_ratio": FineTuneConfig().train.row_update_ratio if row_updates else None}
    train = FineTuneConfig().train.model_copy(update={k: v for k, v in overrides.items()
                                                      if v is not None or k in ("steps_per_epoch",
                                                                                "row_update_ratio")})
    model = ModelConfig()
    network = MatrixFactorization(n_users, n_items, model.dim, init_std=model.init_std, seed=seed)
    frozen = np.ones(n_users, dtype=bool) if fit == "fine-tune" else None
    started = time.perf_counter()
    with one_blas_thread():
        result = fit_network(network, (users, items), user_ids=user_ids, item_ids=item_ids, val=val, config=train,
                             seed=seed, kind=fit, restore_best=False, frozen_user_rows=frozen)
    wall = time.perf_counter() - started
    on_gpu = train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if on_gpu else f"cpu ({torch.get_num_threads()} threads)"
    return {"pairs": n, "users": n_users, "items": n_items, "fit": fit, "device": device,
            "row_updates": result.row_updates,
            "epochs": result.epochs_run,
            "batch_size": result.batch_size, "negatives": result.n_negatives,
            "wall_s": round(wall, 3), "pairs_per_s": round(n * result.epochs_run / wall)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=sizes, default=[1_000_000])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fit", choices=("fine-tune", "scratch"), default="fine-tune")
    parser.add_argument("--batch-size", type=int, help="the configured batch (default: the product's)")
    parser.add_argument("--negatives", type=int, help="the configured sampled negatives (default: the product's)")
    parser.add_argument("--fixed-batch", action="store_true", help="no data-sized batch (steps_per_epoch=None)")
    parser.add_argument("--accelerator", help="Lightning accelerator (default: the product's, auto: a GPU when "
                                              "present)")
    parser.add_argument("--repeats", type=int, default=1, help="fits per size; the best and the median are shown")
    parser.add_argument("--row-updates", choices=("default", "off", "both"), default="default",
                        help="off: dense Adam on every table; both: each size both ways")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    from tasks.runtime import configure_environment, quiet_libraries

    configure_environment()
    quiet_libraries()
    rows = []
    ways = {"default": (True,), "off": (False,), "both": (False, True)}[args.row_updates]
    for n in args.sizes:
        runs: dict[bool, list[dict]] = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way in ways:
                runs[way].append(fit_once(n, args.epochs, args.fit, args.batch_size, args.negatives,
                                          args.fixed_batch, accelerator=args.accelerator, row_updates=way))
        for way in ways:
            best = max(runs[way], key=lambda r: r["pairs_per_s"])
            rows.append({**best, "runs_pairs_per_s": [r["pairs_per_s"] for r in runs[way]],
                         "median_pairs_per_s": round(statistics.median(r["pairs_per_s"] for r in runs[way]))})
    print("| pairs | users | items | fit | device | batch | negatives | row updates | epochs | best fit wall (s) | "
          "pairs/s, best | pairs/s, median | runs |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['pairs']:,} | {r['users']:,} | {r['items']:,} | {r['fit']} | {r['device']} | "
              f"{r['batch_size']:,} | {r['negatives']:,} | {'yes' if r['row_updates'] else 'no'} | {r['epochs']} | "
              f"{r['wall_s']:.2f} | {r['pairs_per_s']:,} | "
              f"{r['median_pairs_per_s']:,} | {len(r['runs_pairs_per_s'])} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "throughput.json").write_text(json.dumps({"machine": platform.machine(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
