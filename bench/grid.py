"""The onboarding grid the quality and selection benchmarks share: every (genre, fraction, seed) through
the real onboard-domain flow, against one MLflow store under ``out`` (registry off, sources reused)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def grid_arguments(parser: Any, *, genres: str, seeds: str, out: Path) -> None:
    """The options every grid benchmark takes: which onboardings, where the data and the results are."""
    parser.add_argument("--genres", default=genres)
    parser.add_argument("--fractions", default="0.1,0.3")
    parser.add_argument("--seeds", default=seeds)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=out)


def onboard_grid(genres: str, fractions: str, seeds: str, *, out: Path, data_dir: Path | None,
                 top_k: int = 1, finetune: dict[str, Any] | None = None
                 ) -> Iterator[tuple[str, float, int, dict[str, Any], float]]:
    """Yield ``(genre, fraction, seed, summary, seconds)`` per onboarding, in order; progress on stderr.
    ``finetune``: fields of :class:`~models.config.FineTuneConfig` to change (family, mode, ...)."""
    from flows.config import OnboardConfig
    from flows.onboard import onboard_domain_flow
    from models.config import DataConfig, FineTuneConfig, SelectionConfig, SplitConfig, TrackingConfig

    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    for genre in genres.split(","):
        for fraction in map(float, fractions.split(",")):
            for seed in map(int, seeds.split(",")):
                started = time.perf_counter()
                summary = onboard_domain_flow(OnboardConfig(
                    target_domain=genre, data=DataConfig(data_dir=data_dir),
                    split=SplitConfig(fraction=fraction, seed=seed), selection=SelectionConfig(top_k=top_k),
                    finetune=FineTuneConfig(**(finetune or {})),
                    tracking=TrackingConfig(tracking_uri=uri, registry=False),
                ))
                seconds = round(time.perf_counter() - started, 1)
                print(json.dumps({"genre": genre, "fraction": fraction, "seed": seed, "seconds": seconds}),
                      file=sys.stderr, flush=True)
                yield genre, fraction, seed, summary, seconds
