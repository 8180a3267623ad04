"""Shard mover on real PostgreSQL: copy throughput against a psql COPY pipe, write unavailability per bucket
(the fence) in both transfer modes, and a live workload's latency on the source during an online move.

One throw-away cluster (`simulator/pg_cluster.py`: initdb, wal_level=logical, free loopback port, removed on
exit) holds two shard databases; the shard map lives in moto's DynamoDB (in-process) like in the tests. The
set has one table, `orders (tenant text, id bigint, v int, note text, created timestamptz, PK (tenant, id))`,
64 buckets; one tenant of `--large` rows (default 1,000,000) alone in its bucket, one tenant of `--small`
rows (10,000) alone in another, and filler tenants in other buckets on both shards. Each measured move takes
its bucket from where it is to the other shard (so the buckets go back and forth), runs to `done` (grace 0:
the source rows are deleted), and the tables are vacuumed between moves (not timed).

1. Copy throughput (`block_writes`): the mover's copy phase (`Mover._copy`, timed around the call: chunk
   bounds, binary COPY streamed source -> target through the mover's process, the progress row) against
   `psql -c "COPY (SELECT <same columns> FROM orders WHERE <same bucket filter>) TO STDOUT" | psql -c "COPY
   ... FROM STDIN"` (text format) on the same rows, alternated in the same run, into two destinations: (A) the
   target shard's own `orders`, the table the mover writes into, in the same state and with the session set up
   as the mover's chunk (`session_replication_role = replica`: no trigger fires), the rows deleted again
   afterwards; (B) an empty `orders_baseline` of the same definition without trigger (the only baseline until
   2026-12-02, session 7). MB/s = the rows' bytes in the table (sum(pg_column_size(row))), the same for all.
   Target: ours >= 0.8 x pipe A (like for like); the ratio to pipe B is printed next to it. The mover
   process's own CPU during its copy phase (time.process_time) is printed too: it shares the cores with both
   database backends.
2. Fence (write unavailability of the moving bucket, `MoveRecord.fence_ms`: from just before the source's
   fence to the switch) per mode and size, p50/p99/max over the runs (nearest rank: with 3-10 runs the p99
   is the max). Target: online p99 < 1 s at both sizes; block_writes grows with the size (reported).
3. Latency of a live workload on the source (threads reading and updating rows of tenants the move does not
   touch, directly on the source database, paced) while idle and during each online move of the large
   bucket (move start to done), p50/p99 of reads and writes.

    .venv/bin/python benchmarks/shard_mover.py            # 1,000,000 / 10,000 rows; ~10 minutes on 2 busy cores
    .venv/bin/python benchmarks/shard_mover.py --quick    # 100,000 / 10,000 rows, fewer runs
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "functions"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import psycopg  # noqa: E402

from reflex_core.sharding_config import ShardSet  # noqa: E402
from shards.buckets import bucket_filter_sql, bucket_of  # noqa: E402
from shards.mover import Mover  # noqa: E402
from shards.pg import connector  # noqa: E402
from shards.shard_map import ShardMapStore  # noqa: E402
from simulator.pg_cluster import PostgresCluster  # noqa: E402

COPY_TARGET = 0.8
FENCE_TARGET_MS = 1000.0
BUCKETS = 64
TABLE = "reflex-bench-state"
DBS = ["shard_a", "shard_b"]
SHARD_OF_DB = {"shard_a": "shard-a", "shard_b": "shard-b"}
DB_OF_SHARD = {v: k for k, v in SHARD_OF_DB.items()}
SCHEMA = """
CREATE TABLE orders (tenant text NOT NULL, id bigint NOT NULL, v int NOT NULL, note text,
    created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant, id));
