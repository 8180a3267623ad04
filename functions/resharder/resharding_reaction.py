"""The resharding reaction: which replication group a trigger concerns, and how its shards change.

* Alarm into ALARM (memory, CPU)  -> add shards (`add_shards.step`, within bounds and max_step).
* Alarm OK / INSUFFICIENT_DATA    -> nothing now; the periodic check removes shards once OK has lasted.
* Schedule `evaluate`             -> per policy: add again while an alarm stays in ALARM (after the cooldown);
                                     remove shards once every alarm is OK long enough (if configured);
                                     rebalance slots spread unevenly (if `rebalance_slots`).
* Console / custom event          -> add_shards, remove_shards, rebalance, status (same guardrails).

ElastiCache refuses a second change while the group is `modifying` (InvalidReplicationGroupState): the plan reads
the group under the lock and skips (`skipped:busy`) until it is `available` again. Removing shards is never done
while an alarm of the policy is in ALARM, whoever asks: neither CloudWatch (read at the plan, and again right
before the call) nor Reflex's alarm memory may say ALARM. A repeated addition acts only when CloudWatch confirms
an alarm of the policy is still in ALARM (remembered state alone never justifies an action).

Reflex's own change is told from anyone else's by a marker written right before the call (`resharder#sent#<target>`,
the action's `change_id`): a change that landed but whose answer was lost, or whose bookkeeping failed, is
completed by the retry as `executed` (its cooldown recorded); a resharding Reflex did not send is never audited as
Reflex's (`skipped:busy`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from reflex_core.actions import Action, Intent, Skip
from reflex_core.alarm_states import actual_alarms
from reflex_core.alarm_tags import AlarmTagReader
from reflex_core.pipeline import GuardSettings, Reconciled, Superseded
from reflex_core.resharding_config import MAX_NODE_GROUPS, ReshardingPolicy, ReshardingStageConfig
from reflex_core.runtime import Runtime
from reflex_core.state_store import AlarmMemory
from reflex_core.triggers import Trigger, TriggerError
from resharder.replication_groups import ReplicationGroups, ReplicationGroupState
from resharder.shard_sizing import add_target, groups_to_remove, remove_target

ReactionRuntime = Runtime[ReshardingStageConfig]

# --------------------------------------------------------------------------- console / event commands


class _Command(BaseModel):
    # strict: a boolean is not a count and a string is neither (`"count": true` would add a shard), and
    # `"dry_run": "no"` is not false.
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True, strict=True)

    policy: str = Field(min_length=1)
    reason: str = Field(min_length=3, max_length=500)
    operator: str | None = Field(default=None, min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


class AddShardsCommand(_Command):
    command: Literal["add_shards"]
    # How many shards to add; the policy's step when absent. More than max_step is refused, not clipped.
    count: int | None = Field(default=None, ge=1, le=MAX_NODE_GROUPS)


class RemoveShardsCommand(_Command):
    command: Literal["remove_shards"]
    count: int | None = Field(default=None, ge=1, le=MAX_NODE_GROUPS)


class RebalanceCommand(_Command):
    command: Literal["rebalance"]


class StatusCommand(_Command):
    command: Literal["status"]
    reason: str = Field(default="status requested", min_length=3, max_length=500)


ResharderCommand = Annotated[
    AddShardsCommand | RemoveShardsCommand | RebalanceCommand | StatusCommand, Field(discriminator="command")
]
COMMANDS: TypeAdapter[Any] = TypeAdapter(ResharderCommand, config=ConfigDict(defer_build=True))
COMMAND_NAMES = ("add_shards", "remove_shards", "rebalance", "status")


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
        errors = [e | {"loc": e["loc"][1:] if e["loc"][:1] == (command,) else e["loc"]} for e in err.errors()]
        raise TriggerError([f"{prefix}{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}"
                            for e in errors]) from None
    if require_operator and not cmd.operator:
        raise TriggerError([f"{prefix}operator: required for console commands (who is acting)"])
    return cmd


# --------------------------------------------------------------------------- the reaction


class ReshardingReaction:
    name = "resharder"
    config_model = ReshardingStageConfig

    def __init__(self) -> None:
        self._alarm_tags = AlarmTagReader()

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> Any:
        if trigger.kind == "console":
            cmd = _validate_command(trigger.payload, "", require_operator=True)
            self._known_policy(cmd.policy, rt, "policy")
            return cmd
        if trigger.kind == "event" and trigger.event is not None:
            policies = self._event_policies(trigger, rt)
            if policies:
                cmd = _validate_command(trigger.event.detail, "detail.", require_operator=False)
                self._known_policy(cmd.policy, rt, "detail.policy")
                if cmd.policy not in {p.name for p in policies}:
                    # An event source speaks only for the policies that list it in their own `on_events`.
                    ev = trigger.event
                    raise TriggerError([f"detail.policy: policy {cmd.policy!r} does not take {ev.source} "
                                        f"{ev.detail_type!r} events (its on_events); they may address "
                                        f"{', '.join(sorted(p.name for p in policies))}"])
                return cmd
            return None
        if trigger.kind == "schedule" and trigger.schedule is not None and trigger.schedule.operation != "evaluate":
            raise TriggerError([f"reflex_schedule.operation: unknown operation {trigger.schedule.operation!r} "
                                "(evaluate)"])
        return None

    @staticmethod
    def _known_policy(name: str, rt: ReactionRuntime, field: str) -> None:
        if rt.config.resharding_policy(name) is None:
            known = ", ".join(p.name for p in rt.config.resharding) or "none"
            raise TriggerError([f"{field}: no resharding policy named {name!r} (configured: {known})"])

    # ------------------------------------------------------------------ matching
    def _alarm_matches(self, trigger: Trigger, rt: ReactionRuntime) -> list[ReshardingPolicy]:
        alarm = trigger.alarm
        assert alarm is not None
        matched = []
        for policy in rt.config.resharding:
            if policy.add_shards is None:
                continue
            rule = policy.add_shards.alarms
            tags = None
            if rule.tags and not rule.matches(alarm.name, None):
                tags = self._alarm_tags.tags(rt.clients.cloudwatch, alarm.arn)
            if rule.matches(alarm.name, tags):
                matched.append(policy)
        return matched

    def _event_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[ReshardingPolicy]:
        ev = trigger.event
        assert ev is not None
        return [p for p in rt.config.resharding
                if any(m.source == ev.source and m.detail_type == ev.detail_type for m in p.on_events)]

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        return [p.alarm_scope for p in self._alarm_matches(trigger, rt)]

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        if trigger.kind == "alarm":
            return self._alarm_intents(trigger, rt)
        if trigger.kind == "schedule":
            return [i for p in rt.config.resharding for i in self._evaluate(p, rt)]
        if request is None:
            return []
        return [self._command_intent(request, rt)]

    def _alarm_intents(self, trigger: Trigger, rt: ReactionRuntime) -> list[Intent | Skip]:
        alarm = trigger.alarm
        assert alarm is not None
        out: list[Intent | Skip] = []
        for policy in self._alarm_matches(trigger, rt):
            if alarm.state == "INSUFFICIENT_DATA":
                out.append(Skip(reason="insufficient-data", policy=policy.name, target_key=policy.key,
                                detail="missing data never removes shards; waiting for OK or ALARM"))
            elif alarm.state == "OK":
                wait = policy.remove_shards.when_ok_for_s if policy.remove_shards else None
                out.append(Skip(reason="stabilizing", policy=policy.name, target_key=policy.key,
                                detail=(f"shards are removed only after OK for {wait}s (checked periodically)"
                                        if wait else "policy never removes shards")))
            else:
                out.append(self._intent(policy, "add_shards", f"{alarm.name} {alarm.transition}", direction="out"))
        return out

    def _command_intent(self, cmd: Any, rt: ReactionRuntime) -> Intent | Skip:
        policy = rt.config.resharding_policy(cmd.policy)
        assert policy is not None
        why = f"{cmd.command} requested: {cmd.reason}"
        if isinstance(cmd, StatusCommand):
            state = self._groups(rt).read(policy.replication_group)
            return Skip(reason="status", policy=policy.name, target_key=policy.key,
                        before=state.detail(policy.slot_tolerance), detail=_summary(state))
        if isinstance(cmd, AddShardsCommand):
            intent = self._intent(policy, "add_shards", why, direction="out", count=cmd.count)
        elif isinstance(cmd, RemoveShardsCommand):
            intent = self._intent(policy, "remove_shards", why, direction="in", count=cmd.count)
        else:
            intent = self._intent(policy, "rebalance", why)
        return intent.model_copy(update={"dry_run": True}) if cmd.dry_run else intent

    @staticmethod
    def _intent(policy: ReshardingPolicy, operation: str, reason: str, *, direction: Literal["out", "in"] | None = None,
                count: int | None = None, quiet: bool = False) -> Intent:
        return Intent(policy=policy.name, target_key=policy.key,
                      target={"replication_group": policy.replication_group}, operation=operation,
                      direction=direction, params={"count": count} if count is not None else {},
                      reason=reason, quiet=quiet)

    def _alarms_now(self, policy: ReshardingPolicy, rt: ReactionRuntime, remembered: list[AlarmMemory]
                    ) -> tuple[list[AlarmMemory], list[str]]:
        """The policy's alarms as CloudWatch has them now (those remembered, named, prefix- or tag-matched; deleted
        ones drop out), and the names of alarms not OK whose tags could not be read (they may be the policy's).
        Raises ClientError / BotoCoreError when CloudWatch cannot be read."""
        if policy.add_shards is None:
            return remembered, []
        uncertain: list[AlarmMemory] = []
        alarms = actual_alarms(rt.clients.cloudwatch, policy.add_shards.alarms, [a.name for a in remembered],
                               self._alarm_tags, uncertain)
        return alarms, [a.name for a in uncertain if a.state != "OK"]

    def _removal_blocked(self, policy: ReshardingPolicy, rt: ReactionRuntime) -> tuple[str, str] | None:
        """(reason, detail) when shards must not be removed now: an alarm of the policy in ALARM in CloudWatch or
        in Reflex's memory (either is enough: removing is the risky direction), or CloudWatch unreadable."""
        remembered = rt.store.alarms_for_policy(policy.alarm_scope)
        try:
            alarms, unsure = self._alarms_now(policy, rt, remembered)
        except (ClientError, BotoCoreError) as err:
            return "alarm-state-unreadable", f"{_error_code(err)} reading the alarms; no removal unchecked"
        active = sorted({a.name for a in [*alarms, *remembered]
                         if a.state == "ALARM"})
        if active:
            return "alarm-active", f"never removes shards while {', '.join(active)} is in ALARM"
        if unsure:
            return "alarm-state-unreadable", (f"tags of {', '.join(unsure)} (not OK) unreadable: they may be the "
                                              "policy's; no removal unchecked")
        return None

    def _evaluate(self, policy: ReshardingPolicy, rt: ReactionRuntime) -> list[Intent | Skip]:
        remembered = rt.store.alarms_for_policy(policy.alarm_scope)
        try:
            alarms, unsure = self._alarms_now(policy, rt, remembered)
        except (ClientError, BotoCoreError) as err:
            # Remembered state alone never justifies an action: nothing but the slot check until CloudWatch answers.
            skip = Skip(reason="alarm-state-unreadable", policy=policy.name, target_key=policy.key, quiet=True,
                        detail=f"{_error_code(err)} reading the alarms; no addition or removal on remembered state")
            return [skip] + ([self._intent(policy, "rebalance", "periodic slot balance check", quiet=True)]
                             if policy.rebalance_slots else [])
        in_alarm = [a for a in alarms if a.state == "ALARM"]
        seen_in_alarm = {a.name for a in remembered if a.state == "ALARM"}
        if (seen_in_alarm and in_alarm and policy.add_shards and policy.add_shards.repeat_while_alarm):
            # Like the scaler: Reflex saw the alarm go into ALARM, and CloudWatch confirms one is still there.
            names = ", ".join(a.name for a in in_alarm)
            return [self._intent(policy, "add_shards", f"{names} still in ALARM (CloudWatch)", direction="out")]
        if in_alarm or seen_in_alarm:
            return []  # no removal and no slot migration while the cluster is in ALARM
        if (policy.remove_shards is not None and alarms and not unsure and all(a.state == "OK" for a in alarms)):
            ok_for = rt.clock.now().timestamp() - max(a.changed_at for a in [*alarms, *remembered])
            if ok_for >= policy.remove_shards.when_ok_for_s:
                return [self._intent(policy, "remove_shards", f"all alarms OK for {ok_for:.0f}s", direction="in",
                                     quiet=True)]
        if policy.rebalance_slots:
            return [self._intent(policy, "rebalance", "periodic slot balance check", quiet=True)]
        return []

    # ------------------------------------------------------------------ guard settings
    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        return {p.key for p in rt.config.resharding}

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        policy = self._policy(intent.policy, intent.target_key, rt)
        out_cooldown_s = policy.add_shards.cooldown_s if policy.add_shards else 0
        in_cooldown_s = policy.remove_shards.cooldown_s if policy.remove_shards else 0
        return GuardSettings(
            out_cooldown_s=out_cooldown_s,
            in_cooldown_s=in_cooldown_s,
            # A removal also waits for the last addition's own cooldown (docs/runbooks/resharding.md).
            in_after_out_cooldown_s=max(in_cooldown_s, out_cooldown_s),
            max_actions_per_hour=policy.rate_limit.max_actions_per_hour,
            circuit_open_for_s=policy.rate_limit.open_for_s,
            dry_run=rt.config.dry_run or policy.dry_run,
        )

    @staticmethod
    def _policy(name: str, key: str, rt: ReactionRuntime) -> ReshardingPolicy:
        policy = rt.config.resharding_policy(name)
        if policy is None or policy.key != key:
            raise LookupError(f"policy {name} does not own {key}")
        return policy

    @staticmethod
    def _groups(rt: ReactionRuntime) -> ReplicationGroups:
        return ReplicationGroups(rt.clients.elasticache)

    # ------------------------------------------------------------------ plan / execute / verify
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        policy = self._policy(intent.policy, intent.target_key, rt)
        state = self._groups(rt).read(policy.replication_group)
        tolerance = policy.slot_tolerance
        before = state.detail(tolerance)
        bounds = policy.bounds
        current = state.node_group_count

        def skip(reason: str, detail: str) -> Skip:
            return Skip(reason=reason, detail=detail, policy=policy.name, target_key=policy.key, before=before,
                        quiet=intent.quiet)

        if state.unreadable and state.cluster_enabled:
            # No shard count or slot ranges in the answer: 0 shards or 0 slots would be a guess, not a reading.
            return skip("state-unreadable", f"{policy.replication_group}: {state.unreadable}; nothing planned on it")
        if not state.cluster_enabled:
            return skip("not-cluster-mode", f"{policy.replication_group} has cluster mode disabled: it has no shards")
        if state.status != "available" or state.resharding:
            return skip("busy", f"{policy.replication_group} is {state.status}"
                        + (f" (resharding {state.resharding_progress:.0f} %)" if state.resharding else "")
                        + "; ElastiCache accepts one change at a time")
        count = intent.params.get("count")
        params: dict[str, Any] = {}
        if intent.operation == "add_shards":
            if count is not None and count > bounds.max_step:
                return skip("step-too-large", f"adding {count} shards exceeds max_step {bounds.max_step}")
            step = count if count is not None else (policy.add_shards.step if policy.add_shards else 1)
            if count is not None and current + count > bounds.max:
                return skip("out-of-bounds", f"{current} + {count} shards exceeds the maximum {bounds.max}")
            target = add_target(current, step, bounds)
            if target <= current:
                return skip("at-max", f"{current} shards is already the maximum {bounds.max}")
            params = {"node_group_count": target}
        elif intent.operation == "remove_shards":
            blocked = self._removal_blocked(policy, rt)
            if blocked:
                return skip(*blocked)
            if count is not None and count > bounds.max_step:
                return skip("step-too-large", f"removing {count} shards exceeds max_step {bounds.max_step}")
            if count is not None and current - count < bounds.min:
                return skip("out-of-bounds", f"{current} - {count} shards is below the minimum {bounds.min}")
            step = count if count is not None else (policy.remove_shards.step if policy.remove_shards else 1)
            target = remove_target(current, step, bounds)
            if target >= current:
                return skip("at-min", f"{current} shards is already the minimum {bounds.min}")
            params = {"node_group_count": target, "node_groups_to_remove": groups_to_remove(state.node_groups, target)}
        elif intent.operation == "rebalance":
            if state.slots_balanced(tolerance):
                return skip("balanced", f"slots are spread evenly over {current} shards (within {tolerance:.0%})")
            target = current
            params = {"node_group_count": current}
        else:
            raise ValueError(f"unknown operation {intent.operation}")
        intended = {"node_group_count": target, "status": "available", "slots_balanced": True}
        # `change_id` tells this change from anyone else's: it is written to the marker right before the call.
        params["change_id"] = uuid.uuid4().hex
        return Action(policy=policy.name, target_key=policy.key, target=intent.target, operation=intent.operation,
                      direction=intent.direction, params=intent.params | params, before=before, intended=intended,
                      reason=intent.reason)

    # ------------------------------------------------------------------ Reflex's own change: the marker
    @staticmethod
    def _marker_pk(action: Action) -> str:
        return f"resharder#sent#{action.target_key}"

    def _ours(self, action: Action, rt: ReactionRuntime) -> bool:
        """Whether Reflex sent this very action's call (its marker carries the action's change_id)."""
        change = action.params.get("change_id")
        doc = rt.store.get_doc(self._marker_pk(action))
        return change is not None and doc is not None and doc.get("change_id") == change

    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        """One ModifyReplicationGroupShardConfiguration; a retry after a lost response does not send a second one,
        a change someone else started is not taken for this one, and a removal re-checks the alarms first (a
        retried removal does not plan again)."""
        policy = self._policy(action.policy, action.target_key, rt)
        groups = self._groups(rt)
        state = groups.read(policy.replication_group)
        target = int(action.params["node_group_count"])
        ours = self._ours(action, rt)
        if state.status != "available" or state.resharding:
            if ours and (state.resharding or state.status == "modifying"):
                return  # this action's call went through: ElastiCache is carrying it out
            raise Superseded("busy", f"{policy.replication_group} is {state.status}"
                             + (f" (resharding {state.resharding_progress:.0f} %)" if state.resharding else "")
                             + ": a change Reflex did not send for this action is under way; nothing sent")
        if action.operation != "rebalance" and state.node_group_count == target:
            if ours:
                return  # applied by this action's call
            raise Superseded("already-there", f"{policy.replication_group} already has {target} shards (changed "
                             "since the plan, not by this action); nothing sent")
        if action.operation == "remove_shards":
            blocked = self._removal_blocked(policy, rt)
            if blocked:
                raise Superseded(blocked[0], f"{blocked[1]} (checked again right before the call); nothing sent")
        now = rt.clock.now().timestamp()
        rt.store.put_doc(self._marker_pk(action), {"change_id": action.params.get("change_id"), "sent_at": now,
                                                    "operation": action.operation, "node_group_count": target},
                         now + 30 * 86400)
        groups.modify_shards(policy.replication_group, target, action.params.get("node_groups_to_remove"))

    def reconcile(self, action: Action, rt: ReactionRuntime) -> Reconciled:
        """Whether an interrupted attempt's call landed. This action's marker and the group resharding (or showing
        the intended state) -> applied; the group as it was before -> not applied (no marker: nothing was sent;
        the marker: the call was refused or failed; the retry re-checks and sends again); anything else, the
        intended state included when this action's marker is missing (someone else's change) -> unknown, never
        audited as Reflex's."""
        policy = self._policy(action.policy, action.target_key, rt)
        state = self._groups(rt).read(policy.replication_group)
        ours = self._ours(action, rt)
        if ours and (state.resharding or state.status == "modifying"):
            return "applied"
        shows = state.as_dict(policy.slot_tolerance)
        if all(shows.get(k) == v for k, v in action.intended.items()) and ours:
            return "applied"
        if (state.status == "available" and not state.resharding
                and state.node_group_count == action.before.get("node_group_count")):
            return "not-applied"
        return "unknown"

    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        return None

    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        """The group's state with the keys of `intended`: `status` is `modifying` while ElastiCache reshards."""
        policy = self._policy(action.policy, action.target_key, rt)
        return self._groups(rt).read(policy.replication_group).as_dict(policy.slot_tolerance)


def _error_code(err: Exception) -> str:
    if isinstance(err, ClientError):
        return str(err.response.get("Error", {}).get("Code") or type(err).__name__)
    return type(err).__name__


def _summary(state: ReplicationGroupState) -> str:
    slots = ", ".join(f"{g.node_group_id}={g.slots}" for g in state.node_groups)
    progress = f", resharding {state.resharding_progress:.0f} %" if state.resharding else ""
    return f"{state.replication_group_id}: {state.status}, {state.node_group_count} shards ({slots}){progress}"
