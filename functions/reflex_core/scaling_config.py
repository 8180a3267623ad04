"""The `scaling` section of the stage config: what the scaler reads (and the promoter, for scale-in freezes)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from reflex_core.config_base import (
    NAME_PATTERN,
    AlarmMatch,
    Cron,
    EventMatch,
    RateLimit,
    StageConfig,
    StrictModel,
    Timezone,
    repeated,
)

# --------------------------------------------------------------------------- targets


class EcsServiceTarget(StrictModel):
    kind: Literal["ecs-service"]
    cluster: str = Field(min_length=1, pattern=NAME_PATTERN)
    service: str = Field(min_length=1, pattern=NAME_PATTERN)

    @property
    def key(self) -> str:
        return f"ecs-service/{self.cluster}/{self.service}"


class AutoScalingGroupTarget(StrictModel):
    kind: Literal["asg"]
    name: str = Field(min_length=1, max_length=255)

    @property
    def key(self) -> str:
        return f"asg/{self.name}"


class AuroraReplicasTarget(StrictModel):
    """Aurora read replicas, driven through Application Auto Scaling (`rds:cluster:ReadReplicaCount`)."""

    kind: Literal["aurora-replicas"]
    cluster: str = Field(min_length=1, pattern=NAME_PATTERN)

    @property
    def key(self) -> str:
        return f"aurora-replicas/{self.cluster}"


ScalingTarget = Annotated[
    EcsServiceTarget | AutoScalingGroupTarget | AuroraReplicasTarget, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- scaling policy


class Bounds(StrictModel):
    min: int = Field(ge=0)
    max: int = Field(ge=1)
    max_step: int = Field(default=4, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class StepAdjustment(StrictModel):
    """Add `add_percent` of current capacity when the metric is at least `breach_from` past the threshold.

    The breach is relative: 0.5 means the metric is 50 % past its threshold.
    """

    breach_from: float = Field(ge=0)
    add_percent: float = Field(gt=0, le=1000)


def _default_steps() -> list[StepAdjustment]:
    return [
        StepAdjustment(breach_from=0.0, add_percent=25),
        StepAdjustment(breach_from=0.5, add_percent=50),
        StepAdjustment(breach_from=1.0, add_percent=100),
    ]


class ScaleOut(StrictModel):
    alarms: AlarmMatch
    steps: list[StepAdjustment] = Field(default_factory=_default_steps, min_length=1)
    cooldown_s: int = Field(default=120, ge=0)
    # While the alarm stays in ALARM, step out again once the cooldown has passed.
    repeat_while_alarm: bool = True

    @field_validator("steps")
    @classmethod
    def _sorted(cls, v: list[StepAdjustment]) -> list[StepAdjustment]:
        froms = [s.breach_from for s in v]
        if froms != sorted(froms) or len(set(froms)) != len(froms):
            raise ValueError("steps must be sorted by breach_from with no duplicates")
        if froms[0] != 0:
            raise ValueError("the first step must start at breach_from 0")
        return v


class ScaleIn(StrictModel):
    when_ok_for_s: int = Field(default=600, ge=60)
    step: int = Field(default=1, ge=1)
    cooldown_s: int = Field(default=300, ge=0)


class Prewarm(StrictModel):
    """Raise the floor for a known peak: at each `cron` occurrence, for `for_minutes`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,40}$")
    cron: Cron = Field(description="EventBridge Scheduler cron body, e.g. '0 8 ? * MON-FRI *'")
    timezone: Timezone = Field(default="UTC", description="IANA time zone name of the cron, e.g. Europe/Paris")
    min: int = Field(ge=1)
    for_minutes: int = Field(ge=1, le=24 * 60)


class ScalingPolicy(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    target: ScalingTarget
    bounds: Bounds
    scale_out: ScaleOut | None = None
    scale_in: ScaleIn | None = Field(default_factory=ScaleIn)
    on_events: list[EventMatch] = Field(default_factory=list)
    prewarm: list[Prewarm] = Field(default_factory=list)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    dry_run: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ScalingPolicy:
        for p in self.prewarm:
            if p.min > self.bounds.max:
                raise ValueError(f"prewarm {p.name!r}: min {p.min} is above bounds.max {self.bounds.max}")
        names = [p.name for p in self.prewarm]
        if len(names) != len(set(names)):
            raise ValueError("prewarm names must be unique within a policy")
        return self


class ScalingStageConfig(StageConfig):
    """What the scaler validates at run time: the common part and the `scaling` section."""

    scaling: list[ScalingPolicy] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_scaling(self) -> ScalingStageConfig:
        names = [p.name for p in self.scaling]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"scaling policy names must be unique; repeated: {', '.join(dupes)}")
        for i, policy in enumerate(self.scaling):
            for j, match in enumerate(policy.on_events):
                if match.source == self.own_source:
                    # Reflex publishes its decisions with this source: reacting to it would loop.
                    raise ValueError(f"scaling.{i}.on_events.{j}.source: {self.own_source!r} is the source of "
                                     "Reflex's own decision events; reacting to it would loop")
        keys = [p.target.key for p in self.scaling]
        dupes = repeated(keys)
        if dupes:
            raise ValueError(f"each target may have one scaling policy; repeated: {', '.join(dupes)}")
        return self

    def scaling_policy(self, name: str) -> ScalingPolicy | None:
        return next((p for p in self.scaling if p.name == name), None)
