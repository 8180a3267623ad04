"""A throw-away PostgreSQL 15 cluster for the advisor's tests and benchmark.

`pg_stat_statements` needs `shared_preload_libraries`, which the shared server on 5432 does not have, so each
module starts its own: initdb into /tmp, a free port, trust auth on 127.0.0.1, pg_stat_statements preloaded and
HypoPG available (Debian package postgresql-15-hypopg; `.ci/run` installs it). As root, the server runs as the
`postgres` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(os.environ.get("REFLEX_PG_BIN", "/usr/lib/postgresql/15/bin"))
EXTENSIONS = Path("/usr/share/postgresql/15/extension")


def available() -> str | None:
    """Why the cluster cannot start here, or None."""
    if not (BIN / "initdb").exists():
        return f"PostgreSQL binaries not found in {BIN}"
    if not (EXTENSIONS / "pg_stat_statements.control").exists():
        return "pg_stat_statements is not installed (postgresql-contrib)"
    return None


def hypopg_available() -> bool:
    return (EXTENSIONS / "hypopg.control").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@dataclass
class Cluster:
    port: int
    data: Path

    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def connect(self, dbname: str = "postgres", user: str = "postgres", **kw: Any) -> Any:
        import psycopg

        return psycopg.connect(self.dsn(dbname, user), autocommit=True, **kw)

    def secret(self, dbname: str = "postgres", user: str = "postgres") -> dict[str, Any]:
        """The database's Secrets Manager secret in RDS's format."""
        return {"host": "127.0.0.1", "port": self.port, "username": user, "password": "", "dbname": dbname,
                "engine": "postgres"}


@contextmanager
def throwaway_cluster(**settings: str) -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="reflex-pg-", dir="/tmp"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-N"]),
                   check=True, capture_output=True)
    conf = {"shared_preload_libraries": "pg_stat_statements", "listen_addresses": "127.0.0.1", "port": str(port),
            "unix_socket_directories": str(root), "fsync": "off", "synchronous_commit": "off",
            "full_page_writes": "off", "pg_stat_statements.track": "all", "max_connections": "40",
            "shared_buffers": "64MB"} | settings
    with open(data / "postgresql.conf", "a", encoding="utf-8") as f:
        for k, v in conf.items():
            f.write(f"{k} = '{v}'\n")
    subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start"]),
                   check=True, capture_output=True)
    import psycopg

    try:
        cluster = Cluster(port=port, data=data)
        deadline = time.monotonic() + 10
        while True:
            try:
                cluster.connect().close()
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield cluster
    finally:
        subprocess.run(_as_postgres([str(BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
