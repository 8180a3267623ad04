"""Driving the failover function in tests: its world (simulator/failover_world.py), console commands and the workflow's
steps as Step Functions sends them (the same payload shape as workflow_definition._payload)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from simulator.failover_world import (  # noqa: F401
    GLOBAL_ID,
    PRIMARY_ARN,
    PRIMARY_SET,
    RECORD,
    SECONDARY_ARN,
    SECONDARY_REGION,
    SECONDARY_SET,
    FailoverResources,
    create_failover,
    put_lag,
    record_roles,
)
from tests.conftest import FakeLambdaContext

NAME = "orders-global"
EXECUTION = "arn:aws:states:us-east-1:123456789012:execution:reflex-dev-failover:"


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    """The real handler, one virtual second after the previous invocation (the audit trail is ordered by time)."""
    from failover.handler import lambda_handler
    from reflex_core.recovery_config import RecoveryStageConfig
    from reflex_core.runtime import current_runtime

    current_runtime(RecoveryStageConfig).clock.advance(1)  # type: ignore[attr-defined]
    return lambda_handler(event, FakeLambdaContext())


def command(name: str, operator: str = "alice", **fields: Any) -> dict[str, Any]:
    return {"command": name, "failover": NAME, "reason": f"{name} in the test", "operator": operator} | fields


def step(step_name: str, state: dict[str, Any], at: datetime, *, token: str | None = None, retry: int = 0,
         state_name: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"step": step_name, "execution": EXECUTION + state["run_id"],
                            "state": state_name or step_name, "entered_at": at.isoformat(), "retry": retry,
                            "input": state}
    if token:
        body["task_token"] = token
    return invoke({"reflex_step": body})


def decision(out: dict[str, Any]) -> dict[str, Any]:
    [d] = out["decisions"]
    return d
