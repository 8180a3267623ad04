"""The promoter in the dev stack (config/dev.yaml, ALB pair `web`) and in a Route 53 variant: the state
machine and its definition, the rules, the schedule, and IAM scoped to the configured resources."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Match
from synth_support import (
    ACCOUNT,
    REGION,
    Synthesized,
    as_list,
    iam_statements,
    render,
    synthesize,
    unpinned,
    write_config,
)

from promoter.workflow_definition import promotion_definition

pytestmark = pytest.mark.slow

LISTENER = (f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener/app/web/0123456789abcdef/"
            "fedcba9876543210")
MACHINE = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-promotion"


def _machine(dev: Synthesized) -> tuple[str, dict[str, Any]]:
    (logical_id, machine), = [(k, m) for k, m in dev.resources("AWS::StepFunctions::StateMachine").items()
                              if m["Properties"]["StateMachineName"] == "reflex-dev-promotion"]
    return logical_id, machine


def _promoter_function(dev: Synthesized) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, f) for k, f in dev.resources("AWS::Lambda::Function").items()
                if f["Properties"]["Handler"] == "promoter.handler.lambda_handler"]
    return found


def _definition(dev: Synthesized) -> dict[str, Any]:
    _, machine = _machine(dev)
    return json.loads(render(machine["Properties"]["DefinitionString"], dev.json["Resources"]))


def _statements_with(synth: Synthesized, action: str) -> list[dict[str, Any]]:
    return [s for s in iam_statements(synth) if action in as_list(s["Action"])]


def _rendered(synth: Synthesized, statement: dict[str, Any]) -> list[str]:
    return sorted(render(as_list(statement["Resource"]), synth.json["Resources"]))


# ------------------------------------------------------------------ the state machine


def test_standard_workflow_logging_everything_to_an_encrypted_group_with_tracing(dev: Synthesized) -> None:
    dev.template.has_resource_properties("AWS::StepFunctions::StateMachine", {
        "StateMachineName": "reflex-dev-promotion",
        "StateMachineType": "STANDARD",
        "TracingConfiguration": {"Enabled": True},
        "LoggingConfiguration": {"Level": "ALL", "IncludeExecutionData": True, "Destinations": [
            {"CloudWatchLogsLogGroup": {"LogGroupArn": Match.any_value()}}]},
    })
    _, machine = _machine(dev)
    group_id = machine["Properties"]["LoggingConfiguration"]["Destinations"][0]["CloudWatchLogsLogGroup"][
        "LogGroupArn"]["Fn::GetAtt"][0]
    group = dev.resources("AWS::Logs::LogGroup")[group_id]["Properties"]
    assert group["LogGroupName"] == "/aws/vendedlogs/states/reflex-dev-promotion"
    key = dev.resources("AWS::KMS::Key")[group["KmsKeyId"]["Fn::GetAtt"][0]]["Properties"]
    assert key["EnableKeyRotation"] is True
    (logs_statement,) = [s for s in key["KeyPolicy"]["Statement"]
                         if s.get("Principal") == {"Service": f"logs.{REGION}.amazonaws.com"}]
    context = logs_statement["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"]
    assert render(context, dev.json["Resources"]) == (
        f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/vendedlogs/states/reflex-dev-promotion")


def test_the_deployed_definition_is_the_one_the_tests_run(dev: Synthesized) -> None:
    function_id, _ = _promoter_function(dev)
    assert _definition(dev) == promotion_definition(f"<{function_id}.Arn>")


def test_definition_structure(dev: Synthesized) -> None:
    definition = _definition(dev)
    states = definition["States"]
    assert definition["StartAt"] == "Preflight"
    # Every transition lands on a state, and every state is reachable.
    targets = {definition["StartAt"]}
    for state in states.values():
        targets |= {state[k] for k in ("Next", "Default") if k in state}
        targets |= {c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])}
    assert targets <= set(states) and set(states) <= targets
    tasks = {name: s for name, s in states.items() if s["Type"] == "Task"}
    assert set(tasks) == {"Preflight", "Approval", "Shift", "Check", "Hold", "Finalize", "Rollback", "Cleanup"}
    for name, task in tasks.items():
        payload = task["Parameters"]["Payload"]["reflex_step"]
        assert payload["execution.$"] == "$$.Execution.Id" and payload["entered_at.$"] == "$$.State.EnteredTime"
        assert task["Retry"][0]["ErrorEquals"][0] == "Lambda.ServiceException"
        assert any(r["ErrorEquals"] == ["StepDeferred"] for r in task["Retry"])
        # Any failure after the retries ends in the rollback (whose own failure is a distinct end).
        last_resort = task["Catch"][-1]
        assert last_resort["ErrorEquals"] == ["States.ALL"]
        expected = {"Rollback": "RollbackFailed", "Cleanup": "CleanupFailed"}.get(name, "Rollback")
        assert last_resort["Next"] == expected
    for callback in ("Approval", "Hold"):
        assert tasks[callback]["Resource"] == "arn:aws:states:::lambda:invoke.waitForTaskToken"
        assert tasks[callback]["Parameters"]["Payload"]["reflex_step"]["task_token.$"] == "$$.Task.Token"
        (timeout,) = [c for c in tasks[callback]["Catch"] if c["ErrorEquals"] == ["States.Timeout"]]
        assert states[timeout["Next"]]["Type"] == "Pass" and states[timeout["Next"]]["Next"] == "Rollback"
    assert tasks["Approval"]["TimeoutSecondsPath"] == "$.approval_timeout_s"
    assert tasks["Hold"]["TimeoutSecondsPath"] == "$.max_pause_s"
    assert states["Bake"] == {"Type": "Wait", "SecondsPath": "$.bake_s", "Next": "Check"}
    assert states["Retention"] == {"Type": "Wait", "SecondsPath": "$.retention_s", "Next": "Cleanup"}
    assert states["NextStep"]["Choices"] == [
        {"Variable": "$.next_step", "NumericEqualsPath": "$.gate_step", "Next": "Approval"}]
    assert {c["StringEquals"]: c["Next"] for c in states["AfterCheck"]["Choices"]} == {
        "rollback": "Rollback", "hold": "Hold", "stopped": "Stopped", "done": "Finalize"}
    assert states["RolledBack"]["Type"] == "Fail" and states["Completed"]["Type"] == "Succeed"


def test_state_machine_may_invoke_only_the_promoter_function(dev: Synthesized) -> None:
    function_id, _ = _promoter_function(dev)
    _, machine = _machine(dev)
    role_id = machine["Properties"]["RoleArn"]["Fn::GetAtt"][0]
    policies = [p["Properties"] for p in dev.resources("AWS::IAM::Policy").values()
                if {"Ref": role_id} in p["Properties"]["Roles"]]
    invoke = [s for p in policies for s in p["PolicyDocument"]["Statement"] if s["Action"] == "lambda:InvokeFunction"]
    assert [s["Resource"] for s in invoke] == [{"Fn::GetAtt": [function_id, "Arn"]}]


def test_failed_promotions_notify_the_topic(dev: Synthesized) -> None:
    (topic_id,) = dev.resources("AWS::SNS::Topic")
    dev.template.has_resource_properties("AWS::CloudWatch::Alarm", {
        "AlarmName": "reflex-dev-promotion-failed", "MetricName": "ExecutionsFailed", "Namespace": "AWS/States",
        "AlarmActions": [{"Ref": topic_id}]})


# ------------------------------------------------------------------ the function and its triggers


def test_function_knows_the_state_machine_without_depending_on_it(dev: Synthesized) -> None:
    _, function = _promoter_function(dev)
    env = function["Properties"]["Environment"]["Variables"]
    assert render(env["REFLEX_WORKFLOW_ARN"], dev.json["Resources"]) == MACHINE
    assert env["REFLEX_REACTION"] == "promoter"
    assert "DependsOn" not in function or not any("StateMachine" in d for d in function["DependsOn"])


def test_green_ready_and_guard_alarm_rules_target_the_promoter(dev: Synthesized) -> None:
    function_id, _ = _promoter_function(dev)
    rules = {k: r["Properties"] for k, r in dev.resources("AWS::Events::Rule").items() if k.startswith("Promoter")}
    patterns = [unpinned(r["EventPattern"]) for r in rules.values()]
    assert {"source": ["app.deploy"], "detail-type": ["GreenReady"]} in patterns
    assert {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
            "detail": {"alarmName": ["web-p99-latency-high", "web-5xx-rate-high"]}} in patterns
    assert len(rules) == 2
    for rule in rules.values():
        (target,) = rule["Targets"]
        assert target["Arn"] == {"Fn::GetAtt": [function_id, "Arn"]}
        assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] >= 1
    permissions = [p["Properties"] for k, p in dev.resources("AWS::Lambda::Permission").items()
                   if k.startswith("Promoter")
                   and p["Properties"]["Principal"] == "lambda.alarms.cloudwatch.amazonaws.com"]
    assert sorted(render(p["SourceArn"], dev.json["Resources"]) for p in permissions) == [
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:web-5xx-rate-high",
        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:web-p99-latency-high"]


def test_reconcile_schedule(dev: Synthesized) -> None:
    (schedule,) = [s["Properties"] for s in dev.resources("AWS::Scheduler::Schedule").values()
                   if s["Properties"]["Name"] == "promoter-reconcile"]
    assert schedule["ScheduleExpression"] == "rate(1 minute)"
    assert json.loads(schedule["Target"]["Input"])["reflex_schedule"]["operation"] == "reconcile"


# ------------------------------------------------------------------ IAM


def test_weights_are_written_only_on_the_configured_listener(dev: Synthesized) -> None:
    (modify,) = _statements_with(dev, "elasticloadbalancing:ModifyListener")
    assert as_list(modify["Action"]) == ["elasticloadbalancing:ModifyListener"]
    assert _rendered(dev, modify) == [LISTENER]
    assert not _statements_with(dev, "elasticloadbalancing:ModifyRule")
    for action in ("elasticloadbalancing:DescribeListeners", "elasticloadbalancing:DescribeTargetHealth"):
        (read,) = _statements_with(dev, action)
        assert read["Resource"] == "*"  # no resource-level permissions for ELB Describe* (acknowledged)
    # (the failover function changes its own Route 53 failover record: tests/infra/test_infra_recovery.py)
    actions = {a for s in iam_statements(dev) if "hostedzone/Z0DEVEXAMPLE00001" not in str(s["Resource"])
               and "healthcheck" not in str(s["Resource"]) for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith("route53:")}, actions


def test_guard_alarms_are_read_by_name(dev: Synthesized) -> None:
    # (the scaler and the resharder read their own alarms: tests/infra/test_infra_resharder.py)
    (describe,) = [s for s in _statements_with(dev, "cloudwatch:DescribeAlarms") if s.get("Sid") == "ReadGuardAlarms"]
    assert _rendered(dev, describe) == [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:web-5xx-rate-high",
                                        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:web-p99-latency-high"]


def test_step_functions_actions_are_scoped_to_the_promotion_machine(dev: Synthesized) -> None:
    # (the shard reaction starts its own machine, reflex-dev-shard-moves: tests/infra/test_infra_shards.py; the
    # drills function its drill machine, reflex-dev-drill, and the failover function reflex-dev-failover:
    # tests/infra/test_infra_recovery.py)
    def promoter_only(action: str) -> list[dict[str, Any]]:
        return [s for s in _statements_with(dev, action)
                if not any(m in str(s["Resource"]) for m in ("shard-moves", "reflex-dev-drill", "reflex-dev-failover"))]

    (start,) = promoter_only("states:StartExecution")
    assert _rendered(dev, start) == [MACHINE]
    (callbacks,) = promoter_only("states:SendTaskSuccess")
    assert sorted(as_list(callbacks["Action"])) == ["states:SendTaskFailure", "states:SendTaskHeartbeat",
                                                    "states:SendTaskSuccess"]
    assert _rendered(dev, callbacks) == [MACHINE]
    (stop,) = _statements_with(dev, "states:StopExecution")
    assert _rendered(dev, stop) == [f"arn:aws:states:{REGION}:{ACCOUNT}:execution:reflex-dev-promotion:*"]


# ------------------------------------------------------------------ Route 53 and listener-rule variants


ROUTE53_YAML = f"""
stage: r53
notify: {{topic_name: reflex-r53}}
promotions:
  - name: www
    target:
      kind: route53
      hosted_zone_id: Z0123456789ABCDEFGHIJ
      record_name: WWW.Example.com.
      record_type: A
      blue: {{set_identifier: blue, target_group_arns:
               [arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/www-blue/0123456789abcdef]}}
      green: {{set_identifier: green, health_check_id: 01234567-89ab-cdef-0123-456789abcdef}}
    guard_alarms: {{prefixes: [www-]}}
  - name: api
    target:
      kind: alb
      rule_arn: "arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener-rule/app/edge/0123456789abcdef/\
fedcba9876543210/0011223344556677"
      blue_target_group_arn: arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/api-blue/0123456789abcdef
      green_target_group_arn: arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:targetgroup/api-green/fedcba9876543210
    guard_alarms: {{names: [api-errors]}}
