"""Everything a reaction needs at run time, built once per process and injectable.

In Lambda, `current_runtime(model)` builds it from the environment at first use: the config file is
validated with `model`, the reaction's view of the stage config (the common part and its own sections,
with the same models as at synth time; config_base.py explains). Tests and the simulator call
`install_runtime(build_runtime(...))` with moto-backed clients and a virtual clock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Generic

from reflex_core.audit import AuditTrail
from reflex_core.aws_clients import AwsClients
from reflex_core.clock import Clock, SystemClock
from reflex_core.config_base import StageConfigT, load_stage_config
from reflex_core.guardrails import KillSwitch
from reflex_core.settings import RuntimeSettings
from reflex_core.state_store import StateStore


@dataclass
class Runtime(Generic[StageConfigT]):
    settings: RuntimeSettings
    config: StageConfigT
    clients: AwsClients
    clock: Clock
    store: StateStore
    kill_switch: KillSwitch
    audit: AuditTrail
    idempotency_store: Any


def build_runtime(settings: RuntimeSettings, config: StageConfigT | None = None,
                  clients: AwsClients | None = None, clock: Clock | None = None, *,
                  config_model: type[StageConfigT] | None = None) -> Runtime[StageConfigT]:
    """`config` as given (tests, simulator), or the function's config file validated with `config_model`."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    if config is None:
        if config_model is None:
            raise ValueError("build_runtime needs a config or the config model to load one with")
        config = load_stage_config(settings.config_path(), config_model)
    clients = clients or AwsClients()
    clock = clock or SystemClock()
    guard = config.guardrails
    return Runtime(
        settings=settings,
        config=config,
        clients=clients,
        clock=clock,
        store=StateStore(clients.dynamodb, settings.state_table, settings.reaction),
        kill_switch=KillSwitch(clients.ssm, settings.kill_switch_prefix, settings.reaction, clock,
                               cache_s=guard.kill_switch_cache_s, on_error=guard.kill_switch_on_error),
        audit=AuditTrail(clients=clients, stage=settings.stage, reaction=settings.reaction,
                         table=settings.audit_table, topic_arn=settings.notify_topic_arn,
                         event_bus=settings.event_bus_name, ttl_days=guard.audit_ttl_days),
        idempotency_store=DynamoDBPersistenceLayer(table_name=settings.idempotency_table,
                                                   boto3_client=clients.dynamodb),
    )


_runtime: Runtime[Any] | None = None
_runtime_lock = threading.Lock()


def install_runtime(runtime: Runtime[Any] | None) -> None:
    global _runtime
    with _runtime_lock:
        _runtime = runtime


def current_runtime(config_model: type[StageConfigT]) -> Runtime[StageConfigT]:
    """The process's runtime, built at first use with the config validated by `config_model`.

    One process runs one function, so one model is asked for; an installed runtime (tests, simulator) must
    carry a config of that model (the whole `ReflexConfig` is every function's model).
    """
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = build_runtime(RuntimeSettings.from_env(), config_model=config_model)
        if not isinstance(_runtime.config, config_model):
            raise TypeError(f"the installed runtime's config is a {type(_runtime.config).__name__}, "
                            f"not a {config_model.__name__}")
        return _runtime
