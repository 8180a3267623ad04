"""Reliability of the real scaler handler: redelivery, concurrency, AWS faults and retries.

How faults and concurrency are simulated (moto 5.2.5):

* moto answers boto3 through a botocore `before-send` handler. `MotoTransport` replaces that handler
  on one client with its own, which either returns an injected HTTP response (throttling, 5xx) or
  hands the request to moto. Retries, backoff and error parsing are botocore's own.
* moto's DynamoDB backend holds no lock: a conditional `PutItem` checks the condition and writes in
  two Python steps, so two threads can both pass the check. Real DynamoDB applies each conditional
  write atomically. For the concurrency tests the transport serializes the *moto backend call* of
  DynamoDB requests (one lock around moto, like DynamoDB's per-item serialization); the handlers
  themselves run concurrently, each with its own Lambda request id.
"""

from __future__ import annotations

import io
import json
import threading
import types
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import T0, FakeLambdaContext
from tests.support import events as ev
from tests.support.queues import subscribe_notices

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "scaler"
REGION = "us-east-1"


# --------------------------------------------------------------------------- helpers


class _RawBody(io.BytesIO):
    def stream(self, **_: Any):
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


def aws_error(request: Any, status: int, code: str) -> Any:
    """An AWS JSON-protocol error response, as the service would send it."""
    from botocore.awsrequest import AWSResponse

    body = json.dumps({"__type": code, "message": f"injected {code}"}).encode()
    return AWSResponse(request.url, status, {"x-amzn-requestid": "injected-fault",
                                             "content-type": "application/x-amz-json-1.1"}, _RawBody(body))


class MotoTransport:
    """Sits between one boto3 client and moto: counts attempts, injects faults, optionally serializes moto."""

    def __init__(self, client: Any, lock: threading.Lock | None = None) -> None:
        from moto.core.models import botocore_stubber

        self._moto = botocore_stubber
        self._lock = lock
        self._faults: dict[str, list[tuple[int, str]]] = {}
        self._always: dict[str, tuple[int, str]] = {}
        self._raise: dict[str, Exception] = {}
        # Optional: (request, operation) -> a response to return instead of asking moto, or None.
        self.intercept: Any = None
        self.attempts: Counter[str] = Counter()
        client.meta.events.unregister("before-send", botocore_stubber)
        client.meta.events.register("before-send", self._send)

    def fail(self, operation: str, *faults: tuple[int, str], forever: tuple[int, str] | None = None) -> None:
        """The next calls of `operation` get these (status, error code) responses, then succeed (or fail forever)."""
        self._faults[operation] = list(faults)
        if forever:
            self._always[operation] = forever

    def raise_on(self, operation: str, error: Exception) -> None:
        self._raise[operation] = error

    def heal(self) -> None:
        self._faults.clear()
        self._always.clear()
        self._raise.clear()
        self.intercept = None

    def _send(self, request: Any, event_name: str, **kwargs: Any) -> Any:
        operation = event_name.rsplit(".", 1)[-1]
        self.attempts[operation] += 1
        if operation in self._raise:
            raise self._raise[operation]
        queued = self._faults.get(operation)
        fault = queued.pop(0) if queued else self._always.get(operation)
        if fault is not None:
            return aws_error(request, *fault)
        if self.intercept is not None:
            response = self.intercept(request, operation)
            if response is not None:
                return response
        if self._lock is None:
            return self._moto(event_name=event_name, request=request, **kwargs)
        with self._lock:
            return self._moto(event_name=event_name, request=request, **kwargs)


