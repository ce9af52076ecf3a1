"""The ``transferrec`` console script: the command goes to the running daemon when there is one
(:func:`flows.daemon.forward`, before anything heavy is imported), else runs in this process
(:func:`flows.cli.run`)."""

from __future__ import annotations

import os
import sys


def run() -> None:
    """The ``transferrec`` console script."""
    from flows.daemon import forward

    code = forward(sys.argv[1:])
    if code is None:
        from flows.cli import run as run_in_this_process

        run_in_this_process()  # ends the process
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
