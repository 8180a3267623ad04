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


def check_drills_event(path: Path, world: Any, clock: Any, expected: dict[str, Any]) -> None:
    from drills.handler import lambda_handler

    event = json.loads(path.read_text(encoding="utf-8"))
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    backup, data_api = dr.BackupStub(session), dr.DataApiStub(session)
    world.overrides.update({"backup": backup.client, "rds-data": data_api.client})
    try:
        dr.create_rds(world.clients)
        world.runtime(clock, reaction="drills")
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
        records = world.audit_records()
        assert response["status"] == expected["status"], response
        if expected["status"] == "rejected":
            for field in expected["error_fields"]:
                assert any(field in e for e in response["errors"]), response["errors"]
            assert response["parked_in_dlq"] is expected["parked_in_dlq"]
            assert [r["outcome"] for r in records] == ["rejected:validation"]
        else:
            assert [r["outcome"] for r in records] == expected["outcomes"], records
        backup.stub.assert_no_pending_responses()
        data_api.stub.assert_no_pending_responses()
        assert dr.production_state(world.clients) == before  # a drill never changes production
    finally:
        world.overrides.clear()
