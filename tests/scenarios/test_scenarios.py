"""Every scenario in scenarios/ through the simulator (real handler, moto, virtual clock), with the
expectations written in the scenario and direct checks on the audit trail it leaves.

A scenario runs against the config it names (`config:`), so an incident replay kept in scenarios/
stays a regression test of the policy it was written for."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from simulator.drill_scenario import is_drill_scenario
from simulator.invalidation_scenario import is_invalidation_scenario
from simulator.scenario import (
    ScenarioError,
    SimulationResult,
    load_scenario,
    parse_scenario,
    run_scenario,
)
from simulator.shard_scenario import is_shard_scenario
from tests.conftest import ROOT
from tests.support.scenarios import simulate

# Invalidation, drill and shard scenarios have their own runners and tests (test_invalidation_scenario.py,
# test_dr_drill_scenario.py, test_shard_scenario.py).
SCENARIOS = sorted(p for p in (ROOT / "scenarios").glob("*.yaml")
                   if not (is_invalidation_scenario(p) or is_drill_scenario(p) or is_shard_scenario(str(p))))


def at(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["at"].replace("Z", "+00:00"))


def executed(result: SimulationResult, operation: str) -> list[dict[str, Any]]:
    return [r for r in result.audit if r["outcome"] == "executed" and r["operation"] == operation]


def step_time(result: SimulationResult, step_id: str) -> datetime:
    return next(e.at for e in result.entries if e.step_id == step_id)


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_every_expectation_of_the_scenario_holds(path: Path) -> None:
    result = simulate(path.stem)
    failures = [f"{e.offset} {e.step_id}: {c.check} expected {c.expected!r}, got {c.actual!r}"
                for e, c in result.failed_checks]
    assert not failures, "\n".join(failures)
    assert result.checks, "a scenario should state what it expects"
    # Only a fault the scenario injected may make an invocation raise (Lambda then retries it).
    assert not [e for e in result.entries if e.error and "injected" not in e.error], "no invocation should raise"


# --------------------------------------------------------------------------- traffic_spike


def test_a_duplicated_alarm_event_acts_once() -> None:
    result = simulate("traffic_spike")
    spike_at = step_time(result, "spike").strftime("%Y-%m-%dT%H:%M:%S")
    spike = [r for r in result.audit
             if r["trigger"].get("alarm", {}).get("name") == "api-p99-latency-high"
             and r["trigger"]["alarm"]["changed_at"].startswith(spike_at)]
    assert sorted(r["outcome"] for r in spike) == ["executed", "skipped:duplicate-delivery"]
    # The CPU transition came over SNS and again over EventBridge: one action as well.
    cpu = [r for r in result.audit if r["trigger"].get("alarm", {}).get("name") == "api-cpu-high"
           and r["trigger"]["alarm"]["transition"] == "OK->ALARM"]
    assert sorted((r["outcome"], r["trigger"]["source"].split(":")[0]) for r in cpu) == [
        ("executed", "sns"), ("skipped:duplicate-delivery", "eventbridge")]


def test_the_kill_switch_stops_actions_only_while_on() -> None:
    result = simulate("traffic_spike")
    on, off = step_time(result, "stop"), step_time(result, "resume")
    killed = [r for r in result.audit if r["outcome"] == "skipped:kill-switch"]
    assert killed and all(on < at(r) < off for r in killed)
    assert all("'scaler' is on" in r["detail"] for r in killed)
    assert not [r for r in result.audit if r["outcome"] == "executed" and on < at(r) < off]


def test_scale_out_respects_its_cooldown() -> None:
    result = simulate("traffic_spike")
    outs = [at(r) for r in executed(result, "scale_out")]
    assert len(outs) == 3
    assert all(b - a >= timedelta(seconds=120) for a, b in pairwise(outs))
    flap = [r for r in result.audit if r["outcome"] == "skipped:cooldown" and at(r) == step_time(result, "flap")]
    assert len(flap) == 1 and "since last scale-out < 120s" in flap[0]["detail"]


def test_scale_in_waits_for_the_ok_window_then_steps_one_at_a_time() -> None:
    result = simulate("traffic_spike")
    recovered = step_time(result, "recovered")
    ins = executed(result, "scale_in")
    assert ins, "the evaluator should scale in after recovery"
    assert all(at(r) >= recovered + timedelta(seconds=600) for r in ins)
    assert all(r["before"]["desired"] - r["after"]["desired"] == 1 for r in ins)
    times = [at(r) for r in ins]
    assert all(b - a >= timedelta(seconds=300) for a, b in pairwise(times))
    assert all(r["after"]["desired"] >= 2 for r in ins)


# --------------------------------------------------------------------------- prewarm_morning


def test_prewarm_holds_the_floor_until_the_window_ends() -> None:
    result = simulate("prewarm_morning")
    [end] = executed(result, "prewarm_end")
    [start] = executed(result, "prewarm_start")
    assert start["after"]["desired"] == 10
    assert at(end) - at(start) == timedelta(minutes=120)
    inside = [r for r in executed(result, "scale_in") if at(r) < at(end)]
    assert inside and min(r["after"]["desired"] for r in inside) == 10
    after = [r for r in executed(result, "scale_in") if at(r) >= at(end)]
    assert after and min(r["after"]["desired"] for r in after) < 10


# --------------------------------------------------------------------------- guardrail_tour


def test_the_rate_limit_trips_the_breaker_once_then_refuses() -> None:
    result = simulate("guardrail_tour")
    outcomes = [r["outcome"] for r in result.audit if r["policy"] == "workers"]
    assert outcomes.count("skipped:circuit-open-tripped") == 1
    assert outcomes.index("skipped:circuit-open-tripped") < outcomes.index("skipped:circuit-open")
    # queue, lease-expired and six set_capacity overrides; the fifth reversal (the 7th) trips on oscillation
    assert sum(r["outcome"] == "executed" and r["target"] == "asg/web-workers" for r in result.audit) == 8
    tripped = next(r for r in result.audit if r["outcome"] == "skipped:circuit-open-tripped")
    assert "oscillation" in tripped["detail"]


# --------------------------------------------------------------------------- the scenario format


BASE: dict[str, Any] = {"name": "x", "start": "2026-11-26T09:00:00Z", "steps": []}


@pytest.mark.parametrize(("steps", "message"), [
    ([{"t": "00:10"}], "steps[0] (t=00:10): a step needs exactly one of"),
    ([{"t": 5, "evaluate": True, "alarm": {"name": "a", "state": "OK"}}], "found: alarm, evaluate"),
    ([{"t": "00:10", "alarm": {"name": "a", "state": "RED"}}], "steps[0] (t=00:10).alarm.state"),
    ([{"t": "00:10", "alarm": {"name": "a", "state": "OK", "vai": "sns"}}], "steps[0] (t=00:10).alarm.vai"),
    ([{"t": "1:2:3:4", "evaluate": True}], "steps[0] (t=1:2:3:4).t: '1:2:3:4' is not an offset"),
    ([{"t": 60, "evaluate": True}, {"t": 30, "evaluate": True}], "steps[1].t: 00:30 is before the previous step"),
    ([{"t": 5, "redeliver": "nope"}], "steps[0].redeliver: no earlier step with id 'nope'"),
    ([{"id": "k", "t": 5, "kill_switch": {"scope": "global", "on": True}}, {"t": 6, "redeliver": "k"}],
     "step 'k' sends no event"),
    ([{"t": 5, "console": {"policy": "api"}}], "steps[0] (t=5).console: a console payload needs a `command`"),
    ([{"t": 5, "evaluate": True, "expect": {}}], "steps[0] (t=5).expect: give at least one of"),
])
def test_invalid_scenarios_name_the_field(steps: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(BASE | {"steps": steps}, "bad.yaml")
    assert message in str(err.value)


def test_yaml_on_key_of_the_kill_switch_is_understood(tmp_path: Path) -> None:
    path = tmp_path / "ks.yaml"
    path.write_text("name: ks\nstart: 2026-11-26T09:00:00Z\nsteps:\n"
                    "  - {t: 5, kill_switch: {scope: scaler, on: true}}\n")
    assert load_scenario(path).steps[0].kill_switch.on is True  # type: ignore[union-attr]


def test_scenario_that_names_an_unknown_policy_is_refused() -> None:
    from reflex_core.config import load_config_file

    scenario = parse_scenario(BASE | {"initial": {"apii": 3}, "steps": [{"t": 5, "evaluate": True}]}, "x")
    with pytest.raises(ScenarioError, match=r"initial.apii: no scaling policy 'apii'"):
        run_scenario(scenario, load_config_file(ROOT / "config" / "dev.yaml"))


def test_cli_prints_a_clean_timeline_and_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from simulator.__main__ import main

    scenario = tmp_path / "small.yaml"
    scenario.write_text(
        "name: small\nstart: '2026-11-26T09:00:00Z'\nconfig: config/dev.yaml\ninitial: {api: 4}\n"
        "every: {evaluate: null}\nsteps:\n"
        "  - {id: a, t: 10, alarm: {name: api-cpu-high, state: ALARM, value: 90, threshold: 80, via: sns},"
        " expect: {outcome: executed, desired: 5}}\n"
        "  - {t: 20, redeliver: a, expect: {desired: 6}}\n")
    code = main([str(scenario), "--config", str(ROOT / "config" / "dev.yaml"), "--out", str(tmp_path), "--check"])
    out = capsys.readouterr()
    assert code == 1  # the second expectation is wrong on purpose
    assert "FAIL 00:20 desired (api): expected 6, got 5" in out.out
    assert "skipped:duplicate-delivery" in out.out
    assert '"_aws"' not in out.out and '"level"' not in out.out  # no EMF or log lines in the timeline
    audit = json.loads((tmp_path / "small.audit.json").read_text())
    assert [r["outcome"] for r in audit] == ["executed", "skipped:duplicate-delivery"]
    timeline = json.loads((tmp_path / "small.timeline.json").read_text())
    assert timeline["expectations"] == {"passed": 2, "failed": 1}
    assert '"_aws"' in (tmp_path / "small.handler.log").read_text()  # EMF lines kept, out of the way
