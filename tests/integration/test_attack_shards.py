"""Adversarial tests of the shard rebalancing reaction (functions/shards): each test asserts the CORRECT
behaviour and fails while the defect it describes is present. See ATTACK_SHARDS.md."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from shards.buckets import bucket_of
from simulator.pg_cluster import PostgresCluster, postgres_available
from tests.support.shards import (
    check_placement,
    make_mover,
    reset_databases,
    seed,
    shard_set,
    state_table,
)

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")]
DBS = ["atk_a", "atk_b"]


@pytest.fixture(scope="module")
def pgc() -> Iterator[PostgresCluster]:
    with PostgresCluster(DBS) as cluster:
        yield cluster


@pytest.fixture
def env(pgc: PostgresCluster) -> Iterator[dict[str, Any]]:
    reset_databases(pgc, DBS)
    with mock_aws():
        yield {"pgc": pgc, "ddb": state_table()}


def _throttle(op: str) -> ClientError:
    return ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "injected"}}, op)


def _publish_failing_once() -> tuple[Callable[[Any], None], list[str], list[str]]:
    """An `on_switched` whose first call fails (an EventBridge throttle); its attempts and deliveries."""
    attempts: list[str] = []
    published: list[str] = []

    def on_switched(move: Any) -> None:
        attempts.append(move.id)
        if len(attempts) == 1:
            raise _throttle("PutEvents")
        published.append(move.id)

    return on_switched, attempts, published


def _buckets_with_rows(mover: Any, sset: Any, shard: str, count: int) -> list[int]:
    owners = mover.map().owners
    found = sorted({bucket_of(f"tenant-{t}", sset.buckets) for t in range(60)
                    if owners[bucket_of(f"tenant-{t}", sset.buckets)] == shard})
    return found[:count]


def _rows(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM orders").fetchone()[0])  # type: ignore[index]


# ---------------------------------------------------------------------------------------------------- mover
def test_abort_after_the_source_delete_but_before_done_loses_the_buckets(env: dict[str, Any]) -> None:
    """DEFECT: `_from_switched` deletes the source rows and removes the buckets' states from the map
    ("settle"), and only then saves the record as `done`. If that last save fails (a DynamoDB throttle, a
    Lambda timeout, or an abort racing the step: abort preempts the set's lock and bumps the record's
    version, so the step's conditional save fails), the record stays `switched`. `request_abort` only refuses
    a move that is `done`, so the abort is accepted; the next step rolls back: `_rollback` no longer sees the
    buckets as switched (their states are gone from the map), so it takes the "not switched" branch: it opens
    the (empty) source fence, leaves the map pointing at the target, then fences the target `moved` and
    DELETES THE TARGET'S ROWS. Every row of the moved buckets is gone from both shards, and the owner the map
    names refuses every write.

    EXPECTED: once the source rows are deleted the abort is refused (or the rollback is a no-op): every
    seeded row survives, exactly once, on the shard the map names."""
    sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=0)
    mover = make_mover(sset, env["ddb"])
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 3)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-late-abort")

    real_save = mover.store.save_move
    failed: list[str] = []

    def save_move(move: Any, note: str = "") -> Any:
        if move.phase == "done" and not failed:
            failed.append(move.id)
            move.phase = "switched"
            raise _throttle("PutItem")
        return real_save(move, note)

    mover.store.save_move = save_move  # type: ignore[method-assign]
    with pytest.raises(ClientError):
        mover.run("m-late-abort", wait=False)
    assert failed and mover.load("m-late-abort").phase == "switched"
    with contextlib.suppress(Exception):  # refusing the abort here is a correct answer
        mover.request_abort("m-late-abort", "operator changed their mind")
    mover.run("m-late-abort", wait=False)
    check_placement(sset, mover, expected)


def test_shard_moved_is_published_even_when_the_first_publish_fails(env: dict[str, Any]) -> None:
    """DEFECT: `_from_verified` saves the record as `switched` and only then calls `on_switched` (the reaction
    publishes ShardMoved from it). If the publish fails once (an EventBridge throttle, or the Lambda dies
    right after the save) the step fails, the retry finds the record `switched` and goes on with the grace
    and the delete: ShardMoved is never published, and the applications' caches keep serving what they
    cached per moved bucket (tags shard:<set>:<b>).

    EXPECTED: the ShardMoved notification is delivered at least once for a switched move, whatever
    failure happens between the switch and the publish (publish before the record leaves `verified`, or
    re-publish from `switched` until recorded as sent)."""
    sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=0)
    on_switched, attempts, published = _publish_failing_once()
    mover = make_mover(sset, env["ddb"], on_switched=on_switched)
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-event")
    with pytest.raises(ClientError):
        mover.run("m-event", wait=False)
    result = mover.run("m-event", wait=False)
    assert result.phase == "done"
    check_placement(sset, mover, expected)
    assert published == ["m-event"], f"ShardMoved attempts {attempts}, delivered {published}"


def test_a_switched_move_paused_after_a_failed_publish_still_announces_once(env: dict[str, Any]) -> None:
    """The mover is the one place that makes ShardMoved at-least-once (`moved_published`): a move paused right
    after its switch (whose publish failed) still announces on its next step, paused or not, and once recorded
    never again."""
    sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=3600)
    on_switched, attempts, published = _publish_failing_once()
    mover = make_mover(sset, env["ddb"], on_switched=on_switched)
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-paused-event")
    with pytest.raises(ClientError):
        mover.run("m-paused-event", wait=False)
    assert mover.load("m-paused-event").phase == "switched" and published == []
    mover.set_paused("m-paused-event", True)
    assert mover.step("m-paused-event").detail == "paused"
    assert published == ["m-paused-event"] and mover.load("m-paused-event").moved_published
    assert mover.step("m-paused-event").detail == "paused"
    mover.set_paused("m-paused-event", False)
    rec = mover.load("m-paused-event")
    rec.grace_until = 0.0  # the grace period over
    mover.store.save_move(rec, "test: grace over")
    assert mover.run("m-paused-event", wait=False).phase == "done"
    assert published == ["m-paused-event"], attempts
    check_placement(sset, mover, expected)


# ---------------------------------------------------------------------------------------------------- reaction
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:reflex-dev-shards"
WORKFLOW_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:reflex-dev-shard-moves"


def _config(pgc: PostgresCluster, **set_over: Any) -> Any:
    import yaml

    from reflex_core.config import parse_config
    from tests.conftest import ROOT

    data = yaml.safe_load((ROOT / "config" / "dev.yaml").read_text())
    shards = [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in DBS]
    data["sharding"] = {"sets": [{"name": "orders", "buckets": 32, "shards": shards,
                                  "placement": [{"shard": "atk-a", "buckets": ["0-15"]},
                                                {"shard": "atk-b", "buckets": ["16-31"]}],
                                  "tables": [{"name": "orders", "key_column": "tenant"},
                                             {"name": "order_lines", "key_column": "tenant"}],
                                  "grace_period_s": 600, "cooldown_s": 0} | set_over]}
    return parse_config(data, "dev.yaml+shards")


@contextlib.contextmanager
def _make_world(pgc: PostgresCluster, **set_over: Any) -> Iterator[dict[str, Any]]:
    from reflex_core.clock import VirtualClock
    from reflex_core.runtime import install_runtime
    from shards import handler
    from shards.workflow_definition import move_definition
    from simulator.aws_world import create_world
    from simulator.workflow_driver import LocalWorkflows
    from tests.conftest import T0, FakeLambdaContext

    reset_databases(pgc, DBS)
    clock = VirtualClock(T0)
    try:
        with mock_aws():
            config = _config(pgc, **set_over)
            w = create_world(config)
            w.settings = w.settings.model_copy(update={"workflow_arn": WORKFLOW_ARN})
            w.set_kill_switch("shards", False)

            def invoke(event: dict[str, Any]) -> Any:
                w.activate("shards", clock)
                return handler.lambda_handler(event, FakeLambdaContext())

            driver = LocalWorkflows(move_definition(FUNCTION_ARN), WORKFLOW_ARN, FUNCTION_ARN, invoke, clock)
            w.overrides["stepfunctions"] = driver
            w.runtime(clock, "shards")
            yield {"world": w, "invoke": invoke, "driver": driver, "clock": clock, "config": config, "pgc": pgc}
    finally:
        install_runtime(None)


@pytest.fixture
def world(pgc: PostgresCluster) -> Iterator[dict[str, Any]]:
    with _make_world(pgc) as w:
        yield w


def _console(env: dict[str, Any], **payload: Any) -> dict[str, Any]:
    body = {"set": "orders", "reason": "attack move", "operator": "mallory"} | payload
    return env["invoke"](body)


def _mover_of(env: dict[str, Any]) -> Any:
    from shards.shard_reaction import ShardReaction

    rt = env["world"].activate("shards", env["clock"])
    return ShardReaction().mover(env["config"].sharding.sets[0], rt)


@pytest.mark.parametrize(("buckets", "why"), [
    (["5-3"], "a reversed range names no bucket: validation passes (the list is not empty), then plan() "
              "crashes with KeyError('buckets') because bucket_numbers() is [] and the intent drops the param"),
    ([-1], "a negative bucket passes validation (only >= N is checked) and reaches plan(), where owners[-1] "
           "silently reads the LAST bucket's owner (atk-b): the answer is the misleading skip 'target: the "
           "target is the source'"),
    ([True], "JSON true is coerced to bucket 1 (lax int): a boolean moves a real bucket"),
], ids=["reversed-range", "negative", "boolean"])
def test_malformed_bucket_lists_are_rejected_naming_the_field(world: dict[str, Any], buckets: list[Any],
                                                               why: str) -> None:
    """DEFECT: ShardCommand.buckets is `list[int | str]` in pydantic's lax mode and validate_command only checks
    `b >= buckets`: reversed ranges, negative numbers, booleans and floats get through validation (see `why`).

    EXPECTED (as for bucket 99, tests/integration/test_shard_reaction_pg.py): the console command is rejected
    at validation (`rejected:validation`), the error names `buckets`, nothing is claimed."""
    out = _console(world, command="move", buckets=buckets, target="atk-b", request_id=f"bad-{buckets!r}")
    assert out["status"] == "rejected", (why, out.get("decisions", out))
    assert any(e.startswith("buckets") for e in out["errors"]), out["errors"]
    assert _mover_of(world).map().states == {}
    assert world["world"].audit_records()[-1]["outcome"] == "rejected:validation"


def test_a_huge_bucket_range_is_rejected_without_materialising_it(tmp_path: Any) -> None:
    """DEFECT: validate_command calls `bucket_numbers()`, which expands every "a-b" range into a Python set
    BEFORE checking the bounds: {"buckets": ["0-99999999999"]} (a 15-byte console payload) makes the
    shards Lambda allocate ~10^11 ints: it runs out of memory or time instead of answering.

    EXPECTED: rejected at once with a TriggerError naming `buckets` (outside 0-N-1). Run in a subprocess
    capped at 1 GB of address space and 20 s."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    script = tmp_path / "huge.py"
    script.write_text(f"""
import resource, sys
sys.path[:0] = [{str(root)!r}, {str(root / 'functions')!r}]
from reflex_core.triggers import TriggerError
from shards.shard_commands import validate_command
class Cfg:
    class sharding:
        sets = []
from reflex_core.sharding_config import ShardSet
sset = ShardSet.model_validate({{"name": "orders", "buckets": 64,
    "shards": [{{"name": "a", "connection": {{"kind": "dsn", "dsn": "postgresql://x/a"}}}},
               {{"name": "b", "connection": {{"kind": "dsn", "dsn": "postgresql://x/b"}}}}],
    "tables": [{{"name": "orders", "key_column": "tenant"}}]}})
Cfg.sharding.sets = [sset]
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
try:
    validate_command({{"command": "move", "set": "orders", "buckets": ["0-99999999999"], "target": "b",
                      "reason": "why not", "operator": "mallory"}}, Cfg)
    print("ACCEPTED")
except TriggerError as err:
    print("REJECTED", err.errors)
except MemoryError:
    print("MEMORYERROR")
""")
    try:
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=20)
        out = proc.stdout + proc.stderr[-500:]
    except subprocess.TimeoutExpired:
        out = "TIMEOUT after 20 s"
    assert out.startswith("REJECTED") and "buckets" in out, out


