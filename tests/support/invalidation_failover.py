"""A Redis whose server changes under a running invalidation: restarted from its own RDB, or replaced by a replica
promoted (`REPLICAOF NO ONE`) onto the primary's address. Both keep the data and change the server's identity
(`INFO server` run_id) and its hash seed, so a SCAN cursor of the old server is meaningless on the new one.

    with SwappableRedis() as srv:
        client = srv.client()                      # retries connection errors, like the deployed client
        hooked = SwapAfter(client, srv.restart, after_calls=25)
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from tests.support.redis_cluster import REDIS_SERVER, _cli, free_port


class SwappableRedis:
    """A primary on a fixed loopback port whose process can be restarted or replaced by a promoted replica."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"reflex-swap-{self.port}-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.replica: subprocess.Popen[bytes] | None = None
        self.replica_port = 0
        self.swaps = 0

    def __enter__(self) -> SwappableRedis:
        self.process = self._spawn(self.port, self.dir / "primary")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for proc in (self.process, self.replica):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def _spawn(self, port: int, directory: Path, *extra: str) -> subprocess.Popen[bytes]:
        directory.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                                 "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
                                 "--logfile", str(directory / "redis.log"), *extra],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if _cli(port, "ping") == "PONG" and "loading:0" in _cli(port, "info", "persistence"):
                return proc
            time.sleep(0.02)
        raise RuntimeError(f"redis-server on {port} did not start")

    def run_id(self) -> str:
        for line in _cli(self.port, "info", "server").splitlines():
            if line.startswith("run_id:"):
                return line.split(":", 1)[1].strip()
        return ""

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=2,
                           retry=Retry(ConstantBackoff(0.05), 40))

    def _stop_primary(self) -> None:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """SAVE, stop, start a new process on the same port from the same RDB (same keys, new run_id)."""
        assert _cli(self.port, "save") == "OK"
        self._stop_primary()
        self.process = self._spawn(self.port, self.dir / "primary")
        self.swaps += 1

    def start_replica(self) -> None:
        self.replica_port = free_port(exclude=[self.port])
        self.replica = self._spawn(self.replica_port, self.dir / "replica", "--replicaof", "127.0.0.1",
                                   str(self.port))
        _wait_synced(self.replica_port)

    def fail_over(self) -> None:
        """The primary dies; a replica of the surviving copy takes its address and is promoted (`REPLICAOF NO
        ONE`), as a managed endpoint does when it fails over."""
        assert self.replica is not None
        _cli(self.port, "wait", "1", "2000")  # the replica has every write the primary acknowledged
        self._stop_primary()
        assert _cli(self.replica_port, "replicaof", "no", "one") == "OK"  # the surviving copy stands alone
        self.process = self._spawn(self.port, self.dir / "promoted", "--replicaof", "127.0.0.1",
                                   str(self.replica_port))
        _wait_synced(self.port)
        assert _cli(self.port, "replicaof", "no", "one") == "OK"
        self.swaps += 1


def _wait_synced(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        info = _cli(port, "info", "replication")
        if "master_link_status:up" in info and "master_sync_in_progress:0" in info:
            return
        time.sleep(0.05)
    raise RuntimeError(f"the replica on {port} did not sync")


class SwapAfter:
    """A client that swaps the server (`swap()`) just before its `after_calls`-th page (EVALSHA), once."""

    def __init__(self, real: redis.Redis, swap: Callable[[], None], *, after_calls: int) -> None:
        self._real = real
        self._swap = swap
        self._after = after_calls
        self.calls = 0

    def evalsha(self, *args: Any) -> Any:
        self.calls += 1
        if self.calls == self._after:
            self._swap()
        return self._real.evalsha(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
