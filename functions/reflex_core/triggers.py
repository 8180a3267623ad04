"""Every way a reaction can be started, parsed into one typed `Trigger`.

Recognised shapes (checked in this order):

* SNS records carrying a classic CloudWatch alarm notification      -> kind "alarm",    source "sns"
* a CloudWatch alarm invoking the function as its alarm action       -> kind "alarm",    source "alarm-action"
* EventBridge "CloudWatch Alarm State Change" (metric, metric-math,
  anomaly-detection and composite alarms)                            -> kind "alarm",    source "eventbridge"
* any other EventBridge event (custom `ContentChanged`, ...)         -> kind "event",    source "eventbridge"
* an EventBridge Scheduler invocation (`{"reflex_schedule": {...}}`) -> kind "schedule", source "scheduler"
* a Step Functions task of a Reflex workflow (`{"reflex_step": {...}}`) -> kind "step",     source "stepfunctions"
* messages of a Reflex queue (`{"reflex_queue": {...}}`, built by the    -> kind "queue",    source "sqs:<queue>"
  function from its SQS batch: continuations, coalesced CDN paths)
* a console payload (`{"command": ...}`)                             -> kind "console",  source "console"

Anything else, or any of these with a bad field, raises `TriggerError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any, Literal

from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reflex_core.clock import iso
from reflex_core.config_base import format_validation_error

AlarmStateValue = Literal["OK", "ALARM", "INSUFFICIENT_DATA"]
ALARM_DETAIL_TYPE = "CloudWatch Alarm State Change"
# Times outside this range are not real event times; rejecting them keeps date arithmetic safe.
MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)


class TriggerError(ValueError):
    """The event or payload is malformed. `errors` lists `field: problem` strings."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _parse_alarm_time(value: Any) -> datetime:
    """CloudWatch writes `2019-10-02T17:04:40.985+0000`; accept that and ISO-8601."""
    if isinstance(value, datetime):
        dt = value
    else:
        text = str(value)
        if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
            text = text[:-2] + ":" + text[-2:]
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        dt = dt.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp is out of range") from None
    if not MIN_TIME <= dt <= MAX_TIME:
        raise ValueError(f"timestamp must be between {MIN_TIME.year} and {MAX_TIME.year}")
    return dt


# --------------------------------------------------------------------------- wire models


class _Wire(BaseModel):
    # Wire models are built when their kind of event first arrives, not at import: each function sees
    # one or two of the kinds in its lifetime (docs/benchmarks.md, "Cold start").
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)


