"""The invalidation part of the stack as CloudFormation (Template.from_stack, cdk-nag AwsSolutions, cfn-lint):
functions in the VPC, queues with dead-letter queues, event sources, EventBridge rules and schedules, health
alarms, IAM scoped to the configured caches, secrets and distributions; and, for a stage that asks for them, the
ElastiCache replication group and the CloudFront distribution the stack creates."""

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

from reflex_constructs.invalidation_managed_cache import parameter_group
from reflex_constructs.invalidation_reaction import (
    invalidation_custom_events,
    invalidation_origin_buckets,
    invalidation_schedules,
)
from reflex_core.config import parse_config
from reflex_core.invalidation_config import ManagedCache

pytestmark = pytest.mark.slow


def _inv(synth: Synthesized, type_: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in synth.resources(type_).items() if k.startswith("Invalidation")}


def _function(synth: Synthesized, reaction: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, f) for k, f in synth.resources("AWS::Lambda::Function").items()
                if f["Properties"]["FunctionName"] == f"reflex-{synth.stack.stack_name.split('-', 1)[1]}-{reaction}"]
    return found


def _queue(synth: Synthesized, name: str) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, q) for k, q in synth.resources("AWS::SQS::Queue").items() if q["Properties"]["QueueName"] == name]
    return found


def _role_statements(synth: Synthesized, role_id: str) -> list[dict[str, Any]]:
    out = []
    for policy in synth.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            out.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return out


# ------------------------------------------------------------------ dev: existing caches and distribution


