"""What the stack creates follows the config: prefixes, SNS alarm topics, shared rules, absent targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synth_support import Synthesized, as_list, iam_statements, render, synthesize, unpinned, write_config

pytestmark = pytest.mark.slow

QA_ACCOUNT = "210987654321"
QA_REGION = "us-west-2"
LEGACY_TOPIC = f"arn:aws:sns:{QA_REGION}:{QA_ACCOUNT}:legacy-alarms"

QA_YAML = f"""
stage: qa
account: "{QA_ACCOUNT}"
region: {QA_REGION}
notify: {{topic_name: reflex-qa, emails: [oncall@example.com]}}
alarm_topics:
  - arn: {LEGACY_TOPIC}
evaluate_every_minutes: 5
scaling:
  - name: web
    target: {{kind: ecs-service, cluster: edge, service: web}}
    bounds: {{min: 1, max: 10}}
    scale_out:
      alarms: {{names: [web-5xx], prefixes: [web-latency-]}}
    on_events:
      - {{source: app.ops, detail_type: ScaleRequested}}
  - name: batch
    target: {{kind: ecs-service, cluster: edge, service: batch}}
    bounds: {{min: 1, max: 10}}
    on_events:
      - {{source: app.ops, detail_type: ScaleRequested}}
  - name: team-a
    target: {{kind: asg, name: team-a-workers}}
    bounds: {{min: 1, max: 10}}
    scale_out:
      alarms: {{tags: {{team: a}}}}
  - name: team-b
    target: {{kind: asg, name: team-b-workers}}
    bounds: {{min: 1, max: 10}}
    scale_out:
      alarms: {{tags: {{team: b}}}}
"""


@pytest.fixture(scope="module")
def qa(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    config_dir = tmp_path_factory.mktemp("qa-config")
    write_config(config_dir, "qa", QA_YAML)
    # The config's account/region win over the CLI's defaults.
    return synthesize("qa", config_dir, tmp_path_factory.mktemp("cdk-qa"), account="111111111111", region="eu-west-3")


def test_stack_environment_comes_from_the_config(qa: Synthesized) -> None:
    assert qa.stack.account == QA_ACCOUNT and qa.stack.region == QA_REGION


def test_names_and_prefixes_in_one_rule(qa: Synthesized) -> None:
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in qa.resources("AWS::Events::Rule").values()]
    assert {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
            "detail": {"alarmName": ["web-5xx", {"prefix": "web-latency-"}]}} in patterns


def test_tag_policies_share_one_catch_all_rule_and_events_one_rule(qa: Synthesized) -> None:
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in qa.resources("AWS::Events::Rule").values()]
    catch_all = {"source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"]}
    assert patterns.count(catch_all) == 1
    assert patterns.count({"source": ["app.ops"], "detail-type": ["ScaleRequested"]}) == 1
    assert len(patterns) == 3


def test_function_subscribes_to_existing_alarm_topics_with_the_dlq(qa: Synthesized) -> None:
    (dlq_id,) = qa.resources("AWS::SQS::Queue")
    (subscription,) = [s["Properties"] for s in qa.resources("AWS::SNS::Subscription").values()
                       if s["Properties"]["Protocol"] == "lambda"]
    assert subscription["TopicArn"] == LEGACY_TOPIC
    assert subscription["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]}}
    permissions = [p["Properties"] for p in qa.resources("AWS::Lambda::Permission").values()
                   if p["Properties"]["Principal"] == "sns.amazonaws.com"]
    assert [p["SourceArn"] for p in permissions] == [LEGACY_TOPIC]
    (queue_policy,) = qa.resources("AWS::SQS::QueuePolicy").values()
    assert any(s.get("Principal") == {"Service": "sns.amazonaws.com"}
               and s["Condition"]["ArnEquals"]["aws:SourceArn"] == LEGACY_TOPIC
               for s in queue_policy["Properties"]["PolicyDocument"]["Statement"])


def test_email_subscriptions_on_the_notification_topic(qa: Synthesized) -> None:
    qa.template.has_resource_properties("AWS::SNS::Subscription", {"Protocol": "email",
                                                                   "Endpoint": "oncall@example.com"})


def test_alarm_action_permissions_only_for_names_and_prefixes(qa: Synthesized) -> None:
    arns = sorted(render(p["Properties"]["SourceArn"], qa.json["Resources"])
                  for p in qa.resources("AWS::Lambda::Permission").values()
                  if p["Properties"]["Principal"] == "lambda.alarms.cloudwatch.amazonaws.com")
    base = f"arn:aws:cloudwatch:{QA_REGION}:{QA_ACCOUNT}:alarm:"
    assert arns == [base + "web-5xx", base + "web-latency-*"]


def test_evaluate_rate_follows_the_config_and_no_prewarm_schedules(qa: Synthesized) -> None:
    schedules = [s["Properties"] for s in qa.resources("AWS::Scheduler::Schedule").values()]
    assert [(s["Name"], s["ScheduleExpression"]) for s in schedules] == [("scaler-evaluate", "rate(5 minutes)")]
    assert json.loads(schedules[0]["Target"]["Input"])["reflex_schedule"]["operation"] == "evaluate"


def test_permissions_only_for_configured_target_kinds(qa: Synthesized) -> None:
    actions = {a for s in iam_statements(qa) for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith(("rds:", "application-autoscaling:"))}
    (ecs,) = [s for s in iam_statements(qa) if "ecs:UpdateService" in as_list(s["Action"])]
    assert sorted(render(as_list(ecs["Resource"]), qa.json["Resources"])) == [
        f"arn:aws:ecs:{QA_REGION}:{QA_ACCOUNT}:service/edge/batch",
        f"arn:aws:ecs:{QA_REGION}:{QA_ACCOUNT}:service/edge/web"]
    (asg,) = [s for s in iam_statements(qa) if "autoscaling:SetDesiredCapacity" in as_list(s["Action"])]
    assert sorted(render(as_list(asg["Resource"]), qa.json["Resources"])) == [
        f"arn:aws:autoscaling:{QA_REGION}:{QA_ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/team-a-workers",
        f"arn:aws:autoscaling:{QA_REGION}:{QA_ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/team-b-workers"]


def test_a_stage_without_scaling_policies_has_no_scaler(tmp_path: Path) -> None:
    write_config(tmp_path / "config", "empty", "stage: empty\nnotify: {topic_name: reflex-empty}\n")
    synth = synthesize("empty", tmp_path / "config", tmp_path / "out")
    for kind in ("AWS::Lambda::Function", "AWS::Events::Rule", "AWS::Scheduler::Schedule", "AWS::IAM::Policy"):
        assert not synth.resources(kind), kind
    assert len(synth.resources("AWS::DynamoDB::Table")) == 3
    assert [p["Properties"]["Name"] for p in synth.resources("AWS::SSM::Parameter").values()] == [
        "/reflex/empty/kill-switch/global"]


DR_YAML = f"""
stage: dr
account: "{QA_ACCOUNT}"
region: {QA_REGION}
notify: {{topic_name: reflex-dr}}
recovery:
  resources:
    - name: ledger-db
      kind: aurora-cluster
      identifier: ledger
      objectives: {{rto_s: 1800, rpo_s: 300}}
      backup: {{cron: "0 3 * * ? *", retention_days: 7, pitr: true}}
  failover:
    - name: ledger-global
      resource: ledger-db
      global_cluster: ledger-global
      secondary_cluster_arn: arn:aws:rds:us-east-2:{QA_ACCOUNT}:cluster:ledger-east
