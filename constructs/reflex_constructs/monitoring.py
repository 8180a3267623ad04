"""Monitoring and alerting of the stage (`monitoring:`), built with cdk-monitoring-constructs.

* one `MonitoringFacade` with the stage's two dashboards: `reflex-<stage>` (detail) and
  `reflex-<stage>-Summary` (summary);
* per SLO: the latency, error-rate and burn-rate alarms derived from it (monitoring_config.py explains the
  derivation) and a composite `...-user-impact` alarm that is the only one that pages (action: the stage's
  encrypted notification topic). The signal alarms themselves have no action: they feed the composite and
  the Reflex policies that name them;
* the watched resources (ECS services, Auto Scaling groups, Aurora/RDS clusters and instances, the shard
  databases, ElastiCache, CloudFront) with their optional cause alarms (CPU, memory, connections, evictions:
  no action, for reactions and the dashboard);
* Reflex's own health: every reaction function, its DLQ, decisions by outcome (EMF metric `Reflex/Decisions`)
  and the `reflex-<stage>-reflex-circuit-open` alarm (action: the topic);
* saved Logs Insights queries (monitoring_queries.py) and journey canaries (monitoring_canaries.py).

Alarm names are exactly `MonitoringConfig.alarm_names(stage)` (set with `alarm_name_override`), so the
synth-time check of policy alarm names (config.py) and the alarms created agree; `MonitoringAlarms.names`
lists what was created and tests compare both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cdk_monitoring_constructs as cmc
from aws_cdk import Duration
from aws_cdk import aws_autoscaling as autoscaling
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from constructs import Construct

from reflex_constructs.monitoring_canaries import JourneyCanaries, JourneyCanariesProps
from reflex_constructs.monitoring_queries import MonitoringQueries, MonitoringQueriesProps
from reflex_constructs.reaction_function import METRICS_NAMESPACE, ReactionFunction
from reflex_core.monitoring_config import (
    REFLEX_RESOURCE,
    SIGNAL_AVAILABILITY,
    SIGNAL_BURN_LONG,
    SIGNAL_BURN_SHORT,
    SIGNAL_CIRCUIT_OPEN,
    SIGNAL_CONNECTIONS,
    SIGNAL_CPU,
    SIGNAL_ERROR_RATE,
    SIGNAL_EVICTIONS,
    SIGNAL_JOURNEY,
    SIGNAL_JOURNEY_LATENCY,
    SIGNAL_LATENCY,
    SIGNAL_MEMORY,
    SIGNAL_PAGE,
    DatabaseResource,
    Journey,
    LoadBalancerResource,
    MonitoringConfig,
    Slo,
    alarm_name,
)

ALB = "AWS/ApplicationELB"
GT = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
LT = cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD
NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING
DISAMBIGUATOR = "Critical"
BURN_LONG = Duration.hours(1)
BURN_SHORT = Duration.minutes(5)


@dataclass(frozen=True)
class StageMonitoringProps:
    stage: str
    config: MonitoringConfig
    topic: sns.ITopic
    # Every reaction function of the stage (with its DLQ and log group), whichever reactions are configured.
    functions: tuple[ReactionFunction, ...]


class StageMonitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, props: StageMonitoringProps) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        stage = props.stage
        self.dashboards = cmc.DefaultDashboardFactory(
            self, "Dashboards", dashboard_name_prefix=f"reflex-{stage}",
            create_dashboard=True, create_summary_dashboard=True, create_alarm_dashboard=False)
        self.facade = cmc.MonitoringFacade(
            self, "Facade",
            alarm_factory_defaults=cmc.AlarmFactoryDefaults(
                actions_enabled=True, alarm_name_prefix=f"reflex-{stage}",
                action=cmc.SnsAlarmActionStrategy(on_alarm_topic=props.topic)),
            metric_factory_defaults=cmc.MetricFactoryDefaults(),
            dashboard_factory=self.dashboards,
        )
        self.no_action = cmc.NoopAlarmActionStrategy()
        self.composites: dict[str, cloudwatch.AlarmBase] = {}
        config = props.config
        self.canaries = (JourneyCanaries(self, "Journeys", JourneyCanariesProps(
            stage=stage, journeys=tuple(config.journeys), artifact_retention_days=config.log_retention_days))
            if config.journeys else None)
        self.journey_alarms: dict[str, list[cloudwatch.AlarmBase]] = {}
        if config.slos or config.journeys:
            self.facade.add_large_header(f"Reflex {stage}: service level objectives")
        for journey in config.journeys:
            self.journey_alarms[journey.name] = self._journey(journey)
        for slo in config.slos:
            self._slo(slo)
        self._resources()
        if config.reflex.enabled:
            self._reflex_health()
        self.queries = MonitoringQueries(self, "Queries", MonitoringQueriesProps(
            stage=stage, log_groups=tuple(f.log_group for f in props.functions)))

    # ------------------------------------------------------------------ what was created
    @property
    def alarm_names(self) -> list[str]:
        """The names of every alarm created here (metric alarms from the facade and composites)."""
        names = [a.alarm_name for a in self.facade.created_alarms()]
        return sorted([*names, *self.composites])

    def _name(self, resource: str, signal: str) -> str:
        return alarm_name(self.props.stage, resource, signal)

    def _threshold(self, resource: str, signal: str, threshold: float, *, comparison: cloudwatch.ComparisonOperator,
                   periods: int, datapoints: int, tags: list[str], description: str,
                   paging: bool = False) -> cmc.CustomThreshold:
        return cmc.CustomThreshold(
            threshold=threshold, comparison_operator=comparison,
            alarm_name_override=self._name(resource, signal),
            evaluation_periods=periods, datapoints_to_alarm=datapoints,
            treat_missing_data_override=NOT_BREACHING,
            action_override=None if paging else self.no_action,
            custom_tags=tags, additional_description=description)

    # ------------------------------------------------------------------ SLOs
    def _load_balancer(self, name: str) -> LoadBalancerResource:
        (lb,) = [r for r in self.props.config.resources.load_balancers if r.name == name]
        return lb

    def _slo(self, slo: Slo) -> None:
        lb = self._load_balancer(slo.resource)
        ev = slo.evaluation
        period = Duration.seconds(ev.period_s)
        tag = f"symptom:{slo.resource}"
        groups = []
        if slo.latency is not None:
            latency = cloudwatch.MathExpression(
                expression="1000 * latency", label=f"{slo.latency.percentile} response time (ms)", period=period,
                using_metrics={"latency": self._alb_metric(lb, "TargetResponseTime", slo.latency.percentile)})
            title = f"Latency {slo.latency.percentile} (ms)"
            groups.append(cmc.CustomMetricGroup(title=title, important=True, metrics=[
                cmc.CustomMetricWithAlarm(metric=latency, alarm_friendly_name=f"{slo.resource}-latency", add_alarm={
                    DISAMBIGUATOR: self._threshold(
                        slo.resource, SIGNAL_LATENCY, slo.latency.threshold_ms, comparison=GT, periods=ev.periods,
                        datapoints=ev.datapoints, tags=[tag],
                        description=f"SLO: {slo.latency.percentile} latency of {slo.resource} at most "
                                    f"{slo.latency.threshold_ms:g} ms ({ev.datapoints} of {ev.periods} periods of "
                                    f"{ev.period_s} s above it)")})]))
        if slo.error_rate is not None:
            groups.append(cmc.CustomMetricGroup(title="5xx error rate (%)", important=True, metrics=[
                cmc.CustomMetricWithAlarm(
                    metric=self._error_rate(lb, period), alarm_friendly_name=f"{slo.resource}-error-rate", add_alarm={
                        DISAMBIGUATOR: self._threshold(
                            slo.resource, SIGNAL_ERROR_RATE, slo.error_rate.max_percent, comparison=GT,
                            periods=ev.periods, datapoints=ev.datapoints, tags=[tag],
                            description=f"SLO: at most {slo.error_rate.max_percent:g} % of {slo.resource}'s "
                                        "requests answered 5xx")})]))
        if slo.availability is not None:
            a = slo.availability
            burn_tag = f"burn:{slo.resource}"
            why = (f"availability SLO {a.target_percent:g} % over {a.window_days} days: error budget "
                   f"{a.error_budget_percent:g} %, burn rate {a.burn_rate:g} ({a.budget_percent:g} % of the budget in "
                   f"one hour) = {a.error_ratio_threshold_percent:g} % errors")
            groups.append(cmc.CustomMetricGroup(title="Error budget burn (% errors)", metrics=[
                cmc.CustomMetricWithAlarm(
                    metric=self._error_rate(lb, window, f"5xx % over {label}", signal.rsplit("-", 1)[1]),
                    alarm_friendly_name=f"{slo.resource}-{signal}", add_alarm={
                        DISAMBIGUATOR: self._threshold(
                            slo.resource, signal, round(a.error_ratio_threshold_percent, 6), comparison=GT, periods=1,
                            datapoints=1, tags=[burn_tag], description=f"{why}, over {label}")})
                for signal, window, label in ((SIGNAL_BURN_LONG, BURN_LONG, "the last hour"),
                                              (SIGNAL_BURN_SHORT, BURN_SHORT, "the last 5 minutes"))]))
        self.facade.monitor_custom(
            metric_groups=groups, alarm_friendly_name=f"slo-{slo.resource}",
            human_readable_name=f"SLO {slo.resource} (load balancer {lb.full_name})",
            description=_slo_description(slo))
        symptoms = [a.alarm for a in self.facade.created_alarms_with_tag(tag)]
        if slo.availability is not None:
            availability = self.facade.create_composite_alarm_using_tag(
                f"burn:{slo.resource}", disambiguator=DISAMBIGUATOR,
                composite_operator=cmc.CompositeAlarmOperator.AND,
                alarm_name_override=self._name(slo.resource, SIGNAL_AVAILABILITY), action_override=self.no_action,
                alarm_description=f"{slo.resource}: the error budget burns too fast over both the last hour and the "
                                  "last 5 minutes")
            assert availability is not None
            self.composites[self._name(slo.resource, SIGNAL_AVAILABILITY)] = availability
            symptoms.append(availability)
        for journey in self.props.config.journeys:
            if journey.service == slo.resource:
                symptoms.extend(self.journey_alarms[journey.name])
        self._page(slo.resource, symptoms)

    def _page(self, resource: str, symptoms: Sequence[cloudwatch.IAlarm]) -> None:
        # Hand-built: the facade's composites (create_composite_alarm_using_*) aggregate only its metric alarms,
        # and this one must also take the availability composite and the journeys' alarms.
        name = self._name(resource, SIGNAL_PAGE)
        page = cloudwatch.CompositeAlarm(
            self, f"Page-{resource}", composite_alarm_name=name,
            alarm_description=f"Users of {resource} are affected: one of its SLO or journey alarms is in ALARM. "
                              "This is the alarm that pages (docs/monitoring.md).",
            alarm_rule=cloudwatch.AlarmRule.any_of(*symptoms))
        page.add_alarm_action(cloudwatch_actions.SnsAction(self.props.topic))
        self.composites[name] = page
        self.facade.add_widget(cloudwatch.AlarmStatusWidget(
            alarms=[page, *symptoms], title=f"{resource}: user impact", width=24, height=3), add_to_summary=True)

    def _alb_metric(self, lb: LoadBalancerResource, metric: str, statistic: str,
                    period: Duration | None = None) -> cloudwatch.Metric:
        return cloudwatch.Metric(namespace=ALB, metric_name=metric, dimensions_map={"LoadBalancer": lb.full_name},
                                 statistic=statistic, period=period or Duration.minutes(1))

    def _error_rate(self, lb: LoadBalancerResource, period: Duration, label: str = "",
                    key: str = "") -> cloudwatch.MathExpression:
        """5xx responses (target and load balancer) per 100 requests; `key` keeps the metric ids of two windows
        apart when they share a graph."""
        return cloudwatch.MathExpression(
            expression=f"100 * (FILL(target5xx{key}, 0) + FILL(elb5xx{key}, 0)) / requests{key}",
            label=label or "5xx responses (% of requests)", period=period,
            using_metrics={
                f"target5xx{key}": self._alb_metric(lb, "HTTPCode_Target_5XX_Count", "Sum", period),
                f"elb5xx{key}": self._alb_metric(lb, "HTTPCode_ELB_5XX_Count", "Sum", period),
                f"requests{key}": self._alb_metric(lb, "RequestCount", "Sum", period),
            })

    # ------------------------------------------------------------------ journeys
    def _journey(self, journey: Journey) -> list[cloudwatch.AlarmBase]:
        assert self.canaries is not None
        canary = self.canaries.canaries[journey.name]
        tag = f"journey:{journey.name}"
        latency: dict[str, cmc.LatencyThreshold] = {}
        if journey.max_duration_ms is not None:
            latency[DISAMBIGUATOR] = cmc.LatencyThreshold(
                max_latency=Duration.millis(journey.max_duration_ms),
                alarm_name_override=self._name(journey.name, SIGNAL_JOURNEY_LATENCY), action_override=self.no_action,
                evaluation_periods=journey.periods, datapoints_to_alarm=journey.failures, custom_tags=[tag])
        self.facade.monitor_synthetics_canary(
            canary=canary, alarm_friendly_name=f"journey-{journey.name}",
            human_readable_name=f"Journey {journey.name}: {journey.method} {journey.url}",
            add_average_latency_alarm=latency)
        period = Duration.minutes(journey.every_minutes)
        self.facade.monitor_custom(
            alarm_friendly_name=f"journey-{journey.name}-success", add_to_detail_dashboard=False,
            add_to_summary_dashboard=False,
            metric_groups=[cmc.CustomMetricGroup(title=f"Journey {journey.name}: success (%)", metrics=[
                cmc.CustomMetricWithAlarm(
                    metric=canary.metric_success_percent(period=period, statistic="Average"),
                    alarm_friendly_name=f"journey-{journey.name}-success", add_alarm={
                        DISAMBIGUATOR: self._threshold(
                            journey.name, SIGNAL_JOURNEY, 100, comparison=LT, periods=journey.periods,
                            datapoints=journey.failures, tags=[tag],
                            description=f"The journey {journey.name} ({journey.method} {journey.url}, expecting "
                                        f"{journey.expected_status}) failed in {journey.failures} of the last "
                                        f"{journey.periods} runs")})])])
        return [a.alarm for a in self.facade.created_alarms_with_tag(tag)]

    # ------------------------------------------------------------------ watched resources
    def _resources(self) -> None:
        r = self.props.config.resources
        if not any((r.load_balancers, r.ecs_services, r.auto_scaling_groups, r.databases, r.caches, r.cdn)):
            return
        self.facade.add_large_header(f"Reflex {self.props.stage}: the stack")
        slo_resources = {s.resource for s in self.props.config.slos}
        for lb in r.load_balancers:
            if lb.name not in slo_resources:  # an SLO's group already shows the load balancer
                self.facade.monitor_custom(
                    alarm_friendly_name=f"lb-{lb.name}", human_readable_name=f"Load balancer {lb.name}",
                    metric_groups=[
                        cmc.CustomMetricGroup(title="Requests", metrics=[
                            self._alb_metric(lb, "RequestCount", "Sum")]),
                        cmc.CustomMetricGroup(title="Response time (s)", metrics=[
                            self._alb_metric(lb, "TargetResponseTime", p) for p in ("p50", "p90", "p99")]),
                        cmc.CustomMetricGroup(title="5xx error rate (%)", metrics=[
                            self._error_rate(lb, Duration.minutes(1))]),
                    ])
        for svc in r.ecs_services:
            self._ecs_service(svc.name, svc.cluster, svc.service, svc.cpu_above_percent, svc.memory_above_percent)
        for asg in r.auto_scaling_groups:
            self.facade.monitor_auto_scaling_group(
                auto_scaling_group=autoscaling.AutoScalingGroup.from_auto_scaling_group_name(
                    self, f"Asg-{asg.name}", asg.group),
                alarm_friendly_name=f"asg-{asg.name}", human_readable_name=f"Auto Scaling group {asg.group}")
            if asg.cpu_above_percent is not None:
                cpu = cloudwatch.Metric(namespace="AWS/EC2", metric_name="CPUUtilization", statistic="Average",
                                        dimensions_map={"AutoScalingGroupName": asg.group},
                                        period=Duration.minutes(1))
                self._cause_alarms(asg.name, f"Auto Scaling group {asg.group}: CPU", [
                    (cpu, SIGNAL_CPU, asg.cpu_above_percent, "CPU utilization (%)")])
        for db in r.databases:
            self._database(db)
        for cache in r.caches:
            self.facade.monitor_elasti_cache_cluster(
                cluster_id=cache.cluster_id, cluster_type=cmc.ElastiCacheClusterType.REDIS,
                alarm_friendly_name=f"cache-{cache.name}", human_readable_name=f"ElastiCache {cache.cluster_id}",
                add_cpu_usage_alarm=({DISAMBIGUATOR: cmc.UsageThreshold(
                    max_usage_percent=cache.cpu_above_percent, alarm_name_override=self._name(cache.name, SIGNAL_CPU),
                    action_override=self.no_action)} if cache.cpu_above_percent is not None else None),
                add_max_evicted_items_count_alarm=({DISAMBIGUATOR: cmc.MaxItemsCountThreshold(
                    max_items_count=cache.evictions_above, action_override=self.no_action,
                    alarm_name_override=self._name(cache.name, SIGNAL_EVICTIONS))}
                    if cache.evictions_above is not None else None))
        for cdn in r.cdn:
            self.facade.monitor_cloud_front_distribution(
                distribution=cloudfront.Distribution.from_distribution_attributes(
                    self, f"Cdn-{cdn.name}", distribution_id=cdn.distribution_id,
                    domain_name=cdn.domain_name or f"{cdn.distribution_id}.cloudfront.net"),
                alarm_friendly_name=f"cdn-{cdn.name}", human_readable_name=f"CloudFront {cdn.name}")

    def _ecs_service(self, name: str, cluster: str, service: str, cpu: float | None, memory: float | None) -> None:
        # monitor_simple_fargate_service/ec2_service take only an ecs.FargateService/Ec2Service the stack owns
        # (the Python bindings refuse an imported service), so the same AWS/ECS metrics are given as a custom
        # monitoring: its widgets and alarms are still the library's.
        dims = {"ClusterName": cluster, "ServiceName": service}
        metrics = [(cloudwatch.Metric(namespace="AWS/ECS", metric_name=metric, dimensions_map=dims,
                                      statistic="Average", period=Duration.minutes(1)), signal, limit, title)
                   for metric, signal, limit, title in (("CPUUtilization", SIGNAL_CPU, cpu, "CPU utilization (%)"),
                                                        ("MemoryUtilization", SIGNAL_MEMORY, memory,
                                                         "Memory utilization (%)"))]
        self._cause_alarms(name, f"ECS service {cluster}/{service}", metrics)

    def _cause_alarms(self, resource: str, title: str,
                      metrics: list[tuple[cloudwatch.Metric, str, float | None, str]]) -> None:
        groups = []
        for metric, signal, limit, group_title in metrics:
            if limit is None:
                groups.append(cmc.CustomMetricGroup(title=group_title, metrics=[metric]))
                continue
            groups.append(cmc.CustomMetricGroup(title=group_title, metrics=[cmc.CustomMetricWithAlarm(
                metric=metric, alarm_friendly_name=f"{resource}-{signal}", add_alarm={
                    DISAMBIGUATOR: self._threshold(resource, signal, limit, comparison=GT, periods=3, datapoints=3,
                                                   tags=[f"cause:{resource}"],
                                                   description=f"{title}: {group_title} above {limit:g}")})]))
        self.facade.monitor_custom(alarm_friendly_name=f"res-{resource}", human_readable_name=title,
                                   metric_groups=groups)

    def _database(self, db: DatabaseResource) -> None:
        cpu = ({DISAMBIGUATOR: cmc.UsageThreshold(
            max_usage_percent=db.cpu_above_percent, alarm_name_override=self._name(db.name, SIGNAL_CPU),
            action_override=self.no_action)} if db.cpu_above_percent is not None else None)
        connections = ({DISAMBIGUATOR: cmc.HighConnectionCountThreshold(
            max_connection_count=db.connections_above, alarm_name_override=self._name(db.name, SIGNAL_CONNECTIONS),
            action_override=self.no_action)} if db.connections_above is not None else None)
        label = f"{'Shard database' if db.role == 'shard' else 'Database'} {db.cluster_id or db.instance_id}"
        name = f"db-{db.name}"
        if db.cluster_id is not None:
            cluster = rds.DatabaseCluster.from_database_cluster_attributes(
                self, f"Db-{db.name}", cluster_identifier=db.cluster_id)
            if db.engine == "aurora":
                self.facade.monitor_aurora_cluster(
                    cluster=cluster, alarm_friendly_name=name, human_readable_name=label,
                    add_cpu_usage_alarm=cpu, add_max_connection_count_alarm=connections)
            else:
                self.facade.monitor_rds_cluster(
                    cluster=cluster, alarm_friendly_name=name, human_readable_name=label,
                    add_cpu_usage_alarm=cpu, add_max_connection_count_alarm=connections)
        else:
            assert db.instance_id is not None
            # Only the identifier is used (for the metrics' DBInstanceIdentifier dimension).
            instance = rds.DatabaseInstance.from_database_instance_attributes(
                self, f"Db-{db.name}", instance_identifier=db.instance_id,
                instance_endpoint_address=f"{db.instance_id}.rds.amazonaws.com", port=5432, security_groups=[])
            self.facade.monitor_rds_instance(
                instance=instance, alarm_friendly_name=name, human_readable_name=label,
                add_cpu_usage_alarm=cpu, add_max_connection_count_alarm=connections)

    # ------------------------------------------------------------------ Reflex itself
    def _reflex_health(self) -> None:
        stage = self.props.stage
        self.facade.add_large_header(f"Reflex {stage}: Reflex itself")
        reactions = [f.reaction for f in self.props.functions]
        circuit = {f"c{i}": cloudwatch.Metric(
            namespace=METRICS_NAMESPACE, metric_name="Decisions", statistic="Sum", period=Duration.minutes(5),
            dimensions_map={"stage": stage, "reaction": reaction, "outcome": "skipped",
                            "reason": "circuit-open-tripped"}) for i, reaction in enumerate(reactions)}
        groups = [
            cmc.CustomMetricGroup(title="Decisions by outcome", important=True, metrics=[
                _decisions_search(stage, "", "${PROP('Dim.reaction')} ${PROP('Dim.outcome')} ${PROP('Dim.reason')}")]),
            cmc.CustomMetricGroup(title="Failed decisions", metrics=[
                _decisions_search(stage, 'outcome="failed"', "${PROP('Dim.reaction')} ${PROP('Dim.reason')}")]),
        ]
        if circuit:
            expression = " + ".join(f"FILL({k}, 0)" for k in circuit)
            groups.append(cmc.CustomMetricGroup(title="Circuit breakers tripped", metrics=[cmc.CustomMetricWithAlarm(
                metric=cloudwatch.MathExpression(expression=expression, using_metrics=circuit,
                                                 label="breakers tripped", period=Duration.minutes(5)),
                alarm_friendly_name="reflex-circuit-open", add_alarm={
                    DISAMBIGUATOR: self._threshold(
                        REFLEX_RESOURCE, SIGNAL_CIRCUIT_OPEN, 0, comparison=GT, periods=1, datapoints=1,
                        tags=["reflex"], paging=True,
                        description="A Reflex circuit breaker tripped: a policy acted too often and is stopped "
                                    "(docs/runbooks). Notified on the topic.")})]))
        self.facade.monitor_custom(alarm_friendly_name="reflex-decisions", human_readable_name="Reflex decisions",
                                   metric_groups=groups)
        for function in self.props.functions:
            self.facade.monitor_lambda_function(
                lambda_function=function.function, alarm_friendly_name=f"reflex-fn-{function.reaction}",
                human_readable_name=f"Reflex {function.reaction} function", add_to_summary_dashboard=False)
            self.facade.monitor_sqs_queue(
                queue=function.dead_letter_queue, alarm_friendly_name=f"reflex-dlq-{function.reaction}",
                human_readable_name=f"Reflex {function.reaction} dead-letter queue", add_to_summary_dashboard=False)


def _decisions_search(stage: str, extra: str, label: str) -> cloudwatch.MathExpression:
    """Every series of the EMF metric `Reflex/Decisions` of the stage (dimensions stage, reaction, outcome,
    reason: reflex_core/audit.py), summed per 5 minutes. A plain SEARCH expression: the library's
    CustomMetricSearch turns every dimension it lists into a filter, and these dimensions must stay open."""
    query = f'{{{METRICS_NAMESPACE},stage,reaction,outcome,reason}} MetricName="Decisions" stage="{stage}" {extra}'
    return cloudwatch.MathExpression(expression=f"SEARCH('{query.strip()}', 'Sum', 300)", using_metrics={},
                                     label=label, period=Duration.minutes(5))


def _slo_description(slo: Slo) -> str:
    parts = []
    if slo.latency is not None:
        parts.append(f"{slo.latency.percentile} <= {slo.latency.threshold_ms:g} ms")
    if slo.error_rate is not None:
        parts.append(f"5xx <= {slo.error_rate.max_percent:g} %")
    if slo.availability is not None:
        parts.append(f"availability {slo.availability.target_percent:g} % / {slo.availability.window_days} d")
    return f"SLO of {slo.resource}: " + ", ".join(parts)
