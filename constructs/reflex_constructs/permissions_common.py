"""Permissions every reaction function gets, each as narrow as AWS allows (docs/security.md). New reactions use these.

* `grant_audit_append`: the audit table is evidence: `dynamodb:PutItem` only, and only items whose partition key
  starts with the function's own reaction (`<reaction>#...`, audit.py's key). No update, delete or batch write.
* `grant_state_access`: the state table, item by item (GetItem; PutItem/UpdateItem/DeleteItem), limited by
  `dynamodb:LeadingKeys` to the key prefixes the reaction reads and writes (`STATE_KEYS`, below: the one place
  to change when a reaction starts using a new kind of item).
* `grant_idempotency`: the idempotency table, limited to the function's own records (Powertools writes
  `<function name>.<decorated function>#<hash>`).
* `grant_put_events`: `events:PutEvents` on the bus, one statement per (source, detail-type) the function emits,
  pinned with the `events:source` and `events:detail-type` condition keys.
* `vpc_network_statements`: what a function in a VPC needs for its network interfaces, instead of the managed
  AWSLambdaVPCAccessExecutionRole (logs are granted on the function's own log group elsewhere).

`RESOURCE_STAR_ALLOWLIST` is the explicit list of actions AWS requires on `Resource: "*"`, each with why; the
infrastructure tests fail on any `*` statement with an action not in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from constructs import Construct

from reflex_core.config_base import AlarmMatch

# --------------------------------------------------------------------------- Resource "*" allowlist

# Every action granted on Resource "*" anywhere in the stack, and why AWS leaves no narrower choice. A new entry needs
# a reason that holds up: the Service Authorization Reference lists no resource type for the action (or none that can
# be known at synth time). tests/infra/test_infra_least_privilege.py fails on a `*` statement with any other action.
RESOURCE_STAR_ALLOWLIST: dict[str, str] = {
    # Active tracing (every function, the promotion state machine): X-Ray has no resource types.
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions",
    "xray:GetSamplingRules": "X-Ray has no resource-level permissions (state machine tracing)",
    "xray:GetSamplingTargets": "X-Ray has no resource-level permissions (state machine tracing)",
    # Step Functions logging to CloudWatch Logs (log delivery APIs have no resource types).
    "logs:CreateLogDelivery": "log delivery APIs support no resource-level permissions",
    "logs:GetLogDelivery": "log delivery APIs support no resource-level permissions",
    "logs:UpdateLogDelivery": "log delivery APIs support no resource-level permissions",
    "logs:DeleteLogDelivery": "log delivery APIs support no resource-level permissions",
    "logs:ListLogDeliveries": "log delivery APIs support no resource-level permissions",
    "logs:PutResourcePolicy": "CloudWatch Logs resource policies have no resource type",
    "logs:DescribeResourcePolicies": "no resource type",
    "logs:DescribeLogGroups": "the state machine's log delivery lists log groups; no narrower resource is accepted",
    # Scaler (scaler_permissions.py).
    "autoscaling:DescribeAutoScalingGroups": "no resource-level permissions (read-only)",
    "application-autoscaling:DescribeScalableTargets": "no resource type (read-only)",
    "application-autoscaling:RegisterScalableTarget": (
        "only a scalable-target ARN with a service-generated id, unknown at synth time; the function's allowlist "
        "limits it to configured clusters"),
    # Promoter (promotion_permissions.py): ELB Describe* have no resource-level permissions (read-only).
    "elasticloadbalancing:DescribeListeners": "no resource-level permissions (read-only)",
    "elasticloadbalancing:DescribeRules": "no resource-level permissions (read-only)",
    "elasticloadbalancing:DescribeTargetHealth": "no resource-level permissions (read-only)",
    # Functions in a VPC (vpc_network_statements): describing network interfaces and subnets has no resource type.
    "ec2:DescribeNetworkInterfaces": "EC2 Describe* support no resource-level permissions (read-only)",
    "ec2:DescribeSubnets": "EC2 Describe* support no resource-level permissions (read-only)",
    # Drills (recovery_drills.py): restore jobs are named by AWS Backup at run time.
    "backup:DescribeRestoreJob": "restore jobs have no resource type (read-only)",
    "backup:PutRestoreValidationResult": "restore jobs have no resource type; only the validation result is written",
    # Failover (recovery_failover.py): the replication lag of the global database's secondary.
    "cloudwatch:GetMetricStatistics": "no resource type (read-only)",
    # Monitoring's journey canaries (Synthetics L2 role): no resource types; PutMetricData is limited to the
    # CloudWatchSynthetics namespace by a condition.
    "s3:ListAllMyBuckets": "no resource type (Synthetics runtime requirement, read-only)",
    "cloudwatch:PutMetricData": "no resource type; a cloudwatch:namespace condition limits it",
}

# The only Delete* allowed on Resource "*": Step Functions needs it to manage its own log delivery (the Step Functions
# guide lists it among the logging permissions); it has no resource type, and it removes a log delivery configuration,
# never a resource or log data.
DELETE_ON_STAR_EXCEPTIONS: dict[str, str] = {
    "logs:DeleteLogDelivery": "Step Functions logging; no resource type; removes a delivery configuration only",
}

# Deletions allowed on a name-prefix wildcard without a condition: the drills function deletes the copies its
# on-demand drills restored (recovery_drills.py), whose names start with the resource's drill prefix
# (`isolation.name_prefix`). No protected resource's identifier may start with it (refused at synth time), and
# the function refuses to delete any other name. AWS Backup cannot tag the copies it restores, so no tag
# condition could narrow these further.
DELETE_ON_DRILL_PREFIX: dict[str, str] = {
    "rds:DeleteDBCluster": "an on-demand drill's restored Aurora cluster",
    "rds:DeleteDBInstance": "an on-demand drill's restored instance (or its Aurora copy's instances)",
    "dynamodb:DeleteTable": "an on-demand drill's restored table",
    "s3:DeleteBucket": "an on-demand drill's restored bucket",
    "s3:DeleteObject": "the objects of an on-demand drill's restored bucket (emptied before it is deleted)",
    "s3:DeleteObjectVersion": "the object versions of an on-demand drill's restored bucket",
    "elasticache:DeleteReplicationGroup": "an on-demand drill's restored replication group",
}
# A drill-prefix wildcard: a literal name of at least three characters ending in `-`, then `*` (and `/*` for
# a bucket's objects).
DRILL_PREFIX_RESOURCE = r"[:/][a-z][a-z0-9\-]{1,29}-\*(/\*)?$"

# AWS managed policies a role of the stack may carry, each with why (tests fail on any other). Function roles carry
# none (not even AWSLambdaVPCAccessExecutionRole: vpc_network_statements).
AWS_MANAGED_POLICY_ALLOWLIST: dict[str, str] = {
    "service-role/AWSBackupServiceRolePolicyForBackup": "AWS Backup's documented service role (recovery_backup.py)",
    "service-role/AWSBackupServiceRolePolicyForRestores": "AWS Backup's documented service role (restore drills)",
    "service-role/AWSBackupServiceRolePolicyForS3Backup": "AWS Backup's documented service role for S3 backups",
    "service-role/AWSBackupServiceRolePolicyForS3Restore": "AWS Backup's documented service role for S3 restores",
}

# --------------------------------------------------------------------------- state table key prefixes

# The guardrail items every reaction keeps for its own targets (state_store.py): `<kind>#<target key>`.
GUARDRAIL_KINDS = ("lock", "cooldown", "rate")


@dataclass(frozen=True)
class StateKeys:
    """The leading keys (`pk` patterns, `*` wildcards) a function may read and write in the state table.

    `scan`: the function also scans the table (read-only). LeadingKeys cannot limit a Scan (it names no key, and
    ForAllValues over no keys is true), so a scan is a separate, unconditioned, read-only grant, listed here."""

    write: tuple[str, ...]
    read_only: tuple[str, ...] = ()
    scan: bool = False

    @property
    def read(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.write, *self.read_only)))


def guardrail_keys(target_prefixes: Iterable[str]) -> tuple[str, ...]:
    """lock#, cooldown#, rate# of the targets whose keys start with one of `target_prefixes` (`ecs-service/`)."""
    return tuple(f"{kind}#{prefix}*" for prefix in target_prefixes for kind in GUARDRAIL_KINDS)


