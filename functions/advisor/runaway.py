"""Runaway queries: the backends running one statement for longer than the policy allows, and the signal.

A backend is named by its pid *and* the start time of its current statement, so a cancel never reaches a
different statement that the same backend started since it was listed (nor a reused pid).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from advisor.pg_connection import APPLICATION_NAME
from reflex_core.database_config import RunawayPolicy

_LIST = """
SELECT pid, usename AS role, application_name AS application, datname AS database, query_start::text AS query_start,
       extract(epoch FROM now() - query_start)::float AS runtime_s, left(query, 300) AS query
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND query_start < now() - make_interval(secs => %(limit)s) AND application_name <> %(own)s
ORDER BY query_start
"""

_ONE = """
SELECT pid, usename AS role, application_name AS application, datname AS database, query_start::text AS query_start,
       extract(epoch FROM now() - query_start)::float AS runtime_s, left(query, 300) AS query
FROM pg_stat_activity WHERE pid = %(pid)s AND query_start = %(start)s::timestamptz AND state = 'active'
"""

_SIGNAL = """
SELECT {fn}(pid) FROM pg_stat_activity WHERE pid = %(pid)s AND query_start = %(start)s::timestamptz
  AND state = 'active'
"""


def runaways(conn: psycopg.Connection[Any], policy: RunawayPolicy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(to act on, allow-listed), oldest first; both only past the runtime limit."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_LIST, {"limit": policy.max_runtime_s, "own": APPLICATION_NAME})
        rows = list(cur.fetchall())
    allowed = [r for r in rows if r["role"] in policy.allow_roles or r["application"] in policy.allow_applications]
    return [r for r in rows if r not in allowed], allowed


def backend(conn: psycopg.Connection[Any], pid: int, query_start: str) -> dict[str, Any] | None:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_ONE, {"pid": pid, "start": query_start})
        return cur.fetchone()


def signal(conn: psycopg.Connection[Any], pid: int, query_start: str, terminate: bool) -> bool:
    fn = "pg_terminate_backend" if terminate else "pg_cancel_backend"
    with conn.cursor() as cur:
        cur.execute(_SIGNAL.replace("{fn}", fn), {"pid": pid, "start": query_start})
        row = cur.fetchone()
    return bool(row and row[0])
