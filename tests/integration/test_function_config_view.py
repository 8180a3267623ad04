"""In Lambda, a function builds its runtime from its environment and the config file it ships with, validating
only the common part and its own sections (config_base.load_stage_config). These tests take that path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def shipped(tmp_path, dev_config, monkeypatch):
    """A function's environment as the CDK constructs set it, with the config file as the bundler writes it."""
    from moto import mock_aws

    from reflex_core.runtime import install_runtime
    from reflex_core.settings import RuntimeSettings

    path = tmp_path / "reflex_config.json"
    path.write_text(dev_config.model_dump_json())
    settings = RuntimeSettings(stage="dev", reaction="scaler", config_file=str(path), audit_table="a",
                               state_table="s", idempotency_table="i", kill_switch_prefix="/reflex/dev/kill-switch")
    for name, value in settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    install_runtime(None)
    with mock_aws():
        yield path
    install_runtime(None)


def test_scaler_runtime_is_built_from_the_file_with_the_scaling_view(shipped, dev_config):
    from reflex_core.runtime import current_runtime
    from reflex_core.scaling_config import ScalingStageConfig

    rt = current_runtime(ScalingStageConfig)
    assert type(rt.config) is ScalingStageConfig
    assert rt.config.scaling == dev_config.scaling
    assert not hasattr(rt.config, "invalidation") and not hasattr(rt.config, "promotions")
    assert current_runtime(ScalingStageConfig) is rt  # built once per process


def test_asking_an_installed_runtime_for_another_view_is_an_error(shipped):
    from reflex_core.invalidation_config import InvalidationStageConfig
    from reflex_core.runtime import current_runtime
    from reflex_core.scaling_config import ScalingStageConfig

    current_runtime(ScalingStageConfig)
    with pytest.raises(TypeError, match="not a InvalidationStageConfig"):
        current_runtime(InvalidationStageConfig)


def test_a_bad_value_in_the_functions_own_section_stops_the_cold_start_naming_the_field(shipped):
    from reflex_core.config_base import ConfigError
    from reflex_core.runtime import current_runtime
    from reflex_core.scaling_config import ScalingStageConfig

    data = json.loads(shipped.read_text())
    data["scaling"][0]["bounds"]["max"] = 0
    shipped.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"reflex_config\.json: invalid Reflex config\n  scaling\.0\.bounds\.max"):
        current_runtime(ScalingStageConfig)


def test_the_scaler_handler_runs_on_its_view(shipped, lambda_context):
    """A console payload through the real handler, with the runtime built the way Lambda builds it."""
    from scaler.handler import lambda_handler

    result = lambda_handler({"command": "scale_out", "policy": "nope", "reason": "check the view",
                             "operator": "sre"}, lambda_context)
    assert result["status"] == "rejected"
    assert any("no scaling policy" in e or "nope" in e for e in result["errors"]), result
