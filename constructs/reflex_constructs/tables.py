"""The three DynamoDB tables of a stage, with the key schemas the functions use.

* audit: one item per decision (`pk`, `sk`), TTL `expires_at`; retained when the stack is deleted.
* state: cooldowns, locks, alarm memory, pre-warm windows, circuit breakers (`pk`), TTL `expires_at`.
* idempotency: Powertools idempotency records (`id`, TTL `expiration`: the Powertools defaults).

All on-demand, encrypted (AWS managed key) and with point-in-time recovery. Named
`reflex-<stage>-audit|state|idempotency` (the names the runbooks and the simulator use); a fixed name
also means a key-schema change cannot silently replace the retained audit table.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from constructs import Construct


@dataclass(frozen=True)
class ReflexTablesProps:
    stage: str
    # Audit records are evidence: keep them when the stack goes. State and idempotency records are
    # disposable (they only carry guardrail memory that expires anyway).
    audit_removal_policy: RemovalPolicy = RemovalPolicy.RETAIN
    state_removal_policy: RemovalPolicy = RemovalPolicy.DESTROY


class ReflexTables(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: ReflexTablesProps) -> None:
        super().__init__(scope, construct_id)
        self._prefix = f"reflex-{props.stage}"
        self.audit = self._build_table("Audit", "audit", "pk", "expires_at", sort_key="sk",
                                       removal_policy=props.audit_removal_policy)
        # Evidence: a table delete (by the stack or by hand) must first turn this off, deliberately.
        cfn_audit = self.audit.node.default_child
        assert isinstance(cfn_audit, dynamodb.CfnTable)
        cfn_audit.deletion_protection_enabled = True
        self.state = self._build_table("State", "state", "pk", "expires_at",
                                       removal_policy=props.state_removal_policy)
        self.idempotency = self._build_table("Idempotency", "idempotency", "id", "expiration",
                                             removal_policy=props.state_removal_policy)

    @property
    def all(self) -> list[dynamodb.Table]:
        return [self.audit, self.state, self.idempotency]

    def _build_table(self, construct_id: str, name: str, partition_key: str, ttl_attribute: str, *,
                     removal_policy: RemovalPolicy, sort_key: str | None = None) -> dynamodb.Table:
        return dynamodb.Table(
            self, construct_id,
            table_name=f"{self._prefix}-{name}",
            partition_key=dynamodb.Attribute(name=partition_key, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=sort_key, type=dynamodb.AttributeType.STRING) if sort_key else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.AWS_MANAGED,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute=ttl_attribute,
            removal_policy=removal_policy,
        )
