"""The dev stack (config/dev.yaml) as CloudFormation: triggers, function, tables, topic, schedules, IAM.

The triggers and function checked here are the scaler's (logical ids `Scaler...`); the promoter's, which
the dev config also has, are checked in test_infra_promotion.py."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match
from synth_support import ACCOUNT, REGION, Synthesized, as_list, iam_statements, render, unpinned

from reflex_constructs.permissions_common import RESOURCE_STAR_ALLOWLIST
from reflex_core.settings import RuntimeSettings

pytestmark = pytest.mark.slow

ALARM_EVENT = {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"]}
def _scaler(resources: dict[str, dict]) -> dict[str, dict]:
    return {k: r for k, r in resources.items() if k.startswith("Scaler")}


def _rules(dev: Synthesized) -> dict[str, dict]:
    return _scaler(dev.resources("AWS::Events::Rule"))


def _function(dev: Synthesized) -> tuple[str, dict]:
    (logical_id, fn), = _scaler(dev.resources("AWS::Lambda::Function")).items()
    return logical_id, fn


def _dlq(dev: Synthesized, reaction: str = "scaler") -> str:
    (logical_id,) = [k for k, q in dev.resources("AWS::SQS::Queue").items()
                     if q["Properties"]["QueueName"] == f"reflex-dev-{reaction}-dlq"]
    return logical_id


# ------------------------------------------------------------------ triggers


def test_one_alarm_rule_per_scale_out_policy_narrowed_to_its_alarm_names(dev: Synthesized) -> None:
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in _rules(dev).values()]
    assert {**ALARM_EVENT, "detail": {"alarmName": ["api-p99-latency-high", "api-cpu-high"]}} in patterns
    assert {**ALARM_EVENT, "detail": {"alarmName": ["reporting-db-reader-cpu-high"]}} in patterns


def test_tag_matching_policy_gets_a_catch_all_alarm_rule(dev: Synthesized) -> None:
    # workers matches alarms by tag: tags are not in the event, so the rule cannot filter on names.
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in _rules(dev).values()]
    assert ALARM_EVENT in patterns
    alarm_rules = [p for p in patterns if p.get("source") == ["aws.cloudwatch"]]
    assert len(alarm_rules) == 3


def test_on_events_rule_matches_source_and_detail_type(dev: Synthesized) -> None:
    dev.template.has_resource_properties("AWS::Events::Rule", {
        "EventPattern": {"source": ["app.ops"], "detail-type": ["ScaleRequested"]},
    })
    assert len(_rules(dev)) == 4  # 3 alarm rules + 1 custom event rule, nothing the config does not name


def test_every_rule_target_is_the_function_with_retries_and_the_dlq(dev: Synthesized) -> None:
    fn_id, _ = _function(dev)
    dlq_id = _dlq(dev)
    for rule in _rules(dev).values():
        (target,) = rule["Properties"]["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] <= 3600


def test_dlq_policy_lets_each_rule_deliver_dead_letters(dev: Synthesized) -> None:
    (policy,) = [q for q in dev.resources("AWS::SQS::QueuePolicy").values()
                 if q["Properties"]["Queues"] == [{"Ref": _dlq(dev)}]]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    sources = {s["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::GetAtt"][0]
               for s in statements if s.get("Principal") == {"Service": "events.amazonaws.com"}}
    assert sources == set(_rules(dev))
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in statements)


def test_configured_alarms_may_invoke_the_function_as_their_alarm_action(dev: Synthesized) -> None:
    permissions = [p["Properties"] for p in _scaler(dev.resources("AWS::Lambda::Permission")).values()
                   if p["Properties"]["Principal"] == "lambda.alarms.cloudwatch.amazonaws.com"]
    arns = sorted(render(p["SourceArn"], dev.json["Resources"]) for p in permissions)
    base = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:"
    assert arns == sorted(base + n for n in ["api-p99-latency-high", "api-cpu-high", "reporting-db-reader-cpu-high",
                                              "workers-queue-depth-*"])
    assert all(p["SourceAccount"] == ACCOUNT and p["Action"] == "lambda:InvokeFunction" for p in permissions)


# ------------------------------------------------------------------ function


def test_function_runtime_architecture_tracing_and_limits(dev: Synthesized) -> None:
    dev.template.has_resource_properties("AWS::Lambda::Function", {
        "Runtime": "python3.14",
        "Architectures": ["arm64"],
        "TracingConfig": {"Mode": "Active"},
        "MemorySize": 256,
        "Timeout": 60,
        "Handler": "scaler.handler.lambda_handler",
        "LoggingConfig": {"LogGroup": Match.any_value()},
    })
    dev.template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": Match.any_value()})


def test_function_async_invocations_retry_twice_then_go_to_the_dlq(dev: Synthesized) -> None:
    fn_id, fn = _function(dev)
    dlq_id = _dlq(dev)
    assert fn["Properties"]["DeadLetterConfig"] == {"TargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
    dev.template.has_resource_properties("AWS::Lambda::EventInvokeConfig", {
        "FunctionName": {"Ref": fn_id}, "MaximumRetryAttempts": 2, "MaximumEventAgeInSeconds": Match.any_value(),
    })


def test_dead_letter_queue_is_encrypted_and_keeps_messages_14_days(dev: Synthesized) -> None:
    dev.template.has_resource_properties("AWS::SQS::Queue", {
        "QueueName": "reflex-dev-scaler-dlq", "SqsManagedSseEnabled": True, "MessageRetentionPeriod": 14 * 24 * 3600,
    })


def test_function_environment_is_exactly_the_runtime_settings(dev: Synthesized) -> None:
    _, fn = _function(dev)
    env = fn["Properties"]["Environment"]["Variables"]
    expected = {f"REFLEX_{name.upper()}" for name in RuntimeSettings.model_fields}
    assert {k for k in env if k.startswith("REFLEX_")} == expected
    resources = dev.json["Resources"]
    assert env["REFLEX_STAGE"] == "dev"
    assert env["REFLEX_REACTION"] == "scaler"
    assert env["REFLEX_CONFIG_FILE"] == "reflex_config.json"
    assert env["REFLEX_EVENT_BUS_NAME"] == "default"
    assert env["REFLEX_KILL_SWITCH_PREFIX"] == "/reflex/dev/kill-switch"
    assert resources[env["REFLEX_AUDIT_TABLE"]["Ref"]]["Properties"]["KeySchema"][1]["AttributeName"] == "sk"
    assert resources[env["REFLEX_DEAD_LETTER_QUEUE_URL"]["Ref"]]["Type"] == "AWS::SQS::Queue"
    assert resources[env["REFLEX_NOTIFY_TOPIC_ARN"]["Ref"]]["Type"] == "AWS::SNS::Topic"
    assert {k: env[k] for k in env if k.startswith("POWERTOOLS_")} == {
        "POWERTOOLS_SERVICE_NAME": "scaler", "POWERTOOLS_METRICS_NAMESPACE": "Reflex", "POWERTOOLS_LOG_LEVEL": "INFO"}


def test_health_alarms_notify_the_topic(dev: Synthesized) -> None:
    (topic_id, _), = dev.resources("AWS::SNS::Topic").items()
    alarms = {a["Properties"]["MetricName"]: a["Properties"]
              for a in _scaler(dev.resources("AWS::CloudWatch::Alarm")).values()}
    assert set(alarms) == {"Errors", "Throttles", "ApproximateNumberOfMessagesVisible"}
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == [{"Ref": topic_id}]
        assert alarm["Threshold"] == 0 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarms["Errors"]["Namespace"] == "AWS/Lambda"
    assert alarms["ApproximateNumberOfMessagesVisible"]["Namespace"] == "AWS/SQS"


def test_kill_switch_parameters_start_off(dev: Synthesized) -> None:
    params = {p["Properties"]["Name"]: p["Properties"] for p in dev.resources("AWS::SSM::Parameter").values()}
    assert set(params) == {"/reflex/dev/kill-switch/global", "/reflex/dev/kill-switch/scaler",
                           "/reflex/dev/kill-switch/promoter", "/reflex/dev/kill-switch/invalidator",
                           "/reflex/dev/kill-switch/cdn_batcher", "/reflex/dev/kill-switch/cache_health",
                           "/reflex/dev/kill-switch/advisor", "/reflex/dev/kill-switch/drills",
                           "/reflex/dev/kill-switch/failover", "/reflex/dev/kill-switch/shards",
                           "/reflex/dev/kill-switch/resharder"}
    assert all(p["Value"] == "off" and p["Type"] == "String" for p in params.values())


# ------------------------------------------------------------------ tables and topic


@pytest.mark.parametrize(("name", "keys", "ttl"), [
    ("reflex-dev-audit", [("pk", "HASH"), ("sk", "RANGE")], "expires_at"),
    ("reflex-dev-state", [("pk", "HASH")], "expires_at"),
    ("reflex-dev-idempotency", [("id", "HASH")], "expiration"),  # Powertools defaults
])
def test_tables_keys_ttl_pitr_encryption(dev: Synthesized, name: str, keys: list[tuple[str, str]], ttl: str) -> None:
    # The key schemas are the ones simulator/aws_world.py (and the functions) use.
    dev.template.has_resource_properties("AWS::DynamoDB::Table", {
        "TableName": name,
        "KeySchema": [{"AttributeName": name, "KeyType": kind} for name, kind in keys],
        "AttributeDefinitions": [{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
        "BillingMode": "PAY_PER_REQUEST",
        "TimeToLiveSpecification": {"AttributeName": ttl, "Enabled": True},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
        "SSESpecification": {"SSEEnabled": True},
    })


def test_audit_table_is_retained(dev: Synthesized) -> None:
    tables = dev.resources("AWS::DynamoDB::Table").values()
    audit = [t for t in tables if len(t["Properties"]["KeySchema"]) == 2]
    assert [t["DeletionPolicy"] for t in audit] == ["Retain"]


def test_topic_is_kms_encrypted_with_rotation_and_tls_only(dev: Synthesized) -> None:
    (topic,) = dev.resources("AWS::SNS::Topic").values()
    key_id = topic["Properties"]["KmsMasterKeyId"]["Fn::GetAtt"][0]
    key = dev.resources("AWS::KMS::Key")[key_id]
    assert key["Properties"]["EnableKeyRotation"] is True
    dev.template.has_resource_properties("AWS::SNS::Topic", {
        "TopicName": "reflex-dev", "KmsMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}})
    (policy,) = dev.resources("AWS::SNS::TopicPolicy").values()
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    assert any(s["Effect"] == "Deny" and s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
               for s in statements)
    # CloudWatch alarms must be able to publish to the encrypted topic, or their notifications vanish.
    assert any(s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in statements)
    key_statements = key["Properties"]["KeyPolicy"]["Statement"]
    assert any(s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for s in key_statements)


# ------------------------------------------------------------------ schedules


def test_schedule_group_and_evaluate_schedule(dev: Synthesized) -> None:
    dev.template.has_resource_properties("AWS::Scheduler::ScheduleGroup", {"Name": "reflex-dev"})
    schedule = _schedule(dev, "scaler-evaluate")
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert schedule["GroupName"] == "reflex-dev"
    assert json.loads(schedule["Target"]["Input"]) == {"reflex_schedule": {
        "name": "evaluate", "operation": "evaluate",
        "scheduled_time": "<aws.scheduler.scheduled-time>", "execution_id": "<aws.scheduler.execution-id>"}}


def test_prewarm_schedule_cron_timezone_and_input(dev: Synthesized) -> None:
    schedule = _schedule(dev, "scaler-api-weekday-morning")
    assert schedule["ScheduleExpression"] == "cron(0 8 ? * MON-FRI *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Paris"
    assert json.loads(schedule["Target"]["Input"]) == {"reflex_schedule": {
        "name": "api-weekday-morning", "operation": "prewarm", "policy": "api",
        "params": {"prewarm": "weekday-morning"},
        "scheduled_time": "<aws.scheduler.scheduled-time>", "execution_id": "<aws.scheduler.execution-id>"}}


def test_schedules_parse_as_scheduler_triggers(dev: Synthesized) -> None:
    from datetime import UTC, datetime

    from reflex_core.triggers import parse_trigger

    # EventBridge Scheduler substitutes its context attributes before invoking the function.
    substitutions = {"<aws.scheduler.scheduled-time>": "2026-11-26T08:00:00Z",
                     "<aws.scheduler.execution-id>": "d6fbb4e4-3ad9-4b8a-9a86-0c8ab8f3e7b1"}
    for schedule in dev.resources("AWS::Scheduler::Schedule").values():
        text = schedule["Properties"]["Target"]["Input"]
        assert "<aws.scheduler.scheduled-time>" in text and "<aws.scheduler.execution-id>" in text
        for placeholder, value in substitutions.items():
            text = text.replace(placeholder, value)
        trigger = parse_trigger(json.loads(text), datetime.now(UTC))
        assert trigger.kind == "schedule"
        assert trigger.schedule is not None and trigger.schedule.scheduled_time is not None


def test_schedules_retry_then_dead_letter_through_a_scoped_role(dev: Synthesized) -> None:
    functions = {fn["Properties"]["FunctionName"].rsplit("-", 1)[-1]: k
                 for k, fn in dev.resources("AWS::Lambda::Function").items()}
    roles = dev.resources("AWS::IAM::Role")
    for schedule in dev.resources("AWS::Scheduler::Schedule").values():
        target = schedule["Properties"]["Target"]
        reaction = schedule["Properties"]["Name"].split("-", 1)[0]  # scaler-evaluate, promoter-reconcile, ...
        assert target["Arn"] == {"Fn::GetAtt": [functions[reaction], "Arn"]}
        assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": [_dlq(dev, reaction), "Arn"]}}
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
        role = roles[target["RoleArn"]["Fn::GetAtt"][0]]["Properties"]
        (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
        assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": ACCOUNT}
    # Only unqualified function ARNs are invocable (schedule roles, the promotion state machine's role).
    invoke = [s for s in iam_statements(dev) if s["Action"] == "lambda:InvokeFunction"]
    assert invoke and all(s["Resource"] in [{"Fn::GetAtt": [f, "Arn"]} for f in functions.values()] for s in invoke)


def _schedule(dev: Synthesized, name: str) -> dict:
    found = [s["Properties"] for s in dev.resources("AWS::Scheduler::Schedule").values()
             if s["Properties"]["Name"] == name]
    assert found, f"no schedule {name}"
    return found[0]


# ------------------------------------------------------------------ IAM


def _statements_with(dev: Synthesized, action: str) -> list[dict]:
    return [s for s in iam_statements(dev) if action in as_list(s["Action"])]


def test_ecs_permissions_scoped_to_the_configured_service(dev: Synthesized) -> None:
    (statement,) = _statements_with(dev, "ecs:UpdateService")
    assert as_list(statement["Action"]) == ["ecs:UpdateService"]  # desired count only: see its conditions
    (describe,) = _statements_with(dev, "ecs:DescribeServices")
    for s in (statement, describe):
        assert render(as_list(s["Resource"]), dev.json["Resources"]) == [
            f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/web/api"]
    cluster = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/web"
    assert as_list(statement["Condition"]["ArnEquals"]["ecs:cluster"]) == [cluster]


def test_asg_permissions_scoped_to_the_configured_group_name(dev: Synthesized) -> None:
    (statement,) = _statements_with(dev, "autoscaling:SetDesiredCapacity")
    assert sorted(as_list(statement["Action"])) == ["autoscaling:SetDesiredCapacity",
                                                    "autoscaling:UpdateAutoScalingGroup"]
    assert render(as_list(statement["Resource"]), dev.json["Resources"]) == [
        f"arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/web-workers"]


def test_aurora_and_alarm_tag_permissions(dev: Synthesized) -> None:
    resources = dev.json["Resources"]
    # The scaler's (the drills' and the failover's own statements, Sids DescribeDatabases and ReadMemberClusters,
    # are tested in test_infra_recovery.py)
    (rds,) = [s for s in _statements_with(dev, "rds:DescribeDBClusters")
              if s.get("Sid") not in ("DescribeDatabases", "ReadMemberClusters")]
    assert render(as_list(rds["Resource"]), resources) == [f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:reporting"]
    # Every reaction that matches alarms by tag (scaler, shards, resharder) reads alarm tags, and nothing else.
    tag_reads = _statements_with(dev, "cloudwatch:ListTagsForResource")
    assert tag_reads and all(render(as_list(t["Resource"]), resources)
                             == [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:*"] for t in tag_reads)


def test_kill_switch_read_is_limited_to_the_two_parameters(dev: Synthesized) -> None:
    prefix = f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/reflex/dev/kill-switch/"
    read = {}
    for statement in _statements_with(dev, "ssm:GetParameters"):
        assert as_list(statement["Action"]) == ["ssm:GetParameters"]
        (own,) = [r for r in render(as_list(statement["Resource"]), dev.json["Resources"]) if r != prefix + "global"]
        read[own] = sorted(render(as_list(statement["Resource"]), dev.json["Resources"]))
    assert read == {prefix + r: sorted([prefix + "global", prefix + r])
                    for r in ("scaler", "promoter", "invalidator", "cdn_batcher", "cache_health", "advisor",
                              "drills", "failover", "shards", "resharder")}


def test_function_can_write_tables_publish_events_notify_and_park_dead_letters(dev: Synthesized) -> None:
    resources = dev.json["Resources"]
    tables = {t["Properties"]["TableName"].rsplit("-", 1)[1]: k
              for k, t in dev.resources("AWS::DynamoDB::Table").items()}
    writes = _statements_with(dev, "dynamodb:PutItem")
    # Each function: append to the audit, write its own state keys, its own idempotency records
    # (permissions_common.py; test_infra_least_privilege.py).
    by_sid = {sid: [w for w in writes if w.get("Sid") == sid] for sid in ("AuditAppendOnly", "StateWrite",
                                                                          "IdempotencyOwnRecords")}
    counts = {sid: len(found) for sid, found in by_sid.items()}
    assert len(set(counts.values())) == 1 and counts["AuditAppendOnly"] >= 5, counts
    for sid, table in (("AuditAppendOnly", "audit"), ("StateWrite", "state"), ("IdempotencyOwnRecords", "idempotency")):
        assert all(as_list(w["Resource"]) == [{"Fn::GetAtt": [tables[table], "Arn"]}] for w in by_sid[sid])
    put_events = _statements_with(dev, "events:PutEvents")
    assert len(put_events) >= 6  # each function's decisions, and the promoter's DeploymentCompleted
    assert all(render(s["Resource"], resources) == f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"
               for s in put_events)
    assert _statements_with(dev, "sns:Publish")
    assert any("kms:GenerateDataKey*" in as_list(s["Action"]) for s in iam_statements(dev))
    send = _statements_with(dev, "sqs:SendMessage")
    dlqs = [{"Fn::GetAtt": [q, "Arn"]} for q in dev.resources("AWS::SQS::Queue")]
    # (the invalidator and the CDN batcher also send to their continuation and coalescing queues)
    assert send and all(r in dlqs for s in send for r in as_list(s["Resource"]))


def test_no_statement_allows_any_resource_except_the_unscopable_actions(dev: Synthesized) -> None:
    for statement in iam_statements(dev):
        if "*" in as_list(statement["Resource"]):
            assert set(as_list(statement["Action"])) <= set(RESOURCE_STAR_ALLOWLIST), statement
        assert not any(a.endswith(":*") or a == "*" for a in as_list(statement["Action"])), statement


def test_no_managed_policies_on_any_role(dev: Synthesized) -> None:
    # Not even AWSLambdaVPCAccessExecutionRole: functions in a VPC get scoped inline statements (permissions_common.py).
    # Only the role AWS Backup assumes carries AWS Backup's own service-role policies (recovery_backup.py).
    backup = [{"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, f":iam::aws:policy/service-role/{name}"]]}
              for name in ("AWSBackupServiceRolePolicyForBackup", "AWSBackupServiceRolePolicyForRestores")]
    for role in dev.resources("AWS::IAM::Role").values():
        (trust, *_) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        if trust["Principal"] == {"Service": "backup.amazonaws.com"}:
            assert role["Properties"].get("ManagedPolicyArns") == backup
        else:
            assert "ManagedPolicyArns" not in role["Properties"]
