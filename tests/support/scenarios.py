"""Run a scenario of scenarios/ once per test session, against the config it names (shared by the scenario tests)."""

from __future__ import annotations

from simulator.scenario import SimulationResult, load_scenario, resolve_config_path, run_scenario
from tests.conftest import ROOT

_results: dict[str, SimulationResult] = {}


def simulate(name: str) -> SimulationResult:
    """scenarios/<name>.yaml through the simulator; each scenario runs once per session (a run takes seconds)."""
    if name not in _results:
        from reflex_core.config import load_config_file

        path = ROOT / "scenarios" / f"{name}.yaml"
        scenario = load_scenario(path)
        config = resolve_config_path(scenario, None, path)
        _results[name] = run_scenario(scenario, load_config_file(config), str(config))
    return _results[name]
