"""The database advisor reaction: reports, index proposals, applying one, and cancelling runaway queries.

* Schedule `advise` (policy = database) / console `advise`  -> read-only diagnostics and index proposals of
  that database; the report (JSON + Markdown) goes to S3, the figures to EMF, the summary into the audit
  record (and so into the notification).
* Console `apply_index`                                      -> build one proposed index CONCURRENTLY, only if
  the database's policy has `allow_apply`, never while a shard move holds the database (`db:<name>` lock).
* Alarm into ALARM matching a database's `runaway.alarms` / console `cancel_runaway`
                                                              -> one action per runaway backend (oldest first,
  at most `max_per_invocation`): pg_cancel_backend, or pg_terminate_backend if the policy says so.

Targets: `postgres/<db>/advise`, `postgres/<db>/index`, `postgres/<db>/runaway/<pid>` (each with its own lock
and rate limit; the core records one action per target and trigger). psycopg and the advisor modules are
imported on first use, not at cold start.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC
from typing import Any

from reflex_core.actions import Action, Intent, Skip
from reflex_core.alarm_tags import AlarmTagReader
from reflex_core.database_config import DatabaseStageConfig, DatabaseTarget
from reflex_core.observability import logger
from reflex_core.pipeline import GuardSettings
from reflex_core.runtime import Runtime
from reflex_core.state_store import AlarmMemory
from reflex_core.triggers import Trigger, TriggerError

ReactionRuntime = Runtime[DatabaseStageConfig]
Connect = Callable[..., Any]

OPERATIONS = ("advise", "index", "runaway")
VERIFY_WAIT_S = 3.0


def shard_move_lock(db: DatabaseTarget) -> str:
    """The state-table lock an index build holds for its whole run (`lock#db:<set>/<shard>` for a shard's database,
    `lock#db:<name>` otherwise); the shard mover refuses to start a move on a shard while it is held."""
    return db.build_lock


class AdvisorReaction:
    name = "advisor"
    config_model = DatabaseStageConfig

    def __init__(self, connect: Connect | None = None) -> None:
        self._connect = connect
        self._alarm_tags = AlarmTagReader()
        # Reports planned in this process and not yet written (plan and execute run in one invocation).
        self._pending: dict[str, dict[str, Any]] = {}
        # Runaway backends found by this process's sweeps: each is its own target (postgres/<db>/runaway/<pid>),
        # because the core records one action per target and trigger.
        self._backends: set[str] = set()

    def connect(self, target: DatabaseTarget, rt: ReactionRuntime, **kw: Any) -> Any:
        if self._connect is not None:
            return self._connect(target, rt.clients, **kw)
        from advisor.pg_connection import connect

        return connect(target, rt.clients, **kw)

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> Any:
        from advisor.commands import AdviseCommand, validate_command

        if trigger.kind == "console":
            cmd = validate_command(trigger.payload, "", require_operator=True)
            if not (isinstance(cmd, AdviseCommand) and cmd.database == "*"):
                self._database(cmd.database, rt, "database")
            return cmd
        if trigger.kind == "schedule" and trigger.schedule is not None:
            if trigger.schedule.operation != "advise":
                raise TriggerError([f"reflex_schedule.operation: unknown operation {trigger.schedule.operation!r} "
                                    "(advise)"])
            self._database(trigger.schedule.policy or "", rt, "reflex_schedule.policy")
        return None

    @staticmethod
    def _database(name: str, rt: ReactionRuntime, field: str) -> DatabaseTarget:
        db = rt.config.database(name)
        if db is None:
            known = ", ".join(d.name for d in rt.config.database_targets) or "none"
            raise TriggerError([f"{field}: no database named {name!r} (configured: {known})"])
        return db

    # ------------------------------------------------------------------ matching
    def _alarm_databases(self, trigger: Trigger, rt: ReactionRuntime) -> list[DatabaseTarget]:
        alarm = trigger.alarm
        assert alarm is not None
        out = []
        for db in rt.config.database_targets:
            if db.runaway is None:
                continue
            if self._alarm_tags.matches(db.runaway.alarms, rt.clients.cloudwatch, alarm.name, alarm.arn):
                out.append(db)
        return out

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        return [db.name for db in self._alarm_databases(trigger, rt)]

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        from advisor.commands import AdviseCommand, ApplyIndexCommand, CancelRunawayCommand

        if trigger.kind == "alarm":
            alarm = trigger.alarm
            assert alarm is not None
            out: list[Intent | Skip] = []
            for db in self._alarm_databases(trigger, rt):
                if alarm.state != "ALARM":
                    out.append(Skip(reason="not-alarm", policy=db.name, target_key=_key(db, "runaway"),
                                    detail=f"{alarm.name} {alarm.transition}: runaway queries are swept on ALARM only"))
                else:
                    out.extend(self._runaway_intents(db, rt, f"{alarm.name} {alarm.transition}", False))
            return out
        if trigger.kind == "schedule" and trigger.schedule is not None:
            db = self._database(trigger.schedule.policy or "", rt, "reflex_schedule.policy")
            return [self._advise_intent(db, f"schedule {trigger.schedule.name}", False)]
        if isinstance(request, AdviseCommand):
            dbs = [d for d in rt.config.database_targets if request.database in ("*", d.name)]
            return [self._advise_intent(d, f"advise requested: {request.reason}", request.dry_run) for d in dbs]
        if isinstance(request, CancelRunawayCommand):
            db = self._database(request.database, rt, "database")
            if db.runaway is None:
                return [Skip(reason="no-runaway-policy", policy=db.name, target_key=_key(db, "runaway"),
                             detail=f"database {db.name} has no runaway policy")]
            return self._runaway_intents(db, rt, f"cancel_runaway requested: {request.reason}", request.dry_run)
        if isinstance(request, ApplyIndexCommand):
            db = self._database(request.database, rt, "database")
            params = {"schema": request.schema_name, "table": request.table, "columns": list(request.columns),
                      "where": request.where}
            return [Intent(policy=db.name, target_key=_key(db, "index"), target={"database": db.name},
                           operation="apply_index", params=params, dry_run=request.dry_run,
                           reason=f"apply_index requested: {request.reason}")]
        return []

    @staticmethod
    def _advise_intent(db: DatabaseTarget, why: str, dry_run: bool) -> Intent:
        return Intent(policy=db.name, target_key=_key(db, "advise"), target={"database": db.name},
                      operation="advise", reason=why, dry_run=dry_run)

    def _runaway_intents(self, db: DatabaseTarget, rt: ReactionRuntime, why: str, dry_run: bool) -> list[Intent | Skip]:
        from advisor.pg_connection import DatabaseUnavailable
        from advisor.runaway import runaways

        policy = db.runaway
        assert policy is not None
        key = _key(db, "runaway")
        try:
            with self.connect(db, rt) as conn:
                found, allowed = runaways(conn, policy)
        except DatabaseUnavailable as err:
            return [Skip(reason="database-unreachable", policy=db.name, target_key=key, detail=str(err)[:500])]
        out: list[Intent | Skip] = []
        for b in allowed:
            out.append(Skip(reason="allow-listed", policy=db.name, target_key=f"{key}/{b['pid']}",
                            before=_backend_view(b),
                            detail=f"pid {b['pid']} ({b['role']}, {b['application'] or 'no application'}) running "
                                   f"{b['runtime_s']:.0f}s is allow-listed"))
        verb = "terminate" if policy.terminate else "cancel"
        for i, b in enumerate(found):
            backend_key = f"{key}/{b['pid']}"
            if i >= policy.max_per_invocation:
                out.append(Skip(reason="bound-reached", policy=db.name, target_key=backend_key,
                                before=_backend_view(b),
                                detail=f"pid {b['pid']}: at most {policy.max_per_invocation} per invocation"))
                continue
            self._backends.add(backend_key)
            out.append(Intent(policy=db.name, target_key=backend_key, target={"database": db.name},
                              operation=f"{verb}_query", dry_run=dry_run,
                              params={"pid": b["pid"], "query_start": b["query_start"]},
                              reason=f"{why}: pid {b['pid']} ({b['role']}) running {b['runtime_s']:.0f}s > "
                                     f"{policy.max_runtime_s}s"))
        return out

    # ------------------------------------------------------------------ guard settings
    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        static = {_key(db, op) for db in rt.config.database_targets for op in OPERATIONS}
        # A backend is allowed when a sweep of a configured database found it (its key names that database).
        return static | {k for k in self._backends if any(k.startswith(_key(db, "runaway") + "/")
                                                          for db in rt.config.database_targets)}

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        db = self._owned(intent.policy, intent.target_key, rt)
        if intent.operation.endswith("_query") and db.runaway is not None:
            limit, open_for, dry = (db.runaway.rate_limit.max_actions_per_hour, db.runaway.rate_limit.open_for_s,
                                    db.runaway.dry_run)
        else:
            limit, open_for, dry = 30, 3600, False
        return GuardSettings(out_cooldown_s=0, in_cooldown_s=0, max_actions_per_hour=limit,
                             circuit_open_for_s=open_for, dry_run=rt.config.dry_run or dry)

    @staticmethod
    def _owned(name: str, key: str, rt: ReactionRuntime) -> DatabaseTarget:
        db = rt.config.database(name)
        if db is None or not key.startswith(db.key + "/"):
            raise LookupError(f"database {name} does not own {key}")
        return db

    # ------------------------------------------------------------------ plan
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        db = self._owned(intent.policy, intent.target_key, rt)
        if intent.operation == "advise":
            return self._plan_advise(db, intent, rt)
        if intent.operation == "apply_index":
            return self._plan_apply(db, intent, rt)
        if intent.operation in ("cancel_query", "terminate_query"):
            return self._plan_runaway(db, intent, rt)
        raise ValueError(f"unknown operation {intent.operation}")

    def _skip(self, db: DatabaseTarget, intent: Intent, reason: str, detail: str,
              before: dict[str, Any] | None = None) -> Skip:
        return Skip(reason=reason, policy=db.name, target_key=intent.target_key, detail=detail[:1000], before=before)

    def _plan_advise(self, db: DatabaseTarget, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        from advisor.diagnostics import DiagnosticError, diagnose
        from advisor.index_advisor import IndexAdvisor
        from advisor.pg_connection import DatabaseUnavailable
        from advisor.report import emf_line, print_emf, summary, summary_line

        if not db.advisor.enabled:
            return self._skip(db, intent, "advisor-disabled", f"advisor disabled for database {db.name}")
        started = time.monotonic()
        try:
            with self.connect(db, rt) as conn:
                diag = diagnose(conn, db)
                advisor = IndexAdvisor(conn, db.advisor)
                proposals = advisor.advise(diag.top_by_total) if not diag.in_recovery or db.role == "replica" else []
        except (DatabaseUnavailable, DiagnosticError) as err:
            print_emf(emf_line(rt.config.stage, db.name, {"AdvisorErrors": (1, "Count")}, rt.clock.now()))
            reason = "database-unreachable" if isinstance(err, DatabaseUnavailable) else "diagnostics-failed"
            return self._skip(db, intent, reason, str(err))
        now = rt.clock.now()
        report = {"database": db.name, "role": db.role, "generated_at": now.isoformat(),
                  "duration_s": round(time.monotonic() - started, 3), "hypopg": advisor.hypopg,
                  "diagnostics": diag.as_dict(), "proposals": [p.as_dict() for p in proposals],
                  "examined": [e.__dict__ for e in advisor.examined]}
        s = summary(report)
        stamp = now.astimezone(UTC).strftime("%Y/%m/%d/%H%M%S")
        prefix = f"advisor/{db.name}/{stamp}-{uuid.uuid4().hex[:8]}"
        self._pending[prefix] = report
        return Action(policy=db.name, target_key=intent.target_key, target=intent.target, operation="advise",
                      params={"prefix": prefix}, before=s, intended={"report": f"{prefix}.json"},
                      reason=summary_line(s) + " (" + intent.reason + ")")

    def _plan_apply(self, db: DatabaseTarget, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        from advisor.index_advisor import Candidate
        from advisor.index_apply import index_state, table_columns
        from advisor.pg_connection import DatabaseUnavailable

        p = intent.params
        cand = Candidate(p["schema"], p["table"], tuple(p["columns"]), p["where"])
        if not db.advisor.allow_apply:
            return self._skip(db, intent, "apply-not-allowed",
                              f"database {db.name}: advisor.allow_apply is false; {cand.name} not built")
        busy = self._shard_busy(db, rt)
        if busy:
            return self._skip(db, intent, "shard-move-in-progress", busy)
        try:
            with self.connect(db, rt) as conn:
                cols = table_columns(conn, cand.schema, cand.table)
                state = index_state(conn, cand.schema, cand.name)
        except DatabaseUnavailable as err:
            return self._skip(db, intent, "database-unreachable", str(err))
        if cols is None:
            return self._skip(db, intent, "table-missing", f"table {cand.schema}.{cand.table} does not exist "
                                                           f"(any more) in database {db.name}; nothing built")
        missing = [c for c in cand.columns if c not in cols]
        pred_col = (cand.where or "").removeprefix("NOT ").split(" ")[0]
        if pred_col and pred_col not in cols:
            missing.append(pred_col)
        if missing:
            return self._skip(db, intent, "column-missing", f"table {cand.schema}.{cand.table} has no column(s) "
                                                            f"{', '.join(missing)}; nothing built")
        if state["exists"] and state["valid"]:
            return self._skip(db, intent, "no-change", f"index {state['index']} already exists and is valid", state)
        intended = {"index": state["index"], "exists": True, "valid": True}
        return Action(policy=db.name, target_key=intent.target_key, target=intent.target, operation="apply_index",
                      params=p | {"name": cand.name, "sql": cand.definition(),
                                  "lock_timeout_ms": db.advisor.lock_timeout_ms},
                      before=state, intended=intended,
                      reason=f"{cand.definition()}" + (" (rebuilds an INVALID index)" if state["exists"] else "")
                             + f"; {intent.reason}")

    @staticmethod
    def _shard_busy(db: DatabaseTarget, rt: ReactionRuntime) -> str:
        """Why no index may be built on `db` now: an unfinished move of its shard (`db.shard`), or another build
        holding its lock. Empty when it may."""
        holder = rt.store.live_lock_owner(shard_move_lock(db), rt.clock.now())
        if holder is not None:
            return f"database {db.name} is locked ({shard_move_lock(db)}, held by {holder}); retry later"
        return AdvisorReaction._moving(db, rt)

    @staticmethod
    def _moving(db: DatabaseTarget, rt: ReactionRuntime) -> str:
        if db.shard is None:
            return ""
        from shards.shard_map import ShardMapStore

        set_name, shard = db.shard.split("/", 1)
        moves = [m for m in ShardMapStore(rt.clients.dynamodb, rt.settings.state_table, rt.clock).moves(set_name)
                 if shard in (m.source, m.target)]
        if moves:
            return (f"database {db.name} is shard {db.shard}, which move(s) {', '.join(m.id for m in moves)} "
                    f"({moves[0].phase}) involve; no index build until they end")
        return ""

    def _plan_runaway(self, db: DatabaseTarget, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        from advisor.pg_connection import DatabaseUnavailable
        from advisor.runaway import backend

        pid, start = int(intent.params["pid"]), str(intent.params["query_start"])
        try:
            with self.connect(db, rt) as conn:
                b = backend(conn, pid, start)
        except DatabaseUnavailable as err:
            return self._skip(db, intent, "database-unreachable", str(err))
        if b is None:
            return self._skip(db, intent, "query-finished", f"pid {pid}: the statement started {start} has ended")
        before = _backend_view(b) | {"running": True}
        return Action(policy=db.name, target_key=intent.target_key, target=intent.target, operation=intent.operation,
                      params=intent.params, before=before, intended={"running": False}, reason=intent.reason)

    # ------------------------------------------------------------------ execute / verify
    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        db = self._owned(action.policy, action.target_key, rt)
        if action.operation == "advise":
            self._write_report(db, action, rt)
        elif action.operation == "apply_index":
            self._apply(db, action, rt)
        else:
            from advisor.runaway import signal

            with self.connect(db, rt) as conn:
                signal(conn, int(action.params["pid"]), str(action.params["query_start"]),
                       terminate=action.operation == "terminate_query")

    def _write_report(self, db: DatabaseTarget, action: Action, rt: ReactionRuntime) -> None:
        import json

        from advisor.report import REPORT_BUCKET_ENV, emf, markdown, print_emf

        bucket = _bucket()
        if not bucket:
            raise RuntimeError(f"no report bucket: {REPORT_BUCKET_ENV} is not set")
        prefix = str(action.params["prefix"])
        report = self._pending.pop(prefix)
        body = json.dumps(report, indent=1, default=str).encode()
        s3 = rt.clients.s3
        s3.put_object(Bucket=bucket, Key=f"{prefix}.json", Body=body, ContentType="application/json")
        s3.put_object(Bucket=bucket, Key=f"{prefix}.md", Body=markdown(report).encode(), ContentType="text/markdown")
        s3.put_object(Bucket=bucket, Key=f"advisor/{db.name}/latest.json", Body=body, ContentType="application/json")
        print_emf(emf(rt.config.stage, action.before, rt.clock.now()))

    def _apply(self, db: DatabaseTarget, action: Action, rt: ReactionRuntime) -> None:
        from advisor.index_advisor import Candidate
        from advisor.index_apply import build

        p = action.params
        cand = Candidate(p["schema"], p["table"], tuple(p["columns"]), p["where"])
        owner = f"advisor-{uuid.uuid4()}"
        lock = shard_move_lock(db)
        # Held for the whole build: a shard move that starts meanwhile waits for it (and we never start during one).
        if not rt.store.acquire_lock(lock, owner, rt.clock.now(), 900):
            raise RuntimeError(f"database {db.name} was locked ({lock}) after planning; nothing built")
        try:
            # Checked again under the lock: a move claimed after planning is seen here, and a move planned from
            # now on sees the lock (the shard reaction checks it before claiming).
            moving = self._moving(db, rt)
            if moving:
                raise RuntimeError(f"{moving}; nothing built")
            with self.connect(db, rt, writable=True, statement_timeout_ms=0) as conn:
                build(conn, cand, int(p["lock_timeout_ms"]))
        finally:
            rt.store.release_lock(lock, owner)

    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        return None

    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        db = self._owned(action.policy, action.target_key, rt)
        if action.operation == "advise":
            key = str(action.intended["report"])
            try:
                rt.clients.s3.head_object(Bucket=_bucket(), Key=key)
                return {"report": key}
            except Exception:  # noqa: BLE001 - the report is not there: say so
                return {"report": None}
        if action.operation == "apply_index":
            from advisor.index_apply import index_state

            p = action.params
            with self.connect(db, rt) as conn:
                return index_state(conn, p["schema"], p["name"])
        from advisor.runaway import backend

        deadline = time.monotonic() + VERIFY_WAIT_S
        with self.connect(db, rt) as conn:
            while True:
                running = backend(conn, int(action.params["pid"]), str(action.params["query_start"])) is not None
                if not running or time.monotonic() > deadline:
                    return {"running": running}
                time.sleep(0.05)


def _key(db: DatabaseTarget, op: str) -> str:
    return f"{db.key}/{op}"


def _backend_view(b: dict[str, Any]) -> dict[str, Any]:
    return {"pid": b["pid"], "role": b["role"], "application": b["application"], "database": b["database"],
            "runtime_s": round(float(b["runtime_s"]), 1), "query": b["query"]}


def _bucket() -> str:
    import os

    from advisor.report import REPORT_BUCKET_ENV

    return os.environ.get(REPORT_BUCKET_ENV, "")


__all__ = ["AdvisorReaction", "logger", "shard_move_lock"]