class Rig:
    """The `world` re-wired to clients made by a test client factory (small retry budget, transports)."""

    def __init__(self, world: Any, clock: Any, total_attempts: int = 3, atomic_dynamodb: bool = False) -> None:
        import boto3
        from botocore.config import Config

        from reflex_core.aws_clients import AwsClients

        self.transports: dict[str, MotoTransport] = {}
        lock = threading.Lock() if atomic_dynamodb else None
        session = boto3.session.Session(region_name=REGION, aws_access_key_id="testing",
                                        aws_secret_access_key="testing")
        config = Config(region_name=REGION, retries={"mode": "standard", "total_max_attempts": total_attempts})

        def factory(service: str) -> Any:
            client = session.client(service, config=config)  # type: ignore[call-overload]
            self.transports[service] = MotoTransport(client, lock if service == "dynamodb" else None)
            return client

        world.clients = AwsClients(factory)
        self.world = world
        self.runtime = world.runtime(clock)

    def transport(self, service: str) -> MotoTransport:
        getattr(self.world.clients, service.replace("-", "_"))  # create the client (and its transport)
        return self.transports[service]


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """botocore's retry backoff, recorded instead of slept (keeps the tests fast)."""
    import botocore.endpoint

    slept: list[float] = []
    monkeypatch.setattr(botocore.endpoint, "time", types.SimpleNamespace(sleep=slept.append))
    return slept


def api_desired(world) -> int:
    return world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"]


def target_state(world) -> dict[str, int]:
    c = world.clients
    asg = c.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-workers"])["AutoScalingGroups"][0]
    aas = c.application_autoscaling.describe_scalable_targets(
        ServiceNamespace="rds", ResourceIds=["cluster:reporting"],
        ScalableDimension="rds:cluster:ReadReplicaCount")["ScalableTargets"][0]
    return {"api": api_desired(world), "workers": asg["DesiredCapacity"], "workers.min": asg["MinSize"],
            "reporting-db": aas["MinCapacity"]}


def outcomes(world) -> list[str]:
    return [r["outcome"] for r in world.audit_records()]


def handler():
    from scaler.handler import lambda_handler

    return lambda_handler


def run_concurrently(events_and_contexts: list[tuple[Any, FakeLambdaContext]]) -> list[Any]:
    """Start every invocation at the same instant (barrier), each on its own thread; returns results or exceptions."""
    fn = handler()
    barrier = threading.Barrier(len(events_and_contexts))

    def one(item: tuple[Any, FakeLambdaContext]) -> Any:
        event, context = item
        barrier.wait()
        try:
            return fn(event, context)
        except Exception as err:  # noqa: BLE001 - returned to the test, which asserts there are none
            return err

    with ThreadPoolExecutor(max_workers=len(events_and_contexts)) as pool:
        return list(pool.map(one, events_and_contexts))


def acting_events() -> list[Any]:
    """Every valid event in events/scaler whose documented response executes an action."""
    params = []
    for path in sorted(EVENTS.glob("*.json")):
        if path.name.endswith(".expected.json"):
            continue
        expected = json.loads(path.with_name(path.stem + ".expected.json").read_text(encoding="utf-8"))
        if expected["status"] == "ok" and "executed" in expected["outcomes"]:
            params.append(pytest.param(path, id=path.stem))
    return params


def is_console_without_request_id(event: dict[str, Any]) -> bool:
    return "command" in event and not event.get("request_id")


# --------------------------------------------------------------------------- redelivery


@pytest.mark.parametrize("path", acting_events())
def test_event_delivered_three_times_sequentially_acts_once(path, world, invoke):
    event = json.loads(path.read_text(encoding="utf-8"))
    # At-least-once delivery: EventBridge, SNS and the alarm action redeliver with a new Lambda request id;
    # an async Lambda retry of a console command keeps its request id.
    same = FakeLambdaContext()
    contexts = [same] * 3 if is_console_without_request_id(event) else [FakeLambdaContext() for _ in range(3)]
    before = target_state(world)

    first = invoke(event, contexts[0])
    after_first = target_state(world)
    again = [invoke(event, ctx) for ctx in contexts[1:]]

    assert [d["outcome"] for d in first["decisions"]] == ["executed"]
    assert after_first != before
    assert target_state(world) == after_first, "a redelivered event must not act again"
    assert all(r["decisions"] == first["decisions"] for r in again), "a duplicate answers the first result"
    if contexts[1] is contexts[0]:
        # The same invocation retried gets its own stored result back.
        assert Counter(outcomes(world)) == {"executed": 1}
    else:
        assert all(r.get("duplicate") is True for r in again)
        assert Counter(outcomes(world)) == {"executed": 1, "skipped:duplicate-delivery": 2}


