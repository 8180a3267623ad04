"""Read-only diagnostics of one PostgreSQL database: statements, scans, indexes, bloat, connections, lag.

Every query reads catalogs and statistics views only; the figures are the database's own counters since
their last reset (`pg_stat_statements_info.stats_reset`, `pg_stat_database.stats_reset`), so an index reported
unused has not been scanned since then, not necessarily never.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from reflex_core.database_config import DatabaseTarget


class DiagnosticError(RuntimeError):
    """A diagnostic could not run (missing extension, missing privilege); the message says how to fix it."""


@dataclass
class Statement:
    queryid: int
    query: str
    calls: int
    total_ms: float
    mean_ms: float
    rows: int
    shared_blks_read: int
    shared_blks_hit: int


@dataclass
class Diagnostics:
    database: str
    server_version: int
    in_recovery: bool
    top_by_total: list[Statement] = field(default_factory=list)
    top_by_mean: list[Statement] = field(default_factory=list)
    top_by_calls: list[Statement] = field(default_factory=list)
    seq_scans: list[dict[str, Any]] = field(default_factory=list)
    unused_indexes: list[dict[str, Any]] = field(default_factory=list)
    duplicate_indexes: list[dict[str, Any]] = field(default_factory=list)
    unindexed_foreign_keys: list[dict[str, Any]] = field(default_factory=list)
    table_bloat: list[dict[str, Any]] = field(default_factory=list)
    index_bloat: list[dict[str, Any]] = field(default_factory=list)
    connections: dict[str, Any] = field(default_factory=dict)
    replication: dict[str, Any] = field(default_factory=dict)
    stats_reset: str | None = None
    # Seconds each part took (the report shows them; the benchmark reads them).
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_STATEMENTS = """
SELECT s.queryid, s.query, s.calls, s.total_exec_time AS total_ms, s.mean_exec_time AS mean_ms, s.rows,
       s.shared_blks_read, s.shared_blks_hit
FROM pg_stat_statements s
WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND s.query NOT ILIKE '%%pg_stat_statements%%' AND s.queryid IS NOT NULL
ORDER BY {order} DESC
LIMIT %(n)s
"""

_SEQ_SCANS = """
SELECT schemaname AS schema, relname AS table, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan,
       n_live_tup AS rows, pg_relation_size(relid) AS bytes
FROM pg_stat_user_tables
WHERE seq_scan > 0 AND (n_live_tup >= %(rows)s OR pg_relation_size(relid) >= %(bytes)s)
ORDER BY seq_tup_read DESC
LIMIT %(n)s
"""

_UNUSED = """
SELECT s.schemaname AS schema, s.relname AS table, s.indexrelname AS index, pg_relation_size(s.indexrelid) AS bytes,
       s.idx_scan, pg_get_indexdef(s.indexrelid) AS definition
FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
WHERE s.idx_scan = 0 AND NOT i.indisunique AND NOT i.indisprimary AND i.indisvalid
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = s.indexrelid)
  AND pg_relation_size(s.indexrelid) >= %(min_bytes)s
ORDER BY pg_relation_size(s.indexrelid) DESC
LIMIT %(n)s
"""

# Two btree indexes of one table are duplicates when one's key columns are a leading part of the other's (the
# same columns: identical) with the same predicate and expressions; a unique index is never the redundant one.
_INDEXES = """
SELECT n.nspname AS schema, t.relname AS table, c.relname AS index, i.indrelid::bigint AS table_oid,
       string_to_array(i.indkey::text, ' ')::int[] AS keys, i.indclass::text AS opclasses,
       CASE WHEN i.indexprs IS NULL THEN '' ELSE pg_get_expr(i.indexprs, i.indrelid) END AS exprs,
       CASE WHEN i.indpred IS NULL THEN '' ELSE pg_get_expr(i.indpred, i.indrelid) END AS pred,
       i.indisunique AS is_unique, i.indisprimary AS is_primary, am.amname AS method,
       c.relpages::bigint * current_setting('block_size')::int AS bytes, i.indexrelid::bigint AS index_oid
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid
JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = c.relam
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
  AND i.indisvalid
