"""Building a proposed index: CONCURRENTLY, under a lock timeout, idempotent.

`CREATE INDEX CONCURRENTLY` that fails (lock timeout, deadlock, a duplicate key of a unique index) leaves an
INVALID index behind; that index is dropped (`DROP INDEX CONCURRENTLY`) and the build retried once.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from advisor.index_advisor import Candidate


def table_columns(conn: psycopg.Connection[Any], schema: str, table: str) -> set[str] | None:
    with conn.cursor() as cur:
        cur.execute("SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
                    "AND c.relkind IN ('r', 'p', 'm') AND a.attnum > 0 AND NOT a.attisdropped", (schema, table))
        cols = {r[0] for r in cur.fetchall()}
    return cols or None


def index_state(conn: psycopg.Connection[Any], schema: str, name: str) -> dict[str, Any]:
    with conn.cursor() as cur:
        cur.execute("SELECT i.indisvalid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "JOIN pg_index i ON i.indexrelid = c.oid WHERE n.nspname = %s AND c.relname = %s", (schema, name))
        row = cur.fetchone()
    return {"index": f"{schema}.{name}", "exists": row is not None, "valid": bool(row and row[0])}


def drop_invalid(conn: psycopg.Connection[Any], cand: Candidate) -> None:
    conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
        sql.Identifier(cand.schema), sql.Identifier(cand.name)))


def build(conn: psycopg.Connection[Any], cand: Candidate, lock_timeout_ms: int) -> dict[str, Any]:
    conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")))
    conn.execute("SET statement_timeout = 0")
    last: Exception | None = None
    for _ in range(2):
        state = index_state(conn, cand.schema, cand.name)
        if state["exists"] and state["valid"]:
            return state
        if state["exists"]:
            drop_invalid(conn, cand)
        try:
            conn.execute(cand.definition())  # type: ignore[arg-type]  # built from validated identifiers only
        except psycopg.Error as err:
            last = err
            continue
    state = index_state(conn, cand.schema, cand.name)
    if state["exists"] and state["valid"]:
        return state
    if state["exists"]:
        drop_invalid(conn, cand)
    raise RuntimeError(f"CREATE INDEX CONCURRENTLY {cand.name} failed twice: {last}")
