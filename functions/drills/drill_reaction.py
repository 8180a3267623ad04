"""The drills reaction: Reflex is the validation step AWS Backup restore testing leaves to the team.

* EventBridge "Restore Job State Change" (source aws.backup), status COMPLETED, of a restore testing job
  -> `validate_restore`: is the copy isolated from production; run the resource's checks against it; report
     with PutRestoreValidationResult; RTO (restore + validation) and RPO (age of the restored data when the
     drill began) against the objectives; EMF metrics per resource; the audit record carries the report.
* Same event, status FAILED -> `record_failed_restore`: the drill failed; recorded, metered, its copy (if
  AWS made one) watched for a leftover.
* Schedule `check_drills` (and the console command of that name) -> per drilled resource: the age of the last
  successful drill (metric; an audited `drill-overdue` past its limit) and copies still there after their
  validation window (metric; an audited `drill-leftover`).
* Console `validate_restore` (restore_job_id) -> judge a restore testing job again, by hand.
* Console `start_drill` / `approve_drill` / `reject_drill` and the steps of the on-demand drill workflow
  (`reflex_step`) -> on_demand_reaction.py: an approval-gated, isolated restore, judged by the same `judge`,
  its copy deleted by the workflow.

A restore job that no restore testing plan started (an operator's real restore) is never judged or touched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drills import drill_workflow as wf
from drills.drill_checks import DrillReport, evaluate
from drills.drill_ledger import Copy, LedgerStore
from drills.drill_metrics import publish
from drills.on_demand_reaction import (
    CLEANUP_OPERATIONS,
    OPERATIONS,
    SAFETY_OPERATIONS,
    ApproveDrillCommand,
    DrillState,
    OnDemandDrills,
    RejectDrillCommand,
    StartDrillCommand,
    publish_report,
)
from drills.restored_copies import AwsCheckSource, copy_exists, identifier_from_arn, isolation_problems
from reflex_core.actions import Action, Intent, Skip
from reflex_core.pipeline import GuardSettings
from reflex_core.recovery_config import BACKUP_RESOURCE_TYPE, ProtectedResource, RecoveryStageConfig, max_backup_gap_s
from reflex_core.runtime import Runtime
from reflex_core.state_store import AlarmMemory
from reflex_core.step_results import check_step
from reflex_core.triggers import Trigger, TriggerError

ReactionRuntime = Runtime[RecoveryStageConfig]
RESTORE_DETAIL_TYPE = "Restore Job State Change"
DEFAULT_WINDOW_H = 2


class RestoreJobDetail(BaseModel):
    """The `detail` of AWS Backup's "Restore Job State Change" event (the fields Reflex reads)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    restoreJobId: str = Field(min_length=1, max_length=256)
    status: Literal["COMPLETED", "FAILED"]
    resourceType: str | None = None
    createdResourceArn: str | None = None
    restoreTestingPlanArn: str | None = None


