"""Kill-switch parameters: `/reflex/<stage>/kill-switch/global` and one per reaction.

The functions read both with one `ssm:GetParameters` call on every decision (cached briefly) and stop
acting when either is "on". They are created "off". An operator flips one with
`aws ssm put-parameter --overwrite --name ... --value on`; no deploy is needed. CloudFormation only
writes the value again if the parameter resource itself changes in the template, so keep these
resources stable (no tags or descriptions that vary per deploy).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_iam as iam
from aws_cdk import aws_ssm as ssm
from constructs import Construct

OFF = "off"


@dataclass(frozen=True)
class KillSwitchesProps:
    stage: str

    @property
    def prefix(self) -> str:
        return f"/reflex/{self.stage}/kill-switch"


class KillSwitches(Construct):
    """Owns the stage-wide `global` switch; `add_reaction` creates a reaction's own switch."""

    def __init__(self, scope: Construct, construct_id: str, props: KillSwitchesProps) -> None:
        super().__init__(scope, construct_id)
        self.prefix = props.prefix
        self.global_switch = self._build_parameter(self, "Global", "global")

    def add_reaction(self, scope: Construct, reaction: str) -> ssm.StringParameter:
        return self._build_parameter(scope, "KillSwitch", reaction)

    def grant_read(self, grantee: iam.IGrantable, reaction_switch: ssm.IStringParameter) -> None:
        """Exactly the two parameters the function reads (global + its own), not the whole prefix."""
        grantee.grant_principal.add_to_principal_policy(iam.PolicyStatement(
            actions=["ssm:GetParameters"],
            resources=[self.global_switch.parameter_arn, reaction_switch.parameter_arn],
        ))

    def _build_parameter(self, scope: Construct, construct_id: str, scope_name: str) -> ssm.StringParameter:
        return ssm.StringParameter(
            scope, construct_id,
            parameter_name=f"{self.prefix}/{scope_name}",
            string_value=OFF,
            description=f"Reflex kill switch '{scope_name}': set to 'on' to stop every action it covers",
            tier=ssm.ParameterTier.STANDARD,
        )
