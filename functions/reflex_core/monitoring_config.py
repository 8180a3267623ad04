"""The typed config of monitoring and alerting (`monitoring:` in `config/<stage>.yaml`).

Synth time only: no function reads it (it is in `SECTIONS`, so every function drops it before validating).
The construct `reflex_constructs.monitoring` builds from it, with cdk-monitoring-constructs, one dashboard
per stage (detail + summary), the SLO alarms, one paging composite alarm per service, Reflex's own health,
saved Logs Insights queries and Synthetics canaries (docs/monitoring.md).

Every alarm this section creates has a deterministic name (`MonitoringConfig.alarm_names()`), so that a
policy can name it (`scale_out.alarms.names`, `guard_alarms.names`, ...). When the section is present,
`ReflexConfig` refuses a policy that names an alarm neither created here nor listed in `external_alarms`.

Thresholds derive from the SLOs as follows (the numbers are in docs/monitoring.md):

* latency: the percentile of the target response time, per `evaluation.period_s`, above `threshold_ms` in
  `evaluation.datapoints` of the last `evaluation.periods` periods (a direct threshold);
* error rate: 5xx responses / requests (in percent) above `max_percent`, same evaluation;
* availability: a multi-window burn-rate alarm (Google SRE workbook, "alerting on SLOs"): the error budget
  is `100 - target_percent`; burning `budget_percent` of a `window_days` budget in one hour is a burn
  rate of `budget_percent/100 * window_days * 24`; the alarm is in ALARM when the error ratio exceeds
  burn rate x budget both over the last hour and over the last 5 minutes (the short window makes it reset
  quickly once the errors stop).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from reflex_core.config_base import NAME_PATTERN, StageConfig, StrictModel, repeated

_ELB_ARN = r"^arn:aws[a-z\-]*:elasticloadbalancing:[a-z0-9\-]+:\d{12}:"
LOAD_BALANCER_ARN = re.compile(_ELB_ARN + r"loadbalancer/(app/[A-Za-z0-9\-]{1,32}/[0-9a-f]{16})$")
TARGET_GROUP_ARN = re.compile(_ELB_ARN + r"(targetgroup/[A-Za-z0-9\-]{1,32}/[0-9a-f]{16})$")
PERCENTILE = re.compile(r"^p(\d{2}(?:\.\d{1,2})?)$")

# Names of the alarms, by signal: `reflex-<stage>-<resource>-<signal>` (see `alarm_name`).
SIGNAL_LATENCY = "latency"
SIGNAL_ERROR_RATE = "error-rate"
SIGNAL_AVAILABILITY = "availability"
SIGNAL_BURN_LONG = "availability-burn-1h"
SIGNAL_BURN_SHORT = "availability-burn-5m"
SIGNAL_PAGE = "user-impact"
SIGNAL_CPU = "cpu-high"
SIGNAL_MEMORY = "memory-high"
SIGNAL_CONNECTIONS = "connections-high"
SIGNAL_EVICTIONS = "evictions-high"
SIGNAL_JOURNEY = "journey-failed"
SIGNAL_JOURNEY_LATENCY = "journey-slow"
# Reflex's own health, from the decision metrics (resource part: "reflex").
REFLEX_RESOURCE = "reflex"
SIGNAL_CIRCUIT_OPEN = "circuit-open"


def alarm_name(stage: str, resource: str, signal: str) -> str:
    return f"reflex-{stage}-{resource}-{signal}"


Name = Field(pattern=NAME_PATTERN, min_length=1, max_length=64)


# --------------------------------------------------------------------------- resources


class LoadBalancerResource(StrictModel):
    """An Application Load Balancer (SLOs: latency, error rate, availability)."""

    name: str = Name
    arn: str = Field(description="arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>")
    target_group_arns: list[str] = Field(default_factory=list, description="target groups shown on the dashboard")

    @field_validator("arn")
    @classmethod
    def _arn(cls, v: str) -> str:
        if not LOAD_BALANCER_ARN.match(v):
            raise ValueError("not an Application Load Balancer ARN "
                             "(arn:aws:elasticloadbalancing:<region>:<account>:loadbalancer/app/<name>/<id>)")
        return v

    @field_validator("target_group_arns")
    @classmethod
    def _target_groups(cls, v: list[str]) -> list[str]:
        for arn in v:
            if not TARGET_GROUP_ARN.match(arn):
                raise ValueError(f"{arn!r} is not a target group ARN")
        return v

    @property
    def full_name(self) -> str:
        """The `LoadBalancer` dimension of AWS/ApplicationELB metrics: app/<name>/<id>."""
        match = LOAD_BALANCER_ARN.match(self.arn)
        assert match is not None
        return match.group(1)


class EcsServiceResource(StrictModel):
    name: str = Name
    cluster: str = Field(min_length=1)
    service: str = Field(min_length=1)
    cpu_above_percent: float | None = Field(default=None, gt=0, le=100)
    memory_above_percent: float | None = Field(default=None, gt=0, le=100)


class AutoScalingGroupResource(StrictModel):
    name: str = Name
    group: str = Field(min_length=1, description="the Auto Scaling group's name")
    cpu_above_percent: float | None = Field(default=None, gt=0, le=100)


class DatabaseResource(StrictModel):
    """An Aurora or RDS cluster, or an RDS instance (e.g. a shard database): exactly one id."""

    name: str = Name
    cluster_id: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9\-]{0,62}$")
    instance_id: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9\-]{0,62}$")
    engine: Literal["aurora", "rds"] = "aurora"
    role: Literal["app", "shard"] = "app"
    cpu_above_percent: float | None = Field(default=None, gt=0, le=100)
    connections_above: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_id(self) -> DatabaseResource:
        if (self.cluster_id is None) == (self.instance_id is None):
            raise ValueError("give exactly one of cluster_id (Aurora/RDS cluster) or instance_id (RDS instance)")
        return self


class CacheResource(StrictModel):
    name: str = Name
    cluster_id: str = Field(min_length=1, description="the ElastiCache cache cluster id (a node, e.g. catalog-001)")
    cpu_above_percent: float | None = Field(default=None, gt=0, le=100)
    evictions_above: int | None = Field(default=None, ge=0)


class CdnResource(StrictModel):
    """A CloudFront distribution, on the dashboard (its SLOs are journeys: its metrics live in us-east-1)."""

    name: str = Name
    distribution_id: str = Field(pattern=r"^E[A-Z0-9]{5,20}$")
    domain_name: str = Field(default="", description="shown on the dashboard only")


class MonitoredResources(StrictModel):
    load_balancers: list[LoadBalancerResource] = Field(default_factory=list)
    ecs_services: list[EcsServiceResource] = Field(default_factory=list)
    auto_scaling_groups: list[AutoScalingGroupResource] = Field(default_factory=list)
    databases: list[DatabaseResource] = Field(default_factory=list)
    caches: list[CacheResource] = Field(default_factory=list)
    cdn: list[CdnResource] = Field(default_factory=list)

    def names(self) -> list[str]:
        groups: list[list[LoadBalancerResource] | list[EcsServiceResource] | list[AutoScalingGroupResource]
                     | list[DatabaseResource] | list[CacheResource] | list[CdnResource]] = [
            self.load_balancers, self.ecs_services, self.auto_scaling_groups, self.databases, self.caches, self.cdn]
        return [r.name for group in groups for r in group]

    def kind_of(self, name: str) -> str | None:
        if any(r.name == name for r in self.load_balancers):
            return "load_balancers"
        if any(r.name == name for r in self.cdn):
            return "cdn"
        for kind in ("ecs_services", "auto_scaling_groups", "databases", "caches"):
            if any(r.name == name for r in getattr(self, kind)):
                return kind
        return None


# --------------------------------------------------------------------------- SLOs


class Evaluation(StrictModel):
    """How a direct-threshold alarm evaluates: `datapoints` breaching of the last `periods` periods."""

    period_s: Literal[60, 300] = 60
    periods: int = Field(default=5, ge=1, le=60)
    datapoints: int = Field(default=3, ge=1, le=60)

    @model_validator(mode="after")
    def _datapoints(self) -> Evaluation:
        if self.datapoints > self.periods:
            raise ValueError(f"datapoints ({self.datapoints}) cannot exceed periods ({self.periods})")
        return self


class LatencySlo(StrictModel):
    percentile: str = Field(description="p50 to p99.99, e.g. p99 or p99.9")
    threshold_ms: float = Field(description="the percentile must stay at or below this")

    @field_validator("percentile")
    @classmethod
    def _percentile(cls, v: str) -> str:
        match = PERCENTILE.match(v)
        if not match or not 50 <= float(match.group(1)) <= 99.99:
            raise ValueError(f"{v!r} is not a percentile from p50 to p99.99 (e.g. p90, p99, p99.9)")
        return v

    @field_validator("threshold_ms")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"must be greater than 0 ms, got {v}")
        return v


class ErrorRateSlo(StrictModel):
    max_percent: float = Field(gt=0, lt=100, description="5xx responses per 100 requests")


class AvailabilitySlo(StrictModel):
    target_percent: float = Field(gt=0, description="e.g. 99.9; 100 leaves no error budget and is refused")
    window_days: int = Field(default=30, ge=1, le=90)
    # The share of the window's error budget that, burnt within one hour, pages (2 % is the SRE workbook's).
    budget_percent: float = Field(default=2, gt=0, le=50)

    @field_validator("target_percent")
    @classmethod
    def _target(cls, v: float) -> float:
        if v >= 100:
            raise ValueError("an availability of 100 % leaves no error budget: no alarm can be derived from it "
                             "(use e.g. 99.9)")
        return v

    @property
    def error_budget_percent(self) -> float:
        return 100 - self.target_percent

    @property
    def burn_rate(self) -> float:
        """How many times faster than sustainable the budget burns when `budget_percent` goes in one hour."""
        return self.budget_percent / 100 * self.window_days * 24

    @property
    def error_ratio_threshold_percent(self) -> float:
        """The error ratio (percent of requests) both burn-rate windows compare against."""
        return self.burn_rate * self.error_budget_percent

    @model_validator(mode="after")
    def _attainable(self) -> AvailabilitySlo:
        if self.error_ratio_threshold_percent >= 100:
            raise ValueError(
                f"target_percent {self.target_percent} with window_days {self.window_days} and budget_percent "
                f"{self.budget_percent} gives a burn-rate threshold of {self.error_ratio_threshold_percent:.1f} % "
                "errors, which can never be reached: raise the target or lower budget_percent")
        return self


class Slo(StrictModel):
    """The service level objectives of one user-facing entry point (a load balancer in monitoring.resources)."""

    resource: str = Field(min_length=1, description="the name of a load balancer in monitoring.resources")
    latency: LatencySlo | None = None
    error_rate: ErrorRateSlo | None = None
    availability: AvailabilitySlo | None = None
    evaluation: Evaluation = Field(default_factory=Evaluation)

    @model_validator(mode="after")
    def _consistent(self) -> Slo:
        if self.latency is None and self.error_rate is None and self.availability is None:
            raise ValueError("give at least one of latency, error_rate or availability")
        if self.error_rate is not None and self.availability is not None:
            budget = self.availability.error_budget_percent
            if self.error_rate.max_percent < budget:
                raise ValueError(
                    f"error_rate.max_percent ({self.error_rate.max_percent}) is below the availability error "
                    f"budget ({budget:g} %): the error-rate alarm would page while the availability SLO is met")
        return self


# --------------------------------------------------------------------------- synthetic journeys


class Journey(StrictModel):
    """A critical user journey checked by a CloudWatch Synthetics canary."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,39}$", description="lowercase, at most 40 characters")
    url: str = Field(pattern=r"^https?://[^\s]+$")
    method: Literal["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] = "GET"
    expected_status: int = Field(default=200, ge=100, le=599)
    body_contains: str = Field(default="", description="text the response body must contain ('' = no check)")
    every_minutes: int = Field(default=5, ge=1, le=60)
    # Alarm when the journey failed in `failures` of the last `periods` runs.
    failures: int = Field(default=2, ge=1, le=10)
    periods: int = Field(default=3, ge=1, le=10)
    max_duration_ms: float | None = Field(default=None, gt=0, description="also alarm when a run is slower")
    service: str | None = Field(default=None, description="the resource whose paging alarm this journey joins")

    @model_validator(mode="after")
    def _shape(self) -> Journey:
        if self.failures > self.periods:
            raise ValueError(f"failures ({self.failures}) cannot exceed periods ({self.periods})")
        if self.method == "HEAD" and self.body_contains:
            raise ValueError("body_contains cannot be checked on a HEAD request (it has no body)")
        return self


# --------------------------------------------------------------------------- section


class ReflexHealth(StrictModel):
    """Reflex's own health on the dashboard (functions, DLQs, decisions by outcome) and the alarm on circuit
    breakers tripping (from the `Decisions` metric). Failed actions already alarm through each function's
    errors alarm (`reflex-<stage>-<reaction>-errors`)."""

    enabled: bool = True


class MonitoringConfig(StrictModel):
    resources: MonitoredResources = Field(default_factory=MonitoredResources)
    slos: list[Slo] = Field(default_factory=list)
    journeys: list[Journey] = Field(default_factory=list)
    reflex: ReflexHealth = Field(default_factory=ReflexHealth)
    external_alarms: list[str] = Field(
        default_factory=list, description="alarms that exist outside Reflex which policies may name")
    log_retention_days: int = Field(default=30, ge=1, description="canary artifacts are kept this long")

    @field_validator("external_alarms")
    @classmethod
    def _external(cls, v: list[str]) -> list[str]:
        for name in v:
            if not name or len(name) > 255:
                raise ValueError(f"alarm name {name!r} must be 1-255 characters")
        if dup := repeated(v):
            raise ValueError(f"listed twice: {', '.join(dup)}")
        return v

    @model_validator(mode="after")
    def _references(self) -> MonitoringConfig:
        names = [*self.resources.names(), *(j.name for j in self.journeys), REFLEX_RESOURCE]
        if dup := repeated(names):
            raise ValueError(f"resources.*.name and journeys.*.name must be unique (and not {REFLEX_RESOURCE!r}): "
                             f"{', '.join(dup)}")
        slo_names = [s.resource for s in self.slos]
        if dup := repeated(slo_names):
            raise ValueError(f"slos: one SLO per resource; repeated: {', '.join(dup)}")
        for i, slo in enumerate(self.slos):
            kind = self.resources.kind_of(slo.resource)
            if kind is None:
                raise ValueError(f"slos.{i}.resource: {slo.resource!r} is not a resource in monitoring.resources")
            if kind == "cdn":
                raise ValueError(f"slos.{i}.resource: {slo.resource!r} is a CloudFront distribution, whose metrics "
                                 "exist only in us-east-1 where this stack's alarms cannot read them; watch it with "
                                 "a journey (journeys.*.url, max_duration_ms) instead")
            if kind != "load_balancers":
                raise ValueError(f"slos.{i}.resource: {slo.resource!r} is one of resources.{kind}; SLOs apply to "
                                 "the user-facing entry points (resources.load_balancers)")
        for i, journey in enumerate(self.journeys):
            if journey.service is not None and journey.service not in slo_names:
                raise ValueError(f"journeys.{i}.service: {journey.service!r} has no SLO in monitoring.slos")
        return self

    # ------------------------------------------------------------------ alarm names
    def slo_alarm_names(self, stage: str, slo: Slo) -> dict[str, str]:
        """signal -> alarm name for one SLO (the paging composite included)."""
        names = {}
        if slo.latency is not None:
            names[SIGNAL_LATENCY] = alarm_name(stage, slo.resource, SIGNAL_LATENCY)
        if slo.error_rate is not None:
            names[SIGNAL_ERROR_RATE] = alarm_name(stage, slo.resource, SIGNAL_ERROR_RATE)
        if slo.availability is not None:
            for signal in (SIGNAL_BURN_LONG, SIGNAL_BURN_SHORT, SIGNAL_AVAILABILITY):
                names[signal] = alarm_name(stage, slo.resource, signal)
        names[SIGNAL_PAGE] = alarm_name(stage, slo.resource, SIGNAL_PAGE)
        return names

    def journey_alarm_names(self, stage: str, journey: Journey) -> dict[str, str]:
        names = {SIGNAL_JOURNEY: alarm_name(stage, journey.name, SIGNAL_JOURNEY)}
        if journey.max_duration_ms is not None:
            names[SIGNAL_JOURNEY_LATENCY] = alarm_name(stage, journey.name, SIGNAL_JOURNEY_LATENCY)
        return names

    def resource_alarm_names(self, stage: str) -> list[str]:
        r = self.resources
        names = []
        for svc in r.ecs_services:
            if svc.cpu_above_percent is not None:
                names.append(alarm_name(stage, svc.name, SIGNAL_CPU))
            if svc.memory_above_percent is not None:
                names.append(alarm_name(stage, svc.name, SIGNAL_MEMORY))
        for asg in r.auto_scaling_groups:
            if asg.cpu_above_percent is not None:
                names.append(alarm_name(stage, asg.name, SIGNAL_CPU))
        for db in r.databases:
            if db.cpu_above_percent is not None:
                names.append(alarm_name(stage, db.name, SIGNAL_CPU))
            if db.connections_above is not None:
                names.append(alarm_name(stage, db.name, SIGNAL_CONNECTIONS))
        for cache in r.caches:
            if cache.cpu_above_percent is not None:
                names.append(alarm_name(stage, cache.name, SIGNAL_CPU))
            if cache.evictions_above is not None:
                names.append(alarm_name(stage, cache.name, SIGNAL_EVICTIONS))
        return names

    def reflex_alarm_names(self, stage: str) -> list[str]:
        if not self.reflex.enabled:
            return []
        return [alarm_name(stage, REFLEX_RESOURCE, SIGNAL_CIRCUIT_OPEN)]

    def alarm_names(self, stage: str) -> list[str]:
        """Every alarm the section creates, by its exact name."""
        names = [n for slo in self.slos for n in self.slo_alarm_names(stage, slo).values()]
        names += [n for j in self.journeys for n in self.journey_alarm_names(stage, j).values()]
        return names + self.resource_alarm_names(stage) + self.reflex_alarm_names(stage)


class MonitoringStageConfig(StageConfig):
    """Synth time only: no function validates this section (it is in SECTIONS, so functions drop it)."""

    monitoring: MonitoringConfig | None = None

    @model_validator(mode="after")
    def _monitoring_names_fit_stage(self) -> MonitoringStageConfig:
        if self.monitoring is not None:
            for name in self.monitoring.alarm_names(self.stage):
                if len(name) > 255:
                    raise ValueError(f"monitoring: alarm name {name!r} is longer than 255 characters")
            created = set(self.monitoring.alarm_names(self.stage))
            for name in self.monitoring.external_alarms:
                if name in created:
                    raise ValueError(f"monitoring.external_alarms: {name!r} is created by monitoring itself")
        return self
