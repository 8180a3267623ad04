"""The scaling reaction: which policy a trigger concerns, what it asks for, and how capacity changes.

* Alarm into ALARM             -> scale out by a step sized by the breach (policy `scale_out`).
* Alarm OK / INSUFFICIENT_DATA -> nothing now; the evaluator scales in once OK has lasted the window.
* Schedule `evaluate`          -> per policy: end expired pre-warms, step out again while an alarm stays
                                  in ALARM (after the cooldown), step in once every alarm is OK long enough.
* Schedule `prewarm`           -> raise the floor for a known peak until the window ends.
* Console / custom event       -> scale_out, scale_in, set_capacity, prewarm, evaluate (same guardrails).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from reflex_core.actions import Action, Direction, Intent, Skip
from reflex_core.alarm_states import actual_alarms
from reflex_core.alarm_tags import AlarmTagReader
from reflex_core.cron import CronExpression
from reflex_core.pipeline import GuardSettings
from reflex_core.runtime import Runtime
from reflex_core.scaling_config import ScalingPolicy, ScalingStageConfig
from reflex_core.state_store import AlarmMemory, PrewarmState, PrewarmWindow
from reflex_core.triggers import Trigger, TriggerError
from scaler.capacity_targets import capacity_target
from scaler.step_sizing import counted_change, scale_in_target, scale_out_target

# How long after a pre-warm window starts the evaluator applies it if its scheduled run has not: the run itself,
# and Lambda's first retry of it (about a minute later), come first.
PREWARM_CATCH_UP_GRACE_S = 120

# The runtime this reaction runs with: its config is the reaction's view of the stage config.
ReactionRuntime = Runtime[ScalingStageConfig]

# --------------------------------------------------------------------------- console / event commands


class _Command(BaseModel):
    # Built at the first console payload, not at import: most processes never see one (docs/benchmarks.md).
    # strict: a boolean is not a number and a string is neither (`"desired": true` would scale to 1).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, strict=True)

    policy: str = Field(min_length=1)
    reason: str = Field(min_length=3, max_length=500)
    operator: str | None = Field(default=None, min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


class _CapacityCommand(_Command):
    # An operator's explicit override of the cooldowns and of the "no decrease while an alarm is in ALARM"
    # rule, for one action; console commands only (an application's event never overrides), audited.
    # Never overrides a promotion's scale-in freeze, the bounds or the kill switch.
    override: bool = False


class ScaleOutCommand(_CapacityCommand):
    command: Literal["scale_out"]


class ScaleInCommand(_CapacityCommand):
    command: Literal["scale_in"]


class SetCapacityCommand(_CapacityCommand):
    command: Literal["set_capacity"]
    desired: int = Field(ge=0, le=10_000)


class PrewarmCommand(_Command):
    command: Literal["prewarm"]
    prewarm: str = Field(min_length=1)


class EvaluateCommand(_Command):
    command: Literal["evaluate"]
    policy: str = "*"


ScalerCommand = Annotated[
    ScaleOutCommand | ScaleInCommand | SetCapacityCommand | PrewarmCommand | EvaluateCommand,
    Field(discriminator="command"),
]
COMMANDS: TypeAdapter[Any] = TypeAdapter(ScalerCommand, config=ConfigDict(defer_build=True))


COMMAND_NAMES = ("scale_out", "scale_in", "set_capacity", "prewarm", "evaluate")


def _validate_command(data: Any, prefix: str, require_operator: bool) -> Any:
    if not isinstance(data, dict):
        raise TriggerError([f"{prefix or '<root>'}: expected a JSON object with a 'command'"])
    command = data.get("command")
    if command not in COMMAND_NAMES:
        raise TriggerError([f"{prefix}command: unknown command {command!r}; expected one of "
                            f"{', '.join(COMMAND_NAMES)}"])
    try:
        cmd = COMMANDS.validate_python(data)
    except ValidationError as err:
        # Drop the union's tag from the path: "desired", not "set_capacity.desired".
        errors = [e | {"loc": e["loc"][1:] if e["loc"][:1] == (command,) else e["loc"]} for e in err.errors()]
        raise TriggerError([f"{prefix}{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                            for e in errors]) from None
    if require_operator and not cmd.operator:
        raise TriggerError([f"{prefix}operator: required for console commands (who is acting)"])
    return cmd


# --------------------------------------------------------------------------- the reaction


class ScalingReaction:
    name = "scaler"
    config_model = ScalingStageConfig

    def __init__(self) -> None:
        self._alarm_tags = AlarmTagReader()

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> Any:
        if trigger.kind == "console":
            cmd = _validate_command(trigger.payload, "", require_operator=True)
            self._known_policy(cmd, rt, "policy")
            return cmd
        if trigger.kind == "event" and trigger.event is not None:
            listening = self._event_policies(trigger, rt)
            if listening:
                cmd = _validate_command(trigger.event.detail, "detail.", require_operator=False)
                self._known_policy(cmd, rt, "detail.policy")
                names = [p.name for p in listening]
                if cmd.policy != "*" and cmd.policy not in names:
                    # An event acts only on the policies that subscribed to it (on_events): an application
                    # allowed to ask for more `api` capacity must not be able to command `workers`.
                    raise TriggerError([f"detail.policy: policy {cmd.policy!r} does not list "
                                        f"{trigger.event.source}/{trigger.event.detail_type} in on_events "
                                        f"(policies that do: {', '.join(names)})"])
                if getattr(cmd, "override", False):
                    raise TriggerError(["detail.override: only an operator's console command may override the "
                                        "cooldowns and the scale-in rules; an event is an automated actor"])
                return cmd
            return None
        if trigger.kind == "schedule" and trigger.schedule is not None:
            op = trigger.schedule.operation
            if op not in ("evaluate", "prewarm"):
                raise TriggerError([f"reflex_schedule.operation: unknown operation {op!r} (evaluate, prewarm)"])
            if op == "prewarm":
                policy = rt.config.scaling_policy(trigger.schedule.policy or "")
                if policy is None:
                    raise TriggerError([f"reflex_schedule.policy: no scaling policy {trigger.schedule.policy!r}"])
                name = trigger.schedule.params.get("prewarm")
                if not any(p.name == name for p in policy.prewarm):
                    raise TriggerError([f"reflex_schedule.params.prewarm: policy {policy.name!r} has no pre-warm "
                                        f"{name!r}"])
        return None

    @staticmethod
    def _known_policy(cmd: Any, rt: ReactionRuntime, field: str) -> None:
        if cmd.policy == "*" and isinstance(cmd, EvaluateCommand):
            return
        policy = rt.config.scaling_policy(cmd.policy)
        if policy is None:
            known = ", ".join(p.name for p in rt.config.scaling) or "none"
            raise TriggerError([f"{field}: no scaling policy named {cmd.policy!r} (configured: {known})"])
        if isinstance(cmd, PrewarmCommand) and not any(p.name == cmd.prewarm for p in policy.prewarm):
            raise TriggerError([f"{field.rsplit('.', 1)[0] + '.' if '.' in field else ''}prewarm: policy "
                                f"{policy.name!r} has no pre-warm {cmd.prewarm!r}"])

    # ------------------------------------------------------------------ matching
    def _alarm_matches(self, trigger: Trigger, rt: ReactionRuntime) -> list[ScalingPolicy]:
        alarm = trigger.alarm
        assert alarm is not None
        matched = []
        for policy in rt.config.scaling:
            if policy.scale_out is None:
                continue
            if self._alarm_tags.matches(policy.scale_out.alarms, rt.clients.cloudwatch, alarm.name, alarm.arn):
                matched.append(policy)
        return matched

    def _event_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[ScalingPolicy]:
        ev = trigger.event
        assert ev is not None
        return [p for p in rt.config.scaling
                if any(m.source == ev.source and m.detail_type == ev.detail_type for m in p.on_events)]

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        return [p.name for p in self._alarm_matches(trigger, rt)]

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        if trigger.kind == "alarm":
            return self._alarm_intents(trigger, rt)
        if trigger.kind == "schedule" and trigger.schedule is not None:
            if trigger.schedule.operation == "evaluate":
                return [i for p in rt.config.scaling for i in self._evaluate(p, rt)]
            policy = rt.config.scaling_policy(trigger.schedule.policy or "")
            assert policy is not None
            start = trigger.schedule.scheduled_time or rt.clock.now()
            return [self._prewarm_intent(policy, str(trigger.schedule.params["prewarm"]), start, rt)]
        if request is None:
            return []
        listening = None
        if trigger.kind == "event" and trigger.event is not None:
            listening = {p.name for p in self._event_policies(trigger, rt)}
        return self._command_intents(request, rt, listening)

    def _alarm_intents(self, trigger: Trigger, rt: ReactionRuntime) -> list[Intent | Skip]:
        alarm = trigger.alarm
        assert alarm is not None
        out: list[Intent | Skip] = []
        for policy in self._alarm_matches(trigger, rt):
            key = policy.target.key
            if alarm.state == "INSUFFICIENT_DATA":
                out.append(Skip(reason="insufficient-data", policy=policy.name, target_key=key,
                                detail="missing data never scales in; waiting for OK or ALARM"))
            elif alarm.state == "OK":
                wait = policy.scale_in.when_ok_for_s if policy.scale_in else None
                out.append(Skip(reason="stabilizing", policy=policy.name, target_key=key,
                                detail=(f"scale-in only after OK for {wait}s (checked by the evaluator)"
                                        if wait else "policy has no scale-in")))
            else:
                out.append(self._scale_out_intent(policy, alarm.breach,
                                                  f"{alarm.name} {alarm.transition} ({alarm.kind}, "
                                                  f"breach {_fmt(alarm.breach)})"))
        return out

    def _command_intents(self, cmd: Any, rt: ReactionRuntime, listening: set[str] | None = None) -> list[
            Intent | Skip]:
        """`listening`: for an event, the policies whose on_events match it (the only ones it may act on)."""
        if isinstance(cmd, EvaluateCommand):
            policies = [p for p in rt.config.scaling if cmd.policy in ("*", p.name)
                        and (listening is None or p.name in listening)]
            return [i for p in policies for i in self._evaluate(p, rt, quiet=False)]
        policy = rt.config.scaling_policy(cmd.policy)
        assert policy is not None
        why = f"{cmd.command} requested: {cmd.reason}"
        override = bool(getattr(cmd, "override", False))
        if override:
            why += f" (OVERRIDE by operator {cmd.operator}: cooldowns and the in-ALARM scale-in rule waived)"
        if isinstance(cmd, ScaleOutCommand):
            intent: Intent | Skip = self._scale_out_intent(policy, None, why)
        elif isinstance(cmd, ScaleInCommand):
            intent = self._scale_in_intent(policy, why)
        elif isinstance(cmd, SetCapacityCommand):
            # Whoever asks, a change of capacity has a direction: the sign of the change, read now (and again
            # under the lock by the planner). It decides which cooldown applies and whether the scale-in rules do.
            current = capacity_target(rt.clients, policy).read().desired
            direction: Direction | None = ("out" if cmd.desired > current else "in" if cmd.desired < current
                                           else None)
            intent = Intent(policy=policy.name, target_key=policy.target.key, target=policy.target.model_dump(),
                            operation="set_capacity", direction=direction,
                            params={"desired": cmd.desired, "read_desired": current}, reason=why)
        else:
            intent = self._prewarm_intent(policy, cmd.prewarm, rt.clock.now(), rt)
        if isinstance(intent, Intent) and override:
            # The command's dry_run is applied by the pipeline to every intent (reflex_core/pipeline.py).
            intent = intent.model_copy(update={"params": {**intent.params, "override": cmd.operator}})
        return [intent]

    def _scale_out_intent(self, policy: ScalingPolicy, breach: float | None, reason: str) -> Intent:
        return Intent(policy=policy.name, target_key=policy.target.key, target=policy.target.model_dump(),
                      operation="scale_out", direction="out", params={"breach": breach}, reason=reason)

    def _scale_in_intent(self, policy: ScalingPolicy, reason: str) -> Intent | Skip:
        if policy.scale_in is None:
            return Skip(reason="no-scale-in", policy=policy.name, target_key=policy.target.key,
                        detail="policy has no scale_in section")
        return Intent(policy=policy.name, target_key=policy.target.key, target=policy.target.model_dump(),
                      operation="scale_in", direction="in", params={"step": policy.scale_in.step}, reason=reason)

    def _prewarm_intent(self, policy: ScalingPolicy, name: str, start: datetime, rt: ReactionRuntime) -> Intent | Skip:
        pw = next(p for p in policy.prewarm if p.name == name)
        until = start + timedelta(minutes=pw.for_minutes)
        if until <= rt.clock.now():
            # A schedule run delivered after its window ended (retries, a stalled queue) must not scale.
            return Skip(reason="prewarm-window-passed", policy=policy.name, target_key=policy.target.key,
                        detail=f"pre-warm {pw.name} window ended at {until.isoformat()}")
        return Intent(policy=policy.name, target_key=policy.target.key, target=policy.target.model_dump(),
                      operation="prewarm_start",
                      params={"prewarm": pw.name, "floor": min(pw.min, policy.bounds.max), "until": until.timestamp()},
                      reason=f"pre-warm {pw.name}: floor {pw.min} until {until.isoformat()}")

    def _evaluate(self, policy: ScalingPolicy, rt: ReactionRuntime, quiet: bool = True) -> list[Intent | Skip]:
        now = rt.clock.now()
        key = policy.target.key
        out: list[Intent | Skip] = []
        state = rt.store.prewarm(key)
        ended = state.expired(now.timestamp()) if state else []
        if ended:
            names = [w.name for w in ended]
            out.append(Intent(policy=policy.name, target_key=key, target=policy.target.model_dump(),
                              operation="prewarm_end", params={"prewarm": names},
                              reason=f"pre-warm {', '.join(names)} window ended"))
        out.extend(self._missed_prewarms(policy, state, rt))
        remembered = rt.store.alarms_for_policy(policy.name)
        decided = self._evaluate_alarms(policy, remembered, now, quiet)
        if isinstance(decided, Intent) and policy.scale_out is not None:
            # Remembered state alone never justifies an action: CloudWatch's actual state decides.
            uncertain: list[AlarmMemory] = []
            try:
                alarms = actual_alarms(rt.clients.cloudwatch, policy.scale_out.alarms,
                                       [a.name for a in remembered], self._alarm_tags, uncertain)
            except (ClientError, BotoCoreError) as err:
                decided = Skip(reason="alarm-state-unreadable", policy=policy.name, target_key=key,
                               detail=f"{_failed_call(err)}; no action on remembered state")
            else:
                decided = self._evaluate_alarms(policy, alarms, now, quiet, source="CloudWatch")
                unsure = [a.name for a in uncertain if a.state != "OK"]
                if isinstance(decided, Intent) and decided.direction == "in" and unsure:
                    decided = Skip(reason="alarm-state-unreadable", policy=policy.name, target_key=key, quiet=quiet,
                                   detail=f"tags of {', '.join(unsure)} (not OK) unreadable: they may be the "
                                          "policy's; no decrease unchecked")
        if decided is not None:
            out.append(decided)
        return out

    def _missed_prewarms(self, policy: ScalingPolicy, state: PrewarmState | None, rt: ReactionRuntime) -> list[
            Intent | Skip]:
        """The configured pre-warm windows in force now (by their cron, in their zone) that Reflex has not applied:
        a scheduled run refused by a held lock or an open breaker, retried out, or never delivered. The evaluator
        applies them as soon as it can; quiet, so that a refusal is retried next run without an audit record each
        minute (an applied floor is audited as usual). A dry-run stage or policy has nothing to catch up."""
        if rt.config.dry_run or policy.dry_run:
            return []
        now = rt.clock.now()
        out: list[Intent | Skip] = []
        for pw in policy.prewarm:
            start = CronExpression.parse(pw.cron).latest_start(now, pw.for_minutes, pw.timezone)
            if start is None:
                continue
            if (now - start).total_seconds() < PREWARM_CATCH_UP_GRACE_S:
                continue  # the scheduled run (or Lambda's first retry of it) is the one to apply it
            until = (start + timedelta(minutes=pw.for_minutes)).timestamp()
            applied = state.windows.get(pw.name) if state else None
            if applied is not None and applied.until >= until - 60:
                continue
            intent = self._prewarm_intent(policy, pw.name, start, rt)
            if isinstance(intent, Intent):
                out.append(intent.model_copy(update={
                    "quiet": True, "reason": intent.reason + " (catch-up: its scheduled run was not applied)"}))
        return out

    def _evaluate_alarms(self, policy: ScalingPolicy, alarms: list[AlarmMemory], now: datetime, quiet: bool,
                         source: str = "alarm memory") -> Intent | Skip | None:
        """What the alarms ask of the policy: a repeated scale-out, a scale-in, or a (quiet) wait that says why."""
        key = policy.target.key

        def wait(reason: str, detail: str) -> Skip:
            return Skip(reason=reason, policy=policy.name, target_key=key, detail=detail, quiet=quiet)

        in_alarm = [a for a in alarms if a.state == "ALARM"]
        if in_alarm and policy.scale_out and policy.scale_out.repeat_while_alarm:
            # The breach recorded at the transition is stale by now: repeat with the smallest step.
            names = ", ".join(a.name for a in in_alarm)
            where = " (per CloudWatch)" if source == "CloudWatch" else ""
            return self._scale_out_intent(policy, None, f"{names} still in ALARM{where}; smallest step")
        if policy.scale_in is None:
            return None
        if in_alarm:
            return wait("in-alarm", f"{', '.join(a.name for a in in_alarm)} in ALARM ({source}); never scales in")
        if not alarms:
            return wait("no-alarm-data", f"no alarm of the policy found ({source}); never scales in without data")
        if any(a.state != "OK" for a in alarms):
            return wait("insufficient-data", f"an alarm has INSUFFICIENT_DATA ({source}); never scales in on "
                                             "missing data")
        ok_for = now.timestamp() - max(a.changed_at for a in alarms)
        if ok_for < policy.scale_in.when_ok_for_s:
            remaining = policy.scale_in.when_ok_for_s - ok_for
            return wait("stabilizing", f"all alarms OK for {ok_for:.0f}s ({source}); scale-in possible in "
                                       f"{remaining:.0f}s (after {policy.scale_in.when_ok_for_s}s of OK)")
        where = " per CloudWatch" if source == "CloudWatch" else ""
        intent = self._scale_in_intent(policy, f"all alarms OK for {ok_for:.0f}s{where}")
        if isinstance(intent, Intent) and quiet:
            intent = intent.model_copy(update={"quiet": True})
        return intent

    def intent_scope(self, trigger: Trigger, intent: Intent) -> str | None:
        """Two pre-warm starts of one target in one evaluation (two missed windows) are two pieces of work."""
        if intent.operation == "prewarm_start":
            return f"{trigger.idempotency_key}#prewarm:{intent.params.get('prewarm')}"
        return None

    # ------------------------------------------------------------------ guard settings
    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        return {p.target.key for p in rt.config.scaling}

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        policy = self._policy(intent, rt)
        # Every command with a direction obeys the cooldowns (set_capacity too: its direction is the sign of
        # the change), except an operator's explicit console override, which is audited as such.
        waived = bool(intent.params.get("override"))
        return GuardSettings(
            out_cooldown_s=0 if waived or not policy.scale_out else policy.scale_out.cooldown_s,
            in_cooldown_s=0 if waived or not policy.scale_in else policy.scale_in.cooldown_s,
            max_actions_per_hour=policy.rate_limit.max_actions_per_hour,
            circuit_open_for_s=policy.rate_limit.open_for_s,
            dry_run=rt.config.dry_run or policy.dry_run,
        )

    @staticmethod
    def _policy(intent: Intent, rt: ReactionRuntime) -> ScalingPolicy:
        policy = rt.config.scaling_policy(intent.policy)
        if policy is None or policy.target.key != intent.target_key:
            raise LookupError(f"policy {intent.policy} does not own {intent.target_key}")
        return policy

    # ------------------------------------------------------------------ plan / execute / verify
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        policy = self._policy(intent, rt)
        target = capacity_target(rt.clients, policy)
        cap = target.read()
        before = cap.as_dict()
        bounds = policy.bounds
        now = rt.clock.now().timestamp()
        state = rt.store.prewarm(policy.target.key)
        # The floor in force: the recorded windows, and every configured window whose cron says it runs now
        # (its scheduled run may not have arrived yet: the end of one hourly window must not let a scale-in
        # through before the next one's run lands).
        active_floor = max(state.floor_at(now) if state else 0, _cron_floor(policy, rt.clock.now()))
        floor = max(bounds.min, active_floor, cap.floor or 0)
        # The highest capacity Reflex may set: its bounds, and the platform's own ceiling (ASG MaxSize, Application
        # Auto Scaling MaxCapacity), which belongs to whoever set it: Reflex never raises it.
        top = bounds.max if cap.ceiling is None else min(bounds.max, cap.ceiling)

        def skip(reason: str, detail: str) -> Skip:
            return Skip(reason=reason, detail=detail, policy=policy.name, target_key=policy.target.key,
                        before=before, quiet=intent.quiet)

        intended: dict[str, Any]
        note = ""  # said in the audit record: a cap by someone else's ceiling, a change left in place
        if intent.operation == "scale_out":
            assert policy.scale_out is not None or intent.params.get("breach") is None
            steps = policy.scale_out.steps if policy.scale_out else _one_step()
            new = scale_out_target(cap.desired, intent.params.get("breach"), steps, bounds, cap.ceiling)
            new = max(new, min(floor, top))
            if new <= cap.desired:
                if cap.ceiling is not None and cap.ceiling < bounds.max and cap.desired >= cap.ceiling:
                    return skip("at-ceiling", f"desired {cap.desired} is at the platform ceiling "
                                              f"{cap.ceiling} set outside Reflex (bounds.max {bounds.max}); "
                                              "Reflex never raises it")
                return skip("at-max", f"desired {cap.desired} is already at the maximum {bounds.max}")
            intended = {"desired": new}
        elif intent.operation == "scale_in":
            new = scale_in_target(cap.desired, int(intent.params["step"]), bounds, floor)
            if new >= cap.desired:
                return skip("at-min", f"desired {cap.desired} is at the floor {floor}")
            refused = self._decrease_refused(policy, intent, rt)
            if refused:
                return skip(*refused)
            intended = {"desired": new}
        elif intent.operation == "set_capacity":
            new = int(intent.params["desired"])
            if not bounds.min <= new <= bounds.max:
                return skip("out-of-bounds", f"desired {new} is outside bounds [{bounds.min}, {bounds.max}]")
            if new > top:
                capped = _ceiling_note(new, top, cap)
                note = f" (capped: {capped})"
                new = top
                if new <= cap.desired:
                    return skip("at-ceiling", f"desired {cap.desired} is already at the platform ceiling: {capped}")
            if new < floor:
                return skip("below-floor", f"desired {new} is below the active floor {floor}")
            # A target that drifted outside its bounds (changed by hand, a lowered max) may be brought back
            # inside in one step: only the part of the change within the bounds counts against max_step.
            inside = min(max(cap.desired, bounds.min), bounds.max)
            if counted_change(cap.desired, new, bounds) > bounds.max_step:
                drift = f" (from {inside}, the nearest bound)" if inside != cap.desired else ""
                return skip("step-too-large", f"change {cap.desired}->{new} exceeds max_step {bounds.max_step}"
                                              + drift)
            if new == cap.desired:
                return skip("no-change", f"desired is already {new}")
            direction = "out" if new > cap.desired else "in"
            if direction != intent.direction:
                # The cooldown was checked for the direction read before the lock: refuse, never guess.
                return skip("capacity-changed", f"desired changed from {intent.params.get('read_desired')} to "
                                                f"{cap.desired} while the request was checked; send it again")
            if direction == "in":
                refused = self._decrease_refused(policy, intent, rt)
                if refused:
                    return skip(*refused)
            intended = {"desired": new}
        elif intent.operation == "prewarm_start":
            name, until = str(intent.params["prewarm"]), float(intent.params["until"])
            # Windows overlap: the floor in force is the highest of the active ones, this one included.
            needed = max(int(intent.params["floor"]), active_floor)
            held = state.windows.get(name) if state else None
            if held is not None and held.until >= until and cap.desired >= min(needed, top) and (
                    not target.supports_floor or (cap.floor or 0) >= min(needed, top)):
                return skip("prewarm-in-force", f"pre-warm {name} is already applied until "
                                                f"{datetime.fromtimestamp(held.until, tz=UTC).isoformat()}")
            pw_floor = min(needed, top)
            intended = {"desired": max(cap.desired, pw_floor)}
            if target.supports_floor:
                intended["floor"] = max(cap.floor or 0, pw_floor)
            if needed > top:
                note = f" (capped: {_ceiling_note(needed, top, cap)})"
        elif intent.operation == "prewarm_end":
            intended = {}
            names = intent.params["prewarm"]
            names = [names] if isinstance(names, str) else list(names)
            ending = [w.name for w in state.expired(now)] if state else []
            if not ending:
                return skip("prewarm-ended", f"pre-warm {', '.join(names)} already ended")
            # The bookkeeping removes exactly these windows, whenever it runs (a retry may complete it later).
            params = {**intent.params, "ended": ending}
            if target.supports_floor and state is not None and state.set_min is not None:
                restore = max(state.original_min or 0, active_floor)
                if cap.ceiling is not None:
                    restore = min(restore, cap.ceiling)  # never MinSize above a MaxSize set by someone else
                if cap.floor == restore:
                    # Already what it should be: an earlier attempt restored it and lost its bookkeeping. It is
                    # the value Reflex set.
                    params["set_min"] = restore
                elif not state.reflex_set(cap.floor):
                    params["outside_change"] = True
                    note = (f"; MinSize is {cap.floor}, not the {state.set_min} Reflex set: changed outside Reflex, "
                            f"left in place")
                else:
                    intended["floor"] = restore
                    if active_floor:
                        note = f"; floor {min(active_floor, restore)} kept for the pre-warm still active"
            elif active_floor:
                note = f"; floor {active_floor} kept for the pre-warm still active"
            return Action(policy=policy.name, target_key=policy.target.key, target=intent.target,
                          operation=intent.operation, direction=intent.direction, params=params,
                          before=before, intended=intended, reason=intent.reason + note)
        else:
            raise ValueError(f"unknown operation {intent.operation}")
        return Action(policy=policy.name, target_key=policy.target.key, target=intent.target,
                      operation=intent.operation, direction=intent.direction, params=intent.params,
                      before=before, intended=intended, reason=intent.reason + note)

    def _decrease_refused(self, policy: ScalingPolicy, intent: Intent, rt: ReactionRuntime) -> tuple[str, str] | None:
        """Why a decrease of the policy's target is refused now, whatever command asks for it, or None.

        * A promotion's scale-in freeze forbids every decrease (an operator's override included): the colour
          traffic moves away from stays at full size until the promotion can no longer be rolled back.
        * No decrease while one of the policy's alarms is in ALARM, per CloudWatch (not per alarm memory),
          unless an operator's console command overrides explicitly.
        """
        frozen = rt.store.active_scale_in_freeze(policy.name, rt.clock.now())
        if frozen is not None:
            holder, until = frozen
            return "frozen", (f"scale-in frozen by promotion {holder} until "
                              f"{datetime.fromtimestamp(until, tz=UTC).isoformat()}: no decrease of "
                              f"{policy.target.key}, whatever the command")
        if intent.params.get("override") or policy.scale_out is None:
            return None
        uncertain: list[AlarmMemory] = []
        try:
            alarms = actual_alarms(rt.clients.cloudwatch, policy.scale_out.alarms,
                                   [a.name for a in rt.store.alarms_for_policy(policy.name)], self._alarm_tags,
                                   uncertain)
        except (ClientError, BotoCoreError) as err:
            return "alarm-state-unreadable", f"{_failed_call(err)}; no decrease unchecked"
        unsure = [a.name for a in uncertain if a.state == "ALARM"]
        if unsure:
            return "alarm-state-unreadable", (f"tags of {', '.join(unsure)} (in ALARM) unreadable: they may be the "
                                              "policy's; no decrease unchecked")
        breaching = [a.name for a in alarms if a.state == "ALARM"]
        if breaching:
            return "in-alarm", (f"{', '.join(breaching)} in ALARM (CloudWatch): no decrease while an alarm of the "
                                "policy is in ALARM (an operator may override explicitly)")
        return None

    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        policy = self._policy_for_action(action, rt)
        target = capacity_target(rt.clients, policy)
        floor = action.intended.get("floor")
        if floor is not None and floor != action.before.get("floor"):
            if floor > action.before.get("desired", 0) and "desired" in action.intended:
                target.set_desired(action.intended["desired"])  # raise desired first: MinSize <= Desired
                target.set_floor(floor)
                return
            target.set_floor(floor)
        desired = action.intended.get("desired")
        if desired is not None and desired != action.before.get("desired"):
            target.set_desired(desired)

    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        """Record the windows (under the target's lock, like every action on it)."""
        now = rt.clock.now().timestamp()
        if action.operation == "prewarm_start":
            state = rt.store.prewarm(action.target_key) or PrewarmState(windows={})
            name, until = str(action.params["prewarm"]), float(action.params["until"])
            held = state.windows.get(name)
            state.windows[name] = PrewarmWindow(name=name, floor=int(action.params["floor"]),
                                                until=max(until, held.until if held else 0.0))
            before_floor = action.before.get("floor")
            if state.set_min is not None and not state.reflex_set(before_floor):
                # Changed outside Reflex since Reflex set it: that value is what a window's end goes back to.
                state.original_min, state.set_min, state.legacy = before_floor, None, False
            floor = action.intended.get("floor")
            if floor is not None and floor != before_floor:
                if state.set_min is None or state.original_min is None:
                    state.original_min = before_floor
                state.set_min, state.legacy = int(floor), False
            rt.store.save_prewarm(action.target_key, state)
        elif action.operation == "prewarm_end":
            found = rt.store.prewarm(action.target_key)
            if found is None:
                return
            ended = action.params.get("ended")
            for name in (ended if isinstance(ended, list) else [w.name for w in found.expired(now)]):
                found.windows.pop(str(name), None)
            floor = action.intended.get("floor", action.params.get("set_min"))
            if floor is not None:
                found.set_min, found.legacy = int(floor), False
            elif action.params.get("outside_change"):
                found.set_min = None  # changed outside Reflex: no longer Reflex's to restore
            if found.windows:
                rt.store.save_prewarm(action.target_key, found)
            else:
                rt.store.clear_prewarm(action.target_key)

    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        return capacity_target(rt.clients, self._policy_for_action(action, rt)).read().as_dict()

    def _policy_for_action(self, action: Action, rt: ReactionRuntime) -> ScalingPolicy:
        policy = rt.config.scaling_policy(action.policy)
        if policy is None or policy.target.key != action.target_key:
            raise LookupError(f"policy {action.policy} does not own {action.target_key}")
        return policy


def _cron_floor(policy: ScalingPolicy, now: datetime) -> int:
    """The highest floor of the policy's pre-warm windows that their cron puts in force at `now`."""
    floors = [pw.min for pw in policy.prewarm
              if CronExpression.parse(pw.cron).latest_start(now, pw.for_minutes, pw.timezone) is not None]
    return min(max(floors, default=0), policy.bounds.max)


def _ceiling_note(wanted: int, top: int, cap: Any) -> str:
    whose = (f"the platform ceiling {cap.ceiling} set outside Reflex" if cap.ceiling is not None and top == cap.ceiling
             else f"bounds.max {top}")
    return f"{wanted} wanted, {top} set: {whose} is never raised by Reflex"


def _one_step() -> list[Any]:
    from reflex_core.scaling_config import StepAdjustment

    return [StepAdjustment(breach_from=0.0, add_percent=25)]


def _failed_call(err: Exception) -> str:
    """`<API> failed (<code>)`, naming the call that failed (DescribeAlarms, ListTagsForResource)."""
    operation = getattr(err, "operation_name", None) or "reading the alarms"
    return f"{operation} failed ({_error_code(err)})"


def _error_code(err: Exception) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code") or type(err).__name__)
    return type(err).__name__


def _fmt(breach: float | None) -> str:
    return "unknown" if breach is None else f"{breach:.0%}"
