"""Transfer against every peer (popularity, implicit ALS, scratch, EASE, ItemKNN and the joint ALS and EASE
retrained on the time-safe source data plus the target's), on MovieLens genre domains.

Usage (after `transferrec fetch movielens-1m`):

    python bench/quality.py --all-genres                 # every ML-1M genre with enough data, 0.05/0.1/0.3, seeds 0-2
    python bench/quality.py --genres Horror,Crime --fractions 0.1 --seeds 0
    python bench/quality.py --all-genres --dataset movielens-100k --source-dataset movielens-1m --fractions 0.3,1.0
    python bench/quality.py --report                     # the tables from the runs recorded so far

``--all-genres`` takes every genre whose target training data at the smallest fraction has at least
``--min-train`` interactions after the split (seed 0). The genres split in two fixed halves:
:data:`DEVELOPMENT`, the genres every default (fine-tuning, peers' grids, selection) was chosen on, and the
others, held out: reported separately, so the defaults are shown on data they were not chosen on.

Runs the real onboard-domain flow for every (genre, fraction, seed) against one MLflow store under ``--out``
(registry off; source models trained once per target genre and reused). Each run appends one line to
``<out>/quality-<dataset>.jsonl`` (a cell already there is not run again: an interrupted benchmark resumes), then
the tables are printed: per cell the mean over seeds of each model's test NDCG@10, which transfer recipe validation
kept (the closed-form one or the network fine-tune, see models.transfer.closed_form), transfer's lift over the
best peer on test and over popularity, wins / ties / losses against the best peer by the paired 95 % interval,
and what the negative-transfer guard registers; per half, the mean and worst lift and the cells transfer wins.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from grid import onboard_grid  # bench/ is on sys.path when a script here runs

from tasks.registry import BASELINES, guard
from tasks.runtime import configure_environment, quiet_libraries

HERE = Path(__file__).resolve().parent
#: The genres the defaults were chosen on (during development, before the held-out genres were run).
DEVELOPMENT = ("Horror", "Crime", "Sci-Fi", "Thriller", "Adventure")


def eligible_genres(dataset: str, data_dir: Path | None, fraction: float, min_train: int) -> list[str]:
    """The genres whose training split at ``fraction`` (seed 0) has at least ``min_train`` interactions,
    largest first."""
    from data_contracts.columns import DOMAIN
    from models.config import DataConfig, SplitConfig
    from models.data.datasets import read_canonical_dir
    from models.split import InsufficientDataError, split_with
    from tasks.data import data_location

    data = read_canonical_dir(data_location(DataConfig(dataset=dataset, data_dir=data_dir)), dataset)
    kept = []
    for genre in data.domains()[DOMAIN].drop_nulls().to_list():
        try:
            split = split_with(data.interactions, data.items, domain=genre,
                               config=SplitConfig(fraction=fraction, seed=0))
        except (InsufficientDataError, ValueError):
            continue
        if split.train.height >= min_train:
            kept.append(genre)
    return kept


def run_row(genre: str, fraction: float, seed: int, summary, seconds: float) -> dict:
    """One run's record: every model's test and validation metrics, the lift intervals, the guard's pick."""
    test = {m: v["ndcg_at_10"] for m, v in summary.metrics.items() if m != "transfer"}
    best = max(test, key=test.get)
    interval = summary.lift_intervals[best]
    row = {"genre": genre, "fraction": fraction, "seed": seed, "source": summary.chosen_source, "seconds": seconds,
           "train_seconds": summary.timings_seconds.get("train"), "train_interactions":
           summary.split.get("train_interactions"), "best_peer": best,
           "lift": summary.lift["test/lift_ndcg_at_10"], "lift_low": interval["low"], "lift_high": interval["high"],
           "lift_vs_popularity": summary.metrics["transfer"]["ndcg_at_10"] / test["popularity"] - 1.0,
           "registered": guard({m: v["ndcg_at_10"] for m, v in summary.val_metrics.items()})[0],
           "recipe": summary.transfer_recipe.get("recipe", "network")}
    for model, metrics in summary.metrics.items():
        row[f"{model}/ndcg_at_10"] = metrics["ndcg_at_10"]
        row[f"{model}/val_ndcg_at_10"] = summary.val_metrics[model]["ndcg_at_10"]
        row[f"{model}/ctr_at_3"] = metrics.get("ctr_at_3")
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all-genres", action="store_true", help="every genre with enough data (--min-train)")
    parser.add_argument("--genres", default="Horror,Crime")
    parser.add_argument("--fractions", default="0.05,0.1,0.3")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--min-train", type=int, default=500)
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--source-dataset", help="take the sources from this dataset (e.g. movielens-1m)")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--finetune", type=json.loads, default={},
                        help='fine-tuning variant, JSON fields of FineTuneConfig: \'{"mode": "adapter"}\', '
                             '\'{"family": "two-tower"}\' (recorded in a file of its own)')
    parser.add_argument("--report", action="store_true", help="print the tables of the recorded runs; run nothing")
    args = parser.parse_args(argv)
    variant = "".join(f"-{k}={v}" for k, v in sorted(args.finetune.items()))
    records = args.out / f"quality-{args.dataset}{variant}.jsonl"
    if not args.report:
        configure_environment()
        quiet_libraries()
        fractions = sorted(map(float, args.fractions.split(",")))
        genres = (eligible_genres(args.dataset, args.data_dir, fractions[0], args.min_train) if args.all_genres
                  else args.genres.split(","))
        done = {(r["genre"], r["fraction"], r["seed"]) for r in read(records)}
        cells = [(g, f, s) for g in genres for f in fractions for s in map(int, args.seeds.split(","))
                 if (g, f, s) not in done]
        args.out.mkdir(parents=True, exist_ok=True)
        for genre, fraction, seed, summary, seconds in onboard_grid(
                cells, out=args.out, data_dir=args.data_dir, dataset=args.dataset, source_dataset=args.source_dataset,
                finetune=args.finetune):
            with records.open("a") as file:
                file.write(json.dumps(run_row(genre, fraction, seed, summary, seconds)) + "\n")
    print(markdown(read(records)))
    return 0


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _mean(values: list[float], fmt: str) -> str:
    return fmt.format(statistics.mean(values)) if values else "-"


