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
from reflex_core.config import AuroraReplicasTarget, AutoScalingGroupTarget, EcsServiceTarget, ScalingPolicy

# Actions that cannot be scoped to a resource; every other statement names its resources.
UNSCOPED_ACTIONS = frozenset({
    "rds:AddTagsToResource",
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
        return [iam.PolicyStatement(
            sid="EcsServices",
            actions=["ecs:DescribeServices", "ecs:UpdateService"],
            resources=[self._arn("ecs", "service", f"{t.cluster}/{t.service}", ArnFormat.SLASH_RESOURCE_NAME)
                       for t in targets],
        )]

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
                sid="AuroraRegistrationValidation",
                # RegisterScalableTarget on an Aurora cluster first checks, with the caller's own
                # permissions, that it may create and delete reader instances in that cluster (Application
                # Auto Scaling guide, "Permissions validation for API calls on target resources"). The
                # scaler's code never calls these actions itself; the readers Application Auto Scaling
                # creates get service-generated ids, so instances are db:* within this account and region.
                actions=["rds:CreateDBInstance", "rds:DeleteDBInstance", "rds:DescribeDBInstances"],
                resources=[
                    *[self._arn("rds", "cluster", t.cluster, ArnFormat.COLON_RESOURCE_NAME) for t in targets],
                    self._arn("rds", "db", "*", ArnFormat.COLON_RESOURCE_NAME),
                ],
            ),
            iam.PolicyStatement(
                sid="AuroraRegistrationTagProbe",
                # The same validation probes rds:AddTagsToResource with a dummy ARN in another account,
                # which no scoped resource can match: the probe needs Resource "*". Tagging only.
                actions=["rds:AddTagsToResource"],
                resources=["*"],
            ),
        ]

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
    "AuroraRegistrationValidation": (
        "RegisterScalableTarget on Aurora validates that the caller may create/delete reader instances; "
        "Application Auto Scaling names those readers itself, so db:* within this account and region."),
    "AuroraRegistrationTagProbe": (
        "RegisterScalableTarget on Aurora probes rds:AddTagsToResource with a dummy ARN in another account; "
        "only Resource '*' satisfies the probe (tagging only, no data access)."),
    "AlarmTags": (
        "A scaling policy matches alarms by tag, so alarm names are unknown in advance; read-only tag lookup "
        "limited to this account's alarms in this region."),
}
