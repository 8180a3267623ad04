"""Drill scenarios (`reaction: drills`): AWS Backup restore testing jobs and the hourly `check_drills`, played through
the real drills handler against moto (RDS, DynamoDB, the audit and state tables) with AWS Backup and the RDS Data API
answered by botocore's Stubber in AWS's documented shapes, on a virtual clock.

    name: dr_drill
    reaction: drills
    start: 2026-11-23T05:00:00Z
    config: config/dev.yaml
    steps:
      - t: "00:00"                       # hh:mm after start
        drill: {resource: orders-db, restore_s: 1800, point_age_s: 600, restored_rows: 10000, production_rows: 10040}
        expect: {outcome: executed, validation: SUCCESSFUL, alarms: []}
      - t: "04:00"
        check: {}                        # the hourly check_drills run
        expect: {alarms: [reflex-dev-drill-orders-db-leftover]}
      - t: "04:10"
        delete_copy: {resource: orders-db}   # AWS Backup (or the operator) deletes a leftover copy

A drill step restores a copy of the resource (a moto cluster in the drill network, or production's network with
`shares_production_network: true`), queues the restore job AWS Backup would describe and the values its checks
read, and delivers the "Restore Job State Change" event. `alarms` are the drill alarms of the recovery
construct that the step's EMF metrics put into ALARM (same metrics, same thresholds).
"""

from __future__ import annotations

import io
import json
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from simulator.scenario import OneKindStep

ROOT = Path(__file__).resolve().parent.parent


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DrillSpec(_Strict):
    resource: str
    status: Literal["COMPLETED", "FAILED"] = "COMPLETED"
    restore_s: float = Field(default=1800, ge=0)
    point_age_s: float = Field(default=600, ge=0)
    restored_rows: int = 10_000
    production_rows: int = 10_000
    newest_age_s: float = 60
    shares_production_network: bool = False


class DrillExpect(_Strict):
    outcome: str | None = None
    validation: Literal["SUCCESSFUL", "FAILED"] | None = None
    alarms: list[str] | None = None


class DrillStep(OneKindStep):
    step_kinds = ("drill", "check", "delete_copy")

    t: str = Field(pattern=r"^\d{1,3}:\d{2}$")
    id: str | None = None
    note: str = ""
    drill: DrillSpec | None = None
    check: dict[str, Any] | None = None
    delete_copy: dict[str, str] | None = None
    expect: DrillExpect = Field(default_factory=DrillExpect)

    @property
    def offset_s(self) -> int:
        hours, minutes = self.t.split(":")
        return int(hours) * 3600 + int(minutes) * 60


class DrillScenario(_Strict):
    name: str
    reaction: Literal["drills"]
    description: str = ""
    start: datetime
    config: str = "config/dev.yaml"
    steps: list[DrillStep]


def is_drill_scenario(path: str | Path) -> bool:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("reaction") == "drills"


@dataclass
class StepResult:
    at: datetime
    step: DrillStep
    lines: list[str]
    outcomes: list[str]
    validation: str | None
    alarms: list[str]
    failures: list[str] = field(default_factory=list)


@dataclass
class DrillRun:
    scenario: DrillScenario
    results: list[StepResult]
    audit: list[dict[str, Any]]

    @property
    def failures(self) -> list[str]:
        return [f"{r.step.id or r.step.t}: {f}" for r in self.results for f in r.failures]


def alarms_from_metrics(output: str, stage: str, max_age_h: dict[str, float]) -> list[str]:
    """The recovery construct's drill alarms that these EMF lines breach (thresholds as in recovery_drills.py)."""
    breached: list[str] = []
    names = {"DrillObjectiveMissed": "objectivemissed", "DrillFailed": "failed",
             "DrillIsolationViolation": "notisolated", "LeftoverDrillCopies": "leftover"}
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        resource = data.get("resource")
        if not resource:
            continue
        for metric, suffix in names.items():
            values = data.get(metric)
            if values is not None and max(values if isinstance(values, list) else [values]) > 0:
                breached.append(f"reflex-{stage}-drill-{resource}-{suffix}")
        age = data.get("LastSuccessfulDrillAgeHours")
        if age is not None and max(age if isinstance(age, list) else [age]) > max_age_h.get(resource, float("inf")):
            breached.append(f"reflex-{stage}-drill-{resource}-overdue")
    return sorted(set(breached))


