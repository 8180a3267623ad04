"""Generic plans of normalized statements, and the predicates their scans filter on.

`pg_stat_statements` keeps statements with their constants replaced by `$1, $2, ...`. PostgreSQL 16 can
`EXPLAIN (GENERIC_PLAN)` such text; on 15 (and for every version, so the advisor behaves the same) the text is
prepared and explained with `plan_cache_mode = force_generic_plan`:

    PREPARE s AS <statement>;  EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE s(NULL, ...);  DEALLOCATE s

The generic plan is built without the parameter values (the NULLs are never looked at), so its estimates are
what the planner expects for a typical value: `col = $1` is estimated at 1/n_distinct of the rows. Nothing is
executed: plain EXPLAIN only, never ANALYZE, and the session is read-only, so even a write statement is
planned and never run. A hypothetical index (HypoPG) is seen only by plans built after it exists, so every
evaluation prepares the statement afresh.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

PARAM = re.compile(r"\$(\d+)")
EXPLAINABLE = re.compile(r"^\s*(\(\s*)*(select|with|update|delete|insert|values|table)\b", re.IGNORECASE)
_COMPARISON = re.compile(r"\s(=|<>|!=|<=|>=|<|>|~~\*?|!~~\*?)\s")
_CAST = re.compile(r"::[A-Za-z_][\w ]*(\[\])?(\([\d, ]+\))?")
_IDENT = re.compile(r'^(?:"?[A-Za-z_][\w$]*"?\.)?"?([A-Za-z_][\w$]*)"?$')


class NotExplainable(ValueError):
    """The statement cannot be planned generically (not DML, truncated text, untyped parameter, ...)."""


@dataclass(frozen=True)
class Predicate:
    column: str
    kind: str  # "eq" | "range" | "null" | "notnull" | "true" | "false" | "join"
    # The predicate as SQL on the column alone (for a partial index), when it has no parameter.
    sql: str | None = None


@dataclass
class ScanSite:
    schema: str
    table: str
    alias: str
    node: str
    plan_rows: float
    predicates: list[Predicate] = field(default_factory=list)


def explain_generic(conn: psycopg.Connection[Any], statement: str, name: str = "reflex_advisor_stmt") -> dict[str, Any]:
    """The generic plan (EXPLAIN without ANALYZE) of a normalized statement, as EXPLAIN's JSON `Plan`."""
    if not EXPLAINABLE.match(statement):
        raise NotExplainable("not a SELECT, INSERT, UPDATE, DELETE or WITH statement")
    text = statement.strip().rstrip(";")
    if ";" in text:
        raise NotExplainable("more than one statement")
    params = max((int(n) for n in PARAM.findall(text)), default=0)
    args = f"({', '.join(['NULL'] * params)})" if params else ""
    with conn.cursor() as cur:
        try:
            cur.execute("SET plan_cache_mode = force_generic_plan")
            cur.execute(f"PREPARE {name} AS {text}")
        except psycopg.errors.UndefinedTable as err:
            raise NotExplainable(f"table no longer exists: {_first(err)}") from None
        except psycopg.Error as err:
            raise NotExplainable(_first(err)) from None
        try:
            cur.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {name}{args}")
            row = cur.fetchone()
        except psycopg.Error as err:
            raise NotExplainable(_first(err)) from None
        finally:
            cur.execute(f"DEALLOCATE {name}")
    assert row is not None
    doc = row[0] if not isinstance(row[0], str) else json.loads(row[0])
    return dict(doc[0]["Plan"])


def cost(plan: dict[str, Any]) -> float:
    return float(plan["Total Cost"])


def walk(plan: dict[str, Any], parents: tuple[dict[str, Any], ...] = ()) -> Iterator[tuple[dict[str, Any],
                                                                                        tuple[dict[str, Any], ...]]]:
    yield plan, parents
    for child in plan.get("Plans", []):
        yield from walk(child, (*parents, plan))


def index_names(plan: dict[str, Any]) -> set[str]:
    return {str(node["Index Name"]) for node, _ in walk(plan) if "Index Name" in node}


def render(plan: dict[str, Any]) -> str:
    """A short text rendering of a JSON plan: one line per node with its relation, index and cost."""
    lines = []
    for node, parents in walk(plan):
        what = node["Node Type"]
        if node.get("Parallel Aware"):
            what = "Parallel " + what
        if "Relation Name" in node:
            what += f" on {node.get('Schema', 'public')}.{node['Relation Name']}"
        if "Index Name" in node:
            what += f" using {node['Index Name']}"
        detail = ""
        for key in ("Index Cond", "Recheck Cond", "Hash Cond", "Filter"):
            if key in node:
                detail += f" {key}: {node[key]}"
        lines.append(f"{'  ' * len(parents)}{what} (cost={node['Startup Cost']:.2f}..{node['Total Cost']:.2f} "
                     f"rows={node['Plan Rows']:.0f}){detail}")
    return "\n".join(lines)


