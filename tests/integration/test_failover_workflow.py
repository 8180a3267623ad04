"""The deployed failover definition (`failover_definition`, what the CDK construct synthesizes) executed by the local
Step Functions driver (simulator/workflow_driver.py) on the virtual clock, every task the real failover handler:
the approval gate's timeout, a rejection, a refusal after the approval, a failing RDS call, and the whole way."""

from __future__ import annotations

from datetime import timedelta

import pytest

from failover.workflow_definition import failover_definition
from simulator.failover_world import _error
from simulator.workflow_driver import LocalWorkflows
from tests.conftest import FakeLambdaContext
from tests.support import failover as fo
from tests.support.failover import command, decision

FN = "arn:aws:lambda:us-east-1:123456789012:function:reflex-dev-failover"
SM = "arn:aws:states:us-east-1:123456789012:stateMachine:reflex-dev-failover"


@pytest.fixture
def w(world, clock):
    from failover.handler import lambda_handler

    res = fo.create_failover(world, clock.now())
    driver = LocalWorkflows(failover_definition(FN), SM, FN, lambda e: lambda_handler(e, FakeLambdaContext()), clock)
    world.overrides["stepfunctions"] = driver
    world.settings = world.settings.model_copy(update={"workflow_arn": SM})
    world.runtime(clock, reaction="failover")
    world.fo, world.driver, world.clock = res, driver, clock
    yield world
    world.overrides.clear()


def console(w, name, operator="alice", **fields):
    from failover.handler import lambda_handler

    w.clock.advance(1)
    return decision(lambda_handler(command(name, operator, **fields), FakeLambdaContext()))


def run_status(w):
    from failover.failover_runs import RunStore

    run = RunStore(w.clients.dynamodb, w.settings.state_table).load(fo.NAME).run
    return run.status if run else None


def started(w, **fields):
    assert console(w, "failover", **({"mode": "switchover"} | fields))["outcome"] == "executed"
    w.driver.run_due()
    [execution] = w.driver.executions.values()
    assert execution.state == "Approval" and execution.waiting_token and run_status(w) == "awaiting-approval"
    return execution


def test_the_whole_way_through_the_deployed_definition(w):
    w.fo.db.on_promotion = lambda db: db.settle()
    execution = started(w)
    assert console(w, "approve_failover", "bob")["outcome"] == "executed"
    w.driver.run_until_idle()
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert run_status(w) == "completed" and w.fo.db.writer == fo.SECONDARY_ARN
    assert len(w.fo.db.promotions()) == 1
    assert fo.record_roles(w.clients, w.fo.hosted_zone_id) == {fo.PRIMARY_SET: "SECONDARY", fo.SECONDARY_SET: "PRIMARY"}


def test_nobody_approves_in_time_nothing_is_done(w):
    before = w.fo.db.snapshot()
    execution = started(w)
    w.driver.run_until(w.clock.now() + timedelta(seconds=901))
    w.driver.run_until_idle()
    assert execution.status == "FAILED" and execution.error == "Reflex.NotApproved"
    assert run_status(w) == "not-approved" and w.fo.db.promotions() == [] and w.fo.db.snapshot() == before
    assert [r["outcome"] for r in w.audit_records() if r.get("operation") == "close"] == ["skipped:not-approved"]


def test_a_rejection_ends_the_workflow_without_acting(w):
    execution = started(w)
    assert console(w, "reject_failover", "bob")["outcome"] == "executed"
    w.driver.run_until_idle()
    assert execution.status == "FAILED" and execution.error == "Reflex.NotApproved"
    assert run_status(w) == "not-approved" and w.fo.db.promotions() == []


def test_lag_above_the_rpo_after_approval_refuses_and_ends_refused(w):
    execution = started(w)
    fo.put_lag(w.clients, [5_000_000.0], w.clock.now())
    console(w, "approve_failover", "bob")
    w.driver.run_until_idle()
    assert execution.status == "FAILED" and execution.error == "Reflex.PrecheckRefused"
    assert run_status(w) == "refused" and w.fo.db.promotions() == []


def test_a_failing_rds_call_is_retried_then_abandoned_failed_and_paged(w):
    w.fo.db.faults["switchover_global_cluster"] = _error("InvalidGlobalClusterStateFault", "busy",
                                                         "SwitchoverGlobalCluster")
    w.fo.db.sticky_faults = True
    execution = started(w)
    console(w, "approve_failover", "bob")
    w.driver.run_until_idle()
    assert execution.status == "FAILED" and execution.error == "Reflex.FailoverFailed"
    assert run_status(w) == "failed"
    assert len(w.fo.db.promotions()) == 3  # the first try and the workflow's two retries, each audited failed
    records = w.audit_records()
    assert [r["outcome"] for r in records if r.get("operation") == "act"] == [
        "failed:InvalidGlobalClusterStateFault"] * 3
    [closed] = [r for r in records if r.get("operation") == "close"]
    assert closed["outcome"] == "skipped:failover-failed" and closed.get("page") is True
    assert w.fo.db.writer == fo.PRIMARY_ARN and w.fo.db.failover_state is None


def test_kill_switch_holds_the_act_and_it_resumes_when_released(w):
    w.fo.db.on_promotion = lambda db: db.settle()
    execution = started(w)
    console(w, "approve_failover", "bob")
    w.set_kill_switch("failover", True)
    w.invalidate_kill_switch_caches()
    w.driver.run_until(w.clock.now() + timedelta(seconds=120))
    assert execution.status == "RUNNING" and w.fo.db.promotions() == []
    w.set_kill_switch("failover", False)
    w.invalidate_kill_switch_caches()
    w.driver.run_until_idle()
    assert execution.status == "SUCCEEDED" and len(w.fo.db.promotions()) == 1
