"""The stage's notification topic: decisions worth a human's attention, and every Reflex alarm.

Encrypted with a customer managed KMS key (rotation on) and TLS-only. Because CloudWatch alarms publish
to it, the key policy lets CloudWatch use the key and the topic policy lets CloudWatch publish, both
limited to alarms of this account: without them an encrypted topic silently drops alarm notifications.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct


@dataclass(frozen=True)
class NotificationsProps:
    topic_name: str
    emails: list[str] = field(default_factory=list)


class Notifications(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: NotificationsProps) -> None:
        super().__init__(scope, construct_id)
        self.key = self._build_key()
        self.topic = self._build_topic(props.topic_name)
        for email in props.emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

    def _build_key(self) -> kms.Key:
        key = kms.Key(
            self, "TopicKey",
            description="Encrypts the Reflex notification topic",
            enable_key_rotation=True,
            # Only in-flight SNS messages use this key; nothing at rest depends on it.
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        # In a key policy, Resource "*" means "this key". The same confused-deputy conditions as the topic policy:
        # only CloudWatch alarms of this account and region may use the key.
        stack = Stack.of(self)
        key.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublishToEncryptedTopic",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["kms:Decrypt", "kms:GenerateDataKey*"],
            resources=["*"],
            conditions=alarm_source_conditions(stack),
        ))
        return key

    def _build_topic(self, topic_name: str) -> sns.Topic:
        topic = sns.Topic(self, "Topic", topic_name=topic_name, master_key=self.key, enforce_ssl=True)
        stack = Stack.of(self)
        topic.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsOfThisAccount",
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions=alarm_source_conditions(stack),
        ))
        return topic


def alarm_source_conditions(stack: Stack) -> dict[str, dict[str, str]]:
    """CloudWatch acting for an alarm of this account and region only (aws:SourceAccount, aws:SourceArn)."""
    return {
        "StringEquals": {"aws:SourceAccount": stack.account},
        "ArnLike": {"aws:SourceArn": stack.format_arn(service="cloudwatch", resource="alarm", resource_name="*",
                                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)},
    }
