"""Issue 13: the core's failure semantics, one named test per defect, through the real scaler handler on moto.

Each test reproduces the defect's situation (a fault between the pipeline's steps, a lost response, a timeout)
and asserts the invariants: no action without its one audit record, no retry that acts twice, no retry
swallowed, locks released or expiring.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from reflex_core.pipeline import ActionFailed, RetryLater
from simulator.faults import FaultInjector, SimulatedCrash
from tests.conftest import T0, FakeLambdaContext
from tests.support import events as ev
from tests.support.fault_matrix import ShortContext

API_KEY = "ecs-service/web/api"


def api_desired(world) -> int:
    return world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"]


def executed(world, target: str = API_KEY) -> int:
    return sum(1 for r in world.audit_records() if r["outcome"] == "executed" and r["target"] == target)


def outcomes(world) -> Counter[str]:
    return Counter(r["outcome"] for r in world.audit_records())


def inject(world, clock) -> FaultInjector:
    """Rewire the world's clients through a fault injector and reinstall the scaler's runtime."""
    from reflex_core.aws_clients import AwsClients
    from simulator.aws_world import moto_clients

    injector = FaultInjector(clock)
    world.clients = AwsClients(injector.wrap_factory(moto_clients(max_attempts=2)._factory))
    world.runtime(clock)
    return injector


def deliver(event: Any, context: Any | None = None) -> tuple[dict[str, Any] | None, str | None]:
    from scaler.handler import lambda_handler

    try:
        return lambda_handler(event, context or ShortContext()), None
    except SimulatedCrash:
        return None, "crash"
    except (ActionFailed, RetryLater) as err:
        return None, type(err).__name__


def expire_in_progress_records(world) -> None:
    """What the real clock does to Powertools' in-progress records of a timed-out invocation."""
    ddb = world.clients.dynamodb
    for item in ddb.scan(TableName=world.settings.idempotency_table)["Items"]:
        if "in_progress_expiration" in item:
            ddb.update_item(TableName=world.settings.idempotency_table, Key={"id": item["id"]},
                            UpdateExpression="SET in_progress_expiration = :z",
                            ExpressionAttributeValues={":z": {"N": "0"}})


ALARM = ("api-p99-latency-high", "ALARM")


def latency_alarm(at=T0, **kw: Any) -> dict[str, Any]:
    return ev.eventbridge_alarm(*ALARM, at, value=1.6, threshold=1.0, **kw)


@pytest.fixture(autouse=True)
def _no_sleep(monkeypatch):
    import types

    import botocore.endpoint

    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=lambda _s: None))


# --------------------------------------------------------------------------- 1: bookkeeping after the change


def test_1_failed_bookkeeping_after_the_change_is_audited_once_and_the_retry_does_not_act_again(world, clock,
                                                                                                  monkeypatch):
    rt = world.runtime(clock)
    calls = {"n": 0}
    original = type(rt.store).record_action_time

    def flaky(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "UpdateItem")
        return original(self, *a, **kw)

    monkeypatch.setattr(type(rt.store), "record_action_time", flaky)
    _first, error = deliver(latency_alarm())
    assert error == "RetryLater" and api_desired(world) == 6  # changed, audited, not yet complete
    assert executed(world) == 1
    clock.advance(70)
    _again, error = deliver(latency_alarm())  # Lambda's retry
    assert error is None and api_desired(world) == 6  # no second step past the cooldown
    assert executed(world) == 1  # the same record, completed
    assert "out" in rt.store.last_actions(API_KEY)


def test_1_an_interrupted_prewarm_keeps_the_original_minimum(world, clock):
    from reflex_core.scaling_config import Prewarm

    morning = Prewarm(name="morning", cron="0 8 ? * MON-FRI *", timezone="UTC", min=5, for_minutes=60)
    world.config = world.config.model_copy(update={"scaling": [
        p.model_copy(update={"prewarm": [morning]}) if p.name == "workers" else p for p in world.config.scaling]})
    injector = inject(world, clock)
    injector.fail("UpdateAutoScalingGroup", "crash-after", calls=(1,))
    event = ev.schedule("workers-morning", "prewarm", clock.now(), policy="workers", params={"prewarm": "morning"})
    assert deliver(event)[1] == "crash"
    clock.advance(70)
    assert deliver(event)[1] is None
    rt = world.runtime(clock)
    window = rt.store.prewarm("asg/web-workers")
    assert window is not None and window.original_min == 0  # not the raised 5
    assert executed(world, "asg/web-workers") == 1


