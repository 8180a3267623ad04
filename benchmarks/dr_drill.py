"""Local drill of a seeded PostgreSQL database: RTO (restore + validation) for ~1 GB, and the validation's cost.

    .venv/bin/python benchmarks/dr_drill.py [--gb 1.0] [--dsn postgresql://postgres@127.0.0.1:5432/postgres]

Seeds `orders` (1 KB rows) to the given size, then in the same run:
* baseline: what a team does by hand, `pg_dump -Fc` then `createdb` + `pg_restore -j 2`, no checks, drop;
* ours: `simulator.local_drill.run_local_drill`: the same dump and restore, the isolation check before it, the
  validation checks on the copy and on production, RTO/RPO measured, teardown verified.
Prints restore, validation, RTO and teardown times, and the ratio of our RTO to the bare restore.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "functions")]

from simulator.local_drill import (  # noqa: E402
    DEFAULT_DSN,
    _createdb,
    _tool,
    database_of,
    default_resource,
    drop_database,
    run_local_drill,
    seed,
    with_database,
)


def database_size(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0


def bare_restore(production: str, admin: str) -> tuple[float, float]:
    """(dump seconds, restore seconds) of the manual way."""
    with tempfile.TemporaryDirectory(prefix="reflex-bench-") as tmp:
        dump = Path(tmp) / "b.dump"
        t0 = time.perf_counter()
        subprocess.run([_tool("pg_dump"), "-Fc", "-Z", "1", "-f", str(dump), "-d", production], check=True)
        dump_s = time.perf_counter() - t0
        name = f"reflex_bench_{uuid.uuid4().hex[:8]}"
        t1 = time.perf_counter()
        _createdb(admin, name)
        subprocess.run([_tool("pg_restore"), "--no-owner", "-j", "2", "-d", with_database(production, name),
                        str(dump)], check=True)
        restore_s = time.perf_counter() - t1
        drop_database(admin, name)
    return dump_s, restore_s


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0, help="size of the seeded table (GiB of row data)")
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    args = parser.parse_args()
    admin = with_database(args.dsn, "postgres")
    name = f"reflex_bench_orders_{uuid.uuid4().hex[:6]}"
    _createdb(admin, name)
    production = with_database(args.dsn, name)
    try:
        rows = int(args.gb * (1 << 30) / 1024)
        t0 = time.perf_counter()
        seed(production, rows, payload_bytes=992)
        seed_s = time.perf_counter() - t0
        size = database_size(production)
        print(f"seeded {rows} rows, database {size / (1 << 30):.2f} GiB, in {seed_s:.1f}s")
        dump_s, baseline_restore_s = bare_restore(production, admin)
        result = run_local_drill(production, default_resource(database_of(production), rto_s=3600, rpo_s=900))
        report = result.report
        if report is None:
            print("\n".join(result.steps))
            return 1
        print()
        print(f"{'measure':<34}{'ours (drill)':>14}{'baseline':>12}{'ratio':>8}")
        print(f"{'backup (pg_dump -Fc -Z1), s':<34}{result.backup_s:>14.1f}{dump_s:>12.1f}"
              f"{result.backup_s / dump_s:>8.2f}")
        print(f"{'restore (pg_restore -j 2), s':<34}{report.restore_s:>14.1f}{baseline_restore_s:>12.1f}"
              f"{report.restore_s / baseline_restore_s:>8.2f}")
        print(f"{'validation (2 checks), s':<34}{report.validation_s:>14.2f}{'-':>12}{'-':>8}")
        print(f"{'RTO = restore + validation, s':<34}{report.rto_s:>14.1f}{baseline_restore_s:>12.1f}"
              f"{report.rto_s / baseline_restore_s:>8.2f}")
        print(f"{'RPO (data age at drill start), s':<34}{report.rpo_s or 0:>14.1f}{'-':>12}{'-':>8}")
        print(f"{'teardown (DROP ... FORCE), s':<34}{result.teardown_s:>14.2f}{'-':>12}{'-':>8}")
        print(f"\noutcome {result.outcome}, RTO objective {report.rto_objective_s}s "
              f"{'met' if report.rto_met else 'MISSED'}, copy torn down: {result.torn_down}")
    finally:
        drop_database(admin, name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
