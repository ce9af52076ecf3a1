"""``pretrain-source``: train and register the source models of every domain but the target."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.config import PretrainConfig
from tasks import tracking
from tasks.data import load_tables, split_target, validate_dataset
from tasks.runtime import checkpoint_root
from tasks.setup import prepare_tracking
from tasks.sources import gather_sources


@flow(name="pretrain-source")
def pretrain_source_flow(config: PretrainConfig) -> dict[str, Any]:
    """Load → validate → split the excluded target (for time-safe cutoffs) → find or train each source.

    Without ``exclude_domain`` the sources serve targets in another dataset (no users shared, nothing hidden).
    """
    uri, _ = prepare_tracking(config.tracking, tracking.SOURCES_EXPERIMENT)
    target = config.exclude_domain
    raw = load_tables(config.data)
    dataset, data_fingerprint = validate_dataset(raw, config.data, target, None)
    cutoffs = split_target(dataset, target, config.split).cutoffs if target is not None else None
    sources = gather_sources(dataset, data_fingerprint, target or "", cutoffs, config.split.test_ratio,
                             config.sources, uri, same_dataset=target is not None, force=config.force,
                             checkpoints=checkpoint_root(config.tracking.checkpoint_dir, config.tracking.resume))
    return {
        "target_domain": config.exclude_domain,
        "sources": [
            {"name": s.spec.name, "registered_model": s.spec.registered_name, "version": s.version,
             "trained_now": s.trained_now, "seconds": round(s.seconds, 2), "domains": s.spec.domains}
            for s in sources.values()
        ],
        "tracking_uri": uri,
    }

