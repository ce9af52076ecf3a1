"""Deployment parameters: a triggered run's overrides are validated before anything is sent; the data-landed
trigger templates the domain and the data's location and map, nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import build_parser, resolve_config
from flows.config import OnboardConfig
from flows.deployments import data_landed_parameters, data_landed_payload


def triggered(*argv: str) -> OnboardConfig:
    return resolve_config(build_parser().parse_args(["trigger", "onboard", "--target-domain", "Horror", *argv]))


def test_overrides_reach_the_config_as_typed_values():
    config = triggered("--set", "split.fraction=0.3", "--set", "finetune.mode=full", "--param",
                       "sources.top_single=1", "--set", "data.path=/data/new")
    assert config.split.fraction == 0.3 and config.finetune.mode == "full"
    assert config.sources.top_single == 1 and config.data.path == Path("/data/new")
    assert OnboardConfig.model_validate(config.model_dump(mode="json")) == config  # round-trips as parameters


def test_bad_overrides_fail_before_anything_is_sent():
    with pytest.raises(ValueError, match="expected key=value"):
        triggered("--set", "split.fraction")
    with pytest.raises(ValueError, match="split.fraction: Input should be less than or equal to 1"):
        triggered("--set", "split.fraction=1.5")
    with pytest.raises(ValueError, match="no field 'typo'"):
        triggered("--set", "split.typo=1")


def test_the_data_landed_trigger_templates_domain_path_and_map_only():
    served = OnboardConfig(target_domain="Horror", split={"seed": 3}, data={"rating_max": 10})
    params = data_landed_parameters(served)["config"]
    assert params["target_domain"] == "{{ event.payload.domain }}"
    assert params["data"] == {"rating_max": 10, "path": "{{ event.payload.path }}",
                              "columns": "{{ event.payload.columns }}"}
    assert params["split"] == {"seed": 3}  # the served settings stay; the dataset is named after the landed folder


def test_the_data_landed_payload_names_absolute_locations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data_landed_payload("garden", "shop") == {"domain": "garden", "path": str(tmp_path / "shop"),
                                                     "columns": ""}
    assert data_landed_payload("garden", "s3://bucket/shop", Path("map.yaml"))["path"] == "s3://bucket/shop"
