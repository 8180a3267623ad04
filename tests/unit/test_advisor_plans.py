"""Pure parts of the advisor: reading predicates off plan expressions, choosing among candidates, duplicates."""

from __future__ import annotations

from typing import Any

import pytest

from advisor.commands import PARTIAL_PREDICATE
from advisor.diagnostics import duplicate_indexes
from advisor.index_advisor import Candidate, _choose
from advisor.plans import EXPLAINABLE, Predicate, conjunct, scan_sites, split_and

COLUMNS = {"customer_id": "bigint", "status": "text", "created_at": "timestamp with time zone",
           "processed_at": "timestamp with time zone", "archived": "boolean", "email": "character varying(200)"}


def test_split_and_keeps_or_groups_and_quoted_text_together() -> None:
    text = "((customer_id = $1) AND ((status = 'a AND b'::text) OR (status = $2)) AND (created_at > $3))"
    assert split_and(text) == ["customer_id = $1", "(status = 'a AND b'::text) OR (status = $2)", "created_at > $3"]


@pytest.mark.parametrize(("text", "expected"), [
    ("customer_id = $1", Predicate("customer_id", "eq")),
    ("orders.customer_id = $1", Predicate("customer_id", "eq")),
    ("(email)::text = $1", Predicate("email", "eq")),
    ("$1 < created_at", Predicate("created_at", "range")),
    ("created_at >= (now() - '1 day'::interval)", Predicate("created_at", "range")),
    ("processed_at IS NULL", Predicate("processed_at", "null", "processed_at IS NULL")),
    ("processed_at IS NOT NULL", Predicate("processed_at", "notnull", "processed_at IS NOT NULL")),
    ("archived", Predicate("archived", "true", "archived")),
    ("NOT archived", Predicate("archived", "false", "NOT archived")),
    ("status <> $1", None),
    ("(email)::text ~~ $1", None),
    ("(status = $1) OR (status = $2)", None),
    ("lower((email)::text) = $1", None),
    ("total = $1", None),
])
def test_conjunct(text: str, expected: Predicate | None) -> None:
    assert conjunct(text, COLUMNS) == expected


def test_scan_sites_read_filters_and_join_keys_of_sequential_scans() -> None:
    plan: dict[str, Any] = {
        "Node Type": "Hash Join", "Hash Cond": "(o.customer_id = c.id)", "Plans": [
            {"Node Type": "Seq Scan", "Relation Name": "orders", "Schema": "public", "Alias": "o", "Plan Rows": 10,
             "Filter": "((o.status = $1) AND (o.processed_at IS NULL))"},
            {"Node Type": "Hash", "Plans": [{"Node Type": "Index Scan", "Relation Name": "customers",
                                             "Alias": "c", "Index Name": "customers_pkey", "Plan Rows": 1}]}]}
    (site,) = scan_sites(plan, lambda schema, table: COLUMNS if table == "orders" else {"id": "bigint"})
    assert (site.schema, site.table, site.alias) == ("public", "orders", "o")
    assert site.predicates == [Predicate("status", "eq"), Predicate("processed_at", "null", "processed_at IS NULL"),
                               Predicate("customer_id", "join")]


def test_only_plannable_statements_are_explained() -> None:
    assert EXPLAINABLE.match("  WITH x AS (SELECT 1) SELECT * FROM x")
    assert EXPLAINABLE.match("UPDATE t SET a = $1")
    assert not EXPLAINABLE.match("VACUUM t")
    assert not EXPLAINABLE.match("CREATE INDEX ON t (a)")


def _t(cols: tuple[str, ...], cost: float, where: str | None = None) -> tuple[Candidate, float, dict[str, Any]]:
    return Candidate("public", "orders", cols, where), cost, {}


def test_choose_prefers_narrow_then_partial_and_widens_only_past_dexters_bar() -> None:
    # A wider index that is cheaper, but the single-column plan is already cheap: the narrow one wins.
    assert _choose([_t(("a",), 40), _t(("a", "b"), 15)], 100)[0].columns == ("a",)
    # The single-column plan is still expensive and the wider one halves it: the wider one wins.
    assert _choose([_t(("a",), 400), _t(("a", "b"), 15)], 100)[0].columns == ("a", "b")
    # Within 2 %: the partial index (smaller) wins over the full one.
    assert _choose([_t(("a",), 42.0), _t(("a",), 42.5, "x IS NULL")], 100)[0].where == "x IS NULL"
    assert _choose([], 100) is None


def test_candidate_sql_and_name_are_stable_and_quoted() -> None:
    c = Candidate("public", "Orders", ("customer_id", "Created At"), "processed_at IS NULL")
    assert c.definition() == ('CREATE INDEX CONCURRENTLY IF NOT EXISTS ' + c.name + ' ON public."Orders" '
                              '(customer_id, "Created At") WHERE processed_at IS NULL')
    assert c.name == Candidate("public", "Orders", ("customer_id", "Created At"), "processed_at IS NULL").name
    assert len(c.name) <= 63 and c.name.startswith("reflex_orders_customer_id_createdat_part_")


def test_partial_predicates_accepted_from_the_console() -> None:
    assert all(PARTIAL_PREDICATE.match(p) for p in ("deleted_at IS NULL", "a IS NOT NULL", "archived", "NOT archived"))
    assert not any(PARTIAL_PREDICATE.match(p) for p in ("a = 1", "true; DROP TABLE t", "a IS NULL OR b", "NOT"))


def _ix(name: str, keys: list[int], *, unique: bool = False, pred: str = "", table: int = 1) -> dict[str, Any]:
    return {"schema": "public", "table": "t", "index": name, "table_oid": table, "keys": keys,
            "opclasses": " ".join(["3124"] * len(keys)), "exprs": "", "pred": pred, "is_unique": unique,
            "is_primary": False, "method": "btree", "bytes": 100, "definition": name, "index_oid": None}


def test_duplicate_indexes_identical_and_prefix_never_the_unique_one() -> None:
    found = duplicate_indexes([_ix("a1", [1]), _ix("a2", [1]), _ix("ab", [1, 2]), _ix("u", [3], unique=True),
                               _ix("c", [3]), _ix("p", [1], pred="x IS NULL"), _ix("other", [1], table=2)])
    pairs = {(d["index"], d["covered_by"], d["kind"]) for d in found}
    assert pairs == {("a1", "a2", "identical"), ("a2", "ab", "prefix"), ("c", "u", "identical")}