CREATE TABLE orders_baseline (LIKE orders INCLUDING ALL);
"""
COLS = "tenant, id, v, note, created"


# --------------------------------------------------------------------------- the mover, timed


class TimedMover(Mover):
    """The real mover; the copy and verification phases are timed around the calls."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.copy_s: list[float] = []
        self.copy_cpu_s: list[float] = []
        self.verify_s: list[float] = []

    def _copy(self, src: Any, dst: Any, buckets: list[int], progress_id: str) -> dict[str, int]:
        t, cpu = time.perf_counter(), time.process_time()
        try:
            return super()._copy(src, dst, buckets, progress_id)
        finally:
            self.copy_s.append(time.perf_counter() - t)
            self.copy_cpu_s.append(time.process_time() - cpu)

    def _verify(self, src: Any, dst: Any, buckets: list[int]) -> dict[str, Any]:
        t = time.perf_counter()
        try:
            return super()._verify(src, dst, buckets)
        finally:
            self.verify_s.append(time.perf_counter() - t)


@dataclass
class Move:
    mode: str
    size: int
    source: str
    target: str
    fence_ms: float
    wall_s: float
    copy_s: float | None
    copy_cpu_s: float | None  # the mover process's own CPU during its copy phase
    verify_s: float | None
    rows: int
    verify_fence_ms: float | None = None  # online: the brief fence under which the verification's snapshots were taken


# --------------------------------------------------------------------------- helpers


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def tenant_in(bucket: int, prefix: str) -> str:
    i = 0
    while True:
        name = f"{prefix}-{i}"
        if bucket_of(name, BUCKETS) == bucket:
            return name
        i += 1


def conn(pgc: PostgresCluster, db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(pgc.dsn(db), autocommit=True)


def vacuum(pgc: PostgresCluster) -> None:
    for db in DBS:
        with conn(pgc, db) as c:
            c.execute("VACUUM (ANALYZE) orders")
            c.execute("TRUNCATE orders_baseline")


def psql_pipe(pgc: PostgresCluster, src_db: str, dst_db: str, select: str, *, into: str = "orders_baseline",
              where: str = "true") -> tuple[float, int]:
    """The baseline: psql COPY TO STDOUT piped into psql COPY FROM STDIN (text format). (seconds, rows).

    `into="orders_baseline"`: an empty table of the same definition, no trigger (the only baseline until
    2026-12-02, session 7).
    `into="orders"`: like for like, the table the mover writes into, in the same state (the target shard's
    filler rows, its fence trigger, the space its last delete left), in a session set up as the mover's chunk is
    (`session_replication_role = replica`, `reflex.mover = on`: no trigger fires). The rows are deleted again
    afterwards (untimed), so the mover's next move meets the same table."""
    base = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(pgc.port), "-U", "postgres"]
    out_cmd = [*base, "-d", src_db, "-c", f"COPY ({select}) TO STDOUT"]
    in_cmd = [*base, "-d", dst_db, "-c", f"COPY {into} ({COLS}) FROM STDIN"]
    env = dict(os.environ)
    if into == "orders":
        env["PGOPTIONS"] = "-c session_replication_role=replica -c reflex.mover=on"
        with conn(pgc, dst_db) as c:
            there = int(c.execute(f"SELECT count(*) FROM orders WHERE {where}").fetchone()[0])  # type: ignore[index]
            if there:
                raise RuntimeError(f"{dst_db} already holds {there} rows of the bucket")
    t = time.perf_counter()
    producer = subprocess.Popen(out_cmd, stdout=subprocess.PIPE)
    consumer = subprocess.run(in_cmd, stdin=producer.stdout, capture_output=True, text=True, timeout=600,
                              check=False, env=env)
    assert producer.stdout is not None
    producer.stdout.close()
    producer.wait(timeout=60)
    elapsed = time.perf_counter() - t
    if producer.returncode or consumer.returncode:
        raise RuntimeError(f"psql pipe failed: {producer.returncode} {consumer.returncode} {consumer.stderr}")
    with conn(pgc, dst_db) as c:
        if into == "orders":
            rows = int(c.execute(f"SELECT count(*) FROM orders WHERE {where}").fetchone()[0])  # type: ignore[index]
            c.execute("SET reflex.mover = 'on'")  # past the fence that refuses writes to a bucket moved away
            c.execute(f"DELETE FROM orders WHERE {where}")
        else:
            rows = int(c.execute("SELECT count(*) FROM orders_baseline").fetchone()[0])  # type: ignore[index]
    return elapsed, rows


