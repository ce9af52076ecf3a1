"""Start-up of the commands that do not train: a fresh `transferrec` process, wall time, median of --repeat.

Usage:  python bench/cli_startup.py [--rows 1000] [--repeat 5]

Writes a seeded CSV of interactions (bench/validate_speed.py's generator), then times as fresh processes:
  polars read        `python -c "import polars; polars.read_csv(FILE)"`: the floor of any tool that reads the file
  validate --table   `transferrec validate FILE --table interactions` (types and the interactions suite)
  --help             `transferrec --help`
  print-config       `transferrec onboard --target-domain x --data DIR --print-config`
Goal: validate on 1,000 rows within 2 s on 2 cores. Prints a table and writes bench/results/cli_startup.json.
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
BIN = Path(sys.executable).parent


def wall(argv: list[str], repeat: int) -> float:
    """Median wall seconds of ``argv`` as a fresh process (it must exit 0)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        assert done.returncode == 0, (argv, done.stderr[-2000:])
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from validate_speed import make_csv

    tool = str(BIN / "transferrec")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "interactions.csv"
        make_csv(path, args.rows)
        figures = {
            "polars read": wall([sys.executable, "-c", f"import polars; polars.read_csv({str(path)!r})"], args.repeat),
            "validate --table": wall([tool, "validate", str(path), "--table", "interactions"], args.repeat),
            "--help": wall([tool, "--help"], args.repeat),
            "print-config": wall([tool, "onboard", "--target-domain", "x", "--data", tmp, "--print-config"],
                                 args.repeat),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cli_startup.json").write_text(json.dumps({"rows": args.rows, "seconds": figures}, indent=2))
    print(f"| fresh process ({args.rows:,} rows, median of {args.repeat}) | wall (s) |")
    print("|---|---|")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
