"""Deployment parameters: overrides from the data team are validated before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.config import OnboardConfig
from flows.deployments import data_landed_parameters, trigger_parameters


def test_overrides_reach_the_config_as_typed_values():
    config = OnboardConfig(target_domain="Horror")
    params = trigger_parameters(config, ["split.fraction=0.3", "finetune.mode=full", "sources.top_single=1",
                                         "data.path=/data/new"])["config"]
    assert params["split"]["fraction"] == 0.3 and params["finetune"]["mode"] == "full"
    assert params["sources"]["top_single"] == 1 and Path(params["data"]["path"]) == Path("/data/new")
    assert OnboardConfig.model_validate(params).split.fraction == 0.3  # round-trips into the flow's config


def test_bad_overrides_fail_before_anything_is_sent():
    config = OnboardConfig(target_domain="Horror")
    with pytest.raises(ValueError, match="expected key=value"):
        trigger_parameters(config, ["split.fraction"])
    with pytest.raises(ValueError, match="fraction"):
        trigger_parameters(config, ["split.fraction=1.5"])
    with pytest.raises(ValueError, match="Extra inputs"):
        trigger_parameters(config, ["split.typo=1"])


def test_the_data_landed_trigger_templates_domain_and_path_from_the_event():
    params = data_landed_parameters(OnboardConfig(target_domain="Horror"))["config"]
    assert params["target_domain"] == "{{ event.payload.domain }}"
    assert params["data"]["path"] == "{{ event.payload.path }}"