def test_functions_that_reach_redis_run_in_the_vpc_with_their_own_group(dev: Synthesized) -> None:
    groups = _inv(dev, "AWS::EC2::SecurityGroup")
    (group_id, group), = groups.items()
    for reaction in ("invalidator", "cache_health"):
        _, fn = _function(dev, reaction)
        assert fn["Properties"]["VpcConfig"] == {
            "SecurityGroupIds": [{"Fn::GetAtt": [group_id, "GroupId"]}],
            "SubnetIds": ["subnet-0a1b2c3d4e5f60711", "subnet-0a1b2c3d4e5f60722"]}
    _, batcher = _function(dev, "cdn_batcher")
    assert "VpcConfig" not in batcher["Properties"]  # CloudFront and SQS only: no VPC needed
    assert "SecurityGroupIngress" not in group["Properties"]  # nothing comes in
    egress = {(r.get("DestinationSecurityGroupId") or r.get("CidrIp"), r["FromPort"])
              for r in group["Properties"]["SecurityGroupEgress"]}
    assert egress == {("0.0.0.0/0", 443), ("sg-0a1b2c3d4e5f60799", 6379)}
    (ingress,) = _inv(dev, "AWS::EC2::SecurityGroupIngress").values()
    assert (ingress["Properties"]["GroupId"], ingress["Properties"]["FromPort"], ingress["Properties"]["ToPort"]) == (
        "sg-0a1b2c3d4e5f60799", 6379, 6379)
    assert ingress["Properties"]["SourceSecurityGroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}


@pytest.mark.parametrize("name", ["reflex-dev-invalidation-continue", "reflex-dev-cdn-site"])
def test_queues_are_encrypted_tls_only_with_a_dead_letter_queue_and_its_alarm(dev: Synthesized, name: str) -> None:
    queue_id, queue = _queue(dev, name)
    dlq_id, dlq = _queue(dev, f"{name}-dlq")
    for q in (queue, dlq):
        assert q["Properties"]["SqsManagedSseEnabled"] is True
    assert queue["Properties"]["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                                                     "maxReceiveCount": 5}
    assert queue["Properties"]["VisibilityTimeout"] == 360  # 6 x the consumer's 60 s timeout
    for qid in (queue_id, dlq_id):
        (policy,) = [p for p in dev.resources("AWS::SQS::QueuePolicy").values()
                     if p["Properties"]["Queues"] == [{"Ref": qid}]]
        denies = [s for s in policy["Properties"]["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for s in denies)
    alarms = [a for a in dev.resources("AWS::CloudWatch::Alarm").values()
              if a["Properties"].get("AlarmName") == f"{name}-dead-letters"]
    assert len(alarms) == 1 and alarms[0]["Properties"]["AlarmActions"]


def test_event_sources_continue_one_message_at_a_time_and_coalesce_cdn_paths(dev: Synthesized) -> None:
    invalidator, _ = _function(dev, "invalidator")
    batcher, _ = _function(dev, "cdn_batcher")
    continuation, _ = _queue(dev, "reflex-dev-invalidation-continue")
    cdn, _ = _queue(dev, "reflex-dev-cdn-site")
    dev.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": invalidator}, "EventSourceArn": {"Fn::GetAtt": [continuation, "Arn"]},
        "BatchSize": 1, "FunctionResponseTypes": ["ReportBatchItemFailures"]})
    dev.template.has_resource_properties("AWS::Lambda::EventSourceMapping", {
        "FunctionName": {"Ref": batcher}, "EventSourceArn": {"Fn::GetAtt": [cdn, "Arn"]},
        "BatchSize": 500, "MaximumBatchingWindowInSeconds": 60,  # = coalesce_window_s
        "FunctionResponseTypes": ["ReportBatchItemFailures"], "ScalingConfig": {"MaximumConcurrency": 2}})


def test_rules_for_the_configured_events_objects_and_alarms(dev: Synthesized) -> None:
    invalidator, _ = _function(dev, "invalidator")
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in _inv(dev, "AWS::Events::Rule").values()
                if r["Properties"]["Targets"][0]["Arn"] == {"Fn::GetAtt": [invalidator, "Arn"]}]
    sources = sorted((p["source"][0], p["detail-type"][0]) for p in patterns if "alarmName" not in p.get("detail", {}))
    assert sources == [("app.content", "ContentChanged"), ("app.deploy", "DeploymentCompleted"),
                       ("aws.s3", "Object Created")]
    (s3_rule,) = [p for p in patterns if p["source"] == ["aws.s3"]]
    assert s3_rule == {"source": ["aws.s3"], "detail-type": ["Object Created", "Object Deleted"],
                       "detail": {"bucket": {"name": ["shop-dev-site-origin"]}}}
    alarm_names = sorted(n for p in patterns for n in p.get("detail", {}).get("alarmName", []))
    assert alarm_names == ["catalog-stale-content", "site-stale-content"]
    for rule in _inv(dev, "AWS::Events::Rule").values():
        (target,) = rule["Properties"]["Targets"]
        assert target["RetryPolicy"]["MaximumRetryAttempts"] >= 1 and "DeadLetterConfig" in target


def test_schedules_run_the_configured_invalidations_and_the_collector(dev: Synthesized) -> None:
    from synth_support import ROOT

    from invalidator.invalidation_requests import schedule_request
    from reflex_core.config import load_config_file
    from reflex_core.triggers import parse_trigger

    config = load_config_file(ROOT / "config" / "dev.yaml")
    schedules = {s["Properties"]["Name"]: s["Properties"] for s in _inv(dev, "AWS::Scheduler::Schedule").values()}
    assert set(schedules) == {"invalidator-cache-catalog-nightly-sweep", "cache_health-collect"}
    nightly = schedules["invalidator-cache-catalog-nightly-sweep"]
    assert (nightly["ScheduleExpression"], nightly["ScheduleExpressionTimezone"]) == (
        "cron(0 3 * * ? *)", "Europe/Paris")
    assert schedules["cache_health-collect"]["ScheduleExpression"] == "rate(5 minutes)"
    from datetime import UTC, datetime

    # What Scheduler delivers once it substitutes its placeholders.
    text = nightly["Target"]["Input"].replace("<aws.scheduler.scheduled-time>", "2026-11-27T02:00:00Z").replace(
        "<aws.scheduler.execution-id>", "run-1")
    request = schedule_request(parse_trigger(json.loads(text), datetime.now(UTC)), config)
    assert request.caches[0].patterns == ("tmp:*",)


def test_health_alarms_on_hit_ratio_and_evictions(dev: Synthesized) -> None:
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in dev.resources("AWS::CloudWatch::Alarm").values()
              if a["Properties"].get("AlarmName", "").startswith("reflex-dev-cache-")}
    assert set(alarms) == {"reflex-dev-cache-catalog-hit-ratio-low", "reflex-dev-cache-catalog-evictions-high",
                           "reflex-dev-cache-sessions-evictions-high"}  # sessions: hit_ratio_below null
    ratio = alarms["reflex-dev-cache-catalog-hit-ratio-low"]
    assert (ratio["MetricName"], ratio["Namespace"], ratio["Threshold"], ratio["ComparisonOperator"]) == (
        "CacheHitRatio", "Reflex", 80, "LessThanThreshold")
    assert {d["Name"]: d["Value"] for d in ratio["Dimensions"]} == {"stage": "dev", "cache": "catalog",
                                                                     "service": "cache_health"}
    assert ratio["TreatMissingData"] == "notBreaching" and ratio["AlarmActions"]
    evictions = alarms["reflex-dev-cache-sessions-evictions-high"]
    assert (evictions["Statistic"], evictions["Threshold"], evictions["ComparisonOperator"]) == (
        "Sum", 100, "GreaterThanThreshold")


