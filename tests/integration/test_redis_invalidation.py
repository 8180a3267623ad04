"""RedisInvalidator against real servers: the shared standalone Redis (own key prefix, cleaned up) and a
3-primary cluster this module starts. Exact keys, patterns, tags, checkpoints, failures, flush refusal,
bad input, and what is never sent (KEYS, FLUSHDB, FLUSHALL)."""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.cluster import RedisCluster

from invalidator.cache_tags import TaggedCache
from invalidator.redis_invalidation import (
    FlushRefused,
    InvalidationInputError,
    InvalidationInterrupted,
    RedisInvalidator,
    ScanCheckpoint,
)
from tests.support.redis_cluster import (
    RedisClusterProcesses,
    RedisServer,
    ServerMonitor,
    recording_connection_class,
    redis_binaries_available,
)

pytestmark = pytest.mark.redis

PORT = int(os.environ.get("REFLEX_REDIS_PORT", "6379"))
FORBIDDEN = {"KEYS", "FLUSHDB", "FLUSHALL"}
# Everything the invalidator may send outside `flush`, plus redis-py's connection handshake.
ALLOWED = {"SCAN", "MULTI", "EXEC", "EVAL", "SRANDMEMBER", "SADD", "SCARD", "EVALSHA", "SCRIPT", "UNLINK", "SSCAN",
           "SREM", "RENAME", "EXISTS", "INFO", "CLIENT", "HELLO", "AUTH", "SELECT", "PING", "READONLY", "CLUSTER",
           "COMMAND", "ECHO"}


