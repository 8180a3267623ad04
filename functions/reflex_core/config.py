"""The typed configuration shared by the CDK app (synth time) and every function (run time).

One model describes a stage: its guardrail settings and the policies of every reaction.
`app.py` validates `config/<stage>.yaml` with these models and hands each function the
validated JSON; the functions validate it again at cold start with the very same models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_NAME = r"^[A-Za-z0-9_.\-]+$"


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config or payload must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- targets


class EcsServiceTarget(StrictModel):
    kind: Literal["ecs-service"]
    cluster: str = Field(min_length=1, pattern=_NAME)
    service: str = Field(min_length=1, pattern=_NAME)

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
    cluster: str = Field(min_length=1, pattern=_NAME)

    @property
    def key(self) -> str:
        return f"aurora-replicas/{self.cluster}"


ScalingTarget = Annotated[
    EcsServiceTarget | AutoScalingGroupTarget | AuroraReplicasTarget, Field(discriminator="kind")
]


# --------------------------------------------------------------------------- alarm matching


class AlarmMatch(StrictModel):
    """Which alarms a policy reacts to: exact names, name prefixes, and/or required tags.

    An alarm matches when its name is listed, or starts with a listed prefix, or carries
    every listed tag (key and value). At least one criterion is required.
    """

    names: list[str] = Field(default_factory=list)
    prefixes: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_criterion(self) -> AlarmMatch:
        if not (self.names or self.prefixes or self.tags):
            raise ValueError("give at least one of names, prefixes or tags")
        for name in [*self.names, *self.prefixes]:
            if not name or len(name) > 255:
                raise ValueError(f"alarm name or prefix {name!r} must be 1-255 characters")
        return self

    def matches(self, alarm_name: str, tags: dict[str, str] | None) -> bool:
        if alarm_name in self.names or any(alarm_name.startswith(p) for p in self.prefixes):
            return True
        if self.tags and tags is not None:
            return all(tags.get(k) == v for k, v in self.tags.items())
        return False


class EventMatch(StrictModel):
    """A custom EventBridge event (source + detail-type) that requests an action."""

    source: str = Field(min_length=1)
    detail_type: str = Field(min_length=1)

    @field_validator("source")
    @classmethod
    def _not_aws(cls, v: str) -> str:
        if v.startswith("aws."):
            raise ValueError("custom events cannot use an 'aws.' source")
        return v


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
    cron: str = Field(description="EventBridge Scheduler cron body, e.g. '0 8 ? * MON-FRI *'")
    timezone: str = "UTC"
    min: int = Field(ge=1)
    for_minutes: int = Field(ge=1, le=24 * 60)

    @field_validator("cron")
    @classmethod
    def _six_fields(cls, v: str) -> str:
        if len(v.split()) != 6:
            raise ValueError("cron needs 6 fields: minutes hours day-of-month month day-of-week year")
        return v


class RateLimit(StrictModel):
    max_actions_per_hour: int = Field(default=12, ge=1)
    # Once tripped, the breaker stays open this long (or until an operator resets it).
    open_for_s: int = Field(default=3600, ge=60)


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


# --------------------------------------------------------------------------- stage


class Notify(StrictModel):
    topic_name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,256}$")
    emails: list[str] = Field(default_factory=list)


class Guardrails(StrictModel):
    kill_switch_cache_s: int = Field(default=30, ge=0, le=300)
    # What to do when the kill switch cannot be read: "closed" stops every action (safe default).
    kill_switch_on_error: Literal["closed", "open"] = "closed"
    lock_lease_s: int = Field(default=120, ge=10, le=900)
    idempotency_ttl_s: int = Field(default=3600, ge=60)
    audit_ttl_days: int = Field(default=400, ge=1)


class AlarmTopic(StrictModel):
    """An existing SNS topic that classic alarm notifications are published to."""

    arn: str = Field(pattern=r"^arn:aws[a-z\-]*:sns:[a-z0-9\-]+:\d{12}:[A-Za-z0-9_\-]+$")


class ReflexConfig(StrictModel):
    stage: str = Field(pattern=r"^[a-z][a-z0-9\-]{0,19}$")
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    dry_run: bool = False
    notify: Notify
    guardrails: Guardrails = Field(default_factory=Guardrails)
    alarm_topics: list[AlarmTopic] = Field(default_factory=list)
    evaluate_every_minutes: int = Field(default=1, ge=1, le=60)
    scaling: list[ScalingPolicy] = Field(default_factory=list)
    # Blue/green promotion pairs (models in promotion_config.py, imported at the end of this module).
    promotions: list[_promotion.PromotionPair] = Field(default_factory=list)
    # Cache and CDN invalidation (models in invalidation_config.py, imported at the end of this module).
    invalidation: _invalidation.InvalidationConfig = Field(
        default_factory=lambda: _invalidation.InvalidationConfig())

    @model_validator(mode="after")
    def _unique(self) -> ReflexConfig:
        names = [p.name for p in self.scaling]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"scaling policy names must be unique; repeated: {', '.join(dupes)}")
        own_source = f"reflex.{self.stage}"
        for i, policy in enumerate(self.scaling):
            for j, match in enumerate(policy.on_events):
                if match.source == own_source:
                    # Reflex publishes its decisions with this source: reacting to it would loop.
                    raise ValueError(f"scaling.{i}.on_events.{j}.source: {own_source!r} is the source of Reflex's "
                                     "own decision events; reacting to it would loop")
        keys = [p.target.key for p in self.scaling]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"each target may have one scaling policy; repeated: {', '.join(dupes)}")
        self._check_promotions(own_source)
        return self

    def _check_promotions(self, own_source: str) -> None:
        names = [p.name for p in self.promotions]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"promotion names must be unique; repeated: {', '.join(dupes)}")
        keys = [p.target.key for p in self.promotions]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"each listener, rule or record may have one promotion pair; repeated: {', '.join(dupes)}")
        known = {p.name for p in self.scaling}
        for i, pair in enumerate(self.promotions):
            for field, match in (("green_ready", pair.green_ready), ("completed_event", pair.completed)):
                if match.source.startswith(own_source):
                    raise ValueError(f"promotions.{i}.{field}.source: {match.source!r} is a source of Reflex's own "
                                     "events; other reactions refuse to consume it")
            for colour in ("blue", "green"):
                for name in pair.freeze_scale_in.policies(colour):
                    if name not in known:
                        raise ValueError(f"promotions.{i}.freeze_scale_in.{colour}: no scaling policy {name!r} "
                                         f"(configured: {', '.join(sorted(known)) or 'none'})")
            if self.account or self.region:
                for arn in pair.target.arns:
                    account, region = arn.split(":")[4], arn.split(":")[3]
                    if (self.account and account != self.account) or (self.region and region != self.region):
                        raise ValueError(f"promotions.{i}.target: {arn} is not in this stage's account/region")

    def scaling_policy(self, name: str) -> ScalingPolicy | None:
        return next((p for p in self.scaling if p.name == name), None)

    def promotion(self, name: str) -> _promotion.PromotionPair | None:
        return next((p for p in self.promotions if p.name == name), None)


class ConfigError(ValueError):
    """A config file failed validation; the message names the file and every bad field."""


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    """Render pydantic errors as `field.path: message`, one per error."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"{prefix}{loc}: {e['msg']}")
    return lines


def parse_config(data: Any, source: str) -> ReflexConfig:
    try:
        return ReflexConfig.model_validate(data)
    except ValidationError as err:
        details = "\n  ".join(format_validation_error(err))
        raise ConfigError(f"{source}: invalid Reflex config\n  {details}") from None


def load_config_file(path: str | Path) -> ReflexConfig:
    """Load YAML (synth time, simulator) or JSON (run time) config."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".yaml", ".yml"):
        import yaml  # only needed at synth time and locally; never bundled into Lambda

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{p}: not valid JSON: {err}") from None
    return parse_config(data, str(p))


# At the end: promotion_config builds on the models above (AlarmMatch, EventMatch, StrictModel). Pydantic
# resolves the `promotions` annotation when ReflexConfig is first used, whichever module was imported first.
from reflex_core import invalidation_config as _invalidation  # noqa: E402
from reflex_core import promotion_config as _promotion  # noqa: E402


def json_schema() -> dict[str, Any]:
    schema = ReflexConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Reflex stage configuration"
    return schema