# --------------------------------------------------------------------------- 2: one policy's failure is isolated


def test_2_one_policy_failing_to_plan_does_not_stop_the_others(world, clock):
    # Both api and reporting-db react to api-cpu-high; api's service has been deleted.
    scaling = [p.model_copy(update={"scale_out": p.scale_out.model_copy(update={"alarms": p.scale_out.alarms.model_copy(
        update={"names": [*p.scale_out.alarms.names, "api-cpu-high"]})})}) if p.name == "reporting-db" else p
        for p in world.config.scaling]
    world.config = world.config.model_copy(update={"scaling": scaling})
    world.runtime(clock)
    world.clients.ecs.delete_service(cluster="web", service="api", force=True)

    _response, error = deliver(ev.eventbridge_alarm("api-cpu-high", "ALARM", T0, value=95.0, threshold=80.0))
    assert error == "ActionFailed"  # Lambda retries the failed part
    audited = outcomes(world)
    assert audited["executed"] == 1 and any(o.startswith("failed:") for o in audited)
    aas = world.clients.application_autoscaling.describe_scalable_targets(
        ServiceNamespace="rds", ResourceIds=["cluster:reporting"])["ScalableTargets"][0]
    assert aas["MinCapacity"] == 2  # the Aurora policy scaled although api's planning raised


# --------------------------------------------------------------------------- 3: decided actions are not cancelled


def test_3_alarm_memory_is_per_reaction(world, clock):
    from reflex_core.state_store import AlarmMemory, StaleAlarmEvent

    store = world.runtime(clock).store
    newer = AlarmMemory(name="web-p99", state="OK", changed_at=T0.timestamp() + 60)
    older = AlarmMemory(name="web-p99", state="ALARM", changed_at=T0.timestamp())
    store.remember_alarm(newer, [], clock.now(), reaction="scaler")
    assert store.remember_alarm(older, [], clock.now(), reaction="promoter") is None  # not stale for the promoter
    with pytest.raises(StaleAlarmEvent):
        store.remember_alarm(older, [], clock.now(), reaction="scaler")


def test_3_an_action_decided_before_a_newer_state_arrived_is_completed_not_cancelled(world, clock):
    injector = inject(world, clock)
    injector.fail("UpdateService", "throttle", calls=(1,), persist=True)
    assert deliver(latency_alarm())[1] == "ActionFailed"
    assert api_desired(world) == 4
    # The alarm returned to OK meanwhile; the retry of the ALARM transition is now "stale"...
    deliver(ev.eventbridge_alarm("api-p99-latency-high", "OK", T0 + timedelta(seconds=20), previous="ALARM"))
    clock.advance(70)
    response, error = deliver(latency_alarm())
    # ... a plain failure (not applied) was forgotten: the stale retry plans nothing new.
    assert error is None and api_desired(world) == 4
    assert "skipped:stale-event" in [d["outcome"] for d in response["decisions"]]


def test_3_an_applied_but_unrecorded_action_is_completed_by_a_stale_retry(world, clock):
    injector = inject(world, clock)
    injector.fail("UpdateService", "crash-after", calls=(1,))
    assert deliver(latency_alarm())[1] == "crash"
    assert api_desired(world) == 6 and executed(world) == 0
    deliver(ev.eventbridge_alarm("api-p99-latency-high", "OK", T0 + timedelta(seconds=20), previous="ALARM"))
    clock.advance(70)
    _response, error = deliver(latency_alarm())
    assert error is None and api_desired(world) == 6
    assert executed(world) == 1  # the stale retry completed the record of what happened


# --------------------------------------------------------------------------- 4, 5: locks


