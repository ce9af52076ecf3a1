"""The three plots an onboarding logs, drawn as the tracking's background thread draws them: seconds each.

Usage:

    python bench/plots.py [--models 8] [--repeats 7]

Each plot is drawn ``--repeats`` times into memory with ``--models`` models (the onboarding's nine less the refit:
learning curves of two networks over 8 epochs, NDCG@K at six K, five user slices), after the canvas, fonts and PNG
writer are loaded (:func:`models.evaluation.plots.load_backend`, as a command does before its flow); prints the
median of each and their sum. The plots hold Python's lock while they draw, on the thread that also writes the
onboarding's runs, so their sum is time the flow's evaluation and analysis share the interpreter with them.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODELS = ("transfer", "popularity", "als", "scratch", "ease", "itemknn", "joint-als", "joint-ease", "extra")
SLICES = ("target_train:cold", "target_train:light", "target_train:warm", "source:in_source",
          "source:not_in_source")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    from models.evaluation.plots import load_backend, plot_learning_curves, plot_metric_at_k, plot_slices

    load_backend()
    rng = np.random.default_rng(0)
    models = MODELS[:args.models]
    curves = {m: [{"epoch": e, "val/ndcg_at_10": float(rng.random())} for e in range(8)]
              for m in ("transfer", "scratch")}
    at_k = {m: {f"ndcg_at_{k}": float(rng.random()) for k in (1, 3, 5, 10, 20, 50)} for m in models}
    slices = {m: {s: {"ndcg_at_10": float(rng.random())} for s in SLICES} for m in models}
    seconds = {}
    for name, plot, data in (("learning curves", plot_learning_curves, curves), ("NDCG@K", plot_metric_at_k, at_k),
                             ("user slices", plot_slices, slices)):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            plot(data, io.BytesIO())
            times.append(time.perf_counter() - start)
        seconds[name] = statistics.median(times)
    print(f"| plot ({len(models)} models) | seconds (median of {args.repeats}) |\n|---|---|")
    for name, value in seconds.items():
        print(f"| {name} | {value:.3f} |")
    print(f"| **all three** | **{sum(seconds.values()):.3f}** |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
