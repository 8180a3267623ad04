"""Database advisor: proposal quality next to Dexter's rules, run time at scale, before/after of the proposals.

Runs on a throw-away PostgreSQL 15 cluster (pg_stat_statements preloaded, HypoPG installed: Debian package
postgresql-15-hypopg), started and removed by the benchmark.

1. Quality. The seeded workload of tests/support/advisor_workload.py: three missing indexes (single-column,
   multi-column, partial) and three traps (a low-selectivity column, a tiny table, a query already served by
   an index). Our advisor, and Dexter's decision rules reimplemented on the same generic plans (every column
   of the statement as a hypothetical single-column index at once; then every ordered pair; suggest when the
   cost halves, a pair only when the single-column cost is still above 100 and halves again; at most two
   indexes; no index whose first one or two columns an existing btree index has), each judged against the
   known answer: needed indexes found, proposals that are not needed, proposals that do not halve the cost.
2. Scale. A database with `--tables` tables (default 1,000), 5 indexes each (5,000) and 5 distinct statements
   per table (5,000): wall time of one full advise (diagnostics + proposals for the slowest statements) and
   the peak memory of the Python process (tracemalloc) and its max RSS.
3. Before/after. The quality workload's affected statements, timed client-side (`--runs` executions with the
   same parameters) before and after the proposed indexes are built for real.

    .venv/bin/python benchmarks/db_advisor.py
    .venv/bin/python benchmarks/db_advisor.py --tables 200 --runs 50
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import random
import re
import resource
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for entry in (ROOT, ROOT / "functions"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import psycopg  # noqa: E402

from advisor.diagnostics import diagnose, read_statements  # noqa: E402
from advisor.index_advisor import IndexAdvisor  # noqa: E402
from advisor.plans import NotExplainable, cost, explain_generic, index_names  # noqa: E402
from reflex_core.database_config import DatabaseTarget  # noqa: E402
from tests.support import advisor_workload as workload  # noqa: E402
from tests.support.postgres import Cluster, throwaway_cluster  # noqa: E402

TARGET = DatabaseTarget.model_validate({"name": "bench", "connection": {
    "kind": "secret", "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:bench"}})
Index = tuple[str, tuple[str, ...], str | None]


def read_only(cluster: Cluster, db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(cluster.dsn(db), autocommit=True, options="-c default_transaction_read_only=on")


# --------------------------------------------------------------------------- Dexter's rules (for comparison)


def dexter(conn: psycopg.Connection[Any], statements: list[Any]) -> set[Index]:
    """Dexter's decision rules (ankane/dexter lib/dexter/indexer.rb), reimplemented, on the same generic plans."""
    with conn.cursor() as cur:
        cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns "
                    "WHERE table_schema = 'public'")
        columns: dict[str, list[tuple[str, str]]] = {}
        for table, col, dtype in cur.fetchall():
            columns.setdefault(table, []).append((col, dtype))
        cur.execute("SELECT t.relname, array_agg(a.attname ORDER BY k.ord) FROM pg_index i "
                    "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
                    "JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true "
                    "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
                    "WHERE n.nspname = 'public' GROUP BY i.indexrelid, t.relname")
        existing = set()
        for table, cols in cur.fetchall():
            existing.add((table, tuple(cols[:1])))
            existing.add((table, tuple(cols[:2])))
    found: set[Index] = set()
    for st in statements:
        words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", st.query))
        tables = [t for t in columns if t in words]
        cols = {t: [c for c, dtype in columns[t] if c in words and dtype not in ("json", "jsonb")] for t in tables}
        try:
            plan0 = explain_generic(conn, st.query)
        except NotExplainable:
            continue
        initial = cost(plan0)
        if initial < 100:
            continue
        costs, plans, names = [], [], {}
        for n in (1, 2):
            with conn.cursor() as cur:
                for t, cs in cols.items():
                    for combo in itertools.permutations(cs, n):
                        cur.execute("SELECT indexname FROM hypopg_create_index(%s)",
                                    (f"CREATE INDEX ON {t} ({', '.join(combo)})",))
                        row = cur.fetchone()
                        assert row is not None
                        names[row[0]] = (t, combo)
            plan = explain_generic(conn, st.query)
            costs.append(cost(plan))
            plans.append(plan)
        with conn.cursor() as cur:
            cur.execute("SELECT hypopg_reset()")
        new1, new2 = costs

        def used(plan: dict[str, Any], names: dict[str, tuple[str, tuple[str, ...]]] = names) -> list[Index]:
            return [(names[n][0], names[n][1], None) for n in sorted(index_names(plan))
                    if n in names and (names[n][0], names[n][1]) not in existing]

        saves1 = new1 < initial * 0.5
        saves2 = new1 > 100 and new2 < new1 * 0.5
        chosen = used(plans[1] if saves2 else plans[0])
        if saves2 and len(chosen) > 1:
            chosen, saves2 = used(plans[0]), False
        if (saves1 or saves2) and len(chosen) <= 2:
            found.update(chosen)
    covered = {(t, cs[:1], w) for t, cs, w in found if len(cs) > 1}
    return {i for i in found if i not in covered}


