"""The one pipeline: parse, validate, (idempotently) apply alarm semantics, match, guard, plan,
record the intent, execute, verify, record the decision.

A reaction supplies only what is specific to it (see `Reaction`); every guardrail, the audit
and the failure handling live here, identical for every trigger, console included.

Failure semantics (docs/architecture.md, "Failure semantics"): every action is decided, written ahead as an
intent (`intent#<reaction>#<trigger>#<target>`, conditional), executed, and completed with its audit record,
whose id and time the intent fixes in advance. A retry (Lambda's, a redelivery, the console's) that finds an
open intent does not plan anew: it reads the target and completes what was applied, re-runs what certainly
was not, or records that someone else changed the target. A refusal that may pass (the target's lock is held,
the kill switch is unreadable, a read was throttled) is never stored as the trigger's answer: the trigger is
retried. Each intent is planned and executed in isolation: one policy's failure is audited and does not stop
the others.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from reflex_core.actions import Action, Decision, Intent, Skip
from reflex_core.audit import dumps
from reflex_core.clock import iso
from reflex_core.config_base import StageConfig
from reflex_core.guardrails import circuit_check, cooldown_block, record_in_window, trip
from reflex_core.observability import logger, metrics
from reflex_core.runtime import Runtime, current_runtime
from reflex_core.state_store import AlarmMemory, IntentRecord, StaleAlarmEvent
from reflex_core.triggers import Trigger, TriggerError, parse_trigger

# What a retry finds when it reads the target of an open intent (see `Reaction.reconcile`).
Reconciled = Literal["applied", "not-applied", "unknown"]
# How long an intent is remembered: longer than Lambda's retries (6 h) and the idempotency window, so a
# duplicate delivered late still acts once.
INTENT_TTL_S = 7 * 86400
# Margin added to the invocation's remaining time for the lock's lease: the work cannot outlive the invocation.
LEASE_MARGIN_S = 10
# A response stored for idempotency (and returned) is kept under this size; the audit keeps the details.
MAX_RESPONSE_BYTES = 64 * 1024
MAX_REJECTION_ERRORS = 50


@dataclass(frozen=True)
class GuardSettings:
    out_cooldown_s: int
    in_cooldown_s: int
    max_actions_per_hour: int
    circuit_open_for_s: int
    dry_run: bool
    # A safety action (a promotion's rollback) must not be refused because a step holds the target's lock or
    # because the rate limit was reached: it takes the lock over and is never limited (it is still counted).
    # The reaction must make the preempted holder's late write harmless (see promoter: the shift re-checks).
    preempt_lock: bool = False
    bypass_rate_limit: bool = False
    # A rollback to the last known-good state: it runs when the kill switch is `on` (only `hard-stop` stops it).
    safety: bool = False
    # Cleanup and bookkeeping of what Reflex itself created (a drill's own copy deleted, a leftover or a result
    # recorded): it only reduces risk, so no kill-switch level (not even `hard-stop`) holds it.
    cleanup: bool = False
    # More direction reversals than this within an hour is oscillation: the breaker opens for every direction.
    max_reversals_per_hour: int = 4
    # How long a decrease waits after the last increase, when not `in_cooldown_s` (e.g. the resharder: a removal
    # also waits for the addition's own cooldown, whatever the removal's).
    in_after_out_cooldown_s: int | None = None


class Reaction(Protocol):
    name: str
    @property
    def config_model(self) -> type[StageConfig]:
        """The reaction's view of the stage config: the common part and the sections it reads."""

    def validate(self, trigger: Trigger, rt: Runtime[Any]) -> Any:
        """Validate reaction-specific payloads (console commands, event details); raise TriggerError."""

    def alarm_policies(self, trigger: Trigger, rt: Runtime[Any]) -> list[str]:
        """Names of the policies an alarm trigger belongs to (for alarm memory)."""

    def intents(self, trigger: Trigger, request: Any, rt: Runtime[Any],
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        """Match the trigger to policies and say what each asks for."""

    def allowed_targets(self, rt: Runtime[Any]) -> set[str]: ...

    def guard_settings(self, intent: Intent, rt: Runtime[Any]) -> GuardSettings: ...

    def plan(self, intent: Intent, rt: Runtime[Any]) -> Action | Skip:
        """Read the target's current state (under the lock) and plan within bounds."""

    def execute(self, action: Action, rt: Runtime[Any]) -> None: ...

    def verify(self, action: Action, rt: Runtime[Any]) -> dict[str, Any]:
        """Re-read what was changed; the result is recorded as `after`."""

    def after_executed(self, action: Action, rt: Runtime[Any]) -> None:
        """Bookkeeping after a successful change (e.g. remember a pre-warm window). Must be idempotent: a retry
        that completes an interrupted attempt runs it again, with the action as it was first planned."""

    # Optional members (looked up with getattr, defaults in brackets):
    #   reconcile(action, rt) -> Reconciled      [compare `verify()` with `action.intended`, key by key]
    #   idempotent_execute: bool                 [False] running the same action twice is harmless, so a
    #                                            retry that cannot tell whether it was applied runs it again
    #   acts_on_stale_alarm: bool                [False] an ALARM delivered after a newer state still acts
    #                                            (a guard alarm: the canary was bad even if it recovered)
    #   fast_safety(trigger, rt) -> None         an idempotent safety write made before anything else (the
    #                                            promoter's rollback), then the pipeline runs as usual
    #   intent_scope(trigger, intent) -> str|None [the trigger's idempotency key] what makes two triggers the
    #                                            same work (one intent, one audit record for both)


class ActionFailed(RuntimeError):
    """Raised after auditing when an action failed, so Lambda retries and finally dead-letters the event."""


class RetryLater(RuntimeError):
    """Raised when a refusal may pass (lock held, kill switch unreadable, throttled): Lambda retries the event."""


class Superseded(RuntimeError):
    """Raised by a reaction's `execute` that finds, at its conditional write, that its decision was not carried
    out because another one came first: the very same change already made (two guard alarms rolling back one
    promotion at once), or the state it was decided on fenced by a newer decision (a step that raced a rollback).
    Audited `skipped:<reason>`, never `executed`, so the trail shows each decision's true outcome; whatever the
    attempt itself did (a repeated write, a write put back) goes in the message."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def _skip(skip: Skip, operation: str | None = None) -> Decision:
    return Decision(policy=skip.policy, target_key=skip.target_key, operation=operation,
                    outcome=f"skipped:{skip.reason}", detail=skip.detail, before=skip.before, quiet=skip.quiet,
                    transient=skip.transient, page=skip.page)


def _check_operator(trigger: Trigger, rt: Runtime[Any]) -> None:
    """A console command needs the operator the stage requires: a caller verified by the function URL and allowed
    by `operators:` (read-only callers: dry runs only), or, where the stage does not require verification, a
    claimed name (docs/security.md). Refused like any bad input: audited, nothing done."""
    from reflex_core import identity

    try:
        identity.check_console_trigger(trigger.source, trigger.who, trigger.payload, rt.config.operators,
                                       expected_account=rt.config.account)
    except identity.IdentityError as err:
        raise TriggerError(err.errors) from None


def _without_override(trigger: Trigger) -> Trigger:
    """The console command as the reaction validates it: `override_kill_switch` is the pipeline's field (docs/
    architecture.md, "Kill switch levels"), read by `Pipeline._override`, not the reaction's; strictly a boolean."""
    payload = trigger.payload
    if trigger.kind != "console" or not isinstance(payload, dict) or "override_kill_switch" not in payload:
        return trigger
    if not isinstance(payload["override_kill_switch"], bool):
        raise TriggerError([f"override_kill_switch: must be true or false (got "
                            f"{type(payload['override_kill_switch']).__name__})"])
    return trigger.model_copy(update={"payload": {k: v for k, v in payload.items() if k != "override_kill_switch"}})