def reaction_keys(reaction: str) -> tuple[str, ...]:
    """What the core keeps per reaction (state_store.py): intent records `intent#<reaction>#...`, alarm memory
    `alarm#<reaction>#<name>` and `policyalarms#<reaction>#<policy>` (and `run#<reaction>#...`)."""
    return (f"intent#{reaction}#*", f"alarm#{reaction}#*", f"policyalarms#{reaction}#*", f"run#{reaction}#*")


def default_state_keys(reaction: str) -> StateKeys:
    """For a reaction not in `STATE_KEYS`: the guardrails of any target, the core's per-reaction items, its own
    records (`<reaction>#...`). List the reaction in `STATE_KEYS` to narrow it to its own target kinds."""
    return StateKeys(write=(*guardrail_keys(("",)), *reaction_keys(reaction), f"{reaction}#*"))


# THE place where each function's state keys are listed. Target keys come from the config models (`key`
# properties): scaler `ecs-service/`, `asg/`, `aurora-replicas/`; promoter `alb/`, `route53/`; invalidator
# `redis/`, `cdn/<name>/queue`; CDN batcher `cdn/<name>`. A reaction not listed gets `default_state_keys`.
STATE_KEYS: dict[str, StateKeys] = {
    "scaler": StateKeys(
        write=(*guardrail_keys(("ecs-service/", "asg/", "aurora-replicas/")), *reaction_keys("scaler"), "prewarm#*",
               "prewarms#*"),
        # Promotions freeze scale-in of the policies serving the old colour; the scaler only reads the freezes.
        read_only=("freeze#scale-in#*",)),
    "promoter": StateKeys(
        write=(*guardrail_keys(("alb/", "route53/")), *reaction_keys("promoter"), "promotion#*",
               "freeze#scale-in#*")),
    "invalidator": StateKeys(
        write=(*guardrail_keys(("redis/", "cdn/")), *reaction_keys("invalidator"), "invalidation#*",
               "invalidation-keys#*")),
    "cdn_batcher": StateKeys(write=(*guardrail_keys(("cdn/",)), *reaction_keys("cdn_batcher"), "cdnpaths#*")),
    "cache_health": StateKeys(write=("cachehealth#*",)),
    # Shard moves: the shard map and move records; the unfinished moves are found with a scan (shard_map.py).
    "shards": StateKeys(write=(*default_state_keys("shards").write, "shardmap#*", "shardmove#*"), scan=True),
    # The advisor builds no index on a shard's database while a move involves the shard (it reads the moves).
    "advisor": StateKeys(write=default_state_keys("advisor").write, read_only=("shardmove#*",), scan=True),
    # Per resource `drill:<name>`; per on-demand drill `drillrun:<drill id>` (drills/drill_runs.py).
    "drills": StateKeys(write=(*default_state_keys("drills").write, "drill:*", "drillrun:*")),
    # Failover: the guardrails of `failover:<global cluster>` targets and the run records `failover#<name>`.
    "failover": StateKeys(write=(*guardrail_keys(("failover:",)), *reaction_keys("failover"), "failover#*")),
}


