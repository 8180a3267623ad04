"""The shard reaction: PostgreSQL shard rebalancing on the shared pipeline.

Triggers and what they ask for (every one passes the same guardrails and leaves an audit record; the lock
is the shard set's, so one set is planned or stepped by one invocation at a time):

* A CloudWatch alarm entering ALARM on a shard database (the set's `alarms` or a shard's) -> `rebalance`.
* The schedule (`balance_check`, every `balance_check_every_minutes`) -> `rebalance`, quiet when balanced.
* The ShardAdded event (detail {set, shard}) -> `add_shard`: the shard takes its weighted share.
* Console: plan (always a dry run: the plan is the decision's `intended`), rebalance, drain, add_shard,
  move (named buckets), pause, resume, abort, status.
* The move workflow's steps (`reflex_step`, step `advance`) -> one idempotent mover step.

Planning uses `shards.planner` (plan_rebalance / plan_drain), imported when a plan is needed. Moves start
within each shard's `max_concurrent_moves`; the rest wait for the next balance check. Each started move
gets its own workflow execution, named after the move (a redelivered start starts nothing new).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from reflex_core.actions import Action, Direction, Intent, Skip
from reflex_core.alarm_tags import AlarmTagReader
from reflex_core.observability import logger
from reflex_core.pipeline import GuardSettings
from reflex_core.runtime import Runtime
from reflex_core.sharding_config import ShardingStageConfig, ShardSet
from reflex_core.state_store import AlarmMemory
from reflex_core.step_results import check_step
from reflex_core.triggers import AlarmInfo, Trigger, TriggerError
from shards import pg
from shards import workflow_definition as wf
from shards.buckets import ranges
from shards.mover import Mover, MoveRefused, StepResult
from shards.shard_commands import (
    MoveState,
    ShardAddedDetail,
    ShardCommand,
    validate_command,
    validate_move_state,
    validate_shard_added,
)
from shards.shard_map import MAP_ITEM_BUDGET, MoveRecord, ShardMap, ShardMapStore

ReactionRuntime = Runtime[ShardingStageConfig]
SAFETY = frozenset({"abort", "pause", "resume", "advance", "status"})
STEP_BUDGET_S = 60.0


def _key(sset: ShardSet) -> str:
    return f"shardset/{sset.name}"


class ShardReaction:
    name = "shards"
    config_model = ShardingStageConfig
    # Starting a move (named after the trigger), a mover step, pause/resume/abort: running one twice is harmless,
    # so a retry that cannot tell whether it was applied runs it again.
    idempotent_execute = True

    def __init__(self, connect: pg.Connect | None = None, step_budget_s: float = STEP_BUDGET_S) -> None:
        self._connect = connect
        self._budget = step_budget_s
        self._results: dict[str, StepResult] = {}
        self._alarm_tags = AlarmTagReader()

    # ------------------------------------------------------------------ helpers
    def _sets(self, rt: ReactionRuntime) -> list[ShardSet]:
        return rt.config.sharding.sets if rt.config.sharding else []

    def _set(self, rt: ReactionRuntime, name: str) -> ShardSet:
        found = next((s for s in self._sets(rt) if s.name == name), None)
        assert found is not None, name
        return found

    def mover(self, sset: ShardSet, rt: ReactionRuntime) -> Mover:
        connect = self._connect or pg.connector(rt.clients)

        def published(move: MoveRecord) -> None:  # the mover records it (moved_published) and calls again until then
            self._publish_moved(move, sset, rt)

        def published_back(move: MoveRecord) -> None:  # the mover records it (back_published)
            self._publish_moved(move, sset, rt, rolled_back=True)

        store = ShardMapStore(rt.clients.dynamodb, rt.settings.state_table, rt.clock)

        return Mover(sset, store, connect,
                     conninfo=lambda shard: pg.replication_conninfo(shard, rt.clients),
                     now=lambda: rt.clock.now().timestamp(), on_switched=published,
                     on_switched_back=published_back, step_budget_s=self._budget)

    def _publish_moved(self, move: MoveRecord, sset: ShardSet, rt: ReactionRuntime, rolled_back: bool = False) -> None:
        """ShardMoved: the application's caches drop what they cached per moved bucket (tag shard:<set>:<b>).
        `rolled_back`: a rollback after the switch put the buckets back: the event names the move's target as
        its `source` and the move's source (the owner again) as its `target`, with `"rolled_back": true`."""
        source, target = (move.target, move.source) if rolled_back else (move.source, move.target)
        detail = {"set": sset.name, "move_id": move.id, "source": source, "target": target,
                  "buckets": move.buckets, "bucket_ranges": ranges(move.buckets), "fence_ms": move.fence_ms,
                  "tags": [f"shard:{sset.name}:{b}" for b in move.buckets]}
        if rolled_back:
            detail["rolled_back"] = True
        resp = rt.clients.events.put_events(Entries=[{
            "Source": rt.config.shard_moved_source, "DetailType": rt.config.shard_moved_detail_type,
            "Detail": json.dumps(detail), "EventBusName": rt.settings.event_bus_name}])
        # PutEvents reports a rejected entry in its answer, not as an error: a failure all the same (the step
        # fails and is retried; the next step publishes again until an entry is accepted).
        if (resp or {}).get("FailedEntryCount"):
            codes = [f"{e.get('ErrorCode')}: {e.get('ErrorMessage')}" for e in resp.get("Entries", [])
                     if e.get("ErrorCode")]
            raise RuntimeError(f"ShardMoved{' (rolled back)' if rolled_back else ''} for move {move.id} was rejected "
                               f"by EventBridge ({'; '.join(codes)})")

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> Any:
        if trigger.kind == "console":
            return validate_command(trigger.payload, rt.config)
        if trigger.kind == "event" and trigger.event is not None:
            ev = trigger.event
            listening = [s for s in self._sets(rt)
                         if any(m.source == ev.source and m.detail_type == ev.detail_type for m in s.on_events)]
            return validate_shard_added(ev.detail, rt.config) if listening else None
        if trigger.kind == "schedule" and trigger.schedule is not None:
            if trigger.schedule.operation != "balance_check":
                raise TriggerError([f"reflex_schedule.operation: unknown operation {trigger.schedule.operation!r} "
                                    "(balance_check)"])
            return None
        if trigger.kind == "step" and trigger.step is not None:
            check_step(trigger.step.step, trigger.step.task_token is not None, wf.STEPS)
            return validate_move_state(trigger.step.input, rt.config)
        return None

    def _alarm_sets(self, alarm: AlarmInfo, rt: ReactionRuntime) -> list[tuple[ShardSet, str | None]]:
        """The sets an alarm speaks for, and the hot shard when a shard's own rule names it (by name, prefix or
        tag: alarm events carry no tags, so tag rules read them, cached)."""
        def named(rule: Any) -> bool:
            return rule is not None and self._alarm_tags.matches(rule, rt.clients.cloudwatch, alarm.name, alarm.arn)

        out: list[tuple[ShardSet, str | None]] = []
        for s in self._sets(rt):
            hot = next((sh.name for sh in s.shards if named(sh.alarms)), None)
            if hot or named(s.alarms):
                out.append((s, hot))
        return out

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        assert trigger.alarm is not None
        return [s.name for s, _ in self._alarm_sets(trigger.alarm, rt)]

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        if trigger.kind == "alarm":
            alarm = trigger.alarm
            assert alarm is not None
            out: list[Intent | Skip] = []
            for sset, hot in self._alarm_sets(alarm, rt):
                if alarm.state != "ALARM":
                    out.append(Skip(reason="alarm-not-breaching", policy=sset.name, target_key=_key(sset),
                                    detail=f"{alarm.name} {alarm.transition}: only an alarm entering ALARM acts"))
                    continue
                out.append(self._intent(sset, "rebalance", f"alarm {alarm.name} {alarm.transition}"
                                        + (f" on {hot}" if hot else ""), base=trigger.event_id, hot=hot))
            return out
        if trigger.kind == "schedule":
            return [self._intent(s, "rebalance", "periodic balance check", quiet=True, base=trigger.event_id)
                    for s in self._sets(rt) if s.balance_check_every_minutes]
        if request is None:
            return []
        if isinstance(request, ShardAddedDetail):
            sset = self._set(rt, request.set)
            return [self._intent(sset, "add_shard", f"ShardAdded {request.shard} from {trigger.who}",
                                 shard=request.shard, base=trigger.event_id)]
        if isinstance(request, ShardCommand):
            sset = self._set(rt, request.set)
            intent = self._intent(sset, request.command, f"{request.command} by {request.operator}: {request.reason}",
                                  base=trigger.event_id, operator=request.operator, shard=request.shard,
                                  target_shard=request.target, buckets=request.bucket_numbers() or None,
                                  move_id=request.move_id, mode=request.mode)
            return [intent.model_copy(update={"dry_run": request.dry_run or request.command == "plan"})]
        assert isinstance(request, MoveState)
        sset = self._set(rt, request.set)
        return [self._intent(sset, "advance", f"workflow step of move {request.move_id}", move_id=request.move_id)]

    @staticmethod
    def _intent(sset: ShardSet, operation: str, reason: str, quiet: bool = False, **params: Any) -> Intent:
        direction: Direction | None = "out" if operation in ("rebalance", "drain", "add_shard", "move") else None
        return Intent(policy=sset.name, target_key=_key(sset), target={"set": sset.name}, operation=operation,
                      direction=direction, params={k: v for k, v in params.items() if v is not None},
                      reason=reason, quiet=quiet)

    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        return {_key(s) for s in self._sets(rt)}

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        sset = self._set(rt, intent.target["set"])
        return GuardSettings(out_cooldown_s=sset.cooldown_s, in_cooldown_s=0,
                             max_actions_per_hour=sset.rate_limit.max_actions_per_hour,
                             circuit_open_for_s=sset.rate_limit.open_for_s,
                             dry_run=rt.config.dry_run or sset.dry_run or intent.operation == "plan",
                             preempt_lock=intent.operation == "abort",
                             bypass_rate_limit=intent.operation in SAFETY)

    # ------------------------------------------------------------------ plan
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        sset = self._set(rt, intent.target["set"])
        mover = self.mover(sset, rt)
        op = intent.operation
        p = intent.params
        shard_map = mover.map()
        running = mover.store.moves(sset.name)
        before = {"map_version": shard_map.version, "moving": [_summary(m) for m in running]}

        def skip(reason: str, detail: str) -> Skip:
            return Skip(reason=reason, detail=detail, policy=sset.name, target_key=_key(sset), before=before,
                        quiet=intent.quiet)

        if op == "advance":
            move = mover.store.load_move(sset.name, p["move_id"])
            if move is None:
                return skip("no-move", f"no move {p['move_id']}")
            if move.finished:
                return Skip(reason="move-finished", detail=f"move {move.id} is {move.phase}", policy=sset.name,
                            target_key=_key(sset), before={"phase": move.phase})
            return self._action(intent, before, {"step": {"move_id": move.id, "from_phase": move.phase}})
        if op == "status":
            counts: dict[str, int] = {}
            for owner in shard_map.owners:
                counts[owner] = counts.get(owner, 0) + 1
            return skip("status", json.dumps({"map_version": shard_map.version, "buckets_per_shard": counts,
                                              "moves": [_summary(m) for m in running]})[:1800])
        if op in ("pause", "resume", "abort"):
            targets = [m for m in running if p.get("move_id") in (None, m.id)]
            if not targets:
                return skip("no-move", f"no unfinished move{' ' + p['move_id'] if p.get('move_id') else ''} "
                                       f"in set {sset.name}")
            return self._action(intent, before, {"moves": {m.id: op for m in targets}})
        if op == "move":
            buckets = list(p["buckets"])
            target = p["target_shard"]
            sources = {shard_map.owners[b] for b in buckets}
            if len(sources) != 1:
                return skip("bad-move", "buckets: the named buckets are on several shards "
                                        f"({', '.join(sorted(sources))}); one move has one source")
            source = sources.pop()
            refusal = self._capacity(sset, mover, target, buckets, running)
            if refusal:
                return skip("target-at-capacity", refusal)
            mode = p.get("mode") or sset.transfer
            move_id = p.get("move_id") or _move_id(p["base"], _fingerprint(op, source, target, buckets, mode), 0)
            moves = [{"id": move_id, "buckets": buckets, "source": source, "target": target, "mode": mode}]
            problem = (self._id_taken(sset, mover, moves, "move_id" if p.get("move_id") else "request_id")
                       or self._map_room(shard_map, moves) or self._refusal(mover, moves)
                       or self._index_build(sset, moves, rt))
            if problem:
                return skip("move-refused", problem)
            return self._action(intent, before, {"moves": moves})
        # plan / rebalance / drain / add_shard
        if op != "plan" and running:
            return skip("set-moving", f"set {sset.name} has {len(running)} unfinished move(s): "
                                      f"{', '.join(m.id for m in running)}; plan again when they end")
        try:
            plan = self._planner_plan(sset, mover, op, p, shard_map)
        except ImportError as err:
            return skip("planner-unavailable", f"shards.planner is not installed: {err}")
        mode = p.get("mode") or sset.transfer
        moves = _group([{"buckets": [m.bucket], "source": m.source, "target": m.target, "bytes": m.bytes,
                         "mode": mode, "reason": m.reason} for m in plan.moves])
        # Named after the trigger AND what they move: a reused request id with another command (which the
        # pipeline treats as a new command) gets moves of its own, never another command's record.
        moves = [{"id": _move_id(p["base"], _fingerprint(op, mv["source"], mv["target"], mv["buckets"], mode), i)}
                 | mv for i, mv in enumerate(moves)]
        intended = {"moves": moves, "plan": plan.to_dict()}
        if not moves:
            return skip("balanced", "; ".join(plan.explanation)[:1000] or "every shard is within tolerance")
        if op != "plan":
            problem = self._id_taken(sset, mover, moves, "request_id") or self._map_room(shard_map, moves)
            if problem:
                return skip("move-refused", problem)
        return self._action(intent, before, intended)

    def _planner_plan(self, sset: ShardSet, mover: Mover, op: str, p: dict[str, Any], shard_map: Any) -> Any:
        from shards.inventory import bucket_bytes
        from shards.planner import BucketInfo, PlanSettings, ShardInfo, plan_drain, plan_rebalance

        connect = mover._connect
        sizes = bucket_bytes(sset, shard_map, connect)
        buckets = [BucketInfo(bucket=b, shard=shard_map.owners[b], bytes=n) for b, n in sizes.items()]
        running = mover.store.moves(sset.name)

        def cap(name: str, max_bytes: int | None) -> int | None:
            # What unfinished moves are already bringing the shard counts against its capacity.
            if max_bytes is None:
                return None
            return max(0, max_bytes - sum(sizes.get(b, 0) for b in _incoming(running, shard_map.owners, name)))

        shards = [ShardInfo(name=s.name, weight=s.weight, accepting=s.accepting,
                            max_concurrent_moves=s.max_concurrent_moves, max_bytes=cap(s.name, s.max_bytes))
                  for s in sset.shards]
        settings = PlanSettings(tolerance=sset.tolerance, improvement_threshold=sset.improvement_threshold,
                                max_moves=sset.max_moves_per_plan, metric=sset.metric,
                                throughput_bytes_per_s=sset.throughput_bytes_per_s)
        if op == "drain":
            return plan_drain(buckets, shards, p["shard"], settings)
        return plan_rebalance(buckets, shards, settings)

    def _capacity(self, sset: ShardSet, mover: Mover, target: str, buckets: list[int],
                  running: list[MoveRecord]) -> str:
        """max_bytes of the target against what it owns, what unfinished moves are bringing it (their buckets
        are still the source's in the map until the switch) and this move."""
        shard = sset.shard(target)
        if shard is None or shard.max_bytes is None:
            return ""
        from shards.inventory import bucket_bytes

        current = mover.map()
        sizes = bucket_bytes(sset, current, mover._connect)
        now_bytes = sum(n for b, n in sizes.items() if current.owners[b] == target)
        incoming = _incoming(running, current.owners, target)
        coming = sum(sizes.get(b, 0) for b in incoming)
        moving = sum(sizes.get(b, 0) for b in buckets)
        if now_bytes + coming + moving > shard.max_bytes:
            return (f"target: {target} holds {now_bytes} bytes"
                    + (f" and unfinished moves bring it {coming} more" if coming else "")
                    + f"; with {moving} more it would exceed max_bytes {shard.max_bytes}")
        return ""

    @staticmethod
    def _id_taken(sset: ShardSet, mover: Mover, moves: list[dict[str, Any]], field: str) -> str:
        """A move id already recorded for OTHER buckets (or shards): starting would return that record and
        report this move as done. The same move (a retry) is fine while it is unfinished; a finished one (done,
        rolled back) is refused too: start() would return its record, nothing would be claimed or moved, and
        the command would be audited executed (and set the cooldown) for a move that does not run."""
        for mv in moves:
            rec = mover.store.load_move(sset.name, mv["id"])
            if rec is not None and rec.finished:
                return (f"{field}: move {mv['id']} already exists and is {rec.phase} ({ranges(rec.buckets)} "
                        f"{rec.source} -> {rec.target}); a move id is used once: give this command another "
                        f"{field}")
            if rec is not None and not rec.is_move_of(mv["buckets"], mv["source"], mv["target"]):
                return (f"{field}: move {mv['id']} already exists ({rec.phase}) and moves {ranges(rec.buckets)} "
                        f"{rec.source} -> {rec.target}; give this command another {field}")
        return ""

    @staticmethod
    def _map_room(shard_map: ShardMap, moves: list[dict[str, Any]]) -> str:
        """The moves' bucket states must fit in the map's DynamoDB item (MAP_ITEM_BUDGET), as claimed AND as their
        switch leaves it (owners rewritten to the targets: run-length encoded, scattered buckets weigh far more
        switched than claimed). A claim accepted here can always be switched."""
        size = shard_map.claim_bytes([(mv["id"], list(mv["buckets"]), mv["source"], mv["target"]) for mv in moves])
        if size > MAP_ITEM_BUDGET:
            return (f"buckets: moving {sum(len(mv['buckets']) for mv in moves)} bucket(s) would make the shard "
                    f"map a {size:,}-byte item once claimed or switched (at most {MAP_ITEM_BUDGET:,}; scattered "
                    "buckets make the owners long); move fewer or contiguous buckets")
        return ""

    @staticmethod
    def _refusal(mover: Mover, moves: list[dict[str, Any]]) -> str:
        """The mover's own start checks (buckets free and on the source, target accepting, each shard's
        max_concurrent_moves), asked at plan time so a refused move is a skip, not a failed action."""
        current = mover.map()
        for mv in moves:
            refused = mover.refusal(mv["buckets"], mv["source"], mv["target"], current)
            if refused is not None:
                return str(refused)
        return ""

    @staticmethod
    def _index_build(sset: ShardSet, moves: list[dict[str, Any]], rt: ReactionRuntime) -> str:
        """An index build by the database advisor holds `lock#db:<set>/<shard>` (databases.targets[].shard): no
        move starts on that shard until it ends."""
        for shard in sorted({s for mv in moves for s in (mv["source"], mv["target"])}):
            holder = rt.store.live_lock_owner(f"db:{sset.name}/{shard}", rt.clock.now())
            if holder is not None:
                return f"{shard}: an index build holds its database (lock db:{sset.name}/{shard}, {holder})"
        return ""

    @staticmethod
    def _action(intent: Intent, before: dict[str, Any], intended: dict[str, Any]) -> Action:
        return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target,
                      operation=intent.operation, direction=intent.direction, params=intent.params, before=before,
                      intended=intended, reason=intent.reason)

    # ------------------------------------------------------------------ execute / verify
    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        sset = self._set(rt, action.target["set"])
        mover = self.mover(sset, rt)
        op = action.operation
        if op == "advance":
            self._results[action.params["move_id"]] = mover.step(action.params["move_id"])
            return
        if op in ("pause", "resume", "abort"):
            for move_id in action.intended["moves"]:
                if op == "abort":
                    mover.request_abort(move_id, action.reason)
                else:
                    mover.set_paused(move_id, op == "pause")
            return
        started: list[str] = []
        for mv in action.intended["moves"]:
            try:
                record = self._claim(mover, sset, mv, action.reason, rt)
                if not record.is_move_of(mv["buckets"], mv["source"], mv["target"]):
                    # start() is idempotent per id: this id names another move (a race past plan's check).
                    raise MoveRefused("request_id", f"move {record.id} is recorded for {ranges(record.buckets)} "
                                                    f"{record.source} -> {record.target}, not this move")
                if record.finished:
                    # A race past plan's check (_id_taken): the id names a finished move, nothing was claimed.
                    raise MoveRefused("move_id" if op == "move" and action.params.get("move_id") else "request_id",
                                      f"move {record.id} is already {record.phase}; nothing was claimed")
            except MoveRefused as err:
                if op == "move":
                    raise
                logger.info("move deferred to the next balance check", extra={"move": mv, "why": str(err)})
                continue
            started.append(record.id)
            self._start_workflow(rt, sset, record.id)

    @staticmethod
    def _claim(mover: Mover, sset: ShardSet, mv: dict[str, Any], reason: str, rt: ReactionRuntime) -> MoveRecord:
        """Claim the buckets and save the move while holding the build locks of both shards' databases
        (`lock#db:<set>/<shard>`, the lock a database advisor's index build holds for its whole run): a build
        either sees this move's record (it checks the moves once it holds the lock) or this claim waits for it.
        A retry of a move already recorded needs no lock."""
        if mover.store.load_move(sset.name, mv["id"]) is not None:
            return mover.start(mv["buckets"], mv["source"], mv["target"], move_id=mv["id"], mode=mv["mode"],
                               reason=reason)
        owner = f"shards-move-{mv['id']}"
        held: list[str] = []
        try:
            for shard in sorted({mv["source"], mv["target"]}):
                key = f"db:{sset.name}/{shard}"
                if not rt.store.acquire_lock(key, owner, rt.clock.now(), 120):
                    holder = rt.store.live_lock_owner(key, rt.clock.now()) or "another invocation"
                    raise MoveRefused("target" if shard == mv["target"] else "source",
                                      f"{shard}: an index build holds its database (lock {key}, {holder})")
                held.append(key)
            return mover.start(mv["buckets"], mv["source"], mv["target"], move_id=mv["id"], mode=mv["mode"],
                               reason=reason)
        finally:
            for key in held:
                try:
                    rt.store.release_lock(key, owner)
                except Exception:  # noqa: BLE001 - the lease expires by itself
                    logger.exception("could not release a database lock; its lease expires", extra={"lock": key})

    @staticmethod
    def _start_workflow(rt: ReactionRuntime, sset: ShardSet, move_id: str) -> None:
        if not rt.settings.workflow_arn:
            return  # local runs drive the mover themselves (simulator, tests)
        from botocore.exceptions import ClientError

        try:
            rt.clients.stepfunctions.start_execution(
                stateMachineArn=rt.settings.workflow_arn, name=f"{sset.name}-{move_id}"[:80],
                input=json.dumps({"set": sset.name, "move_id": move_id}))
        except ClientError as err:
            # A redelivered start: the execution named after the move runs already.
            if err.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise

    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        sset = self._set(rt, action.target["set"])
        mover = self.mover(sset, rt)
        op = action.operation
        if op == "advance":
            result = self._results.pop(action.params["move_id"], None)
            move = mover.load(action.params["move_id"])
            return {"step": (result.to_dict() if result else {"move_id": move.id, "phase": move.phase,
                                                              "wait_s": 1, "done": move.finished})
                    | {"from_phase": action.intended["step"]["from_phase"], "fence_ms": move.fence_ms,
                       "verify_fence_ms": move.verify_fence_ms}}
        if op in ("pause", "resume", "abort"):
            out: dict[str, str] = {}
            for move_id in action.intended["moves"]:
                m = mover.load(move_id)
                out[move_id] = "abort" if m.abort_requested else ("pause" if m.paused else "resume")
            return {"moves": out}
        records = [mover.store.load_move(sset.name, mv["id"]) for mv in action.intended["moves"]]
        # A record under this id that moves something else is not this move: it was not started (deferred).
        records = [r if r is not None and r.is_move_of(mv["buckets"], mv["source"], mv["target"]) else None
                   for r, mv in zip(records, action.intended["moves"], strict=True)]
        after: dict[str, Any] = {"moves": [mv | {"phase": r.phase} if r else mv | {"phase": "deferred"}
                                           for mv, r in zip(action.intended["moves"], records, strict=True)]}
        if "plan" in action.intended:
            after["plan"] = action.intended["plan"]
        return after

    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        return None


