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


# --------------------------------------------------------------------------- each function's view


def _sections_of(model):
    from reflex_core.config_base import StageConfig

    return set(model.model_fields) - set(StageConfig.model_fields)


def test_sections_list_is_every_reaction_section_of_the_whole_config():
    from reflex_core.config import ReflexConfig
    from reflex_core.config_base import SECTIONS

    assert set(SECTIONS) == _sections_of(ReflexConfig)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_each_function_validates_only_its_sections_and_reads_the_same_values(stage, tmp_path):
    """The JSON a function ships with, loaded with each reaction's model: same values as the whole config."""
    from reflex_core.config_base import load_stage_config
    from reflex_core.invalidation_config import InvalidationStageConfig
    from reflex_core.promotion_config import PromotionStageConfig
    from reflex_core.scaling_config import ScalingStageConfig

    whole = load_config_file(ROOT / "config" / f"{stage}.yaml")
    shipped = tmp_path / "reflex_config.json"
    shipped.write_text(whole.model_dump_json())
    for model, sections in ((ScalingStageConfig, {"scaling"}), (PromotionStageConfig, {"scaling", "promotions"}),
                            (InvalidationStageConfig, {"invalidation"})):
        view = load_stage_config(shipped, model)
        assert type(view) is model and _sections_of(model) == sections
        assert view.model_dump() == whole.model_dump(include=set(model.model_fields))


def test_a_function_still_rejects_bad_values_in_its_own_section_and_unknown_keys(tmp_path):
    from reflex_core.config_base import load_stage_config
    from reflex_core.scaling_config import ScalingStageConfig

    data = json.loads(load_config_file(ROOT / "config" / "dev.yaml").model_dump_json())
    data["scaling"][0]["bounds"]["min"] = -1
    data["invalidation"] = {"caches": "not even a list"}  # another reaction's section: not the scaler's to judge
    path = tmp_path / "reflex_config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=r"scaling\.0\.bounds\.min"):
        load_stage_config(path, ScalingStageConfig)
    data["scaling"][0]["bounds"]["min"] = 1
    data["typo_section"] = {}
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="typo_section"):
        load_stage_config(path, ScalingStageConfig)


def test_promotion_view_keeps_the_cross_check_against_scaling_policies(tmp_path):
    from reflex_core.config_base import load_stage_config
    from reflex_core.promotion_config import PromotionStageConfig

    data = json.loads(load_config_file(ROOT / "config" / "dev.yaml").model_dump_json())
    pairs = [p for p in data["promotions"] if p["freeze_scale_in"].get("blue") or p["freeze_scale_in"].get("green")]
    if not pairs:
        pytest.skip("dev.yaml has no scale-in freeze to break")
    data["scaling"] = []
    path = tmp_path / "reflex_config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="freeze_scale_in"):
        load_stage_config(path, PromotionStageConfig)


@pytest.mark.parametrize(("function", "sections"), [
    ("scaler", {"scaling_config"}),
    ("promoter", {"scaling_config", "promotion_config"}),
    ("invalidator", {"invalidation_config"}),
    ("cdn_batcher", {"invalidation_config"}),
    ("cache_health", {"invalidation_config"}),
    ("advisor", {"database_config"}),
    ("drills", {"recovery_config"}),
])
def test_a_handler_imports_only_the_config_models_of_its_sections(function, sections):
    """Cold start: no handler imports the whole config or another reaction's section (docs/architecture.md)."""
    import subprocess
    import sys

    code = (f"import sys; import {function}.handler; "
            "print(' '.join(sorted(m.split('.')[1] for m in sys.modules if m.startswith('reflex_core.') "
            "and m.endswith('config'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "functions", capture_output=True, text=True,
                         check=True, env={"PATH": "", "AWS_DEFAULT_REGION": "eu-west-1",
                                          "POWERTOOLS_TRACE_DISABLED": "true"})
    assert set(out.stdout.split()) == sections
