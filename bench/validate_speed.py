"""Validation speed: the full interactions contract on 1,000,000 rows vs the time polars takes to read them.

Usage:  python bench/validate_speed.py [--rows 1000000] [--repeat 3]

Writes a seeded CSV of interactions (plus a matching items table), then times, best of --repeat:
  read      polars reads the CSV (all columns as strings, as transferrec reads exports)
  validate  transferrec validates it: types, the interactions suite (17 rules, polars evaluator; clean
            data never reaches great-expectations), referential integrity against items, the
            single-interaction-user check (GX import excluded)
  gx        the same with engine="great_expectations" (every rule run by great-expectations)
Prints a table and writes bench/results/validate_speed.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from data_contracts.validation import ContractSettings, validate_tables

HERE = Path(__file__).resolve().parent


def make_csv(path: Path, rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    users, items = max(rows // 160, 1), max(rows // 270, 1)
    frame = pl.DataFrame({
        "user_id": pl.Series(rng.integers(0, users, rows)).cast(pl.String),
        "item_id": pl.Series(rng.integers(0, items, rows)).cast(pl.String),
        "timestamp": 978_300_000 + np.arange(rows, dtype=np.int64),
        "rating": rng.integers(1, 6, rows).astype(np.float64),
    })
    frame.write_csv(path)
    return pl.DataFrame({"item_id": [str(i) for i in range(items)], "domain": ["d"] * items})


def best_of(repeat: int, fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return min(times), out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    import great_expectations  # noqa: F401  (import time is not validation time)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "interactions.csv"
        items = make_csv(path, args.rows)
        read_s, frame = best_of(args.repeat, lambda: pl.read_csv(path, infer_schema=False))
        settings = ContractSettings()
        validate_tables({"interactions": frame.head(1000), "items": items}, settings)  # warm-up
        validate_s, result = best_of(args.repeat, lambda: validate_tables({"interactions": frame, "items": items},
                                                                           settings))
        gx_settings = ContractSettings(engine="great_expectations")
        gx_s, _ = best_of(1, lambda: validate_tables({"interactions": frame, "items": items}, gx_settings))
    assert all(r.success for r in result.reports)
    figures = {"rows": args.rows, "read_seconds": round(read_s, 3), "validate_seconds": round(validate_s, 3),
               "ratio": round(validate_s / read_s, 2), "great_expectations_only_seconds": round(gx_s, 3)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "validate_speed.json").write_text(json.dumps(figures, indent=2))
    print("| rows | polars read (s) | validate (s) | validate / read | great-expectations engine only (s) |")
    print("|---|---|---|---|---|")
    print(f"| {args.rows:,} | {read_s:.3f} | {validate_s:.3f} | {validate_s / read_s:.1f}x | {gx_s:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
