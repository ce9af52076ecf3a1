"""Every MLflow call and every MLflow name of transferrec lives in this package.

* :mod:`tasks.tracking.names`: experiment, registered-model and run names, aliases;
* :mod:`tasks.tracking.runs`: the store, experiments, runs and what is logged to them (:class:`TrackingContext`);
* :mod:`tasks.tracking.background`: the writes a flow does not wait for, on one background thread;
* :mod:`tasks.tracking.models`: logged factor models, domain profiles, registered versions and aliases;
* :mod:`tasks.tracking.queries`: the source catalogue and recent onboardings, read back.

Callers use ``from tasks import tracking`` and ``tracking.<name>``.
"""

from tasks.tracking.background import held_writes, later
from tasks.tracking.models import (
    PROFILE_ARTIFACT,
    SIGNATURE,
    RegisteredVersion,
    alias_version,
    find_version,
    load_factor_model,
    load_profile,
    load_source,
    log_factor_model,
    log_profile,
    log_weights,
    prepare_model_logging,
    register_model,
    set_alias,
    set_version_tags,
)
from tasks.tracking.names import (
    CHALLENGER,
    CHAMPION,
    EVALUATED_MODEL_TAG,
    EVALUATED_RUN_TAG,
    MODEL_ARTIFACT,
    ONBOARD_RUN_PREFIX,
    SOURCE_PREFIX,
    SOURCES_EXPERIMENT,
    WEIGHTS_ARTIFACT,
    curve_experiment_name,
    curve_point_run_name,
    curve_run_name,
    dataset_tag,
    experiment_name,
    onboard_run_name,
    probe_run_name,
    refit_run_name,
    registered_model_name,
    source_model_name,
    source_run_name,
)
from tasks.tracking.queries import recent_onboardings, runs_table, source_catalogue
from tasks.tracking.runs import (
    LIVE_PREFIX,
    DatasetRecord,
    TrackingContext,
    client,
    close_abandoned_runs,
    closing_run,
    default_tracking_uri,
    dumps,
    end_run,
    ensure_experiment,
    flatten,
    live_curve,
    log_artifact,
    log_datasets,
    log_dict,
    log_history,
    log_metrics,
    log_params,
    log_run_data,
    log_table,
    log_text,
    logged_model_id,
    open_run,
    owner_tags,
    run_context,
    set_tags,
    sqlite_dir,
    start_run,
)

__all__ = [
    "CHALLENGER", "CHAMPION", "EVALUATED_MODEL_TAG", "EVALUATED_RUN_TAG",
    "LIVE_PREFIX", "MODEL_ARTIFACT", "ONBOARD_RUN_PREFIX", "PROFILE_ARTIFACT", "SIGNATURE",
    "SOURCE_PREFIX", "SOURCES_EXPERIMENT", "WEIGHTS_ARTIFACT", "DatasetRecord", "RegisteredVersion", "TrackingContext",
    "alias_version",
    "client",
    "close_abandoned_runs", "closing_run", "held_writes", "later", "owner_tags",
    "curve_experiment_name", "curve_point_run_name", "curve_run_name", "dataset_tag", "default_tracking_uri",
    "dumps", "end_run",
    "ensure_experiment", "experiment_name", "find_version", "flatten", "live_curve", "load_factor_model",
    "load_profile", "load_source",
    "log_artifact", "log_datasets", "log_dict", "log_factor_model", "log_history", "log_metrics", "log_params",
    "log_profile", "log_run_data", "log_weights", "prepare_model_logging",
    "log_table", "log_text", "logged_model_id", "onboard_run_name", "open_run", "probe_run_name",
    "recent_onboardings", "refit_run_name", "register_model", "registered_model_name", "run_context", "runs_table",
    "set_alias",
    "set_tags", "set_version_tags", "source_catalogue", "source_model_name", "source_run_name", "sqlite_dir",
    "start_run",
]
