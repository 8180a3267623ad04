"""Issue 8 at the scaler's root causes (pure logic and AWS request shapes; the scenarios
safety_alarm_state and safety_set_capacity show the same through the real handler):

* remembered alarm state never justifies an action alone: CloudWatch's state (DescribeAlarms by name, 100 a
  call) wins; deleted alarms and alarms no longer matching the policy drop out;
* a set_capacity move toward the bounds counts only its part inside the bounds against max_step;
* the evaluator's quiet waits say what they wait for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from reflex_core.alarm_states import actual_alarms, describe_alarm_states
from reflex_core.alarm_tags import AlarmTagReader
from reflex_core.config import AlarmMatch, Bounds, ScalingPolicy
from reflex_core.state_store import AlarmMemory
from scaler.scaling_reaction import ScalingReaction
from scaler.step_sizing import counted_change

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def _cloudwatch() -> Any:
    return boto3.client("cloudwatch", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def _alarm(name: str, state: str, at: datetime) -> dict[str, Any]:
    return {"AlarmName": name, "AlarmArn": f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}",
            "StateValue": state, "StateUpdatedTimestamp": at}


def test_describe_alarm_states_asks_by_name_100_at_a_time_and_leaves_missing_alarms_out() -> None:
    cw = _cloudwatch()
    names = [f"a-{i:03d}" for i in range(150)]
    with Stubber(cw) as stub:
        stub.add_response("describe_alarms", {"MetricAlarms": [_alarm("a-000", "ALARM", NOW)]},
                          {"AlarmNames": names[:100], "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                           "MaxRecords": 100})
        stub.add_response("describe_alarms", {"MetricAlarms": [], "CompositeAlarms": [
            {**_alarm("a-149", "OK", NOW), "StateTransitionedTimestamp": NOW - timedelta(minutes=5)}]},
                          {"AlarmNames": names[100:], "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                           "MaxRecords": 100})
        found = describe_alarm_states(cw, reversed(names))
        stub.assert_no_pending_responses()
    assert sorted(found) == ["a-000", "a-149"]
    assert found["a-000"].state == "ALARM"
    # The later of the two stamps: "OK for long enough" can only come later, never sooner.
    assert found["a-149"].changed_at == NOW.timestamp()


def test_actual_alarms_drop_deleted_alarms_and_alarms_that_no_longer_match() -> None:
    cw = _cloudwatch()
    rule = AlarmMatch(names=["api-p99"], tags={"reflex:policy": "api"})
    with Stubber(cw) as stub:
        stub.add_response("describe_alarms", {"MetricAlarms": [
            _alarm("api-p99", "OK", NOW), _alarm("tagged", "ALARM", NOW), _alarm("retagged", "ALARM", NOW)]})
        # A tag rule also reads every alarm not OK: one Reflex never saw change state can block a decrease.
        stub.add_response("describe_alarms", {"MetricAlarms": [_alarm("unseen", "ALARM", NOW)]},
                          {"StateValue": "ALARM", "AlarmTypes": ["MetricAlarm", "CompositeAlarm"], "MaxRecords": 100})
        stub.add_response("describe_alarms", {"MetricAlarms": []},
                          {"StateValue": "INSUFFICIENT_DATA", "AlarmTypes": ["MetricAlarm", "CompositeAlarm"],
                           "MaxRecords": 100})
        # Read in name order: "retagged" now carries another policy's tag, "tagged" still this one's.
        stub.add_response("list_tags_for_resource", {"Tags": [{"Key": "reflex:policy", "Value": "other"}]},
                          {"ResourceARN": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:retagged"})
        stub.add_response("list_tags_for_resource", {"Tags": [{"Key": "reflex:policy", "Value": "api"}]},
                          {"ResourceARN": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:tagged"})
        stub.add_response("list_tags_for_resource", {"Tags": [{"Key": "reflex:policy", "Value": "api"}]},
                          {"ResourceARN": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:unseen"})
        alarms = actual_alarms(cw, rule, ["deleted", "tagged", "retagged"], AlarmTagReader())
    assert [(a.name, a.state) for a in alarms] == [("api-p99", "OK"), ("tagged", "ALARM"), ("unseen", "ALARM")]


def _policy(**scale_in: Any) -> ScalingPolicy:
    return ScalingPolicy.model_validate({
        "name": "api", "target": {"kind": "ecs-service", "cluster": "web", "service": "api"},
        "bounds": {"min": 2, "max": 40, "max_step": 8},
        "scale_out": {"alarms": {"names": ["api-p99"]}, "cooldown_s": 120},
        "scale_in": {"when_ok_for_s": 600, **scale_in}})


def test_the_evaluator_decides_from_the_alarms_it_is_given() -> None:
    reaction, policy = ScalingReaction(), _policy()
    still = reaction._evaluate_alarms(policy, [AlarmMemory("api-p99", "ALARM", NOW.timestamp() - 900)], NOW, True)
    assert still is not None and getattr(still, "operation", None) == "scale_out"
    # CloudWatch's reading of the same alarm: OK for 120 s -> a quiet wait that says what it waits for.
    wait = reaction._evaluate_alarms(policy, [AlarmMemory("api-p99", "OK", NOW.timestamp() - 120)], NOW, True,
                                     source="CloudWatch")
    assert wait is not None and getattr(wait, "reason", None) == "stabilizing"
    assert wait.quiet and "scale-in possible in 480s" in wait.detail and "(CloudWatch)" in wait.detail
    gone = reaction._evaluate_alarms(policy, [], NOW, True, source="CloudWatch")
    assert gone is not None and getattr(gone, "reason", None) == "no-alarm-data"
    done = reaction._evaluate_alarms(policy, [AlarmMemory("api-p99", "OK", NOW.timestamp() - 600)], NOW, True)
    assert done is not None and getattr(done, "operation", None) == "scale_in"


@pytest.mark.parametrize(("current", "new", "counted"), [
    (55, 40, 0),    # drifted above max: back to the bound is free
    (55, 35, 5),    # beyond the bound, the rest counts
    (55, 30, 10),
    (0, 2, 0),      # drifted below min
    (0, 12, 10),
    (20, 28, 8),    # inside: the whole change
    (20, 11, 9),
])
def test_only_the_part_of_a_move_inside_the_bounds_counts_against_max_step(current: int, new: int,
                                                                            counted: int) -> None:
    assert counted_change(current, new, Bounds(min=2, max=40, max_step=8)) == counted
