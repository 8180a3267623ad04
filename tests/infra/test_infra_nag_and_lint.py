"""cdk-nag (AwsSolutions) passes with a reason for every acknowledged finding; a new finding fails the
synth; cfn-lint finds nothing in the template."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synth_support import ROOT, Synthesized, cdk_context, default_environment

pytestmark = pytest.mark.slow

# Every acknowledged finding, pinned: a new wildcard must be argued for here and where it is created.
EXPECTED_ACKNOWLEDGED = {
    "AwsSolutions-IAM5[Resource::*]",  # X-Ray (function role), DescribeAutoScalingGroups/ScalableTargets
    "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]",  # publish to the encrypted topic (its key only)
    "AwsSolutions-IAM5[Resource::arn:aws:autoscaling:eu-west-1:123456789012:autoScalingGroup:*:"
    "autoScalingGroupName/web-workers]",
    "AwsSolutions-IAM5[Resource::arn:aws:cloudwatch:eu-west-1:123456789012:alarm:*]",  # tag matching
    # RegisterScalableTarget on Aurora describes the cluster's instances (read-only; create/delete: the probe only)
    "AwsSolutions-IAM5[Resource::arn:aws:rds:eu-west-1:123456789012:db:*]",
    # ... and probes AddTagsToResource on a dummy ARN (db:non-existing-db, any account and region)
    "AwsSolutions-IAM5[Resource::arn:aws:rds:*:*:db:non-existing-db]",
    # the promoter stops and describes executions of its state machine, whose names come from GreenReady events
    "AwsSolutions-IAM5[Resource::arn:aws:states:eu-west-1:123456789012:execution:reflex-dev-promotion:*]",
    # recovery: AWS Backup's documented service-role policies for the backup/restore role
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForBackup]",
    "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSBackupServiceRolePolicyForRestores]",
    # the drills function reads restore testing copies, whose names AWS Backup chooses (read-only)
    "AwsSolutions-IAM5[Resource::arn:aws:rds:eu-west-1:123456789012:cluster:*]",
    "AwsSolutions-IAM5[Resource::arn:aws:dynamodb:eu-west-1:123456789012:table/*]",
    # on-demand drills: restores from AWS Backup's recovery points (ids AWS Backup chooses; RDS/Aurora points are
    # awsbackup: snapshots) and deletions of the drill's own copies, by their drill prefix
    "AwsSolutions-IAM5[Resource::arn:aws:backup:eu-west-1:123456789012:recovery-point:*]",
    "AwsSolutions-IAM5[Resource::arn:aws:states:eu-west-1:123456789012:execution:reflex-dev-drill:*]",
    # failover: DescribeExecution of its own executions (is a run still in flight?)
    "AwsSolutions-IAM5[Resource::arn:aws:states:eu-west-1:123456789012:execution:reflex-dev-failover:*]",
    "AwsSolutions-IAM5[Resource::arn:aws:rds:eu-west-1:123456789012:cluster-snapshot:awsbackup:*]",
    "AwsSolutions-IAM5[Resource::arn:aws:rds:eu-west-1:123456789012:snapshot:awsbackup:*]",
    "AwsSolutions-IAM5[Resource::arn:aws:rds:eu-west-1:123456789012:cluster:reflex-drill-*]",
    "AwsSolutions-IAM5[Resource::arn:aws:rds:eu-west-1:123456789012:db:reflex-drill-*]",
    "AwsSolutions-IAM5[Resource::arn:aws:dynamodb:eu-west-1:123456789012:table/reflex-drill-*]",
    # failover: the member clusters' instances in the secondary region (ids not in the config; the stage's region is
    # above), and Route 53 health checks whose ids are read from the failover records (read-only)
    "AwsSolutions-IAM5[Resource::arn:aws:rds:us-west-2:123456789012:db:*]",
    "AwsSolutions-IAM5[Resource::arn:aws:route53:::healthcheck/*]",
    # monitoring: the journey canary's artifacts bucket (no access logs), its writes below its prefix, the log
    # groups of the function Synthetics names with a generated suffix
    "AwsSolutions-S1",
    "AwsSolutions-IAM5[Resource::<MonitoringJourneysArtifactsAB0F439E.Arn>/home/*]",
    "AwsSolutions-IAM5[Resource::arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/cwsyn-*]",
    # the invalidator and cache health collector run in the VPC: their network interfaces, limited by ec2:Vpc
    "AwsSolutions-IAM5[Resource::arn:aws:ec2:eu-west-1:123456789012:network-interface/*]",
    # the resharder reads the states of the alarms its policy matches by prefix (DescribeAlarms)
    "AwsSolutions-IAM5[Resource::arn:aws:cloudwatch:eu-west-1:123456789012:alarm:sessions-engine-cpu-*]",
    # the operators' and read-only managed policies: the stage's kill switches
    "AwsSolutions-IAM5[Resource::arn:aws:ssm:eu-west-1:123456789012:parameter/reflex/dev/kill-switch/*]",
    # the advisor's reports (keys made at run time, under advisor/) and rds-db:connect through the proxies it
    # creates (the database user comes from the application's secret)
    "AwsSolutions-IAM5[Resource::<AdvisorReports39F8A104.Arn>/advisor/*]",
    'AwsSolutions-IAM5[Resource::arn:aws:rds-db:eu-west-1:123456789012:dbuser:{"Fn::Select":[6,{"Fn::Split":[":",'
    '{"Fn::GetAtt":["AdvisorProxiesProxyreflexdevapp164A235D","DBProxyArn"]}]}]}/*]',
}


def test_nag_passes_and_every_acknowledgment_has_a_reason(dev: Synthesized) -> None:
    (report,) = dev.validation_report()["pluginReports"]
    assert report["pluginName"] == "AwsSolutions"
    assert report["conclusion"] == "success"
    assert report["violations"] == []
    suppressed = report.get("suppressedViolations", [])
    assert {v["ruleName"] for v in suppressed} == EXPECTED_ACKNOWLEDGED
    for violation in suppressed:
        assert len(violation["reason"]) >= 40, violation


def test_an_unacknowledged_finding_fails_the_synth(tmp_path: Path) -> None:
    from aws_cdk import Stack
    from aws_cdk import aws_sqs as sqs

    import app as reflex_app

    with default_environment():
        app = reflex_app.build_app("dev", ROOT / "config", context=cdk_context(), outdir=str(tmp_path))
        stack = app.node.find_child("Reflex-dev")
        assert isinstance(stack, Stack)
        sqs.Queue(stack, "UnencryptedQueue", encryption=sqs.QueueEncryption.UNENCRYPTED)
        with pytest.raises(RuntimeError, match="ValidationFailed"):
            app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    failed = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-SQS2", "AwsSolutions-SQS4"} <= failed


def test_cfn_lint_reports_nothing(dev: Synthesized) -> None:
    from cfnlint.api import lint_file

    (template,) = dev.outdir.glob("*.template.json")
    matches = lint_file(template)
    assert [f"{m.rule.id} {m.message}" for m in matches] == []