"""

_UNINDEXED_FKS = """
SELECT n.nspname AS schema, t.relname AS table, c.conname AS constraint,
       array_agg(a.attname ORDER BY k.ord) AS columns, c.confrelid::regclass::text AS references,
       pg_relation_size(c.conrelid) AS table_bytes
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum
WHERE c.contype = 'f'
  AND NOT EXISTS (
    SELECT 1 FROM pg_index i
    WHERE i.indrelid = c.conrelid AND i.indpred IS NULL
      AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(c.conkey)] @> c.conkey
      AND (string_to_array(i.indkey::text, ' ')::int2[])[1:cardinality(c.conkey)] <@ c.conkey)
GROUP BY n.nspname, t.relname, c.conname, c.confrelid, c.conrelid
ORDER BY pg_relation_size(c.conrelid) DESC
"""

# Bloat estimates from statistics only (no pgstattuple scan): the expected size is the live rows times their
# average width (pg_stats) plus tuple header and line pointer, packed at the fill factor; the rest is the
# estimated bloat. Good to a few tens of percent; reported only above both floors below.
_TABLE_BLOAT = """
WITH widths AS MATERIALIZED (
  SELECT s.schemaname, s.tablename, sum((1 - s.null_frac) * s.avg_width) AS width
  FROM pg_stats s WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema') GROUP BY s.schemaname, s.tablename
), fill AS MATERIALIZED (
  SELECT c.oid, coalesce((SELECT split_part(o, '=', 2)::int FROM unnest(c.reloptions) o
                          WHERE o LIKE 'fillfactor=%%'), 100) AS fillfactor
  FROM pg_class c WHERE c.relkind = 'r'
)
SELECT n.nspname AS schema, c.relname AS table, c.relpages::bigint * current_setting('block_size')::int AS bytes,
       ceil(c.reltuples * (w.width + 28) / (current_setting('block_size')::int * 0.9
            * f.fillfactor / 100.0))::bigint
         * current_setting('block_size')::int AS expected_bytes,
       st.n_dead_tup AS dead_rows, st.n_live_tup AS live_rows
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN widths w ON w.schemaname = n.nspname AND w.tablename = c.relname
JOIN fill f ON f.oid = c.oid
LEFT JOIN pg_stat_user_tables st ON st.relid = c.oid
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.reltuples > 0
"""

_INDEX_BLOAT = """
WITH stats AS MATERIALIZED (
  SELECT schemaname, tablename, attname, avg_width FROM pg_stats
  WHERE schemaname NOT IN ('pg_catalog', 'information_schema')
), cols AS (
  SELECT i.indexrelid, sum(coalesce(s.avg_width, 8)) AS width
  FROM pg_index i
  JOIN pg_class t ON t.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
  LEFT JOIN stats s ON s.schemaname = n.nspname AND s.tablename = t.relname AND s.attname = a.attname
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
  GROUP BY i.indexrelid
)
SELECT n.nspname AS schema, t.relname AS table, c.relname AS index,
       c.relpages::bigint * current_setting('block_size')::int AS bytes,
       ceil(c.reltuples * (cols.width + 16) / (current_setting('block_size')::int * 0.9))::bigint
         * current_setting('block_size')::int AS expected_bytes
FROM cols
JOIN pg_class c ON c.oid = cols.indexrelid
JOIN pg_class t ON t.oid = (SELECT indrelid FROM pg_index WHERE indexrelid = c.oid)
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
WHERE c.reltuples > 0
"""

_CONNECTIONS = """
SELECT count(*) FILTER (WHERE backend_type = 'client backend') AS used,
       count(*) FILTER (WHERE state = 'active' AND backend_type = 'client backend') AS active,
       count(*) FILTER (WHERE state = 'idle in transaction') AS idle_in_transaction,
       current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int AS reserved
