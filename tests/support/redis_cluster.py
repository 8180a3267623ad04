"""Throw-away Redis servers for tests and benchmarks: a standalone server or a 3-primary cluster.

Each server runs from `/usr/bin/redis-server` (or `$REDIS_SERVER`) on a free loopback port, in its own
temporary directory, without persistence, and is stopped (and its directory removed) on exit. Nothing
here touches the shared server on 6379.

    with RedisServer(extra_args=["--requirepass", "s3cret"]) as server:
        redis.Redis(port=server.port, password="s3cret").ping()

    with RedisClusterProcesses(primaries=3) as cluster:
        RedisCluster(host="127.0.0.1", port=cluster.ports[0]).set("k", "v")
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

REDIS_SERVER = os.environ.get("REDIS_SERVER", shutil.which("redis-server") or "/usr/bin/redis-server")
REDIS_CLI = os.environ.get("REDIS_CLI", shutil.which("redis-cli") or "/usr/bin/redis-cli")
CLUSTER_BUS_OFFSET = 10000


def redis_binaries_available() -> bool:
    return Path(REDIS_SERVER).exists() and Path(REDIS_CLI).exists()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(*, with_cluster_bus: bool = False, exclude: Sequence[int] = ()) -> int:
    """A loopback port free right now (and its cluster bus port, port + 10000, when asked)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in exclude:
            continue
        if not with_cluster_bus:
            return port
        if port + CLUSTER_BUS_OFFSET < 65536 and _bindable(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free loopback port found")


def _cli(port: int, *args: str, password: str | None = None, timeout: float = 5.0) -> str:
    cmd = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port)]
    env = dict(os.environ)
    if password:
        env["REDISCLI_AUTH"] = password  # not on the command line, where `ps` would show it
    result = subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False)
    return result.stdout.strip()


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA and a server certificate for `localhost` and 127.0.0.1 (PEM files in `directory`)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "reflex test CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption()))
    return files