# --------------------------------------------------------------------------- the live workload (probe)


@dataclass
class Probe:
    """Paced reads and updates of rows of tenants no move touches, on the shard `self.shard` names."""

    pgc: PostgresCluster
    tenants: dict[str, list[str]]  # db -> tenants there (each with ids 0..rows-1)
    rows: int
    threads: int = 2
    pause_s: float = 0.002
    db: str = "shard_a"
    samples: list[tuple[float, str, str, float]] = field(default_factory=list)  # (t, db, op, ms)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _work(self, n: int) -> None:
        rnd = random.Random(n)
        conns = {db: conn(self.pgc, db) for db in self.tenants}
        try:
            while not self.stop.is_set():
                db = self.db
                tenant, i = rnd.choice(self.tenants[db]), rnd.randrange(self.rows)
                op = rnd.choice(("read", "write"))
                t = time.perf_counter()
                if op == "read":
                    conns[db].execute("SELECT v FROM orders WHERE tenant = %s AND id = %s", (tenant, i)).fetchone()
                else:
                    conns[db].execute("UPDATE orders SET v = v + 1 WHERE tenant = %s AND id = %s", (tenant, i))
                done = time.perf_counter()
                with self._lock:
                    self.samples.append((done, db, op, (done - t) * 1000))
                time.sleep(self.pause_s)
        except Exception as err:  # noqa: BLE001 - reported
            self.errors.append(f"{type(err).__name__}: {err}")
        finally:
            for c in conns.values():
                c.close()

    def start(self) -> None:
        self._workers = [threading.Thread(target=self._work, args=(n,), daemon=True) for n in range(self.threads)]
        for w in self._workers:
            w.start()

    def finish(self) -> None:
        self.stop.set()
        for w in self._workers:
            w.join(timeout=30)

    def window(self, db: str, t0: float, t1: float, op: str) -> list[float]:
        with self._lock:
            return [ms for t, d, o, ms in self.samples if d == db and o == op and t0 <= t < t1]


