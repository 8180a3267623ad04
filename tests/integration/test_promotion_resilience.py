"""Every step is idempotent and resumable: the function dies before any write of any step and the workflow
retries it; the alarm rollback dies and Lambda redelivers it; events arrive twice or out of order; a
rollback races a shift. Each ends consistent: weights, live colour, record, workflow and freeze agree."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.runtime import install_runtime
from tests.support import events as ev
from tests.support.promotion import PromotionBench, bench, crash_at, with_pair

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "ModifyListener", "ModifyRule", "ChangeResourceRecordSets",
          "PutEvents", "Publish", "SendMessage"}
STEPS = ["preflight", "shift", "check", "wait_for_approval", "finalize", "cleanup"]
LATENCY = "web-p99-latency-high"


@pytest.fixture
def make(dev_config, clock) -> Iterator[Any]:
    with mock_aws():
        # Short bakes and retention: the same steps, less simulated time.
        yield lambda **changes: bench(with_pair(dev_config, **{"bake_s": 30, "retention_s": 120, **changes}), clock)
    install_runtime(None)


def promote_to_the_end(b: PromotionBench) -> None:
    b.green_ready(release="v2")
    b.run()
    while b.record().promotion.status == "awaiting-approval":
        b.console("promote")
        b.run()


def assert_completed(b: PromotionBench) -> None:
    record = b.record()
    assert b.weights() == {"blue": 0, "green": 100}
    assert record.live == "green" and record.promotion.status == "completed"
    assert record.promotion.weights == {"blue": 0, "green": 100}
    assert b.execution().status == "SUCCEEDED"
    assert "web" not in b.world.activate("promoter", b.clock).store.scale_in_freezes("api")


def expire_in_progress_idempotency(b: PromotionBench) -> None:
    """What passing the function's timeout does: a crashed invocation's in-progress record no longer blocks."""
    ddb = b.world.clients.dynamodb
    table = b.world.settings.idempotency_table
    for item in ddb.scan(TableName=table)["Items"]:
        if item.get("status", {}).get("S") == "INPROGRESS":
            ddb.update_item(TableName=table, Key={"id": item["id"]}, UpdateExpression="SET in_progress_expiration = :t",
                            ExpressionAttributeValues={":t": {"N": "1"}})


@pytest.mark.parametrize("step", STEPS)
@pytest.mark.parametrize("write", range(10))
def test_function_dies_before_any_write_of_any_step_and_the_retry_converges(make, step: str, write: int) -> None:
    b = make()
    seen = {"writes": 0}

    def when(operation: str) -> bool:
        if b.current_step != step or operation not in WRITES:
            return False
        seen["writes"] += 1
        return seen["writes"] == write + 1

    crash_at(b.world, when)
    promote_to_the_end(b)
    if seen["writes"] <= write:
        pytest.skip(f"{step} makes only {seen['writes']} writes")
    assert any(h.kind == "retry" and "Runtime.ExitError" in h.detail for h in b.driver.history)
    assert_completed(b)


@pytest.mark.parametrize("write", range(8))
def test_alarm_rollback_dies_before_any_write_and_the_redelivery_converges(make, write: int) -> None:
    b = make()
    b.green_ready()
    b.run(1)
    execution = b.execution()
    seen = {"writes": 0, "armed": True}

    def when(operation: str) -> bool:
        if not seen["armed"] or operation not in WRITES:
            return False
        seen["writes"] += 1
        return seen["writes"] == write + 1

    crash_at(b.world, when)
    event = ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), value=2.5, threshold=1.0)
    b.set_alarm(LATENCY, "ALARM")
    from tests.support.promotion import LambdaCrash

    try:
        b.invoke(event)
        crashed = False
    except LambdaCrash:
        crashed = True
    seen["armed"] = False
    if not crashed:
        pytest.skip(f"the rollback makes only {seen['writes']} writes")
    expire_in_progress_idempotency(b)
    b.invoke(json.loads(json.dumps(event)))  # Lambda's asynchronous retry: the very same event
    assert b.weights() == {"blue": 100, "green": 0}
    record = b.record()
    assert record.live == "blue" and record.promotion.status == "rolled-back"
    assert execution.status == "ABORTED"
    assert "web" not in b.world.activate("promoter", b.clock).store.scale_in_freezes("api")
    b.run()
    assert b.weights() == {"blue": 100, "green": 0}


def test_a_rollback_racing_a_shift_wins(make) -> None:
    """The alarm arrives while a shift holds the lock, between the shift's reading and its write: the
    rollback takes the lock over and writes 100 % blue; the shift's late write lands after it, then the
    shift sees the promotion rolled back and puts the rollback's weights back itself."""
    b = make()
    b.green_ready()
    b.run()  # at the gate
    state = {"raced": False}

    def hook(model: Any, **_: Any) -> None:
        if model.name == "ModifyListener" and b.current_step == "shift" and not state["raced"]:
            state["raced"] = True
            b.alarm(LATENCY, "ALARM")
            assert b.weights() == {"blue": 100, "green": 0}

    b.world.clients.elbv2.meta.events.register("before-call", hook)
    b.console("promote")
    b.run()
    assert state["raced"]
    assert b.weights() == {"blue": 100, "green": 0}
    assert b.record().live == "blue" and b.record().promotion.status == "rolled-back"
    (shift,) = [r for r in b.audit() if r["operation"] == "shift" and r["action"]["intended"]["step"] == 1]
    assert shift["outcome"] == "skipped:fenced" and "put back" in shift["detail"], shift["detail"]
    assert shift["after"]["weights"] == {"blue": 100, "green": 0}


