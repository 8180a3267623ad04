"""IAM for the promoter, scoped to the pairs the config names.

The promoter's AWS calls (all in `functions/promoter/`: traffic_switch.py, guard_alarms.py,
promotion_workflow.py):

* ALB pair: elasticloadbalancing:ModifyListener on the configured listener, or ModifyRule on the
  configured listener rule; DescribeListeners, DescribeRules and DescribeTargetHealth, which support no
  resource-level permissions (Resource "*"). No action on target groups themselves is used (the target
  groups are named in the forward action the promoter writes; the code refuses a forward config that
  names any other target group).
* Route 53 pair: route53:ChangeResourceRecordSets on the hosted zone, limited by condition to UPSERTs of
  the pair's record name and type; ListResourceRecordSets on the zone; GetHealthCheckStatus on the
  sides' health checks; DescribeTargetHealth for the sides' target groups (Resource "*", as above).
* cloudwatch:DescribeAlarms on the guard alarms (names, and `prefix*`).
* states:StartExecution and SendTaskSuccess/SendTaskFailure/SendTaskHeartbeat on the promotion state
  machine, StopExecution/DescribeExecution on its executions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge_wildcard_statements
from reflex_core.promotion_config import COLOURS, AlbPairTarget, PromotionPair, Route53PairTarget

# Actions that cannot be scoped to a resource; every other statement names its resources.
PROMOTER_UNSCOPED_ACTIONS = frozenset({
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTargetHealth",
})


@dataclass(frozen=True)
class PromotionPermissionsProps:
    role: iam.IRole
    pairs: Sequence[PromotionPair]
    state_machine_arn: str
    execution_arns: str


class PromotionPermissions(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: PromotionPermissionsProps) -> None:
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        albs = [p.target for p in props.pairs if isinstance(p.target, AlbPairTarget)]
        records = [p.target for p in props.pairs if isinstance(p.target, Route53PairTarget)]
        statements = [
            *self._alb_statements(albs),
            *self._route53_statements(records),
            *self._health_statements(props.pairs),
            *self._alarm_statements(props.pairs),
            *self._workflow_statements(props),
        ]
        self.policy = iam.Policy(self, "Policy", statements=statements, roles=[props.role])
        acknowledge_wildcard_statements(self.policy, statements, _WILDCARD_REASONS)

    def _alb_statements(self, targets: list[AlbPairTarget]) -> list[iam.PolicyStatement]:
        out = []
        listeners = sorted({t.listener_arn for t in targets if t.listener_arn})
        rules = sorted({t.rule_arn for t in targets if t.rule_arn})
        # The promoter only rewrites the forward action's weights. ELB has no condition key for target groups or
        # weights; the keys it has (set only when the request carries them) refuse a change of the listener's
        # protocol or TLS policy. docs/security.md lists what remains (the code refuses other target groups).
        unchanged_listener = {"Null": {"elasticloadbalancing:ListenerProtocol": "true",
                                       "elasticloadbalancing:SecurityPolicy": "true"}}
        if listeners:
            out.append(iam.PolicyStatement(sid="ShiftListenerWeights", actions=["elasticloadbalancing:ModifyListener"],
                                           resources=listeners, conditions=unchanged_listener))
        if rules:
            out.append(iam.PolicyStatement(sid="ShiftRuleWeights", actions=["elasticloadbalancing:ModifyRule"],
                                           resources=rules))
        describe = [action for action, needed in (("elasticloadbalancing:DescribeListeners", listeners),
                                                  ("elasticloadbalancing:DescribeRules", rules)) if needed]
        if describe:
            out.append(iam.PolicyStatement(sid="ReadForwardActions", actions=describe, resources=["*"]))
        return out

    def _route53_statements(self, targets: list[Route53PairTarget]) -> list[iam.PolicyStatement]:
        out = []
        for t in targets:
            zone = f"arn:{self._stack.partition}:route53:::hostedzone/{t.hosted_zone_id}"
            out.append(iam.PolicyStatement(
                actions=["route53:ChangeResourceRecordSets"], resources=[zone],
                conditions={"ForAllValues:StringEquals": {
                    "route53:ChangeResourceRecordSetsNormalizedRecordNames": [t.record_name],
                    "route53:ChangeResourceRecordSetsRecordTypes": [t.record_type],
                    "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
                }}))
        zones = sorted({f"arn:{self._stack.partition}:route53:::hostedzone/{t.hosted_zone_id}" for t in targets})
        if zones:
            out.append(iam.PolicyStatement(sid="ReadWeightedRecords", actions=["route53:ListResourceRecordSets"],
                                           resources=zones))
        checks = sorted({f"arn:{self._stack.partition}:route53:::healthcheck/{c}" for t in targets
                         for c in (t.blue.health_check_id, t.green.health_check_id) if c})
        if checks:
            out.append(iam.PolicyStatement(sid="ReadHealthChecks", actions=["route53:GetHealthCheckStatus"],
                                           resources=checks))
        return out

    def _health_statements(self, pairs: Sequence[PromotionPair]) -> list[iam.PolicyStatement]:
        if not any(p.target.health_target_groups(c) for p in pairs for c in COLOURS):
            return []
        return [iam.PolicyStatement(sid="ReadTargetHealth", actions=["elasticloadbalancing:DescribeTargetHealth"],
                                    resources=["*"])]

    def _alarm_statements(self, pairs: Sequence[PromotionPair]) -> list[iam.PolicyStatement]:
        names = sorted({n for p in pairs for n in p.guard_alarms.names}
                       | {f"{prefix}*" for p in pairs for prefix in p.guard_alarms.prefixes})
        if not names:
            return []
        return [iam.PolicyStatement(sid="ReadGuardAlarms", actions=["cloudwatch:DescribeAlarms"], resources=[
            self._stack.format_arn(service="cloudwatch", resource="alarm", resource_name=n,
                                   arn_format=ArnFormat.COLON_RESOURCE_NAME) for n in names])]

    def _workflow_statements(self, props: PromotionPermissionsProps) -> list[iam.PolicyStatement]:
        return [
            iam.PolicyStatement(sid="StartPromotions", actions=["states:StartExecution"],
                                resources=[props.state_machine_arn]),
            iam.PolicyStatement(
                sid="CompleteCallbacks",
                actions=["states:SendTaskFailure", "states:SendTaskHeartbeat", "states:SendTaskSuccess"],
                resources=[props.state_machine_arn]),
            iam.PolicyStatement(sid="StopPromotions", actions=["states:DescribeExecution", "states:StopExecution"],
                                resources=[props.execution_arns]),
        ]


_WILDCARD_REASONS = {
    "ReadForwardActions": (
        "elasticloadbalancing:DescribeListeners and DescribeRules support no resource-level permissions and need "
        "Resource '*' (read-only); the writes are scoped to the configured listener or rule."),
    "ReadTargetHealth": (
        "elasticloadbalancing:DescribeTargetHealth supports no resource-level permissions and needs Resource '*' "
        "(read-only: counts healthy targets of the configured target groups)."),
    "ReadGuardAlarms": (
        "A pair names its guard alarms by prefix: DescribeAlarms is scoped to alarm:<prefix>* within this "
        "account and region (read-only)."),
    "StopPromotions": (
        "Execution names are generated per GreenReady event: StopExecution/DescribeExecution are scoped to the "
        "executions of the promotion state machine only (execution:reflex-<stage>-promotion:*)."),
}
