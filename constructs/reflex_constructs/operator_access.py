"""The operators' entry point: an IAM-authenticated function URL per reaction function, and two managed policies.

* `reflex-<stage>-operators`: may send console commands to every Reflex function URL (`lambda:InvokeFunctionUrl`
  with `lambda:FunctionUrlAuthType` AWS_IAM, and `lambda:InvokeFunction` only when invoked via the function URL),
  flip the stage's kill switches, and read the audit trail.
* `reflex-<stage>-read-only`: the same function URLs (the functions accept only dry runs from read-only operators),
  reading the kill switches and the audit trail.

Attaching a policy is the deliberate grant; the function then checks the caller Lambda verified against the config's
`operators:` allowlist (reflex_core.identity). Neither policy allows a direct `lambda:InvokeFunction`, which would let
the caller write any `requestContext` it likes: see docs/security.md for the SCP that keeps it so.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import ArnFormat, CfnOutput, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule


@dataclass(frozen=True)
class OperatorAccessProps:
    stage: str
    audit_table: dynamodb.ITable
    kill_switch_prefix: str


class OperatorAccess(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: OperatorAccessProps) -> None:
        super().__init__(scope, construct_id)
        self._props = props
        stack = Stack.of(self)
        self.operators_policy = iam.ManagedPolicy(
            self, "OperatorsPolicy", managed_policy_name=f"reflex-{props.stage}-operators",
            description=f"Reflex {props.stage}: send console commands (verified by function URL), flip kill switches")
        self.read_only_policy = iam.ManagedPolicy(
            self, "ReadOnlyPolicy", managed_policy_name=f"reflex-{props.stage}-read-only",
            description=f"Reflex {props.stage}: dry-run console commands, read kill switches and the audit trail")
        switches = stack.format_arn(service="ssm", resource="parameter",
                                    resource_name=f"{props.kill_switch_prefix.lstrip('/')}/*",
                                    arn_format=ArnFormat.SLASH_RESOURCE_NAME)
        read_audit = iam.PolicyStatement(sid="ReadAuditTrail", actions=["dynamodb:GetItem", "dynamodb:Query"],
                                         resources=[props.audit_table.table_arn])
        read_switches = iam.PolicyStatement(sid="ReadKillSwitches", actions=["ssm:GetParameter", "ssm:GetParameters"],
                                            resources=[switches])
        self.operators_policy.add_statements(read_audit, read_switches, iam.PolicyStatement(
            sid="FlipKillSwitches", actions=["ssm:PutParameter"], resources=[switches]))
        self.read_only_policy.add_statements(read_audit, read_switches)
        for policy in (self.operators_policy, self.read_only_policy):
            acknowledge(policy, wildcard_resource_rule(self, switches),
                        "The stage's kill switches: /reflex/<stage>/kill-switch/global and one per reaction, all "
                        "under the stage's prefix (nothing else in Parameter Store).")
        self.urls: dict[str, lambda_.FunctionUrl] = {}

    def add_function(self, reaction: str, function: lambda_.IFunction) -> lambda_.FunctionUrl:
        """An AWS_IAM function URL for `function`; both policies may call it (through the URL only)."""
        url = function.add_function_url(auth_type=lambda_.FunctionUrlAuthType.AWS_IAM)
        for policy in (self.operators_policy, self.read_only_policy):
            policy.add_statements(
                iam.PolicyStatement(actions=["lambda:InvokeFunctionUrl"], resources=[function.function_arn],
                                    conditions={"StringEquals": {"lambda:FunctionUrlAuthType": "AWS_IAM"}}),
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[function.function_arn],
                                    conditions={"Bool": {"lambda:InvokedViaFunctionUrl": "true"}}))
        CfnOutput(self, f"ConsoleUrl-{reaction}", value=url.url,
                  description=f"Console commands to the {reaction} function: POST, SigV4-signed (docs/security.md)")
        self.urls[reaction] = url
        return url
