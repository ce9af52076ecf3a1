"""The onboarding grid the quality and selection benchmarks share: every (genre, fraction, seed) through
the real onboard-domain flow, against one MLflow store under ``out`` (registry off, sources reused)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def grid_arguments(parser: Any, *, genres: str, seeds: str, out: Path) -> None:
    """The options every grid benchmark takes: which onboardings, where the data and the results are."""
    parser.add_argument("--genres", default=genres)
    parser.add_argument("--fractions", default="0.1,0.3")
    parser.add_argument("--seeds", default=seeds)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path, default=out)


def cells_of(genres: str, fractions: str, seeds: str) -> list[tuple[str, float, int]]:
    """Every (genre, fraction, seed) of the comma-separated lists."""
    return [(g, f, s) for g in genres.split(",") for f in map(float, fractions.split(","))
            for s in map(int, seeds.split(","))]


def onboard_grid(cells: Iterable[tuple[str, float, int]], *, out: Path, data_dir: Path | None,
                 top_k: int = 1, finetune: dict[str, Any] | None = None, dataset: str = "movielens-1m",
                 source_dataset: str | None = None) -> Iterator[tuple[str, float, int, Any, float]]:
    """Yield ``(genre, fraction, seed, summary, seconds)`` per onboarding of ``cells``, in order; progress on
    stderr. ``finetune``: fields of :class:`~models.config.FineTuneConfig` to change (family, mode, ...);
    ``source_dataset``: take the sources from that dataset (trained once for any target of ``dataset``)."""
    from flows.config import OnboardConfig
    from flows.onboard import onboard_domain_flow
    from models.config import (
        DataConfig,
        FineTuneConfig,
        SelectionConfig,
        SourcesConfig,
        SplitConfig,
        TrackingConfig,
    )

    out.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    sources = SourcesConfig(data=DataConfig(dataset=source_dataset, data_dir=data_dir) if source_dataset else None)
    for genre, fraction, seed in cells:
        started = time.perf_counter()
        summary = onboard_domain_flow(OnboardConfig(
            target_domain=genre, data=DataConfig(dataset=dataset, data_dir=data_dir),
            split=SplitConfig(fraction=fraction, seed=seed), selection=SelectionConfig(top_k=top_k),
            sources=sources, finetune=FineTuneConfig(**(finetune or {})),
            tracking=TrackingConfig(tracking_uri=uri, registry=False),
        ))
        seconds = round(time.perf_counter() - started, 1)
        print(json.dumps({"genre": genre, "fraction": fraction, "seed": seed, "seconds": seconds}),
              file=sys.stderr, flush=True)
        yield genre, fraction, seed, summary, seconds