"""


@pytest.fixture(scope="module")
def r53(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    config_dir = tmp_path_factory.mktemp("r53-config")
    write_config(config_dir, "r53", ROUTE53_YAML)
    return synthesize("r53", config_dir, tmp_path_factory.mktemp("cdk-r53"))


def test_route53_changes_limited_to_upserts_of_the_pair_record(r53: Synthesized) -> None:
    (change,) = _statements_with(r53, "route53:ChangeResourceRecordSets")
    assert _rendered(r53, change) == ["arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ"]
    assert change["Condition"] == {"ForAllValues:StringEquals": {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["www.example.com"],
        "route53:ChangeResourceRecordSetsRecordTypes": ["A"],
        "route53:ChangeResourceRecordSetsActions": ["UPSERT"]}}
    (records,) = _statements_with(r53, "route53:ListResourceRecordSets")
    assert _rendered(r53, records) == ["arn:aws:route53:::hostedzone/Z0123456789ABCDEFGHIJ"]
    (checks,) = _statements_with(r53, "route53:GetHealthCheckStatus")
    assert _rendered(r53, checks) == ["arn:aws:route53:::healthcheck/01234567-89ab-cdef-0123-456789abcdef"]


def test_listener_rule_pair_modifies_only_its_rule(r53: Synthesized) -> None:
    (modify,) = _statements_with(r53, "elasticloadbalancing:ModifyRule")
    assert _rendered(r53, modify) == [f"arn:aws:elasticloadbalancing:{REGION}:{ACCOUNT}:listener-rule/app/edge/"
                                      "0123456789abcdef/fedcba9876543210/0011223344556677"]
    assert not _statements_with(r53, "elasticloadbalancing:ModifyListener")
    (describe,) = _statements_with(r53, "elasticloadbalancing:DescribeRules")
    assert as_list(describe["Action"]) == ["elasticloadbalancing:DescribeRules"]


def test_guard_prefix_gives_a_prefix_rule_and_a_prefix_scoped_read(r53: Synthesized) -> None:
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in r53.resources("AWS::Events::Rule").values()]
    assert {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
            "detail": {"alarmName": [{"prefix": "www-"}]}} in patterns
    (describe,) = _statements_with(r53, "cloudwatch:DescribeAlarms")
    assert _rendered(r53, describe) == [f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:api-errors",
                                        f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:www-*"]


def test_route53_variant_passes_nag_and_cfn_lint(r53: Synthesized) -> None:
    from cfnlint.api import lint_file

    (report,) = r53.validation_report()["pluginReports"]
    assert report["conclusion"] == "success" and report["violations"] == []
    (template,) = Path(r53.outdir).glob("*.template.json")
    assert [f"{m.rule.id} {m.message}" for m in lint_file(template)] == []


def test_a_stage_without_promotions_has_no_state_machine(tmp_path: Path) -> None:
    write_config(tmp_path / "config", "plain", "stage: plain\nnotify: {topic_name: reflex-plain}\n")
    synth = synthesize("plain", tmp_path / "config", tmp_path / "out")
    assert not synth.resources("AWS::StepFunctions::StateMachine")
    assert not [f for f in synth.resources("AWS::Lambda::Function").values()
                if f["Properties"]["Handler"].startswith("promoter")]
