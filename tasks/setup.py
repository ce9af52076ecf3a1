"""Task that prepares the MLflow store before anything else writes to it."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.config import TrackingConfig
from tasks import tracking


@task(name="prepare-tracking", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[1, 3])
def prepare_tracking(config: TrackingConfig, experiment: str) -> tuple[str, str]:
    """Resolve the tracking URI, create the store's schema and the experiment once; return (uri, id)."""
    uri = config.tracking_uri or tracking.default_tracking_uri()
    return uri, tracking.ensure_experiment(uri, experiment)
