"""Peak memory of a command and everything it starts (Prefect's temporary API server is a child process).

Usage:

    python bench/peak_rss.py [--name demo] [--out bench/results] -- transferrec demo

Samples the resident set size of the process tree every 0.1 s (psutil) and prints the peak of the sum over
the tree, the peak of the largest single process, and the wall time; writes ``peak_rss_<name>.json``. The
sum over-counts pages shared between processes (libraries mapped twice), so it is an upper bound.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(command: list[str], *, interval: float = 0.1) -> dict[str, float]:
    import psutil

    start = time.perf_counter()
    # stderr to a file: a pipe nobody reads while the command runs would fill (64 KB) with its progress lines
    # and stop it
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - read back below
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, text=True)
    root = psutil.Process(process.pid)
    peak_tree = peak_single = 0
    processes = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        sizes = []
        for p in tree:
            try:
                sizes.append(p.memory_info().rss)
            except psutil.NoSuchProcess:
                continue
        if sizes:
            peak_tree, peak_single = max(peak_tree, sum(sizes)), max(peak_single, max(sizes))
            processes = max(processes, len(sizes))
        time.sleep(interval)
    log.seek(0)
    stderr = log.read()
    if process.wait() != 0:
        raise SystemExit(f"{command} failed with {process.returncode}:\n{stderr[-3000:]}")
    return {"wall_s": time.perf_counter() - start, "peak_rss_tree_mb": peak_tree / 2**20,
            "peak_rss_single_mb": peak_single / 2**20, "max_processes": processes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", default="command")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    result = {"command": command, **measure(command)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"peak_rss_{args.name}.json").write_text(json.dumps(result, indent=2))
    print(f"{' '.join(command)}: wall {result['wall_s']:.1f} s, peak RSS {result['peak_rss_tree_mb']:.0f} MB "
          f"(process tree, {result['max_processes']} processes at most), largest single process "
          f"{result['peak_rss_single_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
