"""Transfer vs the target-only baselines (popularity, implicit ALS, scratch, EASE, ItemKNN) on ML-1M genre domains.

Usage (after `transferrec fetch movielens-1m`):

    python bench/quality.py --genres Horror,Crime,Sci-Fi,Thriller,Adventure --fractions 0.1,0.3 --seeds 0,1,2

Runs the real onboard-domain flow for every (genre, fraction, seed) against its own MLflow store
(bench/results/mlflow.db; registry off), so source models are trained once per genre and reused.
Prints one line per run, then per (genre, fraction) the mean ± std over seeds of each model's NDCG@10 and
of the lift over the best baseline, and writes bench/results/quality.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from grid import grid_arguments, onboard_grid  # bench/ is on sys.path when a script here runs

from tasks.registry import BASELINES
from tasks.runtime import configure_environment, quiet_libraries

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid_arguments(parser, genres="Horror,Crime", seeds="0,1,2", out=HERE / "results")
    parser.add_argument("--family", choices=["mf", "two-tower"], default="mf")
    parser.add_argument("--mode", choices=["freeze-users", "full", "adapter", "zero-shot"], default="freeze-users")
    parser.add_argument("--item-init", choices=["auto", "users-mean", "content", "random"], default="auto")
    parser.add_argument("--transferred-lr-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    configure_environment()
    quiet_libraries()


    rows = []
    finetune = {"family": args.family, "mode": args.mode, "item_init": args.item_init,
                "transferred_lr_scale": args.transferred_lr_scale}
    for genre, fraction, seed, summary, seconds in onboard_grid(args.genres, args.fractions, args.seeds,
                                                                out=args.out, data_dir=args.data_dir,
                                                                finetune=finetune):
        test = {m: v["ndcg_at_10"] for m, v in summary.metrics.items() if m != "transfer"}
        best = max(test, key=test.get)
        row = {**finetune, "genre": genre, "fraction": fraction, "seed": seed, "source": summary.chosen_source,
               "seconds": seconds, "lift": summary.lift["test/lift_ndcg_at_10"], "best_baseline": best,
               "lift_vs_popularity": summary.metrics["transfer"]["ndcg_at_10"] / test["popularity"] - 1.0,
               "registered": summary.winner}
        for model, metrics in summary.metrics.items():
            for key in ("ndcg_at_10", "precision_at_10", "recall_at_10", "ctr_at_3"):
                row[f"{model}/{key}"] = metrics.get(key)
        rows.append(row)
    (args.out / "quality.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    return 0


def mean_std(values: list[float], fmt: str) -> str:
    """``mean ± std`` (sample std; ``± 0`` for a single value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(spread).lstrip('+')}"


def markdown(rows: list[dict]) -> str:
    """One line per (genre, fraction, seed), then per (genre, fraction) the mean ± std over seeds."""
    models = ("transfer", *BASELINES)

    def ndcg(r: dict, m: str) -> str:
        value = r.get(f"{m}/ndcg_at_10")
        return f"{value:.4f}" if value is not None else "-"

    lines = ["| genre | fraction | seed | source | " + " | ".join(f"NDCG@10 {m}" for m in models)
             + " | best baseline | lift vs best baseline | lift vs popularity |",
             "|---" * (len(models) + 7) + "|"]
    for r in rows:
        lines.append(f"| {r['genre']} | {r['fraction']} | {r['seed']} | {r['source']} | "
                     + " | ".join(ndcg(r, m) for m in models)
                     + f" | {r['best_baseline']} | {r['lift']:+.1%} | {r['lift_vs_popularity']:+.1%} |")
    lines += ["", "| genre | fraction | runs | " + " | ".join(f"NDCG@10 {m}" for m in models)
              + " | lift vs best baseline (mean ± std) | min lift | lift vs popularity (mean) |",
              "|---" * (len(models) + 6) + "|"]
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["genre"], r["fraction"]), []).append(r)
    for (genre, fraction), runs in groups.items():
        cells = [mean_std([r[f"{m}/ndcg_at_10"] for r in runs], "{:.4f}")
                 if all(r.get(f"{m}/ndcg_at_10") is not None for r in runs) else "-" for m in models]
        lifts = [r["lift"] for r in runs]
        over_popularity = statistics.mean(r["lift_vs_popularity"] for r in runs)
        lines.append(f"| {genre} | {fraction} | {len(runs)} | " + " | ".join(cells)
                     + f" | {mean_std(lifts, '{:+.1%}')} | {min(lifts):+.1%} | {over_popularity:+.1%} |")
    every = [r["lift"] for r in rows]
    best = statistics.mode(r["best_baseline"] for r in rows)
    lines.append(f"\nall {len(rows)} runs: mean lift {statistics.mean(every):+.1%} over the best baseline (most often "
                 f"{best}), min {min(every):+.1%}, transfer best in {sum(v > 0 for v in every)}/{len(every)}; "
                 f"mean lift over popularity {statistics.mean(r['lift_vs_popularity'] for r in rows):+.1%}")
    ctr = [(r["transfer/ctr_at_3"], r["popularity/ctr_at_3"]) for r in rows
           if r.get("transfer/ctr_at_3") is not None and r.get("popularity/ctr_at_3") is not None]
    if ctr:  # the logged-slate CTR barely separates models: say by how much
        gaps = [t - p for t, p in ctr]
        transfer_mean = statistics.mean(t for t, _ in ctr)
        lines.append(f"logged-slate CTR@3 transfer - popularity over {len(ctr)} runs: mean "
                     f"{statistics.mean(gaps):+.4f}, largest |gap| {max(abs(g) for g in gaps):.4f} "
                     f"(transfer mean {transfer_mean:.4f})")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