def default_reconcile(action: Action, state: dict[str, Any]) -> Reconciled:
    """Applied when the target shows every intended value; not applied when each value is still the one read before,
    or when some are and the others already show the intended value (an attempt interrupted between two writes,
    e.g. a pre-warm's desired set and its floor not yet: the remaining writes run, and actions write absolute
    values); unknown otherwise (someone else changed it, or the state does not show what was intended)."""
    keys = list(action.intended)
    if not keys or any(k not in state for k in keys):
        return "unknown"
    if all(state[k] == action.intended[k] for k in keys):
        return "applied"
    if all(k in action.before and state[k] in (action.before[k], action.intended[k]) for k in keys):
        return "not-applied"
    return "unknown"


class Pipeline:
    def __init__(self, reaction: Reaction) -> None:
        self.reaction = reaction

    # ------------------------------------------------------------------ entry point
    def handle(self, event: Any, context: Any) -> dict[str, Any]:
        rt = current_runtime(self.reaction.config_model)
        request_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
        now = rt.clock.now()
        metrics.add_metric(name="Triggers", unit="Count", value=1)
        try:
            trigger = parse_trigger(event, now, request_id)
            logger.set_correlation_id(trigger.event_id)
            _check_operator(trigger, rt)
            request = self.reaction.validate(_without_override(trigger), rt)
        except TriggerError as err:
            return self._reject(rt, event, err, request_id)

        self._fast_safety(rt, trigger)
        deadline = _deadline(rt, context)
        invocation = request_id
        try:
            result = self._idempotent(rt, trigger, request, invocation, context, deadline)
        except _in_progress_errors() as err:
            logger.info("duplicate delivery while the first is still running", extra={"key": trigger.idempotency_key})
            decision = Decision(outcome="skipped:duplicate-in-progress", detail=str(err)[:200])
            self._record(rt, decision, trigger, dry_run=False)
            return {"status": "ok", "trigger": trigger.summary(), "decisions": [decision.public()], "duplicate": True}

        if result.get("invocation") != invocation:
            decision = Decision(outcome="skipped:duplicate-delivery",
                                detail=f"already handled by invocation {result.get('invocation')}")
            self._record(rt, decision, trigger, dry_run=False)
            return result | {"duplicate": True}
        if trigger.kind != "console":
            if result.get("status") == "failed":
                raise ActionFailed(dumps(result["decisions"])[:2000])
            if result.get("status") == "retry":
                raise RetryLater(dumps(result["decisions"])[:2000])
        return result

    def _fast_safety(self, rt: Runtime[Any], trigger: Trigger) -> None:
        """The reaction's idempotent safety write, before any bookkeeping (time to safety); never fatal."""
        hook = getattr(self.reaction, "fast_safety", None)
        if hook is None or trigger.alarm is None or trigger.alarm.state != "ALARM":
            return
        try:
            if rt.kill_switch.state().level == "hard-stop":
                return
            hook(trigger, rt)
        except Exception:  # noqa: BLE001 - the pipeline's own path follows and records whatever happens
            logger.exception("fast safety path failed; the pipeline's path follows")

    # ------------------------------------------------------------------ idempotent section
    def _idempotent(self, rt: Runtime[Any], trigger: Trigger, request: Any, invocation: str,
                    context: Any, deadline: datetime | None) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

        config = IdempotencyConfig(expires_after_seconds=rt.config.guardrails.idempotency_ttl_s)
        if hasattr(context, "get_remaining_time_in_millis"):
            # Lets Powertools expire an in-progress record if this invocation times out.
            config.register_lambda_context(context)

        @idempotent_function(data_keyword_argument="key", persistence_store=rt.idempotency_store, config=config)
        def run_once(key: dict[str, str]) -> dict[str, Any]:
            result = _bounded(self._run(rt, trigger, request, invocation, deadline))
            if result["status"] in ("failed", "retry"):
                # Raising makes Powertools forget the key: a failure or a refusal that may pass is not an answer.
                raise _FailedRun(result)
            return result

        try:
            return run_once(key={"key": trigger.idempotency_key, "reaction": self.reaction.name})
        except _FailedRun as failed:
            return failed.result

    def _run(self, rt: Runtime[Any], trigger: Trigger, request: Any, invocation: str,
             deadline: datetime | None) -> dict[str, Any]:
        previous: AlarmMemory | None = None
        decisions: list[Decision] = []
        resume_only = ""
        if trigger.alarm is not None:
            alarm = trigger.alarm
            skew = rt.config.guardrails.clock_skew_s
            now = rt.clock.now()
            if alarm.changed_at > now + timedelta(seconds=skew):
                # Never remembered: a transition "from the future" would make every real one after it look stale.
                decisions.append(Decision(outcome="skipped:future-event",
                                          detail=f"state change stamped {iso(alarm.changed_at)}, more than {skew}s "
                                                 f"after now ({iso(now)}); refused (clock skew tolerance)"))
            else:
                memory = AlarmMemory(name=alarm.name, state=alarm.state, changed_at=alarm.changed_at.timestamp(),
                                     breach=alarm.breach)
                try:
                    previous = rt.store.remember_alarm(memory, self.reaction.alarm_policies(trigger, rt), now,
                                                       reaction=self.reaction.name)
                except StaleAlarmEvent:
                    if not (alarm.state == "ALARM" and getattr(self.reaction, "acts_on_stale_alarm", False)):
                        # Only an action this very transition already decided is completed.
                        resume_only = "a newer state of this alarm is already recorded"
                else:
                    # The event's own previous state is authoritative (memory may have missed an OK);
                    # memory decides only for shapes that carry no previous state.
                    if alarm.previous_state is not None:
                        repeated = alarm.previous_state == "ALARM"
                    else:
                        repeated = (previous is not None and previous.state == "ALARM"
                                    and previous.changed_at < memory.changed_at)
                    if alarm.state == "ALARM" and repeated:
                        decisions.append(Decision(outcome="skipped:duplicate-alarm",
                                                  detail="already in ALARM; only a transition into ALARM acts"))

        written: set[str] = set()
        if not decisions:
            try:
                items = self.reaction.intents(trigger, request, rt, previous)
                if getattr(request, "dry_run", False) is True:
                    # A command's dry-run covers every intent it produces, whatever the reaction made of it
                    # (an `evaluate` may yield several): decided here, once, not by each command.
                    items = [i.model_copy(update={"dry_run": True}) if isinstance(i, Intent) else i for i in items]
            except Exception as err:  # noqa: BLE001 - audited as this trigger's failure; the retry tries again
                logger.exception("could not work out what the trigger asks for")
                items = []
                decisions.append(Decision(outcome=f"failed:{_error_name(err)}", transient=_is_transient(err),
                                          detail=f"matching the trigger to policies failed: {str(err)[:400]}"))
            if resume_only:
                decisions.extend(self._resume(rt, trigger, items, resume_only, deadline, written))
            elif not items and not decisions:
                # A scheduled evaluation with nothing to do is not a decision: logged, not audited.
                decisions.append(Decision(outcome="skipped:no-policy", detail="no policy names this trigger",
                                          quiet=trigger.kind == "schedule"))
            if not resume_only:
                for item in items:
                    if isinstance(item, Skip):
                        decisions.append(_skip(item))
                        continue
                    decision = self._isolated(rt, trigger, item, deadline, written)
                    # A periodic check skipped for any reason changed nothing and asked nothing: log it only.
                    decision.quiet = (item.quiet and decision.outcome.startswith("skipped:")
                                      and decision.outcome != "skipped:circuit-open-tripped"
                                      and not decision.page and not decision.transient)
                    decisions.append(decision)

        for decision in decisions:
            if decision.quiet:
                logger.debug("nothing to do", extra={"decision": decision.public()})
            elif decision.audit_id is None or decision.audit_id not in written:
                self._record(rt, decision, trigger, dry_run=decision.outcome == "dry-run")
        status = "ok"
        if any(d.transient for d in decisions):
            status = "retry"
        if any(d.outcome.startswith("failed:") for d in decisions):
            status = "failed"
        return {
            "status": status,
            "invocation": invocation,
            "trigger": trigger.summary(),
            "decisions": [d.public() for d in decisions],
        }

    def _resume(self, rt: Runtime[Any], trigger: Trigger, items: list[Intent | Skip], why: str,
                deadline: datetime | None, written: set[str]) -> list[Decision]:
        """A stale trigger only completes what it already decided (an interrupted rollback is not cancelled)."""
        out: list[Decision] = []
        seen: set[str] = set()
        for item in items:
            key = item.target_key
            if key is None or key in seen or not isinstance(item, Intent):
                continue
            seen.add(key)
            if rt.store.intent(self._intent_pk(trigger, item)) is not None:
                out.append(self._isolated(rt, trigger, item, deadline, written, resume_only=True))
        if not any(d.outcome != "skipped:already-done" for d in out):
            out.append(Decision(outcome="skipped:stale-event", detail=why))
        return out

    # ------------------------------------------------------------------ guardrails around one intent
    def _isolated(self, rt: Runtime[Any], trigger: Trigger, intent: Intent, deadline: datetime | None,
                  written: set[str], resume_only: bool = False) -> Decision:
        """One intent, whatever happens to the others: an error becomes this intent's audited `failed:`."""
        try:
            return self._guarded(rt, trigger, intent, deadline, written, resume_only)
        except Exception as err:  # noqa: BLE001 - audited; handle() raises so that the trigger is retried
            logger.exception("intent failed", extra={"target": intent.target_key, "operation": intent.operation})
            return Decision(policy=intent.policy, target_key=intent.target_key, operation=intent.operation,
                            outcome=f"failed:{_error_name(err)}", transient=_is_transient(err),
                            detail=f"before acting: {str(err)[:480]}")

    def _intent_pk(self, trigger: Trigger, intent: Intent) -> str:
        """One intent per trigger, target and operation (an evaluation may end a pre-warm and scale in). A reaction
        whose work outlives its trigger's idempotency key names it with `intent_scope` (the CDN batcher: the same
        queued messages, redelivered with a new receive count, are the same work)."""
        scope_of = getattr(self.reaction, "intent_scope", None)
        scope = scope_of(trigger, intent) if scope_of is not None else None
        digest = hashlib.sha256((scope or trigger.idempotency_key).encode()).hexdigest()[:32]
        return f"intent#{self.reaction.name}#{digest}#{intent.target_key}#{intent.operation}"

    def _override(self, trigger: Trigger) -> bool:
        """An operator's console command that explicitly overrides the kill switch (level `on`) for one action."""
        payload = trigger.payload or {}
        return (trigger.kind == "console" and payload.get("override_kill_switch") is True
                and trigger.who != "console:unknown")

    def _guarded(self, rt: Runtime[Any], trigger: Trigger, intent: Intent, deadline: datetime | None,
                 written: set[str], resume_only: bool) -> Decision:
        key = intent.target_key
        base: dict[str, Any] = {"policy": intent.policy, "target_key": key, "operation": intent.operation}
        if key not in self.reaction.allowed_targets(rt):
            return Decision(**base, outcome="skipped:not-allowlisted", detail=f"{key} is not a configured target")
        settings = self.reaction.guard_settings(intent, rt)
        kill = rt.kill_switch.state()
        note = ""
        killed = ""  # a dry run the kill switch would have stopped: said in its detail
        if settings.cleanup:
            if kill.engaged:
                note = f"; {kill.reason}, which lets a cleanup of Reflex's own resources run"
        elif kill.blocks(safety=settings.safety):
            if settings.dry_run or intent.dry_run:
                # "Kill switch and dry-run: the planner runs, nothing moves": a dry run executes nothing, so
                # the kill switch does not hide what would be done.
                killed = f"; {kill.reason}: planned only, nothing is executed"
            elif not (kill.level == "on" and self._override(trigger)):
                return Decision(**base, outcome="skipped:kill-switch", detail=kill.reason, transient=kill.transient)
            else:
                note = f"; {kill.reason}, overridden for this action by {trigger.who}"
        elif kill.engaged:
            note = f"; {kill.reason}, which lets a rollback to the last known-good state run"
        dry_run = settings.dry_run or intent.dry_run

        pk = self._intent_pk(trigger, intent)
        existing = None if dry_run else rt.store.intent(pk)
        if existing is not None and existing.status == "done":
            return Decision(**base, outcome="skipped:already-done",
                            detail=f"this trigger's action on {key} was completed earlier ({existing.outcome}, "
                                   f"audit {existing.audit_id})")
        if resume_only and existing is None:
            return Decision(**base, outcome="skipped:stale-event", detail="a newer state is already recorded")

        owner = str(uuid.uuid4())
        preempted = ""
        lease = _lease_s(rt, deadline)
        # A dry run the kill switch would have stopped writes nothing, not even the target's lock: it must not
        # hold a target an operator stopped, nor delay the first action once the switch is released.
        locking = not killed
        if locking and not rt.store.acquire_lock(key, owner, rt.clock.now(), lease):
            if not settings.preempt_lock:
                return Decision(**base, outcome="skipped:locked", transient=True,
                                detail="another action on this target holds the lock; the trigger is retried")
            rt.store.take_lock(key, owner, rt.clock.now(), lease)
            preempted = " (took over the lock another invocation held)"
        try:
            if existing is not None:
                return self._complete(rt, trigger, existing, base, settings, written, note + preempted)
            now = rt.clock.now()
            window = rt.store.rate_window(key)
            direction = intent.direction
            verdict = circuit_check(window, now, settings.max_actions_per_hour, direction,
                                    settings.max_reversals_per_hour)
            if verdict.reason and not verdict.trips and not settings.bypass_rate_limit:
                # An open breaker refusing capacity an alarm or an operator asks for must page, not stay quiet.
                return Decision(**base, outcome="skipped:circuit-open", detail=verdict.reason,
                                page=direction == "out")
            blocked = cooldown_block(direction, rt.store.last_actions(key), now,
                                     settings.out_cooldown_s, settings.in_cooldown_s,
                                     in_after_out_s=settings.in_after_out_cooldown_s)
            if blocked:
                return Decision(**base, outcome="skipped:cooldown", detail=blocked)

            planned = self.reaction.plan(intent, rt)
            if isinstance(planned, Skip):
                return _skip(planned, intent.operation)
            # Only an action that would really run counts against the rate limit and can trip the breaker.
            if verdict.reason and not settings.bypass_rate_limit:
                if verdict.trips and not dry_run:
                    rt.store.update_rate_window(key, lambda w: trip(
                        w, now, direction, settings.circuit_open_for_s, verdict.everything), now)
                return Decision(**base, outcome="skipped:circuit-open-tripped" if verdict.trips
                                else "skipped:circuit-open", action=planned, before=planned.before,
                                detail=verdict.reason, page=direction == "out")
            if dry_run:
                return Decision(**base, outcome="dry-run", action=planned, before=planned.before,
                                detail=f"would {planned.operation}: {planned.reason}{killed}")
            record = IntentRecord(pk=pk, status="planned", action=planned.model_dump(mode="json"), owner=owner,
                                  created_at=now.timestamp(), audit_id=str(uuid.uuid4()), audit_at=iso(now))
            other = rt.store.begin_intent(record, now.timestamp() + INTENT_TTL_S)
            if other is not None:
                return self._complete(rt, trigger, other, base, settings, written, note + preempted)
            return self._execute(rt, trigger, record, planned, base, written, note + preempted)
        finally:
            try:
                if locking:
                    rt.store.release_lock(key, owner)
            except Exception:  # noqa: BLE001 - the lease expires by itself; the decision stands
                logger.exception("could not release the lock; its lease expires", extra={"target": key})

    # ------------------------------------------------------------------ acting and completing
    def _state(self, action: Action, rt: Runtime[Any]) -> tuple[Reconciled, dict[str, Any] | None, str]:
        """What the target shows now, against the action: (verdict, state read, error name if unreadable)."""
        try:
            custom = getattr(self.reaction, "reconcile", None)
            if custom is not None:
                return custom(action, rt), None, ""
            state = self.reaction.verify(action, rt)
        except Exception as err:  # noqa: BLE001 - unreadable: the verdict is unknown
            return "unknown", None, _error_name(err)
        return default_reconcile(action, state), state, ""

    def _execute(self, rt: Runtime[Any], trigger: Trigger, record: IntentRecord, action: Action,
                 base: dict[str, Any], written: set[str], note: str) -> Decision:
        try:
            self.reaction.execute(action, rt)
        except Superseded as done:
            try:
                rt.store.advance_intent(record.pk, "done", f"skipped:{done.reason}")
            except Exception:  # noqa: BLE001 - a retry re-reads the target and finds the change in place
                logger.exception("could not close the intent", extra={"intent": record.pk})
            try:
                after: dict[str, Any] | None = self.reaction.verify(action, rt)
            except Exception as err:  # noqa: BLE001 - the record says what was found; the re-read is a bonus
                after = {"verify_error": _error_name(err)}
            return Decision(**base, outcome=f"skipped:{done.reason}", action=action, before=action.before,
                            after=after, detail=f"{action.reason}: not carried out by this decision: {done}")
        except Exception as err:  # noqa: BLE001 - every failure is audited, then re-raised by handle()
            logger.exception("action failed", extra={"target": action.target_key, "operation": action.operation})
            verdict, state, _ = self._state(action, rt)
            if verdict == "applied":
                # The change landed and only its answer failed: a retry must not step again from the new state.
                note += f" (the call answered {_error_name(err)}, but the change is in place)"
                return self._finish(rt, trigger, record, action, base, written, note, after=state)
            if verdict == "not-applied":
                rt.store.drop_intent(record.pk)  # certainly not done: the retry plans anew
                return Decision(**base, outcome=f"failed:{_error_name(err)}", action=action, before=action.before,
                                detail=str(err)[:500], transient=_is_transient(err))
            return Decision(**base, outcome=f"failed:{_error_name(err)}", action=action, before=action.before,
                            detail=f"{str(err)[:400]}; whether the change landed is unknown: the retry reads the "
                                   "target and completes or repeats it")
        rt.store.advance_intent(record.pk, "applied")
        return self._finish(rt, trigger, record, action, base, written, note)

    def _complete(self, rt: Runtime[Any], trigger: Trigger, record: IntentRecord, base: dict[str, Any],
                  settings: GuardSettings, written: set[str], note: str) -> Decision:
        """An earlier attempt of this trigger decided `record.action`: complete it, never plan anew."""
        action = Action.model_validate(record.action)
        if record.status == "applied":
            return self._finish(rt, trigger, record, action, base, written, note + " (completed after an "
                                "interrupted attempt)")
        verdict, state, error = self._state(action, rt)
        if verdict == "applied":
            rt.store.advance_intent(record.pk, "applied")
            return self._finish(rt, trigger, record, action, base, written,
                                note + " (found applied by an interrupted attempt; completed)", after=state)
        if verdict == "not-applied" or (verdict == "unknown" and not error
                                        and getattr(self.reaction, "idempotent_execute", False)):
            return self._execute(rt, trigger, record, action, base, written, note + " (retried the action an "
                                 "interrupted attempt decided)")
        if error:
            return Decision(**base, outcome=f"failed:{error}", action=action, before=action.before, transient=True,
                            detail="could not read the target to complete an interrupted attempt; retried later")
        detail = (f"an interrupted attempt decided {action.operation} {action.intended}, but the target now shows "
                  f"{state}: changed by someone else; not acting on a stale decision")
        rt.store.advance_intent(record.pk, "done", "skipped:target-changed")
        return Decision(**base, outcome="skipped:target-changed", action=action, before=action.before,
                        after=state, detail=detail, page=True)

    def _finish(self, rt: Runtime[Any], trigger: Trigger, record: IntentRecord, action: Action,
                base: dict[str, Any], written: set[str], note: str, after: dict[str, Any] | None = None) -> Decision:
        """Bookkeeping, audit, completion. Each step may fail on its own; the change is then still audited, and
        the intent stays open so the retry completes what is missing (every step is idempotent)."""
        done = datetime.fromtimestamp(record.created_at, tz=rt.clock.now().tzinfo)
        missing: list[str] = []
        key = action.target_key
        if action.direction:
            try:
                rt.store.record_action_time(key, action.direction, done)
            except Exception as err:  # noqa: BLE001
                missing.append(f"cooldown ({_error_name(err)})")
        try:
            rt.store.update_rate_window(key, lambda w: w if (record.created_at, action.direction or "") in w.actions
                                        else record_in_window(w, done, action.direction), rt.clock.now())
        except Exception as err:  # noqa: BLE001
            missing.append(f"rate window ({_error_name(err)})")
        try:
            self.reaction.after_executed(action, rt)
        except Exception as err:  # noqa: BLE001
            missing.append(f"bookkeeping ({_error_name(err)})")
        if after is None:
            try:
                after = self.reaction.verify(action, rt)
            except Exception as err:  # noqa: BLE001 - the change happened; a failed re-read must not hide it
                after = {"verify_error": _error_name(err)}
        detail = action.reason + note
        if missing:
            detail += f"; not yet recorded: {', '.join(missing)} (the retry completes them)"
        decision = Decision(**base, outcome="executed", action=action, before=action.before, after=after,
                            detail=detail, audit_id=record.audit_id, audit_at=record.audit_at,
                            transient=bool(missing), page=action.page)
        if not self._record(rt, decision, trigger, dry_run=False):
            missing.append("audit record")  # in the log only: the retry writes the same record (same id)
            decision.transient = True
        written.add(record.audit_id)
        if not missing:
            try:
                rt.store.advance_intent(record.pk, "done", "executed")
            except Exception:  # noqa: BLE001 - the retry finds it applied and completes it (same audit record)
                logger.exception("could not close the intent", extra={"intent": record.pk})
                decision.transient = True
        return decision

    # ------------------------------------------------------------------ audit + rejection
    def _record(self, rt: Runtime[Any], decision: Decision, trigger: Trigger | None, *, dry_run: bool,
                raw: dict[str, Any] | None = None) -> bool:
        """Audit the decision; False when the trail's table write failed (the record is in the log line)."""
        now = rt.clock.now()
        correlation = trigger.event_id if trigger else "invalid"
        record = rt.audit.build(decision, trigger, now=now, correlation_id=correlation, dry_run=dry_run,
                                raw_trigger=raw)
        durable = rt.audit.write(record, now)
        decision.audit_id = record["id"]
        logger.info("decision", extra={"audit": record})
        return durable

    def _reject(self, rt: Runtime[Any], event: Any, err: TriggerError, request_id: str) -> dict[str, Any]:
        from reflex_core.identity import is_function_url_event
        from reflex_core.triggers import raw_reference

        # A console command (direct, or signed through the function URL) gets its errors back, never the DLQ.
        is_console = isinstance(event, dict) and ("command" in event or is_function_url_event(event))
        ref = raw_reference(event)
        errors = err.errors[:MAX_REJECTION_ERRORS]
        if len(err.errors) > MAX_REJECTION_ERRORS:
            errors.append(f"... and {len(err.errors) - MAX_REJECTION_ERRORS} more errors")
        errors = [e[:500] for e in errors]
        logger.warning("rejected malformed trigger", extra={"errors": errors, "raw_ref": ref})
        decision = Decision(outcome="rejected:validation", detail="; ".join(errors)[:1000])
        self._record(rt, decision, None, dry_run=False,
                     raw={"kind": "invalid", "raw_ref": ref, "request_id": request_id})
        parked = False
        if not is_console and rt.settings.dead_letter_queue_url:
            # An asynchronous event that can never parse is parked in the DLQ, so nothing is lost.
            try:
                rt.clients.sqs.send_message(QueueUrl=rt.settings.dead_letter_queue_url,
                                            MessageBody=_parked_message(event, errors, ref))
                parked = True
            except Exception as park_err:
                logger.exception("could not park the rejected event; raising so Lambda retries and finally "
                                 "dead-letters it", extra={"raw_ref": ref})
                raise RetryLater(f"rejected event {ref} could not be parked in the DLQ") from park_err
        return {"status": "rejected", "errors": errors, "parked_in_dlq": parked, "audit_id": decision.audit_id}