def test_iam_is_scoped_to_the_configured_distribution_secret_and_caches(dev: Synthesized) -> None:
    resources = dev.json["Resources"]
    batcher_role = _function(dev, "cdn_batcher")[1]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = iam_statements(dev)
    cloudfront = [s for s in statements if any(a.startswith("cloudfront:") for a in as_list(s["Action"]))]
    assert len(cloudfront) == 1
    assert sorted(as_list(cloudfront[0]["Action"])) == [
        "cloudfront:CreateInvalidation", "cloudfront:GetInvalidation", "cloudfront:ListInvalidations"]
    assert render(cloudfront[0]["Resource"], resources) == f"arn:aws:cloudfront::{ACCOUNT}:distribution/E2EXAMPLE0DEV01"
    assert cloudfront[0] in _role_statements(dev, batcher_role)
    (listing,) = [s for s in statements if "s3:ListBucket" in as_list(s["Action"])]
    assert listing["Resource"] == "arn:aws:s3:::shop-dev-site-origin"
    # The invalidator connects with the caches' own credentials; the read-only health collector with the caches'
    # read-only RBAC users (health_secret_id, health_iam_user_id), and only with those.
    secret = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:reflex/dev/catalog-redis"
    expected = {"invalidator": (f"{secret}-AbCdEf", "reflex-invalidator"),
                "cache_health": (f"{secret}-health-GhIjKl", "reflex-cache-health")}
    for role, (secret_arn, user) in expected.items():
        role_id = _function(dev, role)[1]["Properties"]["Role"]["Fn::GetAtt"][0]
        own = _role_statements(dev, role_id)
        assert [s["Resource"] for s in own if "secretsmanager:GetSecretValue" in as_list(s["Action"])] == [secret_arn]
        (connect,) = [s for s in own if "elasticache:Connect" in as_list(s["Action"])]
        assert sorted(connect["Resource"]) == [f"arn:aws:elasticache:{REGION}:{ACCOUNT}:replicationgroup:sessions",
                                               f"arn:aws:elasticache:{REGION}:{ACCOUNT}:user:{user}"]
    assert not [s for s in _role_statements(dev, batcher_role) if "secretsmanager:GetSecretValue" in
                as_list(s["Action"])]


def test_functions_get_the_stack_only_settings(dev: Synthesized) -> None:
    for reaction in ("invalidator", "cdn_batcher", "cache_health"):
        _, fn = _function(dev, reaction)
        settings = render(fn["Properties"]["Environment"]["Variables"]["REFLEX_INVALIDATION"], dev.json["Resources"])
        assert '"cdn_queue_urls":{"site":"<InvalidationQueuesCdnsiteQueue' in settings
        assert '"managed_caches":{}' in settings and '"continuation_queue_url":"<' in settings


# ------------------------------------------------------------------ a stage that asks the stack to create them

