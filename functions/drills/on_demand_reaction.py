"""On-demand drills in the drills reaction: the console commands `start_drill`, `approve_drill`,
`reject_drill`, and the steps of the drill workflow (drill_workflow.py), each planned, executed and verified
through the pipeline like any action (kill switch, dry run, idempotency, the resource's lock, audit).

* `start_drill` (resource, optional recovery point, reason, operator): refused while another on-demand drill
  of the resource is in flight (its execution, found by name, is RUNNING) or within its `drill.cooldown_s`;
  otherwise records the drill (`drillrun:<id>`), marks it in flight in the resource's ledger and then starts the
  workflow (execution name = drill id: a retried start starts one execution).
* `approve_drill` / `reject_drill` (drill id): answer the workflow's approval wait (SendTaskSuccess with the
  approver, SendTaskFailure `Reflex.DrillRejected`). Too late (the wait timed out) approves nothing; the
  requester cannot approve their own drill (skipped:self-approval); an approval is done only once its callback
  was delivered (the record keeps the token until then, and the next approve_drill delivers it).
* Steps: `await_approval` keeps the task token in the drill's record; `start_restore` starts the isolated
  restore; `poll_restore` reads its status (past `drill.restore_timeout_s` it fails the drill); `validate` runs
  the same judgement as restore testing drills (DrillReaction.judge: isolation, checks, RTO/RPO, metrics);
  `teardown` deletes the copy; `record_leftover` puts a copy it could not delete in the ledger (check_drills
  alarms on it); `record_result` records the drill's result in the ledger and ends it.

The kill switch refuses `start_drill`, `approve_drill` and `start_restore` (nothing is restored); every later
step (reading, judging, deleting the drill's own copy, recording) is a safety step that `on` does not stop, and
`hard-stop` does not hold the cleanup steps (`teardown`, `record_leftover`, `record_result`) either.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drills import drill_workflow as wf
from drills.drill_ledger import Copy, LedgerStore
from drills.drill_metrics import publish
from drills.drill_runs import (
    APPROVED,
    AWAITING_APPROVAL,
    LEFTOVER,
    RECORDED,
    REFUSED,
    REQUESTED,
    RESTORE_FAILED,
    RESTORED,
    RESTORING,
    TORN_DOWN,
    VALIDATED,
    DrillRun,
    RunStore,
)
from drills.on_demand import DrillRefused, copy_identifier, delete_copy, restore_status, start_restore
from drills.restored_copies import identifier_from_arn
from promoter.promotion_workflow import PromotionWorkflow, TokenGone
from reflex_core.actions import Action, Intent, Skip
from reflex_core.clock import iso
from reflex_core.recovery_config import ProtectedResource, RecoveryStageConfig
from reflex_core.runtime import Runtime
from reflex_core.step_results import TaskTokens
from reflex_core.triggers import Trigger

ReactionRuntime = Runtime[RecoveryStageConfig]
RESTORE_ROLE_ENV = "REFLEX_RESTORE_ROLE_ARN"
CONSOLE_OPERATIONS = frozenset({"start_drill", "approve_drill", "reject_drill"})
OPERATIONS = CONSOLE_OPERATIONS | set(wf.STEPS)
# Steps that run under the kill switch `on` (only `hard-stop` defers them): they read, judge, delete the
# drill's own copy or record; none starts a restore.
SAFETY_OPERATIONS = frozenset({"reject_drill", wf.AWAIT_APPROVAL, wf.POLL_RESTORE, wf.VALIDATE, wf.TEARDOWN,
                               wf.RECORD_LEFTOVER, wf.RECORD_RESULT})
# Steps that run under every kill-switch level, `hard-stop` included: they only write Reflex's own records (a
# leftover in the ledger, alarmed by check_drills; the result). Holding them would leave a copy of production data
# up, unrecorded and unalarmed (a drill always ends with its copy gone or alarmed). The teardown itself deletes an
# AWS resource: `hard-stop` holds it like every other change (an operator who stops everything in an incident may
# need that copy, e.g. to recover deleted rows); after its retries the copy is recorded as a leftover instead.
CLEANUP_OPERATIONS = frozenset({wf.RECORD_LEFTOVER, wf.RECORD_RESULT})
# What a run's status tells the workflow (`$.verdict`).
VERDICT_OF_STATUS = {RESTORING: wf.STARTED, REFUSED: wf.REFUSED, RESTORED: wf.COMPLETED,
                     RESTORE_FAILED: wf.FAILED}
_TOKEN_CACHE = 256
DRILL_ID = r"^[a-z][a-z0-9\-]{0,39}-\d{8}t\d{6}-[0-9a-f]{8}$"


class _Console(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)

    reason: str = Field(min_length=3, max_length=500)
    operator: str = Field(min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


class StartDrillCommand(_Console):
    """Drill `resource` now: restore the recovery point (default: its latest completed one) into the drill
    network, validate, delete the copy. A production resource's drill waits for `approve_drill`."""

    command: Literal["start_drill"]
    resource: str = Field(min_length=1, max_length=40)
    recovery_point_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z\-]*:[a-z0-9\-]+:[a-z0-9\-]*:"
                                                                 r"\d{12}:.+$", max_length=1024)