def _move_id(base: str, fingerprint: str, index: int) -> str:
    digest = hashlib.sha256((base + "\n" + fingerprint).encode()).hexdigest()[:10]
    return f"mv{digest}-{index}"


def _fingerprint(op: str, source: str, target: str, buckets: list[int], mode: str) -> str:
    """What a move is: a reused trigger id with another command names other moves."""
    return f"{op}|{source}|{target}|{ranges(buckets)}|{mode}"


def _incoming(running: list[MoveRecord], owners: list[str], target: str) -> list[int]:
    """Buckets unfinished moves are bringing to `target` that the map does not give it yet."""
    return sorted({b for m in running if m.target == target for b in m.buckets if owners[b] != target})


def _group(moves: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Moves with the same source and target become one move of several buckets (one fence, one switch)."""
    grouped: dict[tuple[str, str], dict[str, Any]] = {}
    for mv in moves:
        key = (mv["source"], mv["target"])
        if key in grouped:
            grouped[key]["buckets"] = sorted(grouped[key]["buckets"] + mv["buckets"])
            grouped[key]["bytes"] = grouped[key].get("bytes", 0) + mv.get("bytes", 0)
        else:
            grouped[key] = dict(mv)
    return list(grouped.values())


def _summary(m: MoveRecord) -> dict[str, Any]:
    return {"id": m.id, "buckets": ranges(m.buckets), "source": m.source, "target": m.target, "phase": m.phase,
            "paused": m.paused, "fence_ms": m.fence_ms}
