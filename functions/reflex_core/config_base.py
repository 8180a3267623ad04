"""What every function's configuration shares: the stage, its guardrails, alarm and event matching.

The stage config (`config/<stage>.yaml`) has one section per reaction (`scaling`, `promotions`,
`invalidation`). `reflex_core.config.ReflexConfig` is the whole of it, validated by `app.py` at synth
time. At run time each function validates the sections it uses, with the same models: the scaler
`ScalingStageConfig` (scaling_config.py), the promoter `PromotionStageConfig` (promotion_config.py),
the invalidation functions `InvalidationStageConfig` (invalidation_config.py). A function therefore
never imports, builds or validates the models of another reaction's section (docs/architecture.md,
"Each function validates its own sections").
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reflex_core.cron import cron_body, iana_timezone
from reflex_core.identity import OperatorAllowlist

NAME_PATTERN = r"^[A-Za-z0-9_.\-]+$"


def repeated(values: Sequence[str]) -> list[str]:
    """The values that occur more than once, sorted (for "names must be unique" errors)."""
    return sorted({v for v in values if values.count(v) > 1})


# A cron body as schedules take it; each field that uses it gives its own description.
Cron = Annotated[str, AfterValidator(cron_body)]
# An IANA time zone name as EventBridge Scheduler takes it (checked against the tz database at synth time).
Timezone = Annotated[str, AfterValidator(iana_timezone)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a config or payload must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- alarm matching


class AlarmMatch(StrictModel):
    """Which alarms a policy reacts to: exact names, name prefixes, and/or required tags.

    An alarm matches when its name is listed, or starts with a listed prefix, or carries
    every listed tag (key and value). At least one criterion is required.
    """

    names: list[str] = Field(default_factory=list)
    prefixes: list[str] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    # With tags: only alarms whose names start with one of these can match by tag. The alarm event carries no tags,
    # so without it the EventBridge rule must receive every alarm state change of the account; with it, the rule is
    # narrowed to these prefixes (docs/security.md).
    tag_name_prefixes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_criterion(self) -> AlarmMatch:
        if not (self.names or self.prefixes or self.tags):
            raise ValueError("give at least one of names, prefixes or tags")
        for name in [*self.names, *self.prefixes, *self.tag_name_prefixes]:
            if not name or len(name) > 255:
                raise ValueError(f"alarm name or prefix {name!r} must be 1-255 characters")
        if self.tag_name_prefixes and not self.tags:
            raise ValueError("tag_name_prefixes narrows matching by tags: give tags too")
        return self

    def matches(self, alarm_name: str, tags: dict[str, str] | None) -> bool:
        if alarm_name in self.names or any(alarm_name.startswith(p) for p in self.prefixes):
            return True
        if self.tag_name_prefixes and not any(alarm_name.startswith(p) for p in self.tag_name_prefixes):
            return False
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


class RateLimit(StrictModel):
    max_actions_per_hour: int = Field(default=12, ge=1)
    # Once tripped, the breaker stays open this long (or until an operator resets it).
    open_for_s: int = Field(default=3600, ge=60)


# --------------------------------------------------------------------------- stage


class Notify(StrictModel):
    topic_name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,256}$")
    emails: list[str] = Field(default_factory=list)


class Guardrails(StrictModel):
    kill_switch_cache_s: int = Field(default=30, ge=0, le=300)
    # What to do when the kill switch cannot be read: "closed" stops every action (safe default).
    kill_switch_on_error: Literal["closed", "open"] = "closed"
    # The lock's lease when the invocation's end is unknown (local runs); in Lambda the lease lasts until the
    # invocation's end plus 10 s, so it always covers the work and never outlives a dead invocation's retry.
    lock_lease_s: int = Field(default=120, ge=10, le=900)
    # An alarm transition stamped further than this in the future is refused (audited), never remembered.
    clock_skew_s: int = Field(default=60, ge=0, le=900)
    idempotency_ttl_s: int = Field(default=3600, ge=60)
    audit_ttl_days: int = Field(default=400, ge=1)


class AlarmTopic(StrictModel):
    """An existing SNS topic that classic alarm notifications are published to."""

    arn: str = Field(pattern=r"^arn:aws[a-z\-]*:sns:[a-z0-9\-]+:\d{12}:[A-Za-z0-9_\-]+$")


class EventBusConfig(StrictModel):
    """Where the application's events to Reflex (ScaleRequested, GreenReady, ContentChanged, ...) are put.

    `dedicated: false` (default): the account's default bus; anyone allowed `events:PutEvents` on it can send them.
    `dedicated: true`: a bus of the stack, `reflex-<stage>`, whose resource policy lets only `publishers` (IAM
    principal ARNs of this account, e.g. the deploy pipeline's role) put events, and only with the sources the config
    listens to. AWS events (alarms, S3) always arrive on the default bus.
    """

    dedicated: bool = False
    publishers: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _publishers(self) -> EventBusConfig:
        if self.dedicated and not self.publishers:
            raise ValueError("publishers: a dedicated bus needs the principals that may put the application's events")
        for arn in self.publishers:
            if not re.match(r"^arn:aws[a-z\-]*:iam::\d{12}:(role|user)/[A-Za-z0-9+=,.@_\-/]+$", arn):
                raise ValueError(f"publishers: {arn!r} is not an IAM role or user ARN")
        return self


class StageConfig(StrictModel):
    """The part of the stage config every function reads."""

    stage: str = Field(pattern=r"^[a-z][a-z0-9\-]{0,19}$")
    account: str | None = Field(default=None, pattern=r"^\d{12}$")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    dry_run: bool = False
    notify: Notify
    guardrails: Guardrails = Field(default_factory=Guardrails)
    alarm_topics: list[AlarmTopic] = Field(default_factory=list)
    evaluate_every_minutes: int = Field(default=1, ge=1, le=60)
    # Least privilege and operator identity (docs/security.md).
    prod_like: bool | None = Field(
        default=None, description="production rules apply (account and region pinned, notify subscribers, TLS 1.2 "
                                  "certificates); default: the stage name starts with 'prod'")
    operators: OperatorAllowlist = Field(default_factory=OperatorAllowlist)
    reserved_concurrency: dict[str, int] = Field(
        default_factory=dict, description="reserved concurrency per function (scaler, promoter, ...), overriding "
                                          "each function's default")
    event_bus: EventBusConfig = Field(default_factory=lambda: EventBusConfig())

    @field_validator("reserved_concurrency")
    @classmethod
    def _concurrency(cls, values: dict[str, int]) -> dict[str, int]:
        for name, value in values.items():
            if not 1 <= value <= 1000:
                raise ValueError(f"{name}: reserved concurrency must be 1-1000, got {value}")
        return values

    @model_validator(mode="after")
    def _production_pins(self) -> StageConfig:
        if self.is_prod_like:
            missing = [name for name in ("account", "region") if getattr(self, name) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)}: a production stage must pin its account and region "
                                 "(a deploy with other credentials must fail, not build a second Reflex)")
        return self

    @property
    def is_prod_like(self) -> bool:
        return self.stage.startswith("prod") if self.prod_like is None else self.prod_like

    @property
    def own_source(self) -> str:
        """The EventBridge source of Reflex's own decision events: no reaction may consume it."""
        return f"reflex.{self.stage}"


# The reaction sections of the stage config, each validated by the functions that use it (and all of them
# at synth time). tests/unit/test_config.py checks this list against ReflexConfig's fields.
SECTIONS = ("scaling", "promotions", "invalidation", "sharding", "resharding", "databases", "recovery",
            "monitoring")

StageConfigT = TypeVar("StageConfigT", bound=StageConfig)


class ConfigError(ValueError):
    """A config file failed validation; the message names the file and every bad field."""


def format_validation_error(err: ValidationError, prefix: str = "") -> list[str]:
    """Render pydantic errors as `field.path: message`, one per error."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        lines.append(f"{prefix}{loc}: {e['msg']}")
    return lines


def read_config_data(path: str | Path) -> Any:
    """The raw data of a YAML (synth time, simulator) or JSON (run time) config file."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    if p.suffix in (".yaml", ".yml"):
        import yaml  # only needed at synth time and locally; never bundled into Lambda

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{p}: not valid YAML: {err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"{p}: not valid JSON: {err}") from None


def validate_config(model: type[StageConfigT], data: Any, source: str) -> StageConfigT:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        details = "\n  ".join(format_validation_error(err))
        raise ConfigError(f"{source}: invalid Reflex config\n  {details}") from None


def load_stage_config(path: str | Path, model: type[StageConfigT]) -> StageConfigT:
    """A function's view of the stage config: the common part and the sections `model` declares.

    The sections of other reactions are left out before validation (their functions validate them);
    anything else the model does not know is still an error.
    """
    data = read_config_data(path)
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in SECTIONS or k in model.model_fields}
    return validate_config(model, data, str(path))
