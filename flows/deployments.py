"""The deployments of transferrec, defined once (:func:`deployment_specs`) and used twice: served by
``transferrec serve`` (:func:`build_deployments`, ``flow.serve``, no work pool needed) and written as
``prefect.yaml`` for teams with workers (:func:`prefect_yaml`, ``transferrec deployments --write prefect.yaml``):

* ``onboard-domain/onboard``: on demand, parameterised (``transferrec trigger onboard ...``);
* ``refresh-domain/nightly``: every night (``REFRESH_CRON``), and whenever the data team announces new data
  (``transferrec notify data-landed``: event :data:`DATA_LANDED`);
* ``pretrain-source/weekly``: retrains the source models of the served domain every week (``PRETRAIN_CRON``).

A data-landed event carries the folder (and column map) of the new data; the refresh run's config is the served
config with that data location, resolved by the same rules as ``transferrec onboard --data DIR --columns MAP``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.config import OnboardConfig

ONBOARD, REFRESH, PRETRAIN = "onboard-domain/onboard", "refresh-domain/nightly", "pretrain-source/weekly"
REFRESH_CRON = "0 2 * * *"
PRETRAIN_CRON = "0 3 * * 0"
TIMEZONE = "UTC"
DATA_LANDED = "transferrec.data.landed"
DOMAIN_RESOURCE = "transferrec.domain"
WORK_POOL = "transferrec"
TAGS = ("transferrec",)
#: The data fields a data-landed event sets (the rest of the served config's data settings stay).
LANDED_DATA_FIELDS = ("path", "url", "dataset", "columns")


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment: which flow, when it runs, with which parameters."""

    deployment: str  # "<flow name>/<deployment name>"
    entrypoint: str  # "flows/onboard.py:onboard_domain_flow"
    description: str
    parameters: dict[str, Any]
    cron: str | None = None
    triggers: list[dict[str, Any]] = field(default_factory=list)  # expect, match, parameters

    @property
    def name(self) -> str:
        return self.deployment.split("/")[1]


def domain_resource(domain: str) -> str:
    """The Prefect resource id of a domain's events."""
    from models.selection.sources import slug

    return f"{DOMAIN_RESOURCE}.{slug(domain)}"


def data_landed_payload(domain: str, path: str | Path, columns: Path | None = None) -> dict[str, str]:
    """The payload of a data-landed event: the domain, the data's location (local folders made absolute, as
    the worker must find them) and the column map's path ("" for none)."""
    from models.data.datasets import is_object_store

    location = str(path) if is_object_store(str(path)) else str(Path(path).expanduser().resolve())
    return {"domain": domain, "path": location,
            "columns": str(columns.expanduser().resolve()) if columns is not None else ""}


def _parameters(config: OnboardConfig | Any) -> dict[str, Any]:
    """A flow's parameters: its config's fields that differ from the defaults (the flow fills in the rest)."""
    return {"config": config.model_dump(mode="json", exclude_defaults=True)}


def data_landed_parameters(config: OnboardConfig) -> dict[str, Any]:
    """The refresh run's parameters for a data-landed event: ``config`` with the event's domain, and its data at
    the event's location with the event's column map (Jinja templates filled by Prefect from the payload)."""
    payload = _parameters(config)["config"]
    data = {k: v for k, v in payload.get("data", {}).items() if k not in LANDED_DATA_FIELDS}
    payload["target_domain"] = "{{ event.payload.domain }}"
    payload["data"] = {**data, "path": "{{ event.payload.path }}", "columns": "{{ event.payload.columns }}"}
    return {"config": payload}


def fill_event_templates(parameters: Any, payload: dict[str, str]) -> Any:
    """``parameters`` with each ``{{ event.payload.KEY }}`` replaced by the payload's value ("" when missing), as
    Prefect's trigger renders them: what a data-landed event's run receives, for previews and tests."""
    if isinstance(parameters, dict):
        return {k: fill_event_templates(v, payload) for k, v in parameters.items()}
    if isinstance(parameters, str) and parameters.startswith("{{ event.payload."):
        return payload.get(parameters.removeprefix("{{ event.payload.").removesuffix(" }}"), "")
    return parameters


