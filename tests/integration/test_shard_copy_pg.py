"""`pg.forward_copy`, the mover's binary COPY stream from one connection into another, on real PostgreSQL (the
server on 127.0.0.1:5432, trust auth; `REFLEX_TEST_PG_DSN` overrides it; skipped when unreachable): rows arrive
intact, failures on either side raise and commit nothing, and the target connection is handed back in the
non-blocking mode psycopg expects (the copy runs it in blocking mode, for backpressure)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shards import pg

pytestmark = pytest.mark.postgres

DSN = os.environ.get("REFLEX_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
SRC, DST = f"reflex_fc_src_{os.getpid()}", f"reflex_fc_dst_{os.getpid()}"
COLS = "k, v, note, at, raw"


@pytest.fixture
def conns() -> Iterator[tuple[psycopg.Connection[Any], psycopg.Connection[Any]]]:
    try:
        admin = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    for t in (SRC, DST):
        admin.execute(f"DROP TABLE IF EXISTS {t}")
        admin.execute(f"CREATE TABLE {t} (k bigint PRIMARY KEY, v int, note text, at timestamptz, raw bytea)")
    admin.execute(f"INSERT INTO {SRC} SELECT g, g % 7, CASE WHEN g % 5 = 0 THEN NULL ELSE repeat('é', g % 40) END, "
                f"'2026-01-01'::timestamptz + g * interval '1 second', decode(md5(g::text), 'hex') "
                f"FROM generate_series(1, 20000) g")
    src, dst = psycopg.connect(DSN, autocommit=True), psycopg.connect(DSN, autocommit=True)
    try:
        yield src, dst
    finally:
        src.close()
        dst.close()
        for t in (SRC, DST):
            admin.execute(f"DROP TABLE IF EXISTS {t}")
        admin.close()


def _copy(src: psycopg.Connection[Any], dst: psycopg.Connection[Any], select: str) -> int:
    with dst.transaction():
        return pg.forward_copy(src, dst, f"COPY ({select}) TO STDOUT (FORMAT BINARY)",
                               f"COPY {DST} ({COLS}) FROM STDIN (FORMAT BINARY)")


def test_rows_arrive_intact_and_the_target_is_non_blocking_again(conns: Any) -> None:
    src, dst = conns
    assert dst.pgconn.nonblocking == 1
    assert _copy(src, dst, f"SELECT {COLS} FROM {SRC}") == 20000
    assert dst.pgconn.nonblocking == 1
    diff = src.execute(f"SELECT count(*) FROM ((TABLE {SRC} EXCEPT ALL TABLE {DST}) UNION ALL "
                       f"(TABLE {DST} EXCEPT ALL TABLE {SRC})) d").fetchone()
    assert diff == (0,)
    assert dst.execute("SELECT 1").fetchone() == (1,)  # the connection is usable afterwards


def test_a_target_failure_raises_commits_nothing_and_restores_the_mode(conns: Any) -> None:
    src, dst = conns
    src.execute(f"INSERT INTO {DST} (k) VALUES (15000)")  # the copy's row 15000 then violates the primary key
    with pytest.raises(psycopg.OperationalError, match="target COPY failed"):
        _copy(src, dst, f"SELECT {COLS} FROM {SRC} ORDER BY k")
    assert dst.pgconn.nonblocking == 1
    dst.close()  # the mover discards both connections after a failure: the source's COPY may still be open
    src.close()
    with psycopg.connect(DSN, autocommit=True) as check:
        assert check.execute(f"SELECT count(*) FROM {DST}").fetchone() == (1,)


def test_a_source_failure_mid_stream_raises_and_commits_nothing(conns: Any) -> None:
    src, dst = conns
    with pytest.raises(psycopg.OperationalError, match="source COPY failed"):
        _copy(src, dst, f"SELECT k, 10 / (k - 12000)::int, note, at, raw FROM {SRC} ORDER BY k")
    assert dst.pgconn.nonblocking == 1
    dst.close()
    src.close()
    with psycopg.connect(DSN, autocommit=True) as check:
        assert check.execute(f"SELECT count(*) FROM {DST}").fetchone() == (0,)


def test_a_target_killed_mid_stream_raises_instead_of_hanging(conns: Any) -> None:
    """The target's backend dies while the copy is blocked writing to it (the source's query kills it at row
    5,000): the copy raises, within seconds, and nothing is committed."""
    src, dst = conns
    pid = dst.execute("SELECT pg_backend_pid()").fetchone()[0]
    outcome: list[BaseException | int] = []

    def copy() -> None:
        try:
            outcome.append(_copy(src, dst, f"SELECT k, CASE WHEN k = 5000 THEN (pg_terminate_backend({pid}) "
                                           f"AND pg_sleep(0.5) IS NOT NULL)::int ELSE v END, note, at, raw "
                                           f"FROM {SRC} ORDER BY k"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=copy, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the copy hung after its target died"
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.OperationalError), outcome
    with psycopg.connect(DSN, autocommit=True) as check:
        assert check.execute(f"SELECT count(*) FROM {DST}").fetchone() == (0,)