@pytest.mark.parametrize("path", acting_events())
def test_same_event_delivered_three_times_concurrently_acts_once(path, world, clock):
    event = json.loads(path.read_text(encoding="utf-8"))
    if is_console_without_request_id(event):
        event = event | {"request_id": "concurrent-retry-1"}
    Rig(world, clock, atomic_dynamodb=True)
    before = target_state(world)

    results = run_concurrently([(event, FakeLambdaContext()) for _ in range(3)])

    assert not [r for r in results if isinstance(r, Exception)], results
    assert all(r["status"] == "ok" for r in results)
    counts = Counter(outcomes(world))
    assert counts["executed"] == 1, counts
    assert counts["skipped:duplicate-in-progress"] + counts["skipped:duplicate-delivery"] == 2, counts
    # Exactly one step: the executed decision's change is the only change.
    [executed] = [d for r in results for d in r["decisions"] if d["outcome"] == "executed" and not r.get("duplicate")]
    after = target_state(world)
    assert {k for k in before if after[k] != before[k]} == {executed["policy"]}
    assert after[executed["policy"]] == executed["after"]["desired"]


@pytest.mark.parametrize("policy, names, start, end", [
    pytest.param("workers", [f"workers-queue-depth-{i:02d}" for i in range(20)], 2, 3, id="20-alarms-asg"),
    pytest.param("api", ["api-p99-latency-high", "api-cpu-high"] * 10, 4, 5, id="2-alarms-10-transitions-ecs"),
])
def test_twenty_concurrent_alarms_on_one_target_scale_out_once(policy, names, start, end, world, clock):
    Rig(world, clock, atomic_dynamodb=True)
    before = target_state(world)
    assert before[policy] == start
    deliveries = [
        (ev.eventbridge_alarm(name, "ALARM", T0 + timedelta(seconds=i), value=130, threshold=100),
         FakeLambdaContext())
        for i, name in enumerate(names)
    ]

    results = run_concurrently(deliveries)

    # A delivery that found the target locked raises RetryLater (a transient refusal is not a completion):
    # Lambda delivers it again later; here, once the others are done, one after the other.
    from reflex_core.pipeline import RetryLater

    retried = [d for d, r in zip(deliveries, results, strict=True) if isinstance(r, RetryLater)]
    assert not [r for r in results if isinstance(r, Exception) and not isinstance(r, RetryLater)], results
    again = [handler()(event, FakeLambdaContext()) for event, _ in retried]
    assert all(not isinstance(r, Exception) for r in again)
    counts = Counter(outcomes(world))
    assert counts["executed"] == 1, counts
    allowed = {"executed", "skipped:locked", "skipped:cooldown", "skipped:duplicate-alarm", "skipped:stale-event"}
    assert set(counts) <= allowed, counts
    after = target_state(world)
    # one 25 % step (30 % past the threshold), and no other target touched
    assert after[policy] == end
    assert {k: v for k, v in after.items() if k != policy} == {k: v for k, v in before.items() if k != policy}


# --------------------------------------------------------------------------- AWS faults and retries