def test_4_the_retry_after_a_timeout_is_not_swallowed_by_the_dead_invocations_lock(world, clock, monkeypatch):
    rt = world.runtime(clock)
    original = type(rt.store).acquire_lock

    def acquire_then_die(self, *a, **kw):
        original(self, *a, **kw)
        raise SimulatedCrash("timed out holding the lock")

    monkeypatch.setattr(type(rt.store), "acquire_lock", acquire_then_die)
    assert deliver(latency_alarm(), FakeLambdaContext())[1] == "crash"  # a 60 s invocation
    monkeypatch.setattr(type(rt.store), "acquire_lock", original)
    clock.advance(75)  # Lambda's first retry of a timed-out invocation
    expire_in_progress_records(world)  # Powertools measures the 60 s on the real clock
    _response, error = deliver(latency_alarm())
    assert error is None and api_desired(world) == 6
    assert executed(world) == 1


def test_5_a_lost_response_on_the_lock_write_does_not_lock_out_its_own_target(world, clock):
    injector = inject(world, clock)
    store = world.runtime(clock).store
    injector.fail("PutItem", "lost-response", calls=(1,))
    assert store.acquire_lock(API_KEY, "me", clock.now(), 60)  # the retry failed its condition on our own item
    store.release_lock(API_KEY, "me")
    assert store.lock_owner(API_KEY) is None
    assert store.acquire_lock(API_KEY, "someone-else", clock.now(), 60)


# --------------------------------------------------------------------------- 6: refusals that may pass


def test_6_a_refusal_from_an_unreadable_kill_switch_is_retried_not_stored(world, clock):
    injector = inject(world, clock)
    injector.fail("GetParameters", "throttle", calls=(1,), persist=True)
    assert deliver(latency_alarm())[1] == "RetryLater"
    assert api_desired(world) == 4
    clock.advance(31)
    response, error = deliver(ev.sns_alarm(*ALARM, T0, value=1.6, threshold=1.0))  # the SNS copy
    assert error is None and api_desired(world) == 6
    assert [d["outcome"] for d in response["decisions"]] == ["executed"]


def test_6_a_console_command_refused_by_a_held_lock_runs_when_sent_again_with_the_same_request_id(world, clock):
    rt = world.runtime(clock)
    assert rt.store.acquire_lock(API_KEY, "someone", clock.now(), 30)
    command = ev.console("set_capacity", "api", desired=8, request_id="req-1")
    response, _ = deliver(command)
    assert response["status"] == "retry" and [d["outcome"] for d in response["decisions"]] == ["skipped:locked"]
    rt.store.release_lock(API_KEY, "someone")
    response, _ = deliver(command)
    assert "duplicate" not in response and [d["outcome"] for d in response["decisions"]] == ["executed"]
    assert api_desired(world) == 8


# --------------------------------------------------------------------------- 8: applied but reported failed


def test_8_a_change_applied_but_answered_with_an_error_is_recorded_as_executed_and_not_repeated(world, clock,
                                                                                                 monkeypatch):
    from scaler.scaling_reaction import ScalingReaction

    original = ScalingReaction.execute

    def applied_then_503(self, action, rt):
        original(self, action, rt)
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "503"}}, "UpdateService")

    monkeypatch.setattr(ScalingReaction, "execute", applied_then_503)
    response, error = deliver(latency_alarm())
    assert error is None and api_desired(world) == 6
    (decision,) = response["decisions"]
    assert decision["outcome"] == "executed" and "change is in place" in decision["detail"]
    monkeypatch.setattr(ScalingReaction, "execute", original)
    clock.advance(70)
    deliver(ev.sns_alarm(*ALARM, T0, value=1.6, threshold=1.0))
    assert api_desired(world) == 6 and executed(world) == 1
    assert "out" in world.runtime(clock).store.last_actions(API_KEY)  # the cooldown was recorded


# --------------------------------------------------------------------------- 9, 10: hostile payloads


