"""The config model: the same validation at synth time and run time, errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reflex_core.config import ConfigError, json_schema, load_config_file, parse_config

ROOT = Path(__file__).resolve().parents[2]


def base() -> dict:
    return {
        "stage": "test",
        "notify": {"topic_name": "reflex-test"},
        "scaling": [{
            "name": "api",
            "target": {"kind": "ecs-service", "cluster": "web", "service": "api"},
            "bounds": {"min": 2, "max": 10, "max_step": 4},
            "scale_out": {"alarms": {"names": ["api-latency"]}},
        }],
    }


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_shipped_configs_are_valid(stage):
    cfg = load_config_file(ROOT / "config" / f"{stage}.yaml")
    assert cfg.stage == stage
    assert {p.target.kind for p in cfg.scaling} == {"ecs-service", "asg", "aurora-replicas"}


def test_error_names_file_and_field(tmp_path):
    bad = base()
    bad["scaling"][0]["bounds"] = {"min": 5, "max": 3}
    path = tmp_path / "broken.yaml"
    path.write_text(json.dumps(bad))  # JSON is valid YAML
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in str(err.value)
    assert "scaling.0.bounds" in str(err.value)
    assert "min (5) is greater than max (3)" in str(err.value)


def test_unknown_keys_are_rejected():
    bad = base()
    bad["scaling"][0]["bounds"]["maximum"] = 3
    with pytest.raises(ConfigError, match=r"scaling\.0\.bounds\.maximum: Extra inputs are not permitted"):
        parse_config(bad, "inline")


def test_unknown_target_kind_is_named():
    bad = base()
    bad["scaling"][0]["target"] = {"kind": "lambda", "name": "x"}
    with pytest.raises(ConfigError, match=r"scaling\.0\.target"):
        parse_config(bad, "inline")


def test_duplicate_targets_rejected():
    cfg = base()
    cfg["scaling"].append(dict(cfg["scaling"][0], name="api-2"))
    with pytest.raises(ConfigError, match="each target may have one scaling policy"):
        parse_config(cfg, "inline")


def test_alarm_match_needs_a_criterion():
    bad = base()
    bad["scaling"][0]["scale_out"]["alarms"] = {}
    with pytest.raises(ConfigError, match="give at least one of names, prefixes or tags"):
        parse_config(bad, "inline")


def test_steps_must_start_at_zero_and_be_sorted():
    bad = base()
    bad["scaling"][0]["scale_out"]["steps"] = [{"breach_from": 0.5, "add_percent": 10}]
    with pytest.raises(ConfigError, match="first step must start at breach_from 0"):
        parse_config(bad, "inline")
    bad["scaling"][0]["scale_out"]["steps"] = [{"breach_from": 0, "add_percent": 10},
                                               {"breach_from": 1, "add_percent": 20},
                                               {"breach_from": 0.5, "add_percent": 30}]
    with pytest.raises(ConfigError, match="sorted"):
        parse_config(bad, "inline")


def test_prewarm_cannot_exceed_max_and_cron_has_six_fields():
    bad = base()
    bad["scaling"][0]["prewarm"] = [{"name": "am", "cron": "0 8 * * ?", "min": 3, "for_minutes": 60}]
    with pytest.raises(ConfigError, match="cron needs 6 fields"):
        parse_config(bad, "inline")
    bad["scaling"][0]["prewarm"] = [{"name": "am", "cron": "0 8 ? * MON-FRI *", "min": 30, "for_minutes": 60}]
    with pytest.raises(ConfigError, match=r"above bounds\.max"):
        parse_config(bad, "inline")


def test_custom_events_cannot_impersonate_aws():
    bad = base()
    bad["scaling"][0]["on_events"] = [{"source": "aws.ecs", "detail_type": "X"}]
    with pytest.raises(ConfigError, match=r"custom events cannot use an 'aws\.' source"):
        parse_config(bad, "inline")


def test_alarm_matching_by_name_prefix_and_tags():
    cfg = parse_config(base() | {"scaling": [dict(base()["scaling"][0], scale_out={
        "alarms": {"names": ["exact"], "prefixes": ["api-"], "tags": {"team": "web"}}})]}, "inline")
    rule = cfg.scaling[0].scale_out.alarms
    assert rule.matches("exact", None)
    assert rule.matches("api-latency", None)
    assert not rule.matches("db-latency", None)
    assert rule.matches("db-latency", {"team": "web", "other": "x"})
    assert not rule.matches("db-latency", {"team": "data"})


def test_exported_schema_matches_the_model():
    exported = json.loads((ROOT / "docs" / "config.schema.json").read_text())
    assert exported == json_schema(), "docs/config.schema.json is stale: run `make schema`"
