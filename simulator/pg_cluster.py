"""A throw-away PostgreSQL cluster with `wal_level = logical` (tests, the shard scenario, the benchmarks).

initdb into a temporary directory under /tmp, a free loopback port, trust authentication, enough
replication slots and workers for a few concurrent moves; stopped and removed on exit. The installed
server binaries are used (`$PG_BIN`, else the newest /usr/lib/postgresql/<v>/bin). When run as root the
server runs as the `postgres` user (PostgreSQL refuses to run as root).

    with PostgresCluster(databases=["shard_a", "shard_b"]) as pgc:
        psycopg.connect(pgc.dsn("shard_a"))
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType


def pg_bin() -> Path | None:
    env = os.environ.get("PG_BIN")
    if env:
        return Path(env)
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


def postgres_available() -> bool:
    b = pg_bin()
    return b is not None and (b / "initdb").exists() and (os.geteuid() != 0 or _postgres_user() is not None)


def _postgres_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    def __init__(self, databases: Sequence[str] = ("shard_a", "shard_b"), *,
                 settings: dict[str, str] | None = None) -> None:
        self.databases = list(databases)
        self.port = _free_port()
        self.settings = {
            "wal_level": "logical", "max_replication_slots": "40", "max_wal_senders": "40",
            "max_logical_replication_workers": "24", "max_worker_processes": "40",
            "max_sync_workers_per_subscription": "4", "fsync": "off", "synchronous_commit": "off",
            "full_page_writes": "off", "shared_buffers": "128MB", "max_connections": "200",
            "wal_sender_timeout": "10s", "wal_receiver_status_interval": "1s",
        } | (settings or {})
        self.dir = Path(tempfile.mkdtemp(prefix="reflex-pg-", dir="/tmp"))
        self.data = self.dir / "data"
        self._started = False

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)

    def start(self) -> PostgresCluster:
        b = pg_bin()
        if b is None:
            raise RuntimeError("PostgreSQL server binaries not found (set PG_BIN)")
        if os.geteuid() == 0:
            user = _postgres_user()
            if user is None:
                raise RuntimeError("running as root needs a 'postgres' user to run the server")
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        self._run(str(b / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        self._run(str(b / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "-l", str(self.dir / "server.log"),
                  "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} {opts}", "start")
        self._started = True
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                    for db in self.databases:
                        conn.execute(f'CREATE DATABASE "{db}"')
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={database} user=postgres"

    def stop(self) -> None:
        b = pg_bin()
        if self._started and b is not None:
            with contextlib.suppress(subprocess.SubprocessError):
                self._run(str(b / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._started = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
