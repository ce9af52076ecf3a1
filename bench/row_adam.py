"""Row updates of a large user table (models.nets.optim.RowAdam) against dense fused Adam.

Usage:  python bench/row_adam.py [--users 40000,76000,160000,400000] [--batches 256,1024,4096] [--steps 150]
                                 [--source] [--customers 76000] [--repeats 2]

1. **A step**, for each user table and batch: the id network of 64 dimensions over 360 items, one training
   step (full softmax, backward, the optimiser), on seeded random pairs; milliseconds a step, the median of
   ``--steps`` after 20 warm-up steps, with torch's fused Adam on a dense user table and with RowAdam on a
   sparse one (its late rows brought up to date before each batch, as the module does). The column *ratio*
   is rows per pair of a batch; the product updates rows above ``TrainConfig.row_update_ratio``.
2. **The same update**: after 300 steps on 200 users (16-pair batches that leave rows unused for stretches of
   every length), the largest difference of every weight from dense Adam's, relative to the largest weight:
   in float64 without eps (the closed form alone) and in float32 with Adam's eps, beside the difference between
   two dense Adam implementations (fused and single-tensor), the size of rounding.
3. ``--source``: one source model of the synthetic retail export (``transferrec synthetic retail --customers
   N``: the beauty category, about 760,000 purchases of 76,000 customers), trained as the onboarding trains it
   (time-safe for the garden target), with row updates and without, one after the other ``--repeats`` times:
   wall, epochs and best validation NDCG@10.

Prints the tables and writes bench/results/row_adam.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
BIN = Path(sys.executable).parent


def step_ms(n_users: int, batch: int, rows: bool, steps: int, n_items: int = 360, dim: int = 64) -> float:
    import torch

    from models.nets.network import MatrixFactorization
    from models.nets.optim import RowAdam

    torch.manual_seed(0)
    net = MatrixFactorization(n_users, n_items, dim)
    net.user_emb.sparse = rows
    optimiser = (RowAdam if rows else torch.optim.Adam)(net.parameters(), lr=0.01, fused=True)
    generator = torch.Generator().manual_seed(0)
    times = []
    for step in range(20 + steps):
        users = torch.randint(0, n_users, (batch,), generator=generator)
        items = torch.randint(0, n_items, (batch,), generator=generator)
        started = time.perf_counter()
        if rows:
            optimiser.prepare(net.user_emb.weight, users)
        optimiser.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(users), items).backward()
        optimiser.step()
        if step >= 20:
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def differences() -> dict[str, float]:
    """Largest weight difference from dense Adam after 300 steps, relative to the largest weight."""
    import torch

    from models.nets.network import MatrixFactorization
    from models.nets.optim import RowAdam

    def run(dtype: torch.dtype, eps: float, make, sparse: bool) -> MatrixFactorization:
        torch.manual_seed(0)
        net = MatrixFactorization(200, 30, 8).to(dtype)
        net.user_emb.sparse = sparse
        optimiser = make([{"params": [net.item_emb.weight, net.item_bias], "lr": 0.01},
                          {"params": [net.user_emb.weight], "lr": 0.003}], eps)
        generator = torch.Generator().manual_seed(0)
        for step in range(300):
            users = (torch.arange(200) if step == 0 and eps == 0 else
                     torch.randint(0, 50 if step < 150 else 190, (16,), generator=generator))
            items = torch.randint(0, 30, (len(users),), generator=generator)
            if isinstance(optimiser, RowAdam):
                optimiser.prepare(net.user_emb.weight, users)
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(net(users), items).backward()
            optimiser.step()
        if isinstance(optimiser, RowAdam):
            optimiser.flush()
        return net

    def largest(a: MatrixFactorization, b: MatrixFactorization) -> float:
        with torch.no_grad():
            return max(float((x - y).abs().max() / x.abs().max()) 
                       for x, y in zip(a.parameters(), b.parameters(), strict=True))

    fused = lambda groups, eps: torch.optim.Adam(groups, eps=eps)  # noqa: E731
    rows = lambda groups, eps: RowAdam(groups, eps=eps)  # noqa: E731
    single = lambda groups, eps: torch.optim.Adam(groups, eps=eps, foreach=False)  # noqa: E731
    fused32 = lambda groups, eps: torch.optim.Adam(groups, eps=eps, fused=True)  # noqa: E731
    return {
        "float64, eps 0: RowAdam vs dense Adam": largest(run(torch.float64, 0.0, fused, False),
                                                         run(torch.float64, 0.0, rows, True)),
        "float32, eps 1e-8: RowAdam vs dense fused Adam": largest(run(torch.float32, 1e-8, fused32, False),
                                                                  run(torch.float32, 1e-8, rows, True)),
        "float32, eps 1e-8: single-tensor vs fused dense Adam": largest(run(torch.float32, 1e-8, fused32, False),
                                                                        run(torch.float32, 1e-8, single, False)),
    }


def source_fits(customers: int, repeats: int) -> list[dict]:
    from models.config import SourcesConfig, SplitConfig
    from models.data.datasets import load_column_map, read_canonical_dir
    from models.split import split_with
    from models.transfer.recipes import train_source_model

    out = []
    with tempfile.TemporaryDirectory(prefix="transferrec-rows-") as tmp:
        shop = Path(tmp) / "shop"
        subprocess.run([str(BIN / "transferrec"), "-q", "synthetic", "retail", "--out", str(shop), "--customers",
                        str(customers)], check=True, cwd=tmp)
        data = read_canonical_dir(shop, "shop", load_column_map(shop / "columns.yaml"))
        split = split_with(data.interactions, data.items, domain="garden", config=SplitConfig(seed=0))
        config = SourcesConfig()
        for _ in range(repeats):
            for rows in (False, True):
                train = config.train.model_copy(
                    update={"row_update_ratio": config.train.row_update_ratio if rows else None})
                started = time.perf_counter()
                fit = train_source_model(data.interactions, data.items, domains=["beauty"], cutoffs=split.cutoffs,
                                         model=config.model, train=train, val_ratio=config.val_ratio,
                                         seed=config.seed, label="source:beauty")
                out.append({"row_updates": rows, "users": len(fit.model.user_ids), "batch": fit.batch_size,
                            "wall_s": round(time.perf_counter() - started, 2), "epochs": fit.epochs_run,
                            "best_val_ndcg": round(fit.best_val_ndcg, 4)})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="40000,76000,160000,400000")
    parser.add_argument("--batches", default="256,1024,4096")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--source", action="store_true", help="also train a retail source both ways")
    parser.add_argument("--customers", type=int, default=76_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    from tasks.runtime import configure_environment, quiet_libraries

    configure_environment()
    quiet_libraries()
    steps = []
    print("| users | batch | ratio | dense fused Adam, ms a step | RowAdam, ms a step | speed-up |\n"
          "|---|---|---|---|---|---|")
    for n_users in (int(x) for x in args.users.split(",")):
        for batch in (int(x) for x in args.batches.split(",")):
            dense, rows = (step_ms(n_users, batch, way, args.steps) for way in (False, True))
            steps.append({"users": n_users, "batch": batch, "dense_ms": round(dense, 2), "rows_ms": round(rows, 2)})
            print(f"| {n_users:,} | {batch:,} | {n_users / batch:.0f} | {dense:.2f} | {rows:.2f} | "
                  f"x{dense / rows:.2f} |", flush=True)
    same = differences()
    print("\n| run of 300 steps | largest weight difference, relative |\n|---|---|")
    for name, value in same.items():
        print(f"| {name} | {value:.1e} |")
    fits = []
    if args.source:
        fits = source_fits(args.customers, args.repeats)
        print("\n| source | row updates | users | batch | wall s | epochs | best val NDCG@10 |\n"
              "|---|---|---|---|---|---|---|")
        for fit in fits:
            print(f"| beauty | {'yes' if fit['row_updates'] else 'no'} | {fit['users']:,} | {fit['batch']:,} | "
                  f"{fit['wall_s']:.1f} | {fit['epochs']} | {fit['best_val_ndcg']:.4f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "row_adam.json").write_text(json.dumps({"steps": steps, "differences": same, "source": fits},
                                                       indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
