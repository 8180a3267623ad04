"""Promotion: how fast a guard alarm puts the traffic back, and how many AWS calls each step makes.

Measured on the real promoter handler (`promoter.handler.lambda_handler`) in this process, against moto
(ELBv2, DynamoDB, CloudWatch, EventBridge, SNS, SSM, Step Functions), with config/dev.yaml's `web` pair:

* **Rollback time**: each run builds a fresh moto account, starts a promotion and runs its steps up to
  the canary (blue 90 / green 10), then hands the handler a guard alarm's "CloudWatch Alarm State
  Change" event. Measured with `time.perf_counter()`: from the call into the handler to the return of
  the ModifyListener call that writes blue 100 / green 0 (the traffic is back), and to the handler's
  return (audit written, workflow stopped, freeze released). Median, p90 and min over `--runs`. The
  handler writes the weights first (promoter/fast_rollback.py: the kill switch, then the forward action
  and blue's health in parallel, then the write; the promotion record as this warm container last read
  or wrote it, one minute before, at the canary's shift). The index of the write among the
  invocation's AWS calls is printed for the warm container (kill switch expired, then still cached) and
  for one that never saw the pair's record (it reads it before the write).
* **AWS calls per step**: every call the handler's clients make (botocore `before-parameter-build`), per
  invocation of a full promotion (GreenReady, every workflow task, the console `promote`) and of the
  rollback, split into what the step needs (traffic, alarms, workflow, promotion record and freeze) and
  what every Reflex decision costs (guardrails: idempotency, lock, kill switch, rate window; audit:
  table item, decision event, notice).

The workflow's tasks are invoked with the payloads the deployed definition sends (the driver is not
used: its calls would not be botocore calls). moto answers in-process, in well under a millisecond per
call: against AWS each call costs a network round trip (typically 5-30 ms within a region), so the real
time to rollback is about (calls before the write) x (round trip) plus the function's own time.

    .venv/bin/python benchmarks/promotion_rollback.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for _path in (ROOT, ROOT / "functions"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                   "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "1",
                   "POWERTOOLS_LOG_LEVEL": "ERROR", "POWERTOOLS_SERVICE_NAME": "promoter"})

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
GUARD = "web-p99-latency-high"
SERVICES = ("dynamodb", "elbv2", "cloudwatch", "events", "sns", "ssm", "stepfunctions", "route53", "sqs")
NEEDED = ("traffic", "alarms", "workflow", "record", "freeze", "completed-event")
OVERHEAD = ("idempotency", "lock", "kill-switch", "rate", "audit")


class Context:
    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = "reflex-dev-promoter"
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 256
        self.invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:reflex-dev-promoter"
        self.log_group_name = "/aws/lambda/reflex-dev-promoter"
        self.log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


class Bench:
    """One moto account with the dev config, the promoter runtime and an AWS call recorder."""

    def __init__(self, world: Any, clock: Any) -> None:
        self.world = world
        self.clock = clock
        self.calls: list[tuple[str, str]] = []
        self.written_at: float | None = None
        settings = world.settings
        self.tables = {settings.idempotency_table: "idempotency", settings.audit_table: "audit"}
        self.state_table = settings.state_table
        for service in SERVICES:
            client = world.clients.get(service)
            client.meta.events.register("before-parameter-build", self._before)
            client.meta.events.register("after-call.elastic-load-balancing-v2.ModifyListener", self._after_write)

    def _before(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        self.calls.append((self._category(model.service_model.service_name, model.name, params), model.name))

    def _after_write(self, **_: Any) -> None:
        self.written_at = time.perf_counter()

    def _category(self, service: str, operation: str, params: dict[str, Any]) -> str:
        if service == "dynamodb":
            table = params.get("TableName", "")
            if table in self.tables:
                return self.tables[table]
            pk = str(params.get("Key", params.get("Item", {})).get("pk", {}).get("S", ""))
            prefix = pk.split("#", 1)[0]
            return {"lock": "lock", "rate": "rate", "cooldown": "rate", "promotion": "record", "freeze": "freeze",
                    "alarm": "alarm-memory", "policyalarms": "alarm-memory"}.get(prefix, f"dynamodb:{prefix}")
        if service == "events":
            entries = params.get("Entries", [{}])
            return "audit" if entries[0].get("DetailType") == "Reflex Decision" else "completed-event"
        return {"ssm": "kill-switch", "sns": "audit", "elbv2": "traffic", "cloudwatch": "alarms",
                "stepfunctions": "workflow", "route53": "traffic"}.get(service, service)

    def invoke(self, event: dict[str, Any]) -> tuple[Any, list[tuple[str, str]]]:
        from promoter.handler import lambda_handler

        start = len(self.calls)
        self.world.activate("promoter", self.clock)
        with open(os.devnull, "w") as devnull, redirect_stdout(devnull):  # EMF lines go to stdout
            result = lambda_handler(event, Context())
        return result, self.calls[start:]


def new_world() -> tuple[Any, Any]:
    from promoter.workflow_definition import promotion_definition
    from reflex_core.clock import VirtualClock
    from reflex_core.config import load_config_file
    from simulator.aws_world import create_world
    from simulator.promotion_world import function_arn

    world = create_world(load_config_file(ROOT / "config" / "dev.yaml"), {"api": 4, "workers": 2, "reporting-db": 1})
    clock = VirtualClock(T0)
    world.runtime(clock, reaction="promoter")
    world.clients.stepfunctions.create_state_machine(
        name="reflex-dev-promotion", definition=json.dumps(promotion_definition(function_arn("dev"))),
        roleArn="arn:aws:iam::123456789012:role/reflex-dev-promotion")
    return world, clock


def step_event(name: str, state_name: str, execution: str, state: dict[str, Any], clock: Any,
               token: str | None = None) -> dict[str, Any]:
    from reflex_core.clock import iso

    body: dict[str, Any] = {"step": name, "execution": execution, "state": state_name,
                            "entered_at": iso(clock.now()), "retry": 0, "input": state}
    if token:
        body["task_token"] = token
    return {"reflex_step": body}


def start_promotion(b: Bench) -> tuple[dict[str, Any], str, list[tuple[str, list[tuple[str, str]]]]]:
    """GreenReady, preflight, shift: the canary. Returns the workflow state, the execution and the calls."""
    from promoter.promotion_plan import execution_name

    event_id = str(uuid.uuid4())
    ready = {"version": "0", "id": event_id, "detail-type": "GreenReady", "source": "app.deploy",
             "account": "123456789012", "time": "2026-11-26T09:00:00Z", "region": "us-east-1", "resources": [],
             "detail": {"pair": "web", "release": "v2"}}
    steps: list[tuple[str, list[tuple[str, str]]]] = []
    _, calls = b.invoke(ready)
    steps.append(("GreenReady (start the workflow)", calls))
    name = execution_name("web", event_id)
    execution = b.world.settings.workflow_arn.replace(":stateMachine:", ":execution:") + f":{name}"
    state = {"pair": "web", "promotion_id": name, "to_colour": "green", "release": "v2"}
    state, calls = b.invoke(step_event("preflight", "Preflight", execution, state, b.clock))
    steps.append(("preflight", calls))
    state, calls = b.invoke(step_event("shift", "Shift", execution, state, b.clock))
    steps.append(("shift (10 %)", calls))
    return state, execution, steps


def full_promotion_calls() -> list[tuple[str, list[tuple[str, str]]]]:
    from moto import mock_aws

    with mock_aws():
        world, clock = new_world()
        b = Bench(world, clock)
        state, execution, steps = start_promotion(b)
        clock.advance(300)
        state, calls = b.invoke(step_event("check", "Check", execution, state, clock))
        steps.append(("check (after the bake)", calls))
        _, calls = b.invoke(step_event("wait_for_approval", "Approval", execution, state, clock, token="tok-1"))
        steps.append(("wait_for_approval (store the token)", calls))
        _, calls = b.invoke({"command": "promote", "pair": "web", "reason": "benchmark", "operator": "bench"})
        steps.append(("console promote (SendTaskSuccess)", calls))
        state, calls = b.invoke(step_event("shift", "Shift", execution, state, clock))
        steps.append(("shift (100 %)", calls))
        clock.advance(120)
        state, calls = b.invoke(step_event("check", "Check", execution, state, clock))
        steps.append(("check (after the bake)", calls))
        state, calls = b.invoke(step_event("finalize", "Finalize", execution, state, clock))
        steps.append(("finalize (+ DeploymentCompleted)", calls))
        clock.advance(3600)
        state, calls = b.invoke(step_event("cleanup", "Cleanup", execution, state, clock))
        steps.append(("cleanup (end of retention)", calls))
    return steps


def alarm_event(clock: Any) -> dict[str, Any]:
    ts = clock.now().strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "CloudWatch Alarm State Change",
            "source": "aws.cloudwatch", "account": "123456789012", "time": ts[:19] + "Z", "region": "us-east-1",
            "resources": [f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{GUARD}"],
            "detail": {"alarmName": GUARD, "state": {"value": "ALARM", "reason": "p99 above 1 s", "timestamp": ts,
                                                      "reasonData": json.dumps({"recentDatapoints": [1.9],
                                                                                "threshold": 1.0})},
                       "previousState": {"value": "OK", "reason": "", "timestamp": ts},
                       "configuration": {"metrics": []}}}


def rollback_run(warm_switch: bool = False, cold_record: bool = False) -> tuple[float, float, list[tuple[str, str]],
                                                                               int]:
    """(ms to the weights write, ms to the handler's return, the calls, calls before the write).

    `warm_switch`: the function read the kill switch less than `kill_switch_cache_s` ago (it is cached).
    `cold_record`: the container never saw the pair's promotion record (another one ran the steps)."""
    from moto import mock_aws

    with mock_aws():
        world, clock = new_world()
        b = Bench(world, clock)
        start_promotion(b)
        clock.advance(60)
        rt = world.activate("promoter", clock)
        if warm_switch:
            rt.kill_switch.state()
        if cold_record:
            from promoter.handler import REACTION

            REACTION.fast_rollback.records.forget(rt.store)
        event = alarm_event(clock)
        b.written_at = None
        before = len(b.calls)
        t0 = time.perf_counter()
        result, calls = b.invoke(event)
        t1 = time.perf_counter()
        assert result["decisions"][0]["outcome"] == "executed", result
        assert b.written_at is not None
        index = next(i for i, (_, op) in enumerate(b.calls[before:]) if op == "ModifyListener")
        return (b.written_at - t0) * 1000, (t1 - t0) * 1000, calls, index


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def calls_table(rows: list[tuple[str, list[tuple[str, str]]]]) -> list[str]:
    head = ["step", "AWS calls", *NEEDED, "guardrails", "audit", "other"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, calls in rows:
        by = Counter(category for category, _ in calls)
        guard = sum(by[c] for c in ("idempotency", "lock", "kill-switch", "rate", "alarm-memory"))
        other = len(calls) - sum(by[c] for c in NEEDED) - guard - by["audit"]
        cells = [name, str(len(calls)), *(str(by[c]) for c in NEEDED), str(guard), str(by["audit"]), str(other)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def operations(calls: list[tuple[str, str]]) -> str:
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for category, op in calls:
        out[category][op] += 1
    return "; ".join(f"{c}: " + ", ".join(f"{op}x{n}" if n > 1 else op for op, n in ops.items())
                     for c, ops in out.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="rollback runs (default 30, plus 2 warm-up)")
    args = parser.parse_args(argv)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    measured: list[tuple[float, float]] = []
    last: tuple[list[tuple[str, str]], int] | None = None
    for i in range(args.runs + 2):
        to_write, total, calls, index = rollback_run()
        if i >= 2:
            measured.append((to_write, total))
            last = (calls, index)
    assert last is not None
    writes = [m[0] for m in measured]
    totals = [m[1] for m in measured]

    print(f"\nGuard alarm -> traffic back at 100 % blue (promoter handler, moto, {args.runs} runs):\n")
    print("| measure | median | p90 | min |")
    print("|---|---|---|---|")
    for label, values in (("alarm event in the handler -> ModifyListener returned (weights back)", writes),
                          ("alarm event in the handler -> handler returned (audited, workflow stopped)", totals)):
        print(f"| {label} | {statistics.median(values):.1f} ms | {_pct(values, 0.9):.1f} ms | {min(values):.1f} ms |")
    calls, index = last
    print(f"\nWarm container (ran the canary's shift 60 s before; kill switch cache expired): AWS calls before the "
          f"weights write: {index} ({operations(calls[:index])}); the write is call {index + 1} of {len(calls)}.")
    _, _, warm_calls, warm_index = rollback_run(warm_switch=True)
    print(f"... with the kill switch still cached (read less than kill_switch_cache_s before): {warm_index} calls "
          f"before the write ({operations(warm_calls[:warm_index])}); the write is call {warm_index + 1} of "
          f"{len(warm_calls)}.")
    cold: list[tuple[float, int, int]] = []
    for _ in range(max(3, args.runs // 3)):
        to_write, _, cold_calls, cold_index = rollback_run(warm_switch=True, cold_record=True)
        cold.append((to_write, cold_index, len(cold_calls)))
    _, cold_index, cold_total = cold[-1]
    print(f"A container that never saw the pair's record (kill switch cached): {cold_index} calls before the write "
          f"(the record read first); the write is call {cold_index + 1} of {cold_total}; median "
          f"{statistics.median(c[0] for c in cold):.1f} ms to the write over {len(cold)} runs.")
    print(f"After it: {operations(calls[index + 1:])}")

    print("\nAWS calls per invocation of a promotion (config/dev.yaml `web`: canary 10 % with approval gate):\n")
    rows = [*full_promotion_calls(), ("guard alarm -> rollback (at the canary)", calls)]
    for line in calls_table(rows):
        print(line)
    print("\n`guardrails`: idempotency record, lock, kill switch, rate window, alarm memory; `audit`: audit item, "
          "decision event, notice (executed actions only).")
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
