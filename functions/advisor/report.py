"""The advisor's outputs: the JSON and Markdown report (S3), the EMF metrics, and the one-line summary that
goes into the audit record (and so into the notification)."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from typing import Any

from reflex_core.observability import NAMESPACE

REPORT_BUCKET_ENV = "REFLEX_REPORT_BUCKET"


def summary(report: dict[str, Any]) -> dict[str, Any]:
    d = report["diagnostics"]
    return {
        "database": report["database"],
        "statements": len(d["top_by_total"]),
        "proposals": len(report["proposals"]),
        "seq_scans_on_large_tables": len(d["seq_scans"]),
        "unused_indexes": len(d["unused_indexes"]),
        "unused_index_bytes": sum(int(i["bytes"]) for i in d["unused_indexes"]),
        "duplicate_indexes": len(d["duplicate_indexes"]),
        "unindexed_foreign_keys": len(d["unindexed_foreign_keys"]),
        "bloated_relations": len(d["table_bloat"]) + len(d["index_bloat"]),
        "connections_used_ratio": d["connections"].get("used_ratio"),
        "replication_lag_s": _max_lag(d["replication"]),
        "hypopg": report["hypopg"],
    }


def summary_line(s: dict[str, Any]) -> str:
    return (f"{s['database']}: {s['proposals']} index proposal(s), {s['unused_indexes']} unused and "
            f"{s['duplicate_indexes']} duplicate index(es), {s['unindexed_foreign_keys']} unindexed FK(s), "
            f"{s['seq_scans_on_large_tables']} large table(s) scanned sequentially, connections "
            f"{(s['connections_used_ratio'] or 0):.0%} of max"
            + ("" if s["hypopg"] else "; HypoPG absent: proposals from EXPLAIN only"))


def _max_lag(replication: dict[str, Any]) -> float | None:
    if replication.get("role") == "replica":
        lag = replication.get("lag_s")
        return None if lag is None else float(lag)
    lags = [r["replay_lag_s"] for r in replication.get("replicas") or [] if r.get("replay_lag_s") is not None]
    return max(lags) if lags else None


def emf(stage: str, s: dict[str, Any], at: datetime) -> str:
    """One CloudWatch embedded-metric-format line per database (dimensions stage and database)."""
    values: dict[str, tuple[float, str]] = {
        "AdvisorIndexProposals": (s["proposals"], "Count"),
        "AdvisorUnusedIndexes": (s["unused_indexes"], "Count"),
        "AdvisorUnusedIndexBytes": (s["unused_index_bytes"], "Bytes"),
        "AdvisorDuplicateIndexes": (s["duplicate_indexes"], "Count"),
        "AdvisorUnindexedForeignKeys": (s["unindexed_foreign_keys"], "Count"),
        "AdvisorSeqScansLargeTables": (s["seq_scans_on_large_tables"], "Count"),
        "AdvisorBloatedRelations": (s["bloated_relations"], "Count"),
    }
    if s["connections_used_ratio"] is not None:
        values["DatabaseConnectionsUsedPercent"] = (round(100 * s["connections_used_ratio"], 2), "Percent")
    if s["replication_lag_s"] is not None:
        values["DatabaseReplicationLagSeconds"] = (s["replication_lag_s"], "Seconds")
    return emf_line(stage, s["database"], values, at)


def emf_line(stage: str, database: str, values: dict[str, tuple[float, str]], at: datetime | None = None) -> str:
    doc: dict[str, Any] = {
        "_aws": {"Timestamp": int((at.timestamp() if at else time.time()) * 1000), "CloudWatchMetrics": [{
            "Namespace": NAMESPACE, "Dimensions": [["stage", "database"]],
            "Metrics": [{"Name": k, "Unit": unit} for k, (_, unit) in values.items()]}]},
        "stage": stage, "database": database,
    }
    doc.update({k: v for k, (v, _) in values.items()})
    return json.dumps(doc, default=str)


def print_emf(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def markdown(report: dict[str, Any]) -> str:
    d = report["diagnostics"]
    s = summary(report)
    out = [f"# Database advisor: {report['database']}", "",
           f"Generated {report['generated_at']} · PostgreSQL {d['server_version']} · "
           f"{'replica' if d['in_recovery'] else 'primary'} · statistics since {d['stats_reset'] or 'unknown'}", "",
           summary_line(s) + ".", ""]
    out += ["## Index proposals", ""]
    if not report["proposals"]:
        out.append("None: no examined statement has an index that at least halves its estimated cost.")
    for p in report["proposals"]:
        ratio = f"{p['cost_after']:.0f} ({p['cost_ratio']:.1%} of before)" if p["cost_after"] is not None else \
            f"not estimated (HypoPG absent; predicates keep {p['selectivity']:.2%} of the rows)"
        out += [f"### `{p['schema']}.{p['table']}` ({', '.join(p['columns'])})"
                + (f" WHERE {p['where']}" if p["where"] else ""), "",
                "```sql", p["sql"] + ";", "```", "",
                f"Estimated cost {p['cost_before']:.0f} -> {ratio}; method `{p['method']}`.", "",
                "Statements:", ""]
        out += [f"- `{st['query'][:300]}` ({st['calls']} calls, mean {st['mean_ms']} ms)" for st in p["statements"]]
        out += ["", "Plan before:", "```", p["plan_before"], "```"]
        if p["plan_after"]:
            out += ["Plan with the hypothetical index:", "```", p["plan_after"], "```"]
        out.append("")
    out += _table("Top statements by total time", d["top_by_total"], ["query", "calls", "total_ms", "mean_ms"])
    out += _table("Top statements by mean time", d["top_by_mean"], ["query", "calls", "mean_ms"])
    out += _table("Top statements by calls", d["top_by_calls"], ["query", "calls", "mean_ms"])
    out += _table("Sequential scans on large tables", d["seq_scans"], ["table", "seq_scan", "seq_tup_read", "rows"])
    out += _table("Unused indexes", d["unused_indexes"], ["table", "index", "bytes"])
    out += _table("Duplicate indexes", d["duplicate_indexes"], ["table", "index", "covered_by", "kind", "bytes"])
    out += _table("Foreign keys without an index", d["unindexed_foreign_keys"], ["table", "constraint", "columns"])
    out += _table("Bloat (estimate)", d["table_bloat"] + d["index_bloat"], ["kind", "table", "bytes", "bloat_ratio"])
    c = d["connections"]
    out += ["## Connections", "", f"{c['used']} of {c['max_connections']} (reserved {c['reserved']}), "
            f"{c['active']} active, {c['idle_in_transaction']} idle in transaction.", ""]
    out += ["## Replication", "", "```json", json.dumps(d["replication"], default=str), "```", ""]
    skipped = [e for e in report["examined"] if e["outcome"] != "proposed"]
    out += _table("Statements examined without a proposal", skipped, ["queryid", "outcome", "detail"])
    return "\n".join(out)


def _table(title: str, rows: list[dict[str, Any]], cols: list[str]) -> list[str]:
    out = [f"## {title}", ""]
    if not rows:
        return [*out, "None.", ""]
    out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [_cell(r.get(c)) for c in cols]
        out.append("| " + " | ".join(cells) + " |")
    return [*out, ""]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        v = round(v, 3)
    text = str(v).replace("|", "\\|").replace("\n", " ")
    return f"`{text[:120]}`" if len(text) > 40 else text