class DrillScenarioRunner:
    def __init__(self, scenario: DrillScenario, config: Any) -> None:
        self.scenario = scenario
        self.config = config
        self.copies: dict[str, list[str]] = {}

    def run(self) -> DrillRun:
        import boto3

        from reflex_core.clock import VirtualClock
        from reflex_core.recovery_config import max_backup_gap_s
        from simulator import drill_world as dw
        from simulator.aws_world import create_world

        clock = VirtualClock(self.scenario.start)
        world = create_world(self.config)
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        self.backup, self.data_api = dw.BackupStub(session), dw.DataApiStub(session)
        world.overrides.update({"backup": self.backup.client, "rds-data": self.data_api.client})
        dw.create_rds(world.clients)
        world.runtime(clock, reaction="drills")
        self.world, self.clock = world, clock
        max_age = {r.name: float(r.drill.max_age_hours or 2 * max_backup_gap_s(r.drill.cron) / 3600)
                   for r in self.config.recovery.resources if r.drill}
        results = []
        for n, step in enumerate(self.scenario.steps):
            clock.set(self.scenario.start + timedelta(seconds=step.offset_s))
            results.append(self._step(n, step, max_age))
        return DrillRun(self.scenario, results, world.audit_records())

    def _invoke(self, event: dict[str, Any]) -> tuple[dict[str, Any], str]:
        from drills.handler import lambda_handler
        from reflex_core.pipeline import ActionFailed
        from simulator.scenario import SimulatedContext

        out = io.StringIO()
        with redirect_stdout(out):
            try:
                response = lambda_handler(event, SimulatedContext(function_name=f"reflex-{self.config.stage}-drills"))
            except ActionFailed as err:  # Lambda would retry it; the audit trail says what failed
                response = {"status": "failed", "decisions": [], "error": str(err)[:300]}
        return response, out.getvalue()

    def _step(self, n: int, step: DrillStep, max_age: dict[str, float]) -> StepResult:

        now = self.clock.now()
        if step.delete_copy is not None:
            name = step.delete_copy["resource"]
            gone = self.copies.pop(name, [])
            for copy in gone:
                self.world.clients.rds.delete_db_cluster(DBClusterIdentifier=copy, SkipFinalSnapshot=True)
            return StepResult(now, step, [f"deleted {', '.join(gone) or 'nothing'}"], [], None, [])
        if step.check is not None:
            event: dict[str, Any] = {"reflex_schedule": {
                "name": f"reflex-{self.config.stage}-drills-check", "operation": "check_drills",
                "scheduled_time": now.isoformat(), "execution_id": f"check-{now.isoformat()}"}}
        else:
            spec = step.drill
            assert spec is not None
            event = self._queue_drill(n, spec, now)
        response, output = self._invoke(event)
        decisions = response.get("decisions", [])
        audited = {r["id"]: r for r in self.world.audit_records()}
        outcomes = [d["outcome"] for d in decisions if d.get("audit_id") in audited]
        if response.get("status") == "failed":
            outcomes = ["failed"]
        validation = next((d.get("after", {}).get("validation_status") for d in decisions
                           if d.get("operation") == "validate_restore"), None)
        alarms = alarms_from_metrics(output, self.config.stage, max_age)
        lines = [f"{d['outcome']}: {d.get('detail', '')}" for d in decisions if d.get("audit_id") in audited]
        if response.get("status") == "rejected":
            lines = ["rejected: " + "; ".join(response.get("errors", []))]
            outcomes = ["rejected:validation"]
        failures = []
        exp = step.expect
        if exp.outcome is not None and exp.outcome not in outcomes:
            failures.append(f"expected outcome {exp.outcome}, got {outcomes}")
        if exp.validation is not None and exp.validation != validation:
            failures.append(f"expected validation {exp.validation}, got {validation}")
        if exp.alarms is not None and sorted(exp.alarms) != alarms:
            failures.append(f"expected alarms {sorted(exp.alarms)}, got {alarms}")
        return StepResult(now, step, lines, outcomes, validation, alarms, failures)

    def _queue_drill(self, n: int, spec: DrillSpec, now: datetime) -> dict[str, Any]:
        from simulator import drill_world as dw

        resource = self.config.recovery.resource(spec.resource)
        if resource is None or resource.kind != "aurora-cluster":
            raise ValueError(f"drill.resource: {spec.resource!r} is not an aurora-cluster of recovery: "
                             "(the simulator drills Aurora clusters)")
        copy_name = f"awsbackup-restore-test-{resource.identifier}-{n}"
        if spec.shares_production_network:
            copy_arn = dw.restore_copy(self.world.clients, copy_name, sgs=[dw.PROD_SG], subnet_group="orders-prod")
        else:
            copy_arn = dw.restore_copy(self.world.clients, copy_name)
        self.copies.setdefault(spec.resource, []).append(copy_name)
        job_id = f"drill-{n:03d}"
        started = now - timedelta(seconds=spec.restore_s)
        job = dw.restore_job(job_id, source=dw.cluster_arn(resource.identifier), created=copy_arn, started=started,
                             took_s=spec.restore_s, point_age_s=spec.point_age_s, status=spec.status)
        self.backup.describe(job)
        if spec.status == "COMPLETED":
            isolated = not spec.shares_production_network
            if isolated:
                for check in resource.checks:
                    kind = check.expect.kind
                    sql, db = check.query or "", check.database or ""
                    if kind == "fresh-within-rpo":
                        newest = job["RecoveryPointCreationDate"] - timedelta(seconds=spec.newest_age_s)
                        self._answer(copy_arn, sql, {"stringValue": newest.strftime("%Y-%m-%d %H:%M:%S")}, db)
                    else:
                        self._answer(copy_arn, sql, {"longValue": spec.restored_rows}, db)
                        if kind == "within-percent-of-production":
                            self._answer(dw.cluster_arn(resource.identifier), sql,
                                         {"longValue": spec.production_rows}, db)
            passed = self._expected_status(n)
            self.backup.put_result(job_id, passed)
            self.backup.describe(job | {"ValidationStatus": passed})
        return dw.restore_event(job_id, spec.status, now, created=copy_arn)

    def _answer(self, arn: str, sql: str, value: dict[str, Any], database: str) -> None:
        self.data_api.answer(arn, sql, value, database=database)

    def _expected_status(self, n: int) -> str:
        """What the function will report; the Stubber needs the exact request (the scenario's expectation)."""
        exp = self.scenario.steps[n].expect.validation
        return exp or "SUCCESSFUL"