def verdict(row: dict) -> str:
    """Against the best peer on test, by the paired 95 % interval: win, loss or tie (the interval holds 0)."""
    return "win" if row["lift_low"] > 0 else "loss" if row["lift_high"] < 0 else "tie"


def markdown(rows: list[dict]) -> str:
    """Per (genre, fraction): the mean over seeds; then per half of the genres, and over all."""
    models = [m for m in ("transfer", *BASELINES) if any(f"{m}/ndcg_at_10" in r for r in rows)]
    cells: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        cells.setdefault((r["genre"], r["fraction"]), []).append(r)
    lines = ["| half | genre | fraction | seeds | " + " | ".join(f"NDCG@10 {m}" for m in models)
             + " | transfer recipe (closed-form / network) | best peer (test) | lift vs best peer | lift vs popularity"
             " | win / tie / loss | registered |",
             "|---" * (len(models) + 10) + "|"]
    for (genre, fraction), runs in sorted(cells.items(), key=lambda c: (c[0][0] not in DEVELOPMENT, c[0])):
        verdicts = [verdict(r) for r in runs]
        registered = sorted({r["registered"] for r in runs})
        lines.append(
            f"| {'dev' if genre in DEVELOPMENT else 'held-out'} | {genre} | {fraction} | {len(runs)} | "
            + " | ".join(_mean([r[f"{m}/ndcg_at_10"] for r in runs if f"{m}/ndcg_at_10" in r], "{:.4f}")
                         for m in models)
            + f" | {sum(r.get('recipe') == 'closed-form' for r in runs)} / "
            f"{sum(r.get('recipe', 'network') == 'network' for r in runs)}"
            f" | {statistics.mode(r['best_peer'] for r in runs)} | {_mean([r['lift'] for r in runs], '{:+.1%}')}"
            f" | {_mean([r['lift_vs_popularity'] for r in runs], '{:+.1%}')}"
            f" | {verdicts.count('win')} / {verdicts.count('tie')} / {verdicts.count('loss')}"
            f" | {', '.join(registered)} |")
    lines += ["", "| genres | runs | mean lift vs best peer | worst genre (mean lift) | cells won (mean lift > 0) "
                  "| runs won / tied / lost (95 % CI) | mean lift vs popularity | transfer registered | registered "
                  "against validation | registered model vs popularity |", "|---" * 10 + "|"]
    halves = {"development": [r for r in rows if r["genre"] in DEVELOPMENT],
              "held-out": [r for r in rows if r["genre"] not in DEVELOPMENT], "all": rows}
    for half, runs in halves.items():
        if not runs:
            continue
        by_genre: dict[str, list[float]] = {}
        for r in runs:
            by_genre.setdefault(r["genre"], []).append(r["lift"])
        worst = min(by_genre, key=lambda g: statistics.mean(by_genre[g]))
        half_cells = {k: v for k, v in cells.items() if any(r in runs for r in v)}
        won = sum(statistics.mean(r["lift"] for r in v) > 0 for v in half_cells.values())
        verdicts = [verdict(r) for r in runs]
        wrong = sum(not _guard_agrees(r) for r in runs)
        lines.append(f"| {half} ({len(by_genre)}) | {len(runs)} | {_mean([r['lift'] for r in runs], '{:+.1%}')} | "
                     f"{worst} ({statistics.mean(by_genre[worst]):+.1%}) | {won}/{len(half_cells)} | "
                     f"{verdicts.count('win')} / {verdicts.count('tie')} / {verdicts.count('loss')} | "
                     f"{_mean([r['lift_vs_popularity'] for r in runs], '{:+.1%}')} | "
                     f"{sum(r['registered'] == 'transfer' for r in runs)}/{len(runs)} | {wrong} | "
                     f"{_mean([registered_lift(r) for r in runs], '{:+.1%}')} |")
    ctr = [(r["transfer/ctr_at_3"], r["popularity/ctr_at_3"]) for r in rows
           if r.get("transfer/ctr_at_3") is not None and r.get("popularity/ctr_at_3") is not None]
    if ctr:  # the logged-slate CTR barely separates models: say by how much
        gaps = [t - p for t, p in ctr]
        transfer_mean = statistics.mean(t for t, _ in ctr)
        lines.append(f"\nlogged-slate CTR@3 transfer - popularity over {len(ctr)} runs: mean "
                     f"{statistics.mean(gaps):+.4f}, largest |gap| {max(abs(g) for g in gaps):.4f} (transfer mean "
                     f"{transfer_mean:.4f})")
    return "\n".join(lines)


def registered_lift(row: dict) -> float:
    """Test NDCG@10 of the model the guard registers (what a user of the run gets) over popularity's, minus 1."""
    return row[f"{row['registered']}/ndcg_at_10"] / row["popularity/ndcg_at_10"] - 1.0


def _guard_agrees(row: dict) -> bool:
    """The registered model is the one the guard picks from the validation scores (transfer only when no peer
    is better on validation)."""
    val = {m.removesuffix("/val_ndcg_at_10"): v for m, v in row.items() if m.endswith("/val_ndcg_at_10")}
    transfer_best = all(val["transfer"] > v for m, v in val.items() if m != "transfer")
    return (row["registered"] == "transfer") == transfer_best


if __name__ == "__main__":
    raise SystemExit(main())
