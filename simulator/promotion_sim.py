"""The promotion part of a scenario: the promoter handler, and the promotion workflow run by the local
driver (the deployed definition) on the scenario's virtual clock.

Used by `ScenarioRunner` when a scenario has `green_ready` or `promoter` steps: every workflow task the
driver runs at its due time becomes a timeline row (origin `workflow`), guard alarms also reach the
promoter (as the deployed rules deliver them to both functions), the periodic tick also runs the
promoter's `reconcile`, and the capacity column shows each pair's weights.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from simulator.promotion_world import attach_workflows

if TYPE_CHECKING:
    from simulator.scenario import ScenarioRunner, TimelineEntry

SHORT_STATES = {"Preflight": "preflight", "Shift": "shift", "Check": "check after bake", "Approval": "approval gate",
                "Hold": "hold (paused)", "Finalize": "finalize", "Rollback": "rollback", "Cleanup": "cleanup"}


class PromotionSimulation:
    def __init__(self, runner: ScenarioRunner) -> None:
        self.runner = runner
        self.pending: list[TimelineEntry] = []
        self.driver = attach_workflows(runner.world, runner.clock, self._task)

    # ------------------------------------------------------------------ the workflow's tasks
    def _task(self, payload: dict[str, Any]) -> Any:
        from simulator.scenario import TimelineEntry

        step = payload["reflex_step"]
        clock = self.runner.clock
        entry = TimelineEntry(offset_s=(clock.now() - self.runner.scenario.start).total_seconds(), at=clock.now(),
                              origin="workflow", kind="step",
                              label=f"workflow {SHORT_STATES.get(step['state'], step['state'])}"
                                    + (f" (retry {step['retry']})" if step.get("retry") else ""))
        self.runner._invoke(entry, payload, function="promoter")
        self.pending.append(entry)
        if isinstance(entry.response, BaseException):
            raise entry.response  # the workflow's Retry/Catch see the function error, as in AWS
        return entry.response

    def until(self, when: datetime) -> list[TimelineEntry]:
        """Run every workflow state due up to `when` (each at its own time)."""
        self.driver.run_until(when)
        out, self.pending = self.pending, []
        return out

    # ------------------------------------------------------------------ events
    def guarded(self, alarm_name: str) -> bool:
        return any(p.guard_alarms.matches(alarm_name, None) for p in self.runner.config.promotions)

    # ------------------------------------------------------------------ reading
    def weights(self) -> dict[str, dict[str, Any]]:
        from promoter.traffic_switch import PairTraffic

        out: dict[str, dict[str, Any]] = {}
        store = self.runner.world.activate("promoter", self.runner.clock).store
        for pair in self.runner.world.config.promotions:
            try:
                weights = PairTraffic(self.runner.world.clients, pair).read()
            except Exception as err:  # noqa: BLE001 - shown, not fatal
                out[pair.name] = {"error": type(err).__name__}
                continue
            record = store.promotion_record(pair.name)
            out[pair.name] = {"weights": weights, "live": record.live,
                              "status": record.promotion.status if record.promotion else "idle"}
        return out