FROM pg_stat_activity
"""

BLOAT_MIN_BYTES = 8 * 1024 * 1024
BLOAT_MIN_RATIO = 0.3


def _statements(cur: psycopg.Cursor[Any], order: str, n: int) -> list[Statement]:
    cur.execute(_STATEMENTS.replace("{order}", order), {"n": n})
    return [Statement(queryid=int(r["queryid"]), query=str(r["query"]), calls=int(r["calls"]),
                      total_ms=float(r["total_ms"]), mean_ms=float(r["mean_ms"]), rows=int(r["rows"]),
                      shared_blks_read=int(r["shared_blks_read"]), shared_blks_hit=int(r["shared_blks_hit"]))
            for r in cur.fetchall()]


def read_statements(conn: psycopg.Connection[Any], target: DatabaseTarget) -> tuple[list[Statement], ...]:
    """Top statements by total time, mean time and calls; a clear error without the extension or privilege."""
    n = target.advisor.top_n
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            return (_statements(cur, "s.total_exec_time", max(n, target.advisor.analyse_n)),
                    _statements(cur, "s.mean_exec_time", n), _statements(cur, "s.calls", n))
    except psycopg.errors.InsufficientPrivilege as err:
        raise DiagnosticError(f"database {target.name}: permission denied on pg_stat_statements ({_first(err)}); "
                              "grant the advisor's user pg_read_all_stats and SELECT on pg_stat_statements") from None
    except psycopg.errors.UndefinedTable:
        raise DiagnosticError(f"database {target.name}: pg_stat_statements is not installed; add it to "
                              "shared_preload_libraries and run CREATE EXTENSION pg_stat_statements") from None
    except psycopg.errors.ObjectNotInPrerequisiteState as err:
        raise DiagnosticError(f"database {target.name}: pg_stat_statements is not loaded ({_first(err)}); "
                              "add it to shared_preload_libraries and restart") from None


def read_indexes(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_INDEXES)
        return list(cur.fetchall())


def duplicate_indexes(indexes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pairs (redundant, kept): same table, method, predicate and expressions; the redundant one's keys lead the
    kept one's (with the same operator classes), and the redundant one is not unique."""
    by_table: dict[int, list[dict[str, Any]]] = {}
    for ix in indexes:
        by_table.setdefault(ix["table_oid"], []).append(ix)
    out = []
    for group in by_table.values():
        for a in group:
            if a["is_unique"] or a["is_primary"]:
                continue
            for b in group:
                if a is b or a["method"] != b["method"] or a["pred"] != b["pred"] or a["exprs"] or b["exprs"]:
                    continue
                ka, kb = a["keys"], b["keys"]
                if len(ka) > len(kb) or kb[: len(ka)] != ka:
                    continue
                if a["method"] != "btree" and ka != kb:
                    continue
                if a["opclasses"].split()[: len(ka)] != b["opclasses"].split()[: len(ka)]:
                    continue
                if ka == kb and not (b["is_unique"] or b["is_primary"]) and a["index"] > b["index"]:
                    continue  # identical pair: reported once, the name that sorts first as the redundant one
                out.append({"schema": a["schema"], "table": a["table"], "index": a["index"], "bytes": a["bytes"],
                            "covered_by": b["index"], "kind": "identical" if ka == kb else "prefix",
                            "definition": a.get("definition"), "index_oid": a.get("index_oid")})
                break
    return sorted(out, key=lambda d: -d["bytes"])