def state_keys_for(reaction: str, extra: Sequence[str] = ()) -> StateKeys:
    keys = STATE_KEYS.get(reaction) or default_state_keys(reaction)
    return StateKeys(write=tuple(dict.fromkeys((*keys.write, *extra))), read_only=keys.read_only, scan=keys.scan)


# --------------------------------------------------------------------------- grants

STATE_READ_ACTIONS = ("dynamodb:ConditionCheckItem", "dynamodb:GetItem")
STATE_WRITE_ACTIONS = ("dynamodb:DeleteItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
AUDIT_APPEND_ACTIONS = ("dynamodb:PutItem",)
DECISION_DETAIL_TYPE = "Reflex Decision"  # reflex_core.audit.DECISION_DETAIL_TYPE


def _leading_keys(patterns: Sequence[str]) -> dict[str, dict[str, list[str]]]:
    # ForAllValues: every partition key the request touches must match; LeadingKeys is always present for
    # item-level actions, so the "empty set" gap of ForAllValues does not apply.
    return {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": list(patterns)}}


def grant_audit_append(role: iam.IRole, table: dynamodb.ITable, reaction: str) -> None:
    """PutItem of the function's own audit records (`<reaction>#<target>`), nothing else."""
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="AuditAppendOnly", actions=list(AUDIT_APPEND_ACTIONS), resources=[table.table_arn],
        conditions=_leading_keys([f"{reaction}#*"])))


def grant_state_access(role: iam.IRole, table: dynamodb.ITable, keys: StateKeys) -> None:
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="StateRead", actions=list(STATE_READ_ACTIONS), resources=[table.table_arn],
        conditions=_leading_keys(keys.read)))
    if keys.scan:
        role.add_to_principal_policy(iam.PolicyStatement(
            sid="StateScan", actions=["dynamodb:Scan"], resources=[table.table_arn]))
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="StateWrite", actions=list(STATE_WRITE_ACTIONS), resources=[table.table_arn],
        conditions=_leading_keys(keys.write)))


