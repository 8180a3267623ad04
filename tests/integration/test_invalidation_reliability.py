"""The invalidator when things go wrong or overlap, against real Redis servers and moto: continuation with a
checkpoint, a second identical request while one runs, Redis failing mid-scan (resume from the checkpoint, then
`failed` with the counts reached), flush refusal, secrets kept out of logs and audit, and malformed input."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import T0
from tests.support.invalidation import (
    PORT,
    KeySpace,
    audit_by_operation,
    cache_entry,
    console,
    content_changed,
    invalidation_env,
    make_config,
    outcomes,
    shared_redis_up,
)
from tests.support.redis_cluster import RedisServer, redis_binaries_available

pytestmark = pytest.mark.redis
needs_shared = pytest.mark.skipif(not shared_redis_up(), reason=f"no Redis on 127.0.0.1:{PORT} (make services)")
needs_binaries = pytest.mark.skipif(not redis_binaries_available(), reason="redis-server not installed")


@pytest.fixture
def space() -> Iterator[KeySpace]:
    ks = KeySpace(redis.Redis(host="127.0.0.1", port=PORT))
    yield ks
    ks.cleanup()


class FlakyRedis:
    """A standalone client that fails (ConnectionError) while `failing` is set, after `healthy_calls` calls."""

    def __init__(self, real: redis.Redis, healthy_calls: int | None = None) -> None:
        self._real = real
        self.healthy_calls = healthy_calls
        self.calls = 0

    def _guard(self) -> None:
        self.calls += 1
        if self.healthy_calls is not None and self.calls > self.healthy_calls:
            raise redis.ConnectionError("simulated: connection reset by peer")

    def evalsha(self, *args: Any) -> Any:
        self._guard()
        return self._real.evalsha(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _pattern_config(space: KeySpace, **continuation: Any):
    policy = {"time_budget_s": 30, "retry_delay_s": 0, "max_retries": 2, **continuation}
    return make_config(caches=[cache_entry(namespace=space.namespace, continuation=policy,
                                           scan={"count": 200})])


def _progress(env, target: str) -> dict[str, Any] | None:
    item = env.world.clients.dynamodb.get_item(TableName=env.world.settings.state_table,
                                               Key={"pk": {"S": f"invalidation#redis/catalog/pattern/{target}"}})
    return json.loads(item["Item"]["doc"]["S"]) if "Item" in item else None


@needs_shared
def test_a_long_scan_continues_from_its_checkpoint_until_done(space, clock) -> None:
    space.fill([f"item:{i}" for i in range(2000)] + ["keep"])
    pattern = space.key("item:*")
    with invalidation_env(_pattern_config(space, time_budget_s=0.001), clock) as env:
        first = env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))
        (decision,) = first["decisions"]
        assert decision["outcome"] == "executed" and decision["after"]["status"] == "continuing"
        assert decision["after"]["checkpoint"]["cursors"]  # where the next run resumes
        assert _progress(env, pattern) is not None
        env.run_continuations()
        runs = audit_by_operation(env, "invalidate_pattern")
        assert len(runs) > 1, "a 1 ms budget cannot scan 2,000 keys in one run"
        statuses = [r["after"]["status"] for r in runs]
        assert statuses.count("complete") == 1 and set(statuses) == {"continuing", "complete"}
        (final,) = [r for r in runs if r["after"]["status"] == "complete"]
        assert final["after"]["removed"] == 2000 and final["after"]["runs"] == len(runs)
        assert 2000 <= final["after"]["matched"] <= 2000 * 1.05  # SCAN may repeat a key while rehashing
        assert {r["trigger"]["kind"] for r in runs} == {"event", "queue"}
        assert _progress(env, pattern) is None
        assert env.queue_bodies(env.continuation_url) == []
    assert space.count() == 1


@needs_shared
def test_a_second_identical_request_while_one_runs_is_coalesced_into_one_follow_up(space, clock) -> None:
    space.fill([f"item:{i}" for i in range(3000)])
    pattern = space.key("item:*")
    with invalidation_env(_pattern_config(space, time_budget_s=0.001), clock) as env:
        env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))
        second = env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))
        assert outcomes(second) == ["skipped:coalesced"]
        assert "follow-up run" in second["decisions"][0]["detail"]
        other = env.invoke("invalidator", content_changed({"patterns": [space.key("other:*")]}, T0))
        assert outcomes(other) == ["executed"]  # a different pattern is another target
        # The same request inside one invocation's window (the core's lock held): coalesced too, not dropped.
        rt = env.world.activate("invalidator", clock)
        assert rt.store.acquire_lock(f"redis/catalog/pattern/{pattern}", "someone-else", clock.now(), 60)
        locked = env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))
        assert outcomes(locked) == ["skipped:coalesced"]
        rt.store.release_lock(f"redis/catalog/pattern/{pattern}", "someone-else")
        env.run_continuations()
        assert len(env.queue_bodies(env.continuation_url)) == 0
        runs = audit_by_operation(env, "invalidate_pattern")
        complete = [r for r in runs
                    if (r["after"] or {}).get("status") == "complete" and r["after"]["target"] == pattern]
        # The first run, then ONE follow-up for both coalesced requests, started after them.
        assert len(complete) == 2
        first, follow_up = sorted(complete, key=lambda r: "follow_up" not in r["after"])
        assert first["after"]["follow_up"] == follow_up["after"]["run"] and "follow_up" not in follow_up["after"]
        again = env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))
        assert outcomes(again) == ["executed"]  # done: a new request runs again
    assert space.count() == 0


@needs_shared
def test_redis_failing_mid_scan_resumes_from_the_checkpoint(space, clock) -> None:
    space.fill([f"item:{i}" for i in range(2000)])
    pattern = space.key("item:*")
    flaky = FlakyRedis(redis.Redis(host="127.0.0.1", port=PORT), healthy_calls=3)
    config = _pattern_config(space)
    with invalidation_env(config, clock, redis_factory=lambda *_: flaky) as env:
        first = env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))
        (decision,) = first["decisions"]
        assert decision["outcome"] == "executed"
        after = decision["after"]
        assert (after["status"], after["attempt"]) == ("retrying", 1)
        assert 0 < after["removed"] < 2000 and after["checkpoint"]["cursors"]  # 3 pages done, kept
        assert "ConnectionError" in after["error"]
        flaky.healthy_calls = None  # Redis is back
        env.run_continuations()
        final = [r for r in audit_by_operation(env, "invalidate_pattern") if r["after"]["status"] == "complete"]
        assert len(final) == 1
        assert final[0]["after"]["removed"] == 2000  # nothing counted twice, nothing missed
    assert space.count() == 0


@needs_binaries
def test_redis_unreachable_is_retried_then_audited_as_failed_with_the_counts(clock) -> None:
    with RedisServer() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.mset({f"item:{i}": "v" for i in range(3000)})
        config = make_config(caches=[cache_entry(redis={"host": "127.0.0.1", "port": server.port, "tls": False},
                                                 scan={"count": 100},
                                                 continuation={"time_budget_s": 0.001, "retry_delay_s": 0,
                                                               "max_retries": 2})])

        def factory(*_: Any) -> redis.Redis:
            # No client-side retry with backoff (redis-py's default): the invalidator's own retries are tested.
            return redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=1, socket_timeout=1,
                               retry=Retry(NoBackoff(), 0))

        with invalidation_env(config, clock, redis_factory=factory) as env:
            first = env.invoke("invalidator", content_changed({"patterns": ["item:*"]}, T0))
            removed_first = first["decisions"][0]["after"]["removed"]
            assert first["decisions"][0]["after"]["status"] == "continuing" and 0 < removed_first < 3000
            server.stop()
            responses = env.run_continuations()
            assert all(r == {"batchItemFailures": []} for r in responses)  # nothing left to redeliver
            runs = audit_by_operation(env, "invalidate_pattern")
            outcomes_ = [r["outcome"] for r in runs]
            assert outcomes_.count("failed:RetriesExhausted") == 1 and outcomes_[-1:] != []
            retrying = [r for r in runs if r["outcome"] == "executed" and r["after"]["status"] == "retrying"]
            assert sorted(r["after"]["attempt"] for r in retrying) == [1, 2]
            (failed,) = [r for r in runs if r["outcome"] == "failed:RetriesExhausted"]
            assert f"{removed_first} removed so far" in failed["detail"]
            assert "ConnectionError" in failed["detail"]
            assert env.queue_bodies(env.continuation_url) == []  # gave up: no loop
            assert _progress(env, "item:*") is None  # a new request may try again


@needs_binaries
def test_flush_only_when_the_policy_allows_and_the_name_is_confirmed(clock) -> None:
    with RedisServer() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        client.mset({"a": "1", "b": "2"})

        def factory(*_: Any) -> redis.Redis:
            return redis.Redis(host="127.0.0.1", port=server.port)

        locked = make_config(caches=[cache_entry(allow_flush=False)])
        with invalidation_env(locked, clock, redis_factory=factory) as env:
            refused = env.invoke("invalidator", console("flush_cache", cache="catalog", confirm="catalog"))
            assert outcomes(refused) == ["skipped:flush-refused"]
            assert "does not allow flushing" in refused["decisions"][0]["detail"]
            pattern_all = env.invoke("invalidator", console("invalidate_cache", cache="catalog", patterns=["*"]))
            assert pattern_all["status"] == "rejected" and "matches every key" in pattern_all["errors"][0]
        assert client.dbsize() == 2
        allowed = make_config(caches=[cache_entry(allow_flush=True)])
        with invalidation_env(allowed, clock, redis_factory=factory) as env:
            wrong = env.invoke("invalidator", console("flush_cache", cache="catalog", confirm="sessions"))
            assert outcomes(wrong) == ["skipped:flush-refused"]
            assert "confirmation-mismatch" in wrong["decisions"][0]["detail"]
            assert client.dbsize() == 2
            done = env.invoke("invalidator", console("flush_cache", cache="catalog", confirm="catalog"))
            assert outcomes(done) == ["executed"] and done["decisions"][0]["after"]["matched"] == 2
        assert client.dbsize() == 0


@needs_binaries
def test_the_redis_secret_never_reaches_logs_audit_or_queues(clock, capsys, caplog) -> None:
    from reflex_core.observability import logger

    password = "s3cret-Token-that-must-not-leak-9f1c"
    with RedisServer(password=password) as server:
        admin = redis.Redis(host="127.0.0.1", port=server.port, password=password)
        admin.mset({"k:1": "v", "k:2": "v"})
        config = make_config(caches=[cache_entry(redis={
            "host": "127.0.0.1", "port": server.port, "tls": False, "auth": "secret",
            "secret_id": "reflex/itest/catalog"})])
        previous = logger.log_level
        try:
            with invalidation_env(config, clock, redis_factory=None) as env:
                env.world.clients.secretsmanager.create_secret(
                    Name="reflex/itest/catalog", SecretString=json.dumps({"password": password}))
                capsys.readouterr()
                # Everything the function does from here is logged at DEBUG, botocore included.
                logger.setLevel("DEBUG")
                caplog.set_level(logging.DEBUG)
                ok = env.invoke("invalidator", console("invalidate_cache", cache="catalog", patterns=["k:*"]))
                assert outcomes(ok) == ["executed"] and ok["decisions"][0]["after"]["removed"] == 2
                admin.config_set("requirepass", "rotated-" + password)  # the next connection fails AUTH
                env.runtime.forget_client("catalog")
                failed_auth = env.invoke("invalidator", console("invalidate_cache", cache="catalog",
                                                                keys=["k:3"]))
                records = json.dumps(env.world.audit_records())
                queued = json.dumps(env.queue_bodies(env.continuation_url))
        finally:
            logger.setLevel(previous)
        admin = redis.Redis(host="127.0.0.1", port=server.port, password="rotated-" + password)
        admin.ping()
    out = capsys.readouterr()
    everything = "\n".join([out.out, out.err, caplog.text, records, queued, json.dumps(ok), json.dumps(failed_auth)])
    assert "k:*" in everything  # the capture did see the run
    assert password not in everything


@needs_shared
def test_malformed_requests_are_refused_with_the_field_named_and_nothing_is_sent(space, clock) -> None:
    space.fill(["k:1"])
    config = make_config(caches=[cache_entry(namespace=space.namespace, max_keys_per_request=2)])
    with invalidation_env(config, clock) as env:
        cases = [
            (console("invalidate_cache", cache="catalog", patterns=[space.key("[abc")]), "patterns[0]", False),
            (console("invalidate_cache", cache="catalog", tags=[]), "tags: must not be empty", False),
            (console("invalidate_cache", cache="catalog", tags=["bad tag"]), "tags[0]", False),
            (console("invalidate_cache", cache="catalog", keys=["a", "b", "c"]), "more than the 2 allowed", False),
            (console("invalidate_cache", cache="nope", keys=["a"]), "cache: no cache named 'nope'", False),
            (console("invalidate_cache", cache="catalog"), "patterns: give at least one", False),
            (content_changed({"patterns": [space.key("k:*"), "a\\"]}, T0), "detail.patterns[1]", True),
            (content_changed({"tags": []}, T0), "detail.tags: must not be empty", True),
            (content_changed({"keys": "k:1"}, T0), "detail.keys: must be a list", True),
        ]
        for event, field, parked in cases:
            response = env.invoke("invalidator", event)
            assert response["status"] == "rejected", event
            assert any(field in e for e in response["errors"]), (field, response["errors"])
            assert response["parked_in_dlq"] is parked
        assert [r["outcome"] for r in env.world.audit_records()] == ["rejected:validation"] * len(cases)
    assert space.count() == 1  # nothing was deleted, not even the valid pattern of a bad request


@needs_shared
def test_a_run_that_never_finishes_stops_at_max_runs(space, clock) -> None:
    space.fill([f"item:{i}" for i in range(3000)])
    with invalidation_env(_pattern_config(space, time_budget_s=0.001, max_runs=2), clock) as env:
        env.invoke("invalidator", content_changed({"patterns": [space.key("item:*")]}, T0))
        env.run_continuations()
        runs = audit_by_operation(env, "invalidate_pattern")
        assert [r["outcome"] for r in runs].count("failed:RunLimitReached") == 1
        assert env.queue_bodies(env.continuation_url) == []


@needs_shared
def test_a_follow_up_whose_message_cannot_be_queued_is_carried_out_not_lost(space, clock) -> None:
    """The run ends with requests pending: its follow-up run is recorded, then its first message is sent. When that
    send fails, the follow-up used to be cleared, and the redelivered message found no run of its own
    (superseded): the requests that arrived during the run were never carried out. Now the follow-up stays,
    marked orphaned, and the redelivery adopts it."""
    from botocore.exceptions import ClientError

    space.fill([f"item:{i}" for i in range(3000)])
    pattern = space.key("item:*")
    with invalidation_env(_pattern_config(space, time_budget_s=0.001), clock) as env:
        env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))
        assert outcomes(env.invoke("invalidator", content_changed({"patterns": [pattern]}, T0))) == [
            "skipped:coalesced"]
        sqs = env.world.clients.sqs
        real = sqs.send_message
        failed: list[str] = []

        def send_message(**kwargs: Any) -> Any:
            if json.loads(kwargs["MessageBody"]).get("reason") == "follow-up" and not failed:
                failed.append(kwargs["MessageBody"])
                raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "simulated"}}, "SendMessage")
            return real(**kwargs)

        sqs.send_message = send_message  # type: ignore[method-assign]
        try:
            env.run_continuations()
        finally:
            sqs.send_message = real  # type: ignore[method-assign]
        assert failed, "the follow-up's message was never sent"
        assert any(d["failed"] for d in env.deliveries)  # the batch item failed: SQS redelivers it
        runs = audit_by_operation(env, "invalidate_pattern")
        seen = [(r["outcome"], (r["after"] or {}).get("status"), (r["before"] or {}).get("run")) for r in runs]
        first_run = {run for _, _, run in seen if run} - {run for _, status, run in seen if status == "complete"}
        # The first run's last step is audited failed (its invocation raised); the follow-up for the coalesced
        # request is carried out (adopted by the redelivered message) and completes.
        assert ("failed:ServiceUnavailable", None, next(iter(first_run))) in seen, seen
        follow_up = [status for _, status, run in seen if run not in first_run]
        assert follow_up.count("complete") == 1 and set(follow_up) <= {"complete", "continuing"}, seen
        assert _progress(env, pattern) is None
        assert env.queue_bodies(env.continuation_url) == []
