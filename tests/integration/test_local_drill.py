"""Local drill mode against the real PostgreSQL: a real pg_dump, a restore into a throw-away database, the same
validation checks as in AWS, RTO/RPO measured, and the copy always torn down (or reported as a leftover)."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.postgres

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def production():
    import psycopg

    from simulator.local_drill import drop_database, seed, with_database

    name = f"reflex_test_orders_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as err:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432: {err}")
    dsn = with_database(ADMIN, name)
    seed(dsn, 2_000)
    yield dsn
    drop_database(ADMIN, name)


def drill_databases() -> set[str]:
    import psycopg

    with psycopg.connect(ADMIN, autocommit=True) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'reflex_drill_%'")}


def test_drill_restores_validates_measures_and_tears_down(production):
    from simulator.local_drill import run_local_drill

    before = drill_databases()
    result = run_local_drill(production)
    assert result.outcome == "passed", result.steps
    report = result.report
    assert report is not None and report.checks[0].value == 2000
    assert report.checks[0].production == 2000 and report.rto_met and report.rpo_met
    assert report.rto_s >= report.restore_s > 0 and report.rpo_s is not None and report.rpo_s >= 0
    assert result.torn_down and not result.leftover
    assert drill_databases() == before


def test_production_moving_past_the_tolerance_fails_validation_and_still_tears_down(production):
    import psycopg

    from simulator.local_drill import run_local_drill

    def grow_production(_dump):
        with psycopg.connect(production, autocommit=True) as conn:
            conn.execute("INSERT INTO orders SELECT g, now(), 'x' FROM generate_series(100001, 100100) g")

    before = drill_databases()
    result = run_local_drill(production, after_backup=grow_production)
    assert result.outcome == "validation-failed"
    assert result.report is not None and not result.report.checks[0].passed
    assert "2000 vs production 2100" in result.report.checks[0].detail
    assert result.torn_down and drill_databases() == before


def test_validation_time_counts_in_the_rto_and_a_miss_is_reported(production):
    from reflex_core.recovery_config import ProtectedResource
    from simulator.local_drill import database_of, default_resource, run_local_drill

    data = default_resource(database_of(production), rto_s=1).model_dump(mode="json")
    data["checks"][0]["query"] = "SELECT count(*) FROM orders, pg_sleep(1.2)"  # validation takes > 1.2 s
    result = run_local_drill(production, ProtectedResource.model_validate(data))
    assert result.outcome == "passed" and result.report is not None  # the data is fine ...
    assert result.report.validation_s >= 1.2 and not result.report.rto_met  # ... the objective is missed
    assert "MISSED" in result.report.summary() and result.torn_down


def test_restore_failure_is_reported_and_the_copy_removed(production):
    from simulator.local_drill import run_local_drill

    def corrupt(dump):
        dump.write_bytes(b"not a dump")

    before = drill_databases()
    result = run_local_drill(production, after_backup=corrupt)
    assert result.outcome == "restore-failed" and result.report is None
    assert any(s.startswith("restore failed: pg_restore failed") for s in result.steps)
    assert result.torn_down and drill_databases() == before


def test_teardown_failing_once_is_retried(production):
    from simulator.local_drill import drop_database, run_local_drill

    calls = []

    def flaky(admin, name):
        calls.append(name)
        if len(calls) == 1:
            raise RuntimeError("connection reset")
        drop_database(admin, name)

    before = drill_databases()
    result = run_local_drill(production, drop=flaky)
    assert result.outcome == "passed" and len(calls) == 2 and result.torn_down
    assert any("teardown attempt 1 failed" in s for s in result.steps)
    assert drill_databases() == before


def test_teardown_failing_twice_is_a_reported_leftover(production):
    from simulator.local_drill import drop_database, run_local_drill, with_database

    def broken(admin, name):
        raise RuntimeError("permission denied")

    result = run_local_drill(production, drop=broken)
    try:
        assert result.leftover and not result.torn_down
        assert result.copy in drill_databases()
        assert any(s.startswith("LEFTOVER: " + result.copy) for s in result.steps)
    finally:
        drop_database(with_database(production, "postgres"), result.copy)


@pytest.mark.parametrize("copy", ["PRODUCTION", "orders_copy"])
def test_a_copy_named_like_production_or_without_the_prefix_is_refused_before_any_restore(production, copy):
    from simulator.local_drill import database_of, run_local_drill

    name = database_of(production) if copy == "PRODUCTION" else copy
    before = drill_databases()
    result = run_local_drill(production, copy=name)
    assert result.outcome == "refused" and result.report is None
    assert drill_databases() == before
