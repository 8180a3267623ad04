"""Scenario files and the runner that plays them through the real scaler handler.

A scenario is a YAML file: a start time, initial capacities, and timed steps (alarm state changes,
redeliveries, kill-switch flips, scheduler and console invocations, custom events; for blue/green
promotions, `green_ready` events and `promoter` console commands, with the promotion workflow run by the
local driver on the same clock, see `promotion_sim.py`). The runner opens a
moto account (`aws_world.create_world`), drives a `VirtualClock`, sends each step to
`scaler.handler.lambda_handler` as the event AWS would deliver, runs the periodic `evaluate` schedule
between steps as the deployed stack does, and reads the targets' capacity back after every invocation.
The result is a list of `TimelineEntry` plus the audit trail; `simulator.timeline` renders them.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ROOT = Path(__file__).resolve().parent.parent
# functions/ is the Lambda asset root: import the handlers exactly as the runtime does (as aws_world does).
if str(ROOT / "functions") not in sys.path:
    sys.path.insert(0, str(ROOT / "functions"))

from reflex_core.config import ReflexConfig, ScalingPolicy, load_config_file  # noqa: E402

ACCOUNT = "123456789012"  # moto's default account
REGION = "us-east-1"
REGION_NAME = "US East (N. Virginia)"

# Local runs: no X-Ray, only warnings from the Powertools logger. EMF metric lines are not disabled
# (POWERTOOLS_METRICS_DISABLED does not cover `single_metric`, which prints regardless, and with it set
# `Metrics` never clears its buffer): the runner captures them with the logs into `<name>.handler.log`.
LOCAL_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "POWERTOOLS_TRACE_DISABLED": "1",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
}


def prepare_environment() -> None:
    """Set the local-run environment (before Powertools is imported) without overriding the caller's."""
    for name, value in LOCAL_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


# --------------------------------------------------------------------------- offsets


_CLOCK_TEXT = re.compile(r"^(?:(\d+):)?(\d{1,3}):(\d{2}(?:\.\d+)?)$")


def parse_offset(value: Any) -> float:
    """Seconds from a number, or from 'mm:ss' / 'h:mm:ss' text."""
    if isinstance(value, bool):
        raise ValueError("give seconds (90) or 'mm:ss' ('01:30'), not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _CLOCK_TEXT.match(text)
        if match:
            hours, minutes, secs = match.groups()
            if float(secs) >= 60:
                raise ValueError(f"{value!r}: seconds must be below 60")
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
        else:
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not an offset; give seconds (90) or 'mm:ss' ('01:30')") from None
    else:
        raise ValueError(f"{value!r} is not an offset; give seconds (90) or 'mm:ss' ('01:30')")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r}: an offset is zero or more seconds after the start")
    return seconds


