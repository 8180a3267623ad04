"""Shared fixtures: a moto AWS account with Reflex's resources, a virtual clock, a Lambda context."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

# Never reach a real AWS account from tests, and keep Powertools quiet and local.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "1", "POWERTOOLS_METRICS_NAMESPACE": "Reflex",
    "POWERTOOLS_SERVICE_NAME": "reflex-test", "POWERTOOLS_LOG_LEVEL": "WARNING",
})

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class FakeLambdaContext:
    def __init__(self, request_id: str | None = None) -> None:
        self.aws_request_id = request_id or str(uuid.uuid4())
        self.function_name = "reflex-test-scaler"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:reflex-test-scaler"
        self.log_group_name = "/aws/lambda/reflex-test-scaler"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture
def clock():
    from reflex_core.clock import VirtualClock

    return VirtualClock(T0)


@pytest.fixture
def dev_config():
    from reflex_core.config import load_config_file

    return load_config_file(ROOT / "config" / "dev.yaml")


@pytest.fixture
def world(dev_config, clock) -> Iterator[Any]:
    """moto account with Reflex's tables, topic, DLQ, kill switch and every dev target; runtime installed."""
    from moto import mock_aws

    from reflex_core.runtime import install_runtime
    from simulator.aws_world import create_world

    with mock_aws():
        w = create_world(dev_config, {"api": 4, "workers": 2, "reporting-db": 1})
        w.runtime(clock)
        yield w
    install_runtime(None)


@pytest.fixture
def invoke(world):
    """Call the real scaler handler with a fresh Lambda context (or the one given)."""
    from scaler.handler import lambda_handler

    def _invoke(event: Any, context: FakeLambdaContext | None = None) -> dict[str, Any]:
        return lambda_handler(event, context or FakeLambdaContext())

    return _invoke


# Fixtures shared by several test modules, registered here so that modules use them by name without importing.
pytest_plugins = ["tests.support.resharder_world"]
