"""The mover on real PostgreSQL (a throw-away cluster with wal_level=logical): moves under a concurrent write
workload lose and duplicate nothing, crashes at every step boundary converge, stale routers are refused."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from moto import mock_aws

from shards.buckets import bucket_of, bucket_sql
from shards.mover import InjectedCrash, MoveRefused
from shards.router import FENCE_SQLSTATE
from simulator.pg_cluster import PostgresCluster, postgres_available
from tests.support.shards import (
    Workload,
    check_placement,
    make_mover,
    reset_databases,
    router_for,
    seed,
    shard_set,
    state_table,
)

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")]
DBS = ["shard_a", "shard_b", "shard_c"]


@pytest.fixture(scope="module")
def pgc() -> Iterator[PostgresCluster]:
    with PostgresCluster(DBS) as cluster:
        yield cluster


@pytest.fixture
def env(pgc: PostgresCluster) -> Iterator[dict[str, Any]]:
    reset_databases(pgc, DBS)
    with mock_aws():
        yield {"pgc": pgc, "ddb": state_table()}


def _tenants_in(mover: Any, sset: Any, shard: str, count: int) -> tuple[list[int], list[str]]:
    """`count` buckets of `shard` that hold seeded tenants, and those tenants."""
    owners = mover.map().owners
    tenants = [f"tenant-{t}" for t in range(60)]
    buckets = sorted({bucket_of(t, sset.buckets) for t in tenants if owners[bucket_of(t, sset.buckets)] == shard})
    chosen = buckets[:count]
    return chosen, [t for t in tenants if bucket_of(t, sset.buckets) in chosen]


def test_bucket_function_is_the_same_in_python_and_sql(pgc: PostgresCluster) -> None:
    rnd = random.Random(7)
    texts = [f"tenant-{i}" for i in range(300)] + ["", "é", "日本", "a'b", "x" * 300]
    ints = [rnd.randint(-(2**62), 2**62) for _ in range(300)] + [0, -1, 4095, 4096]
    with psycopg.connect(pgc.dsn("postgres"), autocommit=True) as conn:
        for n in (1, 64, 4096, 65536):
            sql_text = conn.execute(f"SELECT {bucket_sql('k', n, 'text').replace('%', '%%')} FROM unnest(%s::text[]) k",
                                    (texts,)).fetchall()
            assert [r[0] for r in sql_text] == [bucket_of(t, n) for t in texts]
            expr = bucket_sql("k", n, "integer").replace("%", "%%")
            sql_int = conn.execute(f"SELECT {expr} FROM unnest(%s::bigint[]) k", (ints,)).fetchall()
            assert [r[0] for r in sql_int] == [bucket_of(i, n, "integer") for i in ints]


@pytest.mark.parametrize("mode", ["block_writes", "online"])
def test_move_under_concurrent_writes_loses_and_duplicates_nothing(env: dict[str, Any], mode: str) -> None:
    sset = shard_set(env["pgc"], DBS[:2], transfer=mode, grace_period_s=1)
    switched: list[Any] = []
    mover = make_mover(sset, env["ddb"], on_switched=switched.append)
    expected = seed(env["pgc"], sset, mover)
    buckets, tenants = _tenants_in(mover, sset, "shard-a", 4)
    others = [f"tenant-{t}" for t in range(60) if f"tenant-{t}" not in tenants][:6]
    work = Workload(sset, router_for(env["ddb"]), tenants + others, expected, threads=3)

    def move() -> Any:
        m = mover.start(buckets, "shard-a", "shard-b", move_id="m1")
        return mover.run(m.id)

    result = work.run(move)
    assert not work.errors, work.errors
    # the workload really wrote while the buckets moved: it met the fence (router wait or database refusal)
    assert work.waited + work.refused > 0, (work.waited, work.refused)
    assert result.phase == "done"
    assert work.acked > 50
    record = mover.load("m1")
    assert record.fence_ms is not None and record.fence_ms >= 0
    assert record.verify["mismatched_buckets"] == []
    if mode == "online":  # verified on snapshots before the switch's fence, under a brief fence of its own
        assert record.verify["on"] == "snapshots, before the switch" and record.verify_fence_ms is not None
    assert [m.id for m in switched] == ["m1"]
    owners = mover.map().owners
    assert all(owners[b] == "shard-b" for b in buckets)
    assert not mover.map().states
    check_placement(sset, mover, expected)


def test_stale_router_is_refused_by_the_source(env: dict[str, Any]) -> None:
    sset = shard_set(env["pgc"], DBS[:2], transfer="block_writes", grace_period_s=3600)
    stops: list[str] = []

    def stop_when_fenced(at: str) -> None:  # the fenced phases run in one step: stop it right after the fence
        if at == "step:fenced" and not stops:
            stops.append(at)
            raise InjectedCrash(at)

    mover = make_mover(sset, env["ddb"], crash=stop_when_fenced)
    seed(env["pgc"], sset, mover)
    buckets, tenants = _tenants_in(mover, sset, "shard-a", 2)
    mover.start(buckets, "shard-a", "shard-b", move_id="m-stale")
    mover.step("m-stale")  # prepared
    with pytest.raises(InjectedCrash):
        mover.step("m-stale")  # fenced, then "crashes"
    assert mover.load("m-stale").phase == "fenced"
    with psycopg.connect(sset.shards[0].connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
        for stmt in ("INSERT INTO orders (tenant, id, v) VALUES (%s, 999, 1)",
                     "UPDATE orders SET v = 5 WHERE tenant = %s", "DELETE FROM orders WHERE tenant = %s"):
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(stmt, (tenants[0],))
            assert refused.value.sqlstate == FENCE_SQLSTATE
            assert "is fenced" in str(refused.value)
        result = mover.run("m-stale", wait=False)
        assert result.phase == "switched"
        with pytest.raises(psycopg.Error) as moved:
            conn.execute("UPDATE orders SET v = 5 WHERE tenant = %s", (tenants[0],))
        assert moved.value.sqlstate == FENCE_SQLSTATE and "is moved" in str(moved.value)
        # buckets the source still owns are writable
        free = next(f"tenant-{t}" for t in range(60)
                    if mover.map().owners[bucket_of(f"tenant-{t}", sset.buckets)] == "shard-a")
        conn.execute("UPDATE orders SET v = v WHERE tenant = %s", (free,))


CRASH_POINTS_BLOCK = ["start:claimed", "prepare:done", "fence:db", "copy:chunk", "switch:map", "cleanup:started",
                      "cleanup:deleted",
                      "step:prepared", "step:fenced", "step:copied", "step:verified", "step:switched"]
CRASH_POINTS_ONLINE = ["replicate:source", "step:replicating", "verify:fenced", "verify:pinned", "step:caught_up",
                       "switch:replication", "switch:map", "cleanup:started", "cleanup:deleted"]


@pytest.mark.parametrize(("mode", "point"), [("block_writes", p) for p in CRASH_POINTS_BLOCK]
                         + [("online", p) for p in CRASH_POINTS_ONLINE])
def test_a_crash_at_every_step_boundary_converges(env: dict[str, Any], mode: str, point: str) -> None:
    sset = shard_set(env["pgc"], DBS[:2], transfer=mode)
    fired: list[str] = []

    def crash(at: str) -> None:
        if at == point and not fired:
            fired.append(at)
            raise InjectedCrash(at)

    mover = make_mover(sset, env["ddb"], crash=crash)
    expected = seed(env["pgc"], sset, mover, tenants=40, orders_per_tenant=30)
    buckets, _ = _tenants_in(mover, sset, "shard-a", 3)
    for _attempt in range(3):
        try:
            mover.start(buckets, "shard-a", "shard-b", move_id="m-crash")
            result = mover.run("m-crash")
            break
        except InjectedCrash:
            continue
    assert fired == [point]
    assert result.phase == "done"
    # duplicate delivery of a finished step changes nothing
    assert mover.step("m-crash").phase == "done"
    mover.start(buckets, "shard-a", "shard-b", move_id="m-crash")
    check_placement(sset, mover, expected)


def test_copy_chunks_grow_to_the_target_duration_and_resume_after_a_crash(env: dict[str, Any]) -> None:
    """`copy_chunk_target_s`: after the first chunk of `copy_chunk_rows`, each chunk covers what the last one's pace
    copies in the target time (capped at 100 x): far fewer chunks than fixed ones, and a crash after a grown chunk
    resumes from its committed cursor with nothing lost or duplicated."""
    sset = shard_set(env["pgc"], DBS[:2], transfer="block_writes", copy_chunk_rows=100, copy_chunk_target_s=30.0)
    chunks: list[str] = []

    def crash(at: str) -> None:
        if at == "copy:chunk":
            chunks.append(at)
            if len(chunks) == 3:
                raise InjectedCrash(at)

    mover = make_mover(sset, env["ddb"], crash=crash)
    expected = seed(env["pgc"], sset, mover, tenants=40, orders_per_tenant=150)
    buckets, _ = _tenants_in(mover, sset, "shard-a", 20)
    with psycopg.connect(env["pgc"].dsn("shard_a"), autocommit=True) as conn:
        fixed = sum(conn.execute(f"SELECT count(*) FROM {t.name}").fetchone()[0] // 100 + 1 for t in sset.tables)
    mover.start(buckets, "shard-a", "shard-b", move_id="m-grown")
    with pytest.raises(InjectedCrash):
        mover.run("m-grown")
    assert mover.run("m-grown").phase == "done"
    assert mover.load("m-grown").verify["mismatched_buckets"] == []
    check_placement(sset, mover, expected)
    assert fixed >= 20 and len(chunks) < fixed / 2, (len(chunks), fixed)


def test_each_copy_chunk_ends_copy_chunk_rows_table_rows_after_the_last_in_primary_key_order(
        env: dict[str, Any]) -> None:
    """A chunk's bound is the `copy_chunk_rows`-th row of the table after the cursor in primary-key order (an index
    walk). With `ORDER BY "id"` over the output column `"id"::text`, the walk sorted by the key's text instead
    ('10' < '9'): chunks of arbitrary sizes, and a sort of every row after the cursor for each chunk."""
    sset = shard_set(env["pgc"], DBS[:2], transfer="block_writes", copy_chunk_rows=100)
    src_dsn, dst_dsn = env["pgc"].dsn("shard_a"), env["pgc"].dsn("shard_b")
    cursors: list[list[str]] = []

    def crash(at: str) -> None:
        if at == "copy:chunk":
            with psycopg.connect(dst_dsn, autocommit=True) as conn:
                row = conn.execute("SELECT cursor, done FROM reflex.copy_progress "
                                   "WHERE move_id = 'm-order' AND tbl = 'orders'").fetchone()
            if row is not None and not row[1] and (not cursors or cursors[-1] != row[0]):
                cursors.append(row[0])

    mover = make_mover(sset, env["ddb"], crash=crash)
    expected = seed(env["pgc"], sset, mover, tenants=40, orders_per_tenant=30)  # ids 0..29: text order differs
    buckets, _ = _tenants_in(mover, sset, "shard-a", 3)
    with psycopg.connect(src_dsn, autocommit=True) as conn:
        in_order = [[t, str(i)] for t, i in conn.execute("SELECT tenant, id FROM orders ORDER BY tenant, id")]
    mover.start(buckets, "shard-a", "shard-b", move_id="m-order")
    assert mover.run("m-order").phase == "done"
    check_placement(sset, mover, expected)
    assert len(in_order) > 300
    assert cursors == [in_order[k * 100 - 1] for k in range(1, len(cursors) + 1)]
    assert len(cursors) == (len(in_order) - 1) // 100


def test_the_copy_ends_at_the_tables_last_key_while_other_buckets_keep_appending(env: dict[str, Any]) -> None:
    """Writers of buckets that are not moving append rows after the table's last key faster than the chunks
    walk (120 rows per 100-row chunk): the copy still ends, at the last key it saw when it started (the moving
    buckets are fenced, so none of their rows can be after it). Before, each chunk's bound was the 100th row
    after the cursor, wherever the table ended: the walk chased the tail forever."""
    sset = shard_set(env["pgc"], DBS[:2], transfer="block_writes", copy_chunk_rows=100)
    chunks: list[int] = []
    appended = iter(range(10**6))

    def crash(at: str) -> None:
        if at != "copy:chunk":
            return
        chunks.append(1)
        if len(chunks) > 200:
            raise AssertionError("the copy is chasing the table's tail")
        with psycopg.connect(env["pgc"].dsn("shard_a"), autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO orders (tenant, id, v) VALUES (%s, %s, 1)",
                            [(tail, next(appended)) for _ in range(120)])

    mover = make_mover(sset, env["ddb"], crash=crash)
    expected = seed(env["pgc"], sset, mover, tenants=40, orders_per_tenant=30)
    buckets, _ = _tenants_in(mover, sset, "shard-a", 3)
    owners = mover.map().owners
    tail = next(f"zz-{i}" for i in range(1000)
                if owners[bucket_of(f"zz-{i}", sset.buckets)] == "shard-a"
                and bucket_of(f"zz-{i}", sset.buckets) not in buckets)
    mover.start(buckets, "shard-a", "shard-b", move_id="m-tail")
    assert mover.run("m-tail").phase == "done"
    assert len(chunks) < 40, len(chunks)
    with psycopg.connect(env["pgc"].dsn("shard_a"), autocommit=True) as conn:
        added = conn.execute("SELECT id, v FROM orders WHERE tenant = %s", (tail,)).fetchall()
    expected.update({(tail, i): v for i, v in added})
    check_placement(sset, mover, expected)


@pytest.mark.parametrize("mode", ["block_writes", "online"])
def test_abort_after_the_switch_returns_everything_to_the_source(env: dict[str, Any], mode: str) -> None:
    sset = shard_set(env["pgc"], DBS[:2], transfer=mode, grace_period_s=3600)
    mover = make_mover(sset, env["ddb"])
    expected = seed(env["pgc"], sset, mover)
    buckets, tenants = _tenants_in(mover, sset, "shard-a", 2)
    mover.start(buckets, "shard-a", "shard-b", move_id="m-back")
    assert mover.run("m-back", wait=False).phase == "switched"
    # the application writes to the new owner during the grace period
    with psycopg.connect(sset.shards[1].connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
        conn.execute("UPDATE orders SET v = 4242 WHERE tenant = %s AND id = 3", (tenants[0],))
        conn.execute("INSERT INTO orders (tenant, id, v) VALUES (%s, 777, 7)", (tenants[0],))
        conn.execute("DELETE FROM orders WHERE tenant = %s AND id = 4", (tenants[0],))
    expected[(tenants[0], 3)] = 4242
    expected[(tenants[0], 777)] = 7
    del expected[(tenants[0], 4)]
    mover.request_abort("m-back", "operator abort")
    assert mover.run("m-back").phase == "rolled_back"
    assert all(mover.map().owners[b] == "shard-a" for b in buckets)
    check_placement(sset, mover, expected)
    with psycopg.connect(sset.shards[1].connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("INSERT INTO orders (tenant, id, v) VALUES (%s, 778, 7)", (tenants[0],))
        assert refused.value.sqlstate == FENCE_SQLSTATE


def test_a_verification_mismatch_rolls_back(env: dict[str, Any]) -> None:
    sset = shard_set(env["pgc"], DBS[:2], transfer="block_writes")

    moving: list[str] = []

    def tamper(at: str) -> None:
        if at == "step:copied":
            with psycopg.connect(sset.shards[1].connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
                conn.execute("SET reflex.mover = 'on'")
                assert conn.execute("UPDATE orders SET v = v + 1 WHERE tenant = %s AND id = 0",
                                    (moving[0],)).rowcount == 1

    mover = make_mover(sset, env["ddb"], crash=tamper)
    expected = seed(env["pgc"], sset, mover)
    buckets, tenants = _tenants_in(mover, sset, "shard-a", 2)
    moving.extend(tenants)
    mover.start(buckets, "shard-a", "shard-b", move_id="m-bad")
    assert mover.run("m-bad").phase == "rolled_back"
    record = mover.load("m-bad")
    assert "verification mismatch" in record.error and record.verify["mismatched_buckets"]
    assert all(mover.map().owners[b] == "shard-a" for b in buckets)
    check_placement(sset, mover, expected)


def test_an_online_mismatch_found_on_snapshots_rolls_back_before_any_switch(env: dict[str, Any]) -> None:
    sset = shard_set(env["pgc"], DBS[:2], transfer="online")
    moving: list[str] = []
    switched: list[Any] = []

    def tamper(at: str) -> None:  # the target's copy goes wrong while the stream runs
        if at == "step:caught_up" and not moving[1:]:
            moving.append("tampered")
            with psycopg.connect(sset.shards[1].connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
                conn.execute("SET reflex.mover = 'on'")
                assert conn.execute("DELETE FROM orders WHERE tenant = %s AND id = 1", (moving[0],)).rowcount == 1

    mover = make_mover(sset, env["ddb"], crash=tamper, on_switched=switched.append)
    expected = seed(env["pgc"], sset, mover)
    buckets, tenants = _tenants_in(mover, sset, "shard-a", 2)
    moving.append(tenants[0])
    mover.start(buckets, "shard-a", "shard-b", move_id="m-snap")
    assert mover.run("m-snap").phase == "rolled_back"
    record = mover.load("m-snap")
    assert "verification mismatch" in record.error and record.verify["on"] == "snapshots, before the switch"
    assert switched == [] and record.switched_at is None  # never switched: the application never saw the bad copy
    assert all(mover.map().owners[b] == "shard-a" for b in buckets)
    check_placement(sset, mover, expected)
    with psycopg.connect(sset.shards[0].connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
        conn.execute("UPDATE orders SET v = v WHERE tenant = %s", (tenants[0],))  # the source is writable again


def test_bad_moves_are_refused_naming_the_field(env: dict[str, Any]) -> None:
    sset = shard_set(env["pgc"], DBS, transfer="block_writes")
    mover = make_mover(sset, env["ddb"])
    seed(env["pgc"], sset, mover, tenants=5, orders_per_tenant=1)
    a_buckets = mover.map().buckets_of("shard-a")
    b_buckets = mover.map().buckets_of("shard-b")
    cases = [
        (dict(buckets=a_buckets[:1], source="nope", target="shard-b"), "source"),
        (dict(buckets=a_buckets[:1], source="shard-a", target="nope"), "target"),
        (dict(buckets=a_buckets[:1], source="shard-a", target="shard-a"), "target"),
        (dict(buckets=[], source="shard-a", target="shard-b"), "buckets"),
        (dict(buckets=[64], source="shard-a", target="shard-b"), "buckets"),
        (dict(buckets=b_buckets[:1], source="shard-a", target="shard-c"), "buckets"),
    ]
    for kwargs, field in cases:
        with pytest.raises(MoveRefused) as refused:
            mover.start(**kwargs)  # type: ignore[arg-type]
        assert refused.value.field == field
    mover.start(a_buckets[:1], "shard-a", "shard-b", move_id="first")
    with pytest.raises(MoveRefused) as busy:
        mover.start(a_buckets[:1], "shard-a", "shard-c")
    assert busy.value.field == "buckets" and "already moving" in str(busy.value)
    with pytest.raises(MoveRefused) as capped:
        mover.start(a_buckets[1:2], "shard-a", "shard-c")
    assert capped.value.field == "source" and "max_concurrent_moves" in str(capped.value)
    assert set(mover.map().states) == {a_buckets[0]}
