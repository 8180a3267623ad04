"""On-demand drills end to end: the console `start_drill` through the real drills handler, the deployed drill
workflow definition run by the local driver (each task is the real handler), production and the restored copy in
moto RDS, AWS Backup's on-demand restore, the Data API and ElastiCache through Stubber with AWS's shapes."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3
import pytest

from drills.drill_workflow import drill_definition
from simulator.invalidation_scenario import emf_metrics
from simulator.workflow_driver import LocalWorkflows
from tests.conftest import FakeLambdaContext
from tests.support import drills as dr
from tests.support import drills_on_demand as od
from tests.support.events import schedule

COUNT_SQL = "SELECT count(*) FROM orders"
FRESH_SQL = "SELECT max(created_at) FROM orders"


@pytest.fixture
def dev_config():
    return od.drills_config()


def values(output: str, name: str) -> list[Any]:
    """The values of one EMF metric in captured stdout, in order."""
    return [v for m in emf_metrics(output, name) for v in (m[name] if isinstance(m[name], list) else [m[name]])]


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    from drills.handler import lambda_handler

    return lambda_handler(event, FakeLambdaContext())


@pytest.fixture
def drills(world, clock, monkeypatch):
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    backup, data_api, cache = dr.BackupStub(session), dr.DataApiStub(session), od.CacheStub(session)
    world.overrides.update({"backup": backup.client, "rds-data": data_api.client, "elasticache": cache.client})
    dr.create_rds(world.clients)
    monkeypatch.setenv("REFLEX_RESTORE_ROLE_ARN", od.RESTORE_ROLE)
    world.settings = world.settings.model_copy(update={"workflow_arn": od.MACHINE_ARN})
    world.driver = LocalWorkflows(drill_definition(od.FUNCTION_ARN), od.MACHINE_ARN, od.FUNCTION_ARN, invoke, clock)
    world.overrides["stepfunctions"] = world.driver
    world.runtime(clock, reaction="drills")
    world.backup, world.data_api, world.cache = backup, data_api, cache
    world.od = od.OnDemandBackup(backup.stub)
    yield world
    world.overrides.clear()


def start(resource: str = "orders-db", request_id: str = "req-1", **extra: Any) -> dict[str, Any]:
    return invoke({"command": "start_drill", "resource": resource, "operator": "alice", "reason": "quarterly DR drill",
                   "request_id": request_id, **extra})


def answer(command: str, drill_id: str, operator: str = "bob") -> dict[str, Any]:
    return invoke({"command": command, "drill_id": drill_id, "operator": operator, "reason": "change ticket CHG-42"})


def run_of(w, drill_id: str) -> dict[str, Any]:
    item = w.clients.dynamodb.get_item(TableName=w.settings.state_table, Key={"pk": {"S": f"drillrun:{drill_id}"}})
    return json.loads(item["Item"]["doc"]["S"])


def ledger(w, resource: str = "orders-db") -> dict[str, Any]:
    item = w.clients.dynamodb.get_item(TableName=w.settings.state_table, Key={"pk": {"S": f"drill:{resource}"}})
    return json.loads(item["Item"]["doc"]["S"]) if "Item" in item else {}


def outcomes(w, operation: str | None = None) -> list[str]:
    return [r["outcome"] for r in w.audit_records() if operation is None or r.get("operation") == operation]


def started_drill(w, **kw: Any) -> tuple[str, dict[str, Any]]:
    out = start(**kw)
    [d] = out["decisions"]
    assert d["outcome"] == "executed" and d["operation"] == "start_drill", d
    return d["after"]["workflow"]["drill_id"], d


def approve_and_start_restore(w, clock) -> tuple[str, str, dict[str, Any]]:
    """start -> approval wait -> approve -> the restore started (StartRestoreJob with isolated overrides)."""
    drill_id, _ = started_drill(w)
    w.driver.run_due()
    assert run_of(w, drill_id)["status"] == "awaiting-approval"
    copy_id = run_of(w, drill_id)["copy_id"]
    point = w.od.start(copy_id, [od.recovery_point(dr.cluster_arn("orders"), clock.now() - timedelta(hours=9), 1),
                                 od.recovery_point(dr.cluster_arn("orders"), clock.now() - timedelta(minutes=10), 2)])
    [d] = answer("approve_drill", drill_id)["decisions"]
    assert d["outcome"] == "executed" and d["after"]["workflow"]["approved_by"] == "bob", d
    w.driver.run_due()
    assert run_of(w, drill_id)["status"] == "restoring"
    return drill_id, copy_id, point


def complete_restore(w, clock, drill_id: str, copy_id: str, point: dict[str, Any], *, restored_rows: int = 10_000,
                     took_s: int = 1500) -> str:
    """One poll finds the job running, the next completed (the copy made in moto, as AWS Backup would)."""
    started = clock.now()
    w.od.status("od-job-1", "RUNNING", started=started)
    w.driver.run_until(clock.now() + timedelta(seconds=61))
    assert run_of(w, drill_id)["status"] == "restoring"
    copy_arn = dr.restore_copy(w.clients, copy_id)
    w.od.status("od-job-1", "COMPLETED", started=started, point=point, created=copy_arn, took_s=took_s)
    newest = (point["CreationDate"] - timedelta(seconds=60)).strftime("%Y-%m-%d %H:%M:%S")
    w.data_api.answer(copy_arn, COUNT_SQL, {"longValue": restored_rows})
    w.data_api.answer(dr.cluster_arn("orders"), COUNT_SQL, {"longValue": 10_020})
    w.data_api.answer(copy_arn, FRESH_SQL, {"stringValue": newest})
    return copy_arn


def copy_exists(w, copy_id: str) -> bool:
    return any(c["DBClusterIdentifier"] == copy_id for c in w.clients.rds.describe_db_clusters()["DBClusters"])


# --------------------------------------------------------------------------- the whole drill


def test_approved_drill_restores_isolated_validates_tears_down_and_records(drills, clock, capsys):
    before = dr.production_state(drills.clients)
    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    assert copy_id.startswith("reflex-drill-") and copy_id != "orders"
    complete_restore(drills, clock, drill_id, copy_id, point)
    drills.driver.run_until_idle()

    execution = drills.driver.execution(drill_id)
    assert execution.status == "SUCCEEDED", drills.driver.history[-5:]
    run = run_of(drills, drill_id)
    assert run["status"] == "recorded" and run["outcome"] == "passed" and run["approved_by"] == "bob"
    assert run["approval_token"] is None
    assert run["report"]["isolated"] and run["report"]["passed"] and run["report"]["rpo_s"] == 600
    assert not copy_exists(drills, copy_id)  # the workflow deleted its copy
    book = ledger(drills)
    assert book["active_drill"] is None and book["last_success_at"] is not None
    assert book["last_report"]["drill_id"] == drill_id and book["copies"] == []
    [record] = [r for r in drills.audit_records() if r.get("operation") == "record_result"]
    assert record["outcome"] == "executed" and "passed" in record["detail"] and "teardown: deleted" in record["detail"]
    drills.backup.stub.assert_no_pending_responses()
    drills.data_api.stub.assert_no_pending_responses()
    assert dr.production_state(drills.clients) == before  # production untouched (moto)
    metrics = capsys.readouterr().out
    assert values(metrics, "DrillPassed") == [1] and values(metrics, "DrillIsolationViolation") == [0]
    assert values(metrics, "DrillRpoSeconds") == [600]


def test_approval_timeout_means_no_drill_nothing_restored_and_audited(drills, clock, capsys):
    drill_id, d = started_drill(drills)
    assert "waits up to 600s for approve_drill" in d["detail"]
    drills.driver.run_due()
    assert run_of(drills, drill_id)["status"] == "awaiting-approval"
    drills.driver.run_until(clock.now() + timedelta(seconds=601))
    drills.driver.run_until_idle()

    execution = drills.driver.execution(drill_id)
    assert execution.status == "FAILED" and execution.error == "Reflex.DrillFailed"
    run = run_of(drills, drill_id)
    assert run["status"] == "recorded" and run["outcome"] == "not-approved" and run["restore_job_id"] is None
    assert not [r for r in drills.audit_records() if r.get("operation") in ("start_restore", "teardown")]
    [record] = [r for r in drills.audit_records() if r.get("operation") == "record_result"]
    assert "not-approved" in record["detail"] and "no restore was started" in record["detail"]
    drills.backup.stub.assert_no_pending_responses()  # nothing queued, nothing called: a call would have failed
    assert ledger(drills)["active_drill"] is None and ledger(drills).get("last_success_at") is None
    assert "DrillFailed" not in capsys.readouterr().out  # nobody approved it: it did not fail, it did not run
    # Approving after the timeout approves nothing.
    [late] = answer("approve_drill", drill_id)["decisions"]
    assert late["outcome"] == "skipped:not-awaiting-approval"


def test_an_approval_whose_callback_failed_is_reported_failed_and_the_next_approve_delivers_it(drills, clock,
                                                                                                monkeypatch):
    from botocore.exceptions import ClientError

    drill_id, _ = started_drill(drills)
    drills.driver.run_due()
    real = drills.driver.send_task_success
    calls = {"n": 0}

    def throttled_once(**params: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow"}}, "SendTaskSuccess")
        return real(**params)

    monkeypatch.setattr(drills.driver, "send_task_success", throttled_once)
    [first] = answer("approve_drill", drill_id)["decisions"]
    assert first["outcome"] == "failed:ThrottlingException", first
    assert run_of(drills, drill_id)["status"] == "awaiting-approval"
    copy_id = run_of(drills, drill_id)["copy_id"]
    drills.od.start(copy_id, [od.recovery_point(dr.cluster_arn("orders"), clock.now() - timedelta(minutes=10))])
    [again] = answer("approve_drill", drill_id, operator="carol")["decisions"]
    assert again["outcome"] == "executed" and again["after"]["workflow"]["approved_by"] == "carol", again
    drills.driver.run_due()
    assert run_of(drills, drill_id)["status"] == "restoring"


def test_the_requester_cannot_approve_their_own_drill(drills, clock):
    drill_id, _ = started_drill(drills)  # requested by alice
    drills.driver.run_due()
    [d] = answer("approve_drill", drill_id, operator="alice")["decisions"]
    assert d["outcome"] == "skipped:self-approval" and "another operator must approve it" in d["detail"]
    assert run_of(drills, drill_id)["status"] == "awaiting-approval"
    assert answer("approve_drill", drill_id)["decisions"][0]["outcome"] == "executed"  # bob may


def test_rejected_drill_restores_nothing(drills, clock):
    drill_id, _ = started_drill(drills)
    drills.driver.run_due()
    [d] = answer("reject_drill", drill_id)["decisions"]
    assert d["outcome"] == "executed"
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    assert run["outcome"] == "rejected" and run["restore_job_id"] is None
    assert drills.driver.execution(drill_id).status == "FAILED"


def test_duplicate_request_starts_one_drill_and_a_second_request_is_refused_while_in_flight(drills, clock):
    drill_id, _ = started_drill(drills)
    again = start()  # the same request (operator, request id, body): the same answer, one drill
    assert again.get("duplicate") is True and again["decisions"][0]["after"]["workflow"]["drill_id"] == drill_id
    assert len(drills.driver.executions) == 1
    other = start(request_id="req-2")
    [d] = other["decisions"]
    assert d["outcome"] == "skipped:drill-in-flight" and drill_id in d["detail"]
    assert len(drills.driver.executions) == 1


def test_a_drill_whose_workflow_was_stopped_no_longer_blocks_the_next(drills, clock):
    drill_id, _ = started_drill(drills)
    drills.driver.run_due()
    drills.driver.stop_execution(drills.driver.execution(drill_id).arn, "Ops", "stopped by hand")
    clock.advance(1801)  # past drill.cooldown_s
    [d] = start(request_id="req-5")["decisions"]
    assert d["outcome"] == "executed" and d["after"]["workflow"]["drill_id"] != drill_id
    assert ledger(drills)["active_drill"] == d["after"]["workflow"]["drill_id"]


def test_a_drill_stopped_after_its_restore_leaves_its_copy_watched_as_a_leftover(drills, clock):
    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    complete_restore(drills, clock, drill_id, copy_id, point)
    drills.driver.stop_execution(drills.driver.execution(drill_id).arn, "Ops", "stopped by hand mid-drill")
    assert copy_exists(drills, copy_id)  # no teardown ran
    clock.advance(1801)
    [d] = start(request_id="req-6")["decisions"]
    assert d["outcome"] == "executed"
    [watched] = ledger(drills)["copies"]
    assert watched["identifier"] == copy_id and watched["teardown_failed"] is True
    check = invoke(schedule("drills-check", "check_drills", clock.now(), params={}))
    [left] = [x for x in check["decisions"] if x["outcome"] == "skipped:drill-leftover"]
    assert copy_id in left["detail"]


def test_a_workflow_that_fails_to_start_is_retried_not_taken_as_started(drills, clock):
    from botocore.exceptions import ClientError

    driver = drills.driver

    class Down:
        def __getattr__(self, name):
            return getattr(driver, name)

        def start_execution(self, **kwargs):
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "StartExecution")

    drills.overrides["stepfunctions"] = Down()
    [d] = start()["decisions"]
    assert d["outcome"] == "failed:AccessDeniedException" and not driver.executions
    drills.overrides["stepfunctions"] = driver
    [again] = start()["decisions"]  # the console's retry of the same request
    assert again["outcome"] == "executed" and again["after"]["started"] is True
    assert len(driver.executions) == 1


def test_cooldown_refuses_a_new_drill_soon_after_the_last(drills, clock):
    drill_id, _ = started_drill(drills)
    drills.driver.run_due()
    answer("reject_drill", drill_id)
    drills.driver.run_until_idle()
    clock.advance(600)
    [d] = start(request_id="req-3")["decisions"]
    assert d["outcome"] == "skipped:cooldown" and "drill.cooldown_s 1800s" in d["detail"]
    clock.advance(1300)
    [ok] = start(request_id="req-4")["decisions"]
    assert ok["outcome"] == "executed"


def test_restore_failure_is_recorded_and_teardown_finds_nothing(drills, clock, capsys):
    drill_id, copy_id, _ = approve_and_start_restore(drills, clock)
    drills.od.status("od-job-1", "FAILED", started=clock.now(), message="Insufficient capacity in us-east-1a")
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    assert run["outcome"] == "restore-failed" and "Insufficient capacity" in run["detail"]
    assert run["teardown"].startswith(f"{copy_id} already gone")
    assert drills.driver.execution(drill_id).status == "FAILED"
    assert values(capsys.readouterr().out, "DrillFailed") == [1]
    # Watched: were AWS Backup to leave a copy behind after all, check_drills would alarm on it.
    assert [c["identifier"] for c in ledger(drills)["copies"]] == [copy_id]


def test_restore_that_never_finishes_times_out_and_fails_the_drill(drills, clock):
    drill_id, copy_id, _ = approve_and_start_restore(drills, clock)
    for _ in range(61):  # restore_timeout_s 3600, a poll every 60 s
        drills.od.status("od-job-1", "RUNNING", started=clock.now())
    drills.driver.run_until(clock.now() + timedelta(hours=2))
    run = run_of(drills, drill_id)
    assert run["outcome"] == "restore-timed-out" and run["status"] == "recorded"
    assert "still running after" in run["detail"]
    # The job may still make the copy: teardown found none yet, so the ledger watches for it.
    assert [c["identifier"] for c in ledger(drills)["copies"]] == [copy_id]
    drills.backup.stub.assert_no_pending_responses()


def test_validation_failure_deletes_the_copy_and_records_failed(drills, clock):
    before = dr.production_state(drills.clients)
    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    complete_restore(drills, clock, drill_id, copy_id, point, restored_rows=7_000)
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    assert run["outcome"] == "failed" and "orders-row-count FAILED" in run["detail"]
    assert not copy_exists(drills, copy_id)
    assert drills.driver.execution(drill_id).status == "FAILED"
    assert dr.production_state(drills.clients) == before


def test_teardown_that_fails_once_is_retried_and_the_copy_is_gone(drills, clock):
    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    complete_restore(drills, clock, drill_id, copy_id, point)
    flaky = od.FlakyRds(drills.clients.rds._real, failures=1)
    drills.overrides["rds"] = flaky
    drills.driver.run_until_idle()
    assert flaky.deletes == 2 and not copy_exists(drills, copy_id)
    run = run_of(drills, drill_id)
    assert run["outcome"] == "passed" and run["status"] == "recorded"
    assert outcomes(drills, "teardown") == ["failed:InvalidDBClusterStateFault", "executed"]


def test_teardown_that_fails_twice_leaves_a_ledger_leftover_that_check_drills_alarms_on(drills, clock, capsys):
    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    complete_restore(drills, clock, drill_id, copy_id, point)
    drills.overrides["rds"] = od.FlakyRds(drills.clients.rds._real, failures=2)
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    assert copy_exists(drills, copy_id) and run["status"] == "recorded"
    assert run["outcome"] == "failed" and "recorded as a leftover" in run["teardown"]  # passed, but not cleaned up
    [copy] = ledger(drills)["copies"]
    assert copy["identifier"] == copy_id and copy["teardown_failed"] is True
    capsys.readouterr()
    check = invoke(schedule("drills-check", "check_drills", clock.now(), params={}))
    [left] = [x for x in check["decisions"] if x["outcome"] == "skipped:drill-leftover"]
    assert copy_id in left["detail"] and "did not delete it (teardown failed twice" in left["detail"]
    leftovers = {m["resource"]: values(json.dumps(m) + "\n", "LeftoverDrillCopies")
                 for m in emf_metrics(capsys.readouterr().out, "LeftoverDrillCopies")}
    assert leftovers["orders-db"] == [1] and leftovers["sessions"] == [0]


def test_a_restore_that_created_a_non_drill_name_is_never_deleted_and_the_drill_fails(drills, clock):
    """CreatedResourceArn names a cluster without the drill prefix: teardown refuses to delete it (never anything
    but a drill copy), the drill is recorded failed naming it, and it is not put in the ledger as deletable."""
    drill_id, _, point = approve_and_start_restore(drills, clock)
    other_arn = dr.restore_copy(drills.clients, "orders-restored-by-hand")
    drills.od.status("od-job-1", "COMPLETED", started=clock.now(), point=point, created=other_arn, took_s=900)
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    assert copy_exists(drills, "orders-restored-by-hand") and copy_exists(drills, "orders")
    assert run["status"] == "recorded" and run["outcome"] != "passed", run
    assert "orders-restored-by-hand is not a drill copy's name" in run["detail"]
    assert outcomes(drills, "teardown")[0].startswith("failed:")
    assert "orders-restored-by-hand" not in [c["identifier"] for c in ledger(drills).get("copies", [])]


def test_kill_switch_refuses_the_drill_and_an_approved_restore(drills, clock):
    drills.set_kill_switch("global", True)
    [d] = start()["decisions"]
    assert d["outcome"] == "skipped:kill-switch"
    assert not drills.driver.executions
    drills.set_kill_switch("global", False)
    drills.invalidate_kill_switch_caches()
    drill_id, _ = started_drill(drills, request_id="req-9")
    drills.driver.run_due()
    drills.set_kill_switch("global", True)
    drills.invalidate_kill_switch_caches()
    # Approving is refused too; once approved (switch off again), the switch back on refuses the restore.
    assert answer("approve_drill", drill_id)["decisions"][0]["outcome"] == "skipped:kill-switch"
    drills.set_kill_switch("global", False)
    drills.invalidate_kill_switch_caches()
    answer("approve_drill", drill_id)
    drills.set_kill_switch("global", True)
    drills.invalidate_kill_switch_caches()
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    assert run["outcome"] == "refused" and run["restore_job_id"] is None
    [record] = [r for r in drills.audit_records() if r.get("operation") == "record_result"]
    assert "kill switch" in record["detail"]


def test_dry_run_starts_nothing(drills):
    [d] = start(dry_run=True)["decisions"]
    assert d["outcome"] == "dry-run" and not drills.driver.executions


@pytest.mark.parametrize(("event", "field"), [
    ({"command": "start_drill", "operator": "alice", "reason": "drill it"}, "resource"),
    ({"command": "start_drill", "resource": "nope", "operator": "alice", "reason": "drill it"}, "resource"),
    ({"command": "start_drill", "resource": "orders-db", "operator": "alice", "reason": "drill it",
      "recovery_point_arn": "not-an-arn"}, "recovery_point_arn"),
    ({"command": "approve_drill", "operator": "bob", "reason": "ok go"}, "drill_id"),
    ({"command": "reject_drill", "drill_id": "x", "operator": "bob", "reason": "no"}, "drill_id"),
])
def test_bad_input_is_rejected_naming_the_field(drills, event, field):
    out = invoke(event)
    assert out["status"] == "rejected" and any(e.startswith(field) for e in out["errors"]), out
    assert not drills.driver.executions


def test_undrilled_resource_is_refused_naming_the_field(drills):
    config = od.drills_config()
    raw = config.recovery.resources[1]
    assert raw.name == "carts"  # carts has a drill section in dev.yaml; a resource without one:
    from reflex_core.config import parse_config, read_config_data

    data = read_config_data(od.ROOT / "config" / "dev.yaml")
    del data["recovery"]["resources"][1]["drill"]
    drills.config = parse_config(data, "dev.yaml")
    drills.runtime(drills.driver.clock, reaction="drills")
    out = start(resource="carts")
    assert out["status"] == "rejected" and out["errors"][0].startswith("resource: 'carts' has no `drill:` section")


# --------------------------------------------------------------------------- ElastiCache: its own restore API


def test_elasticache_drill_restores_from_the_latest_snapshot_isolated_and_deletes_it(drills, clock, capsys):
    cache = drills.cache
    drill_id, d = started_drill(drills, resource="sessions", request_id="req-c")
    assert "no approval needed" in d["detail"]
    copy_id = run_of(drills, drill_id)["copy_id"]
    cache.describe("sessions")  # production's ARN (read)
    newest = clock.now() - timedelta(hours=3)
    cache.snapshots([clock.now() - timedelta(hours=27), newest])
    cache.create(copy_id, f"sessions-{newest:%Y%m%d%H%M}")
    drills.driver.run_due()
    assert run_of(drills, drill_id)["status"] == "restoring"
    cache.describe(copy_id, "creating")
    drills.driver.run_until(clock.now() + timedelta(seconds=61))
    cache.describe(copy_id, "available")
    cache.placement(copy_id, "drills-cache", [od.CACHE_SG])
    cache.placement("sessions", "sessions-prod", [od.CACHE_PROD_SG])
    cache.delete(copy_id)
    drills.driver.run_until_idle()

    run = run_of(drills, drill_id)
    assert run["outcome"] == "passed", run
    assert run["report"]["isolated"] and run["report"]["rpo_s"] == pytest.approx(3 * 3600, abs=1)
    assert run["teardown"] == f"deleted replication group {copy_id}"
    cache.stub.assert_no_pending_responses()  # every call as expected: nothing but describes on production


def test_elasticache_copy_in_production_network_fails_and_is_deleted(drills, clock):
    cache = drills.cache
    drill_id, _ = started_drill(drills, resource="sessions", request_id="req-c2")
    copy_id = run_of(drills, drill_id)["copy_id"]
    cache.describe("sessions")
    cache.snapshots([clock.now() - timedelta(hours=3)])
    cache.create(copy_id, f"sessions-{clock.now() - timedelta(hours=3):%Y%m%d%H%M}")
    cache.describe(copy_id, "available")
    cache.placement(copy_id, "sessions-prod", [od.CACHE_PROD_SG])
    cache.placement("sessions", "sessions-prod", [od.CACHE_PROD_SG])
    cache.delete(copy_id)
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    assert run["outcome"] == "failed" and "not isolated" in run["detail"] and "is production's" in run["detail"]
    assert run["teardown"].startswith("deleted")
    cache.stub.assert_no_pending_responses()

