"""Builders for real-shaped trigger events (EventBridge alarm, alarm action, SNS, scheduler, console)."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"


def _cw_time(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}+0000"


def alarm_arn(name: str) -> str:
    return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"


def alarm_detail(name: str, state: str, at: datetime, previous: str | None = "OK", value: float | None = None,
                 threshold: float | None = None, composite: bool = False) -> dict[str, Any]:
    reason_data: dict[str, Any] = {"version": "1.0", "statistic": "Average", "period": 60}
    if value is not None:
        reason_data["recentDatapoints"] = [value]
    if threshold is not None:
        reason_data["threshold"] = threshold
    detail: dict[str, Any] = {
        "alarmName": name,
        "state": {"value": state, "reason": f"{name} went to {state}", "timestamp": _cw_time(at)},
        "configuration": {"metrics": []},
    }
    if not composite:
        detail["state"]["reasonData"] = json.dumps(reason_data)
    else:
        detail["configuration"] = {"alarmRule": "ALARM(a) OR ALARM(b)"}
    if previous is not None:
        detail["previousState"] = {"value": previous, "reason": "", "timestamp": _cw_time(at)}
    return detail


def eventbridge_alarm(name: str, state: str, at: datetime, **kw: Any) -> dict[str, Any]:
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "CloudWatch Alarm State Change",
        "source": "aws.cloudwatch", "account": ACCOUNT, "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION, "resources": [alarm_arn(name)], "detail": alarm_detail(name, state, at, **kw),
    }


def alarm_action(name: str, state: str, at: datetime, **kw: Any) -> dict[str, Any]:
    return {"source": "aws.cloudwatch", "alarmArn": alarm_arn(name), "accountId": ACCOUNT,
            "time": _cw_time(at), "region": REGION, "alarmData": alarm_detail(name, state, at, **kw)}


def sns_alarm(name: str, state: str, at: datetime, old: str = "OK", value: float = 95.0,
              threshold: float = 80.0) -> dict[str, Any]:
    message = {
        "AlarmName": name, "AlarmArn": alarm_arn(name), "NewStateValue": state, "OldStateValue": old,
        "NewStateReason": f"Threshold Crossed: 1 datapoint [{value} (26/11/26 09:00:00)] was greater than the "
                          f"threshold ({threshold}).",
        "StateChangeTime": _cw_time(at),
        "Trigger": {"MetricName": "CPUUtilization", "Namespace": "AWS/ECS", "Threshold": threshold,
                    "ComparisonOperator": "GreaterThanThreshold"},
    }
    return {"Records": [{
        "EventSource": "aws:sns", "EventVersion": "1.0",
        "EventSubscriptionArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:alarms:1",
        "Sns": {"Type": "Notification", "MessageId": str(uuid.uuid4()),
                "TopicArn": f"arn:aws:sns:{REGION}:{ACCOUNT}:alarms", "Subject": "ALARM",
                "Message": json.dumps(message),
                "Timestamp": at.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "SignatureVersion": "1", "Signature": "x",
                "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem",
                "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
                "MessageAttributes": {}},
    }]}


def custom_event(source: str, detail_type: str, detail: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": detail_type, "source": source,
            "account": ACCOUNT, "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "region": REGION, "resources": [],
            "detail": detail}


def schedule(name: str, operation: str, at: datetime, policy: str | None = None,
             params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "operation": operation, "scheduled_time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "execution_id": str(uuid.uuid4())}
    if policy:
        body["policy"] = policy
    if params:
        body["params"] = params
    return {"reflex_schedule": body}


def console(command: str, policy: str, **kw: Any) -> dict[str, Any]:
    return {"command": command, "policy": policy, "reason": kw.pop("reason", "test run"),
            "operator": kw.pop("operator", "sre-on-call"), **kw}


def arrive_when_stamped(clock: Any, event: Any) -> None:
    """Move the virtual clock to an alarm event's own state-change time (plus a second of delivery) when that is
    later: a sample event is delivered when it happened, and the core refuses transitions from the future."""
    from reflex_core.triggers import TriggerError, parse_trigger

    try:
        trigger = parse_trigger(event, clock.now())
    except TriggerError:
        return
    if trigger.alarm is not None and trigger.alarm.changed_at > clock.now():
        clock.set(trigger.alarm.changed_at + timedelta(seconds=1))