class _AlarmStateWire(_Wire):
    value: AlarmStateValue
    reason: str = ""
    reasonData: str | dict[str, Any] | None = None
    timestamp: datetime

    @field_validator("timestamp", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> datetime:
        return _parse_alarm_time(v)


class _AlarmConfigWire(_Wire):
    description: str | None = None
    metrics: list[dict[str, Any]] = Field(default_factory=list)
    alarmRule: str | None = None


class _AlarmDetailWire(_Wire):
    alarmName: str = Field(min_length=1, max_length=255)
    state: _AlarmStateWire
    previousState: _AlarmStateWire | None = None
    configuration: _AlarmConfigWire = Field(default_factory=_AlarmConfigWire)


class AlarmStateChangeEvent(EventBridgeModel):
    """EventBridge 'CloudWatch Alarm State Change' (Powertools EventBridgeModel with a typed detail)."""

    model_config = ConfigDict(defer_build=True)

    detail: _AlarmDetailWire  # type: ignore[assignment]


class AlarmActionInvocation(_Wire):
    """Payload when an alarm invokes the function directly as its alarm action."""

    source: Literal["aws.cloudwatch"]
    alarmArn: str = Field(min_length=1)
    accountId: str | None = None
    time: datetime | None = None
    region: str | None = None
    alarmData: _AlarmDetailWire


class _ClassicTrigger(_Wire):
    MetricName: str | None = None
    Namespace: str | None = None
    Threshold: float | None = None
    ComparisonOperator: str | None = None


class ClassicAlarmNotification(_Wire):
    """The JSON message of a classic CloudWatch alarm notification delivered through SNS."""

    AlarmName: str = Field(min_length=1, max_length=255)
    AlarmArn: str | None = None
    NewStateValue: AlarmStateValue
    OldStateValue: AlarmStateValue | None = None
    NewStateReason: str = ""
    StateChangeTime: datetime
    Trigger: _ClassicTrigger | None = None

    @field_validator("StateChangeTime", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> datetime:
        return _parse_alarm_time(v)


class _SnsMessageWire(_Wire):
    """The fields of an SNS delivery Reflex uses. Others (signature, certificate and unsubscribe URLs) are not
    checked: the Lambda console's own SNS template has `"EXAMPLE"` there, and Lambda is the one that received
    the delivery from SNS."""

    MessageId: str = Field(min_length=1, max_length=256)
    TopicArn: str = Field(min_length=1, max_length=1024)
    Message: str
    Subject: str | None = None
    Timestamp: str | None = None


class _SnsRecordWire(_Wire):
    EventSource: Literal["aws:sns"]
    Sns: _SnsMessageWire


class SnsEventWire(_Wire):
    Records: list[_SnsRecordWire] = Field(min_length=1)


class ScheduleWire(BaseModel):
    """Input that Reflex's EventBridge Scheduler schedules send (set by the CDK constructs)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    operation: str = Field(min_length=1, max_length=64)
    policy: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    scheduled_time: datetime | None = None
    execution_id: str | None = Field(default=None, max_length=128)

    @field_validator("scheduled_time", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> datetime | None:
        return None if v is None else _parse_alarm_time(v)


class _ScheduleEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    reflex_schedule: ScheduleWire


class StepWire(BaseModel):
    """Payload a Reflex state machine sends to a task (set by the workflow definition, see promoter/).

    `execution`, `state` and `entered_at` come from the context object (`$$.Execution.Id`, `$$.State.Name`,
    `$$.State.EnteredTime`), `retry` from `$$.State.RetryCount`: a redelivered invocation has the same
    idempotency key and acts once; a retry of a step (which may have been refused for now, e.g. by the kill
    switch) and a state entered again in a loop are new keys (the key also covers the input, so two loop
    iterations entered within the same millisecond stay distinct). `input` is the workflow's state;
    `task_token` is set for callback tasks.
    """

    model_config = ConfigDict(extra="forbid")

    step: str = Field(min_length=1, max_length=64)
    execution: str = Field(min_length=1, max_length=256)
    state: str = Field(min_length=1, max_length=80)
    entered_at: datetime
    retry: int = Field(default=0, ge=0, le=1000)
    task_token: str | None = Field(default=None, min_length=1, max_length=2048)
    input: dict[str, Any] = Field(default_factory=dict)

    @field_validator("entered_at", mode="before")
    @classmethod
    def _ts(cls, v: Any) -> datetime:
        return _parse_alarm_time(v)

    @property
    def execution_name(self) -> str:
        return self.execution.rsplit(":", 1)[-1]

    @property
    def run_id(self) -> str:
        digest = hashlib.sha256(json.dumps(self.input, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{self.execution_name}/{self.state}/{iso(self.entered_at)}/{self.retry}/{digest}"


class _StepEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    reflex_step: StepWire


class QueueWire(BaseModel):
    """One message, or several merged, of a queue Reflex feeds itself (see invalidator/queue_entry.py).

    Built by the function's entry from the SQS records it receives, never by hand: `message_ids` make the
    idempotency key (a redelivered message acts once), `body` is validated by the reaction.
    """

    model_config = ConfigDict(extra="forbid")

    queue: str = Field(min_length=1, max_length=80)
    kind: str = Field(min_length=1, max_length=64)
    message_ids: list[str] = Field(min_length=1, max_length=10_000)
    body: dict[str, Any] = Field(default_factory=dict)


class _QueueEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    reflex_queue: QueueWire


# --------------------------------------------------------------------------- the typed Trigger


class AlarmInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    arn: str | None = None
    state: AlarmStateValue
    previous_state: AlarmStateValue | None = None
    changed_at: datetime
    reason: str = ""
    kind: Literal["metric", "metric-math", "anomaly-detection", "composite"] = "metric"
    value: float | None = None
    threshold: float | None = None

    @property
    def breach(self) -> float | None:
        """How far the metric is past its threshold, relative to the threshold (0.5 = 50 % past)."""
        if self.value is None or self.threshold is None:
            return None
        if self.threshold == 0:
            return 1.0 if self.value != 0 else 0.0
        return max(0.0, abs(self.value - self.threshold) / abs(self.threshold))

    @property
    def transition(self) -> str:
        return f"{self.previous_state or '?'}->{self.state}"


class CustomEvent(BaseModel):
    model_config = ConfigDict(frozen=True)

    source: str
    detail_type: str
    detail: dict[str, Any]
    resources: list[str] = Field(default_factory=list)


class Trigger(BaseModel):
    """One typed trigger, whatever delivered it."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["alarm", "event", "schedule", "console", "step", "queue"]
    source: str
    event_id: str
    received_at: datetime
    who: str
    alarm: AlarmInfo | None = None
    event: CustomEvent | None = None
    schedule: ScheduleWire | None = None
    payload: dict[str, Any] | None = None
    step: StepWire | None = None
    queue: QueueWire | None = None
    raw_ref: str

    @property
    def idempotency_key(self) -> str:
        """Alarms key on name + state + change time, so the same transition delivered by
        EventBridge, SNS and an alarm action acts once."""
        if self.alarm is not None:
            return f"alarm:{self.alarm.name}:{self.alarm.state}:{iso(self.alarm.changed_at)}"
        if self.kind == "console":
            # Who sent which command under which request id: a reused request_id with a different command still
            # acts, and a command re-sent through the function URL (a new envelope: request id, time, headers)
            # with the same request_id and body is the same command.
            return f"console:{self.who}:{self.event_id}:{raw_reference(self.payload)}"
        return f"{self.kind}:{self.event_id}"

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "source": self.source, "id": self.event_id, "raw_ref": self.raw_ref}
        if self.alarm:
            out["alarm"] = {"name": self.alarm.name, "transition": self.alarm.transition,
                            "changed_at": iso(self.alarm.changed_at), "kind": self.alarm.kind,
                            "value": self.alarm.value, "threshold": self.alarm.threshold}
        if self.event:
            out["event"] = {"source": self.event.source, "detail_type": self.event.detail_type}
        if self.schedule:
            out["schedule"] = {"name": self.schedule.name, "operation": self.schedule.operation}
        if self.step:
            out["step"] = {"name": self.step.step, "state": self.step.state, "execution": self.step.execution}
        if self.queue:
            out["queue"] = {"name": self.queue.queue, "kind": self.queue.kind, "messages": len(self.queue.message_ids)}
        if self.payload and "command" in self.payload:
            out["command"] = self.payload["command"]
        return out


def raw_reference(event: Any) -> str:
    """A stable fingerprint of the raw event, recorded in the audit so it can be found in logs."""
    blob = json.dumps(event, sort_keys=True, default=str).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:32]


