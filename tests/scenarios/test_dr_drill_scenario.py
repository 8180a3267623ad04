"""scenarios/dr_drill.yaml through the simulator (the real drills handler; moto; AWS Backup and the Data API
stubbed with AWS's shapes): every expectation met, and what the run leaves in the audit trail."""

from __future__ import annotations

import pytest

from simulator.drill_scenario import DrillRun, alarms_from_metrics, is_drill_scenario, render, run_drill_file
from tests.conftest import ROOT

SCENARIO = ROOT / "scenarios" / "dr_drill.yaml"
_runs: dict[str, DrillRun] = {}


def simulate() -> DrillRun:
    if "run" not in _runs:
        _runs["run"] = run_drill_file(SCENARIO)
    return _runs["run"]


def test_dispatch_recognises_the_drill_scenario():
    assert is_drill_scenario(SCENARIO)
    assert not is_drill_scenario(ROOT / "scenarios" / "traffic_spike.yaml")


def test_every_expectation_is_met():
    run = simulate()
    assert run.failures == [], render(run)


def test_each_drill_is_audited_with_its_measures():
    details = [r["detail"] for r in simulate().audit if r.get("outcome") == "executed"]
    assert len(details) == 5
    assert "RTO 1800s / 3600s met" in details[0] and "RPO 600s / 900s met" in details[0]
    assert "RTO 5400s / 3600s MISSED" in details[1]
    assert "orders-row-count FAILED" in details[2]
    assert "not isolated" in details[3] and "production's" in details[3]
    assert "FAILED" in details[4]
    [leftover] = [r for r in simulate().audit if r.get("outcome") == "skipped:drill-leftover"]
    assert "awsbackup-restore-test-orders-8" in leftover["detail"]


def test_render_shows_the_alarms():
    text = render(simulate())
    assert "ALARM: reflex-dev-drill-orders-db-objectivemissed" in text and "expectations all met" in text


@pytest.mark.parametrize(("line", "alarms"), [
    ('{"resource": "orders-db", "DrillObjectiveMissed": [1.0]}', ["reflex-dev-drill-orders-db-objectivemissed"]),
    ('{"resource": "orders-db", "DrillObjectiveMissed": [0.0]}', []),
    ('{"resource": "orders-db", "LastSuccessfulDrillAgeHours": [200.0]}', ["reflex-dev-drill-orders-db-overdue"]),
    ('{"resource": "orders-db", "LastSuccessfulDrillAgeHours": [100.0]}', []),
])
def test_alarm_thresholds_match_the_construct(line, alarms):
    assert alarms_from_metrics(line, "dev", {"orders-db": 192.0}) == alarms
