"""Index proposals for the slowest statements, with the evidence: cost before and with the index in place.

The method is Dexter's and PoWA's: plan the statement, imagine candidate indexes with HypoPG
(`hypopg_create_index`, which only the planner of this session sees; nothing is built), plan again and keep
an index only when the planner uses it and the estimated cost falls to at most `min_cost_ratio` (half, by
default) of before. Our own rules pick the candidates (Dexter tries every column and every pair of the
statement; we read the predicates off the plan's sequential scans, which is cheaper and gives partial indexes):

* only sequential scans of *large* tables (policy `large_table`) are examined: tiny tables are never indexed;
* a column compared with `=` (or a join key) is a candidate when its estimated selectivity (pg_stats:
  1/n_distinct, null_frac, boolean frequencies) keeps at most `max_selectivity` of the rows: low-selectivity
  columns are never an index's leading column;
* multi-column candidates put the equality columns first (most selective first), then one range column;
* `IS NULL`, `IS NOT NULL` and boolean conjuncts, which the normalized text keeps as written, become the
  predicate of a partial index;
* a candidate whose columns lead an existing valid btree index with the same predicate is not tried (the
  statement is already served);
* of the indexes that halve the cost, the cheapest plan wins; a multi-column index only when the best
  single-column plan still costs more than `min_statement_cost` and the wider index halves that again
  (Dexter's bar: a wider index costs more to maintain); within 2 % the narrower, then the partial, wins.

Without HypoPG (`hypopg` extension absent) the same candidates are judged from EXPLAIN alone: an index is
proposed when the predicates it serves keep at most 5 % of a large table's rows, marked `method: explain`
with no cost after.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row

from advisor.diagnostics import Statement
from advisor.plans import NotExplainable, Predicate, ScanSite, cost, explain_generic, quote_ident, render, scan_sites
from reflex_core.database_config import AdvisorPolicy

EXPLAIN_ONLY_MAX_SELECTIVITY = 0.05
MULTI_COLUMN_GAIN = 0.5
TIE = 1.02
MAX_COLUMNS = 3


@dataclass(frozen=True)
class Candidate:
    schema: str
    table: str
    columns: tuple[str, ...]
    where: str | None = None

    @property
    def name(self) -> str:
        base = f"reflex_{self.table}_{'_'.join(self.columns)}"
        if self.where:
            base += "_part"
        digest = hashlib.sha1(repr((self.schema, self.table, self.columns, self.where)).encode()).hexdigest()[:6]
        base = re.sub(r"[^a-z0-9_]", "", base.lower())[:52]
        return f"{base}_{digest}_idx"

    def definition(self, *, concurrently: bool = True, if_not_exists: bool = True) -> str:
        cols = ", ".join(quote_ident(c) for c in self.columns)
        sql = "CREATE INDEX "
        sql += "CONCURRENTLY " if concurrently else ""
        sql += "IF NOT EXISTS " if if_not_exists else ""
        sql += f"{quote_ident(self.name)} ON {quote_ident(self.schema)}.{quote_ident(self.table)} ({cols})"
        return sql + (f" WHERE {self.where}" if self.where else "")


@dataclass
class Proposal:
    schema: str
    table: str
    columns: list[str]
    where: str | None
    name: str
    sql: str
    method: str  # "hypopg" | "explain"
    cost_before: float
    cost_after: float | None
    plan_before: str
    plan_after: str | None
    statements: list[dict[str, Any]] = field(default_factory=list)
    selectivity: float | None = None

    @property
    def key(self) -> tuple[str, str, tuple[str, ...], str | None]:
        return (self.schema, self.table, tuple(self.columns), self.where)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"cost_ratio": (round(self.cost_after / self.cost_before, 4)
                                              if self.cost_after is not None and self.cost_before else None)}


@dataclass
class Examined:
    queryid: int
    outcome: str  # "proposed" | "cheap" | "no-large-scan" | "no-candidate" | "not-halved" | "not-explainable"
    detail: str = ""


@dataclass
class TableStats:
    reltuples: float
    bytes: int
    columns: dict[str, str]
    selectivity: dict[tuple[str, str], float]
    indexes: list[tuple[tuple[str, ...], str | None]]


class IndexAdvisor:
    def __init__(self, conn: psycopg.Connection[Any], policy: AdvisorPolicy) -> None:
        self.conn = conn
        self.policy = policy
        self._tables: dict[tuple[str, str], TableStats | None] = {}
        self.hypopg = self._has_hypopg()
        self.examined: list[Examined] = []

    # ------------------------------------------------------------------ catalog reads
    def _has_hypopg(self) -> bool:
        with self.conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'hypopg'")
            return cur.fetchone() is not None

    def table(self, schema: str, table: str) -> TableStats | None:
        key = (schema, table)
        if key not in self._tables:
            self._tables[key] = self._read_table(schema, table)
        return self._tables[key]

    def _read_table(self, schema: str, table: str) -> TableStats | None:
        with self.conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT c.oid, c.reltuples, pg_relation_size(c.oid) AS bytes FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
                        "AND c.relkind IN ('r', 'p', 'm')", (schema, table))
            rel = cur.fetchone()
            if rel is None:
                return None
            cur.execute("SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
                        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped", (rel["oid"],))
            columns = {r["attname"]: r["type"] for r in cur.fetchall()}
            cur.execute("SELECT attname, n_distinct, null_frac, most_common_vals::text AS mcv, "
                        "most_common_freqs AS mcf FROM pg_stats WHERE schemaname = %s AND tablename = %s",
                        (schema, table))
            rows = max(float(rel["reltuples"]), 0.0)
            sel: dict[tuple[str, str], float] = {}
            for s in cur.fetchall():
                nd = float(s["n_distinct"])
                distinct = -nd * rows if nd < 0 else nd
                null = float(s["null_frac"])
                sel[(s["attname"], "eq")] = (1 - null) / max(distinct, 1.0)
                sel[(s["attname"], "join")] = sel[(s["attname"], "eq")]
                sel[(s["attname"], "null")] = null
                sel[(s["attname"], "notnull")] = 1 - null
                if columns.get(s["attname"]) == "boolean" and s["mcv"] and s["mcf"]:
                    vals = s["mcv"].strip("{}").split(",")
                    freqs = dict(zip(vals, s["mcf"], strict=False))
                    sel[(s["attname"], "true")] = float(freqs.get("t", 0.0))
                    sel[(s["attname"], "false")] = float(freqs.get("f", 0.0))
            cur.execute("SELECT string_to_array(i.indkey::text, ' ')::int[] AS keys, "
                        "coalesce(pg_get_expr(i.indpred, i.indrelid), '') AS pred FROM pg_index i "
                        "JOIN pg_am am ON am.oid = (SELECT relam FROM pg_class WHERE oid = i.indexrelid) "
                        "WHERE i.indrelid = %s AND i.indisvalid AND am.amname = 'btree' AND i.indexprs IS NULL",
                        (rel["oid"],))
            index_rows = cur.fetchall()
            cur.execute("SELECT attnum, attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0", (rel["oid"],))
            names = {r["attnum"]: r["attname"] for r in cur.fetchall()}
        indexes = [(tuple(names[k] for k in r["keys"] if k in names), _norm_pred(r["pred"]) or None)
                   for r in index_rows]
        return TableStats(reltuples=rows, bytes=int(rel["bytes"]), columns=columns, selectivity=sel, indexes=indexes)

    def _columns_of(self, schema: str, table: str) -> dict[str, str]:
        stats = self.table(schema, table)
        return stats.columns if stats else {}

    def is_large(self, stats: TableStats) -> bool:
        return stats.reltuples >= self.policy.large_table.rows or stats.bytes >= self.policy.large_table.bytes

    # ------------------------------------------------------------------ candidates
    def candidates(self, site: ScanSite, stats: TableStats) -> list[Candidate]:
        def sel(p: Predicate) -> float:
            return stats.selectivity.get((p.column, p.kind), 1.0 / 3 if p.kind == "range" else 0.005)

        limit = self.policy.max_selectivity
        eq = sorted({p.column: p for p in site.predicates if p.kind in ("eq", "join") and sel(p) <= limit}.values(),
                    key=sel)
        ranges = [p for p in site.predicates if p.kind == "range"]
        partial = [p for p in site.predicates if p.kind in ("null", "notnull", "true", "false")]
        eq_cols = tuple(p.column for p in eq)[:MAX_COLUMNS]
        found: list[Candidate] = []

        def add(cols: tuple[str, ...], where: str | None = None) -> None:
            if not cols:
                return
            cand = Candidate(site.schema, site.table, cols[:MAX_COLUMNS], where)
            if cand not in found and not self._served(cand, stats):
                found.append(cand)

        for p in eq:
            add((p.column,))
        for p in ranges:
            if sel(p) <= limit:
                add((p.column,))
        if len(eq_cols) > 1:
            add(eq_cols)
        if eq_cols and ranges:
            add((*eq_cols[: MAX_COLUMNS - 1], ranges[0].column))
        for p in partial:
            assert p.sql is not None
            lead = eq_cols or (tuple(r.column for r in ranges[:1]) if ranges else (p.column,))
            add(lead, p.sql)
            if sel(p) <= limit and lead != (p.column,):
                add((p.column,), p.sql)
        return found

    @staticmethod
    def _served(cand: Candidate, stats: TableStats) -> bool:
        """An existing btree index already leads with these columns (same predicate, or none)."""
        where = _norm_pred(cand.where) or None
        n = len(cand.columns)
        return any(cols[:n] == cand.columns and (pred is None or pred == where) for cols, pred in stats.indexes)

    def combined_selectivity(self, cand: Candidate, site: ScanSite, stats: TableStats) -> float:
        result = 1.0
        for p in site.predicates:
            if p.column in cand.columns or (cand.where and p.sql == cand.where):
                result *= stats.selectivity.get((p.column, p.kind), 1.0 / 3 if p.kind == "range" else 0.005)
        return result

    # ------------------------------------------------------------------ evaluation
    def hypothetical_cost(self, statement: str, cand: Candidate) -> tuple[float, dict[str, Any], bool]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT indexrelid, indexname FROM hypopg_create_index(%s)",
                        (cand.definition(concurrently=False, if_not_exists=False),))
            row = cur.fetchone()
            assert row is not None
            oid, name = row
            try:
                plan = explain_generic(self.conn, statement)
            finally:
                cur.execute("SELECT hypopg_drop_index(%s)", (oid,))
        return cost(plan), plan, name in _index_names(plan)

    def advise(self, statements: list[Statement]) -> list[Proposal]:
        proposals: dict[tuple[str, str, tuple[str, ...], str | None], Proposal] = {}
        if self.hypopg:
            with self.conn.cursor() as cur:
                cur.execute("SELECT hypopg_reset()")
        for st in statements[: self.policy.analyse_n]:
            proposal = self._advise_one(st)
            if proposal is None:
                continue
            existing = proposals.get(proposal.key)
            if existing is None:
                proposals[proposal.key] = proposal
            else:
                existing.statements.extend(proposal.statements)
        return self._drop_covered(list(proposals.values()))

    def _advise_one(self, st: Statement) -> Proposal | None:
        def done(outcome: str, detail: str = "") -> None:
            self.examined.append(Examined(st.queryid, outcome, detail))

        try:
            plan = explain_generic(self.conn, st.query)
        except NotExplainable as err:
            done("not-explainable", str(err))
            return None
        before = cost(plan)
        if before < self.policy.min_statement_cost:
            done("cheap", f"estimated cost {before:.0f} < {self.policy.min_statement_cost:.0f}")
            return None
        sites = [(s, t) for s in scan_sites(plan, self._columns_of)
                 if (t := self.table(s.schema, s.table)) is not None and self.is_large(t)]
        if not sites:
            done("no-large-scan", "no sequential scan of a large table with an indexable predicate")
            return None
        cands = [(c, s, t) for s, t in sites for c in self.candidates(s, t)]
        if not cands:
            done("no-candidate", "predicates are unselective or already served by an index")
            return None
        info = {"queryid": st.queryid, "query": st.query[:2000], "calls": st.calls, "mean_ms": round(st.mean_ms, 3),
                "total_ms": round(st.total_ms, 3)}
        if not self.hypopg:
            return self._explain_only(st, plan, before, cands, info, done)
        tried = []
        for cand, _site, _stats in cands:
            after, new_plan, used = self.hypothetical_cost(st.query, cand)
            if used:
                tried.append((cand, after, new_plan))
        best = _choose(tried, self.policy.min_statement_cost)
        if best is None or best[1] > self.policy.min_cost_ratio * before:
            got = f"best {best[1]:.0f}" if best else "no candidate used by the planner"
            done("not-halved", f"cost {before:.0f}: {got}")
            return None
        cand, after, new_plan = best
        done("proposed", cand.name)
        return Proposal(schema=cand.schema, table=cand.table, columns=list(cand.columns), where=cand.where,
                        name=cand.name, sql=cand.definition(), method="hypopg", cost_before=before,
                        cost_after=after, plan_before=render(plan), plan_after=render(new_plan),
                        statements=[info | {"cost_before": before, "cost_after": after}])

    def _explain_only(self, st: Statement, plan: dict[str, Any], before: float,
                      cands: list[tuple[Candidate, ScanSite, TableStats]], info: dict[str, Any],
                      done: Any) -> Proposal | None:
        scored = sorted(((self.combined_selectivity(c, s, t), len(c.columns), c) for c, s, t in cands),
                        key=lambda x: (x[0], x[1]))
        sel, _, cand = scored[0]
        if sel > EXPLAIN_ONLY_MAX_SELECTIVITY:
            done("not-halved", f"without HypoPG: best candidate keeps {sel:.1%} of the rows")
            return None
        done("proposed", cand.name)
        return Proposal(schema=cand.schema, table=cand.table, columns=list(cand.columns), where=cand.where,
                        name=cand.name, sql=cand.definition(), method="explain", cost_before=before, cost_after=None,
                        plan_before=render(plan), plan_after=None, selectivity=sel,
                        statements=[info | {"cost_before": before, "cost_after": None}])

    def _drop_covered(self, proposals: list[Proposal]) -> list[Proposal]:
        """A single-column proposal whose column leads a multi-column one on the same table is dropped when the
        wider index also halves its statements (one index instead of two, Dexter's rule)."""
        keep = []
        for p in proposals:
            wider = next((q for q in proposals if q is not p and q.table == p.table and q.schema == p.schema
                          and len(q.columns) > len(p.columns) and q.columns[: len(p.columns)] == p.columns
                          and q.where == p.where), None)
            if wider is None or not self.hypopg or not self._wider_serves(wider, p):
                keep.append(p)
                continue
            wider.statements.extend(p.statements)
        return keep

    def _wider_serves(self, wider: Proposal, narrow: Proposal) -> bool:
        cand = Candidate(wider.schema, wider.table, tuple(wider.columns), wider.where)
        for st in narrow.statements:
            after, _, used = self.hypothetical_cost(st["query"], cand)
            if not used or after > self.policy.min_cost_ratio * float(st["cost_before"]):
                return False
            st["cost_after"] = after
        return True


def _choose(tried: list[tuple[Candidate, float, dict[str, Any]]],
            min_cost: float) -> tuple[Candidate, float, dict[str, Any]] | None:
    if not tried:
        return None
    single = [t for t in tried if len(t[0].columns) == 1]
    best_single = min((t[1] for t in single), default=float("inf"))
    # Dexter's bar for a wider index: the best single-column plan is still expensive, and the wider index
    # halves it again.
    eligible = [t for t in tried if len(t[0].columns) == 1
                or (best_single > min_cost and t[1] <= MULTI_COLUMN_GAIN * best_single)]
    if not eligible:
        eligible = tried
    lowest = min(t[1] for t in eligible)
    close = [t for t in eligible if t[1] <= lowest * TIE]
    return min(close, key=lambda t: (len(t[0].columns), t[0].where is None, t[1]))


def _index_names(plan: dict[str, Any]) -> set[str]:
    from advisor.plans import index_names

    return index_names(plan)


def _norm_pred(pred: str | None) -> str:
    return re.sub(r"[()\s]", "", pred or "").lower()
