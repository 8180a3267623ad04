"""Local drill mode: the drill workflow against PostgreSQL on this machine, with a real backup and restore.

    python -m simulator.local_drill [--dsn postgresql://postgres@127.0.0.1:5432/postgres] [--rows 10000]

1. (optional) seed the production database (`orders`: id, created_at, payload),
2. back it up for real (`pg_dump -Fc`): the recovery point is the dump's start (its snapshot),
3. check the copy's name before any restore (never production's, always the drill prefix),
4. restore into a throw-away database (`createdb` + `pg_restore`),
5. run the resource's validation checks (the same `drills.drill_checks` code as in AWS) on the copy and, where the
   expectation compares, on production (read only),
6. measure RTO (restore + validation) and RPO (the restored data's age when the drill began) against the objectives,
7. tear the copy down (retried once; a copy that stays is reported as a leftover) and delete the dump.

Whatever fails, the report says what happened and the copy is gone or named as a leftover.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "functions") not in sys.path:
    sys.path.insert(0, str(ROOT / "functions"))

from drills.drill_checks import DrillReport, evaluate  # noqa: E402
from reflex_core.recovery_config import ProtectedResource, ValidationCheck  # noqa: E402

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DRILL_PREFIX = "reflex_drill_"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/") or "postgres"


def default_resource(database: str, *, rto_s: int = 3600, rpo_s: int = 900, percent: float = 1.0) -> ProtectedResource:
    """The local stand-in of an orders database: a row count within `percent` % of production, fresh data."""
    return ProtectedResource.model_validate({
        "name": "orders-local", "kind": "rds-instance", "identifier": database,
        "objectives": {"rto_s": rto_s, "rpo_s": rpo_s},
        "backup": {"cron": "*/5 * * * ? *", "retention_days": 1},
        "checks": [
            {"name": "orders-row-count", "kind": "sql", "query": "SELECT count(*) FROM orders",
             "expect": {"kind": "within-percent-of-production", "percent": percent}},
            {"name": "orders-fresh", "kind": "sql", "query": "SELECT max(created_at) FROM orders",
             "expect": {"kind": "fresh-within-rpo"}},
        ],
    })


def seed(dsn: str, rows: int, payload_bytes: int = 100) -> None:
    """`orders` with `rows` rows of `payload_bytes` each, the newest created now (a real, fresh table)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS orders")
        conn.execute("CREATE TABLE orders (id bigint PRIMARY KEY, created_at timestamptz NOT NULL, payload text)")
        batch = 200_000
        for start in range(1, rows + 1, batch):
            end = min(start + batch - 1, rows)
            conn.execute(
                "INSERT INTO orders SELECT g, now() - make_interval(secs => (%s - g) * 0.01), "
                "repeat(md5(g::text), %s) FROM generate_series(%s::bigint, %s::bigint) g",
                (rows, max(payload_bytes // 32, 1), start, end))
        conn.execute("ANALYZE orders")


class PostgresCheckSource:
    """Check values read with psycopg from the restored copy and from production (read only)."""

    def __init__(self, restored_dsn: str, production_dsn: str) -> None:
        self._dsn = {"restored": restored_dsn, "production": production_dsn}

    def value(self, check: ValidationCheck, where: str) -> Any:
        import psycopg

        with psycopg.connect(self._dsn[where], autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = on")
            row = conn.execute(check.query or "").fetchone()
        if row is None:
            raise ValueError("the query returned no row")
        return row[0]


@dataclass
class LocalDrillResult:
    report: DrillReport | None
    outcome: str  # "passed", "validation-failed", "restore-failed", "refused", "backup-failed"
    copy: str
    torn_down: bool
    leftover: bool
    backup_s: float = 0.0
    teardown_s: float = 0.0
    steps: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "copy": self.copy, "torn_down": self.torn_down, "leftover": self.leftover,
                "backup_s": round(self.backup_s, 3), "teardown_s": round(self.teardown_s, 3), "steps": self.steps,
                "report": self.report.as_dict() if self.report else None}


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    raise FileNotFoundError(f"{name} is not installed (PostgreSQL client tools)")


def _run(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr.strip()[:500]}")


def planned_copy_problems(resource: ProtectedResource, copy: str) -> list[str]:
    """Before any restore: the copy is a new database with the drill prefix, never production."""
    if copy == resource.identifier:
        return [f"database {copy!r} is the production database"]
    if not copy.startswith(DRILL_PREFIX):
        return [f"database {copy!r} does not start with the drill prefix {DRILL_PREFIX!r}"]
    return []


def drop_database(dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(dsn: str, name: str) -> bool:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def run_local_drill(production_dsn: str, resource: ProtectedResource | None = None, *, copy: str | None = None,
                    jobs: int = 2, workdir: str | None = None,
                    after_backup: Callable[[Path], None] | None = None,
                    drop: Callable[[str, str], None] = drop_database) -> LocalDrillResult:
    """One drill of the production database at `production_dsn` (see the module docstring)."""
    production = database_of(production_dsn)
    resource = resource or default_resource(production)
    copy = copy or f"{DRILL_PREFIX}{uuid.uuid4().hex[:10]}"
    admin = with_database(production_dsn, "postgres")
    steps: list[str] = []
    problems = planned_copy_problems(resource, copy)
    if problems:
        steps.append("refused: " + "; ".join(problems))
        return LocalDrillResult(None, "refused", copy, torn_down=True, leftover=False, steps=steps)

    tmp = Path(tempfile.mkdtemp(prefix="reflex-drill-", dir=workdir))
    dump = tmp / "backup.dump"
    report: DrillReport | None = None
    outcome = "restore-failed"
    backup_s = 0.0
    created = False
    try:
        point = datetime.now(UTC)
        t0 = time.perf_counter()
        try:
            _run([_tool("pg_dump"), "-Fc", "-Z", "1", "-f", str(dump), "-d", production_dsn])
        except RuntimeError as err:
            steps.append(f"backup failed: {err}")
            return LocalDrillResult(None, "backup-failed", copy, torn_down=True, leftover=False, steps=steps)
        backup_s = time.perf_counter() - t0
        steps.append(f"backup {dump.stat().st_size} bytes in {backup_s:.2f}s")
        if after_backup is not None:
            after_backup(dump)

        started = datetime.now(UTC)
        restore_t0 = time.perf_counter()
        try:
            _createdb(admin, copy)
            created = True
            _run([_tool("pg_restore"), "--no-owner", "-j", str(jobs), "-d", with_database(production_dsn, copy),
                  str(dump)])
        except RuntimeError as err:
            steps.append(f"restore failed: {err}")
            report = None
        else:
            completed = datetime.fromtimestamp(started.timestamp() + time.perf_counter() - restore_t0, tz=UTC)
            steps.append(f"restored into {copy} in {(completed - started).total_seconds():.2f}s")
            source = PostgresCheckSource(with_database(production_dsn, copy), production_dsn)
            report = evaluate(resource, source, restore_job_id=f"local:{copy}", isolated=True, isolation_problems=[],
                              restore_started=started, restore_completed=completed, recovery_point_time=point,
                              validation_started=datetime.now(UTC), clock_now=lambda: datetime.now(UTC))
            outcome = "passed" if report.passed else "validation-failed"
            steps.append(report.summary())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        torn_down, teardown_s = _teardown(admin, copy, created, drop, steps)
    return LocalDrillResult(report, outcome, copy, torn_down=torn_down, leftover=not torn_down, backup_s=backup_s,
                            teardown_s=teardown_s, steps=steps)


def _createdb(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


def _teardown(admin: str, copy: str, created: bool, drop: Callable[[str, str], None],
              steps: list[str]) -> tuple[bool, float]:
    """Drop the copy; retried once. Returns (gone, seconds)."""
    t0 = time.perf_counter()
    if not created and not database_exists(admin, copy):
        return True, 0.0
    for attempt in (1, 2):
        try:
            drop(admin, copy)
        except Exception as err:  # noqa: BLE001 - a failed teardown is retried, then reported as a leftover
            steps.append(f"teardown attempt {attempt} failed: {type(err).__name__}: {str(err)[:200]}")
            continue
        if not database_exists(admin, copy):
            steps.append(f"torn down {copy}")
            return True, time.perf_counter() - t0
    steps.append(f"LEFTOVER: {copy} still exists; drop it by hand (docs/runbooks/drills.md)")
    return False, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.local_drill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("REFLEX_DRILL_DSN", DEFAULT_DSN),
                        help="the PostgreSQL server (its database is created and seeded when --rows is given)")
    parser.add_argument("--database", default="reflex_orders_local", help="the 'production' database drilled")
    parser.add_argument("--rows", type=int, default=10_000, help="seed this many orders first (0: drill as is)")
    parser.add_argument("--rto", type=int, default=3600)
    parser.add_argument("--rpo", type=int, default=900)
    args = parser.parse_args(argv)
    import psycopg

    admin = with_database(args.dsn, "postgres")
    created = not database_exists(admin, args.database)
    if created:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{args.database}"')
    production = with_database(args.dsn, args.database)
    try:
        if args.rows:
            seed(production, args.rows)
        result = run_local_drill(production, default_resource(args.database, rto_s=args.rto, rpo_s=args.rpo))
    finally:
        if created:
            drop_database(admin, args.database)
    for step in result.steps:
        print(step)
    print(json.dumps(result.as_dict(), indent=2, default=str))
    return 0 if result.outcome == "passed" and not result.leftover else 1


if __name__ == "__main__":
    raise SystemExit(main())
