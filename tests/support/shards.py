"""Shard-set test support: a throw-away PostgreSQL cluster with shard databases, a moto state table, a mover,
and a concurrent write workload that remembers every acknowledged write."""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import psycopg

from reflex_core.sharding_config import ShardSet
from shards.mover import Mover
from shards.router import BucketMoved, Router
from shards.shard_map import ShardMapStore

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
        "grace_period_s": 0, "copy_chunk_rows": 200, "delete_batch_rows": 150,
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


def all_rows(sset: ShardSet) -> dict[str, list[tuple[str, int, int]]]:
    out: dict[str, list[tuple[str, int, int]]] = {}
    for s in sset.shards:
        with psycopg.connect(s.connection.dsn, autocommit=True) as conn:  # type: ignore[union-attr]
            out[s.name] = [(str(r[0]), int(r[1]), int(r[2])) for r in
                           conn.execute("SELECT tenant, id, v FROM orders").fetchall()]
    return out


def check_placement(sset: ShardSet, mover: Mover, expected: dict[tuple[str, int], int]) -> None:
    """Every expected row exactly once, with its value, on the shard the map names; nothing else anywhere."""
    from shards.buckets import bucket_of

    m = mover.map()
    seen: dict[tuple[str, int], list[str]] = {}
    values: dict[tuple[str, int], int] = {}
    for shard, rows in all_rows(sset).items():
        for tenant, i, v in rows:
            seen.setdefault((tenant, i), []).append(shard)
            values[(tenant, i)] = v
    dupes = {k: v for k, v in seen.items() if len(v) > 1}
    assert not dupes, f"duplicated rows: {list(dupes.items())[:5]}"
    lost = sorted(set(expected) - set(seen))
    assert not lost, f"lost rows: {lost[:10]} ({len(lost)})"
    extra = sorted(set(seen) - set(expected))
    assert not extra, f"rows that should not exist: {extra[:10]} ({len(extra)})"
    wrong = {k: (values[k], v) for k, v in expected.items() if values[k] != v}
    assert not wrong, f"rows with a lost update (found, acknowledged): {list(wrong.items())[:10]}"
    misplaced = [k for k, shards in seen.items() if shards[0] != m.owners[bucket_of(k[0], sset.buckets)]]
    assert not misplaced, f"rows on a shard the map does not name: {misplaced[:10]}"


@dataclass
class Workload:
    """Threads inserting, updating and deleting rows of some tenants through the router; the model holds
    every acknowledged write (a write is acknowledged when its commit returned)."""

    sset: ShardSet
    router: Router
    tenants: list[str]
    expected: dict[tuple[str, int], int]
    threads: int = 3
    stop: threading.Event = field(default_factory=threading.Event)
    acked: int = 0
    refused: int = 0
    waited: int = 0
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _worker(self, n: int) -> None:
        rnd = random.Random(n)
        conns: dict[str, psycopg.Connection[Any]] = {}
        mine = [t for i, t in enumerate(self.tenants) if i % self.threads == n]
        next_id = 100_000 * (n + 1)
        try:
            while not self.stop.is_set():
                tenant = rnd.choice(mine)
                with self._lock:
                    ids = [i for (t, i) in self.expected if t == tenant]
                op = rnd.choice(["insert", "update", "update", "delete"]) if ids else "insert"
                if op == "insert":
                    key, value = (tenant, next_id), rnd.randint(0, 10**6)
                    next_id += 1
                    stmt, params = ("INSERT INTO orders (tenant, id, v) VALUES (%s, %s, %s)",
                                    (tenant, key[1], value))
                elif op == "update":
                    key, value = (tenant, rnd.choice(ids)), rnd.randint(0, 10**6)
                    stmt, params = "UPDATE orders SET v = %s WHERE tenant = %s AND id = %s", (value, tenant, key[1])
                else:
                    key, value = (tenant, rnd.choice(ids)), -1
                    stmt, params = "DELETE FROM orders WHERE tenant = %s AND id = %s", (tenant, key[1])
                for _attempt in range(2000):
                    try:
                        shard = self.router.route(tenant)
                    except BucketMoved as moved:
                        with self._lock:
                            self.waited += 1
                        time.sleep(moved.retry_after_s)
                        continue
                    conn = conns.get(shard)
                    if conn is None:
                        s = self.sset.shard(shard)
                        assert s is not None
                        conn = conns[shard] = psycopg.connect(s.connection.dsn, autocommit=True)  # type: ignore[union-attr]
                    try:
                        cur = conn.execute(stmt, params)
                    except psycopg.Error as err:
                        if self.router.refused(err):
                            with self._lock:
                                self.refused += 1
                            continue
                        raise
                    with self._lock:
                        if op == "delete":
                            self.expected.pop(key, None)
                        elif cur.rowcount == 1:
                            self.expected[key] = value
                        self.acked += 1
                    break
                time.sleep(0.001)
        except Exception as err:  # noqa: BLE001 - reported by the test
            self.errors.append(f"{type(err).__name__}: {err}")
        finally:
            for c in conns.values():
                c.close()

    def run(self, body: Callable[[], Any]) -> Any:
        workers = [threading.Thread(target=self._worker, args=(n,), daemon=True) for n in range(self.threads)]
        for w in workers:
            w.start()
        try:
            time.sleep(0.2)
            return body()
        finally:
            time.sleep(0.2)
            self.stop.set()
            for w in workers:
                w.join(timeout=30)


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