def scan_sites(plan: dict[str, Any], columns_of: Any) -> list[ScanSite]:
    """The sequential scans of a plan with the predicates that could use an index on their table.

    `columns_of(schema, table)` gives the table's column names and types ({name: type}). Filter conjuncts on
    one column of the scanned table become predicates; join conditions above the scan that name one of its
    columns become `join` predicates (an index there can turn a hash join into a nested loop).
    """
    sites = []
    for node, parents in walk(plan):
        if node["Node Type"] != "Seq Scan" or "Relation Name" not in node:
            continue
        schema, table = node.get("Schema", "public"), node["Relation Name"]
        alias = node.get("Alias", table)
        columns = columns_of(schema, table)
        preds: list[Predicate] = []
        if "Filter" in node:
            for part in split_and(node["Filter"]):
                pred = conjunct(part, columns)
                if pred is not None:
                    preds.append(pred)
        for parent in parents:
            for key in ("Hash Cond", "Merge Cond", "Join Filter"):
                if key in parent:
                    preds.extend(join_predicates(parent[key], alias, columns))
        if preds:
            sites.append(ScanSite(schema=schema, table=table, alias=alias, node=node["Node Type"],
                                  plan_rows=float(node["Plan Rows"]), predicates=_unique(preds)))
    return sites


def _unique(preds: list[Predicate]) -> list[Predicate]:
    seen: dict[tuple[str, str], Predicate] = {}
    for p in preds:
        seen.setdefault((p.column, p.kind), p)
    return list(seen.values())


def strip_parens(text: str) -> str:
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _balanced_outer(text):
        text = text[1:-1].strip()
    return text


def _balanced_outer(text: str) -> bool:
    depth = 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def split_and(text: str) -> list[str]:
    """Top-level AND conjuncts of a plan expression (OR-ed alternatives stay one conjunct)."""
    text = strip_parens(text)
    parts, depth, start, quoted = [], 0, 0, False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted:
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and text.startswith(" AND ", i):
                parts.append(text[start:i])
                start = i + 5
                i += 5
                continue
        i += 1
    parts.append(text[start:])
    return [strip_parens(p) for p in parts if p.strip()]


def _column(expr: str, columns: dict[str, str]) -> str | None:
    bare = strip_parens(_CAST.sub("", strip_parens(expr)))
    m = _IDENT.match(bare)
    if m and m.group(1) in columns:
        return m.group(1)
    return None


def conjunct(text: str, columns: dict[str, str]) -> Predicate | None:
    text = strip_parens(text)
    upper = text.upper()
    if " OR " in upper:
        return None
    for suffix, kind in ((" IS NOT NULL", "notnull"), (" IS NULL", "null")):
        if upper.endswith(suffix):
            col = _column(text[: -len(suffix)], columns)
            return Predicate(col, kind, f"{_quote(col)}{suffix}") if col else None
    if upper.startswith("NOT "):
        col = _column(text[4:], columns)
        if col and columns[col] == "boolean":
            return Predicate(col, "false", f"NOT {_quote(col)}")
        return None
    col = _column(text, columns)
    if col and columns[col] == "boolean":
        return Predicate(col, "true", _quote(col))
    m = _COMPARISON.search(text)
    if not m:
        return None
    op, lhs, rhs = m.group(1), text[: m.start()], text[m.end():]
    col = _column(lhs, columns)
    other = rhs
    if col is None:
        col, other = _column(rhs, columns), lhs
        op = {"<": ">", ">": "<", "<=": ">=", ">=": "<="}.get(op, op)
    if col is None:
        return None
    if op == "=":
        return Predicate(col, "eq")
    if op in ("<", ">", "<=", ">="):
        return Predicate(col, "range")
    del other
    return None  # <>, LIKE and friends are not served by a plain btree index


def join_predicates(text: str, alias: str, columns: dict[str, str]) -> list[Predicate]:
    out = []
    for part in split_and(text):
        for side in re.split(r"\s=\s", strip_parens(part)):
            bare = strip_parens(_CAST.sub("", strip_parens(side)))
            if "." in bare:
                qual, _, col = bare.partition(".")
                if qual.strip('"') == alias and col.strip('"') in columns:
                    out.append(Predicate(col.strip('"'), "join"))
    return out


def _quote(name: str | None) -> str:
    assert name is not None
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def quote_ident(name: str) -> str:
    return _quote(name)


def _first(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
