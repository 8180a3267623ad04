"""Acknowledging cdk-nag (v3) findings, one finding at a time, each with its reason.

cdk-nag 3 runs as a CDK policy-validation plugin: an unacknowledged error fails `cdk synth`, and every
acknowledged finding is listed with its reason under `suppressedViolations` in
`cdk.out/validation-report.json` (the audit trail). Acknowledgments use the plugin-qualified id
(`AwsSolutions::<rule>`) that the validation report asks for; v3 has no rule-wide or prefix
suppression, so a wildcard finding is acknowledged for the exact resource string cdk-nag reports.
"""

from __future__ import annotations

from typing import Any

from aws_cdk import Acknowledgment, Stack, Validations
from constructs import IConstruct

NAG_PACK = "AwsSolutions"


def acknowledge(scope: IConstruct, rule: str, reason: str) -> None:
    """Acknowledge `rule` (e.g. `AwsSolutions-SQS3`) on `scope` and everything below it."""
    if len(reason.strip()) < 20:
        raise ValueError(f"a cdk-nag acknowledgment needs a specific reason, got {reason!r} for {rule}")
    Validations.of(scope).acknowledge(Acknowledgment(id=f"{NAG_PACK}::{rule}", reason=reason))


def wildcard_resource_rule(scope: IConstruct, resource: str) -> str:
    """The IAM5 finding id cdk-nag reports for a wildcard `resource` (an ARN string or token)."""
    return f"{NAG_PACK}-IAM5[Resource::{flatten_cfn_reference(Stack.of(scope).resolve(resource))}]"


def wildcard_action_rule(action: str) -> str:
    return f"{NAG_PACK}-IAM5[Action::{action}]"


def flatten_cfn_reference(node: Any) -> str:
    """Render a resolved CloudFormation value the way cdk-nag names findings
    (port of cdk-nag's `flattenCfnReference`: Ref -> `<Id>`, GetAtt -> `<Id.Attr>`, Join joined)."""
    if node is None:
        return ""
    if isinstance(node, str):
        return node.replace("${", "<").replace("}", ">")
    if isinstance(node, dict):
        if "Fn::Join" in node:
            delimiter, items = node["Fn::Join"]
            return delimiter.join(flatten_cfn_reference(i) for i in items)
        if "Fn::Sub" in node:
            return flatten_cfn_reference(node["Fn::Sub"])
        if "Fn::GetAtt" in node:
            resource, attribute = node["Fn::GetAtt"]
            return f"<{flatten_cfn_reference(resource)}.{flatten_cfn_reference(attribute)}>"
        if "Fn::ImportValue" in node:
            return flatten_cfn_reference(node["Fn::ImportValue"])
        if "Ref" in node:
            return f"<{flatten_cfn_reference(node['Ref'])}>"
    import json

    return json.dumps(node, separators=(",", ":"))


def acknowledge_wildcard_statements(policy: IConstruct, statements: Any, reasons_by_sid: dict[str, str]) -> None:
    """Acknowledge every wildcard-resource finding `statements` cause on `policy`, once per finding.

    Each finding's reason joins the reasons of the statements (by Sid) that cause it, so a wildcard is
    never acknowledged without the statement that needs it saying why.
    """
    reasons: dict[str, list[str]] = {}
    for statement in statements:
        for resource in statement.resources:
            rule = wildcard_resource_rule(policy, resource)
            if "*" in rule:
                reasons.setdefault(rule, []).append(reasons_by_sid[statement.sid or ""])
    for rule, why in reasons.items():
        acknowledge(policy, rule, " ".join(dict.fromkeys(why)))
