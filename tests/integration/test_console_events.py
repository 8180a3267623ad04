"""Every console test event in `events/` through the real handler, against its documented response.

Parametrized over the directory: a new `events/<function>/<name>.json` is tested automatically, and
fails until its sidecar `<name>.expected.json` says what it must do:

    {"status": "ok", "outcomes": ["executed"], "capacity": {"api": 6}}
    {"status": "rejected", "error_fields": ["set_capacity.desired"], "parked_in_dlq": false}

* `outcomes`: the decisions recorded in the audit trail, in order (a periodic check that finds
  nothing to do is logged, not audited, so it does not appear here).
* `capacity`: the desired capacity, per policy, of every target the event changes. Every other target
  must be left exactly as it was (desired, and the Auto Scaling group / Application Auto Scaling
  floor and ceiling).
* `error_fields`: strings that must each appear in the returned error messages (the field named).
* `parked_in_dlq`: whether a rejected event is parked in the function's DLQ (asynchronous events are,
  console payloads are not: the caller gets the errors back).
* `xfail` (optional): a known bug, "BUG: ...": the test is expected to fail until it is fixed.

Every test runs in a fresh moto world built from config/dev.yaml with api=4, workers=2, reporting-db=1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

# The invalidator's events run in the same world, plus its queues, distribution and a throw-away Redis.
from tests.support.events import arrive_when_stamped
from tests.support.invalidation_events import invalidation_redis, invalidator_invoke  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
SIDECAR = ".expected.json"
INITIAL = {"api": 4, "workers": 2, "reporting-db": 1}  # what the `world` fixture creates

# events/<function>/ -> the function that the events are for.
FUNCTIONS = {"scaler", "invalidator", "promoter", "shards", "resharder", "advisor", "drills", "failover"}
PROMOTER_KEYS = {"given", "weights"}  # sidecar keys of events/promoter/ (see tests/support/promotion_events.py)
RESHARDER_KEYS = {"given", "modified"}  # sidecar keys of events/resharder/ (see tests/support/resharder_events.py)
DRILLS_KEYS = {"executions"}  # sidecar keys of events/drills/ (see tests/support/drills_events.py)


def event_files() -> list[Path]:
    return sorted(p for p in EVENTS.rglob("*.json") if not p.name.endswith(SIDECAR))


def sidecar(path: Path) -> Path:
    return path.with_name(path.name[: -len(".json")] + SIDECAR)


def load_expected(path: Path) -> dict[str, Any] | None:
    side = sidecar(path)
    return json.loads(side.read_text(encoding="utf-8")) if side.exists() else None


def _params() -> list[Any]:
    params = []
    for path in event_files():
        expected = load_expected(path) or {}
        marks = [pytest.mark.xfail(strict=True, reason=expected["xfail"])] if expected.get("xfail") else []
        params.append(pytest.param(path, id=str(path.relative_to(EVENTS).with_suffix("")), marks=marks))
    return params


def target_state(world) -> dict[str, dict[str, int]]:
    """Desired capacity (and platform floor/ceiling where there is one) of every configured target, read from moto."""
    clients = world.clients
    state: dict[str, dict[str, int]] = {}
    for policy in world.config.scaling:
        t = policy.target
        if t.kind == "ecs-service":
            svc = clients.ecs.describe_services(cluster=t.cluster, services=[t.service])["services"][0]
            state[policy.name] = {"desired": svc["desiredCount"]}
        elif t.kind == "asg":
            group = clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=[t.name])[
                "AutoScalingGroups"][0]
            state[policy.name] = {"desired": group["DesiredCapacity"], "min": group["MinSize"],
                                  "max": group["MaxSize"]}
        else:
            st = clients.application_autoscaling.describe_scalable_targets(
                ServiceNamespace="rds", ResourceIds=[f"cluster:{t.cluster}"],
                ScalableDimension="rds:cluster:ReadReplicaCount")["ScalableTargets"][0]
            state[policy.name] = {"desired": st["MinCapacity"], "min": st["MinCapacity"], "max": st["MaxCapacity"]}
    return state


def desired(state: dict[str, dict[str, int]]) -> dict[str, int]:
    return {name: s["desired"] for name, s in state.items()}


# --------------------------------------------------------------------------- the directory itself


def test_events_directory_is_not_empty():
    assert len(event_files()) >= 20


@pytest.mark.parametrize("path", event_files(), ids=lambda p: str(p.relative_to(EVENTS)))
def test_every_event_has_a_valid_sidecar(path):
    expected = load_expected(path)
    assert expected is not None, f"{path.relative_to(ROOT)} has no {sidecar(path).name}: document its response"
    assert expected.get("status") in ("ok", "rejected"), "status must be 'ok' or 'rejected'"
    if expected["status"] == "ok":
        assert isinstance(expected.get("outcomes"), list), "an ok event lists its audited outcomes"
        assert set(expected) <= ({"status", "outcomes", "capacity", "xfail"} | PROMOTER_KEYS | RESHARDER_KEYS
                                 | DRILLS_KEYS)
        assert set(expected.get("capacity", {})) <= set(INITIAL)
    else:
        assert expected.get("error_fields"), "a rejected event names the field(s) its errors must mention"
        assert isinstance(expected.get("parked_in_dlq"), bool)
        assert set(expected) <= {"status", "error_fields", "parked_in_dlq", "xfail"}
    json.loads(path.read_text(encoding="utf-8"))  # the event itself is valid JSON


def test_no_orphan_sidecars():
    orphans = [p for p in EVENTS.rglob("*" + SIDECAR)
               if not p.with_name(p.name[: -len(SIDECAR)] + ".json").exists()]
    assert orphans == []


def test_every_function_directory_has_a_handler():
    assert {p.name for p in EVENTS.iterdir() if p.is_dir()} <= FUNCTIONS


def test_readme_documents_every_event():
    readme = (EVENTS / "README.md").read_text(encoding="utf-8")
    missing = [str(p.relative_to(EVENTS)) for p in event_files() if p.name not in readme]
    assert missing == [], "events/README.md must explain every event"


def test_every_trigger_kind_has_a_valid_example_and_invalid_ones_exist():
    from datetime import UTC, datetime

    from reflex_core.triggers import parse_trigger

    kinds: set[str] = set()
    rejected = 0
    for path in (EVENTS / "scaler").glob("*.json"):
        if path.name.endswith(SIDECAR):
            continue
        expected = load_expected(path) or {}
        if expected.get("status") == "rejected":
            rejected += 1
            continue
        trigger = parse_trigger(json.loads(path.read_text(encoding="utf-8")), datetime.now(UTC))
        kinds.add(f"{trigger.kind}/{trigger.source.split(':')[0]}")
        if trigger.alarm is not None:
            kinds.add(f"alarm-kind/{trigger.alarm.kind}")
        if trigger.kind == "schedule" and trigger.schedule is not None:
            kinds.add(f"schedule/{trigger.schedule.operation}")
        if trigger.kind == "console" and trigger.payload is not None:
            kinds.add(f"console/{trigger.payload['command']}" + ("+dry-run" if trigger.payload.get("dry_run") else ""))
    assert kinds >= {
        "alarm/eventbridge", "alarm/alarm-action", "alarm/sns", "event/eventbridge",
        "alarm-kind/metric", "alarm-kind/metric-math", "alarm-kind/anomaly-detection", "alarm-kind/composite",
        "schedule/evaluate", "schedule/prewarm",
        "console/scale_out", "console/scale_in", "console/set_capacity", "console/prewarm", "console/evaluate",
        "console/set_capacity+dry-run",
    }
    assert rejected >= 10


# --------------------------------------------------------------------------- each event through the handler


@pytest.mark.parametrize("path", _params())
def test_console_event(path: Path, world, invoke, request):
    function = path.relative_to(EVENTS).parts[0]
    assert function in FUNCTIONS, f"no handler registered for events/{function}/"
    expected = load_expected(path)
    assert expected is not None, f"{path.relative_to(ROOT)} has no {sidecar(path).name}"
    if function == "promoter":  # the pair's state before the event (`given`) and its weights after it
        from tests.support.promotion_events import check_promoter_event

        check_promoter_event(path, world, request.getfixturevalue("clock"), expected)
        return
    if function == "drills":  # the restore job the event names, stubbed; its copy in moto
        from tests.support.drills_events import check_drills_event

        check_drills_event(path, world, request.getfixturevalue("clock"), expected)
        return
    if function == "failover":  # the run the command finds (`given`); the global database never touched
        from tests.support.failover_events import check_failover_event

        check_failover_event(path, world, request.getfixturevalue("clock"), expected)
        return
    if function == "resharder":  # the replication group before the event (`given`) and the change sent
        from tests.support.resharder_events import check_resharder_event

        check_resharder_event(path, world, request.getfixturevalue("clock"), expected)
        return
    event = json.loads(path.read_text(encoding="utf-8"))

    before = target_state(world)
    assert desired(before) == INITIAL
    if function == "invalidator":
        invoke = request.getfixturevalue("invalidator_invoke")
    if function == "shards":
        from tests.support.shards import shards_invoke

        invoke = shards_invoke(world, request.getfixturevalue("clock"))
    if function == "advisor":  # no database in this world: each event shows the decision made before connecting
        from tests.support.advisor import advisor_invoke

        invoke = advisor_invoke(world, request.getfixturevalue("clock"))
    arrive_when_stamped(request.getfixturevalue("clock"), event)
    response = invoke(event)
    after = target_state(world)
    records = world.audit_records()

    assert response["status"] == expected["status"], response
    if expected["status"] == "rejected":
        errors = response["errors"]
        assert errors and all(isinstance(e, str) for e in errors)
        for field in expected["error_fields"]:
            assert any(field in e for e in errors), f"no error names {field!r}: {errors}"
        assert after == before, "a rejected event must not change anything"
        assert [r["outcome"] for r in records] == ["rejected:validation"]
        assert records[0]["id"] == response["audit_id"]
        assert response["parked_in_dlq"] is expected["parked_in_dlq"]
        parked = world.dlq_messages()
        if expected["parked_in_dlq"]:
            assert len(parked) == 1
            body = json.loads(parked[0])
            assert body["reason"] == "rejected:validation"
            assert body["errors"] == errors
            assert body["event"] == event, "the parked message must carry the original event for replay"
        else:
            assert parked == [], "a console payload is answered, not parked"
        return

    decisions = response["decisions"]
    audited = [d["outcome"] for d in decisions if d.get("audit_id")]
    assert audited == expected["outcomes"], decisions
    assert sorted(r["outcome"] for r in records) == sorted(expected["outcomes"])
    assert {r["id"] for r in records} == {d["audit_id"] for d in decisions if d.get("audit_id")}
    assert world.dlq_messages() == []

    want = INITIAL | expected.get("capacity", {})
    assert desired(after) == want
    changed = set(expected.get("capacity", {}))
    for name in set(before) - changed:
        assert after[name] == before[name], f"{name} must be left alone"
    if "executed" not in expected["outcomes"]:
        assert after == before

    for d in decisions if function == "scaler" else []:  # capacity: what the scaler's decisions change
        if d["outcome"] == "executed":
            assert d["after"]["desired"] == want[d["policy"]]
        if d["outcome"] == "dry-run":
            assert d["intended"]["desired"] != d["before"]["desired"], "dry-run shows the intended change"
            record = next(r for r in records if r["id"] == d["audit_id"])
            assert record["dry_run"] is True
            assert record["action"]["intended"] == d["intended"]
