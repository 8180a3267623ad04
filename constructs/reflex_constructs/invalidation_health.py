"""Alarms on what the cache health collector publishes: hit ratio too low, evictions too high, per cache.

They are ordinary CloudWatch alarms, named `reflex-<stage>-cache-<name>-hit-ratio-low` and
`reflex-<stage>-cache-<name>-evictions-high`, that notify the stage topic. Their state changes reach
EventBridge like any alarm's, so a reaction whose config names them (a cache's `on_alarms`, a scaling
policy's `alarms`) is triggered by them. Missing data (no traffic, collector not yet run) is not breaching.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from constructs import Construct

from reflex_constructs.notifications import Notifications
from reflex_core.invalidation_config import CacheConfig

NAMESPACE = "Reflex"
COLLECTOR_SERVICE = "cache_health"  # POWERTOOLS_SERVICE_NAME of the collector: a dimension of its metrics


def hit_ratio_alarm_name(stage: str, cache: str) -> str:
    return f"reflex-{stage}-cache-{cache}-hit-ratio-low"


def evictions_alarm_name(stage: str, cache: str) -> str:
    return f"reflex-{stage}-cache-{cache}-evictions-high"


@dataclass(frozen=True)
class CacheHealthAlarmsProps:
    stage: str
    caches: Sequence[CacheConfig]
    period_minutes: int
    notifications: Notifications


class CacheHealthAlarms(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: CacheHealthAlarmsProps) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.Alarm] = []
        action = cloudwatch_actions.SnsAction(props.notifications.topic)
        period = Duration.minutes(props.period_minutes)
        for cache in props.caches:
            dims = {"stage": props.stage, "cache": cache.name, "service": COLLECTOR_SERVICE}
            health = cache.health
            if health.hit_ratio_below is not None:
                metric = cloudwatch.Metric(namespace=NAMESPACE, metric_name="CacheHitRatio", dimensions_map=dims,
                                           statistic="Average", period=period)
                self._alarm(f"HitRatio-{cache.name}", hit_ratio_alarm_name(props.stage, cache.name), metric,
                            threshold=round(health.hit_ratio_below * 100, 3),
                            comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
                            periods=health.evaluation_periods, action=action,
                            description=f"Hit ratio of cache {cache.name} below {health.hit_ratio_below:.0%} "
                                        f"for {health.evaluation_periods} collections")
            if health.evictions_above is not None:
                metric = cloudwatch.Metric(namespace=NAMESPACE, metric_name="CacheEvictions", dimensions_map=dims,
                                           statistic="Sum", period=period)
                self._alarm(f"Evictions-{cache.name}", evictions_alarm_name(props.stage, cache.name), metric,
                            threshold=health.evictions_above,
                            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                            periods=health.evaluation_periods, action=action,
                            description=f"Cache {cache.name} evicted more than {health.evictions_above} keys per "
                                        f"{props.period_minutes} min for {health.evaluation_periods} collections "
                                        "(memory pressure)")

    def _alarm(self, construct_id: str, name: str, metric: cloudwatch.Metric, *, threshold: float,
               comparison: cloudwatch.ComparisonOperator, periods: int, action: cloudwatch_actions.SnsAction,
               description: str) -> None:
        alarm = metric.create_alarm(self, construct_id, alarm_name=name, alarm_description=description,
                                    threshold=threshold, comparison_operator=comparison,
                                    evaluation_periods=periods,
                                    treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        alarm.add_alarm_action(action)
        self.alarms.append(alarm)
