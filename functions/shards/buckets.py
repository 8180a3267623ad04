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

The SQL expression uses only immutable built-in functions and operators (`md5`, `decode`, `get_byte`,
arithmetic), which PostgreSQL 15 requires of a publication's row filter (user-defined functions are
refused there). tests/integration/test_shard_buckets_pg.py checks Python against SQL on real PostgreSQL.
"""

from __future__ import annotations

import hashlib
from typing import Literal

KeyType = Literal["text", "integer"]


def bucket_of(key: str | int, buckets: int, key_type: KeyType = "text") -> int:
    """The bucket of one shard key (the router's function; see the module docstring)."""
    if key_type == "integer":
        return int(key) % buckets
    digest = hashlib.md5(str(key).encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % buckets


def quote_ident(name: str) -> str:
    """A (possibly schema-qualified) identifier, quoted. Config validation admits only [a-z0-9_] names."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


def bucket_sql(column_sql: str, buckets: int | str, key_type: KeyType = "text") -> str:
    """The same function as a SQL expression over a column (or any text/integer expression); `buckets` is a
    number, or a SQL expression (the name of a function argument)."""
    n = buckets if isinstance(buckets, str) else int(buckets)
    if key_type == "integer":
        return f"(((({column_sql})::bigint % {n}) + {n}) % {n})"
    d = f"decode(md5(({column_sql})::text), 'hex')"
    return (f"((get_byte({d}, 0)::bigint * 16777216 + get_byte({d}, 1) * 65536 + get_byte({d}, 2) * 256"
            f" + get_byte({d}, 3)) % {n})")


def bucket_filter_sql(column_sql: str, buckets: int, key_type: KeyType, members: list[int]) -> str:
    """`bucket(column) IN (...)`, usable as a publication row filter."""
    listed = ", ".join(str(int(b)) for b in sorted(set(members)))
    return f"({bucket_sql(column_sql, buckets, key_type)} IN ({listed}))"


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