"""


@pytest.fixture(scope="module")
def dr(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    config_dir = tmp_path_factory.mktemp("dr-config")
    write_config(config_dir, "dr", DR_YAML)
    return synthesize("dr", config_dir, tmp_path_factory.mktemp("cdk-dr"))


def test_failover_without_route53_is_nag_and_lint_clean_and_grants_no_route53(dr: Synthesized) -> None:
    from cfnlint.api import lint_file

    (report,) = dr.validation_report()["pluginReports"]
    assert report["conclusion"] == "success" and report["violations"] == []
    (template,) = dr.outdir.glob("*.template.json")
    assert [f"{m.rule.id} {m.message}" for m in lint_file(template)] == []
    actions = {a for s in iam_statements(dr) for a in as_list(s["Action"])}
    assert not {a for a in actions if a.startswith("route53:")}
    (promote,) = [s for s in iam_statements(dr) if "rds:FailoverGlobalCluster" in as_list(s["Action"])]
    assert sorted(render(as_list(promote["Resource"]), dr.json["Resources"])) == sorted([
        f"arn:aws:rds::{QA_ACCOUNT}:global-cluster:ledger-global",
        f"arn:aws:rds:{QA_REGION}:{QA_ACCOUNT}:cluster:ledger",
        f"arn:aws:rds:us-east-2:{QA_ACCOUNT}:cluster:ledger-east"])
    machines = [k for k in dr.resources("AWS::StepFunctions::StateMachine")]
    assert len(machines) == 1


def test_a_failover_secondary_in_the_stage_region_is_refused(tmp_path: Path) -> None:
    text = DR_YAML.replace("arn:aws:rds:us-east-2:", f"arn:aws:rds:{QA_REGION}:")
    write_config(tmp_path / "config", "dr", text)
    with pytest.raises(Exception, match="secondary_cluster_arn"):
        synthesize("dr", tmp_path / "config", tmp_path / "out")
