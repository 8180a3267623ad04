"""Cache and CDN invalidation: three functions and exactly the triggers, queues and permissions the config's
`invalidation:` section asks for.

* `invalidator` (`ReactionFunction`, in the VPC when one is configured): EventBridge rules for the custom events
  of every cache and distribution, S3 `Object Created` / `Object Deleted` events of the origin buckets, alarm
  rules, alarm-action permissions and alarm-topic subscriptions for `on_alarms`, Scheduler schedules for
  `schedules`, and its continuation queue (SQS event source, one message per invocation, partial failures).
* `cdn_batcher`: one coalescing queue per distribution, consumed with a batching window of `coalesce_window_s`
  and `ReportBatchItemFailures`; at most two concurrent batches per queue.
* `cache_health`: the collector, every `health_every_minutes`, and the alarms on its metrics.
* Optionally the ElastiCache replication groups and CloudFront distributions the config asks the stack to create.

What only the deployed stack knows (queue URLs, created endpoints, secrets and distribution ids) reaches the
functions in `REFLEX_INVALIDATION` (`invalidator.invalidation_runtime.InvalidationSettings`). The config-to-
infrastructure mapping is in the pure functions at the end, testable without a synth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aws_cdk import CfnOutput, Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_lambda_event_sources as event_sources
from constructs import Construct

from reflex_constructs.alarm_triggers import (
    AlarmMatcher,
    AlarmTriggers,
    AlarmTriggersProps,
    CustomEventMatcher,
    pinned_pattern,
)
from reflex_constructs.invalidation_health import CacheHealthAlarms, CacheHealthAlarmsProps
from reflex_constructs.invalidation_managed_cache import ManagedCacheProps, ManagedReplicationGroup
from reflex_constructs.invalidation_managed_cdn import ManagedDistribution, ManagedDistributionProps
from reflex_constructs.invalidation_network import InvalidationNetwork, InvalidationNetworkProps
from reflex_constructs.invalidation_permissions import InvalidationPermissions, InvalidationPermissionsProps
from reflex_constructs.invalidation_queues import InvalidationQueues, InvalidationQueuesProps
from reflex_constructs.reaction_function import ReactionFunction, ReactionFunctionProps, StageResources
from reflex_constructs.reaction_schedules import (
    ReactionSchedules,
    ReactionSchedulesProps,
    ScheduleGroup,
    ScheduleSpec,
    rate_expression,
)
from reflex_core.config import ReflexConfig
from reflex_core.invalidation_config import InvalidationConfig

INVALIDATOR = "invalidator"
BATCHER = "cdn_batcher"
COLLECTOR = "cache_health"
SETTINGS_ENV = "REFLEX_INVALIDATION"  # invalidator.invalidation_runtime.ENV_NAME
FUNCTION_TIMEOUT_S = 60
S3_SOURCE = "aws.s3"
S3_DETAIL_TYPES = ("Object Created", "Object Deleted")
BATCHER_MAX_CONCURRENCY = 2


@dataclass(frozen=True)
class InvalidationReactionProps:
    shared: StageResources
    config: ReflexConfig
    schedule_group: ScheduleGroup


class InvalidationReaction(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: InvalidationReactionProps) -> None:
        super().__init__(scope, construct_id)
        config = props.config
        inv = config.invalidation
        stage = config.stage
        self.network = self._build_network(stage, inv)
        self.managed_caches = {c.name: ManagedReplicationGroup(self, f"Cache-{c.name}", ManagedCacheProps(
            stage=stage, cache=c, network=self.network)) for c in inv.caches if c.create is not None
            and self.network is not None}
        self.managed_distributions = {c.name: ManagedDistribution(self, f"Cdn-{c.name}", ManagedDistributionProps(
            stage=stage, cdn=c, prod_like=config.is_prod_like)) for c in inv.cdn if c.create is not None}
        network: dict[str, Any] = {} if self.network is None else {
            "vpc": self.network.vpc, "vpc_subnets": self.network.subnets,
            "security_groups": (self.network.functions_group,)}
        self.invalidator = ReactionFunction(self, "Function", ReactionFunctionProps(
            reaction=INVALIDATOR, shared=props.shared, timeout_s=FUNCTION_TIMEOUT_S, memory_mb=512,
            description=f"Reflex invalidator ({stage}): Redis keys, patterns and tags; CloudFront paths",
            **(network if inv.caches else {})))
        self.batcher = ReactionFunction(self, "Batcher", ReactionFunctionProps(
            reaction=BATCHER, shared=props.shared, timeout_s=FUNCTION_TIMEOUT_S,
            description=f"Reflex CDN batcher ({stage}): one CloudFront invalidation per distribution per window")
        ) if inv.cdn else None
        self.collector = ReactionFunction(self, "Collector", ReactionFunctionProps(
            reaction=COLLECTOR, shared=props.shared, timeout_s=FUNCTION_TIMEOUT_S,
            description=f"Reflex cache health ({stage}): Redis INFO to CloudWatch metrics", **network)
        ) if inv.caches else None
        self.queues = InvalidationQueues(self, "Queues", InvalidationQueuesProps(
            stage=stage, cdn_names=[c.name for c in inv.cdn], notifications=props.shared.notifications,
            consumer_timeout_s=FUNCTION_TIMEOUT_S, continuation=bool(inv.caches)))
        self._wire_queues(inv)
        self._set_environment()
        self.triggers = AlarmTriggers(self, "Triggers", AlarmTriggersProps(
            target=self.invalidator, alarms=invalidation_alarm_matchers(inv),
            alarm_topic_arns=[t.arn for t in config.alarm_topics] if invalidation_alarm_matchers(inv) else [],
            custom_events=invalidation_custom_events(inv)))
        self.origin_rule = self._build_origin_rule(inv)
        self.schedules = ReactionSchedules(self, "Schedules", ReactionSchedulesProps(
            target=self.invalidator, group=props.schedule_group, schedules=invalidation_schedules(inv)))
        self.collector_schedule = ReactionSchedules(self, "CollectorSchedule", ReactionSchedulesProps(
            target=self.collector, group=props.schedule_group, schedules=[collector_schedule(inv)])
        ) if self.collector is not None else None
        self.health = CacheHealthAlarms(self, "Health", CacheHealthAlarmsProps(
            stage=stage, caches=inv.caches, period_minutes=inv.health_every_minutes,
            notifications=props.shared.notifications))
        redis_roles = [f.role for f in (self.invalidator, self.collector) if f is not None and inv.caches]
        self.permissions = InvalidationPermissions(self, "Permissions", InvalidationPermissionsProps(
            invalidation=inv, redis_roles=redis_roles, invalidator_role=self.invalidator.role,
            batcher_role=self.batcher.role if self.batcher else None,
            collector_role=self.collector.role if self.collector else None,
            managed_secrets=[c.secret for c in self.managed_caches.values()],
            managed_distribution_arns={n: d.distribution.distribution_arn
                                       for n, d in self.managed_distributions.items()}))
        self._outputs()

    # ------------------------------------------------------------------ builders
    @staticmethod
    def _existing_ports(inv: InvalidationConfig) -> list[int]:
        return [c.redis.port for c in inv.caches if c.redis is not None]

    def _build_network(self, stage: str, inv: InvalidationConfig) -> InvalidationNetwork | None:
        if inv.vpc is None or not inv.caches:
            return None
        return InvalidationNetwork(self, "Network", InvalidationNetworkProps(
            stage=stage, vpc=inv.vpc, existing_cache_ports=self._existing_ports(inv)))

    def _wire_queues(self, inv: InvalidationConfig) -> None:
        queues = self.queues
        if queues.continuation is not None:
            self.invalidator.function.add_event_source(event_sources.SqsEventSource(
                queues.continuation, batch_size=1, report_batch_item_failures=True))
            queues.continuation.grant_send_messages(self.invalidator.role)
        for cdn in inv.cdn:
            queue = queues.cdn[cdn.name]
            queue.grant_send_messages(self.invalidator.role)
            assert self.batcher is not None
            queue.grant_send_messages(self.batcher.role)  # deferred paths and tracking messages
            window = cdn.coalesce_window_s
            self.batcher.function.add_event_source(event_sources.SqsEventSource(
                queue, batch_size=500 if window >= 1 else 10,
                max_batching_window=Duration.seconds(window) if window else None,
                report_batch_item_failures=True, max_concurrency=BATCHER_MAX_CONCURRENCY))

    def _set_environment(self) -> None:
        settings: dict[str, Any] = {
            "continuation_queue_url": self.queues.continuation.queue_url if self.queues.continuation else "",
            "cdn_queue_urls": {name: q.queue_url for name, q in self.queues.cdn.items()},
            "managed_caches": {name: {"host": rg.host, "port": rg.port, "secret_id": rg.secret.secret_arn,
                                      "cluster": rg.cluster} for name, rg in self.managed_caches.items()},
            "managed_distributions": {name: d.distribution.distribution_id
                                      for name, d in self.managed_distributions.items()},
        }
        value = Stack.of(self).to_json_string(settings)
        for fn in (self.invalidator, self.batcher, self.collector):
            if fn is not None:
                fn.function.add_environment(SETTINGS_ENV, value)

    def _build_origin_rule(self, inv: InvalidationConfig) -> events.Rule | None:
        buckets = invalidation_origin_buckets(inv)
        if not buckets:
            return None
        return events.Rule(
            self, "OriginObjectsRule", description="Object created/deleted in an origin bucket: invalidate its paths",
            event_pattern=pinned_pattern(self, {"source": [S3_SOURCE], "detail-type": list(S3_DETAIL_TYPES),
                                                "detail": {"bucket": {"name": buckets}}}),
            targets=[self.invalidator.event_target()])

    def _outputs(self) -> None:
        CfnOutput(self, "InvalidatorFunctionName", value=self.invalidator.function.function_name)
        if self.queues.continuation is not None:
            CfnOutput(self, "ContinuationQueueUrl", value=self.queues.continuation.queue_url)
        for name, queue in self.queues.cdn.items():
            CfnOutput(self, f"CdnQueueUrl-{name}", value=queue.queue_url,
                      description=f"Coalescing queue of cdn {name}")
        for name, dist in self.managed_distributions.items():
            CfnOutput(self, f"DistributionId-{name}", value=dist.distribution.distribution_id)
            CfnOutput(self, f"DistributionDomain-{name}", value=dist.distribution.distribution_domain_name)
        for name, rg in self.managed_caches.items():
            CfnOutput(self, f"CacheEndpoint-{name}", value=rg.host)
            CfnOutput(self, f"CacheAuthSecret-{name}", value=rg.secret.secret_arn)


# --------------------------------------------------------------------------- config -> infrastructure


def invalidation_alarm_matchers(inv: InvalidationConfig) -> list[AlarmMatcher]:
    out = []
    for kind, owners in (("cache", inv.caches), ("cdn", inv.cdn)):
        for owner in owners:
            for i, rule in enumerate(owner.on_alarms):
                out.append(AlarmMatcher(name=f"{kind}-{owner.name}-{i}", alarm_names=tuple(rule.alarms.names),
                                        alarm_prefixes=tuple(rule.alarms.prefixes), by_tags=bool(rule.alarms.tags),
                                        tag_name_prefixes=tuple(rule.alarms.tag_name_prefixes)))
    return out


def invalidation_custom_events(inv: InvalidationConfig) -> list[CustomEventMatcher]:
    matchers = {CustomEventMatcher(source=m.source, detail_type=m.detail_type): None
                for owner in inv.owners for m in owner.on_events}
    return list(matchers)


def invalidation_origin_buckets(inv: InvalidationConfig) -> list[str]:
    return sorted({c.origin.bucket for c in inv.cdn if c.origin is not None and c.origin.object_events})


def invalidation_schedules(inv: InvalidationConfig) -> list[ScheduleSpec]:
    specs = []
    for scope, owners in (("cache", inv.caches), ("cdn", inv.cdn)):
        for owner in owners:
            for sched in owner.schedules:
                specs.append(ScheduleSpec(
                    name=f"{scope}-{owner.name}-{sched.name}", operation="invalidate",
                    expression=f"cron({sched.cron})", timezone=sched.timezone, policy=owner.name,
                    params={"scope": scope, "schedule": sched.name},
                    # A late run is still worth doing: the invalidation is as valid an hour later.
                    max_event_age_s=3600,
                    description=f"Invalidate for {scope} {owner.name}: schedule {sched.name}"))
    return specs


def collector_schedule(inv: InvalidationConfig) -> ScheduleSpec:
    minutes = inv.health_every_minutes
    return ScheduleSpec(name="collect", operation="collect", expression=rate_expression(minutes),
                        max_event_age_s=max(60, minutes * 60),
                        description=f"Every {minutes} min: Redis INFO of every cache to CloudWatch metrics")