SQS_MAX_BODY = 256 * 1024


def _parked_message(event: Any, errors: list[str], ref: str) -> str:
    """The DLQ body for a rejected event: always valid JSON within SQS's size limit.

    An event too large to park whole keeps its errors, fingerprint and a readable prefix of its text.
    """
    body = {"reason": "rejected:validation", "errors": errors, "raw_ref": ref, "event": event}
    text = dumps(body)
    if len(text.encode()) <= SQS_MAX_BODY - 1024:
        return text
    raw = dumps(event)
    body["event"] = None
    body["event_truncated"] = True
    budget = SQS_MAX_BODY - 4096 - len(dumps(body).encode())
    body["event_prefix"] = raw.encode()[: max(budget // 2, 0)].decode(errors="ignore")
    return dumps(body)


class _FailedRun(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("action failed")
        self.result = result


def _deadline(rt: Runtime[Any], context: Any) -> datetime | None:
    """When this invocation ends (Lambda kills it then), on the runtime's clock; None when unknown."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return None
    try:
        ms = int(remaining())
    except Exception:  # noqa: BLE001 - a context without a deadline
        return None
    return rt.clock.now() + timedelta(milliseconds=max(ms, 0))


def _lease_s(rt: Runtime[Any], deadline: datetime | None) -> int:
    """The lock's lease: until the invocation's end plus a margin (the work cannot outlive it, and Lambda's retry
    of a timed-out invocation must not find the dead one's lock); the configured lease when the end is unknown."""
    if deadline is None:
        return rt.config.guardrails.lock_lease_s
    left = (deadline - rt.clock.now()).total_seconds()
    return max(int(left) + LEASE_MARGIN_S, LEASE_MARGIN_S)


TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestLimitExceeded", "TooManyRequestsException",
    "ProvisionedThroughputExceededException", "RequestThrottled", "RequestThrottledException", "SlowDown",
    "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
    "InternalServerError", "RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete",
    "TransactionInProgressException", "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError",
    "ConnectionClosedError",
})


def _is_transient(err: Exception) -> bool:
    return _error_name(err) in TRANSIENT_CODES


def _bounded(result: dict[str, Any]) -> dict[str, Any]:
    """The response within MAX_RESPONSE_BYTES (DynamoDB keeps the idempotency record under its 400 KB item limit;
    Lambda's response under 6 MB): decisions keep their outcome, ids and the start of their detail."""
    if len(dumps(result).encode()) <= MAX_RESPONSE_BYTES:
        return result
    keep = ("policy", "target_key", "operation", "outcome", "audit_id", "transient")
    slim = [{k: d[k] for k in keep if k in d} | {"detail": str(d.get("detail", ""))[:200]}
            for d in result.get("decisions", [])]
    bounded = result | {"decisions": slim, "truncated": "details are in the audit records (audit_id)"}
    while len(dumps(bounded).encode()) > MAX_RESPONSE_BYTES and len(slim) > 1:
        slim = slim[: len(slim) // 2]
        bounded = bounded | {"decisions": slim, "decisions_total": len(result.get("decisions", []))}
    return bounded


def _error_name(err: Exception) -> str:
    response = getattr(err, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return str(code or type(err).__name__)


def _in_progress_errors() -> tuple[type[Exception], ...]:
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    return (IdempotencyAlreadyInProgressError,)
