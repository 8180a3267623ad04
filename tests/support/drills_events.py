"""events/drills/ through the real drills handler: the restore job each event names is answered by a Stubber
(AWS Backup, the Data API) and its copy exists in moto, isolated like restore testing makes it."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3

from tests.conftest import T0, FakeLambdaContext
from tests.support import drills as dr

# The drill `approve_drill` / `reject_drill` events answer: started by this request before the event (at T0).
AWAITING_REQUEST = {"command": "start_drill", "resource": "orders-db", "operator": "alice",
                    "reason": "quarterly DR drill", "request_id": "events-awaiting-approval"}
ON_DEMAND = ("start_drill", "approve_drill", "reject_drill")


def _drill_workflow(world: Any, clock: Any, event: dict[str, Any], awaiting: bool) -> Any:
    """The drill workflow (local driver) as the world's Step Functions; for an answer, a drill waiting for it."""
    from drills.drill_workflow import drill_definition
    from drills.handler import lambda_handler
    from simulator.workflow_driver import LocalWorkflows
    from tests.support.drills_on_demand import FUNCTION_ARN, MACHINE_ARN

    world.settings = world.settings.model_copy(update={"workflow_arn": MACHINE_ARN})
    driver = LocalWorkflows(drill_definition(FUNCTION_ARN), MACHINE_ARN, FUNCTION_ARN,
                            lambda e: lambda_handler(e, FakeLambdaContext()), clock)
    world.overrides["stepfunctions"] = driver
    world.runtime(clock, reaction="drills")
    if awaiting and event.get("command") in ("approve_drill", "reject_drill"):
        [d] = lambda_handler(AWAITING_REQUEST, FakeLambdaContext())["decisions"]
        assert d["outcome"] == "executed" and d["after"]["workflow"]["drill_id"] == event["drill_id"], d
        driver.run_due()  # the workflow waits for the approval
    return driver


def check_drills_event(path: Path, world: Any, clock: Any, expected: dict[str, Any]) -> None:
    from drills.handler import lambda_handler

    event = json.loads(path.read_text(encoding="utf-8"))
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    backup, data_api = dr.BackupStub(session), dr.DataApiStub(session)
    world.overrides.update({"backup": backup.client, "rds-data": data_api.client})
    try:
        dr.create_rds(world.clients)
        world.runtime(clock, reaction="drills")
        driver = (_drill_workflow(world, clock, event, awaiting=expected["status"] == "ok")
                  if event.get("command") in ON_DEMAND else None)
        skip = len(world.audit_records())
        job_id = (event.get("detail") or {}).get("restoreJobId") or event.get("restore_job_id")
        if job_id and expected["status"] == "ok":
            copy = dr.restore_copy(world.clients, "awsbackup-restore-test-orders-1")
            failed = (event.get("detail") or {}).get("status") == "FAILED"
            job = dr.restore_job(job_id, source=dr.cluster_arn("orders"), created=copy,
                                 started=T0 - timedelta(minutes=70), took_s=1800, point_age_s=600,
                                 status="FAILED" if failed else "COMPLETED")
            backup.describe(job)
            if not failed:
                newest = (job["RecoveryPointCreationDate"] - timedelta(seconds=60)).strftime("%Y-%m-%d %H:%M:%S")
                data_api.answer(copy, "SELECT count(*) FROM orders", {"longValue": 1000})
                data_api.answer(dr.cluster_arn("orders"), "SELECT count(*) FROM orders", {"longValue": 1004})
                data_api.answer(copy, "SELECT max(created_at) FROM orders", {"stringValue": newest})
                if not event.get("dry_run"):
                    backup.put_result(job_id, "SUCCESSFUL")
                    backup.describe(job | {"ValidationStatus": "SUCCESSFUL"})
        before = dr.production_state(world.clients)
        response = lambda_handler(event, FakeLambdaContext())
        records = world.audit_records()[skip:]
        assert response["status"] == expected["status"], response
        if expected["status"] == "rejected":
            for field in expected["error_fields"]:
                assert any(field in e for e in response["errors"]), response["errors"]
            assert response["parked_in_dlq"] is expected["parked_in_dlq"]
            assert [r["outcome"] for r in records] == ["rejected:validation"]
        else:
            assert [r["outcome"] for r in records] == expected["outcomes"], records
        if driver is not None and "executions" in expected:
            # start_drill started the workflow (waiting for approval); a dry run or a refusal started nothing.
            assert [e.status for e in driver.executions.values()] == expected["executions"]
        backup.stub.assert_no_pending_responses()
        data_api.stub.assert_no_pending_responses()
        assert dr.production_state(world.clients) == before  # a drill never changes production
    finally:
        world.overrides.clear()
