"""The promoter reaction: blue/green promotion on the shared pipeline.

Triggers and what they ask for (every one passes the same guardrails and leaves an audit record):

* GreenReady event (the pair's `green_ready` source/detail-type) -> `start`: start the workflow execution
  named after the event id (a redelivered event starts nothing new).
* Workflow steps (`reflex_step`) -> preflight, shift, check, wait_for_approval, hold, finalize, rollback,
  cleanup: each reads the durable promotion record, acts, and returns the workflow's next state.
* A guard alarm entering ALARM -> `rollback` at once, in this invocation: all traffic back on the colour
  that was live, the execution stopped, the freeze released, audited and notified. It never waits for the
  workflow's next check. Rollbacks take over the pair's lock and are never rate limited.
* Console: promote (approve the gate, or approve it in advance), pause, resume, abort, rollback.
* Schedule `reconcile` (every `evaluate_every_minutes`): the backstop for lost events and dead workflows.

The promotion record (state table, `promotion#<pair>`) is the source of truth: live colour, status, the
last step written, callback tokens. Every step is idempotent: run twice, or resumed after a crash between
any two calls, it ends in the same state. A shift that lost a race with a rollback puts the rollback's
weights back itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from promoter import workflow_definition as wf
from promoter.fast_rollback import FastRollback
from promoter.guard_alarms import read_guard_alarms
from promoter.promotion_commands import (
    GreenReadyDetail,
    PromotionCommand,
    WorkflowState,
    validate_command,
    validate_green_ready,
    validate_workflow_state,
)
from promoter.promotion_plan import (
    ABORTED,
    AWAITING_APPROVAL,
    CLOSED,
    ENDED,
    ENFORCED,
    FINALIZED,
    FREEZE_MARGIN_S,
    HELD,
    IN_FLIGHT,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    SHIFTING,
    all_on,
    execution_name,
    expected_duration_s,
    format_weights,
    weights_for,
    workflow_plan,
)
from promoter.promotion_workflow import PromotionWorkflow, TokenGone
from promoter.traffic_switch import PairTraffic, TrafficSwitchError, UnsafeWeights
from reflex_core.actions import Action, Intent, Skip
from reflex_core.clock import iso
from reflex_core.observability import logger
from reflex_core.pipeline import GuardSettings, Superseded
from reflex_core.promotion_config import COLOURS, Colour, PromotionPair, PromotionStageConfig, other
from reflex_core.runtime import Runtime
from reflex_core.state_store import AlarmMemory, Promotion, PromotionConflict, PromotionRecord
from reflex_core.step_results import TaskTokens, check_step
from reflex_core.triggers import Trigger, TriggerError


class WeightsMoved(RuntimeError):
    """The weights left the new colour between a finalize's plan and its announcement."""


class GateGone(RuntimeError):
    """A `promote` found no gate waiting any more (timed out, or the promotion ended): it approved nothing."""


# The runtime this reaction runs with: its config is the reaction's view of the stage config.
ReactionRuntime = Runtime[PromotionStageConfig]

# Back to the last known-good state: take over the lock, never rate limited, and marked `safety` so that a kill
# switch at `on` (which stops every forward action) lets them run; only `hard-stop` stops them too.
SAFETY_OPERATIONS = frozenset({"rollback", "abort"})
# The periodic reconcile is marked `safety` too: the rollback it finds due (a guard alarm in ALARM whose event was
# lost, a dead workflow) is one, and must run at kill-switch level `on`. It is never rate limited either, but it
# does not take over the lock (it runs every few minutes, mostly to find nothing: a step holding the lock is left
# alone, and the reconcile is retried). At `on`, the only other thing it can do, a cleanup, is refused in its plan.
RECONCILE = "reconcile"
_TOKEN_CACHE = 256
# Operations that start a new epoch themselves (or do not concern one): never reported fenced.
_NOT_FENCED = frozenset({"start", wf.PREFLIGHT, "rollback", "abort", "close", RECONCILE})


@dataclass
class _Context:
    pair: PromotionPair
    record: PromotionRecord
    traffic: PairTraffic
    now: datetime

    @property
    def promotion(self) -> Promotion | None:
        return self.record.promotion

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        p = self.promotion
        return {"live": self.record.live, "promotion": p.id if p else None, "status": p.status if p else None,
                "epoch": self.record.epoch, **extra}


