"""IAM of the invalidation functions, scoped to what the config names.

* Functions that reach Redis (invalidator, cache health collector): `secretsmanager:GetSecretValue` on the AUTH
  secrets of the configured caches (a secret named without its ARN suffix is matched with `-??????`, the six
  characters Secrets Manager appends), read on the secrets the stack generates, and `elasticache:Connect` on
  the replication group (or serverless cache) and user of each cache using IAM authentication.
* The invalidator: `cloudwatch:ListTagsForResource` on this account's alarms, only when an `on_alarms` rule
  matches alarms by tag.
* The CDN batcher: `cloudfront:CreateInvalidation`, `GetInvalidation` and `ListInvalidations` on the configured
  distributions, and `s3:ListBucket` on origin buckets listed for the inventory.

Sending to and consuming from the queues is granted where the queues are wired (invalidation_reaction.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from invalidator.redis_connection import RedisConnectionSettings
from reflex_constructs.nag_acknowledgements import acknowledge, wildcard_resource_rule
from reflex_core.invalidation_config import MANAGED, InvalidationConfig

_SECRET_SUFFIX = re.compile(r"-[A-Za-z0-9]{6}$")


@dataclass(frozen=True)
class InvalidationPermissionsProps:
    invalidation: InvalidationConfig
    redis_roles: Sequence[iam.IRole]
    invalidator_role: iam.IRole | None
    batcher_role: iam.IRole | None
    managed_secrets: Sequence[secretsmanager.ISecret] = ()
    managed_distribution_arns: Mapping[str, str] | None = None
    # The cache health collector's role (one of redis_roles), which uses the caches' read-only users if configured.
    collector_role: iam.IRole | None = None


class InvalidationPermissions(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: InvalidationPermissionsProps) -> None:
        super().__init__(scope, construct_id)
        self._stack = Stack.of(self)
        inv = props.invalidation
        self.policies: list[iam.Policy] = []
        # The collector connects as each cache's read-only RBAC user when one is configured (health_secret_id,
        # health_iam_user_id): it then gets that user's credentials only, not the invalidator's.
        collector = props.collector_role
        for construct_id, roles, for_collector in (
                ("RedisAccess", [r for r in props.redis_roles if r is not collector], False),
                ("HealthRedisAccess", [r for r in props.redis_roles if r is collector], True)):
            statements = [*self._secret_statements(inv, for_collector), *self._iam_auth_statements(inv, for_collector)]
            if statements and roles:
                self.policies.append(iam.Policy(self, construct_id, statements=statements, roles=roles))
        for role in props.redis_roles:
            for secret in props.managed_secrets:
                secret.grant_read(role)
        if props.invalidator_role is not None and any(rule.alarms.tags for owner in inv.owners
                                                      for rule in owner.on_alarms):
            alarms = self._stack.format_arn(service="cloudwatch", resource="alarm", resource_name="*",
                                            arn_format=ArnFormat.COLON_RESOURCE_NAME)
            policy = iam.Policy(self, "AlarmTags", roles=[props.invalidator_role], statements=[iam.PolicyStatement(
                sid="AlarmTags", actions=["cloudwatch:ListTagsForResource"], resources=[alarms])])
            acknowledge(policy, wildcard_resource_rule(self, alarms),
                        "An on_alarms rule matches alarms by tag, so their names are unknown in advance; read-only "
                        "tag lookup limited to this account's alarms in this region.")
            self.policies.append(policy)
        if props.batcher_role is not None and inv.cdn:
            statements = self._cdn_statements(inv, props.managed_distribution_arns or {})
            self.policies.append(iam.Policy(self, "CdnAccess", roles=[props.batcher_role], statements=statements))

    def _secret_statements(self, inv: InvalidationConfig, for_collector: bool = False) -> list[iam.PolicyStatement]:
        arns = sorted({self._secret_arn(redis.secret_id) for c in inv.caches
                       if (redis := _as_seen_by(c.redis, for_collector)) is not None and redis.auth == "secret"
                       and redis.secret_id})
        if not arns:
            return []
        return [iam.PolicyStatement(sid="RedisAuthSecrets", actions=["secretsmanager:GetSecretValue"],
                                    resources=arns)]

    def _secret_arn(self, secret_id: str) -> str:
        if secret_id.startswith("arn:"):
            return secret_id if _SECRET_SUFFIX.search(secret_id) else f"{secret_id}-??????"
        return self._stack.format_arn(service="secretsmanager", resource="secret", resource_name=f"{secret_id}-??????",
                                      arn_format=ArnFormat.COLON_RESOURCE_NAME)

    def _iam_auth_statements(self, inv: InvalidationConfig, for_collector: bool = False) -> list[iam.PolicyStatement]:
        resources: set[str] = set()
        for cache in inv.caches:
            redis = _as_seen_by(cache.redis, for_collector)
            if redis is None or redis.auth != "iam":
                continue
            assert redis.iam_cache_name and redis.iam_user_id
            kind = "serverlesscache" if redis.iam_serverless else "replicationgroup"
            resources.add(self._elasticache_arn(kind, redis.iam_cache_name.lower(), redis.region))
            resources.add(self._elasticache_arn("user", redis.iam_user_id, redis.region))
        if not resources:
            return []
        return [iam.PolicyStatement(sid="ElastiCacheIamAuth", actions=["elasticache:Connect"],
                                    resources=sorted(resources))]

    def _elasticache_arn(self, kind: str, name: str, region: str | None) -> str:
        return self._stack.format_arn(service="elasticache", resource=kind, resource_name=name,
                                      region=region or self._stack.region, arn_format=ArnFormat.COLON_RESOURCE_NAME)

    def _cdn_statements(self, inv: InvalidationConfig, managed: Mapping[str, str]) -> list[iam.PolicyStatement]:
        distributions = []
        for cdn in inv.cdn:
            if cdn.distribution_id == MANAGED:
                distributions.append(managed[cdn.name])
            else:
                distributions.append(self._stack.format_arn(service="cloudfront", region="", resource="distribution",
                                                            resource_name=cdn.distribution_id,
                                                            arn_format=ArnFormat.SLASH_RESOURCE_NAME))
        statements = [iam.PolicyStatement(
            sid="CloudFrontInvalidations",
            actions=["cloudfront:CreateInvalidation", "cloudfront:GetInvalidation", "cloudfront:ListInvalidations"],
            resources=distributions)]
        buckets = sorted({c.origin.bucket for c in inv.cdn if c.origin is not None and c.origin.inventory})
        if buckets:
            statements.append(iam.PolicyStatement(
                sid="OriginInventory", actions=["s3:ListBucket"],
                resources=[self._stack.format_arn(service="s3", region="", account="", resource=b) for b in buckets]))
        return statements


def _as_seen_by(redis: RedisConnectionSettings | None, for_collector: bool) -> RedisConnectionSettings | None:
    return redis.for_health_collector() if redis is not None and for_collector else redis
