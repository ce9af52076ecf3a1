"""Full-sort evaluation speed: every MovieLens-1M user against the whole catalogue.

Usage (after `transferrec fetch movielens-1m`):

    python bench/eval_speed.py [--repeats 3] [--data-dir DIR] [--out bench/results]
    python bench/eval_speed.py --scale 1e7      # the shape of a 10 M-interaction target, every test user

``--scale N`` times evaluation at the shape of bench/scale.py's target of N interactions instead: N/25 users,
all of them test users, N/500 items, 20 excluded and 5 relevant items a user (seeded), the same random
64-dim model and metrics; no pandas comparison.

Task: per user, the last 20 % of their interactions (all genres) are relevant, the rest are excluded from
the ranking; every user ranks all 3,883 items of the items table. The model is a 64-dim factor model with
random weights (the speed does not depend on the weights). Prints the wall time of
``models.evaluation.ranking.evaluate_model``
(precision, recall, NDCG, hit rate, MRR, MAP, novelty and coverage at 5, 10 and 20, and the logged-slate
CTR) next to a straightforward pandas implementation of
NDCG@10 and recall@10 (long table of scores, anti-join of seen items, group-wise rank), and checks that both
give the same NDCG@10.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pandas_ndcg_recall(model, task, k: int = 10) -> tuple[float, float]:
    """NDCG@k and recall@k the way a notebook would: pandas all the way."""
    import pandas as pd

    u, v, b = model.aligned(task.user_ids, task.item_ids)
    scores = u @ v.T + b
    n_users, n_items = scores.shape
    long = pd.DataFrame({"user": np.repeat(np.arange(n_users), n_items), "item": np.tile(np.arange(n_items), n_users),
                         "score": scores.reshape(-1)})
    seen = pd.DataFrame({"user": np.repeat(np.arange(n_users), task.exclude.lengths()), "item": task.exclude.indices,
                         "seen": True})
    long = long.merge(seen, on=["user", "item"], how="left")
    long = long[long["seen"].isna()]
    long["rank"] = long.groupby("user")["score"].rank(method="first", ascending=False)
    top = long[long["rank"] <= k]
    relevant = pd.DataFrame({"user": np.repeat(np.arange(n_users), task.relevant.lengths()),
                             "item": task.relevant.indices, "relevant": True})
    hits = top.merge(relevant, on=["user", "item"], how="left")
    hits["gain"] = hits["relevant"].fillna(False).astype(float) / np.log2(hits["rank"] + 1)
    dcg = hits.groupby("user")["gain"].sum()
    n_hits = hits.groupby("user")["relevant"].count()
    n_rel = relevant.groupby("user").size()
    ideal = n_rel.clip(upper=k).map(lambda n: (1.0 / np.log2(np.arange(2, n + 2))).sum())
    return float((dcg / ideal).mean()), float((n_hits / n_rel).mean())


def at_scale(n: int, repeats: int, out: Path) -> int:
    """Evaluation of every user of a target of ``n`` interactions' shape (see the module docstring)."""
    from models.evaluation.ranking import Csr, RankingTask, csr_from_pairs, evaluate_model
    from models.factors import FactorModel

    n_users, n_items = n // 25, n // 500
    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    items = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    exclude = csr_from_pairs(np.repeat(np.arange(n_users), 20), rng.integers(0, n_items, 20 * n_users), n_users)
    relevant = csr_from_pairs(np.repeat(np.arange(n_users), 5), rng.integers(0, n_items, 5 * n_users), n_users)
    no_impressions = Csr(np.zeros(n_users + 1, dtype=np.int64), np.zeros(0, dtype=np.int64))
    task = RankingTask(users, items, exclude, relevant, no_impressions, np.zeros(0, dtype=bool))
    model = FactorModel(users, items, rng.normal(0, 0.1, (n_users, 64)).astype(np.float32),
                        rng.normal(0, 0.1, (n_items, 64)).astype(np.float32),
                        rng.normal(0, 1.0, n_items).astype(np.float32))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = evaluate_model(model, task, ks=(5, 10, 20))
        times.append(time.perf_counter() - started)
    print(f"| interactions | test users | items | evaluate_model s (best of {repeats}) | NDCG@10 |\n"
          f"|---|---|---|---|---|\n| {n:,} | {n_users:,} | {n_items:,} | {min(times):.1f} | "
          f"{result.metrics['ndcg_at_10']:.4f} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"eval_speed_scale_{n}.json").write_text(json.dumps(
        {"interactions": n, "users": n_users, "items": n_items, "seconds": times}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--scale", type=float, help="interactions of a synthetic target (see above)")
    args = parser.parse_args(argv)
    if args.scale:
        return at_scale(int(args.scale), args.repeats, args.out)

    import torch

    from models.data.fetch import load_cached
    from models.evaluation.ranking import build_ranking_task, evaluate_model
    from models.factors import FactorModel
    from models.split import temporal_user_split
    from tasks.runtime import default_data_dir

    data = load_cached(args.data_dir or default_data_dir(), "movielens-1m")
    seen, holdout = temporal_user_split(data.interactions, holdout_ratio=0.2)
    items = np.sort(data.items["item_id"].to_numpy()).astype(object)
    task = build_ranking_task(items, holdout, seen)
    users = task.user_ids
    rng = np.random.default_rng(0)
    model = FactorModel(users, items, rng.normal(0, 0.1, (len(users), 64)).astype(np.float32),
                        rng.normal(0, 0.1, (len(items), 64)).astype(np.float32),
                        rng.normal(0, 1.0, len(items)).astype(np.float32))
    print(f"users {task.n_users}, items {len(items)}, relevant pairs {task.relevant.indices.size}, "
          f"excluded pairs {task.exclude.indices.size}, torch threads {torch.get_num_threads()}")
    ours = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        result = evaluate_model(model, task, ks=(5, 10, 20))
        ours.append(time.perf_counter() - started)
    started = time.perf_counter()
    ndcg, recall = pandas_ndcg_recall(model, task)
    pandas_seconds = time.perf_counter() - started
    print(f"transferrec evaluate_model (every metric at 5, 10, 20 + CTR): "
          f"best {min(ours):.2f} s, median {sorted(ours)[len(ours) // 2]:.2f} s over {args.repeats} runs")
    print(f"pandas NDCG@10 + recall@10: {pandas_seconds:.2f} s")
    print(f"NDCG@10 {result.metrics['ndcg_at_10']:.6f} vs pandas {ndcg:.6f}; recall@10 "
          f"{result.metrics['recall_at_10']:.6f} vs pandas {recall:.6f}")
    same = abs(result.metrics["ndcg_at_10"] - ndcg) < 1e-6 and abs(result.metrics["recall_at_10"] - recall) < 1e-6
    print("agree to 1e-6:", same)
    print(f"speed-up over pandas: {pandas_seconds / min(ours):.0f}x")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval_speed.json").write_text(json.dumps({
        "users": task.n_users, "items": len(items), "transferrec_best_s": min(ours),
        "transferrec_median_s": sorted(ours)[len(ours) // 2], "repeats": args.repeats, "pandas_s": pandas_seconds,
        "speedup": pandas_seconds / min(ours), "agree": same, "torch_threads": torch.get_num_threads()}, indent=2))
    print(f"wrote {args.out / 'eval_speed.json'}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