def run_drill_file(path: str | Path, config_override: str | None = None) -> DrillRun:
    from moto import mock_aws

    from reflex_core.config import load_config_file
    from reflex_core.runtime import install_runtime

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    scenario = DrillScenario.model_validate(data)
    config = load_config_file(ROOT / (config_override or scenario.config))
    try:
        with mock_aws():
            return DrillScenarioRunner(scenario, config).run()
    finally:
        install_runtime(None)


def render(run: DrillRun) -> str:
    summary = run.scenario.description.strip().splitlines()[0] if run.scenario.description.strip() else ""
    lines = [f"# {run.scenario.name}: {summary}"]
    for r in run.results:
        label = r.step.id or r.step.t
        lines.append(f"{r.at.strftime('%a %H:%M')}  {label}" + (f"  ({r.step.note})" if r.step.note else ""))
        lines.extend(f"    {line}" for line in r.lines)
        if r.alarms:
            lines.append(f"    ALARM: {', '.join(r.alarms)}")
        for failure in r.failures:
            lines.append(f"    EXPECTATION FAILED: {failure}")
    ok = not run.failures
    lines.append(f"\n{len(run.results)} steps, {len(run.audit)} audit records, expectations "
                 f"{'all met' if ok else 'FAILED: ' + str(len(run.failures))}")
    return "\n".join(lines)


def main(scenario_path: str, config: str | None, out_dir: str, check: bool) -> int:
    from pydantic import ValidationError

    from reflex_core.config import ConfigError

    try:
        run = run_drill_file(scenario_path, config)
    except (ValidationError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render(run))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{run.scenario.name}.audit.json").write_text(json.dumps(run.audit, indent=2, default=str))
    print(f"audit trail: {out / (run.scenario.name + '.audit.json')}")
    return 1 if check and run.failures else 0