MANAGED_YAML = """
stage: shop
notify: {topic_name: reflex-shop}
invalidation:
  vpc:
    vpc_id: vpc-0123456789abcdef0
    subnet_ids: [subnet-0123456789abcdef1, subnet-0123456789abcdef2]
    endpoints: [sqs, ssm, sns, events, secretsmanager, monitoring, dynamodb]
    route_table_ids: [rtb-0123456789abcdef1]
  caches:
    - name: catalog
      create: {engine: valkey, engine_version: "8.0", node_type: cache.r7g.large, shards: 3, replicas_per_shard: 1}
      on_events: [{source: app.content, detail_type: ContentChanged}]
  cdn:
    - name: site
      distribution_id: managed
      create: {immutable_paths: ["assets/*"], html_ttl_s: 30, domain_names: [www.example.com],
               certificate_arn: "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-1111-2222-3333-444455556666"}
      cache_tags: true
      origin: {bucket: shop-site-origin, inventory: true}
      on_events: [{source: app.content, detail_type: ContentChanged}]
"""


@pytest.fixture(scope="module")
def managed(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    config_dir = tmp_path_factory.mktemp("shop-config")
    write_config(config_dir, "shop", MANAGED_YAML)
    return synthesize("shop", config_dir, tmp_path_factory.mktemp("cdk-shop"))


def test_the_created_replication_group_is_encrypted_authenticated_and_multi_az(managed: Synthesized) -> None:
    (group,) = managed.resources("AWS::ElastiCache::ReplicationGroup").values()
    props = group["Properties"]
    assert (props["TransitEncryptionEnabled"], props["TransitEncryptionMode"], props["AtRestEncryptionEnabled"]) == (
        True, "required", True)
    assert (props["MultiAZEnabled"], props["AutomaticFailoverEnabled"]) == (True, True)
    assert (props["NumNodeGroups"], props["ReplicasPerNodeGroup"], props["Port"]) == (3, 1, 6380)
    assert props["CacheParameterGroupName"] == "default.valkey8.cluster.on"
    (secret_id, secret), = managed.resources("AWS::SecretsManager::Secret").items()
    assert props["AuthToken"] == {"Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": secret_id},
                                                     ":SecretString:password::}}"]]}
    assert secret["Properties"]["GenerateSecretString"]["GenerateStringKey"] == "password"
    assert group["DeletionPolicy"] == "Snapshot"
    (sg_id, _), = [(k, g) for k, g in managed.resources("AWS::EC2::SecurityGroup").items() if "Cachecatalog" in k]
    assert props["SecurityGroupIds"] == [{"Fn::GetAtt": [sg_id, "GroupId"]}]
    (ingress,) = managed.resources("AWS::EC2::SecurityGroupIngress").values()
    assert ingress["Properties"]["GroupId"] == {"Fn::GetAtt": [sg_id, "GroupId"]}
    assert ingress["Properties"]["FromPort"] == 6380
    # The functions find it through their settings: the configuration endpoint (cluster mode) and the secret.
    _, fn = _function(managed, "invalidator")
    settings = render(fn["Properties"]["Environment"]["Variables"]["REFLEX_INVALIDATION"], managed.json["Resources"])
    assert "ConfigurationEndPoint.Address" in settings and '"port":6380' in settings and '"cluster":true' in settings
    role = fn["Properties"]["Role"]["Fn::GetAtt"][0]
    assert any("secretsmanager:GetSecretValue" in as_list(s["Action"]) and s["Resource"] == {"Ref": secret_id}
               for s in _role_statements(managed, role))