def _shared_redis_up() -> bool:
    try:
        return bool(redis.Redis(host="127.0.0.1", port=PORT, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


needs_shared = pytest.mark.skipif(not _shared_redis_up(), reason=f"no Redis on 127.0.0.1:{PORT} (make services)")
needs_binaries = pytest.mark.skipif(not redis_binaries_available(), reason="redis-server/redis-cli not installed")


class StepClock:
    """A clock that moves one second every time it is read: time budgets expire deterministically."""

    def __init__(self) -> None:
        self._ticks = itertools.count()

    def __call__(self) -> float:
        return float(next(self._ticks))


def settled(matched: int, expected: int) -> bool:
    """SCAN may return a key twice while the server resizes its table, which other tests sharing the
    server can cause; `removed` is exact, `matched` can only be higher then. On our own servers: equal."""
    return expected <= matched <= expected * 1.05


def fill(client, keys, value="v") -> None:
    pipe = client.pipeline(transaction=False)
    for i, key in enumerate(keys):
        pipe.set(key, value)
        if i % 500 == 499:
            pipe.execute()
    pipe.execute()


def count_matching(client, pattern: str) -> int:
    if isinstance(client, RedisCluster):
        return sum(len(set(client.get_redis_connection(n).scan_iter(match=pattern, count=1000)))
                   for n in client.get_primaries())
    return len(set(client.scan_iter(match=pattern, count=1000)))  # SCAN may return a key twice


# --------------------------------------------------------------------------- standalone fixtures


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix no other test uses; every key under it (and its tag sets) is removed afterwards."""
    token = uuid.uuid4().hex[:10]
    yield f"rt-{token}:"
    client = redis.Redis(host="127.0.0.1", port=PORT)
    for pattern in (f"rt-{token}:*", f"tag:{{ns{token}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i:i + 500])
    client.close()


@pytest.fixture
def namespace(prefix: str) -> str:
    return "ns" + prefix[3:-1]


@pytest.fixture
def recorded() -> Iterator[tuple[redis.Redis, list[tuple[object, ...]]]]:
    """A standalone client that records every command it sends."""
    log: list[tuple[object, ...]] = []
    pool = redis.ConnectionPool(host="127.0.0.1", port=PORT, connection_class=recording_connection_class(log))
    client = redis.Redis(connection_pool=pool)
    yield client, log
    client.close()


def sent(log) -> set[str]:
    return {(c[0].decode() if isinstance(c[0], bytes) else str(c[0])).upper().split(" ")[0] for c in log}


# --------------------------------------------------------------------------- standalone: keys and patterns


@needs_shared
def test_delete_keys_removes_exactly_the_keys_given(recorded, prefix):
    client, log = recorded
    fill(client, [f"{prefix}a{i}" for i in range(50)])
    log.clear()
    report = RedisInvalidator(client, batch_size=7).delete_keys(
        [f"{prefix}a{i}" for i in range(30)] + [f"{prefix}a1", f"{prefix}missing"])
    assert (report.matched, report.removed, report.complete) == (31, 30, True)
    assert report.batches == 5  # 31 keys, 7 per round trip
    assert count_matching(client, f"{prefix}a*") == 20
    assert not sent(log) & FORBIDDEN


@needs_shared
@pytest.mark.parametrize("strategy", ["server", "client"])
def test_delete_pattern_removes_every_match_and_nothing_else(recorded, prefix, strategy):
    client, log = recorded
    fill(client, [f"{prefix}page:{i}" for i in range(2500)] + [f"{prefix}user:{i}" for i in range(1000)])
    log.clear()
    invalidator = RedisInvalidator(client, scan_count=100, batch_size=200, strategy=strategy)
    report = invalidator.delete_pattern(f"{prefix}page:*")
    assert report.complete and report.checkpoint is None
    assert report.removed == 2500 and report.matched >= 2500  # see `settled`
    assert report.batches > 1 and report.nodes == 1
    assert count_matching(client, f"{prefix}page:*") == 0
    assert count_matching(client, f"{prefix}user:*") == 1000
    commands = sent(log)
    assert not commands & FORBIDDEN and commands <= ALLOWED
    assert report.as_audit()["removed"] == 2500


@needs_shared
def test_glob_classes_and_single_character_wildcards(recorded, prefix):
    client, _ = recorded
    fill(client, [f"{prefix}{c}{d}" for c in "abcx" for d in "123"])
    report = RedisInvalidator(client).delete_pattern(f"{prefix}[a-b]?")
    assert report.removed == 6
    assert sorted({k.decode()[len(prefix):] for k in client.scan_iter(match=f"{prefix}*")}) == [
        "c1", "c2", "c3", "x1", "x2", "x3"]


@needs_shared
@pytest.mark.parametrize("strategy", ["server", "client"])
def test_time_budget_checkpoints_and_resumes_until_done(prefix, strategy):
    client = redis.Redis(host="127.0.0.1", port=PORT)
    fill(client, [f"{prefix}item:{i}" for i in range(1500)])
    invalidator = RedisInvalidator(client, scan_count=50, strategy=strategy, clock=StepClock())
    report = invalidator.delete_pattern(f"{prefix}item:*", time_budget_s=3)
    assert not report.complete and report.checkpoint is not None
    assert report.removed < 1500  # other tests' keys share the server: the first pages may hold none of ours
    runs = 1
    while not report.complete:
        # The checkpoint travels as JSON (a queue message, a Step Functions state).
        stored = json.loads(json.dumps(report.checkpoint.to_dict()))
        report = invalidator.delete_pattern(f"{prefix}item:*", time_budget_s=3, cursor_checkpoint=stored)
        runs += 1
        assert runs < 500
    assert report.removed == 1500 and settled(report.matched, 1500)
    assert report.runs == runs
    assert count_matching(client, f"{prefix}item:*") == 0


@needs_shared
def test_connection_failure_mid_scan_resumes_from_the_checkpoint_client_strategy(prefix, monkeypatch):
    client = redis.Redis(host="127.0.0.1", port=PORT)
    fill(client, [f"{prefix}row:{i}" for i in range(2000)])
    original = redis.client.Pipeline.execute
    calls = itertools.count(1)

    def flaky(self, raise_on_error=True):
        # The 4th UNLINK batch (the MULTI around each SCAN page and its server's identity is not counted).
        if not self.transaction and next(calls) == 4:
            raise redis.ConnectionError("injected: connection reset")
        return original(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", flaky)
    invalidator = RedisInvalidator(client, scan_count=200, batch_size=100, strategy="client")
    with pytest.raises(InvalidationInterrupted) as err:
        invalidator.delete_pattern(f"{prefix}row:*")
    partial = err.value.report
    assert not partial.complete and partial.checkpoint is not None
    assert partial.batches == 3 and 0 < partial.removed <= 300  # three batches went through, the 4th failed
    assert isinstance(err.value.__cause__, redis.ConnectionError)
    resumed = invalidator.delete_pattern(f"{prefix}row:*", cursor_checkpoint=partial.checkpoint)
    assert resumed.complete
    assert resumed.removed == 2000 and settled(resumed.matched, 2000)  # nothing lost, nothing counted twice
    assert count_matching(client, f"{prefix}row:*") == 0


@needs_shared
def test_connection_failure_mid_scan_resumes_from_the_checkpoint_server_strategy(prefix, monkeypatch):
    client = redis.Redis(host="127.0.0.1", port=PORT)
    fill(client, [f"{prefix}row:{i}" for i in range(2000)])
    original = redis.Redis.evalsha
    calls = itertools.count(1)

    def flaky(self, *args, **kwargs):
        if next(calls) == 3:
            raise redis.TimeoutError("injected: timeout")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "evalsha", flaky)
    invalidator = RedisInvalidator(client, scan_count=100)
    with pytest.raises(InvalidationInterrupted) as err:
        invalidator.delete_pattern(f"{prefix}row:*")
    partial = err.value.report
    assert partial.removed < 2000 and partial.batches == 2 and partial.checkpoint is not None
    resumed = invalidator.delete_pattern(f"{prefix}row:*", cursor_checkpoint=partial.checkpoint.to_dict())
    assert resumed.removed == 2000 and settled(resumed.matched, 2000)
    assert count_matching(client, f"{prefix}row:*") == 0


def test_unreachable_redis_is_reported_not_retried_in_a_loop():
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    with pytest.raises(InvalidationInterrupted) as err:
        RedisInvalidator(client).delete_pattern("app:*")
    report = err.value.report
    assert (report.matched, report.removed, report.complete) == (0, 0, False)
    assert report.checkpoint is not None and report.checkpoint.cursors == {"standalone": 0}


# --------------------------------------------------------------------------- standalone: tags


@needs_shared
def test_delete_tag_removes_the_tagged_keys_and_the_tag_set(recorded, prefix, namespace):
    client, log = recorded
    cache = TaggedCache(client, namespace)
    for i in range(300):
        cache.set(f"{prefix}page:{i}", "html", tags=["product:42"] if i % 3 == 0 else ["product:7"], ttl_s=600)
    client.delete(f"{prefix}page:0")  # expired or evicted: a stale member of the tag set
    invalidator = RedisInvalidator(client, tag_namespace=namespace, batch_size=30)
    log.clear()
    report = invalidator.delete_tag("product:42")
    assert report.complete and report.matched == 100 and report.removed == 99
    assert count_matching(client, f"{prefix}page:*") == 200
    assert not client.exists(cache.tag_key("product:42"))
    assert not list(client.scan_iter(match=f"tag:{{{namespace}:product:42}}*"))  # no snapshot left behind
    assert len(cache.keys_for_tag("product:7")) == 200
    assert not sent(log) & FORBIDDEN and sent(log) <= ALLOWED
    # A tag nobody used: nothing to do.
    assert invalidator.delete_tag("product:999").matched == 0


@needs_shared
def test_an_entry_tagged_during_the_invalidation_lands_in_a_fresh_set(prefix, namespace):
    client = redis.Redis(host="127.0.0.1", port=PORT)
    cache = TaggedCache(client, namespace)
    for i in range(2000):
        cache.set(f"{prefix}old:{i}", "v", tags=["news"], ttl_s=600)
    invalidator = RedisInvalidator(client, tag_namespace=namespace, clock=StepClock())
    report = invalidator.delete_tag("news", time_budget_s=2, sscan_count=100)
    assert not report.complete
    cache.set(f"{prefix}fresh", "v", tags=["news"], ttl_s=600)  # written from new content, after the change
    while not report.complete:
        report = invalidator.delete_tag("news", cursor_checkpoint=report.checkpoint, sscan_count=100)
    assert report.matched == report.removed == 2000
    assert client.exists(f"{prefix}fresh") and cache.keys_for_tag("news") == {f"{prefix}fresh".encode()}


@needs_shared
def test_tag_invalidation_failing_mid_way_resumes_without_double_counting(prefix, namespace, monkeypatch):
    client = redis.Redis(host="127.0.0.1", port=PORT)
    cache = TaggedCache(client, namespace)
    for i in range(1000):
        cache.set(f"{prefix}k:{i}", "v", tags=["t"], ttl_s=600)
    original = redis.client.Pipeline.execute
    calls = itertools.count(1)

    def flaky(self, raise_on_error=True):
        if next(calls) == 3:
            raise redis.ConnectionError("injected")
        return original(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", flaky)
    invalidator = RedisInvalidator(client, tag_namespace=namespace, batch_size=100)
    with pytest.raises(InvalidationInterrupted) as err:
        invalidator.delete_tag("t", sscan_count=1000)
    assert err.value.report.removed == 200
    report = invalidator.delete_tag("t", cursor_checkpoint=err.value.report.checkpoint)
    assert report.complete and report.matched == report.removed == 1000
    assert count_matching(client, f"{prefix}k:*") == 0


# --------------------------------------------------------------------------- bad input: clear errors, nothing sent


@needs_shared
@pytest.mark.parametrize(("pattern", "words"), [
    ("", "empty"), ("*", "every key"), ("**", "every key"), ("?*", "every key"),
    ("app:[abc", "unbalanced"), ("app:\\", "backslash"), ("app:[]", "empty character class"),
    ("app:\n*", "control"), (42, "string"),
])
def test_malformed_patterns_are_refused_before_anything_is_sent(recorded, pattern, words):
    client, log = recorded
    with pytest.raises(InvalidationInputError) as err:
        RedisInvalidator(client).delete_pattern(pattern)
    assert err.value.field == "pattern" and words in str(err.value)
    assert log == []


@needs_shared
@pytest.mark.parametrize(("call", "field"), [
    (lambda inv: inv.delete_tags([]), "tags"),
    (lambda inv: inv.delete_tags("one-tag"), "tags"),
    (lambda inv: inv.delete_tags(["ok", "not ok"]), "tags[1]"),
    (lambda inv: inv.delete_tag("a{b}"), "tag"),
    (lambda inv: inv.delete_keys([]), "keys"),
    (lambda inv: inv.delete_keys(["a", ""]), "keys[1]"),
    (lambda inv: inv.delete_pattern("app:*", scan_count=0), "scan_count"),
    (lambda inv: inv.delete_pattern("app:*", time_budget_s=0), "time_budget_s"),
    (lambda inv: inv.delete_pattern("app:*", strategy="fast"), "strategy"),
    (lambda inv: inv.delete_pattern("app:*", cursor_checkpoint={"v": 9}), "checkpoint"),
])
def test_bad_requests_name_the_field_and_send_nothing(recorded, call, field):
    client, log = recorded
    with pytest.raises(InvalidationInputError) as err:
        call(RedisInvalidator(client))
    assert err.value.field == field
    assert log == []


@needs_shared
def test_a_checkpoint_only_resumes_its_own_invalidation(recorded):
    client, log = recorded
    invalidator = RedisInvalidator(client, tag_namespace="shop")
    pattern_cp = ScanCheckpoint(kind="pattern", target="app:*", cursors={"standalone": 12})
    with pytest.raises(InvalidationInputError, match="belongs to the pattern 'app:\\*'"):
        invalidator.delete_pattern("other:*", cursor_checkpoint=pattern_cp)
    forged = ScanCheckpoint(kind="tag", target="t", cursors={"set": 0}, snapshot="session:alice")
    with pytest.raises(InvalidationInputError, match="snapshot"):
        invalidator.delete_tag("t", cursor_checkpoint=forged)
    assert log == []


@needs_shared
def test_flush_is_refused_without_policy_or_confirmation(recorded):
    client, log = recorded
    invalidator = RedisInvalidator(client)
    with pytest.raises(FlushRefused) as err:
        invalidator.flush(confirm_name="sessions", cache_name="sessions", allowed=False)
    assert err.value.reason == "not-allowed"
    for confirmation in (None, "", "Sessions", "session"):
        with pytest.raises(FlushRefused) as err:
            invalidator.flush(confirm_name=confirmation, cache_name="sessions", allowed=True)
        assert err.value.reason == "confirmation-mismatch"
    assert log == []


@needs_binaries
def test_confirmed_flush_and_match_all_run_on_a_server_of_our_own():
    with RedisServer() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port)
        fill(client, [f"k{i}" for i in range(1200)])
        invalidator = RedisInvalidator(client, scan_count=100)
        report = invalidator.delete_pattern("*", allow_match_all=True)
        assert report.removed == 1200 and client.dbsize() == 0
        fill(client, [f"k{i}" for i in range(700)])
        monitor = ServerMonitor(server.port)
        report = invalidator.flush(confirm_name="scratch", cache_name="scratch", allowed=True)
        commands = monitor.stop()
        assert report.kind == "flush" and report.matched == report.removed == 700 and client.dbsize() == 0
        assert any(str(c["command"]).upper() == "FLUSHDB ASYNC" for c in commands)
        client.close()


# --------------------------------------------------------------------------- cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisClusterProcesses]:
    if not redis_binaries_available():
        pytest.skip("redis-server/redis-cli not installed")
    with RedisClusterProcesses(primaries=3) as processes:
        yield processes


@pytest.fixture
def cluster_client(cluster) -> Iterator[RedisCluster]:
    client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
    yield client
    for node in client.get_primaries():
        client.get_redis_connection(node).flushdb()  # our own throw-away cluster
    client.close()


@pytest.fixture
def monitors(cluster) -> Iterator[dict[int, ServerMonitor]]:
    watching = {port: ServerMonitor(port) for port in cluster.ports}
    yield watching
    for m in watching.values():
        m.stop()


def per_node_counts(client: RedisCluster, pattern: str) -> list[int]:
    return [len(set(client.get_redis_connection(n).scan_iter(match=pattern, count=1000)))
            for n in client.get_primaries()]


@pytest.mark.parametrize("strategy", ["server", "client"])
def test_cluster_pattern_scans_every_primary_and_unlinks_one_slot_per_command(cluster_client, monitors, strategy):
    fill(cluster_client, [f"page:{i}" for i in range(3000)] + [f"user:{i}" for i in range(600)])
    assert all(n > 0 for n in per_node_counts(cluster_client, "page:*"))  # spread over all three nodes
    report = RedisInvalidator(cluster_client, scan_count=200, batch_size=150, strategy=strategy).delete_pattern(
        "page:*")
    assert report.complete and report.nodes == 3
    assert report.matched == report.removed == 3000
    assert per_node_counts(cluster_client, "page:*") == [0, 0, 0]
    assert sum(per_node_counts(cluster_client, "user:*")) == 600
    for monitor in monitors.values():
        monitor.stop()
        names = monitor.names()
        assert "SCAN" in names  # every primary was scanned (inside the script or by the client)
        assert not set(names) & FORBIDDEN
        for entry in monitor.commands:
            parts = str(entry["command"]).split(" ")
            if parts[0].upper() == "UNLINK":
                assert len({cluster_client.keyslot(k) for k in parts[1:]}) == 1


def test_cluster_checkpoint_holds_a_cursor_per_primary(cluster_client):
    fill(cluster_client, [f"doc:{i}" for i in range(3000)])
    invalidator = RedisInvalidator(cluster_client, scan_count=100, clock=StepClock())
    report = invalidator.delete_pattern("doc:*", time_budget_s=2)
    assert not report.complete
    checkpoint = report.checkpoint.to_dict()
    nodes = {n.name for n in cluster_client.get_primaries()}
    assert set(checkpoint["cursors"]) | set(checkpoint["done"]) == nodes
    while not report.complete:
        report = invalidator.delete_pattern("doc:*", time_budget_s=2, cursor_checkpoint=report.checkpoint)
    assert report.matched == report.removed == 3000
    assert per_node_counts(cluster_client, "doc:*") == [0, 0, 0]


def test_cluster_failure_mid_scan_resumes_from_the_checkpoint(cluster_client, monkeypatch):
    fill(cluster_client, [f"row:{i}" for i in range(3000)])
    original = redis.client.Pipeline.execute
    calls = itertools.count(1)

    def flaky(self, raise_on_error=True):
        if next(calls) == 5:
            raise redis.ConnectionError("injected")
        return original(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", flaky)
    invalidator = RedisInvalidator(cluster_client, scan_count=300, batch_size=100, strategy="client")
    with pytest.raises(InvalidationInterrupted) as err:
        invalidator.delete_pattern("row:*")
    assert 0 < err.value.report.removed < 3000
    report = invalidator.delete_pattern("row:*", cursor_checkpoint=err.value.report.checkpoint)
    assert report.matched == report.removed == 3000
    assert per_node_counts(cluster_client, "row:*") == [0, 0, 0]


def test_cluster_tags_live_in_another_slot_than_their_keys(cluster_client, monitors):
    cache = TaggedCache(cluster_client, "shop")
    keys = [f"product:{i}:html" for i in range(500)]
    for i, key in enumerate(keys):
        cache.set(key, "<html>", tags=["category:7"] + (["sale"] if i % 2 else []), ttl_s=300)
    tag_slot = cluster_client.keyslot(cache.tag_key("category:7"))
    assert {cluster_client.keyslot(k) for k in keys} - {tag_slot}  # keys elsewhere
    assert cluster_client.ttl(cache.tag_key("category:7")) >= 300  # the set outlives its members
    report = RedisInvalidator(cluster_client, tag_namespace="shop", batch_size=64).delete_tag("category:7")
    assert report.complete and report.matched == report.removed == 500
    assert not any(cluster_client.exists(k) for k in keys[:50])
    assert not cluster_client.exists(cache.tag_key("category:7"))
    for monitor in monitors.values():
        monitor.stop()
        assert not set(monitor.names()) & FORBIDDEN
        for entry in monitor.commands:
            parts = str(entry["command"]).split(" ")
            if parts[0].upper() == "UNLINK":
                assert len({cluster_client.keyslot(k) for k in parts[1:]}) == 1


def test_cluster_delete_keys_routes_each_key_to_its_node(cluster_client):
    keys = [f"session:{i}" for i in range(400)]
    fill(cluster_client, keys)
    report = RedisInvalidator(cluster_client).delete_keys([*keys, "session:none"])
    assert (report.matched, report.removed) == (401, 400)
    assert sum(per_node_counts(cluster_client, "session:*")) == 0


def test_cluster_flush_needs_confirmation_and_empties_every_primary(cluster_client):
    fill(cluster_client, [f"x:{i}" for i in range(900)])
    invalidator = RedisInvalidator(cluster_client)
    with pytest.raises(FlushRefused):
        invalidator.flush(confirm_name="other", cache_name="sessions", allowed=True)
    assert sum(per_node_counts(cluster_client, "x:*")) == 900
    report = invalidator.flush(confirm_name="sessions", cache_name="sessions", allowed=True)
    assert report.removed == 900 and report.nodes == 3
    assert per_node_counts(cluster_client, "*") == [0, 0, 0]
