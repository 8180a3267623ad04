"""The one pipeline: parse, validate, (idempotently) apply alarm semantics, match, guard, plan,
execute, verify, record.

A reaction supplies only what is specific to it (see `Reaction`); every guardrail, the audit
and the failure handling live here, identical for every trigger, console included.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from reflex_core.actions import Action, Decision, Intent, Skip
from reflex_core.config_base import StageConfig
from reflex_core.guardrails import circuit_check, cooldown_block, record_in_window
from reflex_core.observability import logger, metrics
from reflex_core.runtime import Runtime, current_runtime
from reflex_core.state_store import AlarmMemory, RateWindow, StaleAlarmEvent
from reflex_core.triggers import Trigger, TriggerError, parse_trigger


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
    # A rollback to the last known-good state: still runs while a kill switch is `on` (only `hard-stop` stops
    # it). Set by the reaction (promoter: rollback, abort); the core's kill-switch levels read it.
    safety: bool = False


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
        """Bookkeeping after a successful change (e.g. remember a pre-warm window)."""


class ActionFailed(RuntimeError):
    """Raised after auditing when an action failed, so Lambda retries and finally dead-letters the event."""


def _skip(skip: Skip, operation: str | None = None) -> Decision:
    return Decision(policy=skip.policy, target_key=skip.target_key, operation=operation,
                    outcome=f"skipped:{skip.reason}", detail=skip.detail, before=skip.before, quiet=skip.quiet)


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
            request = self.reaction.validate(trigger, rt)
        except TriggerError as err:
            return self._reject(rt, event, err, request_id)

        invocation = request_id
        try:
            result = self._idempotent(rt, trigger, request, invocation, context)
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
        if result.get("status") == "failed" and trigger.kind != "console":
            raise ActionFailed(json.dumps(result["decisions"], default=str)[:2000])
        return result

    # ------------------------------------------------------------------ idempotent section
    def _idempotent(self, rt: Runtime[Any], trigger: Trigger, request: Any, invocation: str,
                    context: Any) -> dict[str, Any]:
        from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function

        config = IdempotencyConfig(expires_after_seconds=rt.config.guardrails.idempotency_ttl_s)
        if hasattr(context, "get_remaining_time_in_millis"):
            # Lets Powertools expire an in-progress record if this invocation times out.
            config.register_lambda_context(context)

        @idempotent_function(data_keyword_argument="key", persistence_store=rt.idempotency_store, config=config)
        def run_once(key: dict[str, str]) -> dict[str, Any]:
            result = self._run(rt, trigger, request, invocation)
            if result["status"] == "failed":
                # Raising makes Powertools forget the key, so the retry acts again.
                raise _FailedRun(result)
            return result

        try:
            return run_once(key={"key": trigger.idempotency_key, "reaction": self.reaction.name})
        except _FailedRun as failed:
            return failed.result

    def _run(self, rt: Runtime[Any], trigger: Trigger, request: Any, invocation: str) -> dict[str, Any]:
        previous: AlarmMemory | None = None
        decisions: list[Decision] = []
        if trigger.alarm is not None:
            alarm = trigger.alarm
            memory = AlarmMemory(name=alarm.name, state=alarm.state, changed_at=alarm.changed_at.timestamp(),
                                 breach=alarm.breach)
            try:
                previous = rt.store.remember_alarm(memory, self.reaction.alarm_policies(trigger, rt), rt.clock.now())
            except StaleAlarmEvent:
                decisions.append(Decision(outcome="skipped:stale-event",
                                          detail="a newer state of this alarm is already recorded"))
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

        if not decisions:
            items = self.reaction.intents(trigger, request, rt, previous)
            if not items:
                # A scheduled evaluation with nothing to do is not a decision: logged, not audited.
                decisions.append(Decision(outcome="skipped:no-policy", detail="no policy names this trigger",
                                          quiet=trigger.kind == "schedule"))
            for item in items:
                if isinstance(item, Skip):
                    decisions.append(_skip(item))
                    continue
                decision = self._guarded(rt, item)
                # A periodic check skipped for any reason changed nothing and asked nothing: log it only.
                decision.quiet = (item.quiet and decision.outcome.startswith("skipped:")
                                  and decision.outcome != "skipped:circuit-open-tripped")
                decisions.append(decision)

        for decision in decisions:
            if decision.quiet:
                logger.debug("nothing to do", extra={"decision": decision.public()})
            else:
                self._record(rt, decision, trigger, dry_run=decision.outcome == "dry-run")
        failed = any(d.outcome.startswith("failed:") for d in decisions)
        return {
            "status": "failed" if failed else "ok",
            "invocation": invocation,
            "trigger": trigger.summary(),
            "decisions": [d.public() for d in decisions],
        }

    # ------------------------------------------------------------------ guardrails around one intent
    def _guarded(self, rt: Runtime[Any], intent: Intent) -> Decision:
        key = intent.target_key
        base: dict[str, Any] = {"policy": intent.policy, "target_key": key, "operation": intent.operation}
        if key not in self.reaction.allowed_targets(rt):
            return Decision(**base, outcome="skipped:not-allowlisted", detail=f"{key} is not a configured target")
        kill = rt.kill_switch.state()
        if kill.engaged:
            return Decision(**base, outcome="skipped:kill-switch", detail=kill.reason)
        settings = self.reaction.guard_settings(intent, rt)
        dry_run = settings.dry_run or intent.dry_run

        owner = str(uuid.uuid4())
        preempted = ""
        if not rt.store.acquire_lock(key, owner, rt.clock.now(), rt.config.guardrails.lock_lease_s):
            if not settings.preempt_lock:
                return Decision(**base, outcome="skipped:locked",
                                detail="another action on this target holds the lock")
            rt.store.take_lock(key, owner, rt.clock.now(), rt.config.guardrails.lock_lease_s)
            preempted = " (took over the lock another invocation held)"
        try:
            now = rt.clock.now()
            window = rt.store.rate_window(key)
            if window.circuit_open_until > now.timestamp() and not settings.bypass_rate_limit:
                reason, _ = circuit_check(window, now, settings.max_actions_per_hour)
                return Decision(**base, outcome="skipped:circuit-open", detail=reason or "")
            blocked = cooldown_block(intent.direction, rt.store.last_actions(key), now,
                                     settings.out_cooldown_s, settings.in_cooldown_s)
            if blocked:
                return Decision(**base, outcome="skipped:cooldown", detail=blocked)

            planned = self.reaction.plan(intent, rt)
            if isinstance(planned, Skip):
                return _skip(planned, intent.operation)
            # Only an action that would really run counts against the rate limit and can trip the breaker.
            reason, trips = circuit_check(window, now, settings.max_actions_per_hour)
            if reason and not settings.bypass_rate_limit:
                if trips and not dry_run:
                    rt.store.save_rate_window(key, RateWindow(
                        actions=window.actions, circuit_open_until=now.timestamp() + settings.circuit_open_for_s), now)
                return Decision(**base, outcome="skipped:circuit-open-tripped" if trips else "skipped:circuit-open",
                                action=planned, before=planned.before, detail=reason)
            if dry_run:
                return Decision(**base, outcome="dry-run", action=planned, before=planned.before,
                                detail=f"would {planned.operation}: {planned.reason}")
            try:
                self.reaction.execute(planned, rt)
            except Exception as err:  # noqa: BLE001 - every failure is audited, then re-raised by handle()
                logger.exception("action failed", extra={"target": key, "operation": intent.operation})
                return Decision(**base, outcome=f"failed:{_error_name(err)}", action=planned,
                                before=planned.before, detail=str(err)[:500])
            done = rt.clock.now()
            if intent.direction:
                rt.store.record_action_time(key, intent.direction, done)
            rt.store.save_rate_window(key, record_in_window(rt.store.rate_window(key), done), done)
            self.reaction.after_executed(planned, rt)
            try:
                after = self.reaction.verify(planned, rt)
            except Exception as err:  # noqa: BLE001 - the change happened; a failed re-read must not hide it
                after = {"verify_error": _error_name(err)}
            return Decision(**base, outcome="executed", action=planned, before=planned.before, after=after,
                            detail=planned.reason + preempted)
        finally:
            rt.store.release_lock(key, owner)

    # ------------------------------------------------------------------ audit + rejection
    def _record(self, rt: Runtime[Any], decision: Decision, trigger: Trigger | None, *, dry_run: bool,
                raw: dict[str, Any] | None = None) -> None:
        now = rt.clock.now()
        correlation = trigger.event_id if trigger else "invalid"
        record = rt.audit.build(decision, trigger, now=now, correlation_id=correlation, dry_run=dry_run,
                                raw_trigger=raw)
        rt.audit.write(record, now)
        decision.audit_id = record["id"]
        logger.info("decision", extra={"audit": record})

    def _reject(self, rt: Runtime[Any], event: Any, err: TriggerError, request_id: str) -> dict[str, Any]:
        from reflex_core.triggers import raw_reference

        is_console = isinstance(event, dict) and "command" in event
        ref = raw_reference(event)
        logger.warning("rejected malformed trigger", extra={"errors": err.errors, "raw_ref": ref})
        decision = Decision(outcome="rejected:validation", detail="; ".join(err.errors)[:1000])
        self._record(rt, decision, None, dry_run=False,
                     raw={"kind": "invalid", "raw_ref": ref, "request_id": request_id})
        parked = False
        if not is_console and rt.settings.dead_letter_queue_url:
            # An asynchronous event that can never parse is parked in the DLQ, so nothing is lost.
            try:
                rt.clients.sqs.send_message(QueueUrl=rt.settings.dead_letter_queue_url,
                                            MessageBody=_parked_message(event, err.errors, ref))
                parked = True
            except Exception:  # noqa: BLE001
                logger.exception("could not park the rejected event; it is in this log line", extra={"event": event})
        return {"status": "rejected", "errors": err.errors, "parked_in_dlq": parked, "audit_id": decision.audit_id}


SQS_MAX_BODY = 256 * 1024


def _parked_message(event: Any, errors: list[str], ref: str) -> str:
    """The DLQ body for a rejected event: always valid JSON within SQS's size limit.

    An event too large to park whole keeps its errors, fingerprint and a readable prefix of its text.
    """
    body = {"reason": "rejected:validation", "errors": errors, "raw_ref": ref, "event": event}
    text = json.dumps(body, default=str)
    if len(text.encode()) <= SQS_MAX_BODY - 1024:
        return text
    raw = json.dumps(event, default=str)
    body["event"] = None
    body["event_truncated"] = True
    budget = SQS_MAX_BODY - 4096 - len(json.dumps(body, default=str).encode())
    body["event_prefix"] = raw.encode()[: max(budget // 2, 0)].decode(errors="ignore")
    return json.dumps(body, default=str)


class _FailedRun(Exception):
    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("action failed")
        self.result = result


def _error_name(err: Exception) -> str:
    code = getattr(err, "response", {}).get("Error", {}).get("Code") if hasattr(err, "response") else None
    return str(code or type(err).__name__)


def _in_progress_errors() -> tuple[type[Exception], ...]:
    from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

    return (IdempotencyAlreadyInProgressError,)
