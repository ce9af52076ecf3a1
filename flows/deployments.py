"""The deployments of transferrec, for `transferrec serve` (``flow.serve``, no work pool needed) and the
same three in ``prefect.yaml`` (for teams with workers):

* ``onboard-domain/onboard``: on demand, parameterised (``transferrec trigger onboard ...``);
* ``refresh-domain/nightly``: every night (``REFRESH_CRON``), and whenever the data team announces new data
  (``transferrec notify data-landed``: event :data:`DATA_LANDED`);
* ``pretrain-source/weekly``: retrains the source models of the served domain every week (``PRETRAIN_CRON``).
"""

from __future__ import annotations

from typing import Any

from flows.config import OnboardConfig, PretrainConfig

ONBOARD, REFRESH, PRETRAIN = "onboard-domain/onboard", "refresh-domain/nightly", "pretrain-source/weekly"
REFRESH_CRON = "0 2 * * *"
PRETRAIN_CRON = "0 3 * * 0"
DATA_LANDED = "transferrec.data.landed"
DOMAIN_RESOURCE = "transferrec.domain"


def data_landed_parameters(config: OnboardConfig) -> dict[str, Any]:
    """The refresh run's parameters for a data-landed event: ``config`` with the event's domain and path
    (Jinja templates filled by Prefect from the event payload)."""
    payload = config.model_dump(mode="json")
    payload["target_domain"] = "{{ event.payload.domain }}"
    payload["data"]["path"] = "{{ event.payload.path }}"
    return {"config": payload}


def build_deployments(config: OnboardConfig, *, schedules: bool = True) -> list[Any]:
    """The three deployments for ``config`` (its domain and data are the defaults of every run)."""
    from prefect.events import DeploymentEventTrigger

    from flows.onboard import onboard_domain_flow
    from flows.pretrain import pretrain_source_flow
    from flows.refresh import refresh_domain_flow

    pretrain = PretrainConfig(exclude_domain=config.target_domain, data=config.data, split=config.split,
                              sources=config.sources, tracking=config.tracking)
    landed = DeploymentEventTrigger(
        expect={DATA_LANDED}, match={"prefect.resource.id": f"{DOMAIN_RESOURCE}.*"},
        parameters=data_landed_parameters(config))
    return [
        onboard_domain_flow.to_deployment(name=ONBOARD.split("/")[1], tags=["transferrec"],
                                          parameters={"config": config.model_dump(mode="json")}),
        refresh_domain_flow.to_deployment(name=REFRESH.split("/")[1], cron=REFRESH_CRON if schedules else None,
                                          parameters={"config": config.model_dump(mode="json")}, triggers=[landed],
                                          tags=["transferrec"]),
        pretrain_source_flow.to_deployment(name=PRETRAIN.split("/")[1], cron=PRETRAIN_CRON if schedules else None,
                                           parameters={"config": pretrain.model_dump(mode="json")},
                                           tags=["transferrec"]),
    ]


def set_path(payload: dict[str, Any], dotted: str, value: Any) -> None:
    """``payload["a"]["b"] = value`` for ``dotted = "a.b"`` (creating dicts on the way)."""
    *parents, leaf = dotted.split(".")
    node = payload
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value


def trigger_parameters(config: OnboardConfig, overrides: list[str]) -> dict[str, Any]:
    """``{"config": ...}`` for a triggered run: ``config`` with ``key=value`` overrides (dotted keys into the
    config, JSON values; a value that is not JSON stays a string), validated before anything is sent.

    Raises:
        ValueError: for an override without ``=`` or one the config refuses.
    """
    import json

    payload = config.model_dump(mode="json")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--param {item!r}: expected key=value, e.g. split.fraction=0.3")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        set_path(payload, key.strip(), value)
    return {"config": OnboardConfig.model_validate(payload).model_dump(mode="json")}
