"""Everything a reaction needs at run time, built once per process and injectable.

In Lambda, `current_runtime()` builds it from the environment at first use (config file
validated with the same models as at synth time). Tests and the simulator call
`install_runtime(build_runtime(...))` with moto-backed clients and a virtual clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from reflex_core.audit import AuditTrail
from reflex_core.aws_clients import AwsClients
from reflex_core.clock import Clock, SystemClock
from reflex_core.config import ReflexConfig, load_config_file
from reflex_core.guardrails import KillSwitch
from reflex_core.settings import RuntimeSettings
from reflex_core.state_store import StateStore


@dataclass
class Runtime:
    settings: RuntimeSettings
    config: ReflexConfig
    clients: AwsClients
    clock: Clock
    store: StateStore
    kill_switch: KillSwitch
    audit: AuditTrail
    idempotency_store: Any


def build_runtime(settings: RuntimeSettings, config: ReflexConfig | None = None,
                  clients: AwsClients | None = None, clock: Clock | None = None) -> Runtime:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    config = config or load_config_file(settings.config_path())
    clients = clients or AwsClients()
    clock = clock or SystemClock()
    guard = config.guardrails
    return Runtime(
        settings=settings,
        config=config,
        clients=clients,
        clock=clock,
        store=StateStore(clients.dynamodb, settings.state_table),
        kill_switch=KillSwitch(clients.ssm, settings.kill_switch_prefix, settings.reaction, clock,
                               cache_s=guard.kill_switch_cache_s, on_error=guard.kill_switch_on_error),
        audit=AuditTrail(clients=clients, stage=settings.stage, reaction=settings.reaction,
                         table=settings.audit_table, topic_arn=settings.notify_topic_arn,
                         event_bus=settings.event_bus_name, ttl_days=guard.audit_ttl_days),
        idempotency_store=DynamoDBPersistenceLayer(table_name=settings.idempotency_table,
                                                   boto3_client=clients.dynamodb),
    )


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def install_runtime(runtime: Runtime | None) -> None:
    global _runtime
    with _runtime_lock:
        _runtime = runtime


def current_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = build_runtime(RuntimeSettings.from_env())
        return _runtime