class RedisServer:
    """One `redis-server` process on a free loopback port, in a temp dir, stopped on exit."""

    def __init__(self, *, extra_args: Sequence[str] = (), cluster_enabled: bool = False,
                 password: str | None = None, port: int | None = None, start_timeout_s: float = 10.0,
                 exclude_ports: Sequence[int] = (), tls: TlsFiles | None = None) -> None:
        self._tls = tls
        self._extra = list(extra_args)
        self._cluster = cluster_enabled
        self._password = password
        self._fixed_port = port
        self._timeout = start_timeout_s
        self._exclude = exclude_ports
        self.port = 0
        self.dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        last_error = ""
        for _ in range(5):  # a port found free can be taken before the server binds it
            self.port = self._fixed_port or free_port(with_cluster_bus=self._cluster, exclude=self._exclude)
            self.dir = Path(tempfile.mkdtemp(prefix=f"reflex-redis-{self.port}-"))
            listen = ["--port", str(self.port)] if self._tls is None else [
                "--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self._tls.cert),
                "--tls-key-file", str(self._tls.key), "--tls-ca-cert-file", str(self._tls.ca),
                "--tls-auth-clients", "no"]
            args = [REDIS_SERVER, *listen, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"),
                    "--daemonize", "no"]
            if self._cluster:
                args += ["--cluster-enabled", "yes", "--cluster-config-file", str(self.dir / "nodes.conf"),
                         "--cluster-node-timeout", "5000"]
            if self._password:
                args += ["--requirepass", self._password]
            args += self._extra
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if self._wait_ready():
                return
            last_error = self.log_tail()
            self.stop()
            if self._fixed_port:
                break
        raise RuntimeError(f"redis-server did not start: {last_error}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                return False
            reply = self.cli("ping")
            if reply == "PONG" or reply.startswith("NOAUTH"):
                return True
            time.sleep(0.05)
        return False

    def log_tail(self, lines: int = 20) -> str:
        if self.dir is None or not (self.dir / "redis.log").exists():
            return ""
        return "\n".join((self.dir / "redis.log").read_text(errors="replace").splitlines()[-lines:])

    def cli(self, *args: str) -> str:
        if self._tls is not None:
            args = ("--tls", "--cacert", str(self._tls.ca), *args)
        return _cli(self.port, *args, password=self._password)

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=10)
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class RedisClusterProcesses:
    """A local Redis Cluster: `primaries` cluster-enabled servers (and `replicas` replicas of each) joined by
    `redis-cli --cluster create`."""

    def __init__(self, primaries: int = 3, *, replicas: int = 0, ready_timeout_s: float = 30.0) -> None:
        if primaries < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 primaries")
        self._replicas = replicas
        self._count = primaries * (1 + replicas)
        self._timeout = ready_timeout_s
        self.servers: list[RedisServer] = []

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers]

    def __enter__(self) -> RedisClusterProcesses:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        taken: list[int] = []
        for _ in range(self._count):
            # Neither a node's port nor its bus port may collide with another node's.
            exclude = taken + [p + CLUSTER_BUS_OFFSET for p in taken] + [p - CLUSTER_BUS_OFFSET for p in taken]
            server = RedisServer(cluster_enabled=True, exclude_ports=exclude)
            server.start()
            self.servers.append(server)
            taken.append(server.port)
        nodes = [f"127.0.0.1:{p}" for p in self.ports]
        result = subprocess.run([REDIS_CLI, "--cluster", "create", *nodes, "--cluster-replicas", str(self._replicas),
                                 "--cluster-yes"], capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {result.stdout[-2000:]} {result.stderr[-2000:]}")
        self._wait_ok()

    def _wait_ok(self) -> None:
        deadline = time.monotonic() + self._timeout
        while time.monotonic() < deadline:
            states = [s.cli("cluster", "info") for s in self.servers]
            if all("cluster_state:ok" in st and "cluster_slots_assigned:16384" in st
                   and f"cluster_known_nodes:{self._count}" in st for st in states) and self._replicas_synced():
                return
            time.sleep(0.1)
        raise RuntimeError("the local cluster did not reach cluster_state:ok in time")

    def _replicas_synced(self) -> bool:
        if not self._replicas:
            return True
        roles = [s.cli("role").split() for s in self.servers]
        replicas = [r for r in roles if r and r[0] == "slave"]
        return len(replicas) == self._count - self._count // (1 + self._replicas) and all(
            len(r) > 3 and r[3] == "connected" for r in replicas)

    def failover(self, replica_port: int, timeout_s: float = 30.0) -> None:
        """Promote the replica on `replica_port` (CLUSTER FAILOVER, coordinated with its primary) and wait until
        every node agrees and the cluster is ok again."""
        server = next(s for s in self.servers if s.port == replica_port)
        server.cli("cluster", "failover")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if server.cli("role").split()[:1] == ["master"] and all(
                    "cluster_state:ok" in s.cli("cluster", "info") for s in self.servers):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the replica on {replica_port} did not take over in time")

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()
        self.servers = []


# --------------------------------------------------------------------------- what a server was sent


class ServerMonitor:
    """Records every command a server receives (MONITOR), including those run inside scripts.

    Stopping sends a unique ECHO and reads until it comes back, so nothing sent before is missed.
    """

    def __init__(self, port: int, password: str | None = None) -> None:
        import threading

        import redis

        self._client = redis.Redis(host="127.0.0.1", port=port, password=password)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self._marker = f"reflex-monitor-stop-{os.getpid()}-{port}-{time.monotonic_ns()}"
        self.commands: list[dict[str, object]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                entry = self._monitor.next_command()
            except Exception:  # noqa: BLE001 - the connection closes when the test is over
                return
            if entry is None:
                continue
            if self._marker in str(entry.get("command", "")):
                return
            self.commands.append(entry)

    def stop(self) -> list[dict[str, object]]:
        self._client.echo(self._marker)
        self._thread.join(timeout=10)
        with contextlib.suppress(Exception):
            self._monitor.__exit__(None, None, None)
        self._client.close()
        return self.commands

    def names(self) -> list[str]:
        return [str(c["command"]).split(" ", 1)[0].upper() for c in self.commands]


def recording_connection_class(log: list[tuple[object, ...]]) -> type:
    """A redis-py Connection class that appends every command it packs (pipelines included) to `log`."""
    import redis

    class RecordingConnection(redis.Connection):
        def pack_command(self, *args: object) -> list[bytes]:
            log.append(args)
            return super().pack_command(*args)

        def pack_commands(self, commands: Iterable[Sequence[object]]) -> list[bytes]:
            commands = list(commands)
            log.extend(tuple(c) for c in commands)
            return super().pack_commands(commands)

    return RecordingConnection
