"""The resharder in the dev stack (config/dev.yaml, replication group `sessions`): function, DLQ, rules, periodic
check, and IAM scoped to the configured replication groups' ARNs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from synth_support import ACCOUNT, REGION, Synthesized, as_list, iam_statements, render, unpinned

from reflex_constructs.resharder_reaction import (
    RESHARDER_ACTIONS,
    resharder_alarm_matchers,
    resharder_custom_events,
    resharder_schedules,
)
from reflex_core.config import parse_config

pytestmark = pytest.mark.slow

ALARM_EVENT = {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"]}


def _mine(resources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in resources.items() if k.startswith("Resharder")}


def _function(dev: Synthesized) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, f) for k, f in dev.resources("AWS::Lambda::Function").items()
                if f["Properties"]["Handler"] == "resharder.handler.lambda_handler"]
    return found


def _dlq(dev: Synthesized) -> str:
    (logical_id,) = [k for k, q in dev.resources("AWS::SQS::Queue").items()
                     if q["Properties"]["QueueName"] == "reflex-dev-resharder-dlq"]
    return logical_id


def test_function_runs_the_resharder_handler_on_arm64(dev: Synthesized) -> None:
    _, fn = _function(dev)
    assert fn["Properties"]["FunctionName"] == "reflex-dev-resharder"
    assert fn["Properties"]["Architectures"] == ["arm64"]
    assert fn["Properties"]["Environment"]["Variables"]["REFLEX_REACTION"] == "resharder"
    assert "DeadLetterConfig" in fn["Properties"]


def test_alarm_rule_narrowed_to_the_policy_alarms_and_an_event_rule_each_with_retries_and_the_dlq(
        dev: Synthesized) -> None:
    fn_id, _ = _function(dev)
    rules = _mine(dev.resources("AWS::Events::Rule"))
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in rules.values()]
    assert {**ALARM_EVENT, "detail": {"alarmName": ["sessions-memory-high", {"prefix": "sessions-engine-cpu-"}]}} \
        in patterns
    assert {"source": ["app.ops"], "detail-type": ["ReshardRequested"]} in patterns
    assert len(rules) == 2
    for rule in rules.values():
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [_dlq(dev), "Arn"]}}


def test_periodic_check_every_five_minutes(dev: Synthesized) -> None:
    (schedule,) = [s for s in dev.resources("AWS::Scheduler::Schedule").values()
                   if s["Properties"]["Name"] == "resharder-evaluate"]
    assert schedule["Properties"]["ScheduleExpression"] == "rate(5 minutes)"
    payload = json.loads(schedule["Properties"]["Target"]["Input"])
    assert payload["reflex_schedule"]["operation"] == "evaluate"


def test_elasticache_permissions_only_on_the_configured_replication_group(dev: Synthesized) -> None:
    statements = [s for s in iam_statements(dev)
                  if "elasticache:ModifyReplicationGroupShardConfiguration" in as_list(s["Action"])]
    (statement,) = statements  # only the resharder may change shards
    assert sorted(as_list(statement["Action"])) == sorted(RESHARDER_ACTIONS)
    assert render(as_list(statement["Resource"]), dev.json["Resources"]) == [
        f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:sessions"]


def test_no_wildcard_resource_for_the_resharder(dev: Synthesized) -> None:
    policies = _mine(dev.resources("AWS::IAM::Policy"))
    resharder_policy = [p for k, p in policies.items() if "Policy" in k and "Function" not in k]
    assert resharder_policy
    for policy in resharder_policy:
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert "*" not in as_list(statement["Resource"])


def test_config_to_infrastructure_mapping_without_synth() -> None:
    base = {"stage": "qa", "notify": {"topic_name": "reflex-qa"}}
    config = parse_config(base | {"resharding": [
        {"name": "a", "replication_group": "cache-a", "bounds": {"min": 1, "max": 4},
         "add_shards": {"alarms": {"tags": {"team": "cache"}}}},
        {"name": "b", "replication_group": "cache-b", "bounds": {"min": 2, "max": 8},
         "on_events": [{"source": "app.ops", "detail_type": "ReshardRequested"}]},
    ]}, "test")
    (matcher,) = resharder_alarm_matchers(config)
    assert matcher.by_tags and matcher.event_pattern() == ALARM_EVENT
    assert [(m.source, m.detail_type) for m in resharder_custom_events(config)] == [("app.ops", "ReshardRequested")]
    assert [s.operation for s in resharder_schedules(config)] == ["evaluate"]
    assert parse_config(base, "test").resharding == []


def test_the_resharder_and_the_scaler_may_read_the_states_of_the_alarms_they_act_on(dev: Synthesized) -> None:
    """Both act only when CloudWatch confirms the remembered alarm state (reflex_core/alarm_states.py, DescribeAlarms
    by name and by prefix); without the grant every such read is AccessDenied in AWS (moto does not check IAM)."""
    resources = dev.json["Resources"]
    alarm = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:"
    by_role: dict[str, list[str]] = {}
    for resource in resources.values():
        if resource["Type"] != "AWS::IAM::Policy":
            continue
        for statement in resource["Properties"]["PolicyDocument"]["Statement"]:
            if "cloudwatch:DescribeAlarms" in as_list(statement["Action"]):
                for role in resource["Properties"].get("Roles", []):
                    by_role.setdefault(render(role, resources), []).extend(
                        render(as_list(statement["Resource"]), resources))
    resharder = [r for role, rs in by_role.items() if role.startswith("<Resharder") for r in rs]
    assert sorted(resharder) == [f"{alarm}sessions-engine-cpu-*", f"{alarm}sessions-memory-high"]
    scaler = [r for role, rs in by_role.items() if role.startswith("<Scaler") for r in rs]
    assert scaler and all(r.startswith(alarm) for r in scaler), by_role
