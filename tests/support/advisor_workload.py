"""A seeded workload with known missing indexes and known traps, for the advisor's tests and benchmark.

Needed indexes (what a good advisor proposes):
  * single column  orders (customer_id)                    -- `WHERE customer_id = $1` (also an unindexed FK)
  * multi-column   orders (product_id, store_id)           -- `WHERE product_id = $1 AND store_id = $2`
  * partial        orders (store_id) WHERE processed_at IS NULL -- the queue of unprocessed orders of a store
Traps (no proposal wanted):
  * low selectivity  `WHERE status = $1` (4 values)
  * tiny table       countries (50 rows)
  * already served   events (account_id) has an index (and a duplicate of it, and an unused index on kind)
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE EXTENSION IF NOT EXISTS hypopg;
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL, region text NOT NULL, country text);
CREATE TABLE orders (
  id bigint PRIMARY KEY, customer_id bigint NOT NULL, product_id int NOT NULL,
  store_id int NOT NULL, status text NOT NULL, created_at timestamptz NOT NULL, processed_at timestamptz,
  total numeric(10, 2) NOT NULL);
CREATE TABLE events (id bigint PRIMARY KEY, account_id int NOT NULL, kind text NOT NULL, at timestamptz NOT NULL);
CREATE INDEX events_account_idx ON events (account_id);
CREATE INDEX events_account_copy_idx ON events (account_id);
CREATE INDEX events_kind_idx ON events (kind);
INSERT INTO countries SELECT 'c' || g, 'country ' || g FROM generate_series(1, 50) g;
INSERT INTO customers SELECT g, 'user' || g || '@example.com', (ARRAY['eu', 'us', 'ap', 'sa', 'af'])[1 + g % 5],
  'c' || (1 + g % 50) FROM generate_series(1, %(customers)s) g;
INSERT INTO orders SELECT g, 1 + (g * 7919) %% %(customers)s, 1 + (g * 31) %% 1000, 1 + (g * 17) %% 200,
  (ARRAY['open', 'paid', 'shipped', 'closed'])[1 + g %% 4], now() - (g %% 365) * interval '1 day',
  CASE WHEN g %% 100 = 0 THEN NULL ELSE now() END, (g %% 500) + 0.99
  FROM generate_series(1, %(orders)s) g;
-- Added after the rows (one validation scan instead of a check per inserted row).
ALTER TABLE orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id);
INSERT INTO events SELECT g, 1 + g %% 5000, (ARRAY['view', 'click', 'buy'])[1 + g %% 3], now()
  FROM generate_series(1, %(events)s) g;
ANALYZE;
"""


@dataclass(frozen=True)
class Query:
    label: str
    sql: str
    kind: str  # "single" | "multi" | "partial" | "trap-low-selectivity" | "trap-tiny" | "trap-served"
    expected: tuple[str, tuple[str, ...], str | None] | None  # (table, columns, partial predicate)

    def params(self, rng: random.Random, sizes: dict[str, int]) -> tuple[Any, ...]:
        values = {"customer": lambda: rng.randint(1, sizes["customers"]), "product": lambda: rng.randint(1, 1000),
                  "store": lambda: rng.randint(1, 200), "status": lambda: rng.choice(["open", "paid"]),
                  "country": lambda: f"country {rng.randint(1, 50)}", "account": lambda: rng.randint(1, 5000)}
        return tuple(values[name]() for name in _PARAMS[self.label])


_PARAMS = {"by-customer": ["customer"], "touch-customer": ["customer"], "by-product-store": ["product", "store"],
           "unprocessed-of-store": ["store"], "by-status": ["status"], "country-by-name": ["country"],
           "events-of-account": ["account"]}

QUERIES = [
    Query("by-customer", "SELECT id, total FROM orders WHERE customer_id = %s", "single",
          ("orders", ("customer_id",), None)),
    Query("touch-customer", "UPDATE orders SET total = total WHERE customer_id = %s AND total < 0", "single",
          ("orders", ("customer_id",), None)),
    Query("by-product-store", "SELECT id, total FROM orders WHERE product_id = %s AND store_id = %s", "multi",
          ("orders", ("product_id", "store_id"), None)),
    Query("unprocessed-of-store", "SELECT id FROM orders WHERE processed_at IS NULL AND store_id = %s", "partial",
          ("orders", ("store_id",), "processed_at IS NULL")),
    Query("by-status", "SELECT count(*) FROM orders WHERE status = %s", "trap-low-selectivity", None),
    Query("country-by-name", "SELECT code FROM countries WHERE name = %s", "trap-tiny", None),
    Query("events-of-account", "SELECT id, kind FROM events WHERE account_id = %s", "trap-served", None),
]

SIZES = {"customers": 20_000, "orders": 200_000, "events": 100_000}


def seed(conn: Any, sizes: dict[str, int] | None = None) -> None:
    sizes = sizes or SIZES
    sql = SCHEMA.replace("%(customers)s", str(sizes["customers"])).replace("%(orders)s", str(sizes["orders"]))
    sql = sql.replace("%(events)s", str(sizes["events"])).replace("%%", "%")
    conn.execute(sql)


def run(conn: Any, rounds: int = 5, seed_value: int = 7, sizes: dict[str, int] | None = None,
        queries: list[Query] | None = None) -> None:
    """Each query `rounds` times with server-side parameters, so pg_stat_statements records it normalized."""
    sizes = sizes or SIZES
    rng = random.Random(seed_value)
    for _ in range(rounds):
        for q in queries or QUERIES:
            conn.execute(q.sql, q.params(rng, sizes), prepare=False).fetchall() if q.sql.startswith("SELECT") \
                else conn.execute(q.sql, q.params(rng, sizes))
