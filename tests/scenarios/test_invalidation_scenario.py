"""scenarios/content_change.yaml through the simulator (real invalidator, CDN batcher; moto; the local Redis when
it answers), with its expectations and direct checks on what it leaves behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.invalidation_scenario import (
    InvalidationRun,
    is_invalidation_scenario,
    load_invalidation_scenario,
    render_run,
    run_invalidation_file,
)
from simulator.scenario import ScenarioError
from tests.conftest import ROOT

SCENARIO = ROOT / "scenarios" / "content_change.yaml"
_runs: dict[str, InvalidationRun] = {}


def simulate(redis: bool = True) -> InvalidationRun:
    key = f"redis={redis}"
    if key not in _runs:
        if redis:
            _runs[key] = run_invalidation_file(SCENARIO)
        else:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr("simulator.invalidation_scenario._redis_reachable", lambda: False)
                _runs[key] = run_invalidation_file(SCENARIO)
    return _runs[key]


def test_the_scenario_is_recognised_and_every_expectation_holds() -> None:
    assert is_invalidation_scenario(SCENARIO)
    run = simulate()
    failures = [f"{e.offset} {e.step_id}: {c.check} expected {c.expected!r}, got {c.actual!r}"
                for e, c in run.failed_checks]
    assert not failures, "\n".join(failures)
    assert len(run.checks) >= 15
    assert not [e for e in run.entries if e.error]


def test_the_burst_becomes_one_invalidation_tracked_to_completion() -> None:
    run = simulate()
    (invalidation,) = run.invalidations
    assert sorted(invalidation["paths"]) == ["/", "/products/42", "/products/42.json", "/products/43",
                                             "/products/44", "/products/45", "/products/45.html"]
    assert invalidation["status"] == "Completed"
    (completed,) = [c for e in run.entries for c in e.completed]
    assert completed == 120.0  # created at 01:00, seen Completed at the 03:00 check
    queued = [r for r in run.audit if r["operation"] == "queue_cdn_paths"]
    assert len(queued) == 4 and all(r["outcome"] == "executed" for r in queued)
    (sent,) = [r for r in run.audit if r["operation"] == "create_invalidation"]
    assert sent["before"]["requested"]["messages"] == 4
    assert sent["action"]["intended"]["estimated_cost_usd"] == "0.000"


def test_duplicates_and_unsafe_flushes_change_nothing() -> None:
    run = simulate()
    outcomes = [r["outcome"] for r in run.audit]
    assert outcomes.count("skipped:duplicate-delivery") == 1
    assert outcomes.count("skipped:flush-refused") == 2
    assert not [r for r in run.audit if r["operation"] == "flush" and r["outcome"] == "executed"]


def test_without_a_local_redis_the_redis_step_is_skipped_and_said_so() -> None:
    run = simulate(redis=False)
    assert run.redis_note.startswith("NO local Redis")
    (tags,) = [e for e in run.entries if e.step_id == "tags"]
    assert tags.skipped.startswith("SKIPPED: no local Redis") and tags.checks == []
    assert "SKIPPED: no local Redis" in render_run(run)
    assert len(run.invalidations) == 1 and run.passed  # the CDN part does not need Redis


def test_an_invalid_scenario_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nreaction: invalidator\nstart: 2026-11-26T09:00:00Z\nsteps:\n"
                   "  - {t: 5, batch: site, event: {source: a, detail_type: b}}\n", encoding="utf-8")
    with pytest.raises(ScenarioError, match=r"steps\.0: a step needs exactly one of"):
        load_invalidation_scenario(bad)