# --------------------------------------------------------------------------- 1. quality


def quality(cluster: Cluster) -> tuple[list[Any], str]:
    cluster.connect().execute("CREATE DATABASE quality")
    with cluster.connect("quality") as conn:
        workload.seed(conn)
        conn.execute("SELECT pg_stat_statements_reset()")
        workload.run(conn, rounds=3)
    with read_only(cluster, "quality") as conn:
        statements = read_statements(conn, TARGET)[0]
        advisor = IndexAdvisor(conn, TARGET.advisor)
        ours = advisor.advise(statements)
        theirs = dexter(conn, statements)
    needed = {q.expected for q in workload.QUERIES if q.expected}
    ours_set = {(p.table, tuple(p.columns), p.where) for p in ours}
    not_halved = [p for p in ours if p.cost_after is None or p.cost_after > 0.5 * p.cost_before]
    rows = [
        ("needed indexes found (of 3)", len(needed & ours_set), len(needed & theirs)),
        ("proposals not needed (traps: 0 wanted)", len(ours_set - needed), len(theirs - needed)),
        ("proposals that do not halve the cost", len(not_halved), "n/a"),
    ]
    lines = ["| | ours | Dexter's rules |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines.append("")
    lines.append("| index | ours: cost before -> after | Dexter's rules |")
    lines.append("|---|---|---|")
    for idx in sorted(needed | ours_set | theirs, key=str):
        p = next((p for p in ours if (p.table, tuple(p.columns), p.where) == idx), None)
        mark = "needed" if idx in needed else "not needed"
        label = f"{idx[0]} ({', '.join(idx[1])})" + (f" WHERE {idx[2]}" if idx[2] else "") + f" [{mark}]"
        lines.append(f"| {label} | {f'{p.cost_before:.0f} -> {p.cost_after:.0f}' if p else '-'} | "
                     f"{'proposed' if idx in theirs else '-'} |")
    return ours, "\n".join(lines)


# --------------------------------------------------------------------------- 2. scale


def scale(cluster: Cluster, tables: int, repeat: int = 1) -> str:
    cluster.connect().execute("CREATE DATABASE scale")
    t0 = time.monotonic()
    with cluster.connect("scale") as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements; CREATE EXTENSION hypopg")
        for i in range(tables):
            conn.execute(f"CREATE TABLE t{i} (id int PRIMARY KEY, a int, b int, c text, d timestamptz, e int);"
                         f"CREATE INDEX t{i}_a ON t{i} (a); CREATE INDEX t{i}_b ON t{i} (b);"
                         f"CREATE INDEX t{i}_ab ON t{i} (a, b); CREATE INDEX t{i}_d ON t{i} (d);"
                         f"INSERT INTO t{i} SELECT g, g % 10, g % 7, 'x' || g, now(), g FROM generate_series(1, 20) g")
        conn.execute("ANALYZE")
        conn.execute("SELECT pg_stat_statements_reset()")
        for i in range(tables):
            for q in (f"SELECT * FROM t{i} WHERE a = %s", f"SELECT * FROM t{i} WHERE e = %s",
                      f"SELECT count(*) FROM t{i} WHERE c = %s", f"UPDATE t{i} SET b = b WHERE id = %s",
                      f"SELECT id FROM t{i} WHERE d > now() - %s::interval ORDER BY id LIMIT 5"):
                conn.execute(q, ("1 day",) if "interval" in q else ("x1",) if "c =" in q else (1,))
        n_statements = conn.execute("SELECT count(*) FROM pg_stat_statements WHERE dbid = "
                                    "(SELECT oid FROM pg_database WHERE datname = 'scale')").fetchone()[0]
        n_indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'").fetchone()[0]
    build_s = time.monotonic() - t0
    rows, breakdowns = [], []
    for run in range(1, repeat + 1):
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        load = os.getloadavg()[0]
        tracemalloc.start()
        t0 = time.monotonic()
        with read_only(cluster, "scale") as conn:
            diag = diagnose(conn, TARGET)
            t1 = time.monotonic()
            advisor = IndexAdvisor(conn, TARGET.advisor)
            proposals = advisor.advise(diag.top_by_total)
        took = time.monotonic() - t0
        parts = ", ".join(f"{k} {v:.2f} s" for k, v in diag.timings.items()) + \
            f", index proposals ({len(advisor.examined)} statements examined) {time.monotonic() - t1:.2f} s"
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rows.append(f"| {run} | {tables} | {n_indexes} | {n_statements} | {took:.2f} s | < 10 s ({took / 10:.2f}x "
                    f"of it) | {load:.1f} | {peak / 1e6:.1f} MB | {max(rss0, rss1) / 1024:.0f} MB | {len(proposals)} |")
        breakdowns.append(f"run {run}: {parts}")
    return ("| run | tables | indexes | distinct statements | advise (diagnostics + proposals) | target | load "
            "(1 min) | Python peak (tracemalloc) | max RSS of the process | proposals |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\nBreakdown: "
            + "; ".join(breakdowns) + f". (Building the database took {build_s:.0f} s, not counted.)")


# --------------------------------------------------------------------------- 3. before / after


def before_after(cluster: Cluster, proposals: list[Any], runs: int) -> str:
    rng = random.Random(11)
    affected = [q for q in workload.QUERIES if q.expected and q.sql.startswith("SELECT")]
    params = {q.label: [q.params(rng, workload.SIZES) for _ in range(runs)] for q in affected}

    def timed() -> dict[str, float]:
        out = {}
        with cluster.connect("quality") as conn:
            for q in affected:
                conn.execute(q.sql, params[q.label][0]).fetchall()  # warm the cache
                t = []
                for p in params[q.label]:
                    t0 = time.perf_counter()
                    conn.execute(q.sql, p).fetchall()
                    t.append(time.perf_counter() - t0)
                out[q.label] = statistics.mean(t) * 1000
        return out

    before = timed()
    with cluster.connect("quality") as conn:
        for p in proposals:
            conn.execute(p.sql)
        conn.execute("ANALYZE orders")
    after = timed()
    lines = ["| statement | mean before (ms) | mean after (ms) | speed-up |", "|---|---|---|---|"]
    for q in affected:
        lines.append(f"| `{q.sql.replace('%s', '$n')}` | {before[q.label]:.2f} | {after[q.label]:.3f} | "
                     f"{before[q.label] / after[q.label]:.0f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only", choices=("quality", "scale"), default=None,
                        help="run one part: quality (with before/after) or scale")
    parser.add_argument("--repeat", type=int, default=1, help="advisor runs at scale, on the same database")
    args = parser.parse_args()
    print(f"# db_advisor on {platform.node()} ({os.cpu_count()} CPUs), load {os.getloadavg()[0]:.1f}, "
          f"PostgreSQL 15 throw-away cluster\n")
    with throwaway_cluster(**{"pg_stat_statements.max": "10000", "max_locks_per_transaction": "256"}) as cluster:
        if args.only in (None, "quality"):
            proposals, table = quality(cluster)
            print("## Proposal quality (seeded workload, 200,000 orders)\n")
            print(table + "\n")
            print("## Before / after the proposed indexes\n")
            print(before_after(cluster, proposals, args.runs) + "\n")
        if args.only in (None, "scale"):
            print("## Advisor run time at scale\n")
            print(scale(cluster, args.tables, args.repeat) + "\n")


if __name__ == "__main__":
    main()
