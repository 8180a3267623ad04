"""Every trigger kind parses to one typed Trigger; malformed ones name the field."""

from __future__ import annotations

import json

import pytest

from reflex_core.triggers import TriggerError, parse_trigger
from tests.conftest import T0
from tests.support import events as ev


def test_eventbridge_metric_alarm():
    t = parse_trigger(ev.eventbridge_alarm("a", "ALARM", T0, value=150, threshold=100), T0)
    assert t.kind == "alarm" and t.source == "eventbridge"
    assert t.alarm.kind == "metric" and t.alarm.transition == "OK->ALARM"
    assert t.alarm.breach == pytest.approx(0.5)
    assert t.alarm.arn.endswith(":alarm:a")


def test_metric_math_and_anomaly_detection_alarms():
    math_event = ev.eventbridge_alarm("m", "ALARM", T0, value=30, threshold=20)
    math_event["detail"]["configuration"]["metrics"] = [{"id": "e1", "expression": "m1/m2*100", "returnData": True}]
    assert parse_trigger(math_event, T0).alarm.kind == "metric-math"

    anomaly = ev.eventbridge_alarm("ad", "ALARM", T0)
    anomaly["detail"]["configuration"]["metrics"] = [{"id": "ad1", "expression": "ANOMALY_DETECTION_BAND(m1, 2)"}]
    anomaly["detail"]["state"]["reasonData"] = json.dumps(
        {"recentDatapoints": [300.0], "recentUpperThresholds": [200.0], "recentLowerThresholds": [50.0]})
    alarm = parse_trigger(anomaly, T0).alarm
    assert alarm.kind == "anomaly-detection" and alarm.threshold == 200.0 and alarm.breach == pytest.approx(0.5)


def test_composite_alarm_has_no_breach():
    alarm = parse_trigger(ev.eventbridge_alarm("c", "ALARM", T0, composite=True), T0).alarm
    assert alarm.kind == "composite" and alarm.breach is None


def test_same_transition_has_same_key_whatever_the_channel():
    keys = {
        parse_trigger(ev.eventbridge_alarm("x", "ALARM", T0, value=2, threshold=1), T0).idempotency_key,
        parse_trigger(ev.alarm_action("x", "ALARM", T0, value=2, threshold=1), T0).idempotency_key,
        parse_trigger(ev.sns_alarm("x", "ALARM", T0), T0).idempotency_key,
    }
    assert len(keys) == 1


def test_sns_classic_notification_reads_value_from_reason():
    t = parse_trigger(ev.sns_alarm("x", "ALARM", T0, value=95.0, threshold=80.0), T0)
    assert t.source == "sns:alarms" and t.alarm.value == 95.0 and t.alarm.threshold == 80.0


def test_schedule_and_console_and_custom_event():
    s = parse_trigger(ev.schedule("evaluate", "evaluate", T0), T0)
    assert s.kind == "schedule" and s.who == "schedule:evaluate"
    c = parse_trigger(ev.console("scale_out", "api", operator="alice"), T0, request_id="req-1")
    assert c.kind == "console" and c.who == "console:alice"
    assert c.idempotency_key == f"console:console:alice:req-1:{c.raw_ref}"
    # The key is the command (who, request id, body), not its envelope: the same body re-sent is the same command.
    assert s.idempotency_key == "schedule:evaluate:" + "2026-11-26T09:00:00.000Z"
    e = parse_trigger(ev.custom_event("app.ops", "ScaleRequested", {"command": "scale_out"}, T0), T0)
    assert e.kind == "event" and e.event.detail_type == "ScaleRequested"


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda e: e["detail"].pop("alarmName"), "detail.alarmName"),
    (lambda e: e["detail"]["state"].update(value="BROKEN"), "detail.state.value"),
    (lambda e: e["detail"]["state"].update(timestamp="yesterday"), "detail.state.timestamp"),
    (lambda e: e.pop("id"), "id"),
])
def test_malformed_alarm_names_the_field(mutate, field):
    event = ev.eventbridge_alarm("a", "ALARM", T0, value=1, threshold=1)
    mutate(event)
    with pytest.raises(TriggerError) as err:
        parse_trigger(event, T0)
    assert any(e.startswith(field) for e in err.value.errors), err.value.errors


@pytest.mark.parametrize("event", [[], "text", 3, None, {}, {"foo": "bar"}])
def test_unrecognised_shapes(event):
    with pytest.raises(TriggerError, match="<root>"):
        parse_trigger(event, T0)


def test_sns_message_must_be_alarm_json():
    event = ev.sns_alarm("x", "ALARM", T0)
    event["Records"][0]["Sns"]["Message"] = "hello"
    with pytest.raises(TriggerError, match=r"Records\.0\.Sns\.Message"):
        parse_trigger(event, T0)


def test_schedule_rejects_unknown_keys():
    with pytest.raises(TriggerError, match=r"reflex_schedule\.surprise"):
        parse_trigger({"reflex_schedule": {"name": "x", "operation": "evaluate", "surprise": 1}}, T0)
