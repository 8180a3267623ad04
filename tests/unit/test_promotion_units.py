"""Promotion pieces on their own: the pair config, the step trigger, schedules and weights, the step
response, and the local workflow driver's ASL semantics."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from promoter import workflow_definition as wf
from promoter.promotion_plan import execution_name, schedule_steps, weights_for, workflow_plan
from promoter.step_response import StepDeferred, StepRejected, workflow_response
from reflex_core.clock import VirtualClock
from reflex_core.config import ConfigError, load_config_file, parse_config
from reflex_core.promotion_config import PromotionPair
from reflex_core.triggers import TriggerError, parse_trigger
from simulator.workflow_driver import LocalWorkflows, UnsupportedDefinition
from tests.conftest import ROOT, T0

ELB = "arn:aws:elasticloadbalancing:eu-west-1:123456789012"
PAIR: dict[str, Any] = {
    "name": "web",
    "target": {"kind": "alb", "listener_arn": f"{ELB}:listener/app/web/0123456789abcdef/fedcba9876543210",
               "blue_target_group_arn": f"{ELB}:targetgroup/web-blue/0123456789abcdef",
               "green_target_group_arn": f"{ELB}:targetgroup/web-green/fedcba9876543210"},
    "guard_alarms": {"names": ["web-p99"]},
}
BASE: dict[str, Any] = {"stage": "dev", "notify": {"topic_name": "reflex-dev"}}


def config_with(*pairs: dict[str, Any], **extra: Any) -> Any:
    return parse_config({**BASE, **extra, "promotions": list(pairs)}, "test")


def changed(**changes: Any) -> dict[str, Any]:
    pair = copy.deepcopy(PAIR)
    for key, value in changes.items():
        if key.startswith("target."):
            pair["target"][key.split(".", 1)[1]] = value
        else:
            pair[key] = value
    return pair


# --------------------------------------------------------------------------- config


def test_shipped_configs_have_an_alb_pair() -> None:
    for stage in ("dev", "prod"):
        (pair,) = load_config_file(ROOT / "config" / f"{stage}.yaml").promotions
        assert pair.target.kind == "alb" and pair.freeze_scale_in.policies("blue") == ["api"]


@pytest.mark.parametrize(("pair", "message"), [
    (changed(**{"target.rule_arn": f"{ELB}:listener-rule/app/web/0123456789abcdef/fedcba9876543210/0011223344556677"}),
     "give exactly one of listener_arn or rule_arn"),
    (changed(**{"target.listener_arn": None}), "give exactly one of listener_arn or rule_arn"),
    (changed(**{"target.green_target_group_arn": f"{ELB}:targetgroup/web-blue/0123456789abcdef"}),
     "blue and green must be different target groups"),
    (changed(**{"target.green_target_group_arn":
                "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-green/fedcba9876543210"}),
     "one account and region"),
    (changed(**{"target.listener_arn": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/x/1"}),
     "not an Application Load Balancer listener ARN"),
    (changed(guard_alarms={"tags": {"team": "web"}}), "guard_alarms.tags: not supported"),
    (changed(schedule={"kind": "canary", "percent": 100, "bake_s": 60}), "percent"),
    (changed(schedule={"kind": "linear", "step_percent": 0, "interval_s": 60}), "step_percent"),
    (changed(green_ready={"source": "reflex.dev.promotion", "detail_type": "GreenReady"}), "refuse to consume"),
    (changed(completed_event={"source": "app.deploy", "detail_type": "GreenReady"}), "would start itself"),
    (changed(freeze_scale_in={"blue": ["checkout"]}), "no scaling policy 'checkout'"),
])
def test_invalid_pairs_name_the_problem(pair: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_with(pair)


def test_pair_names_and_switches_are_unique() -> None:
    with pytest.raises(ConfigError, match="promotion names must be unique"):
        config_with(PAIR, changed(**{"target.listener_arn": PAIR["target"]["listener_arn"][:-1] + "1"}))
    with pytest.raises(ConfigError, match="one promotion pair"):
        config_with(PAIR, changed(name="web2"))


def test_pair_arns_must_be_in_the_stage_account_and_region() -> None:
    with pytest.raises(ConfigError, match="not in this stage's account/region"):
        config_with(PAIR, region="us-east-1")
    assert config_with(PAIR, region="eu-west-1", account="123456789012").promotions


def test_route53_sides_need_a_health_source() -> None:
    r53 = {"kind": "route53", "hosted_zone_id": "Z123", "record_name": "www.example.com", "record_type": "A",
           "blue": {"set_identifier": "blue"}, "green": {"set_identifier": "green",
                                                         "health_check_id": "01234567-89ab-cdef-0123-456789abcdef"}}
    with pytest.raises(ConfigError, match="Reflex never shifts traffic to a side whose health it cannot read"):
        config_with(changed(target=r53))


@pytest.mark.parametrize(("schedule", "steps"), [
    ({"kind": "all-at-once"}, [(100, 60)]),
    ({"kind": "canary", "percent": 10, "bake_s": 300}, [(10, 300), (100, 60)]),
    ({"kind": "linear", "step_percent": 25, "interval_s": 120}, [(25, 120), (50, 120), (75, 120), (100, 60)]),
    ({"kind": "linear", "step_percent": 40, "interval_s": 30}, [(40, 30), (80, 30), (100, 60)]),
])
def test_schedules_become_steps(schedule: dict[str, Any], steps: list[tuple[int, int]]) -> None:
    pair = PromotionPair.model_validate(changed(schedule=schedule, bake_s=60))
    assert pair.steps() == steps
    assert schedule_steps(pair) == [{"weight": w, "bake_s": b} for w, b in steps]
    assert workflow_plan(pair)["gate_step"] == -1


def test_weights_always_sum_to_100() -> None:
    for weight in range(0, 101):
        w = weights_for("green", weight)
        assert w["green"] == weight and sum(w.values()) == 100
    with pytest.raises(ValueError, match="percentage"):
        weights_for("blue", 101)


def test_execution_names_are_stable_and_valid() -> None:
    name = execution_name("web", "6f8a0d3c-1f2e-4b7a-9c1d-2e3f4a5b6c01")
    assert name == execution_name("web", "6f8a0d3c-1f2e-4b7a-9c1d-2e3f4a5b6c01")
    assert name != execution_name("web", "another")
    assert len(name) <= 80 and name.replace("-", "").isalnum()


# --------------------------------------------------------------------------- the step trigger


def step(**changes: Any) -> dict[str, Any]:
    body = {"step": "shift", "execution": "arn:aws:states:us-east-1:123456789012:execution:reflex-dev-promotion:web-1",
            "state": "Shift", "entered_at": "2026-11-26T09:00:00.000Z", "retry": 0,
            "input": {"pair": "web", "promotion_id": "web-1", "to_colour": "green", "next_step": 0}}
    return {"reflex_step": {**body, **changes}}


def test_step_trigger_keys() -> None:
    now = datetime.now(UTC)
    first = parse_trigger(step(), now)
    assert first.kind == "step" and first.source == "stepfunctions" and first.who == "workflow:web-1"
    assert first.idempotency_key == parse_trigger(step(), now).idempotency_key  # a redelivery acts once
    assert parse_trigger(step(retry=1), now).idempotency_key != first.idempotency_key  # a retry acts again
    looped = step(input={**step()["reflex_step"]["input"], "next_step": 1})
    assert parse_trigger(looped, now).idempotency_key != first.idempotency_key  # a loop in the same ms
    assert first.summary()["step"] == {"name": "shift", "state": "Shift", "execution": step()["reflex_step"][
        "execution"]}


@pytest.mark.parametrize(("event", "field"), [
    (step(entered_at="yesterday"), "reflex_step.entered_at"),
    (step(extra=True), "reflex_step.extra"),
    (step(retry=-1), "reflex_step.retry"),
    ({"reflex_step": "shift"}, "reflex_step"),
])
def test_malformed_step_events_name_the_field(event: dict[str, Any], field: str) -> None:
    with pytest.raises(TriggerError) as err:
        parse_trigger(event, datetime.now(UTC))
    assert any(e.startswith(field) for e in err.value.errors), err.value.errors


# --------------------------------------------------------------------------- the step response


def result(outcome: str, **decision: Any) -> dict[str, Any]:
    return {"status": "ok", "decisions": [{"outcome": outcome, **decision}]}


def test_executed_step_returns_the_next_state() -> None:
    event = step()
    state = workflow_response(event, result("executed", intended={"workflow": {"next_step": 1, "bake_s": 300}},
                                            after={"weights": {"blue": 90, "green": 10}}))
    assert state["next_step"] == 1 and state["bake_s"] == 300 and state["pair"] == "web"


@pytest.mark.parametrize(("reason", "verdict"), [
    ("preflight-refused", "refused"), ("paused", "hold"), ("green-unhealthy", "rollback"), ("stopped", "stopped"),
    ("stale-step", "stopped"),
])
def test_skips_become_verdicts(reason: str, verdict: str) -> None:
    state = workflow_response(step(), result(f"skipped:{reason}", detail="why"))
    assert state["verdict"] == verdict and state["reason"] == "why"


@pytest.mark.parametrize("reason", ["kill-switch", "locked", "circuit-open", "duplicate-in-progress"])
def test_guardrails_that_refuse_for_now_defer_the_step(reason: str) -> None:
    with pytest.raises(StepDeferred, match=reason):
        workflow_response(step(), result(f"skipped:{reason}"))


def test_rejected_step_is_not_retried_and_other_triggers_pass_through() -> None:
    with pytest.raises(StepRejected):
        workflow_response(step(), {"status": "rejected", "errors": ["reflex_step.step: unknown"]})
    plain = result("executed")
    assert workflow_response({"command": "pause"}, plain) is plain


# --------------------------------------------------------------------------- the local driver


FN = "arn:aws:lambda:us-east-1:123456789012:function:f"
SM = "arn:aws:states:us-east-1:123456789012:stateMachine:m"


def machine(states: dict[str, Any], invoke: Any, clock: VirtualClock) -> LocalWorkflows:
    return LocalWorkflows({"StartAt": next(iter(states)), "States": states}, SM, FN, invoke, clock)


def task(next_state: str | None = None, **extra: Any) -> dict[str, Any]:
    payload = {"n.$": "$.n", "try.$": "$$.State.RetryCount"}
    state: dict[str, Any] = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke",
                             "Parameters": {"FunctionName": FN, "Payload": payload}, "OutputPath": "$.Payload",
                             **extra}
    if next_state:
        state["Next"] = next_state
    else:
        state["End"] = True
    return state


def test_driver_retries_with_backoff_then_catches() -> None:
    clock = VirtualClock(T0)
    calls: list[tuple[datetime, int]] = []

    class Flaky(Exception):
        pass

    def invoke(payload: dict[str, Any]) -> Any:
        calls.append((clock.now(), payload["try"]))
        raise Flaky("no")

    d = machine({"T": task("Ok", Retry=[{"ErrorEquals": ["Flaky"], "IntervalSeconds": 2, "MaxAttempts": 2,
                                         "BackoffRate": 3.0}],
                           Catch=[{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}]),
                 "Ok": {"Type": "Succeed"}, "Caught": {"Type": "Pass", "End": True}}, invoke, clock)
    arn = d.start_execution(stateMachineArn=SM, name="x", input='{"n": 1}')["executionArn"]
    d.run_until_idle()
    assert [(t - T0).total_seconds() for t, _ in calls] == [0, 2, 8] and [r for _, r in calls] == [0, 1, 2]
    execution = d.execution(arn)
    assert execution.status == "SUCCEEDED" and execution.output["error"]["Error"] == "Flaky"


def test_task_failed_wildcard_does_not_match_timeouts() -> None:
    clock = VirtualClock(T0)
    callback = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": FN, "Payload": {"token.$": "$$.Task.Token"}}, "TimeoutSeconds": 60,
                "Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Failed"},
                          {"ErrorEquals": ["States.Timeout"], "Next": "TimedOut"}], "Next": "Done"}
    d = machine({"Wait": callback, "Done": {"Type": "Succeed"}, "Failed": {"Type": "Fail", "Error": "F"},
                 "TimedOut": {"Type": "Fail", "Error": "T"}}, lambda payload: None, clock)
    arn = d.start_execution(stateMachineArn=SM, name="x")["executionArn"]
    d.run_until(T0 + timedelta(seconds=61))
    assert d.execution(arn).error == "T"


def test_callback_completed_during_its_own_invocation() -> None:
    clock = VirtualClock(T0)
    holder: dict[str, LocalWorkflows] = {}

    def invoke(payload: dict[str, Any]) -> None:
        holder["d"].send_task_success(taskToken=payload["token"], output='{"ok": true}')

    callback = {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": FN, "Payload": {"token.$": "$$.Task.Token"}},
                "ResultPath": "$.cb", "End": True}
    holder["d"] = d = machine({"Wait": callback}, invoke, clock)
    arn = d.start_execution(stateMachineArn=SM, name="x", input='{"a": 1}')["executionArn"]
    d.run_due()
    assert d.execution(arn).status == "SUCCEEDED" and d.execution(arn).output == {"a": 1, "cb": {"ok": True}}


def test_start_stop_and_unknown_features() -> None:
    from botocore.exceptions import ClientError

    clock = VirtualClock(T0)
    d = machine({"W": {"Type": "Wait", "Seconds": 10, "Next": "E"}, "E": {"Type": "Succeed"}}, lambda p: None, clock)
    arn = d.start_execution(stateMachineArn=SM, name="x", input="{}")["executionArn"]
    assert d.start_execution(stateMachineArn=SM, name="x", input="{}")["executionArn"] == arn  # same name + input
    with pytest.raises(ClientError, match="ExecutionAlreadyExists"):
        d.start_execution(stateMachineArn=SM, name="x", input='{"other": 1}')
    d.stop_execution(executionArn=arn, error="E", cause="c")
    assert d.describe_execution(executionArn=arn)["status"] == "ABORTED"
    with pytest.raises(UnsupportedDefinition, match="Map"):
        machine({"M": {"Type": "Map", "End": True}}, lambda p: None, clock)


def test_the_promotion_definition_only_uses_what_the_driver_interprets() -> None:
    machine(wf.promotion_definition(FN)["States"], lambda p: None, VirtualClock(T0))
