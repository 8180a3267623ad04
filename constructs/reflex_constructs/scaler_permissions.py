"""IAM for the scaler, scoped to the targets the config names (one statement group per target kind).

The scaler's AWS calls (all in `functions/scaler/capacity_targets.py`):

* ECS service: ecs:DescribeServices, ecs:UpdateService (service ARN).
* Auto Scaling group: autoscaling:SetDesiredCapacity, autoscaling:UpdateAutoScalingGroup (group ARN by
  name), autoscaling:DescribeAutoScalingGroups.
* Aurora replicas: application-autoscaling:DescribeScalableTargets and RegisterScalableTarget,
  rds:DescribeDBClusters (cluster ARN), plus what RegisterScalableTarget validates on the caller
  (rds:CreateDBInstance/DeleteDBInstance/DescribeDBInstances in the account, rds:AddTagsToResource).
* Alarms matched by tag: cloudwatch:ListTagsForResource (alarm ARNs of this account and region).

Three actions are granted on Resource "*" because the Service Authorization Reference lists no
resource type for them (or, for RegisterScalableTarget, only the scalable target's service-generated
ARN, which is not known at synth time). The function's allowlist (only configured targets) is the
guard for those; the test suite pins this exact list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge_wildcard_statements
from reflex_constructs.permissions_common import DESCRIBE_ALARMS_REASON, describe_alarms_statements
from reflex_core.config import AuroraReplicasTarget, AutoScalingGroupTarget, EcsServiceTarget, ScalingPolicy

# The dummy ARN Application Auto Scaling's permission probe tags (its documented validation request).
TAG_PROBE_INSTANCE = "non-existing-db"
# Actions that cannot be scoped to a resource; every other statement names its resources.
UNSCOPED_ACTIONS = frozenset({
    "autoscaling:DescribeAutoScalingGroups",
    "application-autoscaling:DescribeScalableTargets",
    "application-autoscaling:RegisterScalableTarget",
})


@dataclass(frozen=True)
class ScalerPermissionsProps:
    role: iam.IRole
    policies: Sequence[ScalingPolicy]


class ScalerPermissions(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ScalerPermissionsProps) -> None:
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        targets = [p.target for p in props.policies]
        statements = [
            *self._ecs_statements([t for t in targets if isinstance(t, EcsServiceTarget)]),
            *self._asg_statements([t for t in targets if isinstance(t, AutoScalingGroupTarget)]),
            *self._aurora_statements([t for t in targets if isinstance(t, AuroraReplicasTarget)]),
            *self._alarm_tag_statements(props.policies),
            *describe_alarms_statements(self._stack, [p.scale_out.alarms for p in props.policies if p.scale_out]),
        ]
        self.policy: iam.Policy | None = None
        if statements:
            self.policy = iam.Policy(self, "Policy", statements=statements, roles=[props.role])
            acknowledge_wildcard_statements(self.policy, statements, _WILDCARD_REASONS)

    def _arn(self, service: str, resource: str, name: str, fmt: ArnFormat) -> str:
        return self._stack.format_arn(service=service, resource=resource, resource_name=name, arn_format=fmt)

    def _ecs_statements(self, targets: list[EcsServiceTarget]) -> list[iam.PolicyStatement]:
        if not targets:
            return []
        services = [self._arn("ecs", "service", f"{t.cluster}/{t.service}", ArnFormat.SLASH_RESOURCE_NAME)
                    for t in targets]
        clusters = sorted({self._arn("ecs", "cluster", t.cluster, ArnFormat.SLASH_RESOURCE_NAME) for t in targets})
        return [
            iam.PolicyStatement(sid="EcsServicesRead", actions=["ecs:DescribeServices"], resources=services),
            iam.PolicyStatement(
                sid="EcsServicesDesiredCount",
                actions=["ecs:UpdateService"],
                resources=services,
                # The scaler only sets desiredCount. ECS offers no condition key for it; what it offers keeps the
                # call in the configured clusters and refuses a new task definition, capacity provider or ECS Exec
                # (docs/security.md lists what remains: network, load balancer and deployment settings).
                conditions={"ArnEquals": {"ecs:cluster": clusters},
                            "Null": {"ecs:task-definition": "true", "ecs:capacity-provider": "true",
                                     "ecs:enable-execute-command": "true"}},
            ),
        ]

    def _asg_statements(self, targets: list[AutoScalingGroupTarget]) -> list[iam.PolicyStatement]:
        if not targets:
            return []
        return [
            iam.PolicyStatement(
                sid="AutoScalingGroups",
                actions=["autoscaling:SetDesiredCapacity", "autoscaling:UpdateAutoScalingGroup"],
                # The group's ARN contains a service-generated id (autoScalingGroup:<uuid>:...): the
                # name part is what the config knows, so the id is a wildcard.
                resources=[self._asg_arn(t.name) for t in targets],
            ),
            iam.PolicyStatement(
                sid="DescribeAutoScalingGroups",
                # DescribeAutoScalingGroups supports no resource-level permissions (no resource type in
                # the Service Authorization Reference) and no condition that narrows it to a group.
                actions=["autoscaling:DescribeAutoScalingGroups"],
                resources=["*"],
            ),
        ]

    def _asg_arn(self, name: str) -> str:
        return self._arn("autoscaling", "autoScalingGroup", f"*:autoScalingGroupName/{name}",
                         ArnFormat.COLON_RESOURCE_NAME)

    def _aurora_statements(self, targets: list[AuroraReplicasTarget]) -> list[iam.PolicyStatement]:
        if not targets:
            return []
        return [
            iam.PolicyStatement(
                sid="AuroraClusters",
                actions=["rds:DescribeDBClusters"],
                resources=[self._arn("rds", "cluster", t.cluster, ArnFormat.COLON_RESOURCE_NAME) for t in targets],
            ),
            iam.PolicyStatement(
                sid="AuroraScalableTargets",
                # DescribeScalableTargets has no resource type. RegisterScalableTarget can only be scoped
                # to a scalable target's ARN (scalable-target/<service-generated id>), unknown here and
                # not derivable from the cluster name; the only condition keys are tag keys, and the
                # scalable targets are not created (or tagged) by this app.
                actions=sorted(a for a in UNSCOPED_ACTIONS if a.startswith("application-autoscaling:")),
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="AuroraRegistrationProbeCreate",
                # RegisterScalableTarget on Aurora first checks the caller's own permissions by calling
                # CreateDBInstance in the cluster, and DeleteDBInstance, with an EMPTY instance identifier (Application
                # Auto Scaling guide, "Permissions validation for API calls on target resources"). The scaler never
                # creates or deletes an instance itself (the Application Auto Scaling service-linked role does), so
                # the grant is exactly the probe's: the configured clusters and the instance ARN with an empty name,
                # which no existing instance has. No writer, no reader, no instance of another cluster can be
                # deleted with it.
                actions=["rds:CreateDBInstance"],
                resources=[*self._clusters(targets), self._probe_instance()],
            ),
            iam.PolicyStatement(
                sid="AuroraRegistrationProbeDelete",
                actions=["rds:DeleteDBInstance"],
                resources=[self._probe_instance()],
            ),
            iam.PolicyStatement(
                sid="AuroraRegistrationDescribe",
                # Read-only: the same validation describes the cluster's instances, whose ids it generates.
                actions=["rds:DescribeDBInstances"],
                resources=[*self._clusters(targets), self._arn("rds", "db", "*", ArnFormat.COLON_RESOURCE_NAME)],
            ),
            iam.PolicyStatement(
                sid="AuroraRegistrationTagProbe",
                # The validation probes rds:AddTagsToResource on a dummy ARN in a non-existent account (12345,
                # instance non-existing-db). IAM policies only accept a 12-digit account or `*` there, so: that
                # instance name in any account and region. RDS has no resource policies, so another account's
                # instances are out of reach anyway: it can tag only an instance of this account named
                # non-existing-db.
                actions=["rds:AddTagsToResource"],
                resources=[f"arn:{self._stack.partition}:rds:*:*:db:{TAG_PROBE_INSTANCE}"],
            ),
        ]

    def _clusters(self, targets: list[AuroraReplicasTarget]) -> list[str]:
        return [self._arn("rds", "cluster", t.cluster, ArnFormat.COLON_RESOURCE_NAME) for t in targets]

    def _probe_instance(self) -> str:
        """`arn:...:rds:<region>:<account>:db:` - the instance ARN of the probe's empty identifier."""
        return f"arn:{self._stack.partition}:rds:{self._stack.region}:{self._stack.account}:db:"

    def _alarm_tag_statements(self, policies: Sequence[ScalingPolicy]) -> list[iam.PolicyStatement]:
        if not any(p.scale_out and p.scale_out.alarms.tags for p in policies):
            return []
        return [iam.PolicyStatement(
            sid="AlarmTags",
            actions=["cloudwatch:ListTagsForResource"],
            # Tag matching exists precisely because the alarm names are not known in advance.
            resources=[self._arn("cloudwatch", "alarm", "*", ArnFormat.COLON_RESOURCE_NAME)],
        )]