class ApproveDrillCommand(_Console):
    command: Literal["approve_drill"]
    drill_id: str = Field(pattern=DRILL_ID)


class RejectDrillCommand(_Console):
    command: Literal["reject_drill"]
    drill_id: str = Field(pattern=DRILL_ID)


class DrillState(BaseModel):
    """The drill workflow's state as its tasks receive it (`reflex_step.input`); extra keys (errors caught by
    the workflow, the approval's output, what earlier steps returned) are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    drill_id: str = Field(pattern=DRILL_ID)
    resource: str = Field(min_length=1, max_length=40)
    approval: bool
    approval_timeout_s: int = Field(ge=60, le=86400)
    poll_interval_s: int = Field(ge=10, le=3600)


def drill_id_for(resource: ProtectedResource, trigger: Trigger) -> str:
    """The drill's id (and execution name): the resource, when it was asked for, and the request's key."""
    digest = hashlib.sha256(trigger.idempotency_key.encode()).hexdigest()[:8]
    return f"{resource.name}-{trigger.received_at.astimezone(UTC).strftime('%Y%m%dt%H%M%S')}-{digest}"


class OnDemandDrills:
    def __init__(self) -> None:
        # Callback tokens of the steps being handled, by fingerprint: tokens never enter the audit trail.
        self._tokens = TaskTokens(_TOKEN_CACHE)

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime) -> list[Intent | Skip]:
        if isinstance(request, StartDrillCommand):
            res = rt.config.recovery.resource(request.resource)
            assert res is not None  # validated
            drill_id = drill_id_for(res, trigger)
            return [Intent(policy=res.name, target_key=res.key, target=_target(res), operation="start_drill",
                           params={"drill_id": drill_id, "recovery_point_arn": request.recovery_point_arn,
                                   "operator": request.operator, "request_reason": request.reason},
                           reason=f"start_drill by {request.operator}: {request.reason}", dry_run=request.dry_run)]
        if isinstance(request, ApproveDrillCommand | RejectDrillCommand):
            run = self._runs(rt).load(request.drill_id)
            if run is None:
                return [Skip(reason="unknown-drill", detail=f"no on-demand drill {request.drill_id}")]
            res = rt.config.recovery.resource(run.resource)
            if res is None:
                return [Skip(reason="unknown-drill", detail=f"drill {run.drill_id}'s resource {run.resource} is "
                                                            "no longer configured")]
            return [Intent(policy=res.name, target_key=res.key, target=_target(res), operation=request.command,
                           params={"drill_id": run.drill_id, "operator": request.operator},
                           reason=f"{request.command} by {request.operator}: {request.reason}",
                           dry_run=request.dry_run)]
        assert isinstance(request, DrillState) and trigger.step is not None
        res = rt.config.recovery.resource(request.resource)
        if res is None:
            return [Skip(reason="unknown-drill", detail=f"resource {request.resource} is not configured")]
        params: dict[str, Any] = {"drill_id": request.drill_id, "state": request.model_dump(mode="json"),
                                  "execution": trigger.step.execution}
        if trigger.step.task_token:
            params["token_ref"] = self._tokens.remember(trigger.step.task_token)
        return [Intent(policy=res.name, target_key=res.key, target=_target(res), operation=trigger.step.step,
                       params=params, reason=f"drill workflow step {trigger.step.step} of {request.drill_id}")]

    def _token(self, action: Action) -> str:
        return self._tokens.of(action)

    @staticmethod
    def _runs(rt: ReactionRuntime) -> RunStore:
        return RunStore(rt.clients.dynamodb, rt.settings.state_table)

    @staticmethod
    def _ledgers(rt: ReactionRuntime) -> LedgerStore:
        return LedgerStore(rt.clients.dynamodb, rt.settings.state_table)

    # ------------------------------------------------------------------ plan
    def plan(self, intent: Intent, res: ProtectedResource, rt: ReactionRuntime) -> Action | Skip:
        op = intent.operation
        if op == "start_drill":
            return self._plan_start(intent, res, rt)
        run = self._runs(rt).load(str(intent.params["drill_id"]))
        if run is None:
            return Skip(policy=res.name, target_key=res.key, reason="unknown-drill",
                        detail=f"no on-demand drill {intent.params['drill_id']}")
        planner = {
            "approve_drill": self._plan_answer, "reject_drill": self._plan_answer,
            wf.AWAIT_APPROVAL: self._plan_await, wf.START_RESTORE: self._plan_restore,
            wf.POLL_RESTORE: self._plan_poll, wf.VALIDATE: self._plan_validate, wf.TEARDOWN: self._plan_teardown,
            wf.RECORD_LEFTOVER: self._plan_leftover, wf.RECORD_RESULT: self._plan_record,
        }[op]
        planned = planner(intent, res, run, rt)
        if isinstance(planned, Skip) and op in wf.STEPS:
            # A retried or redelivered step that finds the drill past it: the workflow carries on from the
            # drill's record (never from the step's stale input, e.g. `running` after the restore completed).
            planned = planned.model_copy(update={"before": {"status": run.status, "workflow": flow_view(run)}})
        return planned

    @staticmethod
    def _action(intent: Intent, run: DrillRun | None, status: str, reason: str, **params: Any) -> Action:
        return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target,
                      operation=intent.operation, params=intent.params | params,
                      before={"status": run.status if run else None}, intended={"status": status}, reason=reason)

    @staticmethod
    def _skip(intent: Intent, reason: str, detail: str, quiet: bool = False) -> Skip:
        return Skip(policy=intent.policy, target_key=intent.target_key, reason=reason, detail=detail, quiet=quiet)

    def _plan_start(self, intent: Intent, res: ProtectedResource, rt: ReactionRuntime) -> Action | Skip:
        assert res.drill is not None  # validated
        now = rt.clock.now().timestamp()
        ledger = self._ledgers(rt).load(res.name)
        # The cooldown's start in the ledger is this drill's own (a retried start): it does not hold it.
        no_cooldown = ledger.active_drill == intent.params["drill_id"]
        if ledger.active_drill and ledger.active_drill != intent.params["drill_id"]:
            active = self._runs(rt).load(ledger.active_drill)
            execution = self._execution_status(active, rt) if active is not None else "MISSING"
            if active is not None and active.status != RECORDED and execution == "RUNNING":
                return self._skip(intent, "drill-in-flight", f"drill {active.drill_id} of {res.name} is still "
                                  f"{active.status}; one on-demand drill per resource at a time")
            # The drill in flight is recorded before its workflow starts: one whose workflow never started (the
            # start failed) blocks nothing, not even the cooldown.
            no_cooldown = execution == "MISSING"
        last = ledger.last_drill_started_at
        if last is not None and not no_cooldown and now - last < res.drill.cooldown_s:
            return self._skip(intent, "cooldown", f"the last on-demand drill of {res.name} started {now - last:.0f}s "
                              f"ago (drill.cooldown_s {res.drill.cooldown_s}s)")
        if not rt.settings.workflow_arn:
            return self._skip(intent, "no-workflow", "REFLEX_WORKFLOW_ARN is not set: the drill workflow is not "
                                                     "deployed for this function")
        drill_id = str(intent.params["drill_id"])
        approval = res.drill.needs_approval(rt.config.is_prod_like)
        gate = f"waits up to {res.drill.approval_timeout_s}s for approve_drill" if approval else "no approval needed"
        action = self._action(intent, None, REQUESTED,
                              f"{intent.reason} (drill {drill_id}; {gate}; copy {copy_identifier(res, drill_id)})",
                              approval=approval, copy_id=copy_identifier(res, drill_id))
        # Done when the drill is recorded *and* its workflow started (a failed start is retried, not taken as done).
        return action.model_copy(update={"before": {"status": None, "started": False},
                                         "intended": {"status": REQUESTED, "started": True}})

    @staticmethod
    def _execution_status(run: DrillRun, rt: ReactionRuntime) -> str:
        """The drill's execution's status (RUNNING, SUCCEEDED, FAILED... or MISSING: never started), looked up by
        its name (the drill id) when its ARN was not recorded yet. A drill whose execution never started, or
        ended without recording (stopped by hand, its last step failed), no longer blocks the next one."""
        if not rt.settings.workflow_arn:
            return "MISSING"
        flow = PromotionWorkflow(rt.clients, rt.settings.workflow_arn)
        return flow.status(run.execution_arn or flow.execution_arn(run.drill_id))

    def _plan_answer(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                     ) -> Action | Skip:
        # `approved` with the token still held: the approval's callback was not delivered (the workflow still
        # waits): the next approve_drill delivers it, a reject_drill rejects it.
        if run.status not in (AWAITING_APPROVAL, APPROVED) or not run.approval_token:
            return self._skip(intent, "not-awaiting-approval", f"drill {run.drill_id} is {run.status}"
                              + (f" ({run.outcome})" if run.outcome else "") + ": there is no approval to give")
        who = str(intent.params["operator"])
        if intent.operation == "approve_drill":
            if who == run.requested_by:
                # Four eyes, as the failover gate: the requester of a drill behind an approval cannot approve it.
                return self._skip(intent, "self-approval", f"drill {run.drill_id} was requested by {who}: another "
                                  "operator must approve it (it keeps waiting)")
            return self._action(intent, run, APPROVED, f"{intent.reason} (drill {run.drill_id})", approved_by=who)
        return self._action(intent, run, "rejected", f"{intent.reason} (drill {run.drill_id})", rejected_by=who)

    def _plan_await(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                    ) -> Action | Skip:
        if run.status not in (REQUESTED, AWAITING_APPROVAL):
            return self._skip(intent, "not-awaitable", f"drill {run.drill_id} is {run.status}")
        state = intent.params["state"]
        until = datetime.fromtimestamp(rt.clock.now().timestamp() + int(state["approval_timeout_s"]), tz=UTC)
        return self._action(intent, run, AWAITING_APPROVAL,
                            f"drill {run.drill_id} of {res.name} waits for approve_drill until {iso(until)} "
                            f"(requested by {run.requested_by}: {run.reason})")

    def _plan_restore(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                      ) -> Action | Skip:
        # The approval's callback reached the workflow (only approve_drill sends it) although the record was put
        # back to waiting (the approve's answer was lost after delivery): the drill is approved.
        callback = intent.params["state"].get("callback")
        delivered = isinstance(callback, dict) and bool(callback.get("approved_by"))
        if run.status not in (REQUESTED, APPROVED) and not (run.status == AWAITING_APPROVAL and delivered):
            return self._skip(intent, "not-startable", f"drill {run.drill_id} is {run.status}")
        if run.approval_required and run.status != APPROVED and not delivered:
            return self._action(intent, run, REFUSED, f"drill {run.drill_id} was never approved: no restore",
                                refusal="not approved")
        return self._action(intent, run, RESTORING, f"restore {res.name} into {run.copy_id} (drill {run.drill_id})")

    def _plan_poll(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                   ) -> Action | Skip:
        if run.status != RESTORING:
            return self._skip(intent, "not-restoring", f"drill {run.drill_id} is {run.status}")
        now = rt.clock.now().timestamp()
        status = restore_status(rt.clients, res, run.restore_job_id or "", run.copy_id, now)
        assert res.drill is not None
        elapsed = now - (run.restore_started_at or now)
        if status.state == "running":
            if elapsed > res.drill.restore_timeout_s:
                return self._action(intent, run, RESTORE_FAILED, f"restore {run.restore_job_id} still running after "
                                    f"{elapsed:.0f}s (drill.restore_timeout_s {res.drill.restore_timeout_s}s)",
                                    outcome="restore-timed-out")
            return self._skip(intent, "restore-in-progress", f"restore {run.restore_job_id} running for "
                              f"{elapsed:.0f}s", quiet=True)
        if status.state == "failed":
            return self._action(intent, run, RESTORE_FAILED, status.message, outcome="restore-failed",
                                copy_arn=status.copy_arn)
        return self._action(intent, run, RESTORED, f"restore {run.restore_job_id} completed: {status.copy_arn}",
                            copy_arn=status.copy_arn, completed_at=status.completed_at)

    def _plan_validate(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                       ) -> Action | Skip:
        from drills.drill_reaction import DrillReaction

        if run.status != RESTORED:
            return self._skip(intent, "not-restored", f"drill {run.drill_id} is {run.status}")
        job = {"RestoreJobId": run.restore_job_id or run.drill_id, "CreatedResourceArn": run.copy_arn,
               "SourceResourceArn": run.source_arn or "", "CreationDate": _iso(run.restore_started_at),
               "CompletionDate": _iso(run.restore_completed_at),
               "RecoveryPointCreationDate": _iso(run.recovery_point_time)}
        report = DrillReaction.judge(res, job, rt)
        outcome = wf.PASSED if report.passed and report.objectives_met else wf.FAILED
        return self._action(intent, run, VALIDATED, report.summary(), report=report.as_dict(), outcome=outcome)

    def _plan_teardown(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                       ) -> Action | Skip:
        if run.status in (TORN_DOWN, LEFTOVER, RECORDED):
            return self._skip(intent, "already-torn-down", f"drill {run.drill_id} is {run.status}")
        if run.status == REFUSED:
            return self._action(intent, run, TORN_DOWN, f"drill {run.drill_id}: no restore was started",
                                delete=False)
        names = copy_names(run)
        return self._action(intent, run, TORN_DOWN, f"delete {', '.join(names)}, the copy of drill {run.drill_id}"
                            + ("" if names == [run.copy_id] else f" (the restore created it, not the planned "
                                                                  f"{run.copy_id})"),
                            delete=True, caught=_caught(intent.params["state"]))

    def _plan_leftover(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                       ) -> Action | Skip:
        if run.status in (TORN_DOWN, LEFTOVER, RECORDED):
            return self._skip(intent, "already-torn-down", f"drill {run.drill_id} is {run.status}")
        why = _caught(intent.params["state"])
        names = copy_names(run)
        foreign = [n for n in names if not _is_drill_copy(res, n)]
        note = (f"; {', '.join(foreign)} is not a drill copy's name: never deleted by Reflex nor put in the ledger, "
                "check it by hand (the drill is recorded failed)") if foreign else ""
        return self._action(intent, run, LEFTOVER, f"{', '.join(names)} could not be deleted ({why}): recorded as a "
                            f"leftover, check_drills alarms on it until it is deleted{note}")

    def _plan_record(self, intent: Intent, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime
                     ) -> Action | Skip:
        if run.status == RECORDED:
            return self._skip(intent, "already-recorded", f"drill {run.drill_id} ended {run.outcome}")
        state = intent.params["state"]
        outcome = str(state.get("outcome") or run.outcome or "error")
        if outcome == wf.PASSED and run.status not in (TORN_DOWN,):
            outcome = "failed"  # passed validation but the copy was not deleted
        parts = [f"drill {run.drill_id} of {res.name}: {outcome}"]
        if outcome == wf.NOT_APPROVED:
            parts.append(f"nobody approved it within {state.get('approval_timeout_s')}s: no restore was started")
        if outcome == wf.REJECTED:
            parts.append("rejected: no restore was started")
        if run.detail:
            parts.append(run.detail)  # the validation's summary, or why the restore failed or was refused
        elif state.get("detail"):
            parts.append(str(state["detail"]))  # e.g. the kill switch refused the restore
        caught = _caught(state)
        if caught:
            parts.append(f"error: {caught}")
        if run.teardown:
            parts.append(f"teardown: {run.teardown}")
        return self._action(intent, run, RECORDED, "; ".join(p for p in parts if p), outcome=outcome)

    # ------------------------------------------------------------------ execute
    def execute(self, action: Action, res: ProtectedResource, rt: ReactionRuntime) -> None:
        runs = self._runs(rt)
        now = rt.clock.now().timestamp()
        op = action.operation
        p = action.params
        if op == "start_drill":
            self._execute_start(action, res, rt, now)
            return
        run = runs.load(str(p["drill_id"]))
        assert run is not None
        before = run.status
        if op in ("approve_drill", "reject_drill"):
            self._execute_answer(action, run, rt, before)
            return
        if op == wf.AWAIT_APPROVAL:
            # A retried step (the same status already) brings a new token: the newest one waits.
            run.status, run.approval_token = AWAITING_APPROVAL, self._token(action)
            if not runs.save(run, expect_status=before):
                raise RuntimeError(f"drill {run.drill_id} changed while its approval wait was set")
            return
        if op == wf.START_RESTORE:
            self._execute_restore(action, res, run, rt, now)
        elif op == wf.POLL_RESTORE:
            run.status = str(action.intended["status"])
            run.copy_arn = p.get("copy_arn") or run.copy_arn
            if run.status == RESTORED:
                run.restore_completed_at = float(p.get("completed_at") or now)
            else:
                run.outcome, run.detail = str(p["outcome"]), action.reason
        elif op == wf.VALIDATE:
            report = p["report"]
            publish_report(report, rt.config.stage, res.name)
            run.status, run.report, run.outcome, run.detail = VALIDATED, report, str(p["outcome"]), action.reason
        elif op == wf.TEARDOWN:
            self._execute_teardown(action, res, run, rt, now)
        elif op == wf.RECORD_LEFTOVER:
            store = self._ledgers(rt)
            ledger = store.load(res.name)
            # The copy the restore created (and the planned name): only drill-prefixed names, which are safe to
            # tell an operator to delete.
            new = [n for n in copy_names(run) if _is_drill_copy(res, n)
                   and all(c.identifier != n for c in ledger.copies)]
            for name in new:
                ledger.copies.append(Copy(job_id=run.restore_job_id or run.drill_id, identifier=name,
                                          window_ends_at=now, teardown_failed=True))
            if new:
                store.save(ledger)
            run.status, run.teardown = LEFTOVER, "deletion failed twice: recorded as a leftover (check_drills alarms)"
            foreign = [n for n in copy_names(run) if not _is_drill_copy(res, n)]
            if foreign:
                run.teardown += (f"; {', '.join(foreign)} is not a drill copy's name (the restore job created it): "
                                 "never deleted by Reflex nor put in the ledger, check it by hand")
        elif op == wf.RECORD_RESULT:
            self._execute_record(action, res, run, rt, now)
        if not runs.save(run, expect_status=before):
            raise RuntimeError(f"drill {run.drill_id} changed while {op} ran; the retry re-reads it")

    def _execute_start(self, action: Action, res: ProtectedResource, rt: ReactionRuntime, now: float) -> None:
        assert res.drill is not None
        p = action.params
        drill_id = str(p["drill_id"])
        runs = self._runs(rt)
        run = DrillRun(drill_id=drill_id, resource=res.name, requested_by=str(p["operator"]),
                       reason=str(p["request_reason"]), requested_at=now, copy_id=str(p["copy_id"]),
                       approval_required=bool(p["approval"]), recovery_point_arn=p.get("recovery_point_arn"))
        runs.save(run, expect_status=None)  # a retry finds it written: the same drill
        state = {"drill_id": drill_id, "resource": res.name, "approval": bool(p["approval"]),
                 "approval_timeout_s": res.drill.approval_timeout_s, "poll_interval_s": res.drill.poll_interval_s}
        # In flight (and the cooldown's start) *before* its workflow starts: a drill whose workflow runs is always
        # in the ledger, so no second drill of the resource can start beside it. A failed start blocks nothing:
        # the next start_drill finds no execution of the drill in flight (_plan_start).
        store = self._ledgers(rt)
        ledger = store.load(res.name)
        if ledger.active_drill != drill_id:
            self._abandon(ledger, rt, now)
            ledger.active_drill, ledger.last_drill_started_at = drill_id, now
            store.save(ledger)
        # A retry starts nothing new: the execution is named after the drill (ExecutionAlreadyExists).
        arn = PromotionWorkflow(rt.clients, rt.settings.workflow_arn).start(drill_id, state)
        run = runs.load(drill_id) or run
        if run.execution_arn != arn:
            run.execution_arn = arn
            runs.save(run)

    def _abandon(self, ledger: Any, rt: ReactionRuntime, now: float) -> None:
        """The drill in flight before this one ended without recording (its workflow was stopped or died): if it
        may have restored a copy that its teardown never deleted, the leftover check watches that copy now."""
        old = self._runs(rt).load(ledger.active_drill) if ledger.active_drill else None
        if old is None or old.status in (RECORDED, TORN_DOWN, LEFTOVER, REFUSED) or not old.restore_job_id:
            return
        if all(c.identifier != old.copy_id for c in ledger.copies):
            ledger.copies.append(Copy(job_id=old.restore_job_id, identifier=old.copy_id, window_ends_at=now,
                                      teardown_failed=True))

    def _execute_answer(self, action: Action, run: DrillRun, rt: ReactionRuntime, before: str) -> None:
        runs = self._runs(rt)
        token = run.approval_token
        assert token is not None
        flow = PromotionWorkflow(rt.clients, rt.settings.workflow_arn)
        if action.operation == "approve_drill":
            who = str(action.params["approved_by"])
            # The token stays in the record until the callback went through: an approval whose SendTaskSuccess
            # failed is not done (verify) and the next approve_drill delivers it.
            run.status, run.approved_by = APPROVED, who
            if not runs.save(run, expect_status=before):
                raise RuntimeError(f"drill {run.drill_id} stopped waiting for approval")
            try:
                flow.succeed(token, {"approved_by": who})
            except TokenGone:
                run.status, run.approved_by = AWAITING_APPROVAL, None
                runs.save(run, expect_status=APPROVED)
                raise DrillRefused(f"drill {run.drill_id}'s approval wait already ended (timed out): it approved "
                                   "nothing; no restore is started") from None
            except Exception:
                # Not delivered (throttled, ...): the drill still waits; the record says so (best effort: a record
                # left `approved` with its token is retried the same way).
                run.status, run.approved_by = AWAITING_APPROVAL, None
                runs.save(run, expect_status=APPROVED)
                raise
            run.approval_token = None
            runs.save(run, expect_status=APPROVED)
            return
        run.status, run.approval_token = "rejected", None
        run.detail = action.reason
        if not runs.save(run, expect_status=before):
            raise RuntimeError(f"drill {run.drill_id} stopped waiting for approval")
        flow.fail(token, wf.REJECTED_ERROR, run.detail)

    def _execute_restore(self, action: Action, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime,
                         now: float) -> None:
        if action.intended["status"] == REFUSED:
            run.status, run.outcome, run.detail = REFUSED, "refused", action.reason
            return
        if run.status == AWAITING_APPROVAL:  # approved by the delivered callback (_plan_restore)
            callback = action.params["state"].get("callback") or {}
            run.approved_by, run.approval_token = str(callback.get("approved_by")), None
        try:
            started = start_restore(rt.clients, res, drill_id=run.drill_id, copy_id=run.copy_id,
                                    vault=rt.config.recovery.vault_name, role_arn=os.environ.get(RESTORE_ROLE_ENV, ""),
                                    recovery_point_arn=run.recovery_point_arn)
        except DrillRefused as err:
            # Nothing was started: the drill is refused, recorded as such (no teardown needed).
            run.status, run.outcome, run.detail = REFUSED, "refused", str(err)[:1000]
            return
        run.status = RESTORING
        run.restore_job_id, run.recovery_point_arn = started.restore_job_id, started.recovery_point_arn
        run.source_arn, run.recovery_point_time = started.source_arn, started.recovery_point_time
        run.restore_started_at = now

    def _execute_teardown(self, action: Action, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime,
                          now: float) -> None:
        if not action.params.get("delete"):
            run.status, run.teardown = TORN_DOWN, "nothing to delete (no restore was started)"
            return
        results: list[str] = []
        refused: list[str] = []
        for name in copy_names(run):
            # The copy the restore created (DescribeRestoreJob's CreatedResourceArn), then the planned name:
            # delete_copy refuses any name that is not a drill copy's (never deletes anything else).
            try:
                done = delete_copy(rt.clients, res, name)
            except DrillRefused as err:
                refused.append(str(err))
                continue
            if done.endswith("already gone") and run.status not in (RESTORED, VALIDATED):
                # The restore may still be making the copy (timed out, or the workflow lost its answer): watch it.
                store = self._ledgers(rt)
                ledger = store.load(res.name)
                if all(c.identifier != name for c in ledger.copies):
                    ledger.copies.append(Copy(job_id=run.restore_job_id or run.drill_id, identifier=name,
                                              window_ends_at=now))
                    store.save(ledger)
                done += " (watched: a copy appearing later alarms as a leftover)"
            results.append(done)
        if refused:
            # The step fails (retried once, then record_leftover): the drill is recorded failed, never passed.
            raise DrillRefused("; ".join(refused + results))
        run.status, run.teardown = TORN_DOWN, "; ".join(results)

    def _execute_record(self, action: Action, res: ProtectedResource, run: DrillRun, rt: ReactionRuntime,
                        now: float) -> None:
        outcome = str(action.params["outcome"])
        store = self._ledgers(rt)
        ledger = store.load(res.name)
        ledger.last_result_at = now
        ledger.last_report = (run.report or {}) | {"drill_id": run.drill_id, "outcome": outcome,
                                                   "passed": outcome == wf.PASSED, "detail": action.reason[:1000]}
        if outcome == wf.PASSED:
            ledger.last_success_at = now
        if run.restore_job_id and run.restore_job_id not in ledger.judged_jobs:
            ledger.judged_jobs.append(run.restore_job_id)
        if ledger.active_drill == run.drill_id:
            ledger.active_drill = None
        store.save(ledger)
        if outcome not in (wf.NOT_APPROVED, wf.REJECTED):
            # A drill nobody approved did not fail: it did not run (audited as such).
            stage = rt.config.stage
            publish("DrillPassed", 1 if outcome == wf.PASSED else 0, "Count", stage=stage, resource=res.name)
            publish("DrillFailed", 0 if outcome == wf.PASSED else 1, "Count", stage=stage, resource=res.name)
        run.status, run.outcome, run.approval_token = RECORDED, outcome, None
        run.detail = action.reason[:1000]

    # ------------------------------------------------------------------ verify
    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        run = self._runs(rt).load(str(action.params["drill_id"]))
        if run is None:
            return {"status": None, "started": False} if action.operation == "start_drill" else {"status": None}
        view = run.view()
        verdict = VERDICT_OF_STATUS.get(run.status)
        if verdict:
            view["verdict"] = verdict
        if action.operation == "approve_drill" and run.status == APPROVED and run.approval_token:
            # Recorded approved, but the callback was not delivered: the workflow still waits, nothing approved.
            return {"status": "approval-not-delivered", "workflow": view}
        if action.operation == "start_drill":
            # The drill moves on by itself once started: what this action did is the record and the execution.
            started = run.execution_arn is not None or self._execution_status(run, rt) != "MISSING"
            return {"status": REQUESTED, "started": started, "workflow": view}
        return {"status": run.status, "workflow": view}


def copy_names(run: DrillRun) -> list[str]:
    """What a teardown deletes: the copy the restore created (its CreatedResourceArn, recorded by the poll) and
    the planned name (the copy AWS Backup was asked to create), the created one first."""
    created = identifier_from_arn(run.copy_arn) if run.copy_arn else ""
    return [created, run.copy_id] if created and created != run.copy_id else [run.copy_id]


def _is_drill_copy(res: ProtectedResource, name: str) -> bool:
    return name != res.identifier and name.startswith(res.isolation.name_prefix)


def flow_view(run: DrillRun) -> dict[str, Any]:
    """The workflow state a step that finds the drill past it hands back: the drill's record and the verdict its
    status dictates. Any other status (validated, torn down, leftover, recorded...) gets `ended`, which every
    Choice routes onwards (to Teardown, which carries on to Record), never back to a wait."""
    view = run.view()
    view["verdict"] = VERDICT_OF_STATUS.get(run.status, wf.ENDED)
    return view


def _target(res: ProtectedResource) -> dict[str, Any]:
    return res.model_dump(mode="json", include={"kind", "identifier"})


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=UTC).isoformat()


def _caught(state: dict[str, Any]) -> str:
    err = state.get("error")
    if not isinstance(err, dict):
        return ""
    return f"{err.get('Error')}: {str(err.get('Cause') or '')[:300]}"


def publish_report(report: dict[str, Any], stage: str, resource: str) -> None:
    """The metrics of a judged copy (restore testing or on-demand)."""
    publish("DrillRtoSeconds", report["rto_s"], "Seconds", stage=stage, resource=resource)
    if report["rpo_s"] is not None:
        publish("DrillRpoSeconds", report["rpo_s"], "Seconds", stage=stage, resource=resource)
    publish("DrillValidationSeconds", report["validation_s"], "Seconds", stage=stage, resource=resource)
    publish("DrillObjectiveMissed", 0 if report["objectives_met"] else 1, "Count", stage=stage, resource=resource)
    publish("DrillIsolationViolation", 0 if report["isolated"] else 1, "Count", stage=stage, resource=resource)
