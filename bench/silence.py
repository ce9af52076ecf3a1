"""The longest silence of a command: how long it ran without printing a line (stdout or stderr).

Usage: ``python bench/silence.py -- .venv/bin/transferrec demo``. Prints the total wall time, the longest gap
between two lines (or from the start to the first line), the lines around it, and the three longest gaps.
Goal for `transferrec demo`: never silent for more than 30 s.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[args.index("--") + 1:] if "--" in args else args
    if not command:
        raise SystemExit(__doc__)
    started = time.perf_counter()
    lines: list[tuple[float, str]] = [(0.0, "(start)")]
    lock = threading.Lock()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)

    def read(stream) -> None:
        for line in stream:
            with lock:
                lines.append((time.perf_counter() - started, line.rstrip()[:160]))

    readers = [threading.Thread(target=read, args=(s,)) for s in (process.stdout, process.stderr)]
    for reader in readers:
        reader.start()
    code = process.wait()
    for reader in readers:
        reader.join()
    wall = time.perf_counter() - started
    lines.append((wall, "(end)"))
    lines.sort(key=lambda entry: entry[0])
    gaps = sorted(((lines[i + 1][0] - lines[i][0], i) for i in range(len(lines) - 1)), reverse=True)
    gap, at = gaps[0]
    print(f"{' '.join(command)}: exit {code}, {wall:.1f} s, {len(lines) - 2} lines\n"
          f"longest silence: {gap:.1f} s, after {lines[at][0]:.1f} s\n  before: {lines[at][1]}\n"
          f"  after:  {lines[at + 1][1]}\nthree longest: " + ", ".join(f"{g:.1f} s" for g, _ in gaps[:3]))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
