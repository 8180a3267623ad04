"""A live write workload on a shard set, and the check that no acknowledged write was lost or duplicated
(the shard scenario, the benchmarks and the tests share them)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from reflex_core.sharding_config import ShardSet
from shards.mover import Mover
from shards.router import BucketMoved, Router


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
                params: tuple[Any, ...]
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