class _Console(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    reason: str = Field(min_length=3, max_length=500)
    operator: str = Field(min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


class ValidateRestoreCommand(_Console):
    command: Literal["validate_restore"]
    restore_job_id: str = Field(min_length=1, max_length=256)


class CheckDrillsCommand(_Console):
    command: Literal["check_drills"]


def _fields(err: ValidationError, prefix: str) -> list[str]:
    return [f"{prefix}{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in err.errors()]


def _when(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class DrillReaction:
    name = "drills"
    config_model = RecoveryStageConfig

    def __init__(self) -> None:
        self.on_demand = OnDemandDrills()

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> Any:
        if trigger.kind == "event" and trigger.event is not None:
            ev = trigger.event
            if ev.source != "aws.backup" or ev.detail_type != RESTORE_DETAIL_TYPE:
                raise TriggerError([f"detail-type: the drills function takes aws.backup {RESTORE_DETAIL_TYPE!r} "
                                    f"events, not {ev.source} {ev.detail_type!r}"])
            try:
                return RestoreJobDetail.model_validate(ev.detail)
            except ValidationError as err:
                raise TriggerError(_fields(err, "detail.")) from None
        if trigger.kind == "schedule" and trigger.schedule is not None:
            if trigger.schedule.operation != "check_drills":
                raise TriggerError([f"reflex_schedule.operation: unknown operation "
                                    f"{trigger.schedule.operation!r} (check_drills)"])
            return None
        if trigger.kind == "console":
            payload = trigger.payload or {}
            models: dict[str, type[BaseModel]] = {"validate_restore": ValidateRestoreCommand,
                                                  "check_drills": CheckDrillsCommand,
                                                  "start_drill": StartDrillCommand,
                                                  "approve_drill": ApproveDrillCommand,
                                                  "reject_drill": RejectDrillCommand}
            model = models.get(str(payload.get("command")))
            if model is None:
                raise TriggerError([f"command: unknown command {payload.get('command')!r}; expected one of "
                                    f"{', '.join(models)}"])
            try:
                command = model.model_validate(payload)
            except ValidationError as err:
                raise TriggerError(_fields(err, "")) from None
            if isinstance(command, StartDrillCommand):
                self._drillable(command.resource, rt, "resource")
            return command
        if trigger.kind == "step" and trigger.step is not None:
            step = trigger.step
            check_step(step.step, step.task_token is not None, wf.STEPS, wf.CALLBACK_STEPS)
            try:
                state = DrillState.model_validate(step.input)
            except ValidationError as err:
                raise TriggerError(_fields(err, "reflex_step.input.")) from None
            self._drillable(state.resource, rt, "reflex_step.input.resource")
            return state
        raise TriggerError([f"<root>: the drills function takes restore job events, its schedule, console "
                            f"commands and its workflow's steps (got {trigger.kind})"])

    @staticmethod
    def _drillable(name: str, rt: ReactionRuntime, field: str) -> ProtectedResource:
        res = rt.config.recovery.resource(name)
        if res is None:
            known = ", ".join(r.name for r in rt.config.recovery.resources) or "none"
            raise TriggerError([f"{field}: no protected resource named {name!r} (configured: {known})"])
        if res.drill is None:
            raise TriggerError([f"{field}: {name!r} has no `drill:` section in recovery.resources; configure its "
                                "drill (isolation, timeouts, approval) before drilling it"])
        return res

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        return []

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: Any, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        if isinstance(request, RestoreJobDetail):
            return [self._restore_intent(request.restoreJobId, rt, dry_run=False)]
        if isinstance(request, ValidateRestoreCommand):
            return [self._restore_intent(request.restore_job_id, rt, dry_run=request.dry_run, again=True)]
        if isinstance(request, StartDrillCommand | ApproveDrillCommand | RejectDrillCommand | DrillState):
            return self.on_demand.intents(trigger, request, rt)
        return self._check_drills(rt)

    def _restore_intent(self, job_id: str, rt: ReactionRuntime, *, dry_run: bool, again: bool = False) -> Intent | Skip:
        job = rt.clients.backup.describe_restore_job(RestoreJobId=job_id)
        resource = self._resource_of(job, rt)
        if resource is None:
            return Skip(reason="not-protected", detail=f"restore job {job_id} restored "
                        f"{job.get('SourceResourceArn')} ({job.get('ResourceType')}), which recovery: does not name")
        base: dict[str, Any] = {"policy": resource.name, "target_key": resource.key}
        if not (job.get("CreatedBy") or {}).get("RestoreTestingPlanArn"):
            return Skip(**base, reason="not-a-drill",
                        detail=f"restore job {job_id} was not started by a restore testing plan; Reflex leaves it be")
        status = job.get("Status")
        if status not in ("COMPLETED", "FAILED"):
            return Skip(**base, reason="restore-in-progress", detail=f"restore job {job_id} is {status}")
        ledger = LedgerStore(rt.clients.dynamodb, rt.settings.state_table).load(resource.name)
        if ledger.judged(job_id) and not again:
            return Skip(**base, reason="already-judged", detail=f"restore job {job_id} was judged already")
        operation = "validate_restore" if status == "COMPLETED" else "record_failed_restore"
        return Intent(**base, target=resource.model_dump(mode="json", include={"kind", "identifier"}),
                      operation=operation, params={"job": _job_doc(job)}, dry_run=dry_run,
                      reason=f"restore job {job_id} {status.lower()}")

    @staticmethod
    def _resource_of(job: dict[str, Any], rt: ReactionRuntime) -> ProtectedResource | None:
        source = str(job.get("SourceResourceArn") or "")
        name = identifier_from_arn(source) if source else ""
        return next((r for r in rt.config.recovery.resources
                     if r.identifier == name and BACKUP_RESOURCE_TYPE[r.kind] == job.get("ResourceType")), None)

    def _check_drills(self, rt: ReactionRuntime) -> list[Intent | Skip]:
        """Drill age and leftovers: observations, audited as skips when something is wrong (nothing to change)."""
        now = rt.clock.now()
        store = LedgerStore(rt.clients.dynamodb, rt.settings.state_table)
        out: list[Intent | Skip] = []
        stage = rt.config.stage
        for res in rt.config.recovery.resources:
            if res.drill is None:
                continue
            ledger = store.load(res.name)
            base: dict[str, Any] = {"policy": res.name, "target_key": res.key}
            max_age_h = res.drill.max_age_hours or 2 * max_backup_gap_s(res.drill.cron) / 3600
            if ledger.last_success_at is not None:
                age_h = (now.timestamp() - ledger.last_success_at) / 3600
                publish("LastSuccessfulDrillAgeHours", age_h, "Count", stage=stage, resource=res.name)
                if age_h > max_age_h:
                    out.append(Skip(**base, reason="drill-overdue",
                                    detail=f"last successful drill {age_h:.1f} h ago (limit {max_age_h:.0f} h)"))
            else:
                # No data is "breaching" for the alarm on this metric: a resource never drilled is overdue too.
                out.append(Skip(**base, reason="drill-overdue", detail="no successful drill recorded yet",
                                quiet=True))
            grace = rt.config.recovery.leftover_grace_s
            kept, leftovers = [], []
            for copy in ledger.copies:
                if not copy.teardown_failed and copy.window_ends_at + grace > now.timestamp():
                    kept.append(copy)
                elif copy_exists(rt.clients, res, copy.identifier):
                    kept.append(copy)
                    leftovers.append(copy)
            publish("LeftoverDrillCopies", len(leftovers), "Count", stage=stage, resource=res.name)
            for copy in leftovers:
                ended = datetime.fromtimestamp(copy.window_ends_at, tz=UTC).isoformat()
                why = (f"its on-demand drill did not delete it (teardown failed twice, or the drill's workflow "
                       f"ended first; recorded at {ended})" if copy.teardown_failed
                       else f"its validation window ended at {ended}")
                out.append(Skip(**base, reason="drill-leftover",
                                detail=f"{copy.identifier} (restore job {copy.job_id}) still exists; {why}; "
                                       f"delete it (docs/runbooks/drills.md)"))
            if kept != ledger.copies:
                ledger.copies = kept
                store.save(ledger)
        return out

    # ------------------------------------------------------------------ guard settings
    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        return {r.key for r in rt.config.recovery.resources}

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        # Judging a drill changes nothing in production: no cooldown; the rate limit only stops a flood. An
        # on-demand drill's cooldown is its resource's `drill.cooldown_s` (checked when it is planned).
        if intent.operation in OPERATIONS:
            safety = intent.operation in SAFETY_OPERATIONS
            # The workflow's steps exist only for a drill that was started: a dry-run stage never starts one.
            step = intent.operation not in ("start_drill", "approve_drill", "reject_drill")
            return GuardSettings(out_cooldown_s=0, in_cooldown_s=0, max_actions_per_hour=600, circuit_open_for_s=600,
                                 dry_run=rt.config.dry_run and not step, safety=safety, bypass_rate_limit=safety,
                                 cleanup=intent.operation in CLEANUP_OPERATIONS)
        return GuardSettings(out_cooldown_s=0, in_cooldown_s=0, max_actions_per_hour=120, circuit_open_for_s=600,
                             dry_run=rt.config.dry_run)

    def _resource(self, name: str, key: str, rt: ReactionRuntime) -> ProtectedResource:
        res = rt.config.recovery.resource(name)
        if res is None or res.key != key:
            raise LookupError(f"resource {name} does not own {key}")
        return res

    # ------------------------------------------------------------------ plan / execute / verify
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        res = self._resource(intent.policy, intent.target_key, rt)
        if intent.operation in OPERATIONS:
            return self.on_demand.plan(intent, res, rt)
        job = intent.params["job"]
        window_h = res.drill.validation_window_hours if res.drill else DEFAULT_WINDOW_H
        completed = _when(job.get("CompletionDate")) or rt.clock.now()
        params = {"job_id": job["RestoreJobId"], "copy": identifier_from_arn(job.get("CreatedResourceArn") or ""),
                  "window_ends_at": (completed + timedelta(hours=window_h)).timestamp()}
        before = {"validation_status": job.get("ValidationStatus")}
        if intent.operation == "record_failed_restore":
            return Action(policy=res.name, target_key=res.key, target=intent.target, operation=intent.operation,
                          params=params | {"message": str(job.get("StatusMessage") or "")[:500]},
                          before={"recorded_job": None}, intended={"recorded_job": job["RestoreJobId"]},
                          reason=f"restore job {job['RestoreJobId']} FAILED: {job.get('StatusMessage') or '?'}")
        report = self.judge(res, job, rt)
        intended = {"validation_status": "SUCCESSFUL" if report.passed else "FAILED"}
        return Action(policy=res.name, target_key=res.key, target=intent.target, operation=intent.operation,
                      params=params | {"report": report.as_dict()}, before=before, intended=intended,
                      reason=report.summary())

    @staticmethod
    def judge(res: ProtectedResource, job: dict[str, Any], rt: ReactionRuntime) -> DrillReport:
        copy_arn = str(job.get("CreatedResourceArn") or "")
        started = rt.clock.now()
        problems = (isolation_problems(rt.clients, res, identifier_from_arn(copy_arn)) if copy_arn
                    else ["the restore job names no restored resource"])
        source = AwsCheckSource(rt.clients, res, copy_arn, str(job["SourceResourceArn"]))
        return evaluate(res, source, restore_job_id=job["RestoreJobId"], isolated=not problems,
                        isolation_problems=problems, restore_started=_when(job["CreationDate"]) or started,
                        restore_completed=_when(job.get("CompletionDate")) or started,
                        recovery_point_time=_when(job.get("RecoveryPointCreationDate")), validation_started=started,
                        clock_now=rt.clock.now)

    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        res = self._resource(action.policy, action.target_key, rt)
        if action.operation in OPERATIONS:
            self.on_demand.execute(action, res, rt)
            return
        stage = rt.config.stage
        job_id = str(action.params["job_id"])
        store = LedgerStore(rt.clients.dynamodb, rt.settings.state_table)
        now = rt.clock.now().timestamp()
        if action.operation == "validate_restore":
            report = action.params["report"]
            # Re-reporting the same status is harmless: AWS keeps the last one.
            rt.clients.backup.put_restore_validation_result(
                RestoreJobId=job_id, ValidationStatus=action.intended["validation_status"],
                ValidationStatusMessage=action.reason[:1000])
            passed, met = bool(report["passed"]), bool(report["objectives_met"])
            publish_report(report, stage, res.name)
        else:
            report, passed, met = None, False, False
        publish("DrillPassed", 1 if passed else 0, "Count", stage=stage, resource=res.name)
        publish("DrillFailed", 0 if passed else 1, "Count", stage=stage, resource=res.name)
        ledger = store.load(res.name)
        if job_id not in ledger.judged_jobs:
            ledger.judged_jobs.append(job_id)
        ledger.last_result_at = now
        ledger.last_report = report or {"restore_job_id": job_id, "passed": False, "detail": action.reason}
        if passed and met:
            ledger.last_success_at = now
        copy = str(action.params.get("copy") or "")
        if copy and all(c.identifier != copy for c in ledger.copies):
            ledger.copies.append(Copy(job_id=job_id, identifier=copy,
                                      window_ends_at=float(action.params["window_ends_at"])))
        store.save(ledger)

    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        return None

    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        if action.operation in OPERATIONS:
            return self.on_demand.verify(action, rt)
        job_id = str(action.params["job_id"])
        if action.operation == "validate_restore":
            job = rt.clients.backup.describe_restore_job(RestoreJobId=job_id)
            return {"validation_status": job.get("ValidationStatus")}
        ledger = LedgerStore(rt.clients.dynamodb, rt.settings.state_table).load(action.policy)
        return {"recorded_job": job_id if ledger.judged(job_id) else None}


def _job_doc(job: dict[str, Any]) -> dict[str, Any]:
    keep = ("RestoreJobId", "RecoveryPointArn", "SourceResourceArn", "CreatedResourceArn", "ResourceType", "Status",
            "StatusMessage", "CreationDate", "CompletionDate", "RecoveryPointCreationDate", "ValidationStatus",
            "DeletionStatus")
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in job.items() if k in keep}