def test_9_an_sns_reason_with_infinity_is_no_datapoint_and_the_audit_stays_json(world, clock):
    event = ev.sns_alarm(*ALARM, T0, value=1.6, threshold=1.0)
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    message["NewStateReason"] = "Threshold Crossed: 1 datapoint [Infinity (26/11/26 09:00:00)] > 1.0"
    event["Records"][0]["Sns"]["Message"] = json.dumps(message)
    _response, error = deliver(event)
    assert error is None and api_desired(world) == 5  # the smallest step, as on EventBridge's path
    for item in world.clients.dynamodb.scan(TableName=world.settings.audit_table)["Items"]:
        json.loads(item["record"]["S"], parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_9_non_finite_values_in_an_audit_record_are_written_as_strings():
    from reflex_core.audit import dumps, json_safe

    assert json_safe({"a": [math.inf, -math.inf, math.nan, 1.5]}) == {"a": ["inf", "-inf", "nan", 1.5]}
    assert "NaN" not in dumps({"x": math.nan})


def test_10_a_huge_malformed_event_is_parked_within_the_queue_limit(world, clock):
    event = {"detail-type": "ScaleRequested", "source": "app.ops", "detail": {"bad": list(range(60_000))},
             "id": 5, "account": [], "time": "never", "region": 1, "resources": "x", "version": 0}
    event["Records"] = [{"x": i} for i in range(60_000)]
    response, error = deliver(event)
    assert error is None and response["status"] == "rejected" and response["parked_in_dlq"]
    assert len(response["errors"]) <= 51
    (body,) = world.dlq_messages()
    assert len(body.encode()) <= 256 * 1024 and json.loads(body)["reason"] == "rejected:validation"


def test_10_a_rejected_event_that_cannot_be_parked_is_raised_for_lambdas_own_dead_letter_queue(world, clock):
    injector = inject(world, clock)
    injector.fail("SendMessage", "5xx", persist=True)
    _, error = deliver({"detail-type": "ScaleRequested", "source": "app.ops", "detail": "not an object"})
    assert error == "RetryLater"


# --------------------------------------------------------------------------- decided in the issue


def test_a_duplicate_delivered_after_the_idempotency_window_acts_once(world, clock):
    deliver(latency_alarm())
    assert api_desired(world) == 6
    # The idempotency records have expired (TTL); the intent record outlives them.
    ddb = world.clients.dynamodb
    for item in ddb.scan(TableName=world.settings.idempotency_table)["Items"]:
        ddb.delete_item(TableName=world.settings.idempotency_table, Key={"id": item["id"]})
    clock.advance(7200)
    response, error = deliver(latency_alarm())
    assert error is None and api_desired(world) == 6
    assert [d["outcome"] for d in response["decisions"]] == ["skipped:already-done"]


def test_concurrent_rate_window_writes_do_not_lose_an_action(world, clock):
    from reflex_core.guardrails import record_in_window
    from reflex_core.state_store import RateWindowConflict

    store = world.runtime(clock).store
    read_by_both = store.rate_window(API_KEY)
    store.save_rate_window(API_KEY, record_in_window(read_by_both, clock.now(), "out"), clock.now())
    with pytest.raises(RateWindowConflict):
        store.save_rate_window(API_KEY, record_in_window(read_by_both, clock.now(), "in"), clock.now())
    store.update_rate_window(API_KEY, lambda w: record_in_window(w, clock.now(), "in"), clock.now())
    assert [d for _, d in store.rate_window(API_KEY).actions] == ["out", "in"]


def test_the_lock_lease_lasts_until_the_invocation_ends_not_the_configured_lease(world, clock, monkeypatch):
    rt = world.runtime(clock)
    leases: list[int] = []
    original = type(rt.store).acquire_lock
    monkeypatch.setattr(type(rt.store), "acquire_lock",
                        lambda self, key, owner, now, lease: leases.append(lease) or original(self, key, owner, now,
                                                                                               lease))
    deliver(latency_alarm(), FakeLambdaContext())  # 60 s left
    assert leases == [70]  # 60 s + margin, not the configured 120 s that outlives the function


def test_an_alarm_transition_from_the_future_is_refused_audited_and_not_remembered(world, clock):
    response, _error = deliver(latency_alarm(at=T0 + timedelta(minutes=10)))
    assert [d["outcome"] for d in response["decisions"]] == ["skipped:future-event"]
    assert api_desired(world) == 4
    # A real transition afterwards is not "stale".
    response, _error = deliver(latency_alarm(at=T0))
    assert [d["outcome"] for d in response["decisions"]] == ["executed"]


def test_the_lambda_consoles_sns_template_with_example_urls_is_accepted(world, clock):
    event = ev.sns_alarm(*ALARM, T0, value=1.6, threshold=1.0)
    event["Records"][0]["Sns"].update({"SigningCertUrl": "EXAMPLE", "UnsubscribeUrl": "EXAMPLE"})
    response, error = deliver(event)
    assert error is None and response["decisions"][0]["outcome"] == "executed"