def _bytes_on(env: dict[str, Any], shard: str, extra: list[int]) -> int:
    from shards.inventory import bucket_bytes

    mover = _mover_of(env)
    m = mover.map()
    sizes = bucket_bytes(env["config"].sharding.sets[0], m, mover._connect)
    return sum(n for b, n in sizes.items() if m.owners[b] == shard or b in extra)


def test_drain_respects_the_target_max_bytes(pgc: PostgresCluster) -> None:
    """DEFECT: `max_bytes` ("capacity: a move that would exceed it is refused") is checked only for the console
    `move` command (ShardReaction._capacity). The planner (plan_rebalance / plan_drain) is never told about
    it (ShardInfo has no max_bytes), so drain, rebalance, add_shard and the alarm/schedule-driven rebalance
    happily plan and start moves that push a shard far past its capacity.

    EXPECTED: a drain whose only possible target would exceed its max_bytes is refused (skipped, the target
    named), or at least plans no move that puts the target over max_bytes."""
    shards = [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in DBS]
    with _make_world(pgc, shards=shards) as probe:
        seed(pgc, probe["config"].sharding.sets[0], _mover_of(probe))
        held_b = _bytes_on(probe, "atk-b", [])
        held_a = _bytes_on(probe, "atk-a", [])
    cap = held_b + held_a // 2  # atk-b has room for half of atk-a: the drain cannot fit
    shards[1] |= {"max_bytes": cap}
    with _make_world(pgc, shards=shards) as env:
        seed(pgc, env["config"].sharding.sets[0], _mover_of(env))
        out = _console(env, command="drain", shard="atk-a", dry_run=True, request_id="drain-1")["decisions"][0]
        moved_in = [b for mv in (out.get("intended") or {}).get("moves", []) if mv["target"] == "atk-b"
                    for b in mv["buckets"]]
        after = _bytes_on(env, "atk-b", moved_in)
        assert after <= cap, (f"the drain plans {len(moved_in)} bucket(s) into atk-b: {after} bytes > max_bytes "
                              f"{cap} (atk-b held {held_b}; outcome {out['outcome']})")