def grant_idempotency(role: iam.IRole, table: dynamodb.ITable, function_name: str) -> None:
    role.add_to_principal_policy(iam.PolicyStatement(
        sid="IdempotencyOwnRecords", actions=[*STATE_READ_ACTIONS, *STATE_WRITE_ACTIONS],
        resources=[table.table_arn], conditions=_leading_keys([f"{function_name}.*"])))


def grant_put_events(role: iam.IRole, bus_arn: str, emits: Sequence[tuple[str, str]]) -> None:
    """PutEvents on `bus_arn`, one statement per (source, detail-type): a function cannot forge other events."""
    for i, (source, detail_type) in enumerate(dict.fromkeys(emits)):
        role.add_to_principal_policy(iam.PolicyStatement(
            sid=f"PutOwnEvents{i}", actions=["events:PutEvents"], resources=[bus_arn],
            conditions={"StringEquals": {"events:source": source, "events:detail-type": detail_type}}))


def vpc_network_statements(scope: Construct, vpc_id: str, subnet_ids: Sequence[str],
                           security_group_ids: Sequence[str]) -> list[iam.PolicyStatement]:
    """Network interfaces of a function in a VPC, kept to its VPC, subnets and security groups.

    Lambda creates, and at the end deletes, the function's network interfaces with the execution role. Creating
    one is authorized on the interface, the subnet and the security groups: the latter two are named, the
    interface (id unknown in advance) is limited to the VPC by `ec2:Vpc`. Deleting and (un)assigning addresses act
    on interfaces only, limited to the VPC the same way. Describe* accept only Resource "*" (read-only).
    """
    stack = Stack.of(scope)

    def ec2_arn(resource: str, name: str) -> str:
        return stack.format_arn(service="ec2", resource=resource, resource_name=name,
                                arn_format=ArnFormat.SLASH_RESOURCE_NAME)

    in_vpc = {"ArnEquals": {"ec2:Vpc": ec2_arn("vpc", vpc_id)}}
    return [
        iam.PolicyStatement(sid="CreateNetworkInterfacesInVpc", actions=["ec2:CreateNetworkInterface"],
                            resources=[ec2_arn("network-interface", "*")], conditions=in_vpc),
        iam.PolicyStatement(sid="CreateNetworkInterfacesInSubnets", actions=["ec2:CreateNetworkInterface"],
                            resources=[*(ec2_arn("subnet", s) for s in subnet_ids),
                                       *(ec2_arn("security-group", g) for g in security_group_ids)]),
        iam.PolicyStatement(sid="ManageOwnNetworkInterfaces",
                            actions=["ec2:AssignPrivateIpAddresses", "ec2:DeleteNetworkInterface",
                                     "ec2:UnassignPrivateIpAddresses"],
                            resources=[ec2_arn("network-interface", "*")], conditions=in_vpc),
        iam.PolicyStatement(sid="DescribeNetworkInterfaces",
                            actions=["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"], resources=["*"]),
    ]


# --------------------------------------------------------------------------- alarm states

DESCRIBE_ALARMS_REASON = (
    "cloudwatch:DescribeAlarms (read-only) on the alarms the policies match: exact names, and `<prefix>*` for "
    "name prefixes (the matching alarms' names are not known in advance); alarm:* only where a policy matches by "
    "tag without tag_name_prefixes (every alarm not OK is read, then kept only when its tags match).")


def describe_alarms_statements(stack: Stack, rules: Iterable[AlarmMatch], sid: str = "ReadAlarmStates"
                               ) -> list[iam.PolicyStatement]:
    """DescribeAlarms on the alarms `rules` match (reflex_core/alarm_states.py reads them by name, by prefix, by
    tag-name prefix, or by state for a tag rule without prefixes), so that an action never rests on remembered
    alarm state alone."""
    rules = list(rules)
    if not rules:
        return []
    if any(r.tags and not r.tag_name_prefixes for r in rules):
        names = ["*"]
    else:
        names = sorted({n for r in rules for n in r.names} | {f"{p}*" for r in rules for p in r.prefixes}
                       | {f"{p}*" for r in rules if r.tags for p in r.tag_name_prefixes})
    return [iam.PolicyStatement(sid=sid, actions=["cloudwatch:DescribeAlarms"], resources=[
        stack.format_arn(service="cloudwatch", resource="alarm", resource_name=n,
                         arn_format=ArnFormat.COLON_RESOURCE_NAME) for n in names])]

