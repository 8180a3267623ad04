"""CloudWatch Synthetics canaries for the configured critical journeys (`monitoring.journeys`).

One canary per journey (Node.js Puppeteer runtime, inline code: one HTTP request, the status and the body
text checked), all writing their artifacts to one encrypted, private, TLS-only bucket that expires them.
The alarms on the canaries are made by `reflex_constructs.monitoring` with cdk-monitoring-constructs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_synthetics as synthetics
from constructs import Construct

from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule
from reflex_core.monitoring_config import Journey

RUNTIME = synthetics.Runtime.SYNTHETICS_NODEJS_PUPPETEER_13_0

# The canary's handler: no browser, one request with Node's fetch. `synthetics.executeStep` records the step
# (pass/fail, duration) in the run report; a thrown error fails the run (SuccessPercent < 100).
_HANDLER = """\
const synthetics = require('Synthetics');
const log = require('SyntheticsLogger');
const JOURNEY = __JOURNEY__;

exports.handler = async function () {
  return await synthetics.executeStep(JOURNEY.name, async function () {
    const response = await fetch(JOURNEY.url, {method: JOURNEY.method, redirect: 'manual',
                                               signal: AbortSignal.timeout(JOURNEY.timeout_ms)});
    const body = JOURNEY.method === 'HEAD' ? '' : await response.text();
    log.info(`${JOURNEY.method} ${JOURNEY.url}: ${response.status}, ${body.length} characters`);
    if (response.status !== JOURNEY.expected_status) {
      throw new Error(`status ${response.status}, expected ${JOURNEY.expected_status}`);
    }
    if (JOURNEY.body_contains && !body.includes(JOURNEY.body_contains)) {
      throw new Error(`the body does not contain ${JSON.stringify(JOURNEY.body_contains)}`);
    }
  });
};
"""


def canary_code(journey: Journey, timeout_ms: int) -> str:
    """The inline handler for one journey (its settings embedded as JSON)."""
    settings = {"name": journey.name, "url": journey.url, "method": journey.method,
                "expected_status": journey.expected_status, "body_contains": journey.body_contains,
                "timeout_ms": timeout_ms}
    return _HANDLER.replace("__JOURNEY__", json.dumps(settings))


def canary_name(stage: str, journey: Journey) -> str:
    return f"reflex-{stage}-{journey.name}"


@dataclass(frozen=True)
class JourneyCanariesProps:
    stage: str
    journeys: tuple[Journey, ...]
    artifact_retention_days: int = 30


class JourneyCanaries(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: JourneyCanariesProps) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self, "Artifacts",
            encryption=s3.BucketEncryption.S3_MANAGED, enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(props.artifact_retention_days))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(self.bucket, "AwsSolutions-S1",
                    "Holds only the canaries' run artifacts (reports, logs), written by the canaries' own role "
                    "and expired by a lifecycle rule; access logs of these writes would add nothing.")
        self.canaries: dict[str, synthetics.Canary] = {}
        for journey in props.journeys:
            self.canaries[journey.name] = self._canary(props.stage, journey)

    def _canary(self, stage: str, journey: Journey) -> synthetics.Canary:
        interval = Duration.minutes(journey.every_minutes)
        timeout_s = min(journey.every_minutes * 60, 60)
        canary = synthetics.Canary(
            self, f"Canary-{journey.name}",
            canary_name=canary_name(stage, journey),
            runtime=RUNTIME,
            test=synthetics.Test.custom(code=synthetics.Code.from_inline(canary_code(journey, timeout_s * 1000 - 5000)),
                                        handler="index.handler"),
            schedule=synthetics.Schedule.rate(interval),
            timeout=Duration.seconds(timeout_s),
            artifacts_bucket_location=synthetics.ArtifactsBucketLocation(bucket=self.bucket,
                                                                         prefix=journey.name),
            artifact_s3_encryption_mode=synthetics.ArtifactsEncryptionMode.S3_MANAGED,
            provisioned_resource_cleanup=True,
            success_retention_period=Duration.days(7),
            failure_retention_period=Duration.days(30),
        )
        # The role the Synthetics L2 creates: writes below the journey's artifacts prefix and to the log groups of
        # the function Synthetics creates for the canary (its name gets a generated suffix: cwsyn-<name>-<id>).
        stack = Stack.of(self)
        acknowledge(canary.role, wildcard_resource_rule(canary, f"{self.bucket.bucket_arn}/{journey.name}/*"),
                    "The canary writes its run artifacts (report, logs, screenshots) as new objects under its own "
                    "prefix of the artifacts bucket; their keys are generated per run.")
        acknowledge(canary.role, wildcard_resource_rule(
            canary, f"arn:aws:logs:{stack.region}:{stack.account}:log-group:/aws/lambda/cwsyn-*"),
                    "The Lambda function Synthetics creates for the canary is named cwsyn-<canary>-<generated id>, "
                    "unknown at synth time; the grant covers only the cwsyn- log groups of this account and region.")
        acknowledge(canary.role, wildcard_resource_rule(canary, "*"),
                    "s3:ListAllMyBuckets and cloudwatch:PutMetricData, which every Synthetics canary uses, support no "
                    "resource-level permissions; PutMetricData is limited to the CloudWatchSynthetics namespace by a "
                    "condition.")
        return canary
