"""The bucket function: which of a shard set's N hash buckets a shard key belongs to.

It must give the same answer in every place that decides where a row lives: the router (Python, in the
application), the write fence (a trigger in each shard database), the online copy (the row filter of a
logical replication publication), the block-writes copy and the verification (SQL queries). So it is
defined twice, here in Python and as a SQL expression, from primitives whose results do not depend on the
PostgreSQL version, the platform or the locale:

* `text` keys: the first 4 bytes of md5(key) read as a big-endian unsigned 32-bit integer, modulo N.
  md5 hashes the key's bytes in the database encoding, so the databases must be UTF8 (Python encodes the
  key as UTF-8). `hashtext`/`hashtextextended` are NOT used: PostgreSQL does not promise them stable
  across major versions.
* `integer` keys: the key modulo N, made non-negative ((k % N) + N) % N (Python's % already is).

The SQL expression comes in two forms. The publication's row filter admits only columns, constants, built-in
operators and immutable built-in functions (no user-defined function, no cast through text), so it reads the
4 bytes one by one (`get_byte(decode(md5(key), 'hex'), i)`: md5 evaluated four times per row). Every other
query (copy, verification, deletes, bucket sizes, the fence trigger's function) reads them at once as a
32-bit string (`('x' || left(md5(key), 8))::bit(32)::bigint`: md5 once, about 3 x cheaper per row, measured
on 1,000,000 keys: 1.4 s against 3.9 s). tests/integration/test_shard_buckets_pg.py checks Python against both
forms on real PostgreSQL.

Which keys the Python function accepts (it must give the SQL answer for every key it accepts, so it refuses,
with a TypeError or ValueError naming the key's type, every key it could not place the way SQL would):

* `text` keys: a `str` (hashed as its UTF-8 bytes), or an `int` (hashed as its decimal text, which is what
  PostgreSQL's `int::text` gives). Refused: None (SQL's bucket of NULL is NULL: no shard owns such a row),
  bool (Python's "True" is not PostgreSQL's `true::text`), bytes (which text they stand for depends on a
  decoding the caller knows and we do not: decode them first), floats and any other type, a str holding
  NUL (PostgreSQL text cannot) or a lone surrogate (not encodable as UTF-8).
* `integer` keys: an `int` (or an integer-like object with `__index__`, such as numpy's), a float only if it
  is integral (`7.0`: SQL's `::bigint` ROUNDS `7.9` to 8 where `int()` truncates to 7, so `7.9` is refused),
  or a str of ASCII digits with an optional sign (`"-42"`); always within bigint's range (the SQL expression
  casts to bigint, which refuses anything larger). Refused: None, bool, bytes, other strings, other types.
"""

from __future__ import annotations

import hashlib
import math
import operator
import re
from typing import Literal

KeyType = Literal["text", "integer"]

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")


def bucket_of(key: str | int, buckets: int, key_type: KeyType = "text") -> int:
    """The bucket of one shard key (the router's function; see the module docstring for the keys it accepts:
    the others raise TypeError or ValueError rather than land in a bucket the SQL function would not give)."""
    n = _bucket_count(buckets)
    if key_type == "integer":
        return integer_key(key) % n
    if key_type == "text":
        digest = hashlib.md5(text_key_bytes(key), usedforsecurity=False).digest()
        return int.from_bytes(digest[:4], "big") % n
    raise ValueError(f"unknown shard key type {key_type!r} (expected 'text' or 'integer')")


def _bucket_count(buckets: object) -> int:
    if isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise ValueError(f"the bucket count must be a positive integer, not {buckets!r}")
    return buckets


def text_key_bytes(key: object) -> bytes:
    """The bytes md5 hashes for a `text` shard key: the UTF-8 of the text PostgreSQL stores for it."""
    if key is None:
        raise TypeError("a shard key cannot be None (SQL places no row with a NULL key): pass the key's value")
    if isinstance(key, bool):
        raise TypeError(f"a text shard key cannot be a bool ({key!r}): pass the text the column holds")
    if isinstance(key, str):
        if "\x00" in key:
            raise ValueError("a text shard key cannot contain NUL characters (PostgreSQL text cannot hold them)")
        try:
            return key.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"a text shard key must be valid Unicode text (not encodable as UTF-8): {key!r}"
                             ) from None
    if isinstance(key, int):
        return str(int(key)).encode("ascii")
    if isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"a text shard key must be str, not {type(key).__name__}: decode it first "
                        "(its text depends on an encoding only the caller knows)")
    raise TypeError(f"a text shard key must be str (or int), not {type(key).__name__}")


def integer_key(key: object) -> int:
    """An `integer` shard key as the int SQL's `::bigint` gives, or TypeError/ValueError when they could
    differ (see the module docstring)."""
    if key is None:
        raise TypeError("a shard key cannot be None (SQL places no row with a NULL key): pass the key's value")
    if isinstance(key, bool):
        raise TypeError(f"an integer shard key cannot be a bool ({key!r})")
    value: int
    if isinstance(key, int):
        value = int(key)
    elif isinstance(key, float):
        if not math.isfinite(key) or not key.is_integer():
            raise ValueError(f"an integer shard key must be integral, not the float {key!r} "
                             "(SQL's ::bigint rounds where Python's int() truncates)")
        value = int(key)
    elif isinstance(key, str):
        if not _INTEGER_TEXT.fullmatch(key):
            raise ValueError(f"an integer shard key given as str must be ASCII digits with an optional sign, "
                             f"not {key!r}")
        value = int(key)
    elif isinstance(key, bytes | bytearray | memoryview):
        raise TypeError(f"an integer shard key must be int, not {type(key).__name__}")
    else:
        try:
            value = operator.index(key)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"an integer shard key must be int, not {type(key).__name__}") from None
    if not BIGINT_MIN <= value <= BIGINT_MAX:
        raise ValueError(f"an integer shard key must fit in bigint (the SQL function casts to bigint): {value}")
    return value


def quote_ident(name: str) -> str:
    """A (possibly schema-qualified) identifier, quoted. Config validation admits only [a-z0-9_] names."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def bucket_sql(column_sql: str, buckets: int | str, key_type: KeyType = "text", *, row_filter: bool = False) -> str:
    """The same function as a SQL expression over a column (or any text/integer expression); `buckets` is a
    number, or a SQL expression (the name of a function argument). `row_filter`: the form a publication's row
    filter admits (slower: md5 four times)."""
    n = buckets if isinstance(buckets, str) else int(buckets)
    if key_type == "integer":
        return f"(((({column_sql})::bigint % {n}) + {n}) % {n})"
    if not row_filter:
        return f"(('x' || left(md5(({column_sql})::text), 8))::bit(32)::bigint % {n})"
    d = f"decode(md5(({column_sql})::text), 'hex')"
    return (f"((get_byte({d}, 0)::bigint * 16777216 + get_byte({d}, 1) * 65536 + get_byte({d}, 2) * 256"
            f" + get_byte({d}, 3)) % {n})")


def bucket_filter_sql(column_sql: str, buckets: int, key_type: KeyType, members: list[int], *,
                      row_filter: bool = False) -> str:
    """`bucket(column) IN (...)`; `row_filter`: in the form a publication's row filter admits."""
    listed = ", ".join(str(int(b)) for b in sorted(set(members)))
    return f"({bucket_sql(column_sql, buckets, key_type, row_filter=row_filter)} IN ({listed}))"


def ranges(buckets: list[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2,5,7-8' (for audit records and messages)."""
    out: list[str] = []
    ordered = sorted(set(buckets))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        out.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(out)