_WILDCARD_REASONS = {
    "ReadAlarmStates": DESCRIBE_ALARMS_REASON,
    "AutoScalingGroups": (
        "Auto Scaling group ARNs embed a service-generated id, so the statement is scoped to "
        "autoScalingGroup:*:autoScalingGroupName/<configured group name>."),
    "DescribeAutoScalingGroups": (
        "autoscaling:DescribeAutoScalingGroups supports no resource-level permissions and needs Resource '*' "
        "(read-only)."),
    "AuroraScalableTargets": (
        "application-autoscaling:DescribeScalableTargets has no resource type and RegisterScalableTarget can "
        "only be scoped to a scalable-target ARN with a service-generated id unknown at synth time; the "
        "function only changes configured clusters (allowlist)."),
    "AuroraRegistrationDescribe": (
        "RegisterScalableTarget on Aurora describes the cluster's instances, whose ids Application Auto Scaling "
        "generates: rds:DescribeDBInstances (read-only) on db:* of this account and region. Create and delete are "
        "granted only on the probe's empty instance id, so the remaining wildcard reads, it cannot change anything."),
    "AuroraRegistrationTagProbe": (
        "RegisterScalableTarget on Aurora probes rds:AddTagsToResource on arn:aws:rds:<region>:12345:db:"
        "non-existing-db (a dummy ARN in a non-existent account); IAM accepts only a 12-digit account or * there, so "
        "db:non-existing-db in any account and region: tagging only, of an instance with that exact name."),
    "AlarmTags": (
        "A scaling policy matches alarms by tag, so alarm names are unknown in advance; read-only tag lookup "
        "limited to this account's alarms in this region."),
}
