"""Least privilege, on the synthesized templates of both stages (issue 9, docs/security.md).

Generic on purpose: every role, policy, rule and permission of the stack is checked, whichever reaction built it, so
a new reaction inherits these guarantees (or fails here until it argues for an exception where it belongs).
"""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import pytest
from synth_support import ACCOUNT, REGION, Synthesized, as_list, render

from reflex_constructs.permissions_common import (
    AWS_MANAGED_POLICY_ALLOWLIST,
    DELETE_ON_DRILL_PREFIX,
    DELETE_ON_STAR_EXCEPTIONS,
    DRILL_PREFIX_RESOURCE,
    RESOURCE_STAR_ALLOWLIST,
    STATE_KEYS,
    state_keys_for,
)

pytestmark = pytest.mark.slow

# dynamodb actions that only read; every other dynamodb action is a write.
DYNAMODB_READS = {"dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem", "dynamodb:ConditionCheckItem",
                  "dynamodb:DescribeTable", "dynamodb:Scan", "dynamodb:GetRecords", "dynamodb:GetShardIterator",
                  "dynamodb:DescribeStream", "dynamodb:ListStreams"}


def identity_policies(synth: Synthesized) -> list[tuple[str, dict[str, Any]]]:
    """(logical id, statement) of every Allow statement of every identity policy: AWS::IAM::Policy,
    AWS::IAM::ManagedPolicy and roles' inline policies."""
    out = []
    for logical_id, resource in synth.json["Resources"].items():
        docs = []
        if resource["Type"] in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs.append(resource["Properties"]["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            docs.extend(p["PolicyDocument"] for p in resource["Properties"].get("Policies", []))
        for doc in docs:
            out.extend((logical_id, s) for s in doc["Statement"] if s["Effect"] == "Allow")
    return out


def _actions(statement: dict[str, Any]) -> list[str]:
    return [str(a) for a in as_list(statement["Action"])]


def _resources(synth: Synthesized, statement: dict[str, Any]) -> list[str]:
    return [str(r) for r in render(as_list(statement.get("Resource", [])), synth.json["Resources"])]


def _table_id(synth: Synthesized, name: str) -> str:
    (logical_id,) = [k for k, t in synth.resources("AWS::DynamoDB::Table").items()
                     if t["Properties"]["TableName"].endswith(f"-{name}")]
    return logical_id


def test_no_action_wildcards_and_no_delete_on_any_resource(stage: Synthesized) -> None:
    for logical_id, statement in identity_policies(stage):
        actions = _actions(statement)
        assert not any(a == "*" or a.endswith(":*") for a in actions), (logical_id, statement)
        deletes = [a for a in actions if a.split(":", 1)[1].startswith("Delete") and a not in DELETE_ON_STAR_EXCEPTIONS]
        if not deletes:
            continue
        resources = _resources(stage, statement)
        assert "*" not in resources, (logical_id, statement)
        if set(deletes) <= set(DELETE_ON_DRILL_PREFIX) and all(re.search(DRILL_PREFIX_RESOURCE, r)
                                                               for r in resources):
            continue  # drill copies only, by their name prefix (permissions_common.DELETE_ON_DRILL_PREFIX)
        # A wildcard in a resource a Delete* may act on needs a condition that narrows it (e.g. ec2:Vpc).
        assert all("*" not in r for r in resources) or statement.get("Condition"), (logical_id, statement)


def test_every_resource_star_statement_is_in_the_allowlist(stage: Synthesized) -> None:
    # RESOURCE_STAR_ALLOWLIST (permissions_common.py) says for each action why AWS requires "*"; a new one fails here.
    for logical_id, statement in identity_policies(stage):
        if "*" in _resources(stage, statement):
            unexpected = set(_actions(statement)) - set(RESOURCE_STAR_ALLOWLIST)
            assert not unexpected, (logical_id, sorted(unexpected), statement)


def test_audit_table_is_append_only_for_every_principal(stage: Synthesized) -> None:
    audit = _table_id(stage, "audit")
    appenders = 0
    for logical_id, statement in identity_policies(stage):
        on_audit = any(isinstance(r, dict) and audit in str(r) for r in as_list(statement.get("Resource", [])))
        writes = {a for a in _actions(statement) if a.startswith("dynamodb:") and a not in DYNAMODB_READS}
        if "*" in _resources(stage, statement):
            assert not writes, (logical_id, statement)
        if not on_audit or not writes:
            continue
        assert writes == {"dynamodb:PutItem"}, (logical_id, statement)
        # ... and only the function's own records (audit.py's partition key is `<reaction>#<target>`).
        (pattern,) = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        assert pattern.endswith("#*") and "*" not in pattern[:-1], statement
        appenders += 1
    functions = stage.resources("AWS::Lambda::Function")
    assert appenders >= len([f for f in functions.values() if "reflex-" in str(f["Properties"].get("FunctionName"))])


def test_state_and_idempotency_access_is_item_level_and_limited_to_leading_keys(stage: Synthesized) -> None:
    tables = {_table_id(stage, "state"), _table_id(stage, "idempotency")}
    seen = 0
    for logical_id, statement in identity_policies(stage):
        if not any(isinstance(r, dict) and any(t in str(r) for t in tables) for r in as_list(statement["Resource"])):
            continue
        if logical_id.startswith("OperatorAccess"):
            continue
        if _actions(statement) == ["dynamodb:Scan"]:
            continue  # a read-only scan, granted only to reactions STATE_KEYS lists with scan=True
        assert set(_actions(statement)) <= {"dynamodb:GetItem", "dynamodb:ConditionCheckItem", "dynamodb:PutItem",
                                            "dynamodb:UpdateItem", "dynamodb:DeleteItem"}, statement
        patterns = statement["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"]
        assert patterns and "*" not in patterns, statement
        seen += 1
    assert seen


def test_state_keys_of_known_reactions_are_narrower_than_any_key() -> None:
    for reaction, keys in STATE_KEYS.items():
        assert "*" not in keys.write, reaction
        assert state_keys_for(reaction) == keys
        # The core's items of other reactions are out of reach.
        assert not any(fnmatch.fnmatch(f"intent#{reaction}x#d#t", k) for k in keys.read), reaction
    for reaction in ("scaler", "promoter", "invalidator", "cdn_batcher", "cache_health"):
        assert "lock#*" not in STATE_KEYS[reaction].write, reaction  # its own target kinds only
    # The scaler may read the promoter's scale-in freezes but not write them, nor touch promotion records.
    scaler = state_keys_for("scaler")
    assert "freeze#scale-in#*" in scaler.read and not any(fnmatch.fnmatch("freeze#scale-in#api", k)
                                                          for k in scaler.write)
    assert not any(fnmatch.fnmatch("promotion#web", k) for k in scaler.read)
    assert not any(fnmatch.fnmatch("lock#alb/app/web", k) for k in scaler.write)
    # A reaction nobody listed yet still gets a bounded set, with its own records.
    assert "newreaction#*" in state_keys_for("newreaction").write


def test_put_events_is_limited_to_reflex_own_sources_and_detail_types(stage: Synthesized) -> None:
    statements = [s for _, s in identity_policies(stage) if "events:PutEvents" in _actions(s)]
    assert statements
    own = f"reflex.{stage.stack.node.id.removeprefix('Reflex-')}"
    sources = set()
    for statement in statements:
        assert _actions(statement) == ["events:PutEvents"], statement
        condition = statement["Condition"]["StringEquals"]
        assert set(condition) == {"events:source", "events:detail-type"}, statement
        sources.add((condition["events:source"], condition["events:detail-type"]))
    assert (own, "Reflex Decision") in sources
    assert all(source == own or detail == "DeploymentCompleted" for source, detail in sources), sources


def test_every_event_rule_pins_the_account(stage: Synthesized) -> None:
    rules = stage.resources("AWS::Events::Rule")
    assert rules
    for logical_id, rule in rules.items():
        pattern = rule["Properties"].get("EventPattern")
        assert pattern is not None, logical_id
        assert pattern.get("account") == [ACCOUNT], (logical_id, pattern)


def test_every_invoke_permission_names_its_source(stage: Synthesized) -> None:
    permissions = stage.resources("AWS::Lambda::Permission")
    assert permissions
    for logical_id, permission in permissions.items():
        props = permission["Properties"]
        source_arn = render(props.get("SourceArn"), stage.json["Resources"])
        assert source_arn, (logical_id, props)
        # A source ARN without an account (S3 buckets) needs SourceAccount too.
        has_account = ACCOUNT in str(source_arn) or "<" in str(source_arn)
        assert has_account or props.get("SourceAccount"), (logical_id, props)


def test_every_function_has_reserved_concurrency(stage: Synthesized) -> None:
    for logical_id, fn in stage.resources("AWS::Lambda::Function").items():
        assert fn["Properties"].get("ReservedConcurrentExecutions", 0) >= 1, logical_id


def test_no_aws_managed_policy_on_any_role_but_the_allowlisted_service_roles(stage: Synthesized) -> None:
    # AWSLambdaVPCAccessExecutionRole included: functions in a VPC get scoped inline statements instead.
    for logical_id, role in stage.resources("AWS::IAM::Role").items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            rendered = str(render(arn, stage.json["Resources"]))
            if ":iam::aws:policy/" in rendered:
                assert rendered.split(":iam::aws:policy/", 1)[1] in AWS_MANAGED_POLICY_ALLOWLIST, (logical_id, rendered)
                assert "lambda.amazonaws.com" not in json.dumps(role["Properties"]["AssumeRolePolicyDocument"])


def test_vpc_functions_manage_network_interfaces_of_their_vpc_only(dev: Synthesized) -> None:
    creates = [s for _, s in identity_policies(dev) if "ec2:CreateNetworkInterface" in _actions(s)]
    assert creates
    for statement in creates + [s for _, s in identity_policies(dev) if "ec2:DeleteNetworkInterface" in _actions(s)]:
        resources = _resources(dev, statement)
        if any(r.endswith("network-interface/*") for r in resources):
            assert statement["Condition"]["ArnEquals"]["ec2:Vpc"], statement
        else:
            assert all(":subnet/" in r or ":security-group/" in r for r in resources), statement


def test_scaler_cannot_create_or_delete_real_db_instances(stage: Synthesized) -> None:
    for action in ("rds:CreateDBInstance", "rds:DeleteDBInstance"):
        for _, statement in identity_policies(stage):
            if action not in _actions(statement):
                continue
            for resource in _resources(stage, statement):
                # Only the permission probe's empty instance id, (create) the configured clusters, and (delete) the
                # instances of on-demand drill copies, by their drill prefix.
                assert resource == f"arn:aws:rds:{REGION}:{ACCOUNT}:db:" or (
                    action == "rds:CreateDBInstance" and ":cluster:" in resource and "*" not in resource) or (
                    action == "rds:DeleteDBInstance" and ":db:" in resource
                    and re.search(DRILL_PREFIX_RESOURCE, resource)), resource
    for _, statement in identity_policies(stage):
        if "rds:AddTagsToResource" in _actions(statement):
            assert _resources(stage, statement) == ["arn:aws:rds:*:*:db:non-existing-db"]


def test_traffic_and_capacity_writes_carry_the_conditions_aws_offers(stage: Synthesized) -> None:
    for _, statement in identity_policies(stage):
        actions = _actions(statement)
        if "ecs:UpdateService" in actions:
            assert statement["Condition"]["Null"]["ecs:task-definition"] == "true", statement
            assert statement["Condition"]["ArnEquals"]["ecs:cluster"], statement
        if "elasticloadbalancing:ModifyListener" in actions:
            assert statement["Condition"]["Null"] == {"elasticloadbalancing:ListenerProtocol": "true",
                                                      "elasticloadbalancing:SecurityPolicy": "true"}, statement


def test_kms_key_policies_for_cloudwatch_name_the_source(stage: Synthesized) -> None:
    found = 0
    for logical_id, key in stage.resources("AWS::KMS::Key").items():
        for statement in key["Properties"]["KeyPolicy"]["Statement"]:
            if statement.get("Principal", {}).get("Service") == "cloudwatch.amazonaws.com":
                assert statement["Condition"]["StringEquals"]["aws:SourceAccount"] == ACCOUNT, logical_id
                assert statement["Condition"]["ArnLike"]["aws:SourceArn"], logical_id
                found += 1
    assert found


def test_operators_and_read_only_managed_policies_invoke_only_through_the_function_url(stage: Synthesized) -> None:
    policies = {p["Properties"]["ManagedPolicyName"]: p for p in stage.resources("AWS::IAM::ManagedPolicy").values()}
    name = stage.stack.node.id.removeprefix("Reflex-")
    operators, read_only = policies[f"reflex-{name}-operators"], policies[f"reflex-{name}-read-only"]
    urls = stage.resources("AWS::Lambda::Url")
    assert urls and all(u["Properties"]["AuthType"] == "AWS_IAM" for u in urls.values())
    for policy in (operators, read_only):
        invoke = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
                  if any(a.startswith("lambda:") for a in as_list(s["Action"]))]
        targets = sorted(str(u["Properties"]["TargetFunctionArn"]) for u in urls.values())
        # (CDK merges statements that differ only in their resources)
        for action in ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction"):
            assert sorted(str(r) for s in invoke if s["Action"] == action for r in as_list(s["Resource"])) == targets
        for statement in invoke:
            if statement["Action"] == "lambda:InvokeFunction":
                assert statement["Condition"] == {"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}
            else:
                assert statement["Condition"] == {"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}}
    assert not any("ssm:PutParameter" in as_list(s["Action"])
                   for s in read_only["Properties"]["PolicyDocument"]["Statement"])


def test_prod_distribution_has_its_certificate_tls12_and_waf(prod: Synthesized) -> None:
    (dist,) = prod.resources("AWS::CloudFront::Distribution").values()
    config = dist["Properties"]["DistributionConfig"]
    assert config["ViewerCertificate"]["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert config["ViewerCertificate"]["AcmCertificateArn"].startswith("arn:aws:acm:us-east-1:")
    assert config["WebACLId"].startswith("arn:aws:wafv2:")


def test_prod_custom_events_arrive_on_the_dedicated_bus_writable_by_the_publishers_only(prod: Synthesized) -> None:
    (bus,) = prod.resources("AWS::Events::EventBus").values()
    assert bus["Properties"]["Name"] == "reflex-prod"
    statements = [p["Properties"]["Statement"] for p in prod.resources("AWS::Events::EventBusPolicy").values()]
    assert {s["Principal"]["AWS"] for s in statements} == {
        "arn:aws:iam::123456789012:role/shop-deploy-pipeline", "arn:aws:iam::123456789012:role/shop-cms"}
    for statement in statements:
        assert statement["Action"] == "events:PutEvents"
        # the sources of prod's custom events (scaling, invalidation, promotion, the shard set's ShardAdded)
        assert sorted(statement["Condition"]["StringEquals"]["events:source"]) == ["app.content", "app.deploy",
                                                                                   "app.ops", "app.shards"]
    custom = [r for r in prod.resources("AWS::Events::Rule").values()
              if not r["Properties"]["EventPattern"]["source"][0].startswith("aws.")]
    assert custom and all("EventBusName" in r["Properties"] for r in custom)


def test_health_collector_connects_as_the_caches_read_only_user() -> None:
    from pydantic import ValidationError

    from invalidator.redis_connection import RedisConnectionSettings

    secret = RedisConnectionSettings(host="h", auth="secret", secret_id="reflex/catalog", username="invalidator",
                                     health_secret_id="reflex/catalog-health")
    reader = secret.for_health_collector()
    assert (reader.secret_id, reader.username, reader.client_name) == ("reflex/catalog-health", None,
                                                                       "reflex-cache-health")
    iam_auth = RedisConnectionSettings(host="h", auth="iam", iam_user_id="reflex-invalidator", iam_cache_name="c",
                                       health_iam_user_id="reflex-cache-health")
    assert iam_auth.for_health_collector().iam_user_id == "reflex-cache-health"
    # Without a read-only user the collector uses the cache's credentials (nothing else is configured).
    plain = RedisConnectionSettings(host="h", auth="secret", secret_id="reflex/catalog")
    assert plain.for_health_collector().secret_id == "reflex/catalog"
    with pytest.raises(ValidationError, match="health_iam_user_id goes with auth 'iam'"):
        RedisConnectionSettings(host="h", auth="secret", secret_id="s", health_iam_user_id="u")


def test_alarm_rules_are_narrowed_to_names_where_the_config_allows(stage: Synthesized) -> None:
    alarm_rules = [r["Properties"] for r in stage.resources("AWS::Events::Rule").values()
                   if r["Properties"]["EventPattern"]["source"] == ["aws.cloudwatch"]]
    assert alarm_rules
    catch_all = [r for r in alarm_rules if "detail" not in r["EventPattern"]]
    if stage.stack.node.id == "Reflex-prod":
        # prod's tag-matched workers alarms are bounded by tag_name_prefixes: no rule gets every alarm.
        assert catch_all == []
        assert any({"prefix": "workers-"} in r["EventPattern"]["detail"]["alarmName"] for r in alarm_rules)
    else:
        # dev matches some alarms by tag alone: the event has no tags, so one rule receives every alarm change.
        assert len(catch_all) == 1 and "tag_name_prefixes" in catch_all[0]["Description"]
