"""The bucket function in Python (`bucket_of`, the router's) against the SQL one (`bucket_sql` and
`bucket_filter_sql`, the fence trigger's, the publication row filter's, the copy and verification queries') on
real PostgreSQL: the server on 127.0.0.1:5432 (user postgres, trust auth; `REFLEX_TEST_PG_DSN` overrides it).
Skipped when that server is unreachable. One query per bucket count (keys passed as arrays)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from shards.buckets import BIGINT_MAX, BIGINT_MIN, bucket_filter_sql, bucket_of, bucket_sql

pytestmark = pytest.mark.postgres

DSN = os.environ.get("REFLEX_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
COUNTS = (1, 2, 7, 64, 4096, 65536)

_rnd = random.Random(20260)
TEXTS: list[str] = [
    "", " ", "  ", "\t", "\n", "\r\n", " tenant-1", "tenant-1 ", "a b", "\u00a0", "\u3000",  # whitespace
    "tenant-1", "TENANT-1", "0", "-1", "42", "007", "true", "True", "None", "null", "NULL",  # look-alikes
    "a'b", 'a"b', "a\\b", "%", "%s", "%%", "{}", "[1,2]", "\x01", "\x7f",  # quoting and control characters
    "é", "e\u0301", "ß", "日本", "한국어", "עברית", "العربية", "🎉", "👩‍👩‍👧", "\U0010ffff", "\ufeffbom",  # unicode
    "x" * 300, "y" * 10_000, "é" * 2_000, "日" * 1_500,  # long
] + [f"tenant-{i}" for i in range(200)] + [
    "".join(_rnd.choice("abcXYZ019 -_.éü日🎉") for _ in range(_rnd.randint(1, 40))) for _ in range(200)
]
INT_KEYS: list[int] = [
    0, 1, -1, 2, -2, 6, 7, -7, 8, 63, 64, -64, 65, 4095, 4096, -4096, 4097, 65535, 65536, -65536, 65537,
    2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32, 2**53, 2**53 + 1, -(2**53) - 1,
    BIGINT_MAX, BIGINT_MAX - 1, BIGINT_MIN, BIGINT_MIN + 1,
] + [_rnd.randint(-(2**63), 2**63 - 1) for _ in range(300)] + [_rnd.randint(-10**6, 10**6) for _ in range(100)]


@pytest.fixture(scope="module")
def conn() -> Iterator[psycopg.Connection[Any]]:
    try:
        c = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        pytest.skip(f"PostgreSQL at {DSN!r} is unreachable: {err}")
    with c:
        encoding = c.execute("SELECT current_setting('server_encoding')").fetchone()
        if encoding is None or encoding[0] != "UTF8":
            pytest.skip(f"the database is not UTF8 ({encoding}): the bucket function requires UTF8")
        yield c


def _sql(expr: str) -> str:
    return expr.replace("%", "%%")  # the expression's modulo, not a placeholder


@pytest.mark.parametrize("n", COUNTS)
def test_python_and_sql_give_every_key_the_same_bucket(conn: psycopg.Connection[Any], n: int) -> None:
    text_expr = _sql(bucket_sql("k", n, "text"))
    text_rf = _sql(bucket_sql("k", n, "text", row_filter=True))  # the publication's form (get_byte)
    int_expr = _sql(bucket_sql("k", n, "integer"))
    assert text_rf != text_expr
    row = conn.execute(
        f"SELECT (SELECT array_agg({text_expr} ORDER BY i) FROM unnest(%(texts)s::text[]) WITH ORDINALITY t(k, i)),"
        f" (SELECT array_agg({text_expr} ORDER BY i) FROM unnest(%(ints)s::bigint[]) WITH ORDINALITY t(k, i)),"
        f" (SELECT array_agg({int_expr} ORDER BY i) FROM unnest(%(ints)s::bigint[]) WITH ORDINALITY t(k, i)),"
        f" (SELECT array_agg({int_expr} ORDER BY i) FROM unnest(%(ints)s::text[]) WITH ORDINALITY t(k, i)),"
        f" (SELECT array_agg({text_rf} ORDER BY i) FROM unnest(%(texts)s::text[]) WITH ORDINALITY t(k, i)),"
        f" (SELECT array_agg({text_rf} ORDER BY i) FROM unnest(%(ints)s::bigint[]) WITH ORDINALITY t(k, i))",
        {"texts": TEXTS, "ints": INT_KEYS}).fetchone()
    assert row is not None
    sql_text, sql_int_as_text, sql_int, sql_int_from_text, rf_text, rf_int_as_text = row
    assert rf_text == sql_text and rf_int_as_text == sql_int_as_text

    def mismatches(keys: list[Any], sql: list[int], key_type: str, as_key: Any = lambda k: k) -> list[Any]:
        return [(k, s, bucket_of(as_key(k), n, key_type))  # type: ignore[arg-type]
                for k, s in zip(keys, sql, strict=True) if bucket_of(as_key(k), n, key_type) != s]  # type: ignore[arg-type]

    assert all(0 <= b < n for b in sql_text + sql_int)
    assert mismatches(TEXTS, sql_text, "text") == []
    # an int given for a text key is its decimal text, as PostgreSQL's int::text
    assert mismatches(INT_KEYS, sql_int_as_text, "text") == []
    assert mismatches(INT_KEYS, sql_int, "integer") == []
    # an integer key given as a digit string
    assert mismatches(INT_KEYS, sql_int_from_text, "integer", str) == []
    assert mismatches(INT_KEYS, sql_int_from_text, "integer", lambda k: f"+{k}" if k >= 0 else str(k)) == []
    # an integral float (exactly representable) is accepted and agrees
    exact = [(k, s) for k, s in zip(INT_KEYS, sql_int, strict=True) if abs(k) <= 2**53]
    assert mismatches([k for k, _ in exact], [s for _, s in exact], "integer", float) == []


@pytest.mark.parametrize("n", [7, 4096])
def test_the_publication_row_filter_selects_the_buckets_python_places_there(conn: psycopg.Connection[Any],
                                                                          n: int) -> None:
    members = sorted({bucket_of(k, n) for k in TEXTS[::3]})
    text_filter = _sql(bucket_filter_sql("k", n, "text", members, row_filter=True))
    int_members = sorted({bucket_of(k, n, "integer") for k in INT_KEYS[::3]})
    int_filter = _sql(bucket_filter_sql("k", n, "integer", int_members))
    row = conn.execute(
        f"SELECT (SELECT coalesce(array_agg(k), '{{}}') FROM unnest(%(texts)s::text[]) k WHERE {text_filter}),"
        f" (SELECT coalesce(array_agg(k), '{{}}') FROM unnest(%(ints)s::bigint[]) k WHERE {int_filter})",
        {"texts": TEXTS, "ints": INT_KEYS}).fetchone()
    assert row is not None
    # compared as multisets
    assert sorted(row[0]) == sorted(k for k in TEXTS if bucket_of(k, n) in members)
    assert sorted(row[1]) == sorted(k for k in INT_KEYS if bucket_of(k, n, "integer") in int_members)


def test_only_the_row_filter_form_is_admitted_in_a_publication(conn: psycopg.Connection[Any]) -> None:
    """Why two forms: the fast one casts through text, which a publication's row filter refuses."""
    table, pub = f"reflex_rf_{os.getpid()}", f"reflex_rf_pub_{os.getpid()}"
    conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (k text PRIMARY KEY)")
    try:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="invalid publication WHERE expression"):
            conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {table} WHERE {bucket_filter_sql('k', 64, 'text', [3])}")
        conn.execute(f"CREATE PUBLICATION {pub} FOR TABLE {table} "
                     f"WHERE {bucket_filter_sql('k', 64, 'text', [3], row_filter=True)}")
    finally:
        conn.execute(f"DROP PUBLICATION IF EXISTS {pub}")
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def test_sql_gives_null_and_rounds_where_python_refuses(conn: psycopg.Connection[Any]) -> None:
    """Why bucket_of refuses these keys: SQL's answer differs from what Python would naturally compute."""
    # no parameters: psycopg sends these queries as they are (no %% escaping)
    assert conn.execute(f"SELECT {bucket_sql('NULL::text', 16, 'text', row_filter=True)}").fetchone() == (None,)
    row = conn.execute(f"SELECT {bucket_sql('NULL::text', 16, 'text')},"
                       f" {bucket_sql('7.9::float8', 16, 'integer')}, true::text").fetchone()
    assert row == (None, 8, "true")  # NULL key -> no bucket; 7.9::bigint rounds to 8 (int() truncates to 7)
    with pytest.raises(psycopg.errors.NumericValueOutOfRange):
        conn.execute(f"SELECT {bucket_sql(str(BIGINT_MAX + 1), 16, 'integer')}")


@pytest.mark.parametrize(("key", "key_type"), [
    (None, "text"), (None, "integer"), (True, "text"), (False, "integer"), (b"tenant-7", "text"),
    (bytearray(b"7"), "integer"), (7.9, "integer"), (float("nan"), "integer"), (float("inf"), "integer"),
    (7.0, "text"), (BIGINT_MAX + 1, "integer"), (BIGINT_MIN - 1, "integer"), ("a\x00b", "text"),
    ("\ud800", "text"), (" 42", "integer"), ("4_2", "integer"), ("0x2a", "integer"), ("٤٢", "integer"),
    ("", "integer"), (object(), "text"), (object(), "integer"),
])
def test_keys_sql_would_place_differently_are_refused(key: Any, key_type: str) -> None:
    with pytest.raises((TypeError, ValueError)) as refused:
        bucket_of(key, 64, key_type)  # type: ignore[arg-type]
    assert str(refused.value)


def test_bucket_counts_must_be_positive_integers() -> None:
    for n in (0, -1, True, 2.0):
        with pytest.raises(ValueError):
            bucket_of("tenant-1", n)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        bucket_of("tenant-1", 4, "uuid")  # type: ignore[arg-type]