# --------------------------------------------------------------------------- duplicates and order


def test_the_same_green_ready_event_twice_starts_one_promotion(make) -> None:
    b = make()
    event_id = "0f3c6c1e-0000-4000-8000-000000000001"
    first = b.green_ready(event_id=event_id)
    second = b.green_ready(event_id=event_id)
    assert first["decisions"][0]["outcome"] == "executed" and second.get("duplicate") is True
    assert len(b.driver.executions) == 1


def _forget(b: Any, prefix: str) -> None:
    """What expiry does long after: drop the idempotency records and the state items under prefix."""
    ddb = b.world.clients.dynamodb
    for table, key, wanted in ((b.world.settings.idempotency_table, "id", ""), (b.world.settings.state_table, "pk",
                                                                               prefix)):
        for item in ddb.scan(TableName=table)["Items"]:
            if item[key]["S"].startswith(wanted):
                ddb.delete_item(TableName=table, Key={key: item[key]})


def test_a_green_ready_redelivered_after_its_promotion_starts_nothing(make) -> None:
    b = make(approval=None)
    event_id = "0f3c6c1e-0000-4000-8000-000000000002"
    b.green_ready(event_id=event_id)
    b.run()
    _forget(b, "no-state")  # the idempotency record expired (1 h); the write-ahead intent still says "done"
    assert b.green_ready(event_id=event_id)["decisions"][0]["outcome"] == "skipped:already-done"
    _forget(b, "intent#")  # long after, the intent has expired too: the promotion record refuses a second start
    assert b.green_ready(event_id=event_id)["decisions"][0]["outcome"] == "skipped:already-started"
    assert len(b.driver.executions) == 1


def test_a_step_delivered_twice_acts_once_and_answers_the_same(make) -> None:
    b = make()
    payloads: list[dict[str, Any]] = []
    b.driver.on_task = lambda execution, state, payload: payloads.append(json.loads(json.dumps(payload)))
    b.green_ready()
    b.run(1)
    shift = next(p for p in payloads if p["reflex_step"]["step"] == "shift")
    again = b.invoke(shift)
    assert again["next_step"] == 1 and again["verdict"] == "continue"
    assert [r["outcome"] for r in b.audit() if r["operation"] == "shift"] == ["executed"]
    assert [r["outcome"] for r in b.audit() if r["operation"] is None][-1] == "skipped:duplicate-delivery"