# --------------------------------------------------------------------------- the run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000-row large bucket, fewer runs")
    ap.add_argument("--large", type=int, help="rows of the large bucket (default 1,000,000; quick 100,000)")
    ap.add_argument("--small", type=int, default=10_000, help="rows of the small bucket")
    ap.add_argument("--runs-small", type=int, help="moves per mode of the small bucket (default 7; quick 3)")
    ap.add_argument("--runs-large", type=int, help="moves per mode of the large bucket (default 3; quick 2)")
    ap.add_argument("--filler", type=int, help="rows of other tenants per shard (default 200,000; quick 20,000)")
    ap.add_argument("--idle-s", type=float, default=5.0, help="idle latency window before each online large move")
    ap.add_argument("--skip", default="", help="comma list of sections to skip: copy (block_writes large moves "
                    "and the pipe), small (both modes), online (online large moves with the live workload)")
    ap.add_argument("--chunk-rows", type=int, help="the shard set's copy_chunk_rows (default: the config's default)")
    ap.add_argument("--enforce", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()
    large = args.large or (100_000 if args.quick else 1_000_000)
    runs_small = args.runs_small or (3 if args.quick else 7)
    runs_large = args.runs_large or (2 if args.quick else 3)
    filler = args.filler if args.filler is not None else (20_000 if args.quick else 200_000)
    skip = {s for s in args.skip.split(",") if s}

    from moto import mock_aws

    print(f"# shard_mover on {platform.node()} ({os.cpu_count()} CPUs), Python {platform.python_version()}, "
          f"psycopg {psycopg.__version__}, large {large:,} rows, small {args.small:,} rows, "
          f"runs {runs_small} small / {runs_large} large; load average before: {load()}")
    t_start = time.perf_counter()
    with PostgresCluster(DBS) as pgc, mock_aws():
        import boto3

        with conn(pgc, "postgres") as c:
            print(f"# server: {c.execute('SHOW server_version').fetchone()[0]}")  # type: ignore[index]
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName=TABLE, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                         AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                         BillingMode="PAY_PER_REQUEST")
        sset = ShardSet.model_validate({
            "name": "orders", "buckets": BUCKETS, "grace_period_s": 0,
            **({"copy_chunk_rows": args.chunk_rows} if args.chunk_rows else {}),
            "shards": [{"name": SHARD_OF_DB[db], "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in DBS],
            "tables": [{"name": "orders", "key_column": "tenant"}],
        })
        mover = TimedMover(sset, ShardMapStore(ddb, TABLE), connector())
        owners = mover.map().owners
        a_buckets = [b for b in range(BUCKETS) if owners[b] == "shard-a"]
        b_buckets = [b for b in range(BUCKETS) if owners[b] == "shard-b"]
        big_bucket, small_bucket = a_buckets[0], a_buckets[1]
        big, small = tenant_in(big_bucket, "big"), tenant_in(small_bucket, "small")
        probe_rows = 1000
        probe_tenants = {"shard_a": [tenant_in(b, "probe") for b in a_buckets[2:8]],
                         "shard_b": [tenant_in(b, "probe") for b in b_buckets[:6]]}
        fill_tenants = {"shard_a": [tenant_in(b, "fill") for b in a_buckets[8:]],
                        "shard_b": [tenant_in(b, "fill") for b in b_buckets[6:]]}
        t = time.perf_counter()
        for db in DBS:
            with conn(pgc, db) as c:
                c.execute(SCHEMA)
                ins = ("INSERT INTO orders (tenant, id, v, note) SELECT %s, g, g, repeat(md5(g::text), 2) "
                       "FROM generate_series(0, %s) g")
                per = max(1, filler // len(fill_tenants[db]))
                for ten in fill_tenants[db]:
                    c.execute(ins, (ten, per - 1))
                for ten in probe_tenants[db]:
                    c.execute(ins, (ten, probe_rows - 1))
                if db == "shard_a":
                    c.execute(ins, (big, large - 1))
                    c.execute(ins, (small, args.small - 1))
        vacuum(pgc)
        print(f"# seeded in {time.perf_counter() - t:.1f} s: bucket {big_bucket} = {big} ({large:,} rows), "
              f"bucket {small_bucket} = {small} ({args.small:,} rows), {filler:,} filler + "
              f"{6 * probe_rows:,} probe rows per shard")
        where = bucket_filter_sql("tenant", BUCKETS, "text", [big_bucket])
        with conn(pgc, "shard_a") as c:
            big_bytes = int(c.execute(f"SELECT sum(pg_column_size(o.*)) FROM orders o WHERE {where}"
                                      ).fetchone()[0])  # type: ignore[index]
        where_of = {"big": where}
        select = f"SELECT {COLS} FROM orders WHERE {where_of['big']}"

        location = {big: "shard-a", small: "shard-a"}
        moves: list[Move] = []

        def move(tenant: str, size: int, mode: str) -> Move:
            src = location[tenant]
            tgt = "shard-b" if src == "shard-a" else "shard-a"
            bucket = big_bucket if tenant == big else small_bucket
            mover.copy_s.clear()
            mover.copy_cpu_s.clear()
            mover.verify_s.clear()
            m = mover.start([bucket], src, tgt, mode=mode, move_id=f"{mode}-{tenant}-{len(moves)}")
            t0 = time.perf_counter()
            result = mover.run(m.id)
            wall = time.perf_counter() - t0
            rec = mover.load(m.id)
            if result.phase != "done" or rec.fence_ms is None:
                raise RuntimeError(f"move {m.id} ended {result.phase}: {rec.error}")
            location[tenant] = tgt
            out = Move(mode, size, src, tgt, float(rec.fence_ms), wall,
                       sum(mover.copy_s) if mover.copy_s else None,
                       sum(mover.copy_cpu_s) if mover.copy_cpu_s else None,
                       sum(mover.verify_s) if mover.verify_s else None, int((rec.verify or {}).get("rows", 0)),
                       rec.verify_fence_ms)
            moves.append(out)
            print(f"  {mode:12} {size:>9,} rows {src} -> {tgt}: fence {out.fence_ms:8.1f} ms"
                  + (f" (+ verification fence {out.verify_fence_ms:.1f} ms)" if out.verify_fence_ms is not None
                     else "") + f", move {wall:6.1f} s"
                  + (f", copy {out.copy_s:.2f} s" if out.copy_s is not None else "")
                  + (f", verify {out.verify_s:.2f} s" if out.verify_s is not None else "") + f"  (load {load()})",
                  flush=True)
            vacuum(pgc)
            return out

        # ---------------------------------------------------------------- 1. copy throughput
        # (pipe into orders_baseline s, into orders s, ours s, rows, the mover's CPU s)
        copies: list[tuple[float, float, float, int, float]] = []
        if "copy" not in skip:
            print(f"\n## copy throughput, block_writes, {large:,} rows ({big_bytes / 1e6:.1f} MB in the table)")
            for _ in range(runs_large):
                src_db = DB_OF_SHARD[location[big]]
                dst_db = DB_OF_SHARD["shard-b" if location[big] == "shard-a" else "shard-a"]
                empty_s, empty_rows = psql_pipe(pgc, src_db, dst_db, select)
                vacuum(pgc)
                print(f"  psql pipe into an empty orders_baseline {empty_rows:>9,} rows {src_db} -> {dst_db}: "
                      f"{empty_s:.2f} s", flush=True)
                same_s, same_rows = psql_pipe(pgc, src_db, dst_db, select, into="orders", where=where_of["big"])
                vacuum(pgc)
                print(f"  psql pipe into the target's orders      {same_rows:>9,} rows {src_db} -> {dst_db}: "
                      f"{same_s:.2f} s", flush=True)
                m = move(big, large, "block_writes")
                if empty_rows != large or same_rows != large or m.rows != large:
                    raise RuntimeError(f"row counts: pipes {empty_rows} {same_rows}, mover {m.rows}, expected {large}")
                assert m.copy_s is not None and m.copy_cpu_s is not None
                copies.append((empty_s, same_s, m.copy_s, large, m.copy_cpu_s))

        # ---------------------------------------------------------------- 2. fence per mode and size
        if "small" not in skip:
            print(f"\n## fence, {args.small:,}-row bucket")
            for mode in ("block_writes", "online"):
                for _ in range(runs_small):
                    move(small, args.small, mode)

        # ---------------------------------------------------------------- 3. online large, with the live workload
        windows: list[tuple[str, str, float, float]] = []  # (label, db, t0, t1)
        probe = Probe(pgc, probe_tenants, probe_rows)
        if "online" not in skip:
            print(f"\n## online, {large:,}-row bucket, with the live workload on the source")
            probe.start()
            try:
                for _ in range(runs_large):
                    db = DB_OF_SHARD[location[big]]
                    probe.db = db
                    t0 = time.perf_counter()
                    time.sleep(args.idle_s)
                    t1 = time.perf_counter()
                    windows.append(("idle", db, t0, t1))
                    move(big, large, "online")
                    windows.append(("online move", db, t1, time.perf_counter()))
            finally:
                probe.finish()
            if probe.errors:
                print(f"  workload errors: {probe.errors[:3]}")

        # ---------------------------------------------------------------- report
        print(f"\n# load average after: {load()}; total {time.perf_counter() - t_start:.0f} s\n")
        missed: list[str] = []
        if copies:
            mb = big_bytes / 1e6
            print(f"### Copy throughput, block_writes, {large:,} rows, {mb:.1f} MB (sum of pg_column_size)\n")
            print("Pipe A: into the target shard's `orders`, as the mover's chunk writes (like for like: the target "
                  "of the\nratio). Pipe B: into an empty `orders_baseline` (the easier target, reported too).\n")
            print("| run | pipe A (s) | rows/s | pipe B (s) | rows/s | mover copy phase (s) | rows/s | MB/s | "
                  "mover CPU (s) | ours / pipe A | ours / pipe B |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for i, (empty_s, same_s, ours_s, rows, cpu_s) in enumerate(copies, 1):
                print(f"| {i} | {same_s:.2f} | {rows / same_s:,.0f} | {empty_s:.2f} | {rows / empty_s:,.0f} | "
                      f"{ours_s:.2f} | {rows / ours_s:,.0f} | {mb / ours_s:.1f} | {cpu_s:.2f} | "
                      f"{same_s / ours_s:.2f} x | {empty_s / ours_s:.2f} x |")
            te, ts, to, _, tc = (sum(c[k] for c in copies) for k in range(5))
            rows = sum(c[3] for c in copies)
            print(f"| all | {ts:.2f} | {rows / ts:,.0f} | {te:.2f} | {rows / te:,.0f} | {to:.2f} | {rows / to:,.0f} | "
                  f"{mb * len(copies) / to:.1f} | {tc:.2f} | {ts / to:.2f} x | {te / to:.2f} x |")
            ratio = ts / to
            ok = ratio >= COPY_TARGET
            print(f"\ncopy throughput: {ratio:.2f} x the psql pipe into the same table (target >= {COPY_TARGET} x: "
                  f"{'met' if ok else 'NOT met'}); {te / to:.2f} x the pipe into an empty table\n")
            if not ok:
                missed.append("copy")
        if moves:
            print("### Fence (write unavailability of the moving bucket), fence_ms from the move records\n")
            print("| mode | bucket rows | moves | switch fence p50 (ms) | p99 (ms) | max (ms) | verification fence "
                  "p99 (ms) | verification, median (s) | whole move, median (s) |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
            groups: dict[tuple[str, int], list[Move]] = {}
            for m in moves:
                groups.setdefault((m.mode, m.size), []).append(m)
            for (mode, size), ms in sorted(groups.items()):
                f = [m.fence_ms for m in ms]
                v = [m.verify_s for m in ms if m.verify_s is not None]
                vf = [m.verify_fence_ms for m in ms if m.verify_fence_ms is not None]
                print(f"| {mode} | {size:,} | {len(ms)} | {pct(f, 50):.0f} | {pct(f, 99):.0f} | {max(f):.0f} | "
                      f"{f'{pct(vf, 99):.0f}' if vf else '- (inside the switch fence)'} | {pct(v, 50):.2f} | "
                      f"{pct([m.wall_s for m in ms], 50):.1f} |")
            print()
            for (mode, size), ms in sorted(groups.items()):
                f = [m.fence_ms for m in ms]
                if mode == "online":
                    # Each fence is a window of write unavailability: both must be under the target.
                    vf = [m.verify_fence_ms for m in ms if m.verify_fence_ms is not None]
                    worst = max(pct(f, 99), pct(vf, 99) if vf else 0.0)
                    ok = worst < FENCE_TARGET_MS
                    print(f"online fence p99 at {size:,} rows: switch {pct(f, 99):.0f} ms, verification "
                          f"{pct(vf, 99) if vf else float('nan'):.0f} ms (target < {FENCE_TARGET_MS:.0f} ms each: "
                          f"{'met' if ok else 'NOT met'})")
                    if not ok:
                        missed.append(f"online fence {size}")
            print()
        if windows:
            print("### Live workload on the source (paced reads and updates of tenants the move does not touch)\n")
            print("| window | reads | read p50 (ms) | read p99 (ms) | writes | write p50 (ms) | write p99 (ms) |")
            print("|---|---:|---:|---:|---:|---:|---:|")
            for label in ("idle", "online move"):
                r = [x for lab, db, t0, t1 in windows if lab == label for x in probe.window(db, t0, t1, "read")]
                w = [x for lab, db, t0, t1 in windows if lab == label for x in probe.window(db, t0, t1, "write")]
                print(f"| {label} | {len(r):,} | {pct(r, 50):.2f} | {pct(r, 99):.2f} | {len(w):,} | "
                      f"{pct(w, 50):.2f} | {pct(w, 99):.2f} |")
            print()
        print(f"**Targets: {'all met' if not missed else 'missed: ' + ', '.join(missed)}.**")
    return 1 if (args.enforce and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