def test_the_created_distribution_caches_assets_wasm_and_html_and_reads_cache_tags(managed: Synthesized) -> None:
    (dist_id, dist), = managed.resources("AWS::CloudFront::Distribution").items()
    config = dist["Properties"]["DistributionConfig"]
    policies = {k: p["Properties"]["CachePolicyConfig"] for k, p in managed.resources("AWS::CloudFront::CachePolicy")
                .items()}
    by_name = {p["Name"]: (k, p) for k, p in policies.items()}
    html_id, html = by_name["reflex-shop-site-html"]
    immutable_id, immutable = by_name["reflex-shop-site-immutable"]
    assert (html["DefaultTTL"], html["MaxTTL"], html["MinTTL"]) == (30, 30, 0)
    assert (immutable["DefaultTTL"], immutable["MinTTL"]) == (31_536_000, 31_536_000)
    for policy in (html, immutable):
        settings = policy["ParametersInCacheKeyAndForwardedToOrigin"]
        assert settings["EnableAcceptEncodingGzip"] and settings["EnableAcceptEncodingBrotli"]
    assert config["DefaultCacheBehavior"]["CachePolicyId"] == {"Ref": html_id}
    behaviors = {b["PathPattern"]: b for b in config["CacheBehaviors"]}
    assert set(behaviors) == {"assets/*", "*.wasm"}
    assert all(b["CachePolicyId"] == {"Ref": immutable_id} and b["Compress"] for b in behaviors.values())
    (association,) = behaviors["*.wasm"]["FunctionAssociations"]
    assert association["EventType"] == "viewer-response"
    (function,) = managed.resources("AWS::CloudFront::Function").values()
    assert "application/wasm" in function["Properties"]["FunctionCode"]
    assert config["CacheTagConfig"] == {"HeaderName": "Cache-Tag"}
    assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert config["Logging"]["Bucket"] and config["DefaultCacheBehavior"]["ViewerProtocolPolicy"] == "redirect-to-https"
    assert config["Origins"][0]["OriginAccessControlId"]
    (cloudfront,) = [s for s in iam_statements(managed) if "cloudfront:CreateInvalidation" in as_list(s["Action"])]
    assert render(cloudfront["Resource"], managed.json["Resources"]) == (
        f"arn:aws:cloudfront::{ACCOUNT}:distribution/<{dist_id}>")