def test_a_stale_step_never_moves_traffic_back(make) -> None:
    b = make()
    payloads: list[dict[str, Any]] = []
    b.driver.on_task = lambda execution, state, payload: payloads.append(json.loads(json.dumps(payload)))
    b.green_ready()
    b.run()
    b.console("promote")
    b.run(1)
    assert b.weights() == {"blue": 0, "green": 100}
    first_shift = dict(next(p for p in payloads if p["reflex_step"]["step"] == "shift"))
    first_shift["reflex_step"] = dict(first_shift["reflex_step"], retry=7)  # a late retry of step 1
    answer = b.invoke(first_shift)
    assert answer["verdict"] == "stopped"
    assert b.weights() == {"blue": 0, "green": 100}


def test_an_older_alarm_event_arriving_late_still_rolls_back_the_canary_it_judged(make) -> None:
    # The guard alarm fired during this canary; its OK arrived first. The canary was bad even if it
    # recovered since: the late ALARM rolls back (acts_on_stale_alarm, docs/architecture.md, alarm-time rules).
    b = make()
    b.green_ready()
    b.run(1)
    late = ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), value=2.5, threshold=1.0)
    b.clock.advance(60)
    b.invoke(ev.eventbridge_alarm(LATENCY, "OK", b.clock.now(), previous="ALARM", value=0.5, threshold=1.0))
    assert b.invoke(late)["decisions"][0]["outcome"] == "executed"
    assert b.weights() == {"blue": 100, "green": 0}


def test_a_late_alarm_from_before_the_promotion_started_does_not_roll_it_back(make) -> None:
    b = make()
    late = ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now() - timedelta(seconds=30), value=2.5, threshold=1.0)
    b.green_ready()
    b.run(1)
    decision = b.invoke(late)["decisions"][0]
    assert decision["outcome"] == "skipped:alarm-predates-promotion", decision
    assert b.weights() == {"blue": 90, "green": 10}


def test_an_alarm_already_in_alarm_is_not_a_transition(make) -> None:
    b = make()
    b.green_ready()
    b.run(1)
    assert b.alarm(LATENCY, "ALARM", previous="ALARM")["decisions"][0]["outcome"] == "skipped:duplicate-alarm"
    assert b.weights() == {"blue": 90, "green": 10}


def test_the_same_alarm_through_two_routes_rolls_back_once(make) -> None:
    b = make()
    b.green_ready()
    b.run(1)
    at = b.clock.now()
    b.set_alarm(LATENCY, "ALARM")
    first = b.invoke(ev.eventbridge_alarm(LATENCY, "ALARM", at, value=2.5, threshold=1.0))
    second = b.invoke(ev.alarm_action(LATENCY, "ALARM", at, value=2.5, threshold=1.0))
    assert first["decisions"][0]["outcome"] == "executed" and second.get("duplicate") is True
    assert [r["outcome"] for r in b.audit() if r["operation"] == "rollback"] == ["executed"]


def test_a_console_command_with_a_request_id_acts_once(make) -> None:
    b = make()
    b.green_ready()
    b.run(1)
    first = b.console("pause", request_id="change-42")
    second = b.console("pause", request_id="change-42")
    assert first["decisions"][0]["outcome"] == "executed" and second.get("duplicate") is True


def test_resume_arriving_before_pause_does_nothing_then_pause_holds(make) -> None:
    b = make(approval=None)
    b.green_ready()
    b.run(1)
    assert b.console("resume")["decisions"][0]["outcome"] == "skipped:not-paused"
    assert b.console("pause")["decisions"][0]["outcome"] == "executed"
    b.run(301)  # the canary's bake, then the check holds
    assert b.record().promotion.status == "held"
