"""Warm-process onboarding: the same flow called several times in one process, stage by stage.

Usage (after `bench/time_to_model.py`, whose store holds the registered sources):

    python bench/warm_flow.py [--runs 5] [--store bench/results/time_to_model/mlflow.db] [--out bench/results]

The first call starts Prefect's temporary API and is not counted; the median of the others is printed per
stage. To compare two commits, run this script from a checkout of each (it imports the code beside it) one
after the other: on a 2-core machine whose speed drifts through the day, medians of alternating runs are
what can be compared, not single timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-1m")
    parser.add_argument("--target-domain", default="Horror")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--store", type=Path, default=Path("bench/results/time_to_model/mlflow.db"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if not args.store.exists():
        parser.error(f"{args.store} does not exist: run bench/time_to_model.py first (it registers the sources)")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{args.store.resolve()}"

    from tasks.runtime import configure_environment, flow_settings, quiet_libraries

    configure_environment({"PREFECT_LOGGING_LEVEL": "CRITICAL"})
    quiet_libraries()
    from flows.cli import build_parser, resolve_config
    from flows.onboard import onboard_domain_flow

    config = resolve_config(build_parser().parse_args(
        ["onboard", "--dataset", args.dataset, "--target-domain", args.target_domain, "--target-fraction",
         str(args.fraction)]))
    runs = []
    for i in range(args.runs):
        start = time.perf_counter()
        with flow_settings():  # as the command runs its flows
            summary = onboard_domain_flow(config)
        runs.append({"wall": time.perf_counter() - start, **summary.timings_seconds,
                     "test_ndcg_at_10_transfer": summary.metrics["transfer"]["ndcg_at_10"]})
        print(f"call {i}: {runs[-1]['wall']:.2f} s" + (" (starts Prefect's API, not counted)" if i == 0 else ""),
              flush=True)
    counted = runs[1:]
    median = {key: statistics.median(r[key] for r in counted) for key in counted[0]}
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"\nwarm onboarding flow, {args.dataset} {args.target_domain} at {args.fraction:.0%}, commit {commit}, "
          f"median of {len(counted)} calls (seconds)\n")
    print("| stage | median | min | max |\n|---|---|---|---|")
    for key in median:
        values = [r[key] for r in counted]
        print(f"| {key} | {median[key]:.2f} | {min(values):.2f} | {max(values):.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"warm_flow_{commit}.json"
    out.write_text(json.dumps({"commit": commit, "runs": runs, "median": median}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
