"""The deployed promotion definition executed by moto's Step Functions interpreter (not the local driver):
moto runs the Choice, Wait, Pass, Fail and Succeed states, the Retry/Catch rules, the task-token callback
(SendTaskSuccess) and StopExecution, in real time.

moto cannot run a Lambda function's code without Docker; its Docker-free Lambda backend answers every
invocation with a canned payload. Here that backend's `invoke` is replaced by a call to the real promoter
handler with the task's payload, exactly what the Lambda service does with the function: the Task
states run the real steps against moto's ELBv2, DynamoDB and CloudWatch. Bakes and the retention are one
second long, so each test takes a few seconds of wall time.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.config import ReflexConfig
from reflex_core.promotion_config import Approval, Canary
from reflex_core.runtime import install_runtime
from simulator.aws_world import World, create_world
from simulator.promotion_world import function_arn, workflow_arn
from tests.conftest import FakeLambdaContext
from tests.support import events as ev
from tests.support.promotion import with_pair

pytestmark = pytest.mark.slow
REGION = "us-east-1"


def _wait_for(what: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


@pytest.fixture
def moto_world(dev_config: ReflexConfig, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    from moto.awslambda_simple.models import LambdaSimpleBackend

    from promoter.handler import lambda_handler
    from promoter.workflow_definition import promotion_definition

    config = with_pair(dev_config, schedule=Canary(kind="canary", percent=10, bake_s=1), bake_s=1, retention_s=1,
                       approval=Approval(timeout_s=60))
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}):
        world = create_world(config, {"api": 4, "workers": 2, "reporting-db": 1})
        world.runtime(None, reaction="promoter")  # the system clock: moto waits in real time

        def invoke(self: Any, function_name: str, qualifier: Any, body: Any, headers: Any,
                   response_headers: dict[str, str]) -> bytes:
            assert function_name.endswith("reflex-dev-promoter")
            world.activate("promoter")
            try:
                result = lambda_handler(json.loads(body), FakeLambdaContext())
            except Exception as err:  # noqa: BLE001 - reported to Step Functions as the function error
                response_headers["x-amz-function-error"] = "Unhandled"
                return json.dumps({"errorType": type(err).__name__, "errorMessage": str(err)}).encode()
            return json.dumps(result).encode()

        monkeypatch.setattr(LambdaSimpleBackend, "invoke", invoke)
        iam = world.clients.iam
        role = iam.create_role(RoleName="promoter", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "lambda.amazonaws.com"}}]}))["Role"]["Arn"]
        created = world.clients.get("lambda").create_function(
            FunctionName="reflex-dev-promoter", Runtime="python3.12", Role=role,
            Handler="promoter.handler.lambda_handler", Code={"ZipFile": b"PK\x05\x06" + b"\x00" * 18})
        assert created["FunctionArn"] == function_arn("dev")
        machine = world.clients.stepfunctions.create_state_machine(
            name="reflex-dev-promotion", type="STANDARD", roleArn=role,
            definition=json.dumps(promotion_definition(created["FunctionArn"])))
        assert machine["stateMachineArn"] == workflow_arn("dev") == world.settings.workflow_arn
        yield world
    install_runtime(None)


def invoke(world: World, event: dict[str, Any]) -> dict[str, Any]:
    from promoter.handler import lambda_handler

    world.activate("promoter")
    return lambda_handler(event, FakeLambdaContext())


def weights(world: World) -> dict[str, int]:
    from promoter.traffic_switch import PairTraffic

    return PairTraffic(world.clients, world.config.promotions[0]).read()


def record(world: World) -> Any:
    return world.activate("promoter").store.promotion_record("web")


def history(world: World, arn: str) -> list[str]:
    events = world.clients.stepfunctions.get_execution_history(executionArn=arn, maxResults=1000)["events"]
    return [e["stateEnteredEventDetails"]["name"] for e in events if "stateEnteredEventDetails" in e]


def status(world: World, arn: str) -> str:
    return str(world.clients.stepfunctions.describe_execution(executionArn=arn)["status"])


def test_moto_runs_the_promotion_to_the_end_with_the_approval_callback(moto_world: World) -> None:
    started = invoke(moto_world, ev.custom_event("app.deploy", "GreenReady", {"release": "v2"}, _now()))
    assert started["decisions"][0]["outcome"] == "executed"
    _wait_for(lambda: record(moto_world).promotion is not None
              and record(moto_world).promotion.status == "awaiting-approval")
    assert weights(moto_world) == {"blue": 90, "green": 10}
    arn = record(moto_world).promotion.execution_arn

    # The step that recorded awaiting-approval may still hold the pair's lock for a moment (moto's worker thread):
    # a refusal on a held lock is transient, and the operator sends the command again, as here.
    for _ in range(20):
        approved = invoke(moto_world, {"command": "promote", "pair": "web", "reason": "moto says go",
                                       "operator": "ci"})
        if approved["decisions"][0]["outcome"] != "skipped:locked":
            break
        time.sleep(0.25)
    assert approved["decisions"][0]["outcome"] == "executed"  # SendTaskSuccess on moto's waiting task
    _wait_for(lambda: status(moto_world, arn) != "RUNNING")

    assert status(moto_world, arn) == "SUCCEEDED"
    assert weights(moto_world) == {"blue": 0, "green": 100}
    assert record(moto_world).live == "green" and record(moto_world).promotion.status == "completed"
    states = history(moto_world, arn)
    assert states[:6] == ["Preflight", "AfterPreflight", "NextStep", "Shift", "AfterShift", "Bake"]
    assert states[-5:] == ["Finalize", "AfterFinalize", "Retention", "Cleanup", "Completed"]
    assert "Approval" in states


def test_moto_stops_the_execution_when_a_guard_alarm_rolls_back(moto_world: World) -> None:
    invoke(moto_world, ev.custom_event("app.deploy", "GreenReady", {}, _now()))
    _wait_for(lambda: weights(moto_world) == {"blue": 90, "green": 10})
    arn = record(moto_world).promotion.execution_arn
    moto_world.clients.cloudwatch.set_alarm_state(AlarmName="web-5xx-rate-high", StateValue="ALARM",
                                                  StateReason="test")
    rolled = invoke(moto_world, ev.eventbridge_alarm("web-5xx-rate-high", "ALARM", _now(), value=5, threshold=1))
    assert rolled["decisions"][0]["outcome"] == "executed"
    assert weights(moto_world) == {"blue": 100, "green": 0}
    # moto's worker stops at its next state boundary (AWS reports ABORTED at once).
    _wait_for(lambda: status(moto_world, arn) != "RUNNING")
    assert status(moto_world, arn) == "ABORTED"
    time.sleep(1.5)  # nothing of the stopped execution runs any more
    assert weights(moto_world) == {"blue": 100, "green": 0}


def test_moto_routes_a_failed_check_to_the_rollback_state(moto_world: World) -> None:
    moto_world.config = with_pair(moto_world.config, approval=None)
    moto_world.runtime(None, reaction="promoter")
    invoke(moto_world, ev.custom_event("app.deploy", "GreenReady", {}, _now()))
    _wait_for(lambda: weights(moto_world) == {"blue": 90, "green": 10})
    arn = record(moto_world).promotion.execution_arn
    moto_world.clients.cloudwatch.set_alarm_state(AlarmName="web-p99-latency-high", StateValue="ALARM",
                                                  StateReason="no event: the check finds it")
    _wait_for(lambda: status(moto_world, arn) != "RUNNING")
    assert status(moto_world, arn) == "FAILED"
    assert "Rollback" in history(moto_world, arn) and history(moto_world, arn)[-1] == "RolledBack"
    assert weights(moto_world) == {"blue": 100, "green": 0}


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
