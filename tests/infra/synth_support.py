"""Synthesize the CDK app the way `cdk synth` does (cdk.json context, cdk-nag plugin), but in-process and
without bundling the Lambda asset (context `aws:cdk:bundling-stacks=[]`), so a synth takes seconds.

"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
for _path in (ROOT, ROOT / "constructs", ROOT / "functions"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

ACCOUNT = "123456789012"
REGION = "eu-west-1"
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")


def cdk_context(bundling: bool = False) -> dict[str, Any]:
    context = dict(json.loads((ROOT / "cdk.json").read_text())["context"])
    if not bundling:
        context["aws:cdk:bundling-stacks"] = []
    return context


@contextmanager
def default_environment(account: str | None = ACCOUNT, region: str | None = REGION) -> Iterator[None]:
    """What the CDK CLI sets from the caller's credentials (CDK_DEFAULT_ACCOUNT/REGION)."""
    saved = {k: os.environ.get(k) for k in ("CDK_DEFAULT_ACCOUNT", "CDK_DEFAULT_REGION")}
    for key, value in (("CDK_DEFAULT_ACCOUNT", account), ("CDK_DEFAULT_REGION", region)):
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Synthesized:
    stack: Any
    template: Any  # aws_cdk.assertions.Template
    outdir: Path

    @property
    def json(self) -> dict[str, Any]:
        return self.template.to_json()

    def resources(self, type_: str) -> dict[str, dict[str, Any]]:
        return {k: r for k, r in self.json["Resources"].items() if r["Type"] == type_}

    def validation_report(self) -> dict[str, Any]:
        return json.loads((self.outdir / "validation-report.json").read_text())


def synthesize(stage: str, config_dir: Path, outdir: Path, *, account: str | None = ACCOUNT,
               region: str | None = REGION) -> Synthesized:
    from aws_cdk import Stack
    from aws_cdk.assertions import Template

    import app as reflex_app

    with default_environment(account, region):
        app = reflex_app.build_app(stage, config_dir, context=cdk_context(), outdir=str(outdir))
        stack = app.node.find_child(f"Reflex-{stage}")
        assert isinstance(stack, Stack)
        # Template.from_stack synthesizes the app: the cdk-nag plugin runs and raises on any finding.
        template = Template.from_stack(stack)
    return Synthesized(stack=stack, template=template, outdir=outdir)


def write_config(directory: Path, stage: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stage}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def render(value: Any, resources: dict[str, dict[str, Any]]) -> Any:
    """A CloudFormation value as a readable string: joins joined, a Ref to an SSM parameter replaced by
    its name, other Refs as `<LogicalId>` and GetAtts as `<LogicalId.Attr>`."""
    if isinstance(value, list):
        return [render(v, resources) for v in value]
    if not isinstance(value, dict):
        return value
    if "Fn::Join" in value:
        delimiter, items = value["Fn::Join"]
        return delimiter.join(str(render(i, resources)) for i in items)
    if "Ref" in value:
        target = resources.get(value["Ref"])
        if target is not None and target["Type"] == "AWS::SSM::Parameter":
            return target["Properties"]["Name"]
        return f"<{value['Ref']}>"
    if "Fn::GetAtt" in value:
        return f"<{'.'.join(value['Fn::GetAtt'])}>"
    return value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def iam_statements(synth: Synthesized) -> list[dict[str, Any]]:
    """Every Allow statement of every identity policy (AWS::IAM::Policy and inline role policies)."""
    out: list[dict[str, Any]] = []
    for resource in synth.json["Resources"].values():
        docs = []
        if resource["Type"] == "AWS::IAM::Policy":
            docs.append(resource["Properties"]["PolicyDocument"])
        if resource["Type"] == "AWS::IAM::Role":
            docs.extend(p["PolicyDocument"] for p in resource["Properties"].get("Policies", []))
        for doc in docs:
            out.extend(s for s in doc["Statement"] if s["Effect"] == "Allow")
    return out


def unpinned(pattern: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge rule pattern without its `account` (every Reflex rule pins it: test_infra_least_privilege.py),
    for tests about what else the rule matches."""
    assert pattern.get("account") and len(pattern["account"]) == 1, pattern
    return {k: v for k, v in pattern.items() if k != "account"}
