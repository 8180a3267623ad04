"""The `monitoring:` section: SLOs and thresholds derived from them, the alarm names, bad configs refused with
the field named, and the synth-time check of the alarms policies name."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from reflex_core.config import ConfigError, load_config_file, parse_config
from reflex_core.config_base import SECTIONS, load_stage_config
from reflex_core.monitoring_config import AvailabilitySlo, MonitoringConfig
from reflex_core.scaling_config import ScalingStageConfig

ROOT = Path(__file__).resolve().parents[2]
LB_ARN = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/web/0123456789abcdef"


def base() -> dict[str, Any]:
    return {
        "stage": "test",
        "notify": {"topic_name": "reflex-test"},
        "scaling": [{
            "name": "api",
            "target": {"kind": "ecs-service", "cluster": "web", "service": "api"},
            "bounds": {"min": 2, "max": 10, "max_step": 4},
            "scale_out": {"alarms": {"names": ["reflex-test-web-latency", "reflex-test-api-cpu-high"],
                                     "prefixes": ["anything-"]}},
        }],
        "monitoring": {
            "resources": {
                "load_balancers": [{"name": "web", "arn": LB_ARN}],
                "ecs_services": [{"name": "api", "cluster": "web", "service": "api", "cpu_above_percent": 75}],
                "databases": [{"name": "shard-1", "instance_id": "shard-1", "engine": "rds", "role": "shard",
                               "cpu_above_percent": 80}],
            },
            "slos": [{"resource": "web", "latency": {"percentile": "p99", "threshold_ms": 500},
                      "error_rate": {"max_percent": 1}, "availability": {"target_percent": 99.9}}],
            "journeys": [{"name": "home", "url": "https://example.com/", "body_contains": "Shop", "service": "web"}],
        },
    }


def refused(data: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "inline")
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def with_slo(**changes: Any) -> dict[str, Any]:
    data = base()
    data["monitoring"]["slos"][0].update(changes)
    return data


# ------------------------------------------------------------------ names and derived thresholds


def test_alarm_names_are_deterministic_per_stage_resource_and_signal() -> None:
    config = parse_config(base(), "inline")
    assert config.monitoring is not None
    assert sorted(config.monitoring.alarm_names("test")) == [
        "reflex-test-api-cpu-high",
        "reflex-test-home-journey-failed",
        "reflex-test-reflex-circuit-open",
        "reflex-test-shard-1-cpu-high",
        "reflex-test-web-availability",
        "reflex-test-web-availability-burn-1h",
        "reflex-test-web-availability-burn-5m",
        "reflex-test-web-error-rate",
        "reflex-test-web-latency",
        "reflex-test-web-user-impact",
    ]
    # The same config for another stage names other alarms (stages can share an account).
    assert "reflex-prod-web-latency" in config.monitoring.alarm_names("prod")


def test_burn_rate_threshold_follows_the_sre_workbook() -> None:
    slo = AvailabilitySlo(target_percent=99.9)
    # 2 % of a 30-day budget in one hour: burn rate 14.4; budget 0.1 % -> 1.44 % errors.
    assert slo.burn_rate == pytest.approx(14.4)
    assert slo.error_ratio_threshold_percent == pytest.approx(1.44)
    week = AvailabilitySlo(target_percent=99.0, window_days=7, budget_percent=5)
    assert week.burn_rate == pytest.approx(8.4)
    assert week.error_ratio_threshold_percent == pytest.approx(8.4)


# ------------------------------------------------------------------ SLOs refused


@pytest.mark.parametrize("percentile", ["p49", "p100", "p99.999", "99", "median", "p5"])
def test_percentile_outside_p50_p9999_is_refused(percentile: str) -> None:
    refused(with_slo(latency={"percentile": percentile, "threshold_ms": 500}),
            "monitoring.slos.0.latency.percentile", "p50 to p99.99")


@pytest.mark.parametrize("percentile", ["p50", "p90", "p99", "p99.9", "p99.99"])
def test_percentiles_in_range_are_accepted(percentile: str) -> None:
    parse_config(with_slo(latency={"percentile": percentile, "threshold_ms": 500}), "inline")


@pytest.mark.parametrize("threshold", [0, -5])
def test_latency_threshold_must_be_positive(threshold: float) -> None:
    refused(with_slo(latency={"percentile": "p99", "threshold_ms": threshold}),
            "monitoring.slos.0.latency.threshold_ms", "greater than 0 ms")


def test_missing_latency_threshold_is_named() -> None:
    refused(with_slo(latency={"percentile": "p99"}), "monitoring.slos.0.latency.threshold_ms", "Field required")


def test_availability_of_100_percent_is_refused() -> None:
    refused(with_slo(availability={"target_percent": 100}),
            "monitoring.slos.0.availability.target_percent", "no error budget")


def test_unreachable_burn_rate_threshold_is_refused() -> None:
    # 90 % over 30 days: budget 10 %, x14.4 = 144 % errors, which no error ratio can reach.
    refused(with_slo(availability={"target_percent": 90}), "monitoring.slos.0.availability", "can never be reached")


def test_error_rate_below_the_availability_budget_is_contradictory() -> None:
    refused(with_slo(error_rate={"max_percent": 0.05}, availability={"target_percent": 99.9}),
            "monitoring.slos.0", "below the availability error budget")


def test_slo_without_any_objective_is_refused() -> None:
    data = base()
    data["monitoring"]["slos"] = [{"resource": "web"}]
    data["monitoring"]["journeys"] = []
    refused(data, "monitoring.slos.0", "at least one of latency, error_rate or availability")


def test_slo_for_an_unknown_resource_is_refused() -> None:
    refused(with_slo(resource="checkout"), "slos.0.resource", "'checkout' is not a resource")


def test_slo_for_a_non_user_facing_resource_is_refused() -> None:
    refused(with_slo(resource="api"), "slos.0.resource", "resources.ecs_services")


def test_two_slos_for_one_resource_are_refused() -> None:
    data = base()
    data["monitoring"]["slos"].append(copy.deepcopy(data["monitoring"]["slos"][0]))
    refused(data, "one SLO per resource", "web")


def test_evaluation_datapoints_cannot_exceed_periods() -> None:
    refused(with_slo(evaluation={"periods": 3, "datapoints": 5}), "monitoring.slos.0.evaluation",
            "datapoints (5) cannot exceed periods (3)")


# ------------------------------------------------------------------ resources and journeys refused


def test_resource_names_must_be_unique_across_kinds() -> None:
    data = base()
    data["monitoring"]["resources"]["ecs_services"][0]["name"] = "web"
    refused(data, "must be unique", "web")


def test_database_needs_exactly_one_id() -> None:
    data = base()
    data["monitoring"]["resources"]["databases"][0]["cluster_id"] = "shards"
    refused(data, "monitoring.resources.databases.0", "exactly one of cluster_id")


def test_bad_load_balancer_arn_is_named() -> None:
    data = base()
    data["monitoring"]["resources"]["load_balancers"][0]["arn"] = "arn:aws:s3:::bucket"
    refused(data, "monitoring.resources.load_balancers.0.arn", "not an Application Load Balancer ARN")


def test_journey_for_a_service_without_slo_is_refused() -> None:
    data = base()
    data["monitoring"]["journeys"][0]["service"] = "api"
    refused(data, "journeys.0.service", "'api' has no SLO")


def test_journey_body_check_on_head_is_refused() -> None:
    data = base()
    data["monitoring"]["journeys"][0]["method"] = "HEAD"
    refused(data, "monitoring.journeys.0", "HEAD")


def test_unknown_key_in_monitoring_is_named() -> None:
    data = base()
    data["monitoring"]["slos"][0]["latency"]["p"] = 99
    refused(data, "monitoring.slos.0.latency.p", "Extra inputs are not permitted")


# ------------------------------------------------------------------ policies naming alarms


def test_policy_naming_an_unknown_alarm_is_refused_with_its_field() -> None:
    data = base()
    data["scaling"][0]["scale_out"]["alarms"]["names"].append("api-latency-typo")
    message = refused(data, "scaling.0.scale_out.alarms.names", "'api-latency-typo'", "external_alarms")
    assert "reflex-test-web-latency" not in message.split("scaling.0.scale_out.alarms.names: ")[1].split(";")[0]


def test_external_alarms_may_be_named() -> None:
    data = base()
    data["scaling"][0]["scale_out"]["alarms"]["names"].append("app-queue-depth-high")
    data["monitoring"]["external_alarms"] = ["app-queue-depth-high"]
    parse_config(data, "inline")


def test_an_alarm_of_another_stage_is_not_known() -> None:
    data = base()
    data["scaling"][0]["scale_out"]["alarms"]["names"] = ["reflex-prod-web-latency"]
    refused(data, "scaling.0.scale_out.alarms.names", "'reflex-prod-web-latency'")


def test_removing_an_slo_leaves_the_policy_naming_it_refused() -> None:
    data = base()
    del data["monitoring"]["slos"][0]["latency"]
    refused(data, "scaling.0.scale_out.alarms.names", "'reflex-test-web-latency'")


def test_prefixes_and_tags_are_not_checked() -> None:
    data = base()
    data["scaling"][0]["scale_out"]["alarms"] = {"prefixes": ["whatever-"], "tags": {"team": "web"}}
    parse_config(data, "inline")


def test_every_section_with_alarm_names_is_checked() -> None:
    data = base()
    data["promotions"] = [{
        "name": "web",
        "target": {"kind": "alb",
                   "listener_arn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/web/"
                                   "0123456789abcdef/fedcba9876543210",
                   "blue_target_group_arn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/"
                                            "web-blue/0123456789abcdef",
                   "green_target_group_arn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/"
                                             "web-green/fedcba9876543210"},
        "guard_alarms": {"names": ["reflex-test-web-user-impact", "web-5xx"]},
        "green_ready": {"source": "app.deploy", "detail_type": "GreenReady"},
    }]
    refused(data, "promotions.0.guard_alarms.names: 'web-5xx'")
    data["promotions"][0]["guard_alarms"]["names"] = ["reflex-test-web-user-impact", "reflex-test-web-error-rate"]
    parse_config(data, "inline")


def test_without_monitoring_any_alarm_name_is_accepted() -> None:
    data = base()
    del data["monitoring"]
    data["scaling"][0]["scale_out"]["alarms"]["names"] = ["anything-at-all"]
    assert parse_config(data, "inline").monitoring is None


def test_external_alarm_that_monitoring_creates_is_refused() -> None:
    data = base()
    data["monitoring"]["external_alarms"] = ["reflex-test-web-latency"]
    refused(data, "monitoring.external_alarms", "created by monitoring itself")


# ------------------------------------------------------------------ shipped configs and the functions' view


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_shipped_configs_have_monitoring_and_pass_the_check(stage: str) -> None:
    config = load_config_file(ROOT / "config" / f"{stage}.yaml")
    assert isinstance(config.monitoring, MonitoringConfig)
    assert config.monitoring.slos and config.monitoring.journeys


def test_functions_drop_the_monitoring_section(tmp_path: Path) -> None:
    assert "monitoring" in SECTIONS
    path = tmp_path / "config.json"
    import json

    path.write_text(json.dumps(base()))
    view = load_stage_config(path, ScalingStageConfig)
    assert "monitoring" not in type(view).model_fields
    assert [p.name for p in view.scaling] == ["api"]
