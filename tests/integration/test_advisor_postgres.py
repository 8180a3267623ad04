"""The advisor on real PostgreSQL 15 with pg_stat_statements and HypoPG (a throw-away cluster per module)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import T0
from tests.support import advisor_workload as workload
from tests.support.advisor import AdvisorBench, make_bench
from tests.support.events import eventbridge_alarm
from tests.support.postgres import Cluster, available, hypopg_available, throwaway_cluster

pytestmark = pytest.mark.skipif(available() is not None or not hypopg_available(),
                                reason=f"{available() or 'HypoPG (postgresql-15-hypopg) is not installed'}")

SIZES = {"customers": 10_000, "orders": 100_000, "events": 40_000}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with throwaway_cluster() as c:
        admin = c.connect()
        admin.execute("CREATE DATABASE app")
        admin.execute("CREATE ROLE reporting LOGIN")
        admin.execute("CREATE ROLE limited LOGIN")
        with c.connect("app") as conn:
            workload.seed(conn, SIZES)
        # A copy before any statement ran: the databases that tests change are cloned from it.
        admin.execute("CREATE DATABASE app_template TEMPLATE app")
        with c.connect("app") as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
            workload.run(conn, rounds=3, sizes=SIZES)
        yield c


_clones = iter(range(1000))


def clone(cluster: Cluster) -> str:
    name = f"app_clone_{next(_clones)}"
    cluster.connect().execute(f"CREATE DATABASE {name} TEMPLATE app_template")
    return name


@pytest.fixture
def bench(cluster: Cluster, clock: Any) -> Iterator[AdvisorBench]:
    from moto import mock_aws

    from reflex_core.runtime import install_runtime

    with mock_aws():
        yield make_bench(cluster, clock, [("app", "app", {})])
    install_runtime(None)


def _one(response: dict[str, Any], outcome: str | None = None) -> dict[str, Any]:
    decisions = response["decisions"]
    if outcome is not None:
        decisions = [d for d in decisions if d["outcome"] == outcome]
    assert len(decisions) == 1, response
    return decisions[0]


# --------------------------------------------------------------------------- advise


def test_advise_proposes_the_missing_indexes_with_evidence_and_reports(bench: AdvisorBench) -> None:
    with bench.cluster.connect("app") as conn:
        updates_before = conn.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'orders'").fetchone()
    response = bench.console("advise", database="app")
    decision = _one(response)
    assert decision["outcome"] == "executed", decision
    key = decision["after"]["report"]
    assert key == decision["intended"]["report"] and key.startswith("advisor/app/")
    report = bench.report(key)

    found = {(p["table"], tuple(p["columns"]), p["where"]): p for p in report["proposals"]}
    expected = {q.expected for q in workload.QUERIES if q.expected}
    assert set(found) == expected, sorted(found)
    for p in report["proposals"]:
        assert p["method"] == "hypopg"
        assert p["cost_after"] <= 0.5 * p["cost_before"], p
        assert p["sql"].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS ")
        assert "Seq Scan on public.orders" in p["plan_before"] and "btree" in p["plan_after"]
    # The UPDATE is served by the same index as the SELECT by customer, and was planned, never run.
    by_customer = found[("orders", ("customer_id",), None)]
    assert {s["query"].split()[0] for s in by_customer["statements"]} == {"SELECT", "UPDATE"}
    with bench.cluster.connect("app") as conn:
        assert conn.execute("SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'orders'").fetchone() \
            == updates_before
    # Traps: the statements are examined and refused for the stated reason.
    outcomes = {e["queryid"]: e for e in report["examined"]}
    texts = {s["queryid"]: s["query"] for s in report["diagnostics"]["top_by_total"]}
    by_text = {texts[q]: e for q, e in outcomes.items() if q in texts}
    assert by_text["SELECT count(*) FROM orders WHERE status = $1"]["outcome"] == "no-candidate"
    assert by_text["SELECT code FROM countries WHERE name = $1"]["outcome"] in ("cheap", "no-large-scan")
    assert by_text["SELECT id, kind FROM events WHERE account_id = $1"]["outcome"] in ("cheap", "no-large-scan")

    d = report["diagnostics"]
    assert {(x["index"], x["covered_by"]) for x in d["duplicate_indexes"]} == \
        {("events_account_copy_idx", "events_account_idx")}
    assert [(x["table"], x["columns"]) for x in d["unindexed_foreign_keys"]] == [("orders", ["customer_id"])]
    assert "events_kind_idx" in {x["index"] for x in d["unused_indexes"]}
    assert "orders" in {x["table"] for x in d["seq_scans"]}
    assert d["connections"]["max_connections"] == 40 and 0 < d["connections"]["used_ratio"] < 1
    assert d["replication"] == {"role": "primary", "replicas": []}
    assert {s["query"] for s in d["top_by_calls"]} >= {q for q in texts.values() if "orders" in q}

    md = bench.report(key.removesuffix(".json") + ".md")
    assert "CREATE INDEX CONCURRENTLY" in md and "## Foreign keys without an index" in md
    assert bench.report("advisor/app/latest.json")["proposals"] == report["proposals"]
    [metric] = bench.emf("AdvisorIndexProposals")
    assert metric["AdvisorIndexProposals"] == 3 and metric["database"] == "app"
    assert metric["AdvisorDuplicateIndexes"] == 1 and metric["AdvisorUnindexedForeignKeys"] == 1
    audit = [r for r in bench.audit() if r["operation"] == "advise"]
    assert [r["outcome"] for r in audit] == ["executed"]
    assert "3 index proposal(s)" in audit[0]["detail"]


def test_scheduled_advise_dry_run_and_unknown_database(bench: AdvisorBench) -> None:
    schedule = {"reflex_schedule": {"name": "advise-app", "operation": "advise", "policy": "app"}}
    assert _one(bench.invoke(schedule))["outcome"] == "executed"
    dry = _one(bench.console("advise", database="app", dry_run=True))
    assert dry["outcome"] == "dry-run" and dry["before"]["proposals"] == 3
    bad = bench.console("advise", database="nope")
    assert bad["status"] == "rejected"
    assert bad["errors"] == ["database: no database named 'nope' (configured: app)"]
    bad = bench.invoke({"reflex_schedule": {"name": "x", "operation": "advise", "policy": "nope"}})
    assert bad["status"] == "rejected" and bad["errors"][0].startswith("reflex_schedule.policy: no database")
    assert sum(r["outcome"] == "rejected:validation" for r in bench.audit()) == 2


def test_unreachable_database_and_missing_privilege_are_audited_and_change_nothing(
        cluster: Cluster, clock: Any) -> None:
    from moto import mock_aws

    from reflex_core.runtime import install_runtime

    with cluster.connect("app") as conn:
        conn.execute("REVOKE ALL ON pg_stat_statements FROM PUBLIC")
    try:
        with mock_aws():
            b = make_bench(cluster, clock, [("down", "app", {}), ("app", "app", {})],
                           port_override={"down": 1}, users={"app": "limited"})
            down = _one(b.console("advise", database="down"))
            assert down["outcome"] == "skipped:database-unreachable"
            assert "cannot connect to 127.0.0.1:1/app as postgres" in down["detail"]
            denied = _one(b.console("advise", database="app"))
            assert denied["outcome"] == "skipped:diagnostics-failed"
            assert "permission denied on pg_stat_statements" in denied["detail"]
            assert sorted(r["outcome"] for r in b.audit() if r["operation"] == "advise") == \
                ["skipped:database-unreachable", "skipped:diagnostics-failed"]
            assert len(b.emf("AdvisorErrors")) == 2
            assert "Contents" not in b.world.clients.s3.list_objects_v2(Bucket="reflex-test-advisor-reports")
        install_runtime(None)
    finally:
        with cluster.connect("app") as conn:
            conn.execute("GRANT SELECT ON pg_stat_statements TO PUBLIC")


def test_without_hypopg_proposals_come_from_explain_alone(cluster: Cluster) -> None:
    from advisor.diagnostics import read_statements
    from advisor.index_advisor import IndexAdvisor
    from reflex_core.database_config import DatabaseTarget

    name = clone(cluster)
    with cluster.connect(name) as conn:
        conn.execute("DROP EXTENSION hypopg")
        workload.run(conn, rounds=1, sizes=SIZES)
    target = DatabaseTarget.model_validate({"name": "app", "connection": {
        "kind": "secret", "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"}})
    with psycopg.connect(cluster.dsn(name), autocommit=True, options="-c default_transaction_read_only=on") as conn:
        advisor = IndexAdvisor(conn, target.advisor)
        assert advisor.hypopg is False
        proposals = advisor.advise(read_statements(conn, target)[0])
    found = {(p.table, tuple(p.columns), p.where) for p in proposals}
    assert ("orders", ("customer_id",), None) in found
    assert all(p.method == "explain" and p.cost_after is None and p.selectivity <= 0.05 for p in proposals)
    assert not any(p.columns == ["status"] for p in proposals)


# --------------------------------------------------------------------------- apply_index


def _buffers(conn: psycopg.Connection[Any], customer: int) -> tuple[int, float, str]:
    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT id, total FROM orders WHERE customer_id = %s",
                        (customer,)).fetchone()[0][0]
    node = plan["Plan"]
    blocks = node["Shared Hit Blocks"] + node["Shared Read Blocks"]
    return blocks, float(plan["Execution Time"]), node["Node Type"]


def test_apply_index_builds_the_proposal_and_the_query_gets_faster(cluster: Cluster, clock: Any) -> None:
    from moto import mock_aws

    from reflex_core.runtime import install_runtime

    name = clone(cluster)
    with mock_aws():
        b = make_bench(cluster, clock, [("app", name, {"advisor": {"allow_apply": True, "unused_index_min_bytes": 0,
                                                                   "large_table": {"rows": 10_000}}})])
        with cluster.connect(name) as conn:
            before = [_buffers(conn, c) for c in range(1, 40, 3)]
        cmd = {"database": "app", "table": "orders", "columns": ["customer_id"]}
        done = _one(b.console("apply_index", **cmd))
        assert done["outcome"] == "executed", done
        assert done["before"]["exists"] is False
        assert done["after"] == done["intended"] == {"index": done["intended"]["index"], "exists": True, "valid": True}
        with cluster.connect(name) as conn:
            after = [_buffers(conn, c) for c in range(1, 40, 3)]
            indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                    (done["intended"]["index"].split(".")[1],)).fetchone()[0]
        assert indexdef.endswith("ON public.orders USING btree (customer_id)")
        # Measurably faster, by the work done (pages touched per execution, deterministic); times are reported.
        assert all(node == "Seq Scan" for _, _, node in before)
        assert all(node != "Seq Scan" for _, _, node in after)
        assert sum(blk for blk, _, _ in after) * 20 < sum(blk for blk, _, _ in before)
        print(f"mean execution ms before {sum(t for _, t, _ in before) / len(before):.3f}, "
              f"after {sum(t for _, t, _ in after) / len(after):.3f}")
        # Idempotent: again is a no-change skip.
        again = _one(b.console("apply_index", **cmd))
        assert again["outcome"] == "skipped:no-change"
        install_runtime(None)


def test_apply_index_drops_an_invalid_leftover_and_rebuilds(cluster: Cluster, clock: Any) -> None:
    from moto import mock_aws

    from advisor.index_advisor import Candidate
    from reflex_core.runtime import install_runtime

    name = clone(cluster)
    cand = Candidate("public", "orders", ("store_id",), "processed_at IS NULL")
    with cluster.connect(name) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        # A failed CONCURRENTLY build leaves an INVALID index with the proposal's name.
        conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY {cand.name} ON orders (store_id)")
    with mock_aws():
        b = make_bench(cluster, clock, [("app", name, {"advisor": {"allow_apply": True}})])
        done = _one(b.console("apply_index", database="app", table="orders", columns=["store_id"],
                              where="processed_at IS NULL"))
        assert done["outcome"] == "executed", done
        assert done["before"] == {"index": f"public.{cand.name}", "exists": True, "valid": False}
        assert done["after"] == {"index": f"public.{cand.name}", "exists": True, "valid": True}
        install_runtime(None)
    with cluster.connect(name) as conn:
        indexdef = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", (cand.name,)).fetchone()[0]
    assert "UNIQUE" not in indexdef and indexdef.endswith("(store_id) WHERE (processed_at IS NULL)")


def test_apply_index_refusals_change_nothing(cluster: Cluster, clock: Any) -> None:
    from moto import mock_aws

    from advisor.advisor_reaction import shard_move_lock
    from reflex_core.runtime import install_runtime

    name = clone(cluster)
    with mock_aws():
        b = make_bench(cluster, clock, [("app", name, {"advisor": {"allow_apply": True}, "shard": "orders/orders-1"}),
                                        ("locked", name, {"advisor": {"allow_apply": False}})])
        refused = _one(b.console("apply_index", database="locked", table="orders", columns=["customer_id"]))
        assert refused["outcome"] == "skipped:apply-not-allowed"
        gone = _one(b.console("apply_index", database="app", table="orders_archive", columns=["customer_id"]))
        assert gone["outcome"] == "skipped:table-missing" and "orders_archive does not exist" in gone["detail"]
        nocol = _one(b.console("apply_index", database="app", table="orders", columns=["customer"]))
        assert nocol["outcome"] == "skipped:column-missing"
        rt = b.world.activate("advisor", b.clock)
        app = next(d for d in rt.config.database_targets if d.name == "app")
        assert rt.store.acquire_lock(shard_move_lock(app), "another-build", b.clock.now(), 600)
        moving = _one(b.console("apply_index", database="app", table="orders", columns=["customer_id"]))
        assert moving["outcome"] == "skipped:shard-move-in-progress" and "another-build" in moving["detail"]
        rt.store.release_lock(shard_move_lock(app), "another-build")
        # `app` is shard orders/orders-1: an unfinished move of that shard (as the mover records it) blocks builds.
        from shards.shard_map import MoveRecord

        move = MoveRecord(id="mv-test", set_name="orders", buckets=[1], source="orders-2", target="orders-1",
                          mode="online", phase="copying", created_at=b.clock.now().timestamp())
        rt.clients.dynamodb.put_item(TableName=rt.settings.state_table, Item=move.to_item())
        during = _one(b.console("apply_index", database="app", table="orders", columns=["customer_id"]))
        assert during["outcome"] == "skipped:shard-move-in-progress" and "mv-test" in during["detail"], during
        bad = b.console("apply_index", database="app", table="orders", columns=["customer_id"],
                        where="customer_id = 1; DROP TABLE orders")
        assert bad["status"] == "rejected" and bad["errors"][0].startswith("where: Value error, only")
        unknown = b.console("apply_index", database="other", table="orders", columns=["customer_id"])
        assert unknown["errors"] == ["database: no database named 'other' (configured: app, locked)"]
        outcomes = [r["outcome"] for r in b.audit()]
        assert outcomes.count("rejected:validation") == 2 and outcomes.count("skipped:shard-move-in-progress") == 2
        install_runtime(None)
    with cluster.connect(name) as conn:
        assert conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'reflex_%'").fetchone()[0] == 0


# --------------------------------------------------------------------------- runaway queries


class Sleeper(threading.Thread):
    def __init__(self, cluster: Cluster, application: str, user: str = "postgres", seconds: int = 30) -> None:
        super().__init__(daemon=True)
        self.conn = psycopg.connect(cluster.dsn("app", user), autocommit=True, application_name=application)
        self.pid = self.conn.info.backend_pid
        self.seconds = seconds
        self.error: BaseException | None = None
        self.finished = threading.Event()

    def run(self) -> None:
        try:
            self.conn.execute("SELECT pg_sleep(%s)", (self.seconds,))
        except psycopg.Error as err:
            self.error = err
        finally:
            self.finished.set()

    def stop(self, cluster: Cluster) -> None:
        with cluster.connect() as admin:
            admin.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
        self.finished.wait(10)
        self.conn.close()


def _start(cluster: Cluster, *specs: tuple[str, str]) -> list[Sleeper]:
    """Start the sleepers once no other statement runs, and return when each has run past max_runtime_s (1 s)."""
    active = ("SELECT pid FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' "
              "AND pid <> pg_backend_pid() AND query_start < now() - interval '1 second'")
    with cluster.connect() as admin:
        deadline = time.monotonic() + 20
        while admin.execute(active).fetchall():  # an earlier test's statements still ending
            assert time.monotonic() < deadline, "statements of an earlier test still run"
            time.sleep(0.1)
        sleepers = [Sleeper(cluster, app, user) for app, user in specs]
        for s in sleepers:
            s.start()
        deadline = time.monotonic() + 20
        while {r[0] for r in admin.execute(active).fetchall()} != {s.pid for s in sleepers}:
            assert time.monotonic() < deadline, "the sleepers did not start"
            time.sleep(0.1)
    return sleepers


def test_cpu_alarm_cancels_the_runaway_query_and_spares_the_allow_listed(bench: AdvisorBench) -> None:
    web, batch, reporting = _start(bench.cluster, ("webapp", "postgres"), ("batch-report", "postgres"),
                                   ("psql", "reporting"))
    try:
        response = bench.invoke(eventbridge_alarm("app-cpu-high", "ALARM", T0, value=95, threshold=80))
        cancelled = _one(response, "executed")
        assert cancelled["operation"] == "cancel_query"
        assert cancelled["before"]["pid"] == web.pid and cancelled["before"]["running"] is True
        assert cancelled["after"] == cancelled["intended"] == {"running": False}
        assert web.finished.wait(5) and isinstance(web.error, psycopg.errors.QueryCanceled)
        spared = [d for d in response["decisions"] if d["outcome"] == "skipped:allow-listed"]
        assert {d["before"]["pid"] for d in spared} == {batch.pid, reporting.pid}
        assert not batch.finished.is_set() and not reporting.finished.is_set()
        audit = {r["outcome"] for r in bench.audit() if (r["target"] or "").startswith("postgres/app/runaway/")}
        assert audit == {"executed", "skipped:allow-listed"}
    finally:
        for s in (web, batch, reporting):
            s.stop(bench.cluster)


def test_runaway_bounds_dry_run_and_kill_switch(bench: AdvisorBench) -> None:
    sleepers = _start(bench.cluster, *[("webapp", "postgres")] * 3)
    try:
        dry = bench.console("cancel_runaway", database="app", dry_run=True)
        assert sorted(d["outcome"] for d in dry["decisions"]) == ["dry-run"] * 3
        bench.world.set_kill_switch("advisor", True)
        bench.clock.advance(60)
        killed = bench.invoke(eventbridge_alarm("app-connections-high", "ALARM", T0, value=95, threshold=80))
        assert {d["outcome"] for d in killed["decisions"]} == {"skipped:kill-switch"}
        assert not any(s.finished.is_set() for s in sleepers)
    finally:
        for s in sleepers:
            s.stop(bench.cluster)


def test_runaway_at_most_n_per_invocation_and_terminate(cluster: Cluster, clock: Any) -> None:
    from moto import mock_aws

    from reflex_core.runtime import install_runtime

    with mock_aws():
        b = make_bench(cluster, clock, [("app", "app", {"runaway": {
            "alarms": {"names": ["app-cpu-high"]}, "max_runtime_s": 1, "max_per_invocation": 2, "terminate": True}})])
        sleepers = _start(cluster, *[("webapp", "postgres")] * 3)
        try:
            response = b.console("cancel_runaway", database="app")
            outcomes = sorted(d["outcome"] for d in response["decisions"])
            assert outcomes == ["executed", "executed", "skipped:bound-reached"]
            terminated = [s for s in sleepers if s.finished.wait(5 if s.pid in {
                d["before"]["pid"] for d in response["decisions"] if d["outcome"] == "executed"} else 0)]
            assert len(terminated) == 2
            assert all(isinstance(s.error, psycopg.OperationalError) for s in terminated)
            assert {d["operation"] for d in response["decisions"] if d["outcome"] == "executed"} == {"terminate_query"}
        finally:
            for s in sleepers:
                if not s.finished.is_set():
                    s.stop(cluster)
        install_runtime(None)
