"""Per-bucket sizes, read from the shards themselves (the planner's input).

For each shard and table: the bytes of the rows (pg_column_size of the whole row) grouped by bucket, over
the buckets the map says the shard owns. It reads every row: fine for the sets this is built for (tens of
GB); for larger tables, `sample_percent` reads a TABLESAMPLE SYSTEM sample and scales it up.
"""

from __future__ import annotations

from typing import Any

from reflex_core.sharding_config import ShardSet
from shards import pg
from shards.buckets import bucket_sql, quote_ident
from shards.shard_map import ShardMap


def bucket_bytes(shard_set: ShardSet, shard_map: ShardMap, connect: pg.Connect,
                 sample_percent: float | None = None) -> dict[int, int]:
    """bucket -> bytes, for every bucket of the set (0 for an empty one)."""
    sizes = dict.fromkeys(range(shard_set.buckets), 0)
    for shard in shard_set.shards:
        owned = shard_map.buckets_of(shard.name)
        if not owned:
            continue
        conn = connect(shard)
        try:
            for t in shard_set.tables:
                b = bucket_sql(quote_ident(t.key_column), shard_set.buckets, shard_set.key.type)
                sample = f" TABLESAMPLE SYSTEM ({float(sample_percent)})" if sample_percent else ""
                scale = 100.0 / sample_percent if sample_percent else 1.0
                rows: list[Any] = conn.execute(
                    f"SELECT {b} AS b, sum(pg_column_size(t.*)) FROM {quote_ident(t.name)} t{sample} "
                    "GROUP BY 1").fetchall()
                mine = set(owned)
                for bucket, size in rows:
                    if int(bucket) in mine:
                        sizes[int(bucket)] += int(float(size) * scale)
        finally:
            conn.close()
    return sizes
