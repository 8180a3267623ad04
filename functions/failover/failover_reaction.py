"""The failover reaction: regional failover of an Aurora Global Database (and its Route 53 failover records) on the
shared pipeline, behind an approval gate.

Console commands (docs/runbooks/region-loss.md; events/failover/):

* `plan_failover` -> read-only: the pre-checks (prechecks.py) and what would be done (always a dry run).
* `failover` (mode switchover | failover) and `failback` -> pre-checks; refused with the reason, or the run is
  recorded (`failover#<name>`: one run in flight per global database) and the workflow started (execution named
  after the run, itself derived from the command's idempotency key: a repeated command starts nothing new).
* `approve_failover` / `reject_failover` -> complete the gate's callback token (approver != requester). A reject
  cancels any run that has not acted (even approved, held by the kill switch); it also closes a run that acted and
  whose workflow has ended (CloseFailed). A run whose workflow never started or has ended holds nothing.

Workflow steps (`reflex_step`, workflow_definition.py): `wait_for_approval` stores the token; `act` re-runs the
pre-checks (state may have changed while waiting) and calls SwitchoverGlobalCluster or FailoverGlobalCluster;
`await_writer` polls until the target is the writer; `route` re-reads the writer and swaps the Route 53 failover
roles only if it is the target; `complete` verifies and records; `close` records a run that ends otherwise (not
approved, refused, failed; the latter is paged).

Every step passes the same guardrails (kill switch, lock per global cluster, rate limit, cooldown, dry-run) and
leaves an audit record. The act's write-ahead intent is scoped to the run, so whatever retries it (Lambda, the
workflow's Retry, a redelivery) completes the one decision instead of promoting again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from failover import failover_runs as runs
from failover import workflow_definition as wf
from failover.failover_commands import (
    ApproveFailover,
    FailoverCommand,
    PlanFailover,
    RejectFailover,
    StartFailback,
    StartFailover,
    WorkflowState,
    validate_command,
    validate_step,
)
from failover.failover_runs import FailoverRun, RunStore
from failover.global_database import CHANGING, GlobalDatabase, cluster_id_of
from failover.prechecks import Mode, PrecheckReport, run_prechecks
from reflex_core.actions import Action, Intent, Skip
from reflex_core.clock import iso
from reflex_core.observability import logger
from reflex_core.pipeline import GuardSettings, Reconciled, Superseded
from reflex_core.recovery_config import Failover, RecoveryStageConfig
from reflex_core.runtime import Runtime
from reflex_core.state_store import AlarmMemory
from reflex_core.step_results import TaskTokens
from reflex_core.triggers import Trigger, TriggerError

ReactionRuntime = Runtime[RecoveryStageConfig]
# Every executed step of a run counts in the global database's rate window (a run is about 7: start, gate, approve,
# act, promoted, route, complete); past this many in an hour the act is refused. Repeated promotions are stopped
# first by the one-run-in-flight record and the cooldown (`cooldown_s`) between two acts.
MAX_ACTIONS_PER_HOUR = 20
_TOKEN_CACHE = 64
_GONE_TOKEN = frozenset({"TaskTimedOut", "TaskDoesNotExist", "InvalidToken"})
NOT_STARTED = "NOT-STARTED"  # the run's execution does not exist


class GateGone(RuntimeError):
    """The approval gate no longer waits (timed out, or the execution ended): nothing was approved."""


class FailoverReaction:
    name = "failover"
    config_model = RecoveryStageConfig

    def __init__(self) -> None:
        # Callback tokens of the gate steps being handled, by fingerprint: tokens never enter the audit trail.
        self._tokens = TaskTokens(_TOKEN_CACHE)

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> Any:
        if trigger.kind == "console":
            return validate_command(trigger.payload, rt.config)
        if trigger.kind == "step" and trigger.step is not None:
            step = trigger.step
            return validate_step(step.step, step.task_token is not None, step.input, rt.config)
        raise TriggerError([f"<root>: the failover function takes console commands and its workflow's steps "
                            f"(got {trigger.kind})"])

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        return []

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        if isinstance(request, WorkflowState):
            assert trigger.step is not None
            target = self._target(request.failover, rt)
            params: dict[str, Any] = {"run_id": request.run_id, "mode": request.mode,
                                      "execution": trigger.step.execution, "closing": request.closing,
                                      "error": _error_of(request)}
            if trigger.step.task_token:
                params["token_ref"] = self._tokens.remember(trigger.step.task_token)
            op = {wf.APPROVAL: "open_gate"}.get(trigger.step.step, trigger.step.step)
            return [_intent(target, op, f"workflow step {trigger.step.step} of {request.run_id}",
                            quiet=op == wf.AWAIT_WRITER, **params)]
        command: FailoverCommand = request
        target = self._target(command.failover, rt)
        who = command.operator
        base: dict[str, Any] = {"operator": who, "why": command.reason}
        if isinstance(command, PlanFailover):
            return [_intent(target, "plan", f"plan_failover ({command.mode}) by {who}: {command.reason}",
                            dry_run=True, mode=command.mode, accept_data_loss_s=command.accept_data_loss_s, **base)]
        if isinstance(command, StartFailover | StartFailback):
            mode: Mode = "failback" if isinstance(command, StartFailback) else command.mode
            loss = command.accept_data_loss_s if isinstance(command, StartFailover) else None
            run_id = f"fo-{target.name}-{hashlib.sha256(trigger.idempotency_key.encode()).hexdigest()[:16]}"
            return [_intent(target, "start", f"{command.command} ({mode}) by {who}: {command.reason}",
                            dry_run=command.dry_run, mode=mode, accept_data_loss_s=loss, run_id=run_id, **base)]
        op = "approve" if isinstance(command, ApproveFailover) else "reject"
        assert isinstance(command, ApproveFailover | RejectFailover)
        return [_intent(target, op, f"{command.command} by {who}: {command.reason}", dry_run=command.dry_run,
                        run_id=command.run_id, **base)]

    def intent_scope(self, trigger: Trigger, intent: Intent) -> str | None:
        """The act of a run is one decision, whatever invocation (retry, redelivery) carries it."""
        if intent.operation == wf.ACT:
            return f"failover-run:{intent.params['run_id']}:act"
        return None

    def _token(self, action: Action) -> str:
        return self._tokens.of(action)

    # ------------------------------------------------------------------ guard settings
    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        return {f.key for f in rt.config.recovery.failover}

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        target = self._target(intent.policy, rt)
        op = intent.operation
        # Read-only (`plan`) and stopping (`reject`, `close`) run at kill-switch level `on`; `hard-stop` stops them.
        safety = op in ("plan", "reject", "close")
        return GuardSettings(out_cooldown_s=target.cooldown_s, in_cooldown_s=0,
                             max_actions_per_hour=MAX_ACTIONS_PER_HOUR, circuit_open_for_s=3600,
                             dry_run=rt.config.dry_run or op == "plan", bypass_rate_limit=op != wf.ACT,
                             safety=safety)

    @staticmethod
    def _target(name: str, rt: ReactionRuntime) -> Failover:
        target = rt.config.recovery.failover_target(name)
        if target is None:
            raise LookupError(f"no failover {name}")
        return target

    # ------------------------------------------------------------------ plan
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        target = self._target(intent.policy, rt)
        planner: dict[str, Callable[[Intent, Failover, ReactionRuntime], Action | Skip]] = {
            "plan": self._plan_start, "start": self._plan_start, "approve": self._plan_approve,
            "reject": self._plan_reject, "open_gate": self._plan_open_gate, wf.ACT: self._plan_act,
            wf.AWAIT_WRITER: self._plan_await_writer, wf.ROUTE: self._plan_route, wf.COMPLETE: self._plan_complete,
            wf.CLOSE: self._plan_close,
        }
        return planner[intent.operation](intent, target, rt)

    def _prechecks(self, target: Failover, rt: ReactionRuntime, mode: Mode, loss: int | None) -> PrecheckReport:
        resource = rt.config.recovery.resource(target.resource)
        assert resource is not None  # checked by the config's validation
        return run_prechecks(GlobalDatabase(rt.clients, target), target, resource.identifier,
                             resource.objectives.rpo_s, mode, rt.clock.now(), loss)

    def _plan_start(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        p = intent.params
        report = self._prechecks(target, rt, p["mode"], p.get("accept_data_loss_s"))
        record = _runs(rt).load(target.name)
        now = rt.clock.now().timestamp()
        before: dict[str, Any] = {"prechecks": report.as_dict(),
                                  "run": record.run.public() if record.run else None}
        if not report.passed:
            return _skip(intent, "precheck-refused", report.summary(), before)
        replaces: str | None = None
        if intent.operation == "start":
            run = record.run
            if run is not None and run.run_id == p["run_id"] and run.status in runs.ENDED:
                # The same request id (idempotency key) as a run that has ended (the idempotency window passed):
                # its workflow cannot be started again under the same name.
                return _skip(intent, "request-id-used", f"this command's request_id was used by run {run.run_id}, "
                             f"which ended {run.status}; send it with a new request_id to start a new run", before)
            if run is not None and run.in_flight(now) and run.run_id != p["run_id"]:
                workflow = self._workflow_status(rt, run.run_id)
                if workflow in (None, "RUNNING"):
                    return _skip(intent, "failover-in-flight", f"run {run.run_id} ({run.mode}, {run.status}, asked "
                                 f"by {run.requested_by}) holds {target.global_cluster}; reject it or let it end",
                                 before)
                # Its workflow never started or has ended (e.g. CloseFailed): the run no longer holds anything; the
                # pre-checks above read the global database as it is now.
                before["replaces"] = {"run": run.run_id, "status": run.status, "workflow": workflow}
                replaces = run.run_id
            last = rt.store.last_actions(target.key).get("out")
            if last is not None and now - last < target.cooldown_s:
                return _skip(intent, "cooldown", f"{target.global_cluster} was promoted {now - last:.0f}s ago "
                             f"(cooldown {target.cooldown_s}s)", before)
        deadline = now + target.approval_timeout_s
        return _action(intent, "start" if intent.operation == "start" else report.mode, before,
                       {"run": p.get("run_id"), "status": runs.STARTED, "execution": "RUNNING"},
                       f"{intent.reason} -> {report.summary()}; then waits for approve_failover until "
                       f"{iso(datetime.fromtimestamp(deadline, tz=UTC))}",
                       source=report.source_arn, target_arn=report.target_arn, deadline=deadline, replaces=replaces)

    def _workflow_status(self, rt: ReactionRuntime, run_id: str) -> str | None:
        """The status of run `run_id`'s execution (RUNNING, SUCCEEDED, FAILED, ...; NOT-STARTED when it does not
        exist), or None when Step Functions could not be read (then the run is taken as running)."""
        try:
            resp = rt.clients.stepfunctions.describe_execution(executionArn=self._execution_arn(rt, run_id))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
                return NOT_STARTED
            logger.warning("could not read the run's execution", extra={"run": run_id, "error": str(err)})
            return None
        return str(resp.get("status") or "") or None

    def _execution_arn(self, rt: ReactionRuntime, run_id: str) -> str:
        head, _, machine = self._state_machine(rt).rpartition(":stateMachine:")
        return f"{head}:execution:{machine}:{run_id}"

    def _plan_approve(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        run = _runs(rt).load(target.name).run
        who = str(intent.params["operator"])
        if (run is not None and run.status == runs.APPROVED and run.approval_token
                and intent.params.get("run_id") in (None, run.run_id)):
            # Approved in the record, but the gate's callback did not go through (the approval was interrupted):
            # complete it (by the approver on record; a second operator's approve adds nothing else).
            return _action(intent, "approve", {"run": run.run_id, "status": run.status},
                           {"status": runs.APPROVED, "approved_by": run.approved_by, "callback": "success"},
                           f"{intent.reason} (completing the approval by {run.approved_by})", run_id=run.run_id)
        checked = self._waiting(intent, run, rt)
        if isinstance(checked, Skip):
            return checked
        if checked.status == runs.STARTED:
            return _skip(intent, "gate-not-open", f"run {checked.run_id} is starting: its gate is not open yet; "
                         "send approve_failover again in a few seconds", {"run": checked.public()}, transient=True)
        if who == checked.requested_by:
            return _skip(intent, "self-approval", f"{who} asked for run {checked.run_id}; another operator must "
                         "approve it", {"run": checked.public()})
        return _action(intent, "approve", {"run": checked.run_id, "status": checked.status},
                       {"status": runs.APPROVED, "approved_by": who, "callback": "success"}, intent.reason,
                       run_id=checked.run_id)

    def _plan_reject(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        """An operator's stop: cancels the run as long as it has not acted (waiting at the gate, approved but its
        callback pending, or approved and held before the act by the kill switch or the lock)."""
        run = _runs(rt).load(target.name).run
        wanted = intent.params.get("run_id")
        if run is not None and run.status in runs.IN_FLIGHT and not run.not_acted and (
                wanted in (None, run.run_id)):
            workflow = self._workflow_status(rt, run.run_id)
            if workflow not in (None, "RUNNING"):
                # The run acted, then its workflow ended without closing it (CloseFailed): the operator closes it.
                return _action(intent, "reject", {"run": run.run_id, "status": run.status, "workflow": workflow},
                               {"status": runs.FAILED}, f"{intent.reason} (closing run {run.run_id}: its workflow "
                               f"ended {workflow} after the database call; check the writer)", run_id=run.run_id,
                               ended=workflow)
        if run is None or not run.not_acted:
            if run is not None and run.status in runs.IN_FLIGHT:
                last = (f"run {run.run_id} is {run.status}: the database call was made (or may have been); a "
                        "reject cannot undo it (runbook: check the writer)")
            else:
                last = f"the last run ({run.run_id}) is {run.status}" if run else "there has been none"
            return _skip(intent, "no-run-waiting", f"no failover run is waiting to act; {last}",
                         {"run": run.public() if run else None})
        if wanted and wanted != run.run_id:
            return _skip(intent, "other-run", f"run {wanted} is not the current one ({run.run_id})",
                         {"run": run.public()})
        return _action(intent, "reject", {"run": run.run_id, "status": run.status},
                       {"status": runs.NOT_APPROVED}, intent.reason, run_id=run.run_id)

    @staticmethod
    def _waiting(intent: Intent, run: FailoverRun | None, rt: ReactionRuntime) -> FailoverRun | Skip:
        wanted = intent.params.get("run_id")
        now = rt.clock.now().timestamp()
        if run is None or run.status not in (runs.STARTED, runs.AWAITING_APPROVAL) or not run.in_flight(now):
            last = f"the last run ({run.run_id}) is {run.status}" if run else "there has been none"
            return _skip(intent, "no-run-waiting", f"no failover run is waiting for approval; {last}",
                         {"run": run.public() if run else None})
        if wanted and wanted != run.run_id:
            return _skip(intent, "other-run", f"run {wanted} is not the one waiting ({run.run_id})",
                         {"run": run.public()})
        return run

    def _own_run(self, intent: Intent, target: Failover, rt: ReactionRuntime,
                 statuses: frozenset[str]) -> FailoverRun | Skip:
        run = _runs(rt).load(target.name).run
        if run is None or run.run_id != intent.params["run_id"]:
            return _skip(intent, "run-closed", f"run {intent.params['run_id']} is not the current run of "
                         f"{target.name} ({run.run_id if run else 'none'})", {"run": run.public() if run else None})
        if run.status not in statuses:
            return _skip(intent, "run-closed", f"run {run.run_id} is {run.status}: {run.detail}",
                         {"run": run.public()})
        return run

    def _plan_open_gate(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        run = _runs(rt).load(target.name).run
        mine = run is not None and run.run_id == intent.params["run_id"]
        if not mine or run is None or run.status not in (runs.STARTED, runs.AWAITING_APPROVAL):
            why = f"run {intent.params['run_id']} is {run.status if mine and run else 'gone'}"
            # The gate closes at once: rejected before it opened, or the run ended (the workflow then closes).
            return _action(intent, "close_gate", {"run": run.public() if run else None},
                           {"callback": "failure", "error": wf.REJECTED_ERROR}, why)
        deadline = datetime.fromtimestamp(run.approval_deadline, tz=UTC)
        return _action(intent, "open_gate", {"run": run.run_id, "status": run.status},
                       {"status": runs.AWAITING_APPROVAL},
                       f"run {run.run_id} ({run.mode}, asked by {run.requested_by}) waits for approve_failover by "
                       f"another operator until {iso(deadline)}; then it is not approved and nothing is done")

    def _plan_act(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        checked = self._own_run(intent, target, rt, frozenset({runs.APPROVED, runs.PROMOTING, runs.PROMOTED,
                                                               runs.COMPLETED}))
        if isinstance(checked, Skip):
            return checked
        # Only the run record says approved (written by `approve_failover` before it completes the gate): a step
        # payload claiming an approval is never taken for one.
        if checked.status != runs.APPROVED:
            return _skip(intent, "already-promoted", f"run {checked.run_id} is {checked.status}: it acted already",
                         {"run": checked.public()})
        mode: Mode = checked.mode  # type: ignore[assignment]
        report = self._prechecks(target, rt, mode, checked.accept_data_loss_s)
        before = {"writer": report.state.get("writer"), "prechecks": report.as_dict()}
        if report.passed and report.target_arn != checked.target_arn:
            report.problems.append(f"the target is now {report.target_arn}, not the approved {checked.target_arn}")
        if not report.passed:
            return _skip(intent, "precheck-refused", f"after the approval: {report.summary()}", before, page=True)
        return _action(intent, wf.ACT, before, {"writer": checked.target_arn, "workflow": {"verdict": wf.CONTINUE}},
                       f"{report.mode} approved by {checked.approved_by}: {report.summary()}", direction="out",
                       api=report.api, source=checked.source_arn, target_arn=checked.target_arn)

    def _plan_await_writer(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        checked = self._own_run(intent, target, rt, frozenset({runs.PROMOTING, runs.PROMOTED, runs.COMPLETED}))
        if isinstance(checked, Skip):
            return checked
        state = GlobalDatabase(rt.clients, target).state(target.secondary_region)
        if checked.status != runs.PROMOTING:
            return _skip(intent, "already-promoted", f"run {checked.run_id} is {checked.status}", state.as_dict())
        if state.writer == checked.target_arn and state.status == "available" and not state.failover_state:
            return _action(intent, "promoted", {"status": checked.status, **state.as_dict()},
                           {"status": runs.PROMOTED, "workflow": {"verdict": wf.CONTINUE}},
                           f"{cluster_id_of(checked.target_arn)} is the writer of {target.global_cluster}")
        waited = rt.clock.now().timestamp() - (checked.acted_at or checked.updated_at)
        if waited > target.promotion_timeout_s:
            return _skip(intent, "promotion-stuck", f"{target.global_cluster} still shows writer {state.writer} "
                         f"({state.status}) {waited:.0f}s after the {checked.mode}; see the runbook",
                         state.as_dict(), page=True)
        return _skip(intent, "promotion-in-progress", f"{target.global_cluster} {state.status}, writer "
                     f"{state.writer}; waited {waited:.0f}s", state.as_dict(), quiet=True)

    def _plan_route(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        checked = self._own_run(intent, target, rt, frozenset({runs.PROMOTED}))
        if isinstance(checked, Skip):
            return checked
        if not target.dns:
            return _skip(intent, "no-route53", f"{target.name} has no Route 53 record configured; the global "
                         "database's writer endpoint follows the promotion by itself", {"run": checked.run_id})
        db = GlobalDatabase(rt.clients, target)
        # The run record says promoted, but the writer may have moved since (a manual switchover, an AWS-side
        # recovery): the swap follows only what the global cluster shows now.
        state = db.state(target.secondary_region)
        if state.writer != checked.target_arn or state.failover_state:
            return _skip(intent, "writer-moved", f"the writer of {target.global_cluster} is {state.writer} "
                         f"({state.status}), not {cluster_id_of(checked.target_arn)} as run {checked.run_id} "
                         "recorded: Route 53 not swapped; check the writer (runbook)", state.as_dict(), page=True)
        records = db.records()
        wanted = _set_of(target, checked.target_arn, list(records.records))
        current = records.primary_set()
        if wanted is None:
            return _skip(intent, "verify-failed", f"Route 53: the failover records of {target.record_name} are not "
                         f"the configured pair ({sorted(records.records)})", {"primary_set": current}, page=True)
        if current == wanted:
            return _skip(intent, "already-routed", f"{wanted} is PRIMARY already", {"primary_set": current})
        return _action(intent, wf.ROUTE, {"primary_set": current},
                       {"primary_set": wanted, "workflow": {"verdict": wf.CONTINUE}},
                       f"Route 53 {target.record_name}: {wanted} becomes PRIMARY, {current} SECONDARY",
                       set_identifier=wanted, target_arn=checked.target_arn)

    def _plan_complete(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        checked = self._own_run(intent, target, rt, frozenset({runs.PROMOTED, runs.COMPLETED}))
        if isinstance(checked, Skip):
            return checked
        seen = self._observed(target, checked.target_arn, rt)
        problems = []
        if seen["writer"] != checked.target_arn:
            problems.append(f"the writer is {seen['writer']}, not {checked.target_arn}")
        if target.dns and seen.get("primary_set") != seen.get("wanted_set"):
            problems.append(f"Route 53 PRIMARY is {seen.get('primary_set')}, not {seen.get('wanted_set')}")
        if problems:
            return _skip(intent, "verify-failed", "; ".join(problems), seen, page=True)
        if checked.status == runs.COMPLETED:
            return _skip(intent, "already-promoted", f"run {checked.run_id} completed already", seen)
        waited = rt.clock.now().timestamp() - (checked.acted_at or checked.created_at)
        return _action(intent, wf.COMPLETE, {"status": checked.status, **seen},
                       {"status": runs.COMPLETED, "workflow": {"verdict": wf.CONTINUE}},
                       f"{checked.mode} of {target.global_cluster} done: {cluster_id_of(checked.target_arn)} is the "
                       f"writer{' and its record is PRIMARY' if target.dns else ''}; {waited:.0f}s after acting "
                       f"(asked by {checked.requested_by}, approved by {checked.approved_by})")

    def _plan_close(self, intent: Intent, target: Failover, rt: ReactionRuntime) -> Action | Skip:
        """The run ends otherwise than completed: recorded here (the only write; idempotent, fenced by the run's
        status), audited as a skip: nothing is done to the database."""
        closing = str(intent.params["closing"])
        error = intent.params.get("error") or ""
        store = _runs(rt)
        record = store.load(target.name)
        run = record.run
        now = rt.clock.now().timestamp()
        status = {"not-approved": runs.NOT_APPROVED, "refused": runs.REFUSED, "failed": runs.FAILED}[closing]
        if run is None or run.run_id != intent.params["run_id"]:
            return _skip(intent, "run-closed", f"run {intent.params['run_id']} is not current", None, quiet=True)
        detail = run.detail
        if run.status in runs.IN_FLIGHT:
            if closing == "not-approved":
                detail = f"not approved within {target.approval_timeout_s}s (gate timed out); nothing was done"
            elif closing == "failed":
                if run.acted_at:
                    acted = "the database call was made: check the writer (runbook)"
                elif run.attempted_at:
                    acted = ("the database call was attempted and may have landed (its answer is unknown): check "
                             "the writer (runbook)")
                else:
                    acted = "nothing was done to the database"
                detail = f"failed: {error or 'a step failed after its retries'}; {acted}"
            else:
                detail = "a pre-check after the approval refused; nothing was done"
            store.update_run(target.name, run.run_id, runs.IN_FLIGHT, status=status, detail=detail[:1000],
                             approval_token=None, updated_at=now)
        before = {"run": run.run_id, "status": run.status}
        if closing == "failed" and run.status == runs.NOT_APPROVED and not (run.acted_at or run.attempted_at):
            # Rejected by an operator after its gate (e.g. held before the act): the act refused; nothing failed.
            return _skip(intent, "not-approved", f"run {run.run_id} ({run.mode}) {detail}", before)
        if closing == "not-approved":
            return _skip(intent, "not-approved", f"run {run.run_id} ({run.mode}) {detail}", before)
        if closing == "failed":
            return _skip(intent, "failover-failed", f"run {run.run_id} ({run.mode}) {detail}", before, page=True)
        return _skip(intent, "run-closed", f"run {run.run_id} refused after approval", before, quiet=True)

    def _observed(self, target: Failover, target_arn: str, rt: ReactionRuntime) -> dict[str, Any]:
        db = GlobalDatabase(rt.clients, target)
        state = db.state(target.secondary_region)
        seen: dict[str, Any] = {"writer": state.writer, "global_status": state.status}
        if target.dns:
            records = db.records()
            seen["primary_set"] = records.primary_set()
            seen["wanted_set"] = _set_of(target, target_arn, list(records.records))
        return seen

    # ------------------------------------------------------------------ execute
    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        target = self._target(action.policy, rt)
        op = action.operation
        now = rt.clock.now().timestamp()
        store = _runs(rt)
        p = action.params
        if op == "start":
            self._execute_start(action, target, rt, now)
        elif op == "open_gate":
            token = self._token(action)
            if store.update_run(target.name, p["run_id"], frozenset({runs.STARTED, runs.AWAITING_APPROVAL}),
                                status=runs.AWAITING_APPROVAL, approval_token=token, updated_at=now) is None:
                self._fail_token(rt, token, wf.REJECTED_ERROR, "the run ended before its gate opened")
        elif op == "close_gate":
            self._fail_token(rt, self._token(action), wf.REJECTED_ERROR, action.reason)
        elif op == "approve":
            self._execute_approve(action, target, rt, now)
        elif op == "reject" and p.get("ended"):
            if store.update_run(target.name, p["run_id"], runs.IN_FLIGHT, require=lambda r: not r.not_acted,
                                status=runs.FAILED, approval_token=None, updated_at=now,
                                detail=f"closed by {p['operator']} after its workflow ended {p['ended']}: "
                                       f"{p['why']}; the database call was made: check the writer"[:1000]) is None:
                raise Superseded("run-closed", f"run {p['run_id']} changed meanwhile: not closed")
        elif op == "reject":
            # The record first, fenced on the run not having acted (the act's mark is fenced the same way): from
            # then on the act step refuses; then the gate (if it still waits) fails.
            run = store.load(target.name).run
            gate_token = run.approval_token if run is not None and run.run_id == p["run_id"] else None
            if store.update_run(target.name, p["run_id"], runs.BEFORE_ACTING, require=lambda r: r.not_acted,
                                status=runs.NOT_APPROVED, approval_token=None, updated_at=now,
                                detail=f"rejected by {p['operator']}: {p['why']}; nothing was done"[:1000]) is None:
                raise Superseded("run-acted", f"run {p['run_id']} acted or ended meanwhile: nothing rejected")
            if gate_token:
                self._fail_token(rt, gate_token, wf.REJECTED_ERROR, f"rejected by {p['operator']}")
        elif op == wf.ACT:
            # Write-ahead mark, conditional on the run still approved and not rejected: an approval cancelled while
            # the act waited (kill switch, lock) is never acted on; after this the call may have landed.
            if store.update_run(target.name, p["run_id"], frozenset({runs.APPROVED}), attempted_at=now,
                                updated_at=now) is None:
                raise Superseded("run-closed", f"run {p['run_id']} is no longer approved (rejected or ended): "
                                 "nothing was done to the database")
            db = GlobalDatabase(rt.clients, target)
            try:
                if p["api"] == "failover":
                    db.failover(str(p["target_arn"]))
                else:
                    db.switchover(str(p["target_arn"]))
            except ClientError:
                # RDS answered with an error: the call was refused, nothing was done (unlike a lost answer).
                store.update_run(target.name, p["run_id"], frozenset({runs.APPROVED}), attempted_at=None,
                                 updated_at=now)
                raise
        elif op == "promoted":
            store.update_run(target.name, p["run_id"], frozenset({runs.PROMOTING}), status=runs.PROMOTED,
                             updated_at=now)
        elif op == wf.ROUTE:
            db = GlobalDatabase(rt.clients, target)
            writer = db.state(target.secondary_region).writer
            if writer != p["target_arn"]:
                raise WriterMoved(f"the writer is {writer} now, not {p['target_arn']}: not swapping Route 53")
            records = db.records()
            if records.primary_set() != action.before.get("primary_set"):
                raise RecordsMoved(f"Route 53 PRIMARY is {records.primary_set()} now, not "
                                   f"{action.before.get('primary_set')} as planned: not swapping")
            db.make_primary(records, str(p["set_identifier"]))
        elif op == wf.COMPLETE:
            store.update_run(target.name, p["run_id"], frozenset({runs.PROMOTED}), status=runs.COMPLETED,
                             updated_at=now, detail=action.reason[:1000])
        else:
            raise ValueError(f"unknown operation {op}")

    def _execute_start(self, action: Action, target: Failover, rt: ReactionRuntime, now: float) -> None:
        p = action.params
        store = _runs(rt)
        record = store.load(target.name)
        if record.run is None or record.run.run_id != p["run_id"]:
            if (record.run is not None and record.run.in_flight(now)
                    and record.run.run_id != p.get("replaces")):
                raise runs.RunConflict(f"run {record.run.run_id} started meanwhile")
            run = FailoverRun(run_id=p["run_id"], failover=target.name, mode=p["mode"], source_arn=str(p["source"]),
                              target_arn=str(p["target_arn"]), status=runs.STARTED, requested_by=p["operator"],
                              reason=p["why"], created_at=now, approval_deadline=float(p["deadline"]),
                              accept_data_loss_s=p.get("accept_data_loss_s"), updated_at=now)
            store.save(dataclasses.replace(record, run=run))
        arn = self._state_machine(rt)
        try:
            rt.clients.stepfunctions.start_execution(
                stateMachineArn=arn, name=p["run_id"], input=json.dumps({
                    "run_id": p["run_id"], "failover": target.name, "mode": p["mode"],
                    "approval_timeout_s": target.approval_timeout_s}, sort_keys=True))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                # No workflow: the run must not hold the global database (a retry or a new request proceeds).
                store.update_run(target.name, p["run_id"], frozenset({runs.STARTED}), status=runs.FAILED,
                                 updated_at=now, detail=f"its workflow did not start ({err}); nothing was done"[:1000])
                raise

    @staticmethod
    def _state_machine(rt: ReactionRuntime) -> str:
        if not rt.settings.workflow_arn:
            raise RuntimeError("REFLEX_WORKFLOW_ARN is not set: the failover function cannot start its workflow")
        return rt.settings.workflow_arn

    def _execute_approve(self, action: Action, target: Failover, rt: ReactionRuntime, now: float) -> None:
        """The record first (approved, by whom), then the gate's callback, then the token is forgotten. The act only
        ever trusts the record; a callback that fails leaves the record approved with its token, and the next
        `approve_failover` completes it; a gate gone (timed out) means nothing was approved: the workflow's close
        step records the run not approved."""
        store = _runs(rt)
        p = action.params
        who = str(action.intended["approved_by"])
        run = store.update_run(target.name, str(p["run_id"]), frozenset({runs.AWAITING_APPROVAL, runs.APPROVED}),
                               status=runs.APPROVED, approved_by=who, updated_at=now)
        if run is None or not run.approval_token:
            raise GateGone(f"run {p['run_id']} no longer waits for approval")
        try:
            rt.clients.stepfunctions.send_task_success(taskToken=run.approval_token, output=json.dumps(
                {"approved_by": who, "reason": p["why"]}, sort_keys=True))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in _GONE_TOKEN:
                store.update_run(target.name, run.run_id, frozenset({runs.APPROVED}), status=runs.NOT_APPROVED,
                                 approval_token=None, updated_at=now,
                                 detail=f"approved by {who} after the gate had closed; nothing was done")
                raise GateGone(f"the approval gate of {run.run_id} no longer waits ({err}): it timed out or the "
                               "run ended; nothing was approved") from None
            raise
        store.update_run(target.name, run.run_id, frozenset({runs.APPROVED}), approval_token=None, updated_at=now)

    @staticmethod
    def _fail_token(rt: ReactionRuntime, token: str, error: str, cause: str) -> None:
        try:
            rt.clients.stepfunctions.send_task_failure(taskToken=token, error=error, cause=cause[:32_000])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") not in _GONE_TOKEN:
                raise
            logger.info("gate token no longer waits")

    # ------------------------------------------------------------------ verify / reconcile / bookkeeping
    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        target = self._target(action.policy, rt)
        op = action.operation
        if op in (wf.ACT, "promoted"):
            state = GlobalDatabase(rt.clients, target).state(target.secondary_region)
            out: dict[str, Any] = {"writer": state.writer, "global_status": state.status,
                                   "failover_state": state.failover_state}
            if op == "promoted":
                run = _runs(rt).load(target.name).run
                out["status"] = run.status if run else None
            return out
        if op == wf.ROUTE:
            return {"primary_set": GlobalDatabase(rt.clients, target).records().primary_set()}
        run = _runs(rt).load(target.name).run
        if op == "start":
            # Started means the run is recorded *and* its workflow exists.
            execution = self._workflow_status(rt, str(action.params["run_id"])) if run else None
            return {"run": run.run_id if run else None, "status": run.status if run else None,
                    "execution": execution}
        out = {"status": run.status if run else None}
        if op == "approve":
            out["approved_by"] = run.approved_by if run else None
            # The approval is complete once the gate's callback went through (the token is then forgotten).
            out["callback"] = "success" if run and run.approved_by and not run.approval_token else "pending"
        return out

    def reconcile(self, action: Action, rt: ReactionRuntime) -> Reconciled:
        """Whether an interrupted attempt's action landed. The act: the global cluster shows the target as writer,
        or a switchover/failover towards it under way -> applied; still the old writer, nothing under way ->
        not applied; anything else -> unknown (never acted on again). Every other operation is idempotent (its
        writes are fenced by the run's status, tokens tolerate being used, the Route 53 swap re-reads): run it
        again unless it shows done."""
        target = self._target(action.policy, rt)
        if action.operation == wf.ACT:
            state = GlobalDatabase(rt.clients, target).state(target.secondary_region)
            wanted = str(action.params["target_arn"])
            moving = (state.failover_state or {}).get("ToDbClusterArn") == wanted or state.status in CHANGING
            if state.writer == wanted or moving:
                return "applied"
            if state.writer == action.params.get("source") and not state.failover_state:
                return "not-applied"
            return "unknown"
        state_now = self.verify(action, rt)
        keys = [k for k in action.intended if k not in ("workflow", "error")]
        if keys and all(state_now.get(k) == action.intended[k] for k in keys):
            return "applied"
        return "not-applied"

    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        if action.operation == wf.ACT:
            target = self._target(action.policy, rt)
            now = rt.clock.now().timestamp()
            _runs(rt).update_run(target.name, str(action.params["run_id"]), frozenset({runs.APPROVED}),
                                 status=runs.PROMOTING, acted_at=now, updated_at=now, approval_token=None)


class RecordsMoved(RuntimeError):
    """The Route 53 records changed between the plan and the swap: nothing was changed."""


class WriterMoved(RuntimeError):
    """The global cluster's writer is not the run's target any more, right before the Route 53 swap: not swapped."""


def _runs(rt: ReactionRuntime) -> RunStore:
    return RunStore(rt.clients.dynamodb, rt.settings.state_table)


def _intent(target: Failover, operation: str, reason: str, *, dry_run: bool = False, quiet: bool = False,
            **params: Any) -> Intent:
    return Intent(policy=target.name, target_key=target.key,
                  target={"global_cluster": target.global_cluster, "secondary": target.secondary_cluster_arn},
                  operation=operation, params=params, reason=reason, dry_run=dry_run, quiet=quiet)


def _action(intent: Intent, operation: str, before: dict[str, Any], intended: dict[str, Any], reason: str, *,
            direction: Any = None, **params: Any) -> Action:
    return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target, operation=operation,
                  direction=direction, params={**intent.params, **params}, before=before, intended=intended,
                  reason=reason)


def _skip(intent: Intent, reason: str, detail: str, before: dict[str, Any] | None, *, page: bool = False,
          transient: bool = False, quiet: bool = False) -> Skip:
    return Skip(reason=reason, detail=detail[:2000], policy=intent.policy, target_key=intent.target_key,
                before=before, page=page, transient=transient, quiet=quiet and not page)


def _set_of(target: Failover, arn: str, sids: list[str]) -> str | None:
    """The SetIdentifier of the record serving `arn`'s region: the configured one for the secondary, the other one
    of the pair for the original primary (None when the pair is not as configured)."""
    others = sorted(set(sids) - {str(target.secondary_set_identifier)})
    if target.secondary_set_identifier not in sids or len(others) != 1:
        return None
    return target.secondary_set_identifier if arn == target.secondary_cluster_arn else others[0]


def _error_of(state: WorkflowState) -> str:
    extra = state.model_extra or {}
    error = extra.get("error")
    if isinstance(error, dict):
        return f"{error.get('Error', '')}: {str(error.get('Cause', ''))[:400]}"
    return ""
