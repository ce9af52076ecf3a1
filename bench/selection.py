"""Selector quality on ML-1M genre targets: does the combined score pick the source that fine-tunes best?

Usage (after `transferrec fetch movielens-1m`):

    python bench/selection.py --genres Horror,Crime,Sci-Fi --fractions 0.1,0.3 --seeds 0,1

For every (genre, fraction, seed) it runs the real onboard-domain flow with every candidate fine-tuned
(``--top-k`` = number of candidates; registry off; sources trained once per genre and reused from
bench/results/mlflow.db), then prints per target:

* the candidate ranking by combined score and by fine-tuned *test* NDCG@10, and Kendall's tau between them;
* the regret of picking by score alone (top-1): (best test NDCG@10 - chosen's) / best;
* the regret of ``--top-k 2`` (fine-tune the two best-scored; a lower-scored finalist replaces the first
  only when it wins on validation by more than ``--val-margin``), and of fine-tuning all candidates.

Writes bench/results/selection.json. ``--from-stored [--raw FILE] [--only G1,G2] [--weights JSON]`` ranks
stored runs again (default: the current weights) without training anything.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from grid import cells_of, grid_arguments, onboard_grid  # bench/ is on sys.path when a script here runs

from tasks.runtime import configure_environment, quiet_libraries

HERE = Path(__file__).resolve().parent
PROBE = "zero_shot_val_ndcg_at_10"


def regret(test: dict[str, float], chosen: str) -> float:
    """Relative test NDCG@10 lost by ``chosen`` against the best candidate."""
    best = max(test.values())
    return (best - test[chosen]) / best if best > 0 else 0.0


def pick_by_val(candidates: list[dict], k: int, margin: float) -> str:
    """What ``--top-k k`` keeps: the best-scored finalist unless another beats it on fine-tuned validation
    NDCG@10 by more than ``margin`` (:func:`models.selection.similarity.settle_finalists`)."""
    from models.selection.similarity import settle_finalists

    finalists = sorted(candidates, key=lambda c: c["rank"])[:k]
    return settle_finalists([c["name"] for c in finalists], {c["name"]: c["val_ndcg_at_10"] for c in finalists},
                            margin=margin)


def rescore(candidates: list[dict], weights: dict[str, float] | None) -> list[dict]:
    """The candidates ranked again with other weights (signals are stored, nothing is retrained)."""
    import polars as pl

    from models.selection.similarity import rank_candidates

    keep = [{k: v for k, v in c.items() if not k.startswith("contribution/") and k not in
             ("rank", "score", "probe_relative", "support_relative")} for c in candidates]
    table, _, _ = rank_candidates(keep, weights)
    return table.with_columns(pl.col("rank").cast(pl.Int64)).to_dicts()


def target_row(genre: str, fraction: float, seed: int, candidates: list[dict], margin: float) -> dict:
    from models.selection.similarity import kendall_tau

    test = {c["name"]: c["test_ndcg_at_10"] for c in candidates}
    by_score = [c["name"] for c in sorted(candidates, key=lambda c: c["rank"])]
    by_test = sorted(test, key=lambda n: -test[n])
    top2, every = pick_by_val(candidates, 2, margin), pick_by_val(candidates, len(candidates), margin)
    return {
        "genre": genre, "fraction": fraction, "seed": seed, "by_score": by_score, "by_test": by_test,
        "tau": kendall_tau(by_score, by_test), "chosen": by_score[0], "best": by_test[0],
        "regret_top1": regret(test, by_score[0]), "chosen_top2": top2, "regret_top2": regret(test, top2),
        "chosen_all": every, "regret_all": regret(test, every),
        "test": test, "probe": {c["name"]: c[PROBE] for c in candidates},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid_arguments(parser, genres="Horror,Crime,Sci-Fi", seeds="0,1", out=HERE / "results")
    parser.add_argument("--weights", type=json.loads, default=None,
                        help="JSON signal weights; with --from-stored, re-score stored candidates only")
    parser.add_argument("--val-margin", type=float, default=0.02, help="see SelectionConfig.val_margin")
    parser.add_argument("--from-stored", action="store_true", help="re-score bench/results/selection_raw.json")
    parser.add_argument("--raw", type=Path, help="with --from-stored: the stored runs to re-score")
    parser.add_argument("--only", help="with --from-stored: comma-separated genres to keep")
    args = parser.parse_args(argv)
    configure_environment()
    quiet_libraries()
    args.out.mkdir(parents=True, exist_ok=True)
    raw_file = args.out / "selection_raw.json"
    if args.from_stored:
        raw = json.loads((args.raw or raw_file).read_text())
        if args.only:
            raw = [r for r in raw if r["genre"] in args.only.split(",")]
    else:
        raw = run_flows(args)
        raw_file.write_text(json.dumps(raw, indent=2, default=str))
    # Stored runs are ranked again with the given (or current default) weights; fresh runs as the flow did.
    rows = [target_row(r["genre"], r["fraction"], r["seed"],
                       rescore(r["candidates"], args.weights) if args.from_stored or args.weights
                       else r["candidates"], args.val_margin)
            for r in raw]
    if not args.from_stored:
        (args.out / "selection.json").write_text(json.dumps(rows, indent=2))
    print(markdown(rows))
    return 0


def run_flows(args: argparse.Namespace) -> list[dict]:
    """Every candidate fine-tuned (top-k above any candidate count) on each target of the grid."""


    return [{"genre": genre, "fraction": fraction, "seed": seed, "candidates": summary.candidates,
             "seconds": seconds}
            for genre, fraction, seed, summary, seconds in onboard_grid(
                cells_of(args.genres, args.fractions, args.seeds), out=args.out, data_dir=args.data_dir, top_k=99)]


def markdown(rows: list[dict]) -> str:
    """One line per target, then the means."""
    lines = ["| genre | fraction | seed | ranking by score | ranking by fine-tuned test NDCG@10 | tau | "
             "regret top-1 | regret top-2 | regret all |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['genre']} | {r['fraction']} | {r['seed']} | {' > '.join(r['by_score'])} | "
                     + " > ".join(f"{n} {r['test'][n]:.4f}" for n in r["by_test"])
                     + f" | {r['tau']:+.2f} | {r['regret_top1']:.1%} | {r['regret_top2']:.1%} "
                     f"| {r['regret_all']:.1%} |")
    lines += ["", "| selector | mean regret | max regret | picked the best |", "|---|---|---|---|"]
    for key, label in (("top1", "combined score (top-1)"), ("top2", "top-2 fine-tuned, best on validation"),
                       ("all", "all fine-tuned, best on validation")):
        values = [r[f"regret_{key}"] for r in rows]
        hits = sum(v == 0 for v in values)
        lines.append(f"| {label} | {statistics.mean(values):.2%} | {max(values):.2%} | {hits}/{len(values)} |")
    lines.append(f"\nmean Kendall tau (score vs test ranking): {statistics.mean(r['tau'] for r in rows):+.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
