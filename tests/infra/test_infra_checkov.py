"""checkov, an IaC scanner besides cdk-nag, on the synthesized templates of both stages: every finding is fixed or
acknowledged below, by check and resource type, with the reason; the count of unacknowledged findings is 0.

checkov runs from its own virtualenv (`.venv-checkov`, `make setup`; requirements-checkov.txt says why), once for
both templates. `REFLEX_CHECKOV` may name another checkov executable.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from synth_support import ROOT, Synthesized

pytestmark = pytest.mark.slow

CHECKOV = Path(os.environ.get("REFLEX_CHECKOV", ROOT / ".venv-checkov" / "bin" / "checkov"))

# THE acknowledgments: (check id, resource type) -> why the finding stands. Anything else checkov reports fails.
ACKNOWLEDGED: dict[tuple[str, str], str] = {
    ("CKV_AWS_27", "AWS::SQS::Queue"): (
        "False positive: every queue uses SQS-managed server-side encryption (SqsManagedSseEnabled, cdk-nag SQS2 "
        "checks it); checkov only recognises a KMS key. A customer managed key would need a key policy for each "
        "service that delivers to the queues (EventBridge, SNS, Scheduler, Lambda)."),
    ("CKV_AWS_117", "AWS::Lambda::Function"): (
        "The scaler, promoter and CDN batcher call AWS APIs only; a VPC would add NAT or endpoints and nothing to "
        "their isolation (their IAM is the boundary). The functions that reach Redis run in the VPC."),
    ("CKV_AWS_119", "AWS::DynamoDB::Table"): (
        "Encrypted with the AWS managed key: access is governed by IAM (item-level, LeadingKeys), and a customer "
        "managed key would add a key policy to keep in step with every function role for no extra isolation."),
    ("CKV_AWS_158", "AWS::Logs::LogGroup"): (
        "Function logs hold decisions and ids, never secrets or customer data (the audit record shape); CloudWatch "
        "Logs encrypts them at rest. The promotion state machine's logs, which include execution data, use a KMS key."),
    ("CKV_AWS_173", "AWS::Lambda::Function"): (
        "The environment holds table, topic, queue and parameter names and ARNs (RuntimeSettings), no secrets; Lambda "
        "encrypts it at rest with its service key. Secrets (Redis AUTH) are read from Secrets Manager at run time."),
    ("CKV_AWS_111", "AWS::IAM::Policy"): (
        "application-autoscaling:RegisterScalableTarget can only be scoped to a scalable-target ARN with a "
        "service-generated id and has no condition key but tags: Resource '*' (permissions_common."
        "RESOURCE_STAR_ALLOWLIST); the scaler's allowlist limits it to configured Aurora clusters."),
    # prod only (resources the stack creates for `create:` blocks):
    ("CKV_AWS_149", "AWS::SecretsManager::Secret"): (
        "The managed cache's AUTH token secret uses the AWS managed key aws/secretsmanager; who may read it is decided "
        "by IAM (the invalidator's and the health collector's roles only), which a customer managed key would repeat."),
    ("CKV_AWS_18", "AWS::S3::Bucket"): (
        "The only bucket is the distribution's access-log bucket: logging access to it would only log the log writes "
        "(cdk-nag S1 acknowledged for the same reason in invalidation_managed_cdn.py)."),
    ("CKV_AWS_21", "AWS::S3::Bucket"): (
        "The access-log bucket receives objects CloudFront writes once and a lifecycle rule expires after 90 days; "
        "versioning would only keep expired logs. Block public access and TLS-only are on."),
}


def checkov_findings(templates: list[Path]) -> list[dict[str, Any]]:
    if not CHECKOV.exists():
        pytest.fail(f"checkov not found at {CHECKOV}: run `make setup` (it creates .venv-checkov)")
    cmd = [str(CHECKOV), "--framework", "cloudformation", "--output", "json", "--quiet", "--compact",
           "--skip-download", *[arg for t in templates for arg in ("-f", str(t))]]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1200)
    assert result.stdout.strip(), f"checkov printed nothing: {result.stderr[-2000:]}"
    reports = json.loads(result.stdout)
    failed = []
    for report in reports if isinstance(reports, list) else [reports]:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        failed.extend(report["results"]["failed_checks"])
    return failed


def test_checkov_finds_nothing_unacknowledged(dev: Synthesized, prod: Synthesized) -> None:
    templates = [next(s.outdir.glob("*.template.json")) for s in (dev, prod)]
    findings = checkov_findings(templates)
    unacknowledged = sorted({f"{f['check_id']} {f['resource']} ({f['check_name']})" for f in findings
                             if (f["check_id"], f["resource"].split(".", 1)[0]) not in ACKNOWLEDGED})
    assert unacknowledged == []
    # An acknowledgment nothing needs any more is removed, so the list stays the truth.
    used = {(f["check_id"], f["resource"].split(".", 1)[0]) for f in findings}
    assert set(ACKNOWLEDGED) <= used, sorted(set(ACKNOWLEDGED) - used)