class PromotionReaction:
    # Every operation writes a state (weights, the promotion record), so running it again is harmless.
    idempotent_execute = True
    # A guard alarm's ALARM delivered after its OK still rolls back: the canary was bad even if it recovered.
    acts_on_stale_alarm = True
    name = "promoter"
    config_model = PromotionStageConfig

    def __init__(self) -> None:
        # Callback tokens of the steps being handled, by fingerprint: tokens never enter the audit trail.
        self._tokens = TaskTokens(_TOKEN_CACHE)
        # A guard alarm's weights, written before the pipeline runs (fast_rollback.py).
        self.fast_rollback = FastRollback()
        # Per invocation (thread): what `execute` found fenced (see execute).
        self._fences = threading.local()

    def fast_safety(self, trigger: Trigger, rt: ReactionRuntime) -> None:
        """Time to safety: a guard alarm's weights go back first, before the pipeline's bookkeeping (the
        pipeline calls this right after parsing; see fast_rollback.py)."""
        self.fast_rollback.run_trigger(trigger, rt)

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> Any:
        if trigger.kind == "console":
            return validate_command(trigger.payload, rt.config)
        if trigger.kind == "event" and trigger.event is not None:
            pairs = self._ready_pairs(trigger, rt)
            return validate_green_ready(trigger.event.detail, pairs) if pairs else None
        if trigger.kind == "schedule" and trigger.schedule is not None:
            if trigger.schedule.operation != "reconcile":
                raise TriggerError([f"reflex_schedule.operation: unknown operation {trigger.schedule.operation!r} "
                                    "(reconcile)"])
            return None
        if trigger.kind == "step" and trigger.step is not None:
            step = trigger.step
            check_step(step.step, step.task_token is not None, wf.STEPS, wf.CALLBACK_STEPS)
            return validate_workflow_state(step.input, rt.config)
        return None

    @staticmethod
    def _ready_pairs(trigger: Trigger, rt: ReactionRuntime) -> list[PromotionPair]:
        ev = trigger.event
        assert ev is not None
        return [p for p in rt.config.promotions
                if p.green_ready.source == ev.source and p.green_ready.detail_type == ev.detail_type]

    @staticmethod
    def _guarded_pairs(alarm_name: str, rt: ReactionRuntime) -> list[PromotionPair]:
        return [p for p in rt.config.promotions if p.guard_alarms.matches(alarm_name, None)]

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        assert trigger.alarm is not None
        return [p.name for p in self._guarded_pairs(trigger.alarm.name, rt)]

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        if trigger.kind == "alarm":
            return self._alarm_intents(trigger, rt)
        if trigger.kind == "schedule":
            return [self._intent(p, "reconcile", "periodic reconcile", quiet=True) for p in rt.config.promotions]
        if request is None:
            return []
        if isinstance(request, PromotionCommand):
            pair = rt.config.promotion(request.pair)
            assert pair is not None
            extra: dict[str, Any] = {"live": request.live} if request.live else {}
            intent = self._intent(pair, request.command, f"{request.command} by {request.operator}: {request.reason}",
                                  operator=request.operator, **extra)
            return [intent.model_copy(update={"dry_run": request.dry_run})]
        if isinstance(request, tuple):
            pair, ready = request
            assert isinstance(ready, GreenReadyDetail)
            return [self._intent(pair, "start", f"GreenReady{' ' + ready.release if ready.release else ''} from "
                                 f"{trigger.who}", colour=ready.colour, release=ready.release,
                                 event_id=trigger.event_id, metadata=ready.metadata)]
        assert isinstance(request, WorkflowState) and trigger.step is not None
        pair = rt.config.promotion(request.pair)
        assert pair is not None
        params: dict[str, Any] = {"state": request.model_dump(mode="json"), "execution": trigger.step.execution}
        if trigger.step.task_token:
            params["token_ref"] = self._tokens.remember(trigger.step.task_token)
        return [self._intent(pair, trigger.step.step, f"workflow step {trigger.step.step} of {request.promotion_id}",
                             **params)]

    def _alarm_intents(self, trigger: Trigger, rt: ReactionRuntime) -> list[Intent | Skip]:
        alarm = trigger.alarm
        assert alarm is not None
        out: list[Intent | Skip] = []
        for pair in self._guarded_pairs(alarm.name, rt):
            if alarm.state != "ALARM":
                out.append(Skip(reason="alarm-not-breaching", policy=pair.name, target_key=_key(pair),
                                detail=f"{alarm.name} {alarm.transition}: only an alarm entering ALARM rolls back"))
                continue
            out.append(self._intent(pair, "rollback", f"guard alarm {alarm.name} {alarm.transition}",
                                    cause="alarm", alarm=alarm.name, changed_at=alarm.changed_at.timestamp()))
        return out

    @staticmethod
    def _intent(pair: PromotionPair, operation: str, reason: str, quiet: bool = False, **params: Any) -> Intent:
        return Intent(policy=pair.name, target_key=_key(pair), target={"pair": pair.name, "kind": pair.target.kind},
                      operation=operation, params=params, reason=reason, quiet=quiet)

    def _token(self, action: Action) -> str:
        return self._tokens.of(action)

    # ------------------------------------------------------------------ guard settings
    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        return {_key(p) for p in rt.config.promotions}

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        pair = self._pair(intent.policy, rt)
        rollback = intent.operation in SAFETY_OPERATIONS
        safety = rollback or intent.operation == RECONCILE
        # A dry-run pair still starts its workflow (starting moves no traffic): the preflight, in dry-run,
        # reports what it would do, and the execution ends there (DryRun).
        dry_run = (rt.config.dry_run or pair.dry_run) and intent.operation != "start"
        return GuardSettings(out_cooldown_s=0, in_cooldown_s=0, max_actions_per_hour=pair.max_actions_per_hour,
                             circuit_open_for_s=3600, dry_run=dry_run, preempt_lock=rollback, bypass_rate_limit=safety,
                             safety=safety)

    @staticmethod
    def _pair(name: str, rt: ReactionRuntime) -> PromotionPair:
        pair = rt.config.promotion(name)
        if pair is None:
            raise LookupError(f"no promotion pair {name}")
        return pair

    def _context(self, pair_name: str, rt: ReactionRuntime) -> _Context:
        pair = self._pair(pair_name, rt)
        return _Context(pair=pair, record=self._read_record(rt, pair.name),
                        traffic=PairTraffic(rt.clients, pair), now=rt.clock.now())

    def _read_record(self, rt: ReactionRuntime, pair: str) -> PromotionRecord:
        """The pair's promotion record, read and remembered (the fast rollback may act on it, fast_rollback.py)."""
        return self.fast_rollback.read_record(rt, pair)

    # ------------------------------------------------------------------ plan
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        ctx = self._context(intent.policy, rt)
        planner: dict[str, Callable[[Intent, _Context, ReactionRuntime], Action | Skip]] = {
            "start": self._plan_start,
            wf.PREFLIGHT: self._plan_preflight,
            wf.SHIFT: self._plan_shift,
            wf.CHECK: self._plan_check,
            wf.WAIT_FOR_APPROVAL: self._plan_wait_for_approval,
            wf.HOLD: self._plan_hold,
            wf.FINALIZE: self._plan_finalize,
            wf.CLEANUP: self._plan_cleanup,
            "rollback": self._plan_rollback,
            "abort": self._plan_rollback,
            "promote": self._plan_promote,
            "pause": self._plan_pause,
            "resume": self._plan_resume,
            "close": self._plan_close,
            RECONCILE: self._plan_reconcile,
        }
        return planner[intent.operation](intent, ctx, rt)

    @staticmethod
    def _action(intent: Intent, operation: str, before: dict[str, Any], intended: dict[str, Any], reason: str,
                page: bool = False, **params: Any) -> Action:
        return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target, operation=operation,
                      params={**intent.params, **params}, before=before, intended=intended, reason=reason,
                      page=page)

    @staticmethod
    def _skip(intent: Intent, ctx: _Context, reason: str, detail: str, page: bool = False, **before: Any) -> Skip:
        return Skip(reason=reason, detail=detail, policy=intent.policy, target_key=intent.target_key,
                    before=ctx.snapshot(**before), quiet=intent.quiet and not page, page=page)

    def _own_promotion(self, intent: Intent, ctx: _Context, *, allowed: frozenset[str] = IN_FLIGHT) -> Skip | None:
        """A step concerns its own promotion only, and only while it is in one of the `allowed` states."""
        state = intent.params["state"]
        p = ctx.promotion
        if p is None or p.id != state["promotion_id"]:
            current = f"{p.id} ({p.status})" if p else "none"
            return self._skip(intent, ctx, "stopped", f"promotion {state['promotion_id']} is not the pair's "
                                                      f"current promotion (current: {current})")
        if p.status not in allowed:
            return self._skip(intent, ctx, "stopped", f"promotion {p.id} is {p.status}: {p.reason}".rstrip(": "))
        return None

    def _active_step(self, intent: Intent, ctx: _Context) -> tuple[Promotion, WorkflowState] | Skip:
        """A shift or check runs for its own, in-flight, unpaused promotion: that promotion and the workflow state."""
        stopped = self._own_promotion(intent, ctx)
        if stopped:
            return stopped
        p = ctx.promotion
        assert p is not None
        if p.paused:
            return self._skip(intent, ctx, "paused", f"paused: {p.reason}")
        return p, WorkflowState.model_validate(intent.params["state"])

    # -- start (GreenReady)
    def _plan_start(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        p, live = ctx.promotion, ctx.record.live
        name = execution_name(ctx.pair.name, str(intent.params["event_id"]))
        to = _colour(intent.params.get("colour") or other(_colour(live)))
        if p is not None and p.id == name:
            return self._skip(intent, ctx, "already-started", f"this GreenReady event already started {name}")
        if p is not None and p.status in IN_FLIGHT:
            return self._skip(intent, ctx, "promotion-in-flight", f"promotion {p.id} is {p.status}; abort it or "
                                                                  "wait for it to end")
        if p is not None and p.status == ROLLBACK_FAILED:
            return self._skip(intent, ctx, "rollback-failed", f"the rollback of {p.id} failed ({p.reason}); an "
                              "operator finishes it by hand and `close`s it first", page=True)
        if to == live:
            return self._skip(intent, ctx, "colour-is-live", f"{to} is live; deploy the new release to {other(to)}")
        release = intent.params.get("release")
        runs = dict(p.releases) if p is not None else {}
        if release is not None and runs.get(live) == release:
            # A replay (or a pipeline re-announcing): promoting it would move traffic to the colour that does not
            # run it, and end the live release's retention window.
            return self._skip(intent, ctx, "release-already-live",
                              f"{release} is already live on {live}; {to} runs {runs.get(to) or 'an unknown release'}"
                              f" per the promotion record: refused", releases=runs)
        state = {"pair": ctx.pair.name, "promotion_id": name, "to_colour": to, "release": intent.params.get("release")}
        # A release deployed onto the colour a finalized promotion retains: that colour no longer runs the release
        # that was live before, so it stops being a rollback target now, whether or not the preflight lets the new
        # promotion start (docs/runbooks/promotion.md, "A GreenReady during retention").
        ends_retention = (p is not None and p.status == FINALIZED and p.from_colour == to
                          and (p.retention_until is None or ctx.now.timestamp() < p.retention_until))
        return self._action(intent, "start", ctx.snapshot(), {"promotion": name, "from": live, "to": to},
                            f"start promotion {name}: {live} -> {to}" + (
                                f" ({intent.params['release']})" if intent.params.get("release") else "") + (
                                f"; {to} no longer runs the retained release: retention of {p.id} ends"
                                if ends_retention and p is not None else ""),
                            name=name, workflow_input=state, ends_retention=p.id if ends_retention and p else None)

    # -- preflight
    def _plan_preflight(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        state = WorkflowState.model_validate(intent.params["state"])
        pair, p, live = ctx.pair, ctx.promotion, ctx.record.live
        to: Colour = state.to_colour
        from_: Colour = other(to)
        plan = {**workflow_plan(pair), "from_colour": from_, "verdict": wf.CONTINUE, "reason": ""}
        intended = {"status": SHIFTING, "from": from_, "to": to, "steps": plan["steps"],
                    "freeze_scale_in": pair.freeze_scale_in.policies(from_), "workflow": plan}
        if p is not None and p.id == state.promotion_id:
            if p.status in IN_FLIGHT:
                # Resumed after a crash past the claim: the checks passed a moment ago; claim and freeze again.
                return self._action(intent, wf.PREFLIGHT, ctx.snapshot(), intended | {"resumed": True},
                                    f"preflight of {p.id} resumed", healthy=p.preflight_healthy)
            return self._skip(intent, ctx, "stopped", f"promotion {p.id} is already {p.status}")
        if p is not None and (p.status in IN_FLIGHT or p.status == ROLLBACK_FAILED):
            return self._skip(intent, ctx, "promotion-in-flight", f"promotion {p.id} is {p.status}")
        if to == live:
            return self._skip(intent, ctx, "colour-is-live", f"{to} is already live")
        current = ctx.traffic.read()
        healthy_to, healthy_from = ctx.traffic.healthy(to), ctx.traffic.healthy(from_)
        guards = read_guard_alarms(rt.clients, pair.guard_alarms)
        problems = []
        if current != all_on(from_):
            problems.append(f"traffic is {format_weights(current)}; a promotion starts from 100 % {from_}")
        if healthy_to < pair.min_healthy_green:
            problems.append(f"{to} has {healthy_to} healthy targets, needs {pair.min_healthy_green}")
        if healthy_from == 0:
            problems.append(f"{from_} has no healthy target: there would be nothing to roll back to")
        problems += guards.problems()
        before: dict[str, Any] = {"weights": current, "healthy": {to: healthy_to, from_: healthy_from},
                                  "alarms": guards.states}
        if problems:
            return self._skip(intent, ctx, "preflight-refused", "; ".join(problems), **before)
        supersedes = p.id if p is not None and p.status == FINALIZED else None
        return self._action(intent, wf.PREFLIGHT, ctx.snapshot(**before), intended | {"supersedes": supersedes},
                            f"preflight passed: {to} {healthy_to} healthy, guards OK; {from_} -> {to} in "
                            f"{len(plan['steps'])} step(s)", healthy=healthy_to)

    # -- shift
    def _plan_shift(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        active = self._active_step(intent, ctx)
        if isinstance(active, Skip):
            return active
        p, state = active
        index = state.next_step
        if index >= len(state.steps):
            return self._skip(intent, ctx, "stopped", f"step {index} does not exist")
        if index < p.step:
            return self._skip(intent, ctx, "stale-step", f"step {index} is behind the recorded step {p.step}")
        weight = int(state.steps[index]["weight"])
        target = weights_for(state.to_colour, weight)
        current = ctx.traffic.read()
        healthy = ctx.traffic.healthy(state.to_colour)
        before: dict[str, Any] = {"weights": current, "healthy": {state.to_colour: healthy}, "step": p.step}
        if healthy < ctx.pair.min_healthy_green and weight > current.get(state.to_colour, 0):
            return self._skip(intent, ctx, "green-unhealthy", f"{state.to_colour} has {healthy} healthy targets, "
                                                              f"needs {ctx.pair.min_healthy_green}", **before)
        if p.weights and current not in (dict(p.weights), target):
            # Changed by hand (e.g. while waiting for approval): like the check after a bake, hold on it rather than
            # shift from weights that are not the real ones. (`target` already in place: a retried shift.)
            reason = (f"weights are {format_weights(current)}, Reflex wrote {format_weights(p.weights)}: changed "
                      "outside Reflex; paused before the shift (resume to re-check, or abort/rollback)")
            return self._action(intent, "shift_held", ctx.snapshot(**before),
                                {"paused": True, "workflow": {"verdict": wf.HOLD_VERDICT, "reason": reason}},
                                f"step {index + 1}/{len(state.steps)} held: {reason}")
        workflow = {"next_step": index + 1, "bake_s": int(state.steps[index]["bake_s"]), "verdict": wf.CONTINUE,
                    "reason": ""}
        return self._action(intent, wf.SHIFT, ctx.snapshot(**before),
                            {"weights": target, "step": index, "workflow": workflow},
                            f"step {index + 1}/{len(state.steps)}: {format_weights(target)}")

    # -- check
    def _plan_check(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        active = self._active_step(intent, ctx)
        if isinstance(active, Skip):
            return active
        p, state = active
        current = ctx.traffic.read()
        healthy = ctx.traffic.healthy(state.to_colour)
        guards = read_guard_alarms(rt.clients, ctx.pair.guard_alarms)
        problems = guards.problems()
        if healthy < ctx.pair.min_healthy_green:
            problems.append(f"{state.to_colour} has {healthy} healthy targets, needs {ctx.pair.min_healthy_green}")
        if problems:
            verdict, reason = wf.ROLLBACK_VERDICT, "; ".join(problems)
        elif current != p.weights:
            verdict = wf.HOLD_VERDICT
            reason = (f"weights are {format_weights(current)}, Reflex wrote {format_weights(p.weights)}: changed "
                      "outside Reflex; paused (resume to re-check, or abort/rollback)")
        elif state.next_step >= len(state.steps):
            verdict, reason = wf.DONE, ""
        else:
            verdict, reason = wf.CONTINUE, ""
        before = {"weights": current, "healthy": {state.to_colour: healthy}, "alarms": guards.states}
        return self._action(intent, wf.CHECK, ctx.snapshot(**before),
                            {"verdict": verdict, "workflow": {"verdict": verdict, "reason": reason}},
                            f"check after step {state.next_step}: {verdict}" + (f" ({reason})" if reason else ""))

    # -- callbacks: approval gate and pause
    def _plan_wait_for_approval(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        stopped = self._own_promotion(intent, ctx)
        if stopped:
            return self._end_wait(intent, ctx, stopped.detail)
        p = ctx.promotion
        assert p is not None
        if p.approved_by:
            return self._action(intent, "approve_gate", ctx.snapshot(),
                                {"status": SHIFTING, "callback": "success", "approved_by": p.approved_by},
                                f"gate approved in advance by {p.approved_by}")
        state = intent.params["state"]
        until = datetime.fromtimestamp(ctx.now.timestamp() + int(state.get("approval_timeout_s", 0)), tz=UTC)
        return self._action(intent, "await_approval", ctx.snapshot(),
                            {"status": AWAITING_APPROVAL, "until": iso(until)},
                            f"waiting for a console `promote` of {ctx.pair.name} before the last step, until "
                            f"{iso(until)} (then rollback)")

    def _plan_hold(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        stopped = self._own_promotion(intent, ctx)
        if stopped:
            return self._end_wait(intent, ctx, stopped.detail)
        p = ctx.promotion
        assert p is not None
        if not p.paused:
            return self._action(intent, "resume_wait", ctx.snapshot(), {"status": SHIFTING, "callback": "success"},
                                "resumed before the hold began")
        return self._action(intent, wf.HOLD, ctx.snapshot(), {"status": HELD},
                            f"held at {format_weights(p.weights)} until a console `resume`: {p.reason}")

    def _end_wait(self, intent: Intent, ctx: _Context, why: str) -> Action:
        return self._action(intent, "end_wait", ctx.snapshot(), {"callback": "failure", "error": wf.STOPPED_ERROR},
                            why)

    # -- finalize and cleanup
    def _plan_finalize(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        stopped = self._own_promotion(intent, ctx, allowed=IN_FLIGHT | {FINALIZED})
        if stopped:
            return stopped
        p = ctx.promotion
        assert p is not None
        current = ctx.traffic.read()
        hand_changed = ""
        if current != all_on(p.to_colour):
            if p.status in IN_FLIGHT and p.weights and current != dict(p.weights):
                # Changed by hand between the last check and the finalize: hold on it, like a shift or a check
                # (a rollback's weights written first are followed by its record, which ends the hold).
                reason = (f"weights are {format_weights(current)}, Reflex wrote {format_weights(p.weights)}: "
                          "changed outside Reflex; paused before finalizing (resume to re-check, or abort/rollback)")
                return self._action(intent, "finalize_held", ctx.snapshot(weights=current),
                                    {"paused": True, "workflow": {"verdict": wf.HOLD_VERDICT, "reason": reason}},
                                    f"finalize held: {reason}")
            if p.status != FINALIZED or current == all_on(p.from_colour):
                # Not finalized and never 100 % on the new colour; or, once finalized, all back on the old colour
                # (a rollback's weights written before its record): not announced as done.
                return self._skip(intent, ctx, "weights-mismatch", f"weights are {format_weights(current)}, not "
                                                                   f"100 % {p.to_colour}", weights=current)
            # Finalized (its record landed), then changed by hand: the release stays finalized (a finalized
            # promotion's weights are the operator's; only a rollback takes it back), announced, and paged.
            hand_changed = (f"; weights are {format_weights(current)}, changed outside Reflex after the finalize: "
                            f"left as they are ({p.to_colour} is live; `rollback` within the retention to go back)")
        until = p.retention_until or ctx.now.timestamp() + ctx.pair.retention_s
        return self._action(intent, wf.FINALIZE, ctx.snapshot(weights=current),
                            {"live": p.to_colour, "status": FINALIZED,
                             "retention_until": iso(datetime.fromtimestamp(until, tz=UTC)),
                             "workflow": {"verdict": wf.CONTINUE, "reason": "", "retention_s": max(0, int(
                                 until - ctx.now.timestamp()))}},
                            f"{p.to_colour} is live; {p.from_colour} kept at weight 0 for {ctx.pair.retention_s}s"
                            + hand_changed, page=bool(hand_changed), retention_until=until,
                            hand_changed=bool(hand_changed))

    def _plan_cleanup(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        # COMPLETED too: a cleanup that died after recording it still has the freeze to release.
        stopped = self._own_promotion(intent, ctx, allowed=frozenset({FINALIZED, "completed"}))
        if stopped:
            return stopped
        p = ctx.promotion
        assert p is not None
        return self._action(intent, wf.CLEANUP, ctx.snapshot(),
                            {"status": "completed",
                             "release_freeze": ctx.pair.freeze_scale_in.policies(_colour(p.from_colour))},
                            f"retention of {p.from_colour} over: promotion {p.id} completed")

    # -- rollback and abort (alarm, console, workflow, reconcile)
    def _plan_rollback(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        p = ctx.promotion
        abort = intent.operation == "abort"
        own = intent.params.get("state", {}).get("promotion_id")
        if p is None:
            return self._skip(intent, ctx, "no-promotion", "no promotion of this pair yet")
        if own is not None and p.id != own:
            return self._skip(intent, ctx, "stopped", f"promotion {own} is no longer the pair's current one")
        changed_at = intent.params.get("changed_at")
        if intent.params.get("cause") == "alarm" and changed_at is not None and changed_at < p.started_at:
            # A late ALARM still rolls back (acts_on_stale_alarm), but only one from this promotion's canary.
            return self._skip(intent, ctx, "alarm-predates-promotion",
                              f"{intent.params.get('alarm')} entered ALARM at "
                              f"{iso(datetime.fromtimestamp(changed_at, tz=UTC))}, before promotion {p.id} started "
                              f"({iso(datetime.fromtimestamp(p.started_at, tz=UTC))})")
        target = all_on(ctx.record.live if p.status == CLOSED else p.from_colour)
        # Whether a rollback is allowed at all is decided before the traffic is read: an unreadable switch must
        # never turn a refused rollback (finalized and aborted, retention over) into `rollback-failed`, which the
        # reconcile would later carry out onto a colour that is no longer a rollback target.
        if p.status == FINALIZED:
            if abort:
                return self._skip(intent, ctx, "finalized", f"promotion {p.id} is finalized; `rollback` within the "
                                                            "retention window instead", weights=_readable(ctx))
            if p.retention_until is not None and ctx.now.timestamp() >= p.retention_until:
                # A guard alarm with nothing safe to roll back to (the retention is over, or ended when a new
                # release landed on the retained colour): a human decides, so it pages.
                return self._skip(intent, ctx, "retention-ended", f"{p.from_colour} was kept until "
                                  f"{iso(datetime.fromtimestamp(p.retention_until, tz=UTC))} ({p.reason}); no "
                                  "rollback target: start a new promotion" + self._undo_fast_write(intent, ctx, p),
                                  page=intent.params.get("cause") == "alarm")
        elif p.status not in ENFORCED and p.status not in IN_FLIGHT and p.status != ROLLBACK_FAILED:
            return self._skip(intent, ctx, "no-promotion", f"the last promotion ({p.id}) is {p.status}")
        try:
            current = ctx.traffic.read()
        except TrafficSwitchError as err:
            return self._unplannable_rollback(intent, ctx, target, str(err))
        if p.status in ENFORCED:
            # Ended on one colour: enforced whenever the weights say otherwise (a step's late write, a hand change).
            if current == target and not self._rollback_unfinished(rt, ctx.pair, p, stop=own is None):
                return self._skip(intent, ctx, "already-rolled-back", f"promotion {p.id} is {p.status}: "
                                                                      f"{p.reason}", weights=current)
            if ctx.record.blocked and intent.quiet and any(
                    target[c] > current.get(c, 0) and ctx.traffic.healthy(c) == 0 for c in COLOURS):
                # The reconcile found it could not enforce this before, and paged: quiet until the colour can take
                # traffic again (then it is enforced) or an operator settles it with `close`.
                return self._skip(intent, ctx, "enforce-blocked", f"promotion {p.id} is {p.status} onto "
                                  f"{ctx.record.live}, which still has no healthy target; weights "
                                  f"{format_weights(current)} left as they are ({ctx.record.blocked}); `close` "
                                  "settles it on the colour serving", weights=current)
            if p.status == CLOSED:
                return self._action(intent, "rollback", ctx.snapshot(weights=current),
                                    {"weights": target, "live": ctx.record.live, "status": CLOSED,
                                     "stop_execution": own is None},
                                    f"{p.id} was closed on {ctx.record.live} by an operator: "
                                    f"{format_weights(current)} -> {format_weights(target)}", why=p.reason,
                                    written_first=False)
        status = ABORTED if abort else ROLLED_BACK
        reason = self._rollback_reason(intent)
        first = (self.fast_rollback.take(ctx.pair.name, p.id, intent.params.get("alarm"))
                 if intent.params.get("cause") == "alarm" else None)
        if first is not None and current == first.after:
            # The handler wrote the weights before the pipeline ran: the audit shows what they replaced.
            current = first.before
            reason += " (weights written first, before the records)"
        elif (first is None and p.status in IN_FLIGHT and current == target and p.weights
              and dict(p.weights) != target):
            # Already on the known-good colour while the record still has the promotion's last step: an attempt
            # wrote them and died before recording it (the fast path's note of what it replaced died with its
            # process). The record's last step is what they replaced; the audit must not show a no-op.
            current = dict(p.weights)
            reason += (f" (weights found already on {p.from_colour}, written by an attempt that died before "
                       "recording it; before = the promotion's last recorded step)")
        return self._action(intent, "abort" if abort else "rollback",
                            ctx.snapshot(weights=current),
                            {"weights": target, "live": p.from_colour, "status": status,
                             "stop_execution": own is None},
                            f"{status}: {format_weights(current)} -> {format_weights(target)}: {reason}",
                            why=reason, written_first=first is not None)

    def _undo_fast_write(self, intent: Intent, ctx: _Context, p: Promotion) -> str:
        """The handler's fast path wrote the rollback from a record read before the retention ended (a GreenReady
        landed in between): the pipeline refuses that rollback, so the write is put back as it found it."""
        if intent.params.get("cause") != "alarm":
            return ""
        first = self.fast_rollback.take(ctx.pair.name, p.id, intent.params.get("alarm"))
        if first is None:
            return ""
        try:
            ctx.traffic.apply(dict(first.before), current=dict(first.after))
        except (TrafficSwitchError, ValueError) as err:
            return (f"; the fast path had already written {format_weights(first.after)}, and putting back "
                    f"{format_weights(first.before)} failed: {err}")
        return (f"; the fast path had already written {format_weights(first.after)} from the record it read "
                f"before: put back {format_weights(first.before)}")

    def _unplannable_rollback(self, intent: Intent, ctx: _Context, target: dict[str, int], error: str
                              ) -> Action | Skip:
        """A rollback decided on a pair whose traffic switch cannot be read (a weighted record deleted, a third
        target group in the forward action): still a decision, audited and paged. Its execution stops the workflow,
        records the promotion `rollback-failed` (no step may move the traffic any more) and fails with the error;
        the operator finishes by hand and `close`s it (docs/runbooks/promotion.md)."""
        p = ctx.promotion
        assert p is not None
        if p.status == ROLLBACK_FAILED and intent.quiet:
            # The reconcile, every few minutes: once is enough (the failure paged); it retries when it can read.
            return self._skip(intent, ctx, "rollback-failed", f"promotion {p.id}: {p.reason}; still unreadable: "
                                                              f"{error}")
        if p.status in ENDED:
            return self._skip(intent, ctx, "traffic-unreadable", f"promotion {p.id} is {p.status}, and the traffic "
                              f"switch cannot be read to check it: {error}", page=not intent.quiet)
        reason = self._rollback_reason(intent)
        return self._action(intent, "abort" if intent.operation == "abort" else "rollback",
                            ctx.snapshot(weights=None, traffic_error=error),
                            {"weights": target, "live": p.from_colour, "status": ROLLED_BACK,
                             "stop_execution": intent.params.get("state", {}).get("promotion_id") is None},
                            f"rollback of {p.id} cannot be carried out: {error}: {reason}", why=reason,
                            unplannable=error, written_first=False)

    def _rollback_unfinished(self, rt: ReactionRuntime, pair: PromotionPair, p: Promotion, stop: bool) -> bool:
        """A rollback that died after recording itself may have left the freeze or the workflow behind."""
        if any(pair.name in rt.store.scale_in_freezes(policy)
               for policy in pair.freeze_scale_in.policies(_colour(p.from_colour))):
            return True
        return stop and bool(p.execution_arn) and self._workflow(rt).status(p.execution_arn) == "RUNNING"

    @staticmethod
    def _rollback_reason(intent: Intent) -> str:
        state = intent.params.get("state")
        if state is None:
            return intent.reason
        error = state.get("error")
        reason = str(state.get("reason") or "")
        if isinstance(error, dict) and error.get("Error"):
            failure = f"workflow error {error.get('Error')}: {str(error.get('Cause', ''))[:300]}"
            return f"{reason} ({failure})" if reason else failure
        return reason or "workflow rollback"

    # -- console: promote, pause, resume
    def _in_flight(self, intent: Intent, ctx: _Context) -> Skip | None:
        p = ctx.promotion
        if p is None or p.status not in IN_FLIGHT:
            last = f"the last one ({p.id}) is {p.status}" if p else "there has been none"
            return self._skip(intent, ctx, "no-promotion", f"no promotion of {ctx.pair.name} in flight; {last}")
        return None

    def _plan_promote(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        idle = self._in_flight(intent, ctx)
        if idle:
            return idle
        p = ctx.promotion
        assert p is not None
        who = str(intent.params.get("operator"))
        if ctx.pair.approval is None:
            return self._skip(intent, ctx, "no-approval-gate", f"pair {ctx.pair.name} has no approval gate")
        if p.status == AWAITING_APPROVAL and p.approval_token:
            return self._action(intent, "approve", ctx.snapshot(approved_by=p.approved_by),
                                {"status": SHIFTING, "approved_by": who}, intent.reason)
        if p.step >= len(ctx.pair.steps()) - 1:
            return self._skip(intent, ctx, "gate-passed", "the last step already ran")
        if p.approved_by:
            return self._skip(intent, ctx, "already-approved", f"approved in advance by {p.approved_by}")
        return self._action(intent, "approve_in_advance", ctx.snapshot(), {"approved_by": who},
                            f"{intent.reason} (the gate will open when the promotion reaches it)")

    def _plan_pause(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        idle = self._in_flight(intent, ctx)
        if idle:
            return idle
        p = ctx.promotion
        assert p is not None
        if p.paused:
            return self._skip(intent, ctx, "already-paused", f"paused already: {p.reason}")
        return self._action(intent, "pause", ctx.snapshot(weights=p.weights), {"paused": True}, intent.reason)

    def _plan_resume(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        idle = self._in_flight(intent, ctx)
        if idle:
            return idle
        p = ctx.promotion
        assert p is not None
        if not p.paused:
            return self._skip(intent, ctx, "not-paused", f"promotion {p.id} is not paused")
        return self._action(intent, "resume", ctx.snapshot(weights=p.weights), {"paused": False}, intent.reason)

    def _plan_close(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        """An operator ends the promotion on the colour they chose (after finishing a failed rollback by hand, or
        to settle a promotion Reflex cannot): the traffic goes there (refused onto a colour with no healthy target),
        the workflow stops, the record says `closed` with that live colour, and the reconcile keeps it so."""
        p = ctx.promotion
        live = _colour(intent.params.get("live"))
        if p is None:
            return self._skip(intent, ctx, "no-promotion", "no promotion of this pair yet")
        if p.status in ("completed", "superseded"):
            return self._skip(intent, ctx, "no-promotion", f"the last promotion ({p.id}) is {p.status}: nothing to "
                                                           "close")
        if p.status in IN_FLIGHT and live != p.from_colour:
            # Mid-promotion, `close` onto the new colour would skip the gate and the bake and disarm the guard
            # alarms: that is `promote`'s job (or `abort` to go back).
            return self._skip(intent, ctx, "in-flight", f"promotion {p.id} is {p.status}: closing it on {live} would "
                                                        f"skip its gate and checks; `promote` it, or close it on "
                                                        f"{p.from_colour} (`abort` does the same)")
        try:
            current = ctx.traffic.read()
        except TrafficSwitchError as err:
            if p.status != ROLLBACK_FAILED:
                raise
            # The switch is still broken: the decision is recorded now, the reconcile moves the traffic as soon as
            # it can read the switch (so the operator may close first and repair after, without a race).
            return self._action(intent, "close", ctx.snapshot(weights=None, traffic_error=str(err)),
                                {"weights": all_on(live), "live": live, "status": CLOSED, "stop_execution": True,
                                 "record_only": True},
                                f"close {p.id} ({p.status}) on {live}: the traffic switch cannot be read ({err}); "
                                f"recorded, the reconcile puts 100 % on {live} once it can: {intent.reason}")
        if p.status == CLOSED and ctx.record.live == live and current == all_on(live):
            return self._skip(intent, ctx, "already-closed", f"promotion {p.id} is closed on {live}", weights=current)
        return self._action(intent, "close", ctx.snapshot(weights=current),
                            {"weights": all_on(live), "live": live, "status": CLOSED, "stop_execution": True},
                            f"close {p.id} ({p.status}) on {live}: {format_weights(current)} -> "
                            f"{format_weights(all_on(live))}: {intent.reason}")

    # -- reconcile (schedule)
    def _plan_reconcile(self, intent: Intent, ctx: _Context, rt: ReactionRuntime) -> Action | Skip:
        p = ctx.promotion
        if p is not None and p.status == ROLLBACK_FAILED:
            # A human decides now (the failure paged): the reconcile does not retry it behind the operator's back
            # (they may be repairing the switch to keep the new colour). `abort` completes the rollback onto the
            # old colour; `close` settles it on the colour they choose, even while the switch is unreadable.
            return self._skip(intent, ctx, "rollback-failed", f"promotion {p.id}: {p.reason}; waiting for an "
                              f"operator: `abort` completes the rollback onto {p.from_colour}, `close` settles it on "
                              "the colour they choose")
        if p is not None and p.status in ENFORCED:
            # Level-triggered: the record says where the traffic is; any other weights are put back.
            why = f"reconcile: promotion {p.id} is {p.status}; the weights follow the record"
            return self._plan_rollback(intent.model_copy(update={"operation": "rollback", "reason": why}), ctx, rt)
        if p is None or p.status in ENDED:
            return self._skip(intent, ctx, "idle", "no promotion in flight or retained")
        now = ctx.now.timestamp()
        retained = p.status == FINALIZED and (p.retention_until is None or now < p.retention_until)
        workflow = self._workflow(rt)
        if p.status in IN_FLIGHT or retained:
            guards = read_guard_alarms(rt.clients, ctx.pair.guard_alarms)
            breaching = [n for n, s in guards.states.items() if s == "ALARM"]
            if breaching:
                why = f"reconcile: guard alarm {', '.join(breaching)} in ALARM"
                return self._plan_rollback(intent.model_copy(update={"operation": "rollback", "reason": why}), ctx, rt)
        status = workflow.status(p.execution_arn) if p.execution_arn else "MISSING"
        if p.status in IN_FLIGHT and status != "RUNNING":
            why = f"reconcile: workflow {status} while the promotion was {p.status}"
            return self._plan_rollback(intent.model_copy(update={"operation": "rollback", "reason": why}), ctx, rt)
        if p.status == FINALIZED and not retained and status != "RUNNING":
            kill = rt.kill_switch.state()
            if kill.blocks(safety=False):
                # Reconcile passes the kill switch as a safety action for its rollbacks only (guard_settings).
                return self._skip(intent, ctx, "kill-switch", f"{kill.reason}: only a rollback runs; the cleanup "
                                                              f"of {p.id} waits")
            return self._action(intent, wf.CLEANUP, ctx.snapshot(), {"status": "completed"},
                                f"reconcile: retention of {p.from_colour} over and the workflow ended ({status})")
        return self._skip(intent, ctx, "in-progress", f"promotion {p.id} is {p.status}; workflow {status}")

    # ------------------------------------------------------------------ execute
    def _workflow(self, rt: ReactionRuntime) -> PromotionWorkflow:
        return PromotionWorkflow(rt.clients, rt.settings.workflow_arn)

    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        """Carry out `action`. A step or command whose record write was fenced by a newer decision (a rollback,
        an abort, a close, a new promotion: the epoch moved) is audited `skipped:fenced`, not `executed`."""
        self._fences.seen = []
        self._dispatch(action, rt)
        if not self._fences.seen or action.operation in _NOT_FENCED:
            return
        record = self._read_record(rt, action.policy)
        p = record.promotion
        decided = action.before.get("epoch")
        if p is None or p.id != action.before.get("promotion") or (decided is not None and record.epoch != decided):
            raise Superseded("fenced", f"{action.operation} of {action.before.get('promotion')} not carried out: "
                             f"the promotion became {p.status if p else 'gone'} while it ran "
                             f"({p.reason if p else ''}){''.join(self._fences.seen)}")

    def _dispatch(self, action: Action, rt: ReactionRuntime) -> None:
        pair = self._pair(action.policy, rt)
        traffic = PairTraffic(rt.clients, pair)
        op = action.operation
        now = rt.clock.now().timestamp()
        # Every record write of a step or command is conditional on the state it was decided from (the epoch and
        # status of `action.before`): a rollback landing in between fences it (docs/architecture.md).
        if op == "start":
            self._workflow(rt).start(str(action.params["name"]), dict(action.params["workflow_input"]))
            if action.params.get("ends_retention"):
                self._end_retention(action, pair, rt, now)
        elif op == wf.PREFLIGHT:
            self._execute_preflight(action, pair, rt, now)
        elif op == wf.SHIFT:
            self._execute_shift(action, traffic, rt, now)
        elif op in ("shift_held", "finalize_held"):
            reason = action.intended["workflow"]["reason"]
            self._decided(rt, action, lambda p: dataclasses.replace(p, updated_at=now, reason=reason, paused=True))
        elif op == wf.CHECK:
            verdict = action.intended["verdict"]
            reason = action.intended["workflow"]["reason"]
            self._decided(rt, action, lambda p: dataclasses.replace(
                p, updated_at=now, reason=reason or f"check: {verdict}", paused=p.paused or verdict == wf.HOLD_VERDICT))
        elif op == "await_approval":
            token = self._token(action)
            if not self._decided(rt, action, lambda p: dataclasses.replace(
                    p, status=AWAITING_APPROVAL, approval_token=token, updated_at=now)):
                self._workflow(rt).fail(token, wf.STOPPED_ERROR, "rolled back while the gate was being set")
        elif op == "approve_gate":
            if self._decided(rt, action, lambda p: dataclasses.replace(p, status=SHIFTING, approval_token=None,
                                                                       updated_at=now)):
                self._callback(rt, self._token(action), {"approved_by": action.intended["approved_by"],
                                                         "in_advance": True})
            else:
                self._workflow(rt).fail(self._token(action), wf.STOPPED_ERROR, "rolled back at the gate")
        elif op == wf.HOLD:
            token = self._token(action)
            if not self._decided(rt, action, lambda p: dataclasses.replace(p, status=HELD, resume_token=token,
                                                                           updated_at=now)):
                self._workflow(rt).fail(token, wf.STOPPED_ERROR, "rolled back while the hold was being set")
        elif op == "resume_wait":
            if self._decided(rt, action, lambda p: dataclasses.replace(p, status=SHIFTING, resume_token=None,
                                                                       updated_at=now)):
                self._callback(rt, self._token(action), {"resumed": True})
            else:
                self._workflow(rt).fail(self._token(action), wf.STOPPED_ERROR, "rolled back while resuming")
        elif op == "end_wait":
            self._workflow(rt).fail(self._token(action), wf.STOPPED_ERROR, action.reason)
        elif op == wf.FINALIZE:
            self._execute_finalize(action, pair, rt, now)
        elif op == wf.CLEANUP:
            if self._decided(rt, action, lambda p: dataclasses.replace(p, status="completed", updated_at=now),
                             allowed=frozenset({FINALIZED, "completed"})):
                record = self._read_record(rt, pair.name)
                if record.promotion is not None:
                    self._release_freeze(rt, pair, record.promotion)
        elif op in ("rollback", "abort"):
            self._execute_rollback(action, pair, traffic, rt, now)
        elif op == "close":
            self._execute_close(action, pair, traffic, rt, now)
        elif op == "approve":
            self._execute_approve(action, pair, rt, now)
        elif op == "approve_in_advance":
            who = str(action.intended["approved_by"])
            self._decided(rt, action, lambda p: dataclasses.replace(p, approved_by=who, updated_at=now),
                          allowed=IN_FLIGHT)
        elif op == "pause":
            self._decided(rt, action, lambda p: dataclasses.replace(p, paused=True, reason=action.reason,
                                                                    updated_at=now), allowed=IN_FLIGHT)
        elif op == "resume":
            self._execute_resume(action, pair, rt, now)
        else:
            raise ValueError(f"unknown operation {op}")

    def _end_retention(self, action: Action, pair: PromotionPair, rt: ReactionRuntime, now: float) -> None:
        """A GreenReady for the retained colour: it no longer runs the release that was live before it, so it is
        no longer a rollback target (decided from the finalized record; a rollback landing first wins)."""
        release = action.params.get("workflow_input", {}).get("release")

        def end(p: Promotion) -> Promotion:
            releases = dict(p.releases)
            if release:
                releases[p.from_colour] = str(release)
            return dataclasses.replace(p, retention_until=min(now, p.retention_until or now), releases=releases,
                                       updated_at=now, reason=f"{p.to_colour} live; {p.from_colour} received "
                                       f"{release or 'a new release'} (GreenReady): no longer a rollback target")

        # A new epoch: a rollback decided on the retained record is fenced (it no longer has a target).
        self._decided(rt, action, end, allowed=frozenset({FINALIZED}),
                      record_change=lambda r, _q: dataclasses.replace(r, epoch=r.epoch + 1))

    def _execute_preflight(self, action: Action, pair: PromotionPair, rt: ReactionRuntime, now: float) -> None:
        state = WorkflowState.model_validate(action.params["state"])
        to: Colour = state.to_colour
        from_ = other(to)
        execution = str(action.params["execution"])
        superseded: list[Promotion] = []

        def claim(record: PromotionRecord) -> PromotionRecord | None:
            p = record.promotion
            if p is not None and p.id == state.promotion_id:
                return None  # already claimed (a resumed preflight)
            if p is not None and p.status in IN_FLIGHT:
                raise PromotionConflict(f"{pair.name}: promotion {p.id} claimed the pair first")
            if p is not None and p.status == FINALIZED:
                superseded.append(p)
            releases = dict(p.releases) if p is not None else {}
            if p is not None and p.release and p.status in (FINALIZED, "completed") and p.to_colour not in releases:
                releases[p.to_colour] = p.release  # a record written before `releases` existed
            if state.release:
                releases[to] = state.release
            return dataclasses.replace(record, epoch=record.epoch + 1, promotion=Promotion(
                id=state.promotion_id, from_colour=from_, to_colour=to, status=SHIFTING, started_at=now,
                updated_at=now, execution_arn=execution, weights=all_on(from_), release=state.release,
                preflight_healthy=action.params.get("healthy"), reason="preflight passed", releases=releases))

        self._update_record(rt, pair.name, claim)
        for old in superseded:
            self._workflow(rt).stop(old.execution_arn, "Reflex.Superseded", f"promotion {state.promotion_id} "
                                                                            "started during the retention window")
            self._release_freeze(rt, pair, old)
        until = now + expected_duration_s(pair) + FREEZE_MARGIN_S
        for policy in pair.freeze_scale_in.policies(from_):
            rt.store.place_scale_in_freeze(policy, pair.name, until)

    def _execute_shift(self, action: Action, traffic: PairTraffic, rt: ReactionRuntime, now: float) -> None:
        target = dict(action.intended["weights"])
        step = int(action.intended["step"])
        traffic.apply(target, current=dict(action.before["weights"]))

        def record_step(p: Promotion) -> Promotion:
            return dataclasses.replace(p, step=step, weights=target, status=SHIFTING, updated_at=now)

        if not self._decided(rt, action, record_step, allowed=IN_FLIGHT):
            # A rollback (or a close) was decided while this shift was writing: the record owns the traffic now.
            # Its weights go back, re-read after this write (ALB and Route 53 have no conditional writes).
            logger.warning("shift raced a rollback; restoring the record's weights",
                           extra={"pair": action.policy, "promotion": action.before.get("promotion")})
            if self._enforce(rt, traffic, action.policy):
                self._fences.seen.append(f"; its write of {format_weights(target)} was put back to the record's "
                                         "weights")

    def _enforce(self, rt: ReactionRuntime, traffic: PairTraffic, pair: str) -> bool:
        """Level-triggered: when the record says the promotion ended on one colour (rolled back, aborted, closed),
        write that colour's weights if the traffic disagrees. Returns whether a write happened."""
        record = self._read_record(rt, pair)
        p = record.promotion
        if p is None or p.status not in ENFORCED:
            return False
        return traffic.apply(all_on(record.live))

    def _execute_finalize(self, action: Action, pair: PromotionPair, rt: ReactionRuntime, now: float) -> None:
        until = float(action.params["retention_until"])

        def finalize(q: Promotion) -> Promotion:
            return dataclasses.replace(q, status=FINALIZED, retention_until=until, updated_at=now, approval_token=None,
                                       resume_token=None, reason=f"{q.to_colour} live; {q.from_colour} retained")

        # The record first, conditional on the state the finalize was decided from: a rollback decided before
        # fences it, and then no DeploymentCompleted goes out for the rolled-back release. The event follows
        # (a retry after a crash in between finds the record finalized and emits it: at least once; consumers
        # de-duplicate on promotion_id).
        if not self._decided(rt, action, finalize, allowed=IN_FLIGHT | {FINALIZED},
                             record_change=lambda r, q: dataclasses.replace(r, live=q.to_colour)):
            logger.warning("finalize fenced by a rollback", extra={"pair": pair.name})
            return
        record = self._read_record(rt, pair.name)
        p = record.promotion
        if p is None or p.status != FINALIZED or p.id != action.before.get("promotion"):
            return  # rolled back within the retention window already: the event is not sent
        current = PairTraffic(rt.clients, pair).read()
        if current != all_on(p.to_colour) and not action.params.get("hand_changed"):
            # A rollback's weights (written first, before its record) or a hand change: not announced yet. The
            # workflow retries the finalize, which then finds the promotion rolled back (stopped), all on the old
            # colour (rolled back), or a hand change (announced, paged: see _plan_finalize).
            raise WeightsMoved(f"weights are {format_weights(current)} right after finalizing {p.id}: "
                               "DeploymentCompleted not sent")
        detail = {"stage": rt.config.stage, "pair": pair.name, "promotion_id": p.id, "live": p.to_colour,
                  "previous": p.from_colour, "release": p.release,
                  "retention_until": iso(datetime.fromtimestamp(until, tz=UTC)), "target": pair.target.key}
        completed = pair.completed
        resp = rt.clients.events.put_events(Entries=[{
            "Source": completed.source, "DetailType": completed.detail_type,
            "Detail": json.dumps(detail), "EventBusName": rt.settings.event_bus_name}])
        if resp.get("FailedEntryCount"):
            raise RuntimeError(f"DeploymentCompleted not accepted by EventBridge: {resp.get('Entries')}")
        for policy in pair.freeze_scale_in.policies(_colour(p.from_colour)):
            rt.store.place_scale_in_freeze(policy, pair.name, until + FREEZE_MARGIN_S)

    def _execute_rollback(self, action: Action, pair: PromotionPair, traffic: PairTraffic, rt: ReactionRuntime,
                          now: float) -> None:
        status = str(action.intended["status"])
        why = str(action.params.get("why", action.reason))
        unplannable = action.params.get("unplannable")
        target = dict(action.intended["weights"])
        if action.operation in ("rollback", "abort") and not action.params.get("written_first"):
            # A rollback decided while the old colour was retained must not land after a GreenReady ended the
            # retention (the old colour then runs a release nobody approved): re-read, refuse, the retry re-plans.
            record = self._read_record(rt, pair.name)
            p = record.promotion
            if p is None or p.id != action.before.get("promotion") or (
                    p.status == FINALIZED and p.retention_until is not None and now >= p.retention_until):
                raise PromotionMoved(f"rollback of {action.before.get('promotion')} no longer applies: the "
                                     f"promotion is {p.status if p else 'gone'} ({p.reason if p else ''}); re-planned")
        if not unplannable:
            # Traffic first: everything else can wait a few milliseconds. Written first by the handler: re-read
            # (the write is then a no-op unless someone moved the weights since).
            before = None if action.params.get("written_first") else dict(action.before.get("weights") or {}) or None
            try:
                traffic.apply(target, current=before)
            except UnsafeWeights as err:
                if action.before.get("status") in ENFORCED:
                    self._note_blocked(rt, pair.name, action, str(err))
                raise
        ended: list[Promotion] = []
        moved: list[str] = []
        beaten: list[Promotion] = []
        # What makes this decision itself, stable across its retries (the intent record's copy of the action may
        # come back from DynamoDB with other key orders and number types): what, on which promotion and epoch, why.
        me = hashlib.sha256("|".join(str(v) for v in (
            action.operation, action.before.get("promotion"), action.before.get("epoch"), action.reason)
        ).encode()).hexdigest()[:24]

        def rolled_back(record: PromotionRecord) -> PromotionRecord | None:
            ended.clear()
            moved.clear()
            beaten.clear()
            p = record.promotion
            if p is None:
                return None
            decided_epoch = action.before.get("epoch")
            if p.id != action.before.get("promotion") or (
                    p.status == FINALIZED and decided_epoch is not None and record.epoch != decided_epoch):
                # Decided on a record that has moved on (a new promotion; the retention ended when a new release
                # landed on the retained colour): no longer a rollback target. The traffic goes back to the record.
                moved.append(f"promotion {p.id} is {p.status}: {p.reason}")
                return None
            ended.append(p)
            if unplannable:
                if p.status in ENDED or p.status == ROLLBACK_FAILED:
                    return None
                return dataclasses.replace(record, epoch=record.epoch + 1, promotion=dataclasses.replace(
                    p, status=ROLLBACK_FAILED, reason=f"{why}; rollback failed: {unplannable}", updated_at=now,
                    paused=False, approval_token=None, resume_token=None))
            if p.status in ENFORCED:
                if action.before.get("status") not in ENFORCED and record.decided_by != me:
                    # Decided while the promotion was still running, and another decision (a second guard alarm,
                    # a console abort at the same moment) ended it first: that one is the rollback. (An earlier
                    # attempt of this very decision left its fingerprint: then this is its retry.)
                    beaten.append(p)
                # Enforced again: a later block pages again.
                return dataclasses.replace(record, blocked="") if record.blocked else None
            return dataclasses.replace(
                record, live=p.from_colour, epoch=record.epoch + 1, decided_by=me, promotion=dataclasses.replace(
                    p, status=status, reason=why, updated_at=now, paused=False, approval_token=None,
                    resume_token=None))

        record_now = self._update_record(rt, pair.name, rolled_back)
        if moved:
            if not unplannable and record_now.promotion is not None and record_now.promotion.status == FINALIZED:
                traffic.apply(all_on(record_now.live))
            raise PromotionMoved(f"rollback of {action.before.get('promotion')} fenced after its traffic write: "
                                 f"{moved[0]}; the record's weights were put back")
        if not unplannable:
            # Re-read after the record: a step that wrote after this rollback's write but recorded before it was
            # fenced (epoch) cannot see it; this re-read does, and writes the record's weights back.
            self._enforce(rt, traffic, pair.name)
        for p in ended:
            if action.intended.get("stop_execution") or unplannable:
                self._workflow(rt).stop(p.execution_arn, "Reflex.RolledBack" if status == ROLLED_BACK
                                        else "Reflex.Aborted", why)
            if not unplannable:
                self._release_freeze(rt, pair, p)
        if beaten and not unplannable:
            p = beaten[0]
            raise Superseded(f"already-{p.status}", f"promotion {p.id} was already {p.status} by another "
                             f"decision ({p.reason}); this one repeated the write of {format_weights(target)}")
        if unplannable:
            raise TrafficSwitchError(f"rollback decided but not carried out: {unplannable}; the promotion is "
                                     f"{ROLLBACK_FAILED}: finish by hand, then `close` it (docs/runbooks/promotion.md)")

    def _note_blocked(self, rt: ReactionRuntime, pair: str, action: Action, error: str) -> None:
        """Remember (once) that the record's colour could not be enforced: this failure pages, the next
        reconciles stay quiet until it can be (see _plan_rollback). Best effort: without it, the next one pages."""
        def note(record: PromotionRecord) -> PromotionRecord | None:
            p = record.promotion
            if p is None or p.id != action.before.get("promotion") or record.epoch != action.before.get("epoch"):
                return None
            return None if record.blocked else dataclasses.replace(record, blocked=error[:300])

        try:
            self._update_record(rt, pair, note)
        except Exception:  # noqa: BLE001 - the failure itself is audited and paged either way
            logger.exception("could not note the blocked enforcement", extra={"pair": pair})

    def _execute_close(self, action: Action, pair: PromotionPair, traffic: PairTraffic, rt: ReactionRuntime,
                       now: float) -> None:
        live = str(action.intended["live"])
        # Decided on a record that may have moved since (a guard alarm's rollback takes over the pair's lock): the
        # operator's decision stands only on the state it was made from, checked before the traffic moves and
        # again by the conditional record write.
        self._still_decided(rt, action, pair.name)
        record_only = bool(action.intended.get("record_only"))
        if not record_only:
            traffic.apply(all_on(live))
        closed: list[Promotion] = []

        def close(p: Promotion) -> Promotion:
            closed.clear()
            closed.append(p)
            return dataclasses.replace(p, status=CLOSED, reason=f"closed on {live} by an operator: {action.reason}",
                                       updated_at=now, paused=False, approval_token=None, resume_token=None)

        def relive(record: PromotionRecord, _p: Promotion) -> PromotionRecord:
            return dataclasses.replace(record, live=live, epoch=record.epoch + 1)

        if not self._decided(rt, action, close, record_change=relive):
            if not record_only:
                self._enforce(rt, traffic, pair.name)  # the record moved on: its weights, not this close's
            raise PromotionMoved(f"close of {action.before.get('promotion')} fenced: the promotion changed while it "
                                 "ran (a rollback took over); read `status` and decide again")
        if record_only:
            for p in closed:
                self._workflow(rt).stop(p.execution_arn, "Reflex.Closed", action.reason)
                self._release_freeze(rt, pair, p)
            return
        self._enforce(rt, traffic, pair.name)
        for p in closed:
            self._workflow(rt).stop(p.execution_arn, "Reflex.Closed", action.reason)
            self._release_freeze(rt, pair, p)

    def _execute_approve(self, action: Action, pair: PromotionPair, rt: ReactionRuntime, now: float) -> None:
        record = self._read_record(rt, pair.name)
        p = record.promotion
        assert p is not None
        who = str(action.intended["approved_by"])
        if p.approval_token is None or p.status != AWAITING_APPROVAL or record.epoch != action.before.get("epoch"):
            raise GateGone(f"promotion {p.id} is {p.status}: the gate no longer waits ({p.reason})")
        try:
            self._workflow(rt).succeed(p.approval_token, {"approved_by": who, "reason": action.reason})
        except TokenGone as err:
            # The gate timed out (the workflow is rolling back) or the execution ended: the promote did not
            # approve anything, and says so (a failed decision, audited and answered to the console).
            raise GateGone(f"the approval gate of {p.id} no longer waits ({err}): it timed out or the "
                           "promotion ended; the promote approved nothing") from None
        self._decided(rt, action, lambda q: dataclasses.replace(
            q, status=SHIFTING, approval_token=None, approved_by=who, updated_at=now))

    def _execute_resume(self, action: Action, pair: PromotionPair, rt: ReactionRuntime, now: float) -> None:
        record = self._read_record(rt, pair.name)
        p = record.promotion
        assert p is not None
        if record.epoch != action.before.get("epoch", record.epoch) or p.status not in IN_FLIGHT:
            return  # rolled back (or closed) since the resume was decided: nothing to resume
        # The token first, then the record: a resume that dies in between is retried and finds the token
        # (used: fine) instead of a promotion that looks resumed while its workflow still holds.
        if p.resume_token:
            try:
                self._workflow(rt).succeed(p.resume_token, {"resumed_by": action.reason})
            except TokenGone:
                logger.warning("resume token no longer waits", extra={"pair": pair.name, "promotion": p.id})
        self._decided(rt, action, lambda q: dataclasses.replace(
            q, paused=False, status=SHIFTING if q.status == HELD else q.status, resume_token=None,
            reason=action.reason, updated_at=now), allowed=IN_FLIGHT)

    def _callback(self, rt: ReactionRuntime, token: str, output: dict[str, Any]) -> None:
        try:
            self._workflow(rt).succeed(token, output)
        except TokenGone:
            logger.warning("callback token no longer waits")

    def _release_freeze(self, rt: ReactionRuntime, pair: PromotionPair, p: Promotion) -> None:
        for policy in pair.freeze_scale_in.policies(_colour(p.from_colour)):
            rt.store.release_scale_in_freeze(policy, pair.name)

    def _still_decided(self, rt: ReactionRuntime, action: Action, pair: str) -> None:
        """Raise `PromotionMoved` when the record is no longer the one `action` was decided on (id, epoch, status)."""
        before = action.before or {}
        record = self._read_record(rt, pair)
        p = record.promotion
        if (p is None or p.id != before.get("promotion") or p.status != before.get("status")
                or (before.get("epoch") is not None and record.epoch != before.get("epoch"))):
            raise PromotionMoved(f"{action.operation} of {before.get('promotion')} fenced: the promotion is now "
                                 f"{p.status if p else 'gone'} ({p.reason if p else ''}); read `status` and decide "
                                 "again")

    def _decided(self, rt: ReactionRuntime, action: Action, change: Callable[[Promotion], Promotion], *,
                 allowed: frozenset[str] | None = None,
                 record_change: Callable[[PromotionRecord, Promotion], PromotionRecord] | None = None) -> bool:
        """Change the pair's promotion as `action` decided it: only the promotion it was planned on, at the epoch
        it read, in the status it read (or one of `allowed`). Re-read, changed, written conditionally on the
        record's version, retried on a race. False (nothing written) when the record moved on: fenced."""
        before = action.before or {}
        promotion_id, epoch = before.get("promotion"), before.get("epoch")
        statuses = allowed if allowed is not None else frozenset({str(before.get("status"))})
        fenced = {"yes": False}

        def mutate(record: PromotionRecord) -> PromotionRecord | None:
            p = record.promotion
            fenced["yes"] = (p is None or p.id != promotion_id or p.status not in statuses
                             or (epoch is not None and record.epoch != epoch))
            if fenced["yes"] or p is None:
                return None
            changed = dataclasses.replace(record, promotion=change(p))
            return record_change(changed, p) if record_change is not None else changed

        self._update_record(rt, action.policy, mutate)
        if fenced["yes"]:
            logger.warning("record write fenced: the promotion moved on since this was decided",
                           extra={"pair": action.policy, "operation": action.operation, "decided": before})
            seen = getattr(self._fences, "seen", None)
            if seen is not None and not seen:
                seen.append("")
        return not fenced["yes"]

    def _update_record(self, rt: ReactionRuntime, pair: str,
                       mutate: Callable[[PromotionRecord], PromotionRecord | None]) -> PromotionRecord:
        for _ in range(3):
            record = self._read_record(rt, pair)
            changed = mutate(record)
            if changed is None:
                return record
            at = rt.clock.now().timestamp()
            try:
                saved = rt.store.save_promotion_record(changed)
            except PromotionConflict:
                continue
            self.fast_rollback.records.observe(rt.store, saved, at)
            return saved
        raise PromotionConflict(pair)

    # ------------------------------------------------------------------ verify / bookkeeping
    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        pair = self._pair(action.policy, rt)
        record = self._read_record(rt, pair.name)
        p = record.promotion
        after: dict[str, Any] = {"live": record.live, "status": p.status if p else None}
        if action.operation in (wf.SHIFT, wf.FINALIZE, "rollback", "abort", wf.PREFLIGHT, "close"):
            try:
                after["weights"] = PairTraffic(rt.clients, pair).read()
            except TrafficSwitchError as err:
                after["weights"], after["traffic_error"] = None, str(err)
        if action.operation == "approve":
            after["approved_by"] = p.approved_by if p else None  # a gate gone: certainly not applied
        own = action.params.get("state", {}).get("promotion_id")
        if action.operation == wf.SHIFT and (p is None or p.id != own or p.status not in IN_FLIGHT):
            after["workflow"] = {"verdict": wf.STOPPED, "reason": "rolled back while shifting"}
        decided = action.before.get("epoch") if action.before else None
        if (action.operation not in _NOT_FENCED and decided is not None and record.epoch != decided
                and p is not None and (p.status in ENFORCED or p.status == ROLLBACK_FAILED)):
            # Fenced: the step's record write did not land (or landed before the rollback's): its true outcome.
            after["fenced"] = f"promotion {p.id} became {p.status} while {action.operation} ran: {p.reason}"
            after["workflow"] = {"verdict": wf.STOPPED, "reason": f"{p.status} while {action.operation} ran"}
        return after

    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        return None


class PromotionMoved(RuntimeError):
    """The promotion record changed since the action was decided (a rollback took over): nothing was done."""


def _readable(ctx: _Context) -> dict[str, int] | None:
    """The pair's weights for a refusal's audit detail, or None when the switch cannot be read."""
    try:
        return ctx.traffic.read()
    except TrafficSwitchError:
        return None


def _key(pair: PromotionPair) -> str:
    return f"promotion/{pair.name}"


def _colour(value: Any) -> Colour:
    if value not in ("blue", "green"):
        raise ValueError(f"not a colour: {value!r}")
    return "blue" if value == "blue" else "green"