def format_offset(seconds: float) -> str:
    """'mm:ss' below an hour, 'h:mm:ss' above."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


@contextlib.contextmanager
def powertools_logs_to(stream: Any) -> Iterator[None]:
    """Send the Powertools logger's lines to `stream`, at POWERTOOLS_LOG_LEVEL (WARNING unless set), meanwhile."""
    from reflex_core.observability import logger

    handler = logger.registered_handler
    previous_stream = handler.setStream(stream) if isinstance(handler, logging.StreamHandler) else None
    previous_level = logger.log_level
    logger.setLevel(os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"))
    try:
        yield
    finally:
        logger.setLevel(previous_level)
        if isinstance(handler, logging.StreamHandler) and previous_stream is not None:
            handler.setStream(previous_stream)


# --------------------------------------------------------------------------- the scenario model


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a scenario must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class OneKindStep(_Strict):
    """A scenario step: exactly one of the fields named in `step_kinds` is set, and that is its kind."""

    step_kinds: ClassVar[tuple[str, ...]]

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [k for k in self.step_kinds if getattr(self, k) is not None]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(f"a step needs exactly one of {', '.join(self.step_kinds)}; found: {found}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in self.step_kinds if getattr(self, k) is not None)


AlarmState = Literal["ALARM", "OK", "INSUFFICIENT_DATA"]
Via = Literal["eventbridge", "sns", "alarm-action"]
Comparison = Literal["GreaterThanThreshold", "GreaterThanOrEqualToThreshold", "LessThanThreshold",
                     "LessThanOrEqualToThreshold"]


class AlarmDefinition(_Strict):
    """What CloudWatch knows about an alarm, so steps only give its new state and value."""

    metric: str | None = Field(default=None, description="Namespace/MetricName, e.g. AWS/ECS/CPUUtilization")
    dimensions: dict[str, str] = Field(default_factory=dict)
    statistic: str = "Average"
    period: int = Field(default=60, ge=10)
    threshold: float | None = None
    comparison: Comparison = "GreaterThanThreshold"
    description: str = ""
    initial: AlarmState = Field(default="OK", description="CloudWatch's state before the scenario starts")


class AlarmStep(_Strict):
    name: str = Field(min_length=1, max_length=255)
    state: AlarmState
    value: float | None = None
    threshold: float | None = Field(default=None, description="defaults to the alarm definition's threshold")
    via: Via = "eventbridge"
    previous: AlarmState | None = Field(default=None, description="override the state tracked by the simulator")
    occurred: float | None = Field(default=None, description="offset the event is stamped with: earlier than t "
                                                             "for a late delivery, later for a future-stamped "
                                                             "(clock-skewed or forged) one; defaults to the step's t")
    cloudwatch: bool = Field(default=True, description="whether CloudWatch's own state follows this event (false: "
                                                       "a forged or replayed event CloudWatch never sent)")

    @field_validator("occurred", mode="before")
    @classmethod
    def _offset(cls, v: Any) -> float | None:
        return None if v is None else parse_offset(v)


class CloudWatchStep(_Strict):
    """CloudWatch's side only, no event delivered: the alarm's state changes (its event is lost), or the alarm
    is deleted."""

    alarm: str = Field(min_length=1, max_length=255)
    state: AlarmState | None = None
    delete: bool = False

    @model_validator(mode="after")
    def _one(self) -> CloudWatchStep:
        if (self.state is None) == (not self.delete):
            raise ValueError("give either `state` (the state changes, its event is lost) or `delete: true`")
        return self


class CapacityStep(_Strict):
    """Someone outside Reflex changes a target's desired capacity (a hand edit, another tool)."""

    policy: str = Field(min_length=1)
    desired: int = Field(ge=0)


class FreezeStep(_Strict):
    """A scale-in freeze on a scaling policy, as a promotion places it (holder: the pair's name)."""

    policy: str = Field(min_length=1)
    holder: str = Field(default="simulated-promotion", min_length=1)
    for_s: float = Field(default=3600, gt=0)


class HealthStep(_Strict):
    """How many of a colour's targets are healthy from now on."""

    pair: str = Field(min_length=1)
    colour: Literal["blue", "green"]
    healthy: int = Field(ge=0)


class FaultStep(_Strict):
    """Inject an AWS fault (simulator.faults): per API (`ecs.UpdateService`, `UpdateService`, `*`) for the next
    `count` matching calls, the given `calls` (1-based among matching calls), or `for_s` seconds of the clock;
    `persist`: every attempt fails (botocore's retries too), else only each call's first attempt."""

    operation: str = Field(min_length=1)
    kind: Literal["throttle", "5xx", "access-denied", "timeout", "lost-response", "crash-after"]
    count: int | None = Field(default=None, ge=1)
    calls: list[int] = Field(default_factory=list)
    for_s: float | None = Field(default=None, gt=0)
    persist: bool = False

    @model_validator(mode="after")
    def _one_scope(self) -> FaultStep:
        if sum([self.count is not None, bool(self.calls), self.for_s is not None]) > 1:
            raise ValueError("give at most one of count, calls, for_s")
        return self


class ConcurrentDelivery(_Strict):
    """One of several deliveries made at the same instant, each in its own thread (several Lambda invocations
    at once against the same state)."""

    console: dict[str, Any] | None = None
    promoter: dict[str, Any] | None = None
    event: CustomEventStep | None = None
    redeliver: str | None = None

    @model_validator(mode="after")
    def _one(self) -> ConcurrentDelivery:
        if sum(x is not None for x in (self.console, self.promoter, self.event, self.redeliver)) != 1:
            raise ValueError("each delivery is one of console, promoter, event, redeliver")
        return self


class Redelivery(_Strict):
    step: str = Field(min_length=1)
    via: Via | None = Field(default=None, description="deliver the same alarm transition through another route")


class KillSwitchStep(_Strict):
    scope: str = Field(pattern=r"^[a-z_]{1,40}$", description="global or a reaction: scaler, promoter, ...")
    on: bool | None = None
    value: str | None = Field(default=None, max_length=40, description="the raw parameter value instead of on/off "
                                                                      "(hard-stop, or an invalid one)")
    delete: bool = Field(default=False, description="delete the parameter (a missing switch)")
    invalidate_cache: bool = Field(default=False, description="model a fresh Lambda container that has not "
                                                              "cached the switch yet")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads an unquoted `on:` key as the boolean True.
        if isinstance(data, dict) and True in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @model_validator(mode="after")
    def _one_value(self) -> KillSwitchStep:
        if sum([self.on is not None, self.value is not None, self.delete]) != 1:
            raise ValueError("give exactly one of `on`, `value` or `delete: true`")
        return self

    @property
    def raw_value(self) -> str | None:
        if self.delete:
            return None
        if self.value is not None:
            return self.value
        return "on" if self.on else "off"


class CustomEventStep(_Strict):
    source: str = Field(min_length=1)
    detail_type: str = Field(min_length=1)
    detail: dict[str, Any] = Field(default_factory=dict)


class PrewarmStep(_Strict):
    policy: str = Field(min_length=1)
    prewarm: str = Field(min_length=1)


class HoldLockStep(_Strict):
    """Another invocation (or one that crashed) holds the target's lock for `lease_s` seconds: a scaling
    policy's target or a promotion pair."""

    policy: str | None = Field(default=None, min_length=1)
    pair: str | None = Field(default=None, min_length=1)
    lease_s: int = Field(default=120, ge=1)

    @model_validator(mode="after")
    def _one_target(self) -> HoldLockStep:
        if (self.policy is None) == (self.pair is None):
            raise ValueError("give either `policy` or `pair`")
        return self


class GreenReadyStep(_Strict):
    """A team's pipeline announces that the idle colour of a pair runs a new release."""

    pair: str = Field(min_length=1)
    release: str | None = None
    colour: Literal["blue", "green"] | None = None
    event_id: str | None = Field(default=None, description="the EventBridge id (default: a new one); the same id "
                                                           "is a redelivery, a new id with the same content a replay")


class Expect(_Strict):
    outcome: str | None = Field(default=None, description="some decision of this step has this outcome")
    absent: str | None = Field(default=None, description="no decision of this step has this outcome")
    dead_lettered: int | None = Field(default=None, ge=0, description="events in the function's DLQ after the step")
    desired: int | None = Field(default=None, ge=0, description="the policy's desired capacity after the step")
    detail: str | None = Field(default=None, description="some decision's detail contains this text")
    policy: str | None = Field(default=None, description="which policy the checks concern (decisions without a "
                                                         "policy, such as duplicates, concern all)")
    weights: dict[str, int] | None = Field(default=None, description="a promotion pair's weights after the step")
    live: Literal["blue", "green"] | None = Field(default=None, description="the pair's recorded live colour")
    pair: str | None = Field(default=None, description="the pair `weights`/`live` concern (default: the only one)")

    @model_validator(mode="after")
    def _something(self) -> Expect:
        if (self.outcome is None and self.desired is None and self.detail is None and self.weights is None
                and self.live is None and self.absent is None and self.dead_lettered is None):
            raise ValueError("give at least one of outcome, absent, desired, detail, weights, live")
        return self


STEP_KINDS = ("alarm", "redeliver", "kill_switch", "evaluate", "console", "event", "prewarm", "hold_lock",
              "green_ready", "promoter", "cloudwatch", "capacity", "freeze", "health", "fault", "concurrent")


class Step(OneKindStep):
    step_kinds = STEP_KINDS

    t: float
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    note: str = ""
    alarm: AlarmStep | None = None
    redeliver: Redelivery | None = None
    kill_switch: KillSwitchStep | None = None
    evaluate: Literal[True] | None = None
    console: dict[str, Any] | None = None
    event: CustomEventStep | None = None
    prewarm: PrewarmStep | None = None
    hold_lock: HoldLockStep | None = None
    green_ready: GreenReadyStep | None = None
    promoter: dict[str, Any] | None = Field(default=None, description="a console command for the promoter")
    cloudwatch: CloudWatchStep | None = None
    capacity: CapacityStep | None = None
    freeze: FreezeStep | None = None
    health: HealthStep | None = None
    fault: FaultStep | None = None
    concurrent: list[ConcurrentDelivery] | None = Field(default=None, min_length=2, max_length=16)
    expect: Expect | None = None

    @field_validator("t", mode="before")
    @classmethod
    def _offset(cls, v: Any) -> float:
        return parse_offset(v)

    @field_validator("redeliver", mode="before")
    @classmethod
    def _redeliver_shorthand(cls, v: Any) -> Any:
        return {"step": v} if isinstance(v, str) else v

    @field_validator("console")
    @classmethod
    def _console_command(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and "command" not in v:
            raise ValueError("a console payload needs a `command` (scale_out, scale_in, set_capacity, prewarm, "
                             "evaluate)")
        return v

    @field_validator("promoter")
    @classmethod
    def _promoter_command(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None and "command" not in v:
            raise ValueError("a promoter command needs a `command` (promote, pause, resume, abort, rollback)")
        return v



class Every(_Strict):
    evaluate: float | None = Field(description="seconds between the scheduler's evaluate runs; null: none")

    @field_validator("evaluate", mode="before")
    @classmethod
    def _offset(cls, v: Any) -> float | None:
        if v is None:
            return None
        seconds = parse_offset(v)
        if seconds < 1:
            raise ValueError("evaluate at most once a second")
        return seconds


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    description: str = ""
    async_retries: bool = Field(default=True, description="model Lambda's asynchronous retries (2, ~1 and ~2 minutes "
                                                          "later) and dead-lettering for events that raise")
    start: datetime
    config: str | None = None
    initial: dict[str, int] = Field(default_factory=dict, description="desired capacity per policy name")
    alarms: dict[str, AlarmDefinition] = Field(default_factory=dict)
    every: Every | None = Field(default=None, description="omitted: the config's evaluate_every_minutes")
    end: float | None = None
    steps: list[Step] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @field_validator("initial")
    @classmethod
    def _non_negative(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [f"{k}={n}" for k, n in v.items() if n < 0]
        if bad:
            raise ValueError(f"capacities are zero or more: {', '.join(bad)}")
        return v

    @field_validator("end", mode="before")
    @classmethod
    def _offset(cls, v: Any) -> float | None:
        return None if v is None else parse_offset(v)

    @model_validator(mode="after")
    def _ordered_and_linked(self) -> Scenario:
        seen: dict[str, Step] = {}
        previous_t = 0.0
        for i, step in enumerate(self.steps):
            where = f"steps[{i}]"
            if step.t < previous_t:
                raise ValueError(f"{where}.t: {format_offset(step.t)} is before the previous step "
                                 f"({format_offset(previous_t)}); steps run in time order")
            previous_t = step.t
            if step.redeliver is not None:
                original = seen.get(step.redeliver.step)
                if original is None:
                    raise ValueError(f"{where}.redeliver: no earlier step with id {step.redeliver.step!r}")
                if original.kind in ("kill_switch", "hold_lock", "cloudwatch", "capacity", "freeze", "health", "fault",
                                     "concurrent"):
                    raise ValueError(f"{where}.redeliver: step {original.id!r} sends no event")
                if step.redeliver.via is not None and original.alarm is None:
                    raise ValueError(f"{where}.redeliver.via: only an alarm transition can take another route")
            if step.id is not None:
                if step.id in seen:
                    raise ValueError(f"{where}.id: {step.id!r} is used twice")
                seen[step.id] = step
        if self.end is not None and self.end < previous_t:
            raise ValueError(f"end: {format_offset(self.end)} is before the last step ({format_offset(previous_t)})")
        return self

    @property
    def duration(self) -> float:
        return self.end if self.end is not None else self.steps[-1].t


class ScenarioError(ValueError):
    """A scenario file failed validation; the message names the file and every bad field."""


def _locate(loc: tuple[Any, ...], raw: Any) -> str:
    """`steps[3] (id=spike, t=01:30).alarm.state` from pydantic's ('steps', 3, 'alarm', 'state')."""
    parts: list[str] = []
    node = raw
    for i, key in enumerate(loc):
        if isinstance(key, int):
            label = f"[{key}]"
            if i == 1 and loc[0] == "steps" and isinstance(node, list) and key < len(node) \
                    and isinstance(node[key], dict):
                hints = [f"{k}={node[key][k]}" for k in ("id", "t") if k in node[key]]
                label += f" ({', '.join(hints)})" if hints else ""
            parts.append(label)
        elif isinstance(key, str) and not key.startswith(("function-", "literal[")):
            parts.append(("." if parts else "") + key)
        node = node[key] if isinstance(node, dict | list) and _has(node, key) else None
    return "".join(parts) or "<root>"


def _has(node: dict[str, Any] | list[Any], key: Any) -> bool:
    if isinstance(node, list):
        return isinstance(key, int) and 0 <= key < len(node)
    return key in node


def parse_scenario(data: Any, source: str) -> Scenario:
    try:
        return Scenario.model_validate(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            msg = str(e["msg"]).removeprefix("Value error, ")
            lines.append(f"{_locate(tuple(e['loc']), data)}: {msg}")
        raise ScenarioError(f"{source}: invalid scenario\n  " + "\n  ".join(lines)) from None


def load_scenario(path: str | Path) -> Scenario:
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as err:
        raise ScenarioError(f"{p}: cannot read the scenario ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ScenarioError(f"{p}: not valid YAML: {err}") from None
    return parse_scenario(data, str(p))


def resolve_config_path(scenario: Scenario, override: str | None, scenario_path: str | Path | None) -> Path:
    """--config wins; else the scenario's `config`, relative to the working directory, the scenario file,
    or the repository root (the first that exists)."""
    given = override or scenario.config
    if not given:
        raise ScenarioError("no config: give --config PATH or `config:` in the scenario")
    path = Path(given)
    candidates = [path] if path.is_absolute() else [
        Path.cwd() / path,
        *([Path(scenario_path).resolve().parent / path] if scenario_path else []),
        ROOT / path,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ScenarioError(f"config file {given} not found")


def check_against_config(scenario: Scenario, config: ReflexConfig) -> list[str]:
    """Errors where the scenario names policies or pre-warms the config does not have."""
    known = {p.name: p for p in config.scaling}
    names = ", ".join(known) or "none"
    errors = [f"initial.{name}: no scaling policy {name!r} in the config (configured: {names})"
              for name in scenario.initial if name not in known]
    watched = watched_policies(scenario, config)
    for i, step in enumerate(scenario.steps):
        where = f"steps[{i}]" + (f" (id={step.id})" if step.id else "")
        for field_name, policy in (("prewarm.policy", step.prewarm and step.prewarm.policy),
                                   ("hold_lock.policy", step.hold_lock and step.hold_lock.policy),
                                   ("capacity.policy", step.capacity and step.capacity.policy),
                                   ("freeze.policy", step.freeze and step.freeze.policy),
                                   ("expect.policy", step.expect and step.expect.policy)):
            if policy and policy not in known:
                errors.append(f"{where}.{field_name}: no scaling policy {policy!r} (configured: {names})")
        if step.prewarm and step.prewarm.policy in known:
            windows = [p.name for p in known[step.prewarm.policy].prewarm]
            if step.prewarm.prewarm not in windows:
                errors.append(f"{where}.prewarm.prewarm: policy {step.prewarm.policy!r} has no pre-warm "
                              f"{step.prewarm.prewarm!r} (configured: {', '.join(windows) or 'none'})")
        pairs = {p.name for p in config.promotions}
        for field_name, pair in (("green_ready.pair", step.green_ready and step.green_ready.pair),
                                 ("hold_lock.pair", step.hold_lock and step.hold_lock.pair),
                                 ("health.pair", step.health and step.health.pair),
                                 ("promoter.pair", step.promoter and step.promoter.get("pair")),
                                 ("expect.pair", step.expect and step.expect.pair)):
            if pair and pair not in pairs:
                errors.append(f"{where}.{field_name}: no promotion pair {pair!r} (configured: "
                              f"{', '.join(sorted(pairs)) or 'none'})")
        if step.expect and (step.expect.weights or step.expect.live) and not step.expect.pair and len(pairs) != 1:
            errors.append(f"{where}.expect.pair: required for `weights`/`live` unless the config has one pair")
        if step.expect and step.expect.desired is not None and not step.expect.policy and len(watched) != 1:
            errors.append(f"{where}.expect.policy: required for `desired` when the scenario watches several "
                          f"policies ({', '.join(p.name for p in watched)})")
    return errors


def watched_policies(scenario: Scenario, config: ReflexConfig) -> list[ScalingPolicy]:
    """The policies shown in the timeline: those given an initial capacity, else all of them."""
    if scenario.initial:
        return [p for p in config.scaling if p.name in scenario.initial]
    return list(config.scaling)


# --------------------------------------------------------------------------- real-shaped events


def _cw_time(ts: datetime) -> str:
    """CloudWatch's own timestamp format: 2026-11-26T09:00:10.000+0000."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}+0000"


def _eb_time(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_COMPARISON_WORDS = {
    "GreaterThanThreshold": "greater than",
    "GreaterThanOrEqualToThreshold": "greater than or equal to",
    "LessThanThreshold": "less than",
    "LessThanOrEqualToThreshold": "less than or equal to",
}


@dataclass(frozen=True)
class AlarmTransition:
    """One alarm state change as CloudWatch records it; rendered into any delivery route."""

    name: str
    definition: AlarmDefinition
    state: str
    previous: str
    occurred: datetime
    previous_occurred: datetime
    previous_value: float | None
    value: float | None
    threshold: float | None

    @property
    def arn(self) -> str:
        return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{self.name}"

    @property
    def metric(self) -> tuple[str, str]:
        text = self.definition.metric or f"Simulated/{self.name}"
        namespace, _, metric = text.rpartition("/")
        return namespace or "Simulated", metric

    def reason(self, state: str, value: float | None, at: datetime) -> str:
        words = _COMPARISON_WORDS[self.definition.comparison]
        if state == "INSUFFICIENT_DATA":
            return "Insufficient Data: 1 datapoint was unknown."
        crossed = "" if state == "ALARM" else "not "
        if value is None:
            return f"Threshold Crossed: the last datapoint was {crossed}{words} the threshold ({self.threshold})."
        point = at.astimezone(UTC).strftime("%d/%m/%y %H:%M:%S")
        other = "OK" if state == "ALARM" else "ALARM"
        return (f"Threshold Crossed: 1 out of the last 1 datapoints [{value} ({point})] was {crossed}{words} "
                f"the threshold ({self.threshold}) (minimum 1 datapoint for {other} -> {state} transition).")

    def _reason_data(self, value: float | None, at: datetime) -> str:
        data: dict[str, Any] = {"version": "1.0", "queryDate": _cw_time(at),
                                "startDate": _cw_time(at - timedelta(seconds=self.definition.period)),
                                "statistic": self.definition.statistic, "period": self.definition.period}
        if value is not None:
            data["recentDatapoints"] = [value]
        if self.threshold is not None:
            data["threshold"] = self.threshold
        return json.dumps(data, separators=(",", ":"))

    def _detail(self) -> dict[str, Any]:
        namespace, metric = self.metric
        return {
            "alarmName": self.name,
            "state": {"value": self.state, "reason": self.reason(self.state, self.value, self.occurred),
                      "reasonData": self._reason_data(self.value, self.occurred),
                      "timestamp": _cw_time(self.occurred)},
            "previousState": {"value": self.previous,
                              "reason": self.reason(self.previous, self.previous_value, self.previous_occurred),
                              "reasonData": self._reason_data(self.previous_value, self.previous_occurred),
                              "timestamp": _cw_time(self.previous_occurred)},
            "configuration": {
                "description": self.definition.description,
                "metrics": [{"id": "m1", "returnData": True, "metricStat": {
                    "metric": {"namespace": namespace, "name": metric, "dimensions": self.definition.dimensions},
                    "period": self.definition.period, "stat": self.definition.statistic}}],
            },
        }

    def eventbridge(self) -> dict[str, Any]:
        return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "CloudWatch Alarm State Change",
                "source": "aws.cloudwatch", "account": ACCOUNT, "time": _eb_time(self.occurred), "region": REGION,
                "resources": [self.arn], "detail": self._detail()}

    def alarm_action(self) -> dict[str, Any]:
        return {"source": "aws.cloudwatch", "alarmArn": self.arn, "accountId": ACCOUNT,
                "time": _cw_time(self.occurred), "region": REGION, "alarmData": self._detail()}

    def sns(self, topic_arn: str, delivered: datetime) -> dict[str, Any]:
        namespace, metric = self.metric
        message = {
            "AlarmName": self.name, "AlarmDescription": self.definition.description or None,
            "AWSAccountId": ACCOUNT, "AlarmConfigurationUpdatedTimestamp": _cw_time(self.occurred - timedelta(days=7)),
            "NewStateValue": self.state, "NewStateReason": self.reason(self.state, self.value, self.occurred),
            "StateChangeTime": _cw_time(self.occurred), "Region": REGION_NAME, "AlarmArn": self.arn,
            "OldStateValue": self.previous, "OKActions": [topic_arn], "AlarmActions": [topic_arn],
            "InsufficientDataActions": [],
            "Trigger": {"MetricName": metric, "Namespace": namespace, **self._statistic(), "Unit": None,
                        "Dimensions": [{"value": v, "name": k} for k, v in self.definition.dimensions.items()],
                        "Period": self.definition.period, "EvaluationPeriods": 1, "DatapointsToAlarm": 1,
                        "ComparisonOperator": self.definition.comparison, "Threshold": self.threshold,
                        "TreatMissingData": "missing", "EvaluateLowSampleCountPercentile": ""},
        }
        return {"Records": [{
            "EventSource": "aws:sns", "EventVersion": "1.0",
            "EventSubscriptionArn": f"{topic_arn}:{uuid.uuid4()}",
            "Sns": {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic_arn,
                    "Subject": f'{self.state}: "{self.name}" in {REGION_NAME}'[:100],
                    "Message": json.dumps(message), "Timestamp": delivered.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
                    "SignatureVersion": "1", "Signature": "c2ltdWxhdGVk",
                    "SigningCertUrl": f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService.pem",
                    "UnsubscribeUrl": f"https://sns.{REGION}.amazonaws.com/?Action=Unsubscribe",
                    "MessageAttributes": {}},
        }]}

    def _statistic(self) -> dict[str, str]:
        stat = self.definition.statistic
        if re.match(r"^p\d", stat):  # percentiles are "extended statistics" in classic notifications
            return {"StatisticType": "ExtendedStatistic", "ExtendedStatistic": stat}
        return {"StatisticType": "Statistic", "Statistic": stat.upper()}

    def render(self, via: str, topic_arn: str, delivered: datetime) -> dict[str, Any]:
        if via == "sns":
            return self.sns(topic_arn, delivered)
        if via == "alarm-action":
            return self.alarm_action()
        return self.eventbridge()


class AlarmBook:
    """CloudWatch's side of each alarm: current state and when it changed, so events carry a real previousState."""

    def __init__(self, definitions: dict[str, AlarmDefinition], start: datetime) -> None:
        self._definitions = definitions
        self._state: dict[str, tuple[str, datetime, float | None]] = {
            name: (d.initial, start - timedelta(hours=1), None) for name, d in definitions.items()}
        self._start = start

    def definition(self, name: str) -> AlarmDefinition:
        return self._definitions.get(name) or AlarmDefinition()

    def transition(self, step: AlarmStep, occurred: datetime) -> AlarmTransition:
        definition = self.definition(step.name)
        current, since, last_value = self._state.get(
            step.name, (definition.initial, self._start - timedelta(hours=1), None))
        threshold = step.threshold if step.threshold is not None else definition.threshold
        transition = AlarmTransition(name=step.name, definition=definition, state=step.state,
                                     previous=step.previous or current, occurred=occurred,
                                     previous_occurred=min(since, occurred), previous_value=last_value,
                                     value=step.value, threshold=threshold)
        if occurred >= since:  # a late delivery of an older transition does not move CloudWatch's state back
            self._state[step.name] = (step.state, occurred, step.value)
        return transition

    def moved_to(self, name: str, state: str, at: datetime) -> bool:
        """Whether CloudWatch's state is now this one (a late, older transition does not move it)."""
        current = self._state.get(name)
        return current is not None and current[:2] == (state, at)

    def forged(self, step: AlarmStep, occurred: datetime) -> AlarmTransition:
        """An event CloudWatch never sent (a replay, a forgery): CloudWatch's own state does not move."""
        definition = self.definition(step.name)
        current, since, last_value = self._state.get(
            step.name, (definition.initial, self._start - timedelta(hours=1), None))
        threshold = step.threshold if step.threshold is not None else definition.threshold
        return AlarmTransition(name=step.name, definition=definition, state=step.state,
                               previous=step.previous or current, occurred=occurred,
                               previous_occurred=min(since, occurred), previous_value=last_value,
                               value=step.value, threshold=threshold)

    def set(self, name: str, state: str, at: datetime) -> None:
        """CloudWatch's state changed without the event being delivered (or before it is)."""
        self._state[name] = (state, at, None)

    def initial_states(self) -> dict[str, tuple[str, datetime]]:
        return {name: (state, since) for name, (state, since, _) in self._state.items()}


@dataclass
class SimulatedContext:
    """The parts of the Lambda context the handler and Powertools read."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    log_group_name: str = "/aws/lambda/reflex-simulator"
    log_stream_name: str = "simulator"
    remaining_ms: int = 60_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DecisionView:
    """One decision of one invocation, from the audit record (or from the response when not audited)."""

    outcome: str
    policy: str | None = None
    operation: str | None = None
    detail: str = ""
    before: dict[str, Any] | None = None
    intended: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    audited: bool = True
    audit_id: str | None = None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DecisionView:
        action = record.get("action") or {}
        return cls(outcome=record["outcome"], policy=record.get("policy"), operation=record.get("operation"),
                   detail=record.get("detail") or "", before=record.get("before"), intended=action.get("intended"),
                   after=record.get("after"), audited=True, audit_id=record.get("id"))

    @classmethod
    def from_response(cls, decision: dict[str, Any]) -> DecisionView:
        return cls(outcome=decision["outcome"], policy=decision.get("policy"), operation=decision.get("operation"),
                   detail=decision.get("detail", ""), before=decision.get("before"),
                   intended=decision.get("intended"), after=decision.get("after"), audited=False)


@dataclass(frozen=True)
class CheckResult:
    check: str
    expected: Any
    actual: Any
    passed: bool
    policy: str | None = None


@dataclass
class TimelineEntry:
    offset_s: float
    at: datetime
    origin: Literal["step", "tick", "workflow"]
    kind: str
    label: str
    step_id: str | None = None
    note: str = ""
    event: dict[str, Any] | None = None
    status: str | None = None
    error: str | None = None
    decisions: list[DecisionView] = field(default_factory=list)
    capacity: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    response: Any = None  # what the handler returned (a workflow step's answer goes back to the driver)

    @property
    def offset(self) -> str:
        return format_offset(self.offset_s)

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset, "offset_s": self.offset_s, "at": self.at.isoformat().replace("+00:00", "Z"),
            "origin": self.origin, "kind": self.kind, "label": self.label, "step": self.step_id,
            "note": self.note or None, "status": self.status, "error": self.error,
            "decisions": [{k: v for k, v in d.__dict__.items() if v is not None} for d in self.decisions],
            "capacity": self.capacity,
            "expectations": [c.__dict__ for c in self.checks],
            "event": self.event,
        }


class ExpectationResults:
    """What every scenario run reports about its `expect:` checks; `entries` each carry `checks`."""

    entries: list[Any]

    @property
    def checks(self) -> list[CheckResult]:
        return [c for e in self.entries for c in e.checks]

    @property
    def failed_checks(self) -> list[tuple[Any, CheckResult]]:
        return [(e, c) for e in self.entries for c in e.checks if not c.passed]

    @property
    def passed(self) -> bool:
        return not self.failed_checks



def decision_views(response: dict[str, Any], unseen: dict[str, dict[str, Any]]) -> list[DecisionView]:
    """An invocation's decisions: those of its response, from their audit records where audited, then the
    audit records it wrote that its response does not name (`unseen`: new records by id; consumed).

    A duplicate delivery answers with the first invocation's response, so only the audit trail says what
    the duplicate decided.
    """
    views: list[DecisionView] = []
    if not response.get("duplicate"):
        for d in response.get("decisions", []):
            audit_id = d.get("audit_id")
            if audit_id and audit_id in unseen:
                views.append(DecisionView.from_record(unseen.pop(audit_id)))
            elif not audit_id:
                views.append(DecisionView.from_response(d))
    views += [DecisionView.from_record(r) for r in sorted(unseen.values(), key=lambda r: (r["at"], r["id"]))]
    return views

@dataclass
class SimulationResult(ExpectationResults):
    scenario: Scenario
    config: ReflexConfig
    config_path: str
    watched: list[ScalingPolicy]
    initial_capacity: dict[str, dict[str, Any]]
    entries: list[TimelineEntry]
    audit: list[dict[str, Any]]
    evaluate_every_s: float | None
    handler_output: str = ""

    def timeline_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.name,
            "description": self.scenario.description,
            "start": self.scenario.start.isoformat().replace("+00:00", "Z"),
            "config": self.config_path,
            "evaluate_every_s": self.evaluate_every_s,
            "initial_capacity": self.initial_capacity,
            "entries": [e.to_json() for e in self.entries],
            "expectations": {"passed": sum(c.passed for c in self.checks),
                             "failed": sum(not c.passed for c in self.checks)},
        }


# --------------------------------------------------------------------------- the runner


@dataclass(frozen=True)
class _Tick:
    t: float


@dataclass
class _Retry:
    """Lambda's asynchronous retry of an event whose invocation raised (same event, same request id)."""

    t: float
    event: dict[str, Any]
    function: str
    attempt: int  # 1 or 2 (the first delivery was attempt 0)
    request_id: str
    label: str
    step_id: str | None = None


# Lambda retries an asynchronous invocation that raised twice: about 1 minute, then about 2 minutes later;
# then it sends the event to the function's dead-letter queue (or on-failure destination).
ASYNC_RETRY_DELAYS_S = (60.0, 120.0)


class ScenarioRunner:
    """Plays one scenario through the real scaler handler inside an already active `mock_aws()`."""

    def __init__(self, scenario: Scenario, config: ReflexConfig) -> None:
        from reflex_core.clock import VirtualClock
        from simulator.aws_world import create_world

        self.scenario = scenario
        self.config = config
        self.clock = VirtualClock(scenario.start)
        self.injector: Any = None
        if any(s.fault is not None for s in scenario.steps):
            from simulator.faults import FaultInjector

            self.injector = FaultInjector(self.clock)
        self.world = create_world(config, dict(scenario.initial), injector=self.injector)
        self._retries: list[_Retry] = []
        self._request_id: str | None = None
        self.runtime = self.world.runtime(self.clock)
        self.watched = watched_policies(scenario, config)
        self.alarms = AlarmBook(scenario.alarms, scenario.start)
        for name, (state, since) in self.alarms.initial_states().items():
            self.world.set_alarm_state(name, state, since)  # CloudWatch's side: what DescribeAlarms reports
        self.topic_arn = (config.alarm_topics[0].arn if config.alarm_topics
                          else f"arn:aws:sns:{REGION}:{ACCOUNT}:reflex-{config.stage}-alarms")
        self._sent: dict[str, tuple[dict[str, Any], AlarmTransition | None]] = {}
        self._sent_to: dict[str, str] = {}  # step id -> the function its event went to
        self._seen_audit: set[str] = set()
        self._output = io.StringIO()
        self.promotion: Any = None
        if any(s.green_ready is not None or s.promoter is not None for s in scenario.steps):
            from simulator.promotion_sim import PromotionSimulation

            self.promotion = PromotionSimulation(self)
        if scenario.every is not None:
            self.evaluate_every_s = scenario.every.evaluate
        else:
            self.evaluate_every_s = float(config.evaluate_every_minutes * 60)

    # ------------------------------------------------------------------ schedule of the run
    def _ticks(self) -> list[float]:
        """Offsets of the periodic evaluate runs: wall-clock aligned (rate schedules fire on the minute)."""
        every = self.evaluate_every_s
        if not every:
            return []
        start = self.scenario.start.timestamp()
        first = (math.floor(start / every) + 1) * every - start
        count = int((self.scenario.duration - first) // every) + 1 if first <= self.scenario.duration else 0
        return [round(first + i * every, 3) for i in range(count)]

    def _plan(self) -> list[Step | _Tick]:
        # A scenario's own `evaluate` step at a tick's instant *is* that tick; other ticks at a step's
        # instant run first.
        explicit = {s.t for s in self.scenario.steps if s.evaluate}
        items: list[tuple[float, int, int, Step | _Tick]] = [
            (t, 0, i, _Tick(t)) for i, t in enumerate(self._ticks()) if t not in explicit]
        items += [(s.t, 1, i, s) for i, s in enumerate(self.scenario.steps)]
        return [item for *_, item in sorted(items, key=lambda x: (x[0], x[1], x[2]))]

    # ------------------------------------------------------------------ run
    def run(self) -> SimulationResult:
        initial = self._capacity()
        entries: list[TimelineEntry] = []
        with self._quiet_powertools():
            planned: list[Step | _Tick | _Retry] = list(self._plan())
            while planned:
                if self._retries:  # retries due before the next planned item run in their turn
                    planned += self._retries
                    self._retries = []
                    planned.sort(key=lambda x: (x.t, 2 if isinstance(x, _Retry) else 0 if isinstance(x, _Tick) else 1))
                item = planned.pop(0)
                if item.t > self.scenario.duration and isinstance(item, _Retry):
                    continue  # after the scenario's end
                when = self.scenario.start + timedelta(seconds=item.t)
                if self.promotion is not None:  # workflow states due before this item run at their own time
                    entries += self.promotion.until(when)
                if when > self.clock.now():
                    self.clock.set(when)
                if isinstance(item, _Tick):
                    entries.append(self._tick(item.t))
                elif isinstance(item, _Retry):
                    entries.append(self._retry(item))
                else:
                    entries.append(self._step(item))
            if self.promotion is not None:
                entries += self.promotion.until(self.scenario.start + timedelta(seconds=self.scenario.duration))
        return SimulationResult(
            scenario=self.scenario, config=self.config, config_path="", watched=self.watched,
            initial_capacity=initial, entries=entries, audit=self.world.audit_records(),
            evaluate_every_s=self.evaluate_every_s, handler_output=self._output.getvalue())

    @contextlib.contextmanager
    def _quiet_powertools(self) -> Any:
        """Send the Powertools logger's lines and EMF metric lines (printed to stdout) to a buffer."""
        with powertools_logs_to(self._output), contextlib.redirect_stdout(self._output):
            yield

    def _tick(self, t: float) -> TimelineEntry:
        event = self._schedule_event("evaluate", "evaluate")
        entry = TimelineEntry(offset_s=t, at=self.clock.now(), origin="tick", kind="evaluate",
                              label="evaluate (schedule)")
        entry = self._invoke(entry, event)
        if self.promotion is not None:  # the promoter's reconcile schedule runs at the same rate
            entry = self._invoke(entry, self._schedule_event("reconcile", "reconcile"), function="promoter",
                                 merge=True)
        return entry

    def _step(self, step: Step) -> TimelineEntry:
        now = self.clock.now()
        entry = TimelineEntry(offset_s=step.t, at=now, origin="step", kind=step.kind, label="",
                              step_id=step.id, note=step.note)
        event: dict[str, Any] | None = None
        transition: AlarmTransition | None = None
        function = "scaler"
        if step.alarm is not None:
            a = step.alarm
            occurred = self.scenario.start + timedelta(seconds=a.occurred) if a.occurred is not None else now
            if not a.cloudwatch:
                transition = self.alarms.forged(a, occurred)
            else:
                transition = self.alarms.transition(a, min(occurred, now))
                # CloudWatch changes state now; the event carries whatever stamp the step gives it.
                transition = dataclasses.replace(transition, occurred=occurred)
            event = transition.render(a.via, self.topic_arn, now)
            entry.label = _alarm_label(transition, a.via, late=a.occurred is not None and a.occurred < step.t,
                                       future=occurred > now, forged=not a.cloudwatch)
            if a.cloudwatch and self.alarms.moved_to(transition.name, a.state, min(occurred, now)):
                self.world.set_alarm_state(a.name, a.state, min(occurred, now))
        elif step.green_ready is not None:
            g = step.green_ready
            pair = next(p for p in self.config.promotions if p.name == g.pair)
            detail = {"pair": g.pair, **({"release": g.release} if g.release else {}),
                      **({"colour": g.colour} if g.colour else {})}
            event = {"version": "0", "id": g.event_id or str(uuid.uuid4()), "detail-type": pair.green_ready.detail_type,
                     "source": pair.green_ready.source, "account": ACCOUNT, "time": _eb_time(now), "region": REGION,
                     "resources": [], "detail": detail}
            entry.label = f"{pair.green_ready.detail_type} {g.pair}" + (f" {g.release}" if g.release else "")
            function = "promoter"
        elif step.promoter is not None:
            event = dict(step.promoter)
            entry.label = (f"console {event.get('command')} {event.get('pair', '')} by "
                           f"{event.get('operator') or '?'}").replace("  ", " ")
            function = "promoter"
        elif step.redeliver is not None:
            function = self._sent_to.get(step.redeliver.step, "scaler")
            original, original_transition = self._sent[step.redeliver.step]
            if step.redeliver.via is not None and original_transition is not None:
                event = original_transition.render(step.redeliver.via, self.topic_arn, now)
                transition = original_transition
                entry.label = f"same transition as '{step.redeliver.step}' via {step.redeliver.via}"
            else:
                event = copy.deepcopy(original)
                transition = original_transition
                entry.label = f"redelivery of '{step.redeliver.step}' (identical event)"
        elif step.kill_switch is not None:
            ks = step.kill_switch
            value = ks.raw_value
            self.world.set_kill_switch_value(ks.scope, value)
            if ks.invalidate_cache:
                self.world.invalidate_kill_switch_caches()
            name = f"{self.world.settings.kill_switch_prefix}/{ks.scope}"
            shown = "deleted" if value is None else value
            entry.label = f"kill switch {ks.scope} -> {shown}"
            entry.status = "ssm"
            entry.decisions.append(DecisionView(
                outcome="ssm:put-parameter" if value is not None else "ssm:delete-parameter",
                detail=f"{name} = {shown}" + (
                    "; cache invalidated (fresh container)" if ks.invalidate_cache else
                    f"; warm containers see it within {self.config.guardrails.kill_switch_cache_s}s"),
                audited=False))
        elif step.hold_lock is not None:
            hl = step.hold_lock
            if hl.pair is not None:
                key, label = f"promotion/{hl.pair}", hl.pair
            else:
                policy = self.config.scaling_policy(hl.policy or "")
                assert policy is not None
                key, label = policy.target.key, str(hl.policy)
            held = self.runtime.store.acquire_lock(key, f"simulated-other-invocation-{uuid.uuid4()}", now, hl.lease_s)
            entry.label = f"lock on {label} held elsewhere ({hl.lease_s}s lease)"
            entry.status = "state"
            entry.decisions.append(DecisionView(
                outcome="lock:held" if held else "lock:already-held", policy=label,
                detail=f"lock#{key} taken by another invocation until +{hl.lease_s}s", audited=False))
        elif step.cloudwatch is not None:
            cw = step.cloudwatch
            entry.status = "cloudwatch"
            if cw.delete:
                from simulator.aws_world import delete_alarm

                delete_alarm(self.world.clients, cw.alarm)
                entry.label = f"alarm {cw.alarm} deleted in CloudWatch"
                change = f"{cw.alarm} deleted"
            else:
                assert cw.state is not None
                self.alarms.set(cw.alarm, cw.state, now)
                self.world.set_alarm_state(cw.alarm, cw.state, now)
                entry.label = f"{cw.alarm} -> {cw.state} in CloudWatch (event lost)"
                change = f"{cw.alarm} is {cw.state} per DescribeAlarms; no event delivered"
            entry.decisions.append(DecisionView(outcome="cloudwatch:changed", detail=change, audited=False))
        elif step.capacity is not None:
            cs = step.capacity
            policy = self.config.scaling_policy(cs.policy)
            assert policy is not None
            _set_capacity_outside(self.world.clients, policy, cs.desired)
            entry.label = f"{cs.policy} desired -> {cs.desired} outside Reflex"
            entry.status = "outside"
            entry.decisions.append(DecisionView(outcome="capacity:changed-outside", policy=cs.policy,
                                                detail=f"desired set to {cs.desired} by hand", audited=False))
        elif step.freeze is not None:
            fz = step.freeze
            self.runtime.store.place_scale_in_freeze(fz.policy, fz.holder, now.timestamp() + fz.for_s)
            entry.label = f"scale-in of {fz.policy} frozen by {fz.holder} for {fz.for_s:g}s"
            entry.status = "state"
            entry.decisions.append(DecisionView(outcome="freeze:placed", policy=fz.policy,
                                                detail=f"freeze#scale-in#{fz.policy} held by {fz.holder}",
                                                audited=False))
        elif step.fault is not None:
            fs = step.fault
            assert self.injector is not None
            end = now + timedelta(seconds=fs.for_s) if fs.for_s is not None else None
            self.injector.fail(fs.operation, fs.kind, count=fs.count, calls=tuple(fs.calls),
                               start=now if end is not None else None, end=end, persist=fs.persist)
            scope = (f"next {fs.count} call(s)" if fs.count else f"calls {fs.calls}" if fs.calls
                     else f"for {fs.for_s:g}s" if fs.for_s else "every call")
            entry.label = f"fault {fs.kind} on {fs.operation}, {scope}" + (" (every attempt)" if fs.persist else "")
            entry.status = "fault"
            entry.decisions.append(DecisionView(outcome="fault:armed", detail=entry.label, audited=False))
        elif step.concurrent is not None:
            return self._concurrent(step, entry)
        elif step.health is not None:
            from simulator.promotion_world import set_healthy_targets

            hs = step.health
            set_healthy_targets(self.world.clients, self.world.pairs[hs.pair], hs.colour, hs.healthy)
            entry.label = f"{hs.pair} {hs.colour}: {hs.healthy} healthy target(s)"
            entry.status = "health"
            entry.decisions.append(DecisionView(outcome="health:set", policy=hs.pair,
                                                detail=f"{hs.colour} has {hs.healthy} healthy", audited=False))
        elif step.evaluate:
            event = self._schedule_event("evaluate", "evaluate")
            entry.label = "evaluate (schedule)"
        elif step.prewarm is not None:
            pw = step.prewarm
            event = self._schedule_event(f"prewarm-{pw.policy}-{pw.prewarm}", "prewarm", policy=pw.policy,
                                         params={"prewarm": pw.prewarm})
            entry.label = f"prewarm {pw.policy}/{pw.prewarm} (schedule)"
        elif step.console is not None:
            event = dict(step.console)
            who = event.get("operator") or "?"
            entry.label = f"console {event.get('command')} {event.get('policy', '')} by {who}".replace("  ", " ")
        elif step.event is not None:
            ce = step.event
            event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": ce.detail_type, "source": ce.source,
                     "account": ACCOUNT, "time": _eb_time(now), "region": REGION, "resources": [],
                     "detail": ce.detail}
            entry.label = f"event {ce.source} / {ce.detail_type}"

        if event is not None:
            if step.id:
                self._sent[step.id] = (copy.deepcopy(event), transition)
                self._sent_to[step.id] = function
            entry = self._invoke(entry, event, function=function)
            if (function == "scaler" and transition is not None and self.promotion is not None
                    and self.promotion.guarded(transition.name)):
                # The deployed rules deliver a guard alarm to both functions.
                entry = self._invoke(entry, copy.deepcopy(event), function="promoter", merge=True)
        else:
            entry.capacity = self._capacity()
        if step.expect is not None:
            entry.checks = self._check(step.expect, entry)
        return entry

    def _retry(self, item: _Retry) -> TimelineEntry:
        entry = TimelineEntry(offset_s=item.t, at=self.clock.now(), origin="step", kind="retry",
                              label=f"Lambda retry {item.attempt} of: {item.label}", step_id=item.step_id)
        self._request_id = item.request_id
        try:
            return self._invoke(entry, copy.deepcopy(item.event), function=item.function, attempt=item.attempt,
                                label=item.label, step_id=item.step_id)
        finally:
            self._request_id = None

    def _async_failed(self, event: dict[str, Any], function: str, attempt: int, request_id: str, label: str,
                      step_id: str | None, error: str) -> str:
        """Schedule Lambda's next retry of an asynchronous event that raised, or dead-letter it after the last."""
        offset = (self.clock.now() - self.scenario.start).total_seconds()
        if attempt < len(ASYNC_RETRY_DELAYS_S):
            due = offset + ASYNC_RETRY_DELAYS_S[attempt]
            self._retries.append(_Retry(t=due, event=copy.deepcopy(event), function=function, attempt=attempt + 1,
                                        request_id=request_id, label=label, step_id=step_id))
            return f"Lambda retries at {format_offset(due)}"
        self.world.clients.sqs.send_message(
            QueueUrl=self.world.settings.dead_letter_queue_url, MessageBody=json.dumps(event, default=str),
            MessageAttributes={"RequestID": {"DataType": "String", "StringValue": request_id},
                               "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                               "ErrorMessage": {"DataType": "String", "StringValue": error[:256]}})
        return "retries exhausted: dead-lettered"

    def _concurrent(self, step: Step, entry: TimelineEntry) -> TimelineEntry:
        """Every delivery of the step at the same instant, each in its own thread, against the same state."""
        import threading

        assert step.concurrent is not None
        deliveries: list[tuple[str, dict[str, Any]]] = []
        now = self.clock.now()
        for d in step.concurrent:
            if d.console is not None:
                deliveries.append(("scaler", dict(d.console)))
            elif d.promoter is not None:
                deliveries.append(("promoter", dict(d.promoter)))
            elif d.event is not None:
                deliveries.append(("scaler", {
                    "version": "0", "id": str(uuid.uuid4()), "detail-type": d.event.detail_type,
                    "source": d.event.source, "account": ACCOUNT, "time": _eb_time(now), "region": REGION,
                    "resources": [], "detail": d.event.detail}))
            else:
                original, _ = self._sent[str(d.redeliver)]
                deliveries.append((self._sent_to.get(str(d.redeliver), "scaler"), copy.deepcopy(original)))
        functions = {f for f, _ in deliveries}
        if len(functions) != 1:
            raise ScenarioError(f"step {step.id or step.t}: concurrent deliveries go to one function (one runtime per "
                                "process in the simulator)")
        function = functions.pop()
        if function == "promoter":
            from promoter.handler import lambda_handler
        else:
            from scaler.handler import lambda_handler
        self.world.activate(function, self.clock)
        responses: list[Any] = [None] * len(deliveries)
        barrier = threading.Barrier(len(deliveries))

        def deliver(i: int, event: dict[str, Any]) -> None:
            context = SimulatedContext(function_name=f"reflex-{self.config.stage}-{function}")
            barrier.wait()
            try:
                responses[i] = lambda_handler(event, context)  # type: ignore[arg-type]
            except Exception as err:  # noqa: BLE001 - shown in the timeline, as Lambda would report it
                responses[i] = err

        threads = [threading.Thread(target=deliver, args=(i, e)) for i, (_, e) in enumerate(deliveries)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        entry.label = f"{len(deliveries)} deliveries at once to {function}"
        entry.event = {"concurrent": [e for _, e in deliveries]}
        raised = [r for r in responses if isinstance(r, BaseException)]
        entry.status = "ok" if not raised else f"{len(raised)} raised"
        if raised:
            entry.error = "; ".join(f"{type(r).__name__}: {str(r)[:200]}" for r in raised)
        unseen = {r["id"]: r for r in self._audit_since(self.clock.now()) if r["id"] not in self._seen_audit}
        self._seen_audit.update(unseen)
        for response in responses:
            if isinstance(response, dict) and not response.get("duplicate"):
                for d in response.get("decisions", []):
                    audit_id = d.get("audit_id")
                    if audit_id and audit_id in unseen:
                        entry.decisions.append(DecisionView.from_record(unseen.pop(audit_id)))
                    elif not audit_id:
                        entry.decisions.append(DecisionView.from_response(d))
        leftover = sorted(unseen.values(), key=lambda r: (r["at"], r["id"]))
        entry.decisions += [DecisionView.from_record(r) for r in leftover]
        entry.capacity = self._capacity()
        entry.response = responses
        if step.expect is not None:
            entry.checks = self._check(step.expect, entry)
        return entry

    def _schedule_event(self, name: str, operation: str, policy: str | None = None,
                        params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "operation": operation, "scheduled_time": _eb_time(self.clock.now()),
                                "execution_id": str(uuid.uuid4())}
        if policy:
            body["policy"] = policy
        if params:
            body["params"] = params
        return {"reflex_schedule": body}

    def _invoke(self, entry: TimelineEntry, event: dict[str, Any], function: str = "scaler",
                merge: bool = False, attempt: int = 0, label: str | None = None,
                step_id: str | None = None) -> TimelineEntry:
        """Invoke `function` (scaler or promoter) with the event; `merge` adds to the entry's decisions."""
        if function == "promoter":
            from promoter.handler import lambda_handler
        else:
            from scaler.handler import lambda_handler

        self.world.activate(function, self.clock)
        if not merge:
            entry.event = event
        context = SimulatedContext(function_name=f"reflex-{self.config.stage}-{function}")
        if self._request_id is not None:
            context.aws_request_id = self._request_id
        response: dict[str, Any] = {}
        try:
            response = lambda_handler(event, context)  # type: ignore[arg-type]
            entry.response = response
            if not merge:
                entry.status = str(response.get("status", "?")) + (" (duplicate)" if response.get("duplicate")
                                                                   else "")
        except Exception as err:  # noqa: BLE001 - Lambda would retry; the timeline shows what was raised
            entry.status = "raised"
            entry.error = f"{type(err).__name__}: {str(err)[:300]}"
            entry.response = err
            if self.scenario.async_retries and "command" not in event and "reflex_step" not in event:
                # An asynchronous event (EventBridge, SNS, alarm action, schedule): Lambda retries it.
                entry.status += "; " + self._async_failed(event, function, attempt, context.aws_request_id,
                                                          label or entry.label, step_id or entry.step_id,
                                                          entry.error)
        decisions = self._decisions(response)
        if merge:  # a periodic reconcile with nothing to do is not worth a row
            decisions = [d for d in decisions if d.audited or entry.origin != "tick"]
        entry.decisions = entry.decisions + decisions if merge else decisions
        entry.capacity = self._capacity()
        return entry

    def _decisions(self, response: dict[str, Any]) -> list[DecisionView]:
        """This invocation's decisions: its new audit records, plus what it decided without auditing.

        A duplicate delivery answers with the first invocation's response, so the audit trail (not the
        response) says what this delivery decided.
        """
        records = {r["id"]: r for r in self._audit_since(self.clock.now()) if r["id"] not in self._seen_audit}
        self._seen_audit.update(records)
        return decision_views(response, records)

    def _audit_since(self, since: datetime) -> list[dict[str, Any]]:
        """Audit records written at or after `since` (the clock does not move during an invocation)."""
        from reflex_core.clock import iso

        kwargs: dict[str, Any] = {"TableName": self.world.settings.audit_table, "FilterExpression": "sk >= :since",
                                  "ExpressionAttributeValues": {":since": {"S": iso(since)}}}
        records: list[dict[str, Any]] = []
        while True:
            page = self.world.clients.dynamodb.scan(**kwargs)
            records += [json.loads(item["record"]["S"]) for item in page["Items"]]
            if "LastEvaluatedKey" not in page:
                return records
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _capacity(self) -> dict[str, dict[str, Any]]:
        from scaler.capacity_targets import capacity_target

        out: dict[str, dict[str, Any]] = {}
        for policy in self.watched:
            try:
                out[policy.name] = capacity_target(self.world.clients, policy).read().as_dict()
            except Exception as err:  # noqa: BLE001 - a missing target is shown, not fatal
                out[policy.name] = {"error": type(err).__name__}
        if self.promotion is not None:
            out.update(self.promotion.weights())
        return out

    def _check(self, expect: Expect, entry: TimelineEntry) -> list[CheckResult]:
        checks: list[CheckResult] = []
        # Decisions without a policy (duplicates, stale events, rejections) concern every policy.
        decisions = [d for d in entry.decisions if expect.policy is None or d.policy in (expect.policy, None)]
        if expect.outcome is not None:
            outcomes = [d.outcome for d in decisions]
            checks.append(CheckResult("outcome", expect.outcome, outcomes, expect.outcome in outcomes, expect.policy))
        if expect.dead_lettered is not None:
            attrs = self.world.clients.sqs.get_queue_attributes(
                QueueUrl=self.world.settings.dead_letter_queue_url,
                AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
            count = int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])
            checks.append(CheckResult("dead_lettered", expect.dead_lettered, count, count == expect.dead_lettered))
        if expect.absent is not None:
            outcomes = [d.outcome for d in decisions]
            checks.append(CheckResult("absent", expect.absent, outcomes, expect.absent not in outcomes,
                                      expect.policy))
        if expect.detail is not None:
            details = [d.detail for d in decisions]
            checks.append(CheckResult("detail", expect.detail, details,
                                      any(expect.detail in d for d in details), expect.policy))
        if expect.desired is not None:
            policy = expect.policy or self.watched[0].name
            actual = entry.capacity.get(policy, {}).get("desired")
            if actual is None and policy not in entry.capacity:
                found = self.config.scaling_policy(policy)
                if found is not None:
                    from scaler.capacity_targets import capacity_target

                    actual = capacity_target(self.world.clients, found).read().desired
            checks.append(CheckResult("desired", expect.desired, actual, actual == expect.desired, policy))
        if expect.weights is not None or expect.live is not None:
            pair = expect.pair or self.config.promotions[0].name
            state = entry.capacity.get(pair, {})
            if expect.weights is not None:
                checks.append(CheckResult("weights", expect.weights, state.get("weights"),
                                          state.get("weights") == expect.weights, pair))
            if expect.live is not None:
                checks.append(CheckResult("live", expect.live, state.get("live"), state.get("live") == expect.live,
                                          pair))
        return checks


def _alarm_label(t: AlarmTransition, via: str, late: bool, future: bool = False, forged: bool = False) -> str:
    reading = ""
    if t.value is not None:
        reading = f" {t.value:g}" + (f" vs {t.threshold:g}" if t.threshold is not None else "")
    suffix = f" (happened {t.occurred.strftime('%H:%M:%S')})" if late else ""
    suffix += f" (stamped {t.occurred.isoformat()}, in the future)" if future else ""
    suffix += " (not from CloudWatch)" if forged else ""
    return f"{t.name} {t.previous}->{t.state}{reading} via {via}{suffix}"


def _set_capacity_outside(clients: Any, policy: ScalingPolicy, desired: int) -> None:
    """Change a target's desired capacity as someone outside Reflex would (the platform's own limits widened
    if needed: a hand edit can leave the target outside the policy's bounds)."""
    from reflex_core.config import AuroraReplicasTarget, AutoScalingGroupTarget, EcsServiceTarget

    t = policy.target
    if isinstance(t, EcsServiceTarget):
        clients.ecs.update_service(cluster=t.cluster, service=t.service, desiredCount=desired)
    elif isinstance(t, AutoScalingGroupTarget):
        group = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[t.name])[
            "AutoScalingGroups"][0]
        clients.autoscaling.update_auto_scaling_group(
            AutoScalingGroupName=t.name, MinSize=min(int(group["MinSize"]), desired),
            MaxSize=max(int(group["MaxSize"]), desired), DesiredCapacity=desired)
    elif isinstance(t, AuroraReplicasTarget):
        st = clients.application_autoscaling.describe_scalable_targets(
            ServiceNamespace="rds", ResourceIds=[f"cluster:{t.cluster}"])["ScalableTargets"][0]
        clients.application_autoscaling.register_scalable_target(
            ServiceNamespace="rds", ResourceId=f"cluster:{t.cluster}", ScalableDimension="rds:cluster:ReadReplicaCount",
            MinCapacity=desired, MaxCapacity=max(int(st["MaxCapacity"]), desired))


def run_scenario(scenario: Scenario, config: ReflexConfig, config_path: str = "") -> SimulationResult:
    """Run inside a fresh moto account; the installed runtime is removed afterwards."""
    from moto import mock_aws

    from reflex_core.runtime import install_runtime

    errors = check_against_config(scenario, config)
    if errors:
        raise ScenarioError(f"scenario {scenario.name} does not fit config {config_path or config.stage}\n  "
                            + "\n  ".join(errors))
    try:
        with mock_aws():
            result = ScenarioRunner(scenario, config).run()
    finally:
        install_runtime(None)
    result.config_path = config_path
    return result


def run_file(scenario_path: str | Path, config_override: str | None = None) -> SimulationResult:
    scenario = load_scenario(scenario_path)
    config_path = resolve_config_path(scenario, config_override, scenario_path)
    config = load_config_file(config_path)
    try:
        shown = str(config_path.resolve().relative_to(Path.cwd()))
    except ValueError:
        shown = str(config_path)
    return run_scenario(scenario, config, shown)
