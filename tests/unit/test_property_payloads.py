"""Property tests: malformed input never escapes the scaler handler as an exception, and never acts.

Thrown at the real handler (against one moto world per test function, not per example):
random JSON values, random values under each top-level key the trigger parser dispatches on, and
mutations of every valid event in events/scaler (drop a key, change a type, random strings, nested
garbage, and the same inside the JSON-encoded strings: the SNS message, `reasonData`).

Properties:
* the handler returns a response (`ok` or `rejected`): no exception escapes for any input;
* a `rejected` response names at least one field, and nothing changed (capacity, floor, ceiling).
A mutation can still be a valid, acting event (e.g. only the reason text changed): then it may act.

`REFLEX_FUZZ_EXAMPLES` (default 120) sets the examples per test; `REFLEX_FUZZ_RANDOM=1` drops the
fixed seed to explore new inputs (CI runs derandomized, so it never fails on an input it did not see before).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import T0, FakeLambdaContext
from tests.support import events as ev

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "scaler"

FUZZ = settings(
    max_examples=int(os.environ.get("REFLEX_FUZZ_EXAMPLES", "120")),
    deadline=None,
    derandomize=os.environ.get("REFLEX_FUZZ_RANDOM") != "1",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

# JSON numbers that round-trip through a double: what any AWS service (and JSON.parse) can produce.
# Larger integers crash the handler today: see test_huge_integers_in_reason_data_do_not_crash_the_handler.
SAFE_INT = 2**53


def valid_events() -> list[Any]:
    out = []
    for path in sorted(EVENTS.glob("*.json")):
        if path.name.endswith(".expected.json"):
            continue
        expected = json.loads(path.with_name(path.stem + ".expected.json").read_text(encoding="utf-8"))
        if expected["status"] == "ok":
            out.append(json.loads(path.read_text(encoding="utf-8")))
    return out


VALID = valid_events()

scalars = (st.none() | st.booleans() | st.integers(-SAFE_INT, SAFE_INT)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
# Strings that look like what the parsers expect, so mutations reach past the first check.
plausible_strings = st.sampled_from([
    "", " ", "ALARM", "OK", "INSUFFICIENT_DATA", "alarm", "api", "workers", "*", "scale_out", "scale_in",
    "set_capacity", "prewarm", "evaluate", "weekday-morning", "aws.cloudwatch", "CloudWatch Alarm State Change",
    "app.ops", "ScaleRequested", "2026-11-26T09:00:00.000+0000", "2026-11-26T09:00:00Z", "0001-01-01T00:00:00Z",
    "9999-12-31T00:00:00Z", "not a time", "{}", "[]", "null", "{\"a\": 1}", "-1", "1e9", "NaN", "\x00", "é" * 300,
]) | st.text(max_size=40)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


def _set(root: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    _get(root, path[:-1])[path[-1]] = new
    return root


def _json_object_string(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith("{"):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except json.JSONDecodeError:
        return False


@st.composite
def mutate(draw: Any, value: Any, depth: int = 0) -> Any:
    value = copy.deepcopy(value)
    path = draw(st.sampled_from(list(_paths(value))))
    target = _get(value, path)
    ops = ["replace", "string", "garbage"]
    if path:
        ops.append("drop")
    if isinstance(target, dict):
        ops.append("extra-key")
    if _json_object_string(target) and depth < 2:
        ops += ["inside", "inside"]
    op = draw(st.sampled_from(ops))
    if op == "drop":
        parent = _get(value, path[:-1])
        del parent[path[-1]]
        return value
    if op == "extra-key":
        target[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
        return value
    if op == "inside":
        inner = draw(mutate(json.loads(target), depth + 1))
        return _set(value, path, json.dumps(inner))
    new = {"replace": scalars, "string": plausible_strings, "garbage": json_values}[op]
    return _set(value, path, draw(new))


@st.composite
def mutated_valid_events(draw: Any) -> Any:
    event = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 3))):
        event = draw(mutate(event))
    return event


dispatch_shaped = st.builds(
    lambda key, value, extra: {key: value, **extra},
    st.sampled_from(["Records", "alarmData", "detail-type", "reflex_schedule", "command"]),
    json_values,
    st.dictionaries(st.sampled_from(["source", "detail", "policy", "reason", "operator", "alarmArn", "id",
                                     "version", "account", "time", "region", "resources", "desired"]),
                    json_values, max_size=4),
)


# --------------------------------------------------------------------------- the moto world, once per test


@contextmanager
def moto_world() -> Iterator[Any]:
    from moto import mock_aws

    from reflex_core.clock import VirtualClock
    from reflex_core.config import load_config_file
    from reflex_core.runtime import install_runtime
    from simulator.aws_world import create_world

    with mock_aws():
        world = create_world(load_config_file(ROOT / "config" / "dev.yaml"), {"api": 4, "workers": 2,
                                                                             "reporting-db": 1})
        world.runtime(VirtualClock(T0))
        try:
            yield world
        finally:
            install_runtime(None)


def target_state(world) -> dict[str, Any]:
    c = world.clients
    asg = c.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-workers"])["AutoScalingGroups"][0]
    aas = c.application_autoscaling.describe_scalable_targets(
        ServiceNamespace="rds", ResourceIds=["cluster:reporting"],
        ScalableDimension="rds:cluster:ReadReplicaCount")["ScalableTargets"][0]
    return {"api": c.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"],
            "workers": (asg["DesiredCapacity"], asg["MinSize"], asg["MaxSize"]),
            "reporting-db": (aas["MinCapacity"], aas["MaxCapacity"])}


def check_contract(world: Any, event: Any) -> dict[str, Any]:
    from scaler.handler import lambda_handler

    before = target_state(world)
    response = lambda_handler(event, FakeLambdaContext())  # must not raise
    assert isinstance(response, dict)
    assert response["status"] in ("ok", "rejected"), response
    if response["status"] == "rejected":
        errors = response["errors"]
        assert errors and all(isinstance(e, str) and ":" in e for e in errors), errors
        assert isinstance(response["audit_id"], str)
        assert target_state(world) == before, f"a rejected event changed capacity: {event!r}"
    return response


# --------------------------------------------------------------------------- properties


def test_random_json_values_are_rejected_without_raising():
    with moto_world() as world:

        @FUZZ
        @given(event=json_values)
        def check(event: Any) -> None:
            response = check_contract(world, event)
            if not isinstance(event, dict):
                assert response["status"] == "rejected"
                assert response["parked_in_dlq"] is True

        check()


def test_values_under_each_dispatch_key_never_raise():
    with moto_world() as world:

        @FUZZ
        @given(event=dispatch_shaped)
        def check(event: Any) -> None:
            check_contract(world, event)

        check()


def test_mutations_of_every_valid_event_never_raise():
    assert len(VALID) >= 10
    with moto_world() as world:
        seen: set[str] = set()

        @FUZZ
        @given(event=mutated_valid_events())
        def check(event: Any) -> None:
            response = check_contract(world, event)
            seen.add(response["status"])

        check()
        assert seen == {"ok", "rejected"}, "the mutations should produce both valid and invalid events"


def test_every_valid_event_still_passes_the_contract_unmutated():
    with moto_world() as world:
        for event in VALID:
            assert check_contract(world, copy.deepcopy(event))["status"] == "ok"


# ---------------------------------------------------------------- regressions (bugs found and fixed)


def _alarm_with_reason_data(reason_data: dict[str, Any]) -> dict[str, Any]:
    event = ev.eventbridge_alarm("api-cpu-high", "ALARM", T0)
    event["detail"]["state"]["reasonData"] = json.dumps(reason_data)
    return event


@pytest.mark.parametrize("reason_data", [
    {"recentDatapoints": [10**400], "threshold": 80.0},
    {"recentDatapoints": [95.0], "threshold": 10**400},
], ids=["datapoint", "threshold"])
def test_huge_integers_in_reason_data_do_not_crash_the_handler(reason_data):
    with moto_world() as world:
        check_contract(world, _alarm_with_reason_data(reason_data))


def test_alarm_time_at_the_edge_of_the_datetime_range_is_rejected():
    event = ev.eventbridge_alarm("api-cpu-high", "ALARM", T0, value=90, threshold=80)
    event["detail"]["state"]["timestamp"] = "0001-01-01T00:30:00.000+0100"
    with moto_world() as world:
        response = check_contract(world, event)
        assert response["status"] == "rejected"
        assert any("detail.state.timestamp" in e for e in response["errors"])


def test_prewarm_schedule_with_an_out_of_range_time_is_rejected():
    event = ev.schedule("reflex-dev-api-prewarm-weekday-morning", "prewarm", T0, policy="api",
                        params={"prewarm": "weekday-morning"})
    event["reflex_schedule"]["scheduled_time"] = "9999-12-31T23:00:00Z"
    with moto_world() as world:
        response = check_contract(world, event)
        assert response["status"] == "rejected"
        assert any("reflex_schedule.scheduled_time" in e for e in response["errors"])
