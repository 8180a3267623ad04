"""Adversarial tests of the shard rebalancing reaction (functions/shards): each test asserts the CORRECT
behaviour and fails while the defect it describes is present. See ATTACK_SHARDS.md."""

from __future__ import annotations

from collections.abc import Iterator
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
    try:
        mover.request_abort("m-late-abort", "operator changed their mind")
    except Exception:  # noqa: BLE001 - refusing the abort here is a correct answer
        pass
    mover.run("m-late-abort", wait=False)
    check_placement(sset, mover, expected)