def test_vpc_endpoints_the_stage_asks_for_admit_only_the_functions(managed: Synthesized) -> None:
    endpoints = managed.resources("AWS::EC2::VPCEndpoint")
    interface = {render(r["Properties"]["ServiceName"], managed.json["Resources"]): r["Properties"]
                 for r in endpoints.values() if r["Properties"].get("VpcEndpointType") == "Interface"}
    services = ("sqs", "ssm", "sns", "events", "secretsmanager", "monitoring")
    assert set(interface) == {f"com.amazonaws.{REGION}.{s}" for s in services}
    subnets = ["subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
    assert all(p["PrivateDnsEnabled"] is True and p["SubnetIds"] == subnets for p in interface.values())
    (group_ref,) = {json.dumps(g) for p in interface.values() for g in p["SecurityGroupIds"]}
    group_id = json.loads(group_ref)["Fn::GetAtt"][0]
    group = managed.json["Resources"][group_id]["Properties"]
    (ingress,) = group["SecurityGroupIngress"]
    functions_group = [k for k in managed.resources("AWS::EC2::SecurityGroup") if "FunctionsSecurityGroup" in k]
    assert (ingress["FromPort"], ingress["ToPort"]) == (443, 443)
    assert ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": [functions_group[0], "GroupId"]}
    assert "CidrIp" not in ingress
    (gateway,) = [r["Properties"] for r in endpoints.values() if r["Properties"].get("VpcEndpointType") == "Gateway"]
    assert gateway["ServiceName"] == f"com.amazonaws.{REGION}.dynamodb"
    assert gateway["RouteTableIds"] == ["rtb-0123456789abcdef1"]


def test_the_dev_stage_creates_no_vpc_endpoint(dev: Synthesized) -> None:
    assert dev.resources("AWS::EC2::VPCEndpoint") == {}


def test_nag_acknowledgments_of_the_created_resources_have_reasons(managed: Synthesized) -> None:
    (report,) = [p for p in managed.validation_report()["pluginReports"] if p["pluginName"] == "AwsSolutions"]
    assert report["conclusion"] == "success" and report["violations"] == []
    suppressed = {v["ruleName"]: v["reason"] for v in report.get("suppressedViolations", [])}
    assert {"AwsSolutions-CFR1", "AwsSolutions-CFR2", "AwsSolutions-S1", "AwsSolutions-SMG4"} <= set(suppressed)
    assert "AwsSolutions-CFR4" not in suppressed  # a certificate is given: TLSv1.2_2021
    assert all(len(reason) >= 40 for reason in suppressed.values())


def test_the_created_stack_passes_cfn_lint(managed: Synthesized) -> None:
    from cfnlint.api import lint_file

    (template,) = managed.outdir.glob("*.template.json")
    assert [f"{m.rule.id} {m.message}" for m in lint_file(template)] == []


def test_a_stage_without_invalidation_has_none_of_it(tmp_path: Path) -> None:
    write_config(tmp_path / "cfg", "bare", "stage: bare\nnotify: {topic_name: reflex-bare}\n")
    synth = synthesize("bare", tmp_path / "cfg", tmp_path / "out")
    assert not [k for k in synth.json["Resources"] if k.startswith("Invalidation")]
    synth.template.resource_count_is("AWS::Lambda::EventSourceMapping", 0)
    synth.template.has_resource_properties("AWS::SNS::Topic", Match.object_like({"TopicName": "reflex-bare"}))


# ------------------------------------------------------------------ the pure config -> infrastructure mapping


def test_events_are_one_rule_each_and_schedules_are_named_after_their_owner() -> None:
    config = parse_config({"stage": "x", "notify": {"topic_name": "t"}, "invalidation": {
        "caches": [{"name": "a", "redis": {"host": "h"}, "on_events": [{"source": "app.c", "detail_type": "C"}],
                    "schedules": [{"name": "n", "cron": "0 3 * * ? *", "invalidate": {"patterns": ["p:*"]}}]}],
        "cdn": [{"name": "s", "distribution_id": "E2EXAMPLE0TEST1", "on_events": [
            {"source": "app.c", "detail_type": "C"}], "origin": {"bucket": "b-origin", "object_events": False}}]}},
        "test")
    inv = config.invalidation
    assert [(m.source, m.detail_type) for m in invalidation_custom_events(inv)] == [("app.c", "C")]
    assert invalidation_origin_buckets(inv) == []  # object_events off
    (spec,) = invalidation_schedules(inv)
    assert (spec.name, spec.policy, spec.params) == ("cache-a-n", "a", {"scope": "cache", "schedule": "n"})


@pytest.mark.parametrize(("engine", "version", "shards", "group"), [
    ("valkey", "8.0", 1, None), ("valkey", "8.0", 2, "default.valkey8.cluster.on"),
    ("redis", "7.1", 3, "default.redis7.cluster.on"), ("redis", "6.2", 2, "default.redis6.x.cluster.on")])
def test_cluster_mode_parameter_group(engine: str, version: str, shards: int, group: str | None) -> None:
    assert parameter_group(ManagedCache(engine=engine, engine_version=version, shards=shards)) == group  # type: ignore[arg-type]


def test_a_cdn_only_stage_has_no_continuation_queue_no_collector_and_no_vpc(tmp_path: Path) -> None:
    write_config(tmp_path / "cfg", "edge", """
stage: edge
notify: {topic_name: reflex-edge}
invalidation:
  cdn:
    - name: site
      distribution_id: E2EXAMPLE0EDGE1
      on_events: [{source: app.content, detail_type: ContentChanged}]
""")
    synth = synthesize("edge", tmp_path / "cfg", tmp_path / "out")
    names = {q["Properties"]["QueueName"] for q in synth.resources("AWS::SQS::Queue").values()}
    assert "reflex-edge-invalidation-continue" not in names and "reflex-edge-cdn-site" in names
    functions = {f["Properties"]["FunctionName"]: f for f in synth.resources("AWS::Lambda::Function").values()}
    assert set(functions) == {"reflex-edge-invalidator", "reflex-edge-cdn_batcher"}
    assert all("VpcConfig" not in f["Properties"] for f in functions.values())
    assert not synth.resources("AWS::EC2::SecurityGroup") and not synth.resources("AWS::Scheduler::Schedule")
