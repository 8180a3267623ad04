"""The drills function as AWS Backup restore testing's validation step: real handler, moto RDS/DynamoDB, AWS Backup
and the RDS Data API through Stubber with AWS's documented shapes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from simulator.invalidation_scenario import emf_metrics
from tests.conftest import T0, FakeLambdaContext
from tests.support import drills as dr
from tests.support.events import schedule


def values(output, name):
    """The values of one EMF metric in captured stdout, in order."""
    return [v for m in emf_metrics(output, name) for v in (m[name] if isinstance(m[name], list) else [m[name]])]


COUNT_SQL = "SELECT count(*) FROM orders"
FRESH_SQL = "SELECT max(created_at) FROM orders"


@pytest.fixture
def drills(world, clock):
    import boto3

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    backup, data_api = dr.BackupStub(session), dr.DataApiStub(session)
    world.overrides.update({"backup": backup.client, "rds-data": data_api.client})
    dr.create_rds(world.clients)
    world.runtime(clock, reaction="drills")
    world.backup, world.data_api = backup, data_api
    yield world
    world.overrides.clear()


def invoke(event):
    from drills.handler import lambda_handler

    return lambda_handler(event, FakeLambdaContext())


def answer_checks(w, copy_arn, *, restored_rows=10_000, production_rows=10_050, newest_age_s=120.0,
                  point_time=None):
    """The two configured checks of orders-db: row count on the copy then production; freshness on the copy."""
    w.data_api.answer(copy_arn, COUNT_SQL, {"longValue": restored_rows})
    w.data_api.answer(dr.cluster_arn("orders"), COUNT_SQL, {"longValue": production_rows})
    newest = (point_time - timedelta(seconds=newest_age_s)).strftime("%Y-%m-%d %H:%M:%S")
    w.data_api.answer(copy_arn, FRESH_SQL, {"stringValue": newest})


def job_for(copy_arn, **kw):
    defaults = {"source": dr.cluster_arn("orders"), "created": copy_arn, "started": T0 - timedelta(minutes=40),
                "took_s": 1800, "point_age_s": 600}
    return dr.restore_job("job-1", **(defaults | kw))


def test_passing_drill_reports_success_measures_rto_rpo_and_touches_no_production(drills, capsys):
    before = dr.production_state(drills.clients)
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-1")
    job = job_for(copy)
    drills.backup.expect_validation(job, "SUCCESSFUL")
    answer_checks(drills, copy, point_time=job["RecoveryPointCreationDate"])

    out = invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))

    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["policy"] == "orders-db", d
    assert d["intended"] == d["after"] == {"validation_status": "SUCCESSFUL"}
    assert "RTO 1800s / 3600s met" in d["detail"] and "RPO 600s / 900s met" in d["detail"]
    drills.backup.stub.assert_no_pending_responses()
    drills.data_api.stub.assert_no_pending_responses()
    assert dr.production_state(drills.clients) == before
    metrics = capsys.readouterr().out
    assert values(metrics, "DrillRtoSeconds") == [1800.0] and values(metrics, "DrillRpoSeconds") == [600.0]
    [passed] = emf_metrics(metrics, "DrillPassed")
    assert values(metrics, "DrillPassed") == [1] and passed["resource"] == "orders-db"
    assert values(metrics, "DrillObjectiveMissed") == [0]
    [record] = [r for r in drills.audit_records() if r.get("outcome") == "executed"]
    assert record["reaction"] == "drills"


def test_drill_that_misses_its_rto_still_validates_but_meters_the_miss(drills, capsys):
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-2")
    job = job_for(copy, took_s=5400)  # 90 min restore > RTO 60 min
    drills.backup.expect_validation(job, "SUCCESSFUL")
    answer_checks(drills, copy, point_time=job["RecoveryPointCreationDate"])

    [d] = invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))["decisions"]

    assert d["outcome"] == "executed" and "RTO 5400s / 3600s MISSED" in d["detail"]
    metrics = capsys.readouterr().out
    assert values(metrics, "DrillObjectiveMissed") == [1]
    # The drill missed an objective: it does not count as the last successful drill.
    check = invoke(schedule("drills-check", "check_drills", T0, params={}))
    [overdue] = [x for x in check["decisions"] if x["policy"] == "orders-db"]
    assert overdue["outcome"] == "skipped:drill-overdue" and overdue["detail"] == "no successful drill recorded yet"
    # Logged, not audited: the alarm on LastSuccessfulDrillAgeHours treats its missing data as breaching.
    assert "LastSuccessfulDrillAgeHours" not in capsys.readouterr().out
    assert not [r for r in drills.audit_records() if r.get("outcome") == "skipped:drill-overdue"]


def test_validation_failure_is_reported_failed(drills, capsys):
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-3")
    job = job_for(copy)
    drills.backup.expect_validation(job, "FAILED")
    answer_checks(drills, copy, restored_rows=8_000, production_rows=10_050,
                  point_time=job["RecoveryPointCreationDate"])

    [d] = invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))["decisions"]

    assert d["outcome"] == "executed" and d["after"] == {"validation_status": "FAILED"}
    assert "orders-row-count FAILED" in d["detail"] and "orders-fresh ok" in d["detail"]
    assert values(capsys.readouterr().out, "DrillFailed") == [1]


def test_stale_data_fails_the_freshness_check(drills):
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-4")
    job = job_for(copy)
    drills.backup.expect_validation(job, "FAILED")
    answer_checks(drills, copy, newest_age_s=7200, point_time=job["RecoveryPointCreationDate"])
    [d] = invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))["decisions"]
    assert "orders-fresh FAILED" in d["detail"] and d["after"] == {"validation_status": "FAILED"}


@pytest.mark.parametrize(("sgs", "subnet", "problem"), [
    ([dr.PROD_SG], "drills-isolated", "sg-0a1b2c3d4e5f60701 are production's"),
    ([dr.DRILL_SG], "orders-prod", "subnet group 'orders-prod' is production's"),
])
def test_copy_next_to_production_fails_without_running_a_check(drills, capsys, sgs, subnet, problem):
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-5", sgs=sgs, subnet_group=subnet)
    drills.backup.expect_validation(job_for(copy), "FAILED")  # no Data API answer queued: a query would fail

    [d] = invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))["decisions"]

    assert d["after"] == {"validation_status": "FAILED"} and "not isolated" in d["detail"] and problem in d["detail"]
    drills.data_api.stub.assert_no_pending_responses()
    assert values(capsys.readouterr().out, "DrillIsolationViolation") == [1]


def test_failed_restore_is_recorded_and_a_leftover_copy_alarms(drills, clock, capsys):
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-6")
    job = job_for(copy, status="FAILED")
    drills.backup.describe(job)

    [d] = invoke(dr.restore_event("job-1", "FAILED", T0, created=copy))["decisions"]
    assert d["outcome"] == "executed" and d["operation"] == "record_failed_restore"
    assert d["after"] == {"recorded_job": "job-1"}

    # Within the validation window + grace: nothing to say. After it, the copy is still there: a leftover.
    clock.advance(1800)
    quiet = invoke(schedule("drills-check", "check_drills", clock.now(), params={}))
    assert not [x for x in quiet["decisions"] if x["outcome"] == "skipped:drill-leftover"]
    clock.advance(3 * 3600)
    late = invoke(schedule("drills-check", "check_drills", clock.now(), params={}))
    [left] = [x for x in late["decisions"] if x["outcome"] == "skipped:drill-leftover"]
    assert "awsbackup-restore-test-orders-6" in left["detail"]
    assert values(capsys.readouterr().out, "LeftoverDrillCopies") == [0, 0, 1, 0]  # orders-db, carts; twice

    # AWS Backup deletes it: the next check finds nothing and forgets the copy.
    drills.clients.rds.delete_db_cluster(DBClusterIdentifier="awsbackup-restore-test-orders-6",
                                         SkipFinalSnapshot=True)
    clock.advance(60)
    gone = invoke(schedule("drills-check", "check_drills", clock.now(), params={}))
    assert not [x for x in gone["decisions"] if x["outcome"] == "skipped:drill-leftover"]
    assert values(capsys.readouterr().out, "LeftoverDrillCopies") == [0, 0]


def test_overdue_drill_is_audited_after_its_limit(drills, clock, capsys):
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-7")
    job = job_for(copy)
    drills.backup.expect_validation(job, "SUCCESSFUL")
    answer_checks(drills, copy, point_time=job["RecoveryPointCreationDate"])
    invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))

    clock.advance(24 * 3600)
    fresh = invoke(schedule("drills-check", "check_drills", clock.now(), params={}))
    assert not [x for x in fresh["decisions"]
                if x["outcome"] == "skipped:drill-overdue" and x["policy"] == "orders-db"]
    clock.advance(190 * 3600)  # max_age_hours 192 in config/dev.yaml
    late = invoke(schedule("drills-check", "check_drills", clock.now(), params={}))
    [overdue] = [x for x in late["decisions"] if x["outcome"] == "skipped:drill-overdue" and x["policy"] == "orders-db"]
    assert overdue["policy"] == "orders-db" and "214.0 h ago" in overdue["detail"]
    assert values(capsys.readouterr().out, "LastSuccessfulDrillAgeHours") == [24.0, 214.0]


def test_operator_restore_is_never_judged_and_duplicates_act_once(drills):
    copy = dr.restore_copy(drills.clients, "orders-restored-by-hand")
    drills.backup.describe(job_for(copy, testing=False))
    [d] = invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))["decisions"]
    assert d["outcome"] == "skipped:not-a-drill"

    job = job_for(copy) | {"RestoreJobId": "job-2"}
    copy2 = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-8")
    job["CreatedResourceArn"] = copy2
    drills.backup.expect_validation(job, "SUCCESSFUL")
    answer_checks(drills, copy2, point_time=job["RecoveryPointCreationDate"])
    assert invoke(dr.restore_event("job-2", "COMPLETED", T0, created=copy2))["decisions"][0]["outcome"] == "executed"
    # The same state change sent again (another event id): judged once.
    drills.backup.describe(job | {"ValidationStatus": "SUCCESSFUL"})
    again = invoke(dr.restore_event("job-2", "COMPLETED", T0, created=copy2))
    assert again["decisions"][0]["outcome"] == "skipped:already-judged"
    drills.backup.stub.assert_no_pending_responses()


def test_kill_switch_stops_the_report_and_it_is_audited(drills):
    copy = dr.restore_copy(drills.clients, "awsbackup-restore-test-orders-9")
    drills.backup.describe(job_for(copy))
    drills.set_kill_switch("global", True)
    [d] = invoke(dr.restore_event("job-1", "COMPLETED", T0, created=copy))["decisions"]
    assert d["outcome"] == "skipped:kill-switch"
    drills.backup.stub.assert_no_pending_responses()


@pytest.mark.parametrize(("event", "field"), [
    (dr.restore_event("", "COMPLETED", T0), "detail.restoreJobId"),
    (dr.restore_event("job-1", "RUNNING", T0), "detail.status"),
    ({"command": "validate_restore", "operator": "alice", "reason": "re-check"}, "restore_job_id"),
    ({"command": "drill_everything", "operator": "alice", "reason": "x"}, "command"),
])
def test_bad_input_is_rejected_naming_the_field_and_audited(drills, event, field):
    out = invoke(event)
    assert out["status"] == "rejected" and any(e.startswith(field) for e in out["errors"]), out
    assert drills.audit_records()[-1]["outcome"] == "rejected:validation"


def test_dynamodb_table_drill_counts_items_against_production(drills, capsys):
    """DynamoDB point-in-time restore in moto makes the copy; the item-count check compares it to production."""
    ddb = drills.clients.dynamodb
    ddb.create_table(TableName="shop-carts", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    ddb.update_continuous_backups(TableName="shop-carts",
                                  PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    for i in range(40):
        ddb.put_item(TableName="shop-carts", Item={"id": {"S": f"cart-{i}"}})
    created = ddb.restore_table_to_point_in_time(SourceTableName="shop-carts", TargetTableName="reflex-drill-carts",
                                                 UseLatestRestorableTime=True)["TableDescription"]["TableArn"]
    ddb.put_item(TableName="shop-carts", Item={"id": {"S": "cart-40"}})  # production moved on by 2.5 %: within 5 %
    job = dr.restore_job("job-d", source=dr.table_arn("shop-carts"), created=created, resource_type="DynamoDB",
                         started=T0 - timedelta(minutes=10), took_s=300, point_age_s=300)
    drills.backup.expect_validation(job, "SUCCESSFUL")

    [d] = invoke(dr.restore_event("job-d", "COMPLETED", T0, resource_type="DynamoDB", created=created))["decisions"]

    assert d["outcome"] == "executed" and d["policy"] == "carts", d
    assert "carts-items ok" in d["detail"] and d["after"] == {"validation_status": "SUCCESSFUL"}
    assert ddb.scan(TableName="shop-carts", Select="COUNT")["Count"] == 41  # production untouched