def test_capacity_counts_the_moves_already_heading_to_the_target(pgc: PostgresCluster) -> None:
    """DEFECT: ShardReaction._capacity adds the new move's bytes to what the map says the target OWNS, ignoring
    the buckets of unfinished moves already heading there (their owner is still the source until the switch).
    With max_concurrent_moves 2, two console moves that each fit under max_bytes alone are both accepted and
    together overflow the target.

    EXPECTED: the second move is refused `skipped:target-at-capacity`."""
    shards = [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in DBS]
    with _make_world(pgc, shards=shards) as probe:
        sset = probe["config"].sharding.sets[0]
        seed(pgc, sset, _mover_of(probe))
        mover = _mover_of(probe)
        full = sorted(b for b in mover.map().buckets_of("atk-a")
                      if any(bucket_of(f"tenant-{t}", 32) == b for t in range(60)))
        first, second = full[:2], full[2:4]
        base = _bytes_on(probe, "atk-b", [])
        one = _bytes_on(probe, "atk-b", first) - base
        two = _bytes_on(probe, "atk-b", second) - base
    cap = base + max(one, two) + min(one, two) // 2  # either move fits alone, both do not
    shards[0] |= {"max_concurrent_moves": 2}
    shards[1] |= {"max_bytes": cap, "max_concurrent_moves": 2}
    with _make_world(pgc, shards=shards) as env:
        seed(pgc, env["config"].sharding.sets[0], _mover_of(env))
        a = _console(env, command="move", buckets=first, target="atk-b", request_id="cap-1")["decisions"][0]
        assert a["outcome"] == "executed", a
        b = _console(env, command="move", buckets=second, target="atk-b", request_id="cap-2")["decisions"][0]
        assert b["outcome"] == "skipped:target-at-capacity", (
            f"cap {cap}: atk-b holds {base}, move 1 brings {one}, move 2 brings {two}; second move: "
            f"{b['outcome']} {b.get('detail')}")