def diagnose(conn: psycopg.Connection[Any], target: DatabaseTarget,
             indexes: list[dict[str, Any]] | None = None) -> Diagnostics:
    policy = target.advisor
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT current_setting('server_version_num')::int AS v, pg_is_in_recovery() AS r")
        head = cur.fetchone()
        assert head is not None
        diag = Diagnostics(database=target.name, server_version=head["v"], in_recovery=head["r"])
    clock = _Stopwatch(diag.timings)
    with clock("statements"):
        diag.top_by_total, diag.top_by_mean, diag.top_by_calls = read_statements(conn, target)
    diag.top_by_total = diag.top_by_total[: policy.top_n]
    with clock("indexes"):
        indexes = indexes if indexes is not None else read_indexes(conn)
        diag.duplicate_indexes = duplicate_indexes(indexes)
        _definitions(conn, diag.duplicate_indexes)
    with conn.cursor(row_factory=dict_row) as cur:
        with clock("seq_scans"):
            cur.execute(_SEQ_SCANS, {"rows": policy.large_table.rows, "bytes": policy.large_table.bytes,
                                     "n": policy.top_n})
            diag.seq_scans = list(cur.fetchall())
        with clock("unused_indexes"):
            cur.execute(_UNUSED, {"min_bytes": policy.unused_index_min_bytes, "n": policy.top_n})
            diag.unused_indexes = list(cur.fetchall())
        with clock("foreign_keys"):
            cur.execute(_UNINDEXED_FKS)
            diag.unindexed_foreign_keys = list(cur.fetchall())
        with clock("table_bloat"):
            cur.execute(_TABLE_BLOAT)
            diag.table_bloat = _bloated(cur.fetchall(), "table")
        with clock("index_bloat"):
            cur.execute(_INDEX_BLOAT)
            diag.index_bloat = _bloated(cur.fetchall(), "index")
        cur.execute(_CONNECTIONS)
        row = cur.fetchone()
        assert row is not None
        usable = max(row["max_connections"] - row["reserved"], 1)
        diag.connections = dict(row) | {"used_ratio": round(row["used"] / usable, 4)}
        diag.replication = _replication(cur, diag.in_recovery)
        cur.execute("SELECT stats_reset::text AS reset FROM pg_stat_database WHERE datname = current_database()")
        reset = cur.fetchone()
        diag.stats_reset = reset["reset"] if reset else None
    return diag


def _definitions(conn: psycopg.Connection[Any], found: list[dict[str, Any]]) -> None:
    """The CREATE INDEX text of the reported indexes only (pg_get_indexdef is slow over thousands)."""
    oids = [d["index_oid"] for d in found if d.get("index_oid") is not None and not d.get("definition")]
    if not oids:
        return
    with conn.cursor() as cur:
        cur.execute("SELECT indexrelid::bigint, pg_get_indexdef(indexrelid) FROM pg_index "
                    "WHERE indexrelid = ANY(%s)", (oids,))
        defs = dict(cur.fetchall())
    for d in found:
        if d.get("index_oid") in defs:
            d["definition"] = defs[d["index_oid"]]


class _Stopwatch:
    def __init__(self, into: dict[str, float]) -> None:
        self.into = into

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.into[name] = round(time.monotonic() - t0, 4)


def _bloated(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        extra = int(row["bytes"]) - int(row["expected_bytes"])
        if row["bytes"] >= BLOAT_MIN_BYTES and extra >= BLOAT_MIN_RATIO * row["bytes"]:
            out.append(dict(row) | {"bloat_bytes": extra, "bloat_ratio": round(extra / row["bytes"], 3),
                                    "kind": kind})
    return sorted(out, key=lambda d: -d["bloat_bytes"])


def _replication(cur: psycopg.Cursor[Any], in_recovery: bool) -> dict[str, Any]:
    if in_recovery:
        cur.execute("SELECT extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float AS lag_s, "
                    "pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() AS caught_up")
        row = cur.fetchone()
        assert row is not None
        # A replica with no write to replay has an old replay timestamp but is not behind.
        lag = 0.0 if row["caught_up"] else row["lag_s"]
        return {"role": "replica", "lag_s": lag}
    try:
        cur.execute("SELECT application_name, client_addr::text AS client, state, "
                    "extract(epoch FROM replay_lag)::float AS replay_lag_s FROM pg_stat_replication")
        return {"role": "primary", "replicas": list(cur.fetchall())}
    except psycopg.errors.InsufficientPrivilege:
        return {"role": "primary", "replicas": None, "note": "pg_stat_replication needs pg_read_all_stats"}


def _first(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
