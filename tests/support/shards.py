"""Shard-set test support: a throw-away PostgreSQL cluster with shard databases, a moto state table, a mover,
and a concurrent write workload that remembers every acknowledged write."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import boto3
import psycopg

from reflex_core.sharding_config import ShardSet
from shards.mover import Mover
from shards.router import Router
from shards.shard_map import ShardMapStore
from simulator.shard_workload import Workload, all_rows, check_placement

__all__ = ["SCHEMA", "TABLE", "Workload", "all_rows", "check_placement", "make_mover", "reset_databases",
           "router_for", "seed", "shard_set", "shards_invoke", "state_table"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (tenant text NOT NULL, id bigint NOT NULL, v int NOT NULL,
    note text, created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant, id));
CREATE TABLE IF NOT EXISTS order_lines (tenant text NOT NULL, order_id bigint NOT NULL, line int NOT NULL,
    qty numeric(10, 2) NOT NULL, PRIMARY KEY (tenant, order_id, line));
"""
TABLE = "reflex-test-state"


def shard_set(pgc: Any, dbs: list[str], **overrides: Any) -> ShardSet:
    data = {
        "name": "orders", "buckets": 64,
        "shards": [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in dbs],
        "tables": [{"name": "orders", "key_column": "tenant"}, {"name": "order_lines", "key_column": "tenant"}],
        "grace_period_s": 0, "copy_chunk_rows": 200, "copy_chunk_target_s": 0, "delete_batch_rows": 150,
    } | overrides
    return ShardSet.model_validate(data)


def state_table(region: str = "us-east-1") -> Any:
    ddb = boto3.client("dynamodb", region_name=region)
    ddb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     BillingMode="PAY_PER_REQUEST")
    return ddb


def reset_databases(pgc: Any, dbs: list[str]) -> None:
    """Fresh tables and no leftovers (subscriptions, slots, publications, reflex schema) in every database."""
    for db in dbs:
        with psycopg.connect(pgc.dsn(db), autocommit=True) as conn:
            for (sub,) in conn.execute("SELECT subname FROM pg_subscription WHERE subdbid = "
                                       "(SELECT oid FROM pg_database WHERE datname = current_database())").fetchall():
                conn.execute(f"ALTER SUBSCRIPTION {sub} DISABLE")
                conn.execute(f"ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)")
                conn.execute(f"DROP SUBSCRIPTION {sub}")
    with psycopg.connect(pgc.dsn("postgres"), autocommit=True) as conn:
        for _ in range(50):
            rows = conn.execute("SELECT slot_name, active_pid FROM pg_replication_slots").fetchall()
            if not rows:
                break
            for slot, pid in rows:
                if pid:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                with contextlib.suppress(psycopg.Error):
                    conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            time.sleep(0.1)
    for db in dbs:
        with psycopg.connect(pgc.dsn(db), autocommit=True) as conn:
            for (pub,) in conn.execute("SELECT pubname FROM pg_publication").fetchall():
                conn.execute(f"DROP PUBLICATION {pub}")
            conn.execute("DROP SCHEMA IF EXISTS reflex CASCADE")
            conn.execute("DROP TABLE IF EXISTS orders, order_lines")
            conn.execute(SCHEMA)


def seed(pgc: Any, sset: ShardSet, mover: Mover, tenants: int = 60,
         orders_per_tenant: int = 20) -> dict[tuple[str, int], int]:
    """Rows for `tenants` tenants on the shard the map places them; returns {(tenant, id): v}."""
    from shards.buckets import bucket_of

    m = mover.map()
    expected: dict[tuple[str, int], int] = {}
    by_shard: dict[str, list[tuple[str, int, int]]] = {}
    for t in range(tenants):
        tenant = f"tenant-{t}"
        shard = m.owners[bucket_of(tenant, sset.buckets)]
        for i in range(orders_per_tenant):
            by_shard.setdefault(shard, []).append((tenant, i, i))
            expected[(tenant, i)] = i
    for shard, rows in by_shard.items():
        s = sset.shard(shard)
        assert s is not None
        dsn = s.connection.dsn  # type: ignore[union-attr]
        with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO orders (tenant, id, v) VALUES (%s, %s, %s)", rows)
            cur.executemany("INSERT INTO order_lines (tenant, order_id, line, qty) VALUES (%s, %s, 1, 1.5)",
                            [(t, i) for t, i, _ in rows])
    return expected


def make_mover(sset: ShardSet, ddb: Any, **kwargs: Any) -> Mover:
    from shards.pg import connector

    return Mover(sset, ShardMapStore(ddb, TABLE), connector(), **kwargs)


def router_for(ddb: Any, set_name: str = "orders") -> Router:
    return Router.from_dynamodb(TABLE, set_name, client=ddb, ttl_s=0.05, retry_after_s=0.01)


def shards_invoke(world: Any, clock: Any) -> Callable[[Any], Any]:
    """Call the real shards handler in `world` (its runtime: the shards function's view of the config)."""
    from shards.handler import lambda_handler
    from tests.conftest import FakeLambdaContext

    def invoke(event: Any) -> Any:
        world.activate("shards", clock)
        return lambda_handler(event, FakeLambdaContext())

    return invoke