def deployment_specs(config: OnboardConfig, *, schedules: bool = True) -> list[DeploymentSpec]:
    """The three deployments for ``config`` (its domain and data are the defaults of every run)."""
    landed = {"expect": [DATA_LANDED], "match": {"prefect.resource.id": f"{DOMAIN_RESOURCE}.*"},
              "parameters": data_landed_parameters(config)}
    return [
        DeploymentSpec(ONBOARD, "flows/onboard.py:onboard_domain_flow",
                       "onboard a new domain on demand (the data team triggers it with parameters)",
                       _parameters(config)),
        DeploymentSpec(REFRESH, "flows/refresh.py:refresh_domain_flow",
                       "re-onboard on the latest data every night and when new data lands; champion only through "
                       "the gate", _parameters(config), REFRESH_CRON if schedules else None, [landed]),
        DeploymentSpec(PRETRAIN, "flows/pretrain.py:pretrain_source_flow",
                       "retrain the source models of the domain's other domains every week",
                       _parameters(config.pretrain()), PRETRAIN_CRON if schedules else None),
    ]


def build_deployments(config: OnboardConfig, *, schedules: bool = True) -> list[Any]:
    """The deployments of :func:`deployment_specs` as Prefect runner deployments (for ``serve``)."""
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.events import DeploymentEventTrigger

    from flows.onboard import onboard_domain_flow
    from flows.pretrain import pretrain_source_flow
    from flows.refresh import refresh_domain_flow

    flows = {ONBOARD: onboard_domain_flow, REFRESH: refresh_domain_flow, PRETRAIN: pretrain_source_flow}
    return [flows[spec.deployment].to_deployment(
        name=spec.name, description=spec.description, tags=list(TAGS), parameters=spec.parameters,
        schedules=[CronSchedule(cron=spec.cron, timezone=TIMEZONE)] if spec.cron else None,
        triggers=[DeploymentEventTrigger(expect=set(t["expect"]), match=t["match"], parameters=t["parameters"])
                  for t in spec.triggers])
        for spec in deployment_specs(config, schedules=schedules)]


HEADER = """\
# Generated by `transferrec deployments --write prefect.yaml [onboard options]`: the deployments that
# `transferrec serve` serves (flows/deployments.py). Regenerate it rather than editing it.
#   prefect work-pool create transferrec --type process
#   prefect --no-prompt deploy --all
#   prefect worker start --pool transferrec
# Each run's parameter is one OnboardConfig / PretrainConfig (flows/config.py); fields left out keep their
# defaults. Override per run, e.g.:
#   prefect deployment run onboard-domain/onboard --params '{"config": {"target_domain": "Crime"}}'
"""


def prefect_yaml(config: OnboardConfig) -> str:
    """``prefect.yaml`` of the deployments of :func:`deployment_specs`."""
    import yaml

    deployments = []
    for spec in deployment_specs(config):
        entry: dict[str, Any] = {"name": spec.name, "entrypoint": spec.entrypoint, "description": spec.description,
                                 "tags": list(TAGS), "work_pool": {"name": WORK_POOL}, "parameters": spec.parameters}
        if spec.cron:
            entry["schedules"] = [{"cron": spec.cron, "timezone": TIMEZONE}]
        if spec.triggers:
            entry["triggers"] = [{"type": "event", "enabled": True, **t} for t in spec.triggers]
        deployments.append(entry)
    body = {"name": "transferrec",
            "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $TRANSFERREC_HOME }}"}}],
            "deployments": deployments}
    return HEADER + yaml.safe_dump(body, sort_keys=False, width=120)
