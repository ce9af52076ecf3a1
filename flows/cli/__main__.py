"""``python -m flows.cli``."""

from flows.cli import run

run()
