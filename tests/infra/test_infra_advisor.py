"""The database advisor part of the dev stack as CloudFormation (cdk-nag AwsSolutions ran in the synth): the
function in the VPC reaching only the configured databases, the encrypted SSL-only report bucket, the schedules,
the runaway-query alarm rules, IAM scoped to the configured secrets, IAM-auth users and proxies, the RDS Proxy."""

from __future__ import annotations

from typing import Any

import pytest
from synth_support import ACCOUNT, REGION, ROOT, Synthesized, render

from reflex_constructs.advisor_reaction import advisor_alarm_matchers, advisor_connect_arns, advisor_schedules
from reflex_core.config import load_config_file

pytestmark = pytest.mark.slow


def _adv(synth: Synthesized, type_: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in synth.resources(type_).items() if k.startswith("Advisor")}


def _function(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, f) for k, f in _adv(synth, "AWS::Lambda::Function").items()
                if f["Properties"]["FunctionName"] == "reflex-dev-advisor"]
    return found


def _statements(synth: Synthesized, role_id: str) -> list[dict[str, Any]]:
    out = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return out


def test_function_runs_in_the_vpc_reaching_only_the_configured_databases(dev: Synthesized) -> None:
    _, fn = _function(dev)
    props = fn["Properties"]
    assert props["Handler"] == "advisor.handler.lambda_handler" and props["Timeout"] == 900
    assert props["VpcConfig"]["SubnetIds"] == ["subnet-0a1b2c3d4e5f60718", "subnet-0f1e2d3c4b5a60718"]
    assert "REFLEX_REPORT_BUCKET" in props["Environment"]["Variables"]
    assert "DeadLetterConfig" in props
    groups = _adv(dev, "AWS::EC2::SecurityGroup")
    function_group = next(g for k, g in groups.items() if k.startswith("AdvisorFunctionSecurityGroup"))
    egress = {(e.get("DestinationSecurityGroupId") or e.get("CidrIp"), e["FromPort"])
              for e in function_group["Properties"]["SecurityGroupEgress"]}
    assert egress == {("sg-0a1b2c3d4e5f60718", 5432), ("0.0.0.0/0", 443)}
    assert "SecurityGroupIngress" not in function_group["Properties"]
    ingress = [r["Properties"] for k, r in _adv(dev, "AWS::EC2::SecurityGroupIngress").items()
               if k.startswith("AdvisorDatabaseGroup")]
    assert [(i["GroupId"], i["FromPort"]) for i in ingress] == [("sg-0a1b2c3d4e5f60718", 5432)]


def test_report_bucket_is_encrypted_private_ssl_only_and_written_under_advisor_only(dev: Synthesized) -> None:
    (bucket_id, bucket), = _adv(dev, "AWS::S3::Bucket").items()
    props = bucket["Properties"]
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] \
        == {"SSEAlgorithm": "AES256"}
    assert props["PublicAccessBlockConfiguration"] == {"BlockPublicAcls": True, "BlockPublicPolicy": True,
                                                       "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    (policy,) = _adv(dev, "AWS::S3::BucketPolicy").values()
    deny = policy["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    role_id = _function(dev)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = _statements(dev, role_id)
    s3 = [s for s in statements if any(str(a).startswith("s3:") for a in s["Action"])]
    assert len(s3) == 1 and sorted(s3[0]["Action"]) == ["s3:GetObject", "s3:PutObject"]
    assert render(s3[0]["Resource"], dev.json["Resources"]) == f"<{bucket_id}.Arn>/advisor/*"


def test_iam_reads_only_the_configured_secrets_and_connects_as_the_configured_users(dev: Synthesized) -> None:
    role_id = _function(dev)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = {s.get("Sid"): s for s in _statements(dev, role_id)}
    assert statements["ReadDatabaseSecrets"]["Resource"] == \
        "arn:aws:secretsmanager:eu-west-1:123456789012:secret:reflex/dev/app-advisor-AbCdEf"
    assert statements["IamDatabaseAuth"]["Resource"] == \
        f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:cluster-ABCDEFGHIJKL0123456789/reflex_advisor"


def test_schedules_and_runaway_alarm_rules_follow_the_config(dev: Synthesized) -> None:
    config = load_config_file(ROOT / "config" / "dev.yaml")
    assert [(s.name, s.expression, s.policy) for s in advisor_schedules(config)] == [
        ("advise-app", "cron(0 6 * * ? *)", "app"), ("advise-app-replica", "cron(30 6 * * ? *)", "app-replica")]
    schedules = _adv(dev, "AWS::Scheduler::Schedule")
    assert len(schedules) == 2
    matchers = advisor_alarm_matchers(config)
    assert [(m.name, m.alarm_names, m.alarm_prefixes, m.by_tags) for m in matchers] == [
        ("app", ("app-db-cpu-high",), ("app-db-connections-",), True)]
    rules = _adv(dev, "AWS::Events::Rule")
    assert rules, "the runaway alarms reach the function through an EventBridge rule"
    assert advisor_connect_arns(config.database_targets, "r", "1") == [
        "arn:aws:rds-db:r:1:dbuser:cluster-ABCDEFGHIJKL0123456789/reflex_advisor"]


def test_rds_proxy_requires_iam_and_tls_and_reads_only_its_secret(dev: Synthesized) -> None:
    (proxy,) = _adv(dev, "AWS::RDS::DBProxy").values()
    props = proxy["Properties"]
    assert props["RequireTLS"] is True and props["EngineFamily"] == "POSTGRESQL"
    assert props["Auth"] == [{"AuthScheme": "SECRETS", "IAMAuth": "REQUIRED", "SecretArn":
                              "arn:aws:secretsmanager:eu-west-1:123456789012:secret:reflex/dev/app-proxy-AbCdEf"}]
    (targets,) = _adv(dev, "AWS::RDS::DBProxyTargetGroup").values()
    assert targets["Properties"]["DBClusterIdentifiers"] == ["app"]
    role_id = props["RoleArn"]["Fn::GetAtt"][0]
    (statement,) = _statements(dev, role_id)
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == props["Auth"][0]["SecretArn"]