def test_block_writes_copy_of_a_table_with_a_bytea_primary_key(env: dict[str, Any]) -> None:
    """DEFECT: the block_writes copy keeps its chunk cursor as `_jsonable(v)` (str(v) for anything not a JSON
    scalar) and uses that cursor as the next chunk's lower bound, cast back with `%s::<pk type>`. For a bytea
    column of a (composite) primary key str(b'\\x01') is "b'\\\\x01'", which is not bytea input: as soon as the
    table needs more than one chunk, the copy fails (invalid input syntax for type bytea) or compares against a
    wrong value, on every retry: the move cannot complete and the buckets stay fenced (write unavailability)
    until someone aborts.

    EXPECTED: a table with a composite (text, bytea) primary key moves like any other: done, every row once on
    its new owner."""
    import hashlib

    with contextlib.ExitStack() as stack:
        for db in DBS:
            conn = stack.enter_context(psycopg.connect(env["pgc"].dsn(db), autocommit=True))
            conn.execute("DROP TABLE IF EXISTS blobs")
            conn.execute("CREATE TABLE blobs (tenant text NOT NULL, h bytea NOT NULL, v int NOT NULL, "
                         "PRIMARY KEY (tenant, h))")
    sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=0, copy_chunk_rows=100,
                     tables=[{"name": "blobs", "key_column": "tenant"}])
    mover = make_mover(sset, env["ddb"])
    owners = mover.map().owners
    rows = [(f"tenant-{t}", hashlib.sha256(f"{t}/{i}".encode()).digest()[:8], i)
            for t in range(60) for i in range(10)]
    on_a = [r for r in rows if owners[bucket_of(r[0], sset.buckets)] == "atk-a"]
    with psycopg.connect(env["pgc"].dsn("atk_a"), autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO blobs (tenant, h, v) VALUES (%s, %s, %s)", on_a)
    buckets = sorted({bucket_of(r[0], sset.buckets) for r in on_a})[:6]
    want = sorted((t, bytes(h), v) for t, h, v in on_a if bucket_of(t, sset.buckets) in buckets)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-bytea")
    errors: list[str] = []
    result = None
    for _ in range(3):  # a failed step is retried (the workflow's Retry)
        try:
            result = mover.run("m-bytea", wait=False)
            break
        except psycopg.Error as err:
            errors.append(str(err).splitlines()[0])
    assert result is not None and result.phase == "done", f"move stuck in {mover.load('m-bytea').phase}: {errors}"
    with psycopg.connect(env["pgc"].dsn("atk_b"), autocommit=True) as conn:
        got = sorted((t, bytes(h), v) for t, h, v in conn.execute("SELECT tenant, h, v FROM blobs").fetchall())
    assert got == want


@pytest.mark.parametrize("mode", ["block_writes", "online"])
def test_abort_before_the_first_step_rolls_back(env: dict[str, Any], mode: str) -> None:
    """DEFECT: an abort that arrives right after the move was claimed (phase `claimed`: the workflow's first
    step has not run yet, so `prepare` never installed the reflex schema on the shards) rolls back through
    `_rollback`, which unconditionally runs `set_fence` (UPDATE reflex.fence) on the source: on shards that never
    took part in a move the table does not exist, the rollback raises UndefinedTable on every retry, and the
    buckets stay claimed (`copying`) by a move that can neither proceed nor roll back.

    EXPECTED: the abort converges to `rolled_back`; the map releases the buckets; no row moves."""
    sset = shard_set(env["pgc"], DBS, transfer=mode, grace_period_s=0)
    mover = make_mover(sset, env["ddb"])
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-early-abort")
    mover.request_abort("m-early-abort", "wrong buckets")
    errors: list[str] = []
    result = None
    for _ in range(3):
        try:
            result = mover.run("m-early-abort", wait=False)
            break
        except psycopg.Error as err:
            errors.append(str(err).splitlines()[0])
    assert result is not None and result.phase == "rolled_back", (
        f"phase {mover.load('m-early-abort').phase}: {errors}")
    assert mover.map().states == {}
    check_placement(sset, mover, expected)


def test_online_move_does_not_replicate_a_truncate_onto_the_targets_own_buckets(env: dict[str, Any]) -> None:
    """DEFECT: the online move's publications are created `WITH (publish = 'insert, update, delete, truncate')`.
    Row filters do not apply to TRUNCATE: a TRUNCATE of `orders` on the source while a move is replicating
    (or on the target during the grace period, through the reverse stream) is applied to the WHOLE table on
    the other shard, wiping the rows of every bucket that shard owns and that the move has nothing to do
    with. The write fence does not see it either (row triggers only).

    EXPECTED: the target's own buckets (never part of the move) keep every row whatever happens on the
    source."""
    import time

    sset = shard_set(env["pgc"], DBS, transfer="online", grace_period_s=3600)
    mover = make_mover(sset, env["ddb"])
    seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    before_b = _rows(env["pgc"].dsn("atk_b"))
    assert before_b > 0
    mover.start(buckets, "atk-a", "atk-b", move_id="m-trunc")
    for _ in range(40):  # until the initial copy is done and changes stream
        if mover.step("m-trunc").phase == "caught_up":
            break
        time.sleep(0.3)
    with psycopg.connect(env["pgc"].dsn("atk_a"), autocommit=True) as conn:
        conn.execute("TRUNCATE orders")  # the source shard's application empties its own table
    deadline = time.monotonic() + 8
    own_b = before_b
    while time.monotonic() < deadline:
        with psycopg.connect(env["pgc"].dsn("atk_b"), autocommit=True) as conn:
            own = conn.execute("SELECT count(*) FROM orders WHERE NOT (" + mover._filter("tenant", buckets) + ")"
                               ).fetchone()
        own_b = int(own[0])  # type: ignore[index]
        if own_b < before_b:
            break
        time.sleep(0.2)
    assert own_b == before_b, (f"atk-b lost {before_b - own_b} rows of buckets it owns (not moving) to a "
                               "TRUNCATE on atk-a")


def test_online_abort_after_the_reverse_stream_started_keeps_the_source_rows(env: dict[str, Any]) -> None:
    """DEFECT: `_from_verified` (online) starts the reverse replication (target -> source) before it switches
    the map. A crash there (crash point `switch:replication`, or a DynamoDB fault on the map's switch) leaves
    the record `verified` and the map unswitched. An abort then rolls back through the "not switched" branch,
    which tears down only the FORWARD stream: the reverse subscription stays enabled, and the rollback's
    DELETE of the target's copy (with reflex.mover = on) flows through it and deletes the same rows on the
    source. Every row of the moving buckets is lost; the reverse slot is also left behind (WAL retention).

    EXPECTED: the abort converges to `rolled_back` with every row on the source (check_placement), and no
    replication slot or subscription of the move left behind."""
    import time

    from shards.mover import InjectedCrash

    crashed: list[str] = []

    def crash(at: str) -> None:
        if at == "switch:replication" and not crashed:
            crashed.append(at)
            raise InjectedCrash(at)

    sset = shard_set(env["pgc"], DBS, transfer="online", grace_period_s=3600)
    mover = make_mover(sset, env["ddb"], crash=crash)
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-rev")
    with pytest.raises(InjectedCrash):
        for _ in range(60):
            result = mover.step("m-rev")
            if result.wait_s:
                time.sleep(min(result.wait_s, 0.3))
    assert mover.load("m-rev").phase == "verified"
    mover.request_abort("m-rev", "abort after the crash")
    assert mover.run("m-rev", wait=False).phase == "rolled_back"
    time.sleep(8)  # let any stream still running apply what it has
    check_placement(sset, mover, expected)
    with psycopg.connect(env["pgc"].dsn("postgres"), autocommit=True) as conn:
        slots = [r[0] for r in conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()]
    assert slots == [], f"replication slots left behind: {slots}"


def test_online_rollback_after_the_switch_survives_a_crash(env: dict[str, Any], monkeypatch: Any) -> None:
    """DEFECT: an online rollback after the switch fences the target, awaits a marker through the reverse
    stream, TEARS DOWN the reverse stream, and only then opens the source and puts the map back. A crash right
    after the teardown (crash point `rollback:source-current`) leaves the map switched; the retry takes the
    same branch and waits for a marker through the reverse stream that no longer exists: "reverse replication
    did not catch up; retry the rollback" on every retry, forever. The buckets stay fenced on both shards
    (the target `fenced`, the source `moved`): no write to them succeeds again.

    EXPECTED (the issue: a crash at every step boundary converges): the retried rollback reaches
    `rolled_back`, every row on the source. (MARKER_WAIT_S is shortened to 5 s to keep the test fast.)"""
    import time

    from shards import mover as mover_mod
    from shards.mover import InjectedCrash

    monkeypatch.setattr(mover_mod, "MARKER_WAIT_S", 5.0)
    crashed: list[str] = []

    def crash(at: str) -> None:
        if at == "rollback:source-current" and not crashed:
            crashed.append(at)
            raise InjectedCrash(at)

    sset = shard_set(env["pgc"], DBS, transfer="online", grace_period_s=3600)
    mover = make_mover(sset, env["ddb"], crash=crash)
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-rb")
    for _ in range(60):
        result = mover.step("m-rb")
        if result.phase == "switched":
            break
        if result.wait_s:
            time.sleep(min(result.wait_s, 0.3))
    assert mover.load("m-rb").phase == "switched"
    mover.request_abort("m-rb", "roll it back")
    with pytest.raises(InjectedCrash):
        mover.step("m-rb")
    errors: list[str] = []
    phase = mover.load("m-rb").phase
    for _ in range(2):
        try:
            phase = mover.run("m-rb", wait=False).phase
            break
        except RuntimeError as err:
            errors.append(str(err))
    assert phase == "rolled_back", f"stuck in {phase}: {errors}"
    check_placement(sset, mover, expected)


def test_a_null_shard_key_is_not_a_retryable_fence_refusal(env: dict[str, Any]) -> None:
    """DEFECT: the router hashes `str(key)`, so `route(None)` answers the owner of md5("None")'s bucket
    (the same bucket as the string "None"). The fence trigger computes a NULL bucket (the bucket functions
    are STRICT), finds no fence row and refuses with SQLSTATE RX409 "bucket <NULL> is unknown ... refresh
    the shard map and retry" (BEFORE triggers run before the NOT NULL check). `Router.refused(err)` says
    True (refreshed, retry), so the retry loop the router's docstring tells applications to write spins
    forever on a write that can never succeed.

    EXPECTED: a NULL key is a non-retryable error: the router refuses it (ValueError/TypeError) or the
    database answers something other than the fence's RX409 (e.g. the NOT NULL violation), so the documented
    loop ends."""
    from tests.support.shards import router_for

    sset = shard_set(env["pgc"], DBS, transfer="block_writes")
    mover = make_mover(sset, env["ddb"])
    seed(env["pgc"], sset, mover, tenants=4, orders_per_tenant=1)
    from shards import pg

    for s in sset.shards:  # the fence is installed by a move's prepare step
        with psycopg.connect(s.connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
            pg.install(conn, sset, set(mover.map().buckets_of(s.name)))
    router = router_for(env["ddb"])
    dsn = {s.name: s.connection.dsn for s in sset.shards}  # type: ignore[union-attr]
    outcome = "looped 50 times on 'refused, retry'"
    for _ in range(50):  # the loop of shards/router.py's docstring
        try:
            shard = router.route(None)  # type: ignore[arg-type]
            with psycopg.connect(dsn[shard], autocommit=True) as conn:
                conn.execute("INSERT INTO orders (tenant, id, v) VALUES (%s, 1, 1)", (None,))
            outcome = "inserted"
            break
        except psycopg.Error as err:
            if not router.refused(err):
                outcome = f"non-retryable {type(err).__name__}"
                break
        except (ValueError, TypeError) as err:
            outcome = f"router refused: {err}"
            break
    assert outcome.startswith(("non-retryable", "router refused")), outcome


@pytest.mark.parametrize(("payload", "field"), [
    ({"command": "drain", "shard": "atk-a", "mode": "block_writes", "dry_run": True}, "mode"),
    ({"command": "move", "buckets": [1], "target": "atk-b", "move_id": "my-move", "dry_run": True}, "move_id"),
    ({"command": "status", "shard": "no-such-shard"}, "shard"),
], ids=["drain-mode", "move-move_id", "status-unknown-shard"])
def test_console_fields_are_honoured_or_rejected(world: dict[str, Any], payload: dict[str, Any],
                                                 field: str) -> None:
    """DEFECT: validate_command accepts fields a command does not use and the reaction silently ignores them:
    `mode` on drain/rebalance/add_shard (the planned moves take the set's `transfer`, so an operator asking for
    block_writes gets online moves), `move_id` on move (the move gets a generated id, not the operator's),
    `shard` on status/pause/abort/move (not even checked to exist: "no-such-shard" is accepted).

    EXPECTED: a field is either honoured (drain's moves use the requested mode; the move gets the requested id)
    or the command is rejected at validation with the field named."""
    seed(world["pgc"], world["config"].sharding.sets[0], _mover_of(world), tenants=20, orders_per_tenant=2)
    out = _console(world, request_id=f"extra-{field}", **payload)
    if out["status"] == "rejected":
        assert any(e.startswith(field) for e in out["errors"]), out["errors"]
        return
    decision = out["decisions"][0]
    moves = (decision.get("intended") or {}).get("moves", [])
    if field == "mode":
        assert moves and all(mv["mode"] == "block_writes" for mv in moves), (decision["outcome"], moves)
    elif field == "move_id":
        assert [mv["id"] for mv in moves] == ["my-move"], (decision["outcome"], moves)
    else:
        pytest.fail(f"{payload} accepted: {decision['outcome']}")


def test_online_move_of_a_table_whose_key_is_not_in_the_primary_key(env: dict[str, Any]) -> None:
    """DEFECT: the online move publishes each table with a row filter on the shard key column. PostgreSQL
    requires the columns of a row filter of a publication that publishes UPDATE/DELETE to be part of the
    table's replica identity (the primary key by default). For a table whose key column is not in its primary
    key (items(id PRIMARY KEY, tenant, ...): a perfectly common layout that config validation and the
    prepare step accept), every UPDATE and DELETE of the source table fails ("cannot update table ...") for
    as long as the publication exists: the writes of EVERY bucket of the source shard, not only the moving
    ones, are refused for the whole move.

    EXPECTED: an update of a row of a bucket that is not moving succeeds on the source while the move
    replicates (or the move is refused up front, naming the table, before anything is published)."""
    import time

    from shards.mover import MoveRefused

    with contextlib.ExitStack() as stack:
        for db in DBS:
            conn = stack.enter_context(psycopg.connect(env["pgc"].dsn(db), autocommit=True))
            conn.execute("DROP TABLE IF EXISTS items")
            conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, tenant text NOT NULL, v int NOT NULL)")
    sset = shard_set(env["pgc"], DBS, transfer="online", grace_period_s=3600,
                     tables=[{"name": "items", "key_column": "tenant"}])
    mover = make_mover(sset, env["ddb"])
    owners = mover.map().owners
    rows = [(i, f"tenant-{i % 60}", 0) for i in range(600)]
    on_a = [r for r in rows if owners[bucket_of(r[1], sset.buckets)] == "atk-a"]
    with psycopg.connect(env["pgc"].dsn("atk_a"), autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO items (id, tenant, v) VALUES (%s, %s, %s)", on_a)
    buckets = sorted({bucket_of(r[1], sset.buckets) for r in on_a})[:2]
    staying = next(r for r in on_a if bucket_of(r[1], sset.buckets) not in buckets)
    try:
        mover.start(buckets, "atk-a", "atk-b", move_id="m-ri")
        for _ in range(10):
            if mover.step("m-ri").phase in ("replicating", "caught_up"):
                break
            time.sleep(0.2)
    except MoveRefused as refused:  # refusing such a table up front, naming it, is a correct answer
        assert "items" in str(refused)
        return
    with psycopg.connect(env["pgc"].dsn("atk_a"), autocommit=True) as conn:
        try:
            conn.execute("UPDATE items SET v = v + 1 WHERE id = %s", (staying[0],))
        except psycopg.Error as err:
            pytest.fail(f"an update of bucket {bucket_of(staying[1], sset.buckets)} (not moving) on the source "
                        f"failed during the move: {str(err).splitlines()[0]}")


def test_shard_moved_entry_rejected_by_eventbridge_is_not_silently_dropped(world: dict[str, Any]) -> None:
    """DEFECT: `_publish_moved` calls events.put_events and ignores its answer. PutEvents reports a failed
    entry in the RESPONSE (FailedEntryCount / Entries[i].ErrorCode, e.g. InternalFailure or a throttled
    entry), not as an exception: such a ShardMoved is dropped without a trace, the step succeeds, and the
    applications' caches are never told the buckets moved.

    EXPECTED: a switched move's ShardMoved is accepted by EventBridge at least once (a failed entry is retried
    or fails the step so that it is retried)."""
    accepted: list[dict[str, Any]] = []
    calls: list[int] = []

    class Events:
        def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
            shard_moved = [e for e in Entries if e["DetailType"] == world["config"].shard_moved_detail_type]
            if shard_moved:
                calls.append(len(Entries))
            if shard_moved and len(calls) == 1:
                return {"FailedEntryCount": len(Entries),
                        "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "injected"} for _ in Entries]}
            accepted.extend(Entries)
            return {"FailedEntryCount": 0, "Entries": [{"EventId": f"e{len(accepted)}"} for _ in Entries]}

    world["world"].overrides["events"] = Events()
    seed(world["pgc"], world["config"].sharding.sets[0], _mover_of(world), tenants=20, orders_per_tenant=2)
    decision = _console(world, command="move", buckets=[2, 3], target="atk-b", mode="block_writes",
                        request_id="evt-1")["decisions"][0]
    assert decision["outcome"] == "executed", decision
    move_id = decision["intended"]["moves"][0]["id"]
    world["driver"].run_until_idle()
    assert _mover_of(world).load(move_id).phase == "done"
    moved = [e for e in accepted if e["DetailType"] == world["config"].shard_moved_detail_type]
    assert moved, f"put_events called {len(calls)} time(s) with ShardMoved; the entry was rejected and never resent"


def test_online_move_of_a_partitioned_table(env: dict[str, Any]) -> None:
    """DEFECT: the online move (the default `transfer`) publishes each table with a row filter, without
    `publish_via_partition_root`. PostgreSQL refuses a WHERE clause on a partitioned table unless
    publish_via_partition_root = true, so for a partitioned table (orders partitioned by id: a common layout;
    config validation and the prepare step accept it) CREATE PUBLICATION fails on every retry: the move is
    stuck in `prepared` (target fenced `incoming`), and the only way out is an abort.

    EXPECTED: the move of two buckets of a partitioned table completes (publish via the partition root), every
    row once on the shard the map names; or it is refused before anything is claimed, naming the table."""
    from shards.mover import MoveRefused

    mode = "online"
    for db in DBS:
        with psycopg.connect(env["pgc"].dsn(db), autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS orders")
            conn.execute("CREATE TABLE orders (tenant text NOT NULL, id bigint NOT NULL, v int NOT NULL, note text, "
                         "created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant, id)) "
                         "PARTITION BY RANGE (id)")
            conn.execute("CREATE TABLE orders_lo PARTITION OF orders FOR VALUES FROM (MINVALUE) TO (10)")
            conn.execute("CREATE TABLE orders_hi PARTITION OF orders FOR VALUES FROM (10) TO (MAXVALUE)")
    sset = shard_set(env["pgc"], DBS, transfer=mode, grace_period_s=0)
    mover = make_mover(sset, env["ddb"])
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    try:
        mover.start(buckets, "atk-a", "atk-b", move_id=f"m-part-{mode}")
    except MoveRefused as refused:  # refusing up front, naming the table, is a correct answer
        assert "orders" in str(refused)
        return
    import time

    result = None
    errors: list[str] = []
    for _ in range(80):
        try:
            result = mover.step(f"m-part-{mode}")
        except psycopg.Error as err:  # a failed step is retried (the workflow's Retry), a few times
            errors.append(str(err).splitlines()[0])
            if len(errors) >= 3:
                break
            continue
        if result.done:
            break
        if result.wait_s:
            time.sleep(min(result.wait_s, 0.3))
    assert result is not None and result.phase == "done", (
        f"stuck in {mover.load(f'm-part-{mode}').phase}: {errors}")
    check_placement(sset, mover, expected)


def test_shard_added_event_for_a_shard_that_does_not_accept_buckets(pgc: PostgresCluster) -> None:
    """DEFECT: the console `add_shard` of a shard with `accepting: false` is rejected ("shard: ... does not accept
    buckets"), but the ShardAdded EVENT for the same shard is validated by validate_shard_added, which only
    checks that the set and the shard exist. The event goes on as an `add_shard` (a rebalance) and is acted on
    (planned and, if anything is off balance, moves started) in the name of a shard that must take nothing.

    EXPECTED: the same refusal as the console's: rejected at validation, the error naming detail.shard,
    nothing planned or moved."""
    shards = [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in DBS]
    shards[1] |= {"accepting": False}
    with _make_world(pgc, shards=shards) as env:
        seed(pgc, env["config"].sharding.sets[0], _mover_of(env), tenants=20, orders_per_tenant=2)
        event = {"version": "0", "id": "5e1b1c2e-0000-4000-8000-0000000000aa", "detail-type": "ShardAdded",
                 "source": "app.shards", "account": "123456789012", "time": "2026-11-26T09:00:00Z",
                 "region": "us-east-1", "resources": [], "detail": {"set": "orders", "shard": "atk-b"}}
        try:
            out = env["invoke"](event)
        except Exception as err:  # noqa: BLE001 - a rejected event may be raised to the DLQ
            out = {"status": "raised", "errors": [str(err)]}
        console = _console(env, command="add_shard", shard="atk-b", request_id="add-b")
        assert console["status"] == "rejected"  # the console refuses it...
        errors = out.get("errors", [])
        assert out.get("status") in ("rejected", "raised") and any("detail.shard" in e for e in errors), (
            f"...the event is accepted: {out.get('status')} "
            f"{[(d.get('outcome'), (d.get('intended') or {}).get('moves')) for d in out.get('decisions', [])]}")


def test_router_keeps_routing_on_its_cached_map_when_a_refresh_fails() -> None:
    """DEFECT: the router's docstring says the map "is only a hint for speed: the authority is each shard
    database's write fence". Yet once its TTL has passed, `Router.current()` calls the loader on every route and
    lets its error through: a DynamoDB throttle or outage makes EVERY route of EVERY key fail (the application
    cannot write anywhere) although the router holds a map that is still right for all buckets that are not
    moving; `refused()` even drops the cached map (`_map = None`) before reloading.

    EXPECTED: when a refresh fails the router goes on routing from the map it has (the fence refuses whatever
    that map gets wrong), and retries the refresh later."""
    from shards.router import Router
    from shards.shard_map import ShardMap

    now = [0.0]
    calls: list[int] = []

    def load() -> ShardMap:
        calls.append(1)
        if len(calls) > 1:
            raise _throttle("GetItem")
        return ShardMap(set_name="orders", buckets=8, key_type="text", owners=["a"] * 4 + ["b"] * 4, version=3)

    router = Router(load, ttl_s=5.0, clock=lambda: now[0])
    first = router.route("tenant-1")
    now[0] = 60.0  # the TTL passed; DynamoDB now throttles
    try:
        again = router.route("tenant-1")
    except ClientError as err:
        pytest.fail(f"routing failed because the map could not be refreshed: {err}")
    assert again == first


@pytest.mark.parametrize("after", ["done", "rolled_back"])
def test_a_move_completes_or_rolls_back_with_a_foreign_key_between_its_tables(env: dict[str, Any],
                                                                              after: str) -> None:
    """DEFECT: `_delete_rows` deletes the buckets' rows table by table in the configured order, in ordinary
    sessions (only `reflex.mover = on`; foreign-key checks apply, unlike the copy which runs as a replica).
    With the natural configuration (the parent `orders` listed before `order_lines`, which references it with a
    plain FOREIGN KEY), the delete of `orders` rows that `order_lines` still references fails: the source cleanup
    after the grace period fails on every retry (the move never reaches `done`, the source keeps the rows), and
    a rollback's delete of the target copy fails the same way (the move never reaches `rolled_back`).

    EXPECTED: the move reaches `done` (or, aborted after the switch, `rolled_back`), every row once on the shard
    the map names."""
    for db in DBS:
        with psycopg.connect(env["pgc"].dsn(db), autocommit=True) as conn:
            conn.execute("ALTER TABLE order_lines ADD FOREIGN KEY (tenant, order_id) REFERENCES orders (tenant, id)")
    sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=0 if after == "done" else 3600)
    mover = make_mover(sset, env["ddb"])
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-fk")
    errors: list[str] = []
    phase = ""
    for _attempt in range(3):
        try:
            result = mover.run("m-fk", wait=False)
            phase = result.phase
            if phase == "switched" and after == "rolled_back" and not mover.load("m-fk").abort_requested:
                mover.request_abort("m-fk", "roll back")
                phase = mover.run("m-fk", wait=False).phase
            if phase == after:
                break
        except psycopg.Error as err:
            errors.append(str(err).splitlines()[0])
        phase = mover.load("m-fk").phase
    assert phase == after, f"stuck in {phase}: {errors}"
    check_placement(sset, mover, expected)


def test_the_cleanup_of_moved_rows_does_not_fire_the_applications_delete_triggers(env: dict[str, Any]) -> None:
    """DEFECT: the copy applies rows "as logical replication applies them", with session_replication_role =
    replica, precisely so that "an audit or updated_at trigger must not see a moved row as a new one"
    (Mover._apply_as_replica). The cleanup does not: `_delete_rows` deletes the moved rows from the source (and,
    on a rollback, from the target) in an ordinary session, so the application's ON DELETE triggers fire for
    every moved row: an audit trigger records deletions nobody made, a trigger that cascades into a table
    that is not sharded (invoices, counters) destroys or corrupts data.

    EXPECTED: a completed move fires no application DELETE trigger on the source: the audit table stays
    empty."""
    for db in DBS:
        with psycopg.connect(env["pgc"].dsn(db), autocommit=True) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS deleted_log (tenant text, id bigint)")
            conn.execute("TRUNCATE deleted_log")
            conn.execute("CREATE OR REPLACE FUNCTION log_delete() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN INSERT INTO deleted_log VALUES (OLD.tenant, OLD.id); RETURN OLD; END $$")
            conn.execute("DROP TRIGGER IF EXISTS app_audit ON orders")
            conn.execute("CREATE TRIGGER app_audit AFTER DELETE ON orders FOR EACH ROW EXECUTE FUNCTION log_delete()")
    sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=0)
    mover = make_mover(sset, env["ddb"])
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-trg")
    assert mover.run("m-trg", wait=False).phase == "done"
    check_placement(sset, mover, expected)
    with psycopg.connect(env["pgc"].dsn("atk_a"), autocommit=True) as conn:
        logged = int(conn.execute("SELECT count(*) FROM deleted_log").fetchone()[0])  # type: ignore[index]
    assert logged == 0, f"the application's delete trigger fired for {logged} moved rows"


def test_a_large_move_fits_the_shard_map_item_or_is_refused_naming_buckets() -> None:
    """DEFECT: shard_map.py promises the map stays under DynamoDB's 400 KB item limit ("at worst ~60 KB") but only
    counts the run-length owners: every moving bucket adds a JSON state (~90 bytes: state, move id, source,
    target). Sets may have up to 65,536 buckets and a console `move` may name up to 65,536 of them, so claiming
    8,192 buckets writes a ~750 KB map item: PutItem fails with ValidationException ("Item size has exceeded
    the maximum allowed size"), an opaque failure instead of a refusal naming the field.

    EXPECTED: the move is either recorded (states stored compactly) or refused with MoveRefused naming
    `buckets`."""
    from reflex_core.sharding_config import ShardSet
    from shards.mover import MoveRefused

    with mock_aws():
        ddb = state_table()
        sset = ShardSet.model_validate({
            "name": "orders", "buckets": 65536,
            "shards": [{"name": "a", "connection": {"kind": "dsn", "dsn": "postgresql://x/a"}},
                       {"name": "b", "connection": {"kind": "dsn", "dsn": "postgresql://x/b"}}],
            "tables": [{"name": "orders", "key_column": "tenant"}]})
        mover = make_mover(sset, ddb)
        owners = mover.map().owners
        source = owners[0]
        target = "b" if source == "a" else "a"
        buckets = [b for b in range(65536) if owners[b] == source][:8192]
        try:
            record = mover.start(buckets, source, target, move_id="big")
        except MoveRefused as refused:
            assert refused.field == "buckets", refused
            return
        except ClientError as err:
            pytest.fail(f"claiming {len(buckets)} buckets failed in DynamoDB: {err}")
        assert record.phase == "claimed" and len(mover.map().states) == len(buckets)


@pytest.mark.parametrize(("setting", "value", "column"), [
    ("IntervalStyle", "sql_standard", "dur interval NOT NULL DEFAULT '1 day 02:03:04'"),
    ("bytea_output", "escape", "blob bytea NOT NULL DEFAULT '\\x00ff'::bytea"),
], ids=["IntervalStyle", "bytea_output"])
def test_verification_does_not_depend_on_per_database_output_settings(env: dict[str, Any], setting: str,
                                                                       value: str, column: str) -> None:
    """DEFECT: the verification compares md5(ROW(...)::text) on both shards, so the row's TEXT must read the same
    on both; the mover pins TimeZone, DateStyle and extra_float_digits on its sessions for that reason but not
    IntervalStyle or bytea_output. A shard database with another default (ALTER DATABASE ... SET IntervalStyle =
    'sql_standard', or bytea_output = 'escape') prints the same interval/bytea values differently: every
    bucket holding such a row "mismatches" and every move rolls back (the rows are identical).

    EXPECTED: the move of identical rows verifies and completes (done)."""
    for db in DBS:
        with psycopg.connect(env["pgc"].dsn(db), autocommit=True) as conn:
            conn.execute(f"ALTER TABLE orders ADD COLUMN {column}")
    with psycopg.connect(env["pgc"].dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE atk_b SET {setting} = '{value}'")
    try:
        sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=0)
        mover = make_mover(sset, env["ddb"])
        expected = seed(env["pgc"], sset, mover)
        buckets = _buckets_with_rows(mover, sset, "atk-a", 2)
        mover.start(buckets, "atk-a", "atk-b", move_id="m-style")
        result = mover.run("m-style", wait=False)
        record = mover.load("m-style")
        assert result.phase == "done", f"{result.phase}: {record.error} {record.verify}"
        check_placement(sset, mover, expected)
    finally:
        with psycopg.connect(env["pgc"].dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE atk_b RESET {setting}")


def test_two_different_moves_under_one_request_id_both_move(pgc: PostgresCluster) -> None:
    """DEFECT: the pipeline treats a reused request_id with a different body as a different command (its
    idempotency key includes the payload's hash), but the shard reaction names moves after the trigger's
    event id only (`_move_id(base=request_id, index)`). The second command plans a move of OTHER buckets under
    the SAME move id; `_claim` finds that move's record and `Mover.start` returns it as is ("idempotent for a
    given move_id"): the decision says `executed` with the second command's buckets in `intended`, but those
    buckets were never claimed or moved. (Shards with max_concurrent_moves 2, so that the second move is not
    refused for concurrency.)

    EXPECTED: the second, different command moves its own buckets (or is refused naming request_id); it never
    reports executed for a move that did not happen."""
    shards = [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)},
               "max_concurrent_moves": 2} for db in DBS]
    with _make_world(pgc, shards=shards) as world:
        _second_move_under_the_same_request_id(world)


