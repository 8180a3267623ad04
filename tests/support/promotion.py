"""A promotion test bench: the moto world of a config, the real promoter handler, the local workflow driver
running the deployed definition on the virtual clock, and the events a pair receives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from reflex_core.clock import VirtualClock
from reflex_core.config import ReflexConfig
from simulator.aws_world import World, create_world
from simulator.promotion_world import attach_workflows, set_alarm_state, set_healthy_targets
from simulator.workflow_driver import LocalWorkflows
from tests.conftest import FakeLambdaContext
from tests.support import events as ev
from tests.support.queues import Reader, drain, queue_with_arn, subscribe_notices


class LambdaCrash(BaseException):  # not an Exception: nothing in the handler may catch a dying process
    """The function's process died here (out of memory, timeout, host failure): nothing after it runs."""


class RuntimeExit(RuntimeError):
    error_type = "Runtime.ExitError"


@dataclass
class PromotionBench:
    world: World
    clock: VirtualClock
    driver: LocalWorkflows = field(init=False)
    responses: list[dict[str, Any]] = field(default_factory=list)
    current_step: str | None = None

    def __post_init__(self) -> None:
        self.driver = attach_workflows(self.world, self.clock, self.step)

    # ------------------------------------------------------------------ invocations
    def invoke(self, event: Any) -> dict[str, Any]:
        from promoter.handler import lambda_handler

        self.world.activate("promoter", self.clock)
        response = lambda_handler(event, FakeLambdaContext())
        self.responses.append(response)
        return response

    def step(self, payload: dict[str, Any]) -> Any:
        """What Lambda runs for a workflow task."""
        self.current_step = payload["reflex_step"]["step"]
        try:
            return self.invoke(payload)
        except LambdaCrash as crash:
            # The process died mid-invocation: Lambda reports Runtime.ExitError to Step Functions.
            raise RuntimeExit(str(crash)) from None
        finally:
            self.current_step = None

    def green_ready(self, pair: str | None = "web", event_id: str | None = None, **detail: Any) -> dict[str, Any]:
        body = {k: v for k, v in {"pair": pair, **detail}.items() if v is not None}
        event = ev.custom_event("app.deploy", "GreenReady", body, self.clock.now())
        if event_id:
            event["id"] = event_id
        return self.invoke(event)

    def console(self, command: str, pair: str = "web", **kw: Any) -> dict[str, Any]:
        payload = {"command": command, "pair": pair, "reason": kw.pop("reason", "test run"),
                   "operator": kw.pop("operator", "sre-on-call"), **kw}
        return self.invoke(payload)

    def alarm(self, name: str, state: str, previous: str = "OK", via: str = "eventbridge") -> dict[str, Any]:
        set_alarm_state(self.world.clients, name, state)
        builder = {"eventbridge": ev.eventbridge_alarm, "alarm-action": ev.alarm_action}[via]
        return self.invoke(builder(name, state, self.clock.now(), previous=previous, value=2.5, threshold=1.0))

    def set_alarm(self, name: str, state: str) -> None:
        """CloudWatch's state only (no event): what DescribeAlarms will report."""
        set_alarm_state(self.world.clients, name, state)

    def reconcile(self) -> dict[str, Any]:
        return self.invoke(ev.schedule("reconcile", "reconcile", self.clock.now()))

    # ------------------------------------------------------------------ the workflow
    def run(self, seconds: float | None = None) -> None:
        """Drive the workflow: for `seconds` of virtual time, or until it waits for a callback or ends."""
        if seconds is None:
            self.driver.run_until_idle()
        else:
            self.driver.run_until(self.clock.now() + timedelta(seconds=seconds))

    def execution(self) -> Any:
        return self.driver.execution(self.record().promotion.id)  # type: ignore[union-attr]

    def states_entered(self) -> list[str]:
        return [h.state for h in self.driver.history if h.kind == "entered"]

    # ------------------------------------------------------------------ reading the world
    def weights(self, pair: str = "web") -> dict[str, int]:
        from promoter.traffic_switch import PairTraffic

        found = self.world.config.promotion(pair)
        assert found is not None
        return PairTraffic(self.world.clients, found).read()

    def record(self, pair: str = "web") -> Any:
        return self.world.activate("promoter", self.clock).store.promotion_record(pair)

    def healthy(self, colour: str, count: int, pair: str = "web") -> None:
        set_healthy_targets(self.world.clients, self.world.pairs[pair], colour, count)

    def outcomes(self, operation: str | None = None) -> list[str]:
        return [r["outcome"] for r in self.world.audit_records()
                if operation is None or r["operation"] == operation or (r.get("action") or {}).get(
                    "operation") == operation]

    def audit(self) -> list[dict[str, Any]]:
        return [r for r in self.world.audit_records() if r["reaction"] == "promoter"]


def new_event_id() -> str:
    return str(uuid.uuid4())


def bench(config: ReflexConfig, clock: VirtualClock, capacity: dict[str, int] | None = None) -> PromotionBench:
    """Inside an active mock_aws()."""
    world = create_world(config, capacity or {"api": 4, "workers": 2, "reporting-db": 1})
    world.runtime(clock)
    return PromotionBench(world=world, clock=clock)


def with_pair(config: ReflexConfig, name: str = "web", **changes: Any) -> ReflexConfig:
    """The config with pair `name` changed (model instances for nested fields)."""
    pairs = [p.model_copy(update=changes) if p.name == name else p for p in config.promotions]
    return config.model_copy(update={"promotions": pairs})


def completed_events(world: World) -> Reader:
    """An SQS queue receiving the DeploymentCompleted events; call the result to read them."""
    import json

    sqs, events = world.clients.sqs, world.clients.events
    url, arn = queue_with_arn(sqs, "deployment-completed")
    events.put_rule(Name="deployment-completed", EventPattern=json.dumps({
        "source": ["app.deploy"], "detail-type": ["DeploymentCompleted"]}))
    events.put_targets(Rule="deployment-completed", Targets=[{"Id": "q", "Arn": arn}])
    return drain(sqs, url)


def notices(world: World) -> Reader:
    """An SQS queue subscribed to the notification topic; call the result to read the notices."""
    return subscribe_notices(world, "notices")


SERVICES = ("dynamodb", "elbv2", "cloudwatch", "events", "sns", "ssm", "route53", "sqs")


def count_calls(world: World, calls: list[tuple[str, str]], who: Any) -> None:
    """Append (who(), operation) for every AWS call the world's clients make."""
    for service in SERVICES:
        world.clients.get(service).meta.events.register(
            "before-call", lambda model, **_: calls.append((who(), model.name)))


def crash_at(world: World, when: Any) -> None:
    """Kill the invocation (LambdaCrash) before the AWS call for which `when(operation)` is first true."""
    fired = {"done": False}

    def hook(model: Any, **_: Any) -> None:
        if not fired["done"] and when(model.name):
            fired["done"] = True
            raise LambdaCrash(f"crashed before {model.name}")

    for service in SERVICES:
        world.clients.get(service).meta.events.register("before-call", hook)