# --------------------------------------------------------------------------- alarm details


def _reason_data(state: _AlarmStateWire) -> dict[str, Any]:
    data = state.reasonData
    if isinstance(data, str):
        try:
            parsed = json.loads(data) if data else {}
        except json.JSONDecodeError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return data or {}


def _finite(value: Any) -> float | None:
    """A finite float, or None for anything else (strings, bools, NaN, integers beyond float range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _last_number(values: Any) -> float | None:
    return _finite(values[-1]) if isinstance(values, list) and values else None


def _alarm_from_detail(detail: _AlarmDetailWire, arn: str | None) -> AlarmInfo:
    reason = _reason_data(detail.state)
    metrics = detail.configuration.metrics
    expressions = [str(m.get("expression", "")) for m in metrics]
    kind: Literal["metric", "metric-math", "anomaly-detection", "composite"]
    if detail.configuration.alarmRule is not None:
        kind = "composite"
    elif any("ANOMALY_DETECTION_BAND" in e for e in expressions):
        kind = "anomaly-detection"
    elif any(e for e in expressions):
        kind = "metric-math"
    else:
        kind = "metric"

    value = _last_number(reason.get("recentDatapoints"))
    threshold: float | None
    if kind == "anomaly-detection":
        upper = _last_number(reason.get("recentUpperThresholds"))
        lower = _last_number(reason.get("recentLowerThresholds"))
        threshold = upper if (value is None or upper is None or value >= upper) else lower
    else:
        threshold = _finite(reason.get("threshold"))
    return AlarmInfo(
        name=detail.alarmName,
        arn=arn,
        state=detail.state.value,
        previous_state=detail.previousState.value if detail.previousState else None,
        changed_at=detail.state.timestamp,
        reason=detail.state.reason[:1000],
        kind=kind,
        value=value if kind != "composite" else None,
        threshold=threshold if kind != "composite" else None,
    )


# --------------------------------------------------------------------------- parsing


def _validate(model: type[BaseModel], data: Any, prefix: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise TriggerError(format_validation_error(err, prefix)) from None


def parse_trigger(event: Any, now: datetime, request_id: str = "local") -> Trigger:
    if not isinstance(event, dict):
        raise TriggerError([f"<root>: expected a JSON object, got {type(event).__name__}"])
    ref = raw_reference(event)

    if "Records" in event:
        return _parse_sns(event, now, ref)
    if "alarmData" in event:
        inv: AlarmActionInvocation = _validate(AlarmActionInvocation, event, "")
        alarm = _alarm_from_detail(inv.alarmData, inv.alarmArn)
        return Trigger(kind="alarm", source="alarm-action", event_id=f"{alarm.name}@{iso(alarm.changed_at)}",
                       received_at=now, who=f"alarm:{alarm.name}", alarm=alarm, raw_ref=ref)
    if "detail-type" in event or "detail_type" in event:
        if event.get("detail-type") == ALARM_DETAIL_TYPE and event.get("source") == "aws.cloudwatch":
            ev: AlarmStateChangeEvent = _validate(AlarmStateChangeEvent, event, "")
            arn = ev.resources[0] if ev.resources else None
            alarm = _alarm_from_detail(ev.detail, arn)
            return Trigger(kind="alarm", source="eventbridge", event_id=ev.id, received_at=now,
                           who=f"alarm:{alarm.name}", alarm=alarm, raw_ref=ref)
        generic: EventBridgeModel = _validate(EventBridgeModel, event, "")
        if not isinstance(generic.detail, dict):
            raise TriggerError(["detail: must be a JSON object"])
        custom = CustomEvent(source=generic.source, detail_type=generic.detail_type,
                             detail=generic.detail, resources=generic.resources)
        return Trigger(kind="event", source="eventbridge", event_id=generic.id, received_at=now,
                       who=f"event:{generic.source}", event=custom, raw_ref=ref)
    if "reflex_schedule" in event:
        env: _ScheduleEnvelope = _validate(_ScheduleEnvelope, event, "")
        sched = env.reflex_schedule
        # Keyed by the schedule and the time it was due: EventBridge Scheduler gives every delivery attempt its
        # own execution id, so a retried delivery must not count as a new run (it would act a second time).
        run_id = iso(sched.scheduled_time) if sched.scheduled_time else (sched.execution_id or request_id)
        return Trigger(kind="schedule", source="scheduler", event_id=f"{sched.name}:{run_id}", received_at=now,
                       who=f"schedule:{sched.name}", schedule=sched, raw_ref=ref)
    if "reflex_step" in event:
        wrapped: _StepEnvelope = _validate(_StepEnvelope, event, "")
        step = wrapped.reflex_step
        return Trigger(kind="step", source="stepfunctions",
                       event_id=step.run_id, received_at=now,
                       who=f"workflow:{step.execution_name}", step=step, raw_ref=ref)
    if "reflex_queue" in event:
        queued: _QueueEnvelope = _validate(_QueueEnvelope, event, "")
        q = queued.reflex_queue
        ids = hashlib.sha256("\n".join(sorted(q.message_ids)).encode()).hexdigest()[:32]
        return Trigger(kind="queue", source=f"sqs:{q.queue}", event_id=f"{q.queue}:{ids}", received_at=now,
                       who=f"queue:{q.queue}", queue=q, raw_ref=ref)
    if "command" in event:
        operator = event.get("operator")
        request = event.get("request_id") or request_id
        return Trigger(kind="console", source="console", event_id=str(request), received_at=now,
                       who=f"console:{operator if isinstance(operator, str) and operator else 'unknown'}",
                       payload=event, raw_ref=ref)
    if "requestContext" in event:
        return _parse_function_url(event, now, ref)
    raise TriggerError([
        "<root>: unrecognised event; expected an SNS alarm notification (Records), an alarm action "
        "(alarmData), an EventBridge event (detail-type), a schedule (reflex_schedule), a workflow step "
        "(reflex_step), a queue message (reflex_queue) or a console payload (command)"
    ])


def _parse_sns(event: dict[str, Any], now: datetime, ref: str) -> Trigger:
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict) and (
            records[0].get("eventSource") == "aws:s3" or "s3" in records[0]):
        raise TriggerError(["Records.0.eventSource: an S3 event notification sent straight to the function; Reflex "
                            "takes S3 object events through EventBridge (source aws.s3, detail-type Object Created / "
                            "Object Deleted): enable EventBridge notifications on the bucket"])
    sns: SnsEventWire = _validate(SnsEventWire, event, "")
    if len(sns.Records) != 1:
        raise TriggerError([f"Records: expected exactly one SNS record, got {len(sns.Records)}"])
    note = sns.Records[0].Sns
    try:
        message = json.loads(str(note.Message))
    except json.JSONDecodeError:
        raise TriggerError(["Records.0.Sns.Message: not a JSON CloudWatch alarm notification"]) from None
    msg: ClassicAlarmNotification = _validate(ClassicAlarmNotification, message, "Records.0.Sns.Message.")
    threshold = msg.Trigger.Threshold if msg.Trigger else None
    value = _value_from_reason(msg.NewStateReason)
    alarm = AlarmInfo(
        name=msg.AlarmName, arn=msg.AlarmArn, state=msg.NewStateValue, previous_state=msg.OldStateValue,
        changed_at=msg.StateChangeTime, reason=msg.NewStateReason[:1000], kind="metric",
        value=value, threshold=threshold,
    )
    return Trigger(kind="alarm", source=f"sns:{note.TopicArn.rsplit(':', 1)[-1]}", event_id=note.MessageId,
                   received_at=now, who=f"alarm:{alarm.name}", alarm=alarm, raw_ref=ref)


def _value_from_reason(reason: str) -> float | None:
    """Classic notifications only carry the datapoint in prose: 'Threshold Crossed: 1 datapoint [95.2 (...)]'."""
    start = reason.find("[")
    if start < 0:
        return None
    token = reason[start + 1:].split(" ", 1)[0].rstrip("],")
    try:
        return _finite(float(token))  # "Infinity" or "NaN" in the prose is no datapoint
    except ValueError:
        return None


def _parse_function_url(event: dict[str, Any], now: datetime, ref: str) -> Trigger:
    """A console command sent to the function's IAM-authenticated function URL: `who` is the caller Lambda
    verified (reflex_core.identity; the allowlist is checked with the config, by the pipeline)."""
    from reflex_core import identity

    if not identity.is_function_url_event(event):
        raise TriggerError(["requestContext: not a Lambda function URL request (requestContext.http, rawPath)"])
    try:
        caller = identity.verified_caller(event)
        payload = identity.command_payload(event)
    except identity.IdentityError as err:
        raise TriggerError(err.errors) from None
    # The claimed name is replaced by the verified identity: reactions that record `operator` record the ARN.
    payload = {**payload, "operator": identity.operator_label(caller.arn)}
    request = payload.get("request_id") or event["requestContext"].get("requestId") or ref
    return Trigger(kind="console", source=identity.FUNCTION_URL_SOURCE, event_id=str(request), received_at=now,
                   who=f"operator:{caller.arn}", payload=payload, raw_ref=ref)