def _second_move_under_the_same_request_id(world: dict[str, Any]) -> None:
    seed(world["pgc"], world["config"].sharding.sets[0], _mover_of(world), tenants=20, orders_per_tenant=2)
    one = _console(world, command="move", buckets=[1], target="atk-b", request_id="ops-script")["decisions"][0]
    assert one["outcome"] == "executed", one
    two = _console(world, command="move", buckets=[2], target="atk-b", request_id="ops-script",
                   reason="second move")
    if two.get("status") == "rejected":
        assert any(e.startswith("request_id") for e in two["errors"]), two["errors"]
        return
    decision = two["decisions"][0]
    claimed = sorted(_mover_of(world).map().states)
    assert decision["outcome"] != "executed" or 2 in claimed, (
        f"second command reported executed with intended {decision['intended']['moves']}, but only buckets "
        f"{claimed} are claimed")
    assert decision["outcome"] == "executed", decision


def test_under_the_kill_switch_the_planner_still_runs(pgc: PostgresCluster) -> None:
    """DEFECT: the issue asks that under the kill switch (as under dry-run) "the planner runs, nothing moves".
    The pipeline checks the kill switch before it calls the reaction's plan(), so with the switch on even the
    console `plan` command (a dry run by definition, it moves nothing) answers `skipped:kill-switch` with no
    plan: the operator who stopped automation cannot even see what a rebalance would do.

    EXPECTED: with the kill switch on, `plan` (and a rebalance) still computes and reports the plan (dry-run
    outcome with intended moves) and nothing moves."""
    shards = [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in DBS]
    # everything on atk-a: a rebalance has work to plan
    with _make_world(pgc, shards=shards, placement=[{"shard": "atk-a", "buckets": ["0-31"]}]) as env:
        seed(pgc, env["config"].sharding.sets[0], _mover_of(env), tenants=20, orders_per_tenant=2)
        env["world"].set_kill_switch("shards", True)
        env["clock"].advance(60)  # past the kill switch's cache
        out = _console(env, command="plan", request_id="plan-under-kill")["decisions"][0]
        mover = _mover_of(env)
        assert mover.map().states == {} and mover.store.moves("orders") == []
        assert out["outcome"] == "dry-run" and (out.get("intended") or {}).get("moves"), (
            f"{out['outcome']}: {out.get('detail')}")


