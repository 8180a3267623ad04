"""An advisor test bench: a moto world whose config has a `databases` section pointing (through Secrets
Manager secrets) at databases of a throw-away PostgreSQL cluster, a report bucket, and the real handler."""

from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from typing import Any

from reflex_core.clock import VirtualClock
from reflex_core.config import ReflexConfig, parse_config
from reflex_core.config_base import read_config_data
from simulator.aws_world import World, create_world
from tests.conftest import ROOT, FakeLambdaContext
from tests.support.postgres import Cluster

BUCKET = "reflex-test-advisor-reports"


def database_entry(name: str, secret_arn: str, **over: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name, "connection": {"kind": "secret", "secret_arn": secret_arn, "sslmode": "disable"},
        "advisor": {"unused_index_min_bytes": 0, "large_table": {"rows": 10_000}},
        "runaway": {"alarms": {"names": [f"{name}-cpu-high"], "prefixes": [f"{name}-connections-"]},
                    "max_runtime_s": 1, "allow_roles": ["reporting"], "allow_applications": ["batch-report"],
                    "max_per_invocation": 5},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(entry.get(k), dict):
            entry[k] = entry[k] | v
        else:
            entry[k] = v
    return entry


@dataclass
class AdvisorBench:
    world: World
    clock: VirtualClock
    cluster: Cluster
    secrets: dict[str, str] = field(default_factory=dict)
    stdout: list[str] = field(default_factory=list)

    def invoke(self, event: Any) -> dict[str, Any]:
        from advisor.handler import lambda_handler

        self.world.activate("advisor", self.clock)
        buf = io.StringIO()
        with redirect_stdout(buf):
            response = lambda_handler(event, FakeLambdaContext())
        self.stdout.append(buf.getvalue())
        return response

    def console(self, command: str, **kw: Any) -> dict[str, Any]:
        return self.invoke({"command": command, "reason": "test run", "operator": "alice"} | kw)

    def emf(self, name: str) -> list[dict[str, Any]]:
        out = []
        for chunk in self.stdout:
            for line in chunk.splitlines():
                if line.startswith("{") and f'"{name}"' in line:
                    doc = json.loads(line)
                    if "_aws" in doc and name in doc:
                        out.append(doc)
        return out

    def report(self, key: str) -> Any:
        body = self.world.clients.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        return json.loads(body) if key.endswith(".json") else body.decode()

    def audit(self) -> list[dict[str, Any]]:
        return self.world.audit_records()


def make_secret(clients: Any, name: str, cluster: Cluster, dbname: str, user: str = "postgres",
                port: int | None = None) -> str:
    secret = cluster.secret(dbname, user) | ({"port": port} if port else {})
    return str(clients.secretsmanager.create_secret(Name=name, SecretString=json.dumps(secret))["ARN"])


def make_bench(cluster: Cluster, clock: VirtualClock, databases: list[tuple[str, str, dict[str, Any]]],
               *, port_override: dict[str, int] | None = None, users: dict[str, str] | None = None) -> AdvisorBench:
    """`databases`: (config name, PostgreSQL database, overrides of the config entry). Call inside mock_aws()."""
    from simulator.aws_world import moto_clients

    clients = moto_clients()
    secrets = {name: make_secret(clients, f"db/{name}", cluster, dbname, (users or {}).get(name, "postgres"),
                                 (port_override or {}).get(name))
               for name, dbname, _ in databases}
    data = read_config_data(ROOT / "config" / "dev.yaml")
    data["databases"] = {"targets": [database_entry(name, secrets[name], **over) for name, _, over in databases]}
    # Alarms a policy names must be created by monitoring or declared external (the synth-time check).
    names = {n for t in data["databases"]["targets"] for n in t["runaway"]["alarms"].get("names", [])}
    if "monitoring" in data:
        data["monitoring"]["external_alarms"] = sorted(set(data["monitoring"].get("external_alarms", [])) | names)
    config: ReflexConfig = parse_config(data, "test")
    world = create_world(config, {"api": 4, "workers": 2, "reporting-db": 1}, clients=clients)
    clients.s3.create_bucket(Bucket=BUCKET)
    clients.ssm.put_parameter(Name=f"{world.settings.kill_switch_prefix}/advisor", Value="off", Type="String",
                              Overwrite=True)
    os.environ["REFLEX_REPORT_BUCKET"] = BUCKET
    return AdvisorBench(world=world, clock=clock, cluster=cluster, secrets=secrets)


def advisor_invoke(world: World, clock: VirtualClock) -> Any:
    """The real advisor handler in `world` (its function's view of the config), as console events call it."""
    from advisor.handler import lambda_handler

    def _invoke(event: Any) -> dict[str, Any]:
        world.activate("advisor", clock)
        return lambda_handler(event, FakeLambdaContext())

    return _invoke
