"""The Route 53 kind: two weighted records of one name, shifted with one ChangeResourceRecordSets call
(two UPSERTs, atomic), health read from the sides' target groups and Route 53 health checks."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.promotion_config import Route53PairTarget, Route53Side
from reflex_core.runtime import install_runtime
from tests.support.promotion import PromotionBench, bench, with_pair

ELB = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup"
TARGET = Route53PairTarget(
    kind="route53", hosted_zone_id="Z0123456789ABCDEFGHIJ", record_name="www.example.com.", record_type="A",
    blue=Route53Side(set_identifier="blue", target_group_arns=[f"{ELB}/www-blue/0123456789abcdef"]),
    green=Route53Side(set_identifier="green", target_group_arns=[f"{ELB}/www-green/fedcba9876543210"],
                      health_check_id="01234567-89ab-cdef-0123-456789abcdef"),
)


@pytest.fixture
def b(dev_config, clock) -> Iterator[PromotionBench]:
    with mock_aws():
        yield bench(with_pair(dev_config, target=TARGET, approval=None, bake_s=60), clock)
    install_runtime(None)


def records(b: PromotionBench) -> dict[str, int]:
    pair = b.world.config.promotions[0]
    sets = b.world.clients.route53.list_resource_record_sets(HostedZoneId=pair.target.hosted_zone_id)
    return {r["SetIdentifier"]: r["Weight"] for r in sets["ResourceRecordSets"] if "SetIdentifier" in r}


def test_record_name_is_normalized_like_the_iam_condition_key() -> None:
    assert TARGET.record_name == "www.example.com"
    assert TARGET.key == "route53/Z0123456789ABCDEFGHIJ/www.example.com/A"


def test_canary_then_finalize_on_weighted_records(b: PromotionBench) -> None:
    calls: list[str] = []
    b.world.clients.route53.meta.events.register("before-call", lambda model, **_: calls.append(model.name))
    b.green_ready()
    b.run(1)
    assert records(b) == {"blue": 90, "green": 10}
    assert calls.count("ChangeResourceRecordSets") == 1
    b.run()
    assert records(b) == {"blue": 0, "green": 100}
    assert b.record().live == "green"
    assert b.execution().status == "SUCCEEDED"


def test_guard_alarm_rolls_the_records_back(b: PromotionBench) -> None:
    b.green_ready()
    b.run(1)
    b.alarm("web-p99-latency-high", "ALARM")
    assert records(b) == {"blue": 100, "green": 0}
    assert b.record().promotion.status == "rolled-back"


def test_an_unhealthy_route53_health_check_refuses_the_promotion(b: PromotionBench) -> None:
    def failing(model: Any, params: dict[str, Any], **_: Any) -> Any:
        report = {"Status": "Failure: Connection timed out.", "CheckedTime": "2026-11-26T09:00:00Z"}
        return (types.SimpleNamespace(status_code=200, headers={}),
                {"HealthCheckObservations": [{"Region": r, "IPAddress": "192.0.2.1", "StatusReport": report}
                                             for r in ("us-east-1", "eu-west-1", "ap-southeast-1")]})

    b.world.clients.route53.meta.events.register("before-call.route-53.GetHealthCheckStatus", failing)
    b.green_ready()
    b.run()
    (preflight,) = [r for r in b.audit() if r["operation"] == "preflight"]
    assert preflight["outcome"] == "skipped:preflight-refused"
    assert "green has 0 healthy targets" in preflight["detail"]
    assert records(b) == {"blue": 100, "green": 0}


def test_green_target_group_losing_targets_rolls_back(b: PromotionBench) -> None:
    b.green_ready()
    b.run(1)
    b.healthy("green", 0)
    b.run()
    assert records(b) == {"blue": 100, "green": 0}