def test_abort_racing_the_final_cleanup_step_loses_the_buckets(env: dict[str, Any]) -> None:
    """DEFECT (the race behind test_abort_after_the_source_delete_but_before_done_loses_the_buckets, without any
    fault): `abort` preempts the set's lock (GuardSettings.preempt_lock), so it runs while a workflow step runs.
    An abort that lands while the step is in `_from_switched`, after it deleted the source rows and settled the
    map but before it saved `done`, is accepted (the record still says `switched`) and bumps the record's version;
    the step's conditional save of `done` then fails (MapConflict) and the next step rolls back a move whose
    source rows are gone: the rollback deletes the target's rows too.

    EXPECTED: every seeded row survives exactly once on the shard the map names."""
    from shards.shard_map import MapConflict

    sset = shard_set(env["pgc"], DBS, transfer="block_writes", grace_period_s=0)
    mover = make_mover(sset, env["ddb"])
    operator = make_mover(sset, env["ddb"])  # the console invocation that preempts the lock
    expected = seed(env["pgc"], sset, mover)
    buckets = _buckets_with_rows(mover, sset, "atk-a", 3)
    mover.start(buckets, "atk-a", "atk-b", move_id="m-race")

    real_save = mover.store.save
    aborted: list[str] = []

    def save(new: Any, change: str) -> Any:
        saved = real_save(new, change)
        if change.endswith(": done") and not aborted:  # the map is settled; the record is not `done` yet
            aborted.append(change)
            operator.request_abort("m-race", "operator: stop it")
        return saved

    mover.store.save = save  # type: ignore[method-assign]
    with contextlib.suppress(MapConflict):
        mover.run("m-race", wait=False)
    assert aborted
    mover.run("m-race", wait=False)
    check_placement(sset, mover, expected)