@pytest.mark.parametrize("faults", [
    pytest.param([(400, "ThrottlingException"), (400, "ThrottlingException")], id="throttling"),
    pytest.param([(500, "ServerException"), (503, "ServiceUnavailableException")], id="5xx"),
    pytest.param([(429, "TooManyRequestsException")], id="429"),
])
def test_transient_errors_are_retried_with_backoff_then_succeed(faults, world, clock, sleeps):
    rig = Rig(world, clock, total_attempts=3)
    ecs = rig.transport("ecs")
    ecs.fail("UpdateService", *faults)

    out = handler()(ev.eventbridge_alarm("api-cpu-high", "ALARM", T0, value=88, threshold=80), FakeLambdaContext())

    assert [d["outcome"] for d in out["decisions"]] == ["executed"]
    assert ecs.attempts["UpdateService"] == len(faults) + 1
    assert len(sleeps) == len(faults), "each retry waits"
    assert all(0 <= s <= 20 for s in sleeps)
    assert api_desired(world) == 5
    assert Counter(outcomes(world)) == {"executed": 1}


def test_async_trigger_whose_action_fails_is_audited_raised_and_acts_on_retry(world, clock, sleeps):
    from reflex_core.pipeline import ActionFailed

    rig = Rig(world, clock, total_attempts=3)
    ecs = rig.transport("ecs")
    ecs.fail("UpdateService", forever=(400, "ThrottlingException"))
    notices = subscribe_notices(world)
    event = ev.eventbridge_alarm("api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0)
    context = FakeLambdaContext()

    with pytest.raises(ActionFailed, match="failed:ThrottlingException"):
        handler()(event, context)

    assert ecs.attempts["UpdateService"] == 3, "every attempt of the retry budget was used"
    assert len(sleeps) == 2
    assert api_desired(world) == 4
    [record] = world.audit_records()
    assert record["outcome"] == "failed:ThrottlingException"
    assert record["action"]["intended"] == {"desired": 6}
    assert [n["outcome"] for n in notices()] == ["failed:ThrottlingException"], "a failure pages"
    lock = world.clients.dynamodb.get_item(TableName=world.settings.state_table,
                                           Key={"pk": {"S": "lock#ecs-service/web/api"}}).get("Item")
    assert lock is None, "the target's lock is released after a failure"

    # Lambda retries the async invocation (same request id) after the throttling has passed:
    # the idempotency record was released, so the retry acts.
    ecs.heal()
    clock.advance(60)
    retried = handler()(event, context)
    assert [d["outcome"] for d in retried["decisions"]] == ["executed"]
    assert api_desired(world) == 6
    assert outcomes(world) == ["failed:ThrottlingException", "executed"]
    # ...and only once.
    handler()(event, FakeLambdaContext())
    assert api_desired(world) == 6
    assert Counter(outcomes(world)) == {"failed:ThrottlingException": 1, "executed": 1,
                                        "skipped:duplicate-delivery": 1}


def test_console_command_whose_action_fails_answers_failed_without_raising(world, clock, sleeps):
    rig = Rig(world, clock, total_attempts=3)
    rig.transport("ecs").fail("UpdateService", forever=(503, "ServiceUnavailableException"))

    out = handler()(ev.console("set_capacity", "api", desired=7), FakeLambdaContext())

    assert out["status"] == "failed"
    [decision] = out["decisions"]
    assert decision["outcome"] == "failed:ServiceUnavailableException"
    assert decision["intended"] == {"desired": 7}
    assert api_desired(world) == 4
    assert outcomes(world) == ["failed:ServiceUnavailableException"], "nothing is silently dropped"

    rig.transport("ecs").heal()
    retry = handler()(ev.console("set_capacity", "api", desired=7), FakeLambdaContext())
    assert [d["outcome"] for d in retry["decisions"]] == ["executed"]
    assert api_desired(world) == 7


def test_a_failed_re_read_after_acting_does_not_hide_or_repeat_the_change(world, clock, sleeps):
    rig = Rig(world, clock, total_attempts=2)
    ecs = rig.transport("ecs")
    # Reads succeed until the change is made; the re-read after it fails.
    ecs.intercept = lambda request, operation: (
        aws_error(request, 500, "ServerException")
        if operation == "DescribeServices" and ecs.attempts["UpdateService"] else None)

    event = ev.eventbridge_alarm("api-cpu-high", "ALARM", T0, value=88, threshold=80)
    out = handler()(event, FakeLambdaContext())

    [decision] = out["decisions"]
    assert decision["outcome"] == "executed", "the change happened: a failed re-read must not turn it into a failure"
    assert decision["after"] == {"verify_error": "ServerException"}
    assert ecs.attempts["UpdateService"] == 1
    ecs.heal()
    assert api_desired(world) == 5
    assert outcomes(world) == ["executed"]
    handler()(event, FakeLambdaContext())  # redelivery
    assert api_desired(world) == 5


def test_a_failing_audit_table_never_undoes_or_repeats_the_action(world, clock, sleeps):
    from reflex_core.pipeline import RetryLater

    rig = Rig(world, clock, total_attempts=2)
    audit_table = world.settings.audit_table
    failing = {"on": True}
    rig.transport("dynamodb").intercept = lambda request, operation: (
        aws_error(request, 500, "InternalServerError")
        if failing["on"] and operation == "PutItem"
        and json.loads(request.body or b"{}").get("TableName") == audit_table else None)
    notices = subscribe_notices(world)

    event = ev.eventbridge_alarm("api-cpu-high", "ALARM", T0, value=88, threshold=80)
    # The action ran, its record could not be written: the intent stays open and Lambda retries the event.
    with pytest.raises(RetryLater):
        handler()(event, FakeLambdaContext())
    assert api_desired(world) == 5
    assert world.audit_records() == []
    assert notices() == [], "nothing is published before the record exists"
    failing["on"] = False
    clock.advance(70)  # Lambda's first retry
    again = handler()(event, FakeLambdaContext())
    assert [d["outcome"] for d in again["decisions"]] == ["executed"]
    assert api_desired(world) == 5, "the retry completes the record, it does not act again"
    assert [r["outcome"] for r in world.audit_records()] == ["executed"]
    assert [n["outcome"] for n in notices()] == ["executed"]


# ---------------------------------------------------------------- regressions (bugs found and fixed)


def test_default_clients_make_the_documented_five_attempts(world, sleeps):
    from reflex_core.aws_clients import DEFAULT_MAX_ATTEMPTS, default_client_factory

    ecs = default_client_factory()("ecs")
    transport = MotoTransport(ecs)
    transport.fail("ListClusters", forever=(503, "ServiceUnavailableException"))
    with pytest.raises(Exception, match="ServiceUnavailable"):
        ecs.list_clusters()
    assert transport.attempts["ListClusters"] == DEFAULT_MAX_ATTEMPTS == 5


def test_an_alarm_whose_tags_cannot_be_read_is_audited_not_raised(world, clock):
    from botocore.exceptions import ClientError

    rig = Rig(world, clock)
    # A name no other test uses: the reaction caches tags per alarm ARN for 5 minutes, across invocations.
    name = f"deleted-alarm-{uuid.uuid4().hex[:8]}"
    rig.transport("cloudwatch").raise_on("ListTagsForResource", ClientError(
        {"Error": {"Code": "ResourceNotFound", "Message": f"alarm {name} does not exist"}},
        "ListTagsForResource"))

    out = handler()(ev.eventbridge_alarm(name, "ALARM", T0, value=9, threshold=5), FakeLambdaContext())

    assert [d["outcome"] for d in out["decisions"]] == ["skipped:no-policy"]
    assert outcomes(world) == ["skipped:no-policy"]
    assert target_state(world)["workers"] == 2


def test_a_large_malformed_event_is_parked_as_readable_json(world, invoke):
    event = ev.custom_event("app.content", "ContentChanged", {}, T0)
    event["detail"] = "x" * 252_000  # a 252 KB event whose detail is not an object

    out = invoke(event)

    assert out["status"] == "rejected" and out["parked_in_dlq"] is True
    [parked] = world.dlq_messages()
    body = json.loads(parked)
    assert body["reason"] == "rejected:validation"
    assert body["errors"] == out["errors"]
