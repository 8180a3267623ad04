"""The failover reaction through the real handler: moto (DynamoDB, SSM, CloudWatch, Route 53, SNS), the global
database through simulator/failover_world.GlobalDatabaseFake (moto has no Switchover/FailoverGlobalCluster; every
call is validated against botocore's RDS model), the workflow's steps sent as Step Functions sends them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from failover.step_response import StepDeferred
from reflex_core.pipeline import ActionFailed, RetryLater
from simulator.failover_world import _error
from tests.support import failover as fo
from tests.support.failover import command, decision, invoke, step


@pytest.fixture
def w(world, clock):
    res = fo.create_failover(world, clock.now())
    world.runtime(clock, reaction="failover")
    world.fo = res
    world.clock = clock
    yield world
    world.overrides.clear()


def outcomes(world, since: int = 0) -> list[str]:
    return [r["outcome"] for r in world.audit_records()[since:]]


def start(w, mode="switchover", operator="alice", **fields):
    out = invoke(command("failover", operator, mode=mode, **fields))
    d = decision(out)
    assert d["outcome"] == "executed", d
    [name] = list(w.fo.workflow.executions)
    return dict(w.fo.workflow.executions[name]["input"])


def open_gate(w, state):
    token = w.fo.workflow.new_token()
    step("wait_for_approval", state, w.clock.now(), token=token, state_name="Approval")
    assert outcomes(w)[-1] == "executed"
    return token


def approve(w, operator="bob"):
    return decision(invoke(command("approve_failover", operator)))


def run_status(w):
    from failover.failover_runs import RunStore

    run = RunStore(w.clients.dynamodb, w.settings.state_table).load(fo.NAME).run
    return run.status if run else None


# --------------------------------------------------------------------------- the whole way


def test_planned_switchover_end_to_end_with_approval_route53_and_audit(w):
    db = w.fo.db
    state = start(w)
    assert state == {"run_id": state["run_id"], "failover": fo.NAME, "mode": "switchover", "approval_timeout_s": 900}
    assert db.promotions() == [] and run_status(w) == "started"
    token = open_gate(w, state)
    assert run_status(w) == "awaiting-approval"
    d = approve(w)
    assert d["outcome"] == "executed"
    assert d["after"] == {"status": "approved", "approved_by": "bob", "callback": "success"}
    assert w.fo.workflow.callbacks == [("success", token, {"approved_by": "bob", "reason": "approve_failover in the "
                                                                                            "test"})]
    state = step("act", state, w.clock.now())
    assert state["verdict"] == "continue", state
    [(region, op, params)] = db.promotions()
    assert (region, op) == (fo.SECONDARY_REGION, "switchover_global_cluster")
    assert params == {"GlobalClusterIdentifier": fo.GLOBAL_ID, "TargetDbClusterIdentifier": fo.SECONDARY_ARN}
    assert run_status(w) == "promoting"
    assert step("await_writer", state, w.clock.now())["verdict"] == "wait"  # still switching over
    db.settle()
    state = step("await_writer", state, w.clock.now() + timedelta(seconds=30))
    assert state["verdict"] == "continue" and run_status(w) == "promoted"
    assert fo.record_roles(w.clients, w.fo.hosted_zone_id) == {fo.PRIMARY_SET: "PRIMARY", fo.SECONDARY_SET: "SECONDARY"}
    state = step("route", state, w.clock.now())
    assert fo.record_roles(w.clients, w.fo.hosted_zone_id) == {fo.PRIMARY_SET: "SECONDARY", fo.SECONDARY_SET: "PRIMARY"}
    state = step("complete", state, w.clock.now())
    assert state["verdict"] == "continue" and run_status(w) == "completed"
    assert db.writer == fo.SECONDARY_ARN and len(db.promotions()) == 1
    records = w.audit_records()
    assert [(r["operation"], r["outcome"]) for r in records] == [
        ("start", "executed"), ("open_gate", "executed"), ("approve", "executed"), ("act", "executed"),
        ("await_writer", "executed"), ("route", "executed"), ("complete", "executed")]
    assert "lag 1.2s vs RPO 900s" in records[3]["detail"]


def test_plan_failover_is_read_only_and_says_what_would_happen(w):
    before = w.fo.db.snapshot()
    out = invoke(command("plan_failover", mode="switchover"))
    d = decision(out)
    assert d["outcome"] == "dry-run", d
    assert "would switchover" in d["detail"] and "lag 1.2s vs RPO 900s" in d["detail"]
    assert d["before"]["prechecks"]["passed"] is True
    assert w.fo.db.snapshot() == before and w.fo.db.promotions() == []
    assert w.fo.workflow.executions == {} and run_status(w) is None


def test_dry_run_failover_changes_nothing_and_starts_no_workflow(w):
    before = w.fo.db.snapshot()
    d = decision(invoke(command("failover", mode="switchover", dry_run=True)))
    assert d["outcome"] == "dry-run"
    assert w.fo.workflow.executions == {} and run_status(w) is None and w.fo.db.snapshot() == before


# --------------------------------------------------------------------------- duplicates act once


def test_duplicate_requests_start_one_run_and_a_retried_act_promotes_once(w):
    cmd = command("failover", mode="switchover", request_id="req-1")
    assert decision(invoke(cmd))["outcome"] == "executed"
    again = invoke(cmd)
    assert again.get("duplicate") is True and len(w.fo.workflow.executions) == 1
    other = decision(invoke(command("failover", "carol", mode="switchover", request_id="req-2")))
    assert other["outcome"] == "skipped:failover-in-flight", other
    [state] = [dict(e["input"]) for e in w.fo.workflow.executions.values()]
    open_gate(w, state)
    approve(w)
    step("act", state, w.clock.now())
    # The workflow retries the step (a lost answer), or Step Functions redelivers it: no second promotion.
    retried = step("act", state, w.clock.now(), retry=1)
    assert retried["verdict"] == "continue"
    redelivered = step("act", state, w.clock.now())
    assert redelivered["verdict"] == "continue"
    assert len(w.fo.db.promotions()) == 1


def test_an_interrupted_act_is_completed_not_repeated(w, monkeypatch):
    """The RDS call landed but the invocation died before recording it: the retry reads the global cluster,
    finds the switchover under way and completes the decision."""
    from failover import failover_reaction

    state = start(w)
    open_gate(w, state)
    approve(w)
    original = failover_reaction.FailoverReaction.after_executed

    def die(self, action, rt):
        raise TimeoutError("the invocation ran out of time")

    monkeypatch.setattr(failover_reaction.FailoverReaction, "after_executed", die)
    with pytest.raises(RetryLater):  # audited executed, bookkeeping pending: the workflow retries the step
        step("act", state, w.clock.now())
    monkeypatch.setattr(failover_reaction.FailoverReaction, "after_executed", original)
    step("act", state, w.clock.now(), retry=1)
    assert len(w.fo.db.promotions()) == 1 and run_status(w) == "promoting"


# --------------------------------------------------------------------------- the approval gate


def test_approval_timeout_means_not_approved_and_nothing_done(w):
    before = w.fo.db.snapshot()
    state = start(w)
    token = open_gate(w, state)
    w.clock.advance(901)
    w.fo.workflow.time_out(token)
    # A late approval approves nothing and says so.
    late = approve(w)
    assert late["outcome"] == "failed:GateGone" and "nothing was approved" in late["detail"]
    out = step("close", state | {"closing": "not-approved", "error": {"Error": "States.Timeout", "Cause": ""}},
               w.clock.now(), state_name="CloseNotApproved")
    assert out["verdict"] == "continue"
    assert run_status(w) == "not-approved"
    assert outcomes(w)[-1] == "skipped:not-approved"
    assert "nothing was done" in w.audit_records()[-1]["detail"]
    assert w.fo.db.promotions() == [] and w.fo.db.snapshot() == before
    # The run is over: a new one may start.
    fo.put_lag(w.clients, [900.0], w.clock.now())
    assert decision(invoke(command("failover", mode="switchover", request_id="after")))["outcome"] == "executed"


def test_reject_fails_the_gate_and_records_not_approved(w):
    state = start(w)
    token = open_gate(w, state)
    d = decision(invoke(command("reject_failover", "bob")))
    assert d["outcome"] == "executed"
    assert w.fo.workflow.callbacks == [("failure", token, {"error": "Reflex.Rejected", "cause": "rejected by bob"})]
    step("close", state | {"closing": "not-approved"}, w.clock.now())
    assert run_status(w) == "not-approved" and outcomes(w)[-1] == "skipped:not-approved"
    assert "rejected by bob" in w.audit_records()[-1]["detail"]
    # The act never runs for a closed run (even if a step arrived late).
    assert step("act", state, w.clock.now())["verdict"] == "stuck"  # AfterAct abandons it
    assert w.fo.db.promotions() == []


def test_the_requester_cannot_approve_their_own_failover(w):
    state = start(w, operator="alice")
    open_gate(w, state)
    d = approve(w, operator="alice")
    assert d["outcome"] == "skipped:self-approval"
    assert run_status(w) == "awaiting-approval" and w.fo.workflow.callbacks == []


def test_approve_before_the_gate_opens_is_retried_not_lost(w):
    start(w)
    d = approve(w)
    assert d["outcome"] == "skipped:gate-not-open" and d.get("transient") is True


# --------------------------------------------------------------------------- pre-checks


def test_lag_rising_between_approval_and_act_refuses_and_touches_nothing(w):
    before = w.fo.db.snapshot()
    state = start(w)
    open_gate(w, state)
    approve(w)
    w.clock.advance(300)
    fo.put_lag(w.clients, [2_000_000.0], w.clock.now())  # 2000 s behind: above the RPO (900 s)
    out = step("act", state, w.clock.now())
    assert out["verdict"] == "refused"
    record = w.audit_records()[-1]
    assert record["outcome"] == "skipped:precheck-refused" and "after the approval" in record["detail"]
    assert "replication lag 2000s is above the RPO 900s" in record["detail"]
    step("close", out | {"closing": "refused"}, w.clock.now())
    assert run_status(w) == "refused"
    assert w.fo.db.promotions() == [] and w.fo.db.snapshot() == before


def test_switchover_without_lag_data_is_refused(world, clock):
    res = fo.create_failover(world, clock.now(), lag_ms=[])
    world.runtime(clock, reaction="failover")
    d = decision(invoke(command("failover", mode="switchover")))
    assert d["outcome"] == "skipped:precheck-refused" and "no 5-minute replication lag data" in d["detail"]
    assert res.workflow.executions == {} and res.db.promotions() == []
    world.overrides.clear()


def test_failover_above_the_rpo_needs_accept_data_loss_s_at_least_the_lag(world, clock):
    res = fo.create_failover(world, clock.now(), lag_ms=[1_200_000.0])  # 1200 s
    world.runtime(clock, reaction="failover")
    d = decision(invoke(command("failover", mode="failover")))
    assert d["outcome"] == "skipped:precheck-refused" and "accept_data_loss_s" in d["detail"]
    d = decision(invoke(command("failover", mode="failover", accept_data_loss_s=600, request_id="r2")))
    assert d["outcome"] == "skipped:precheck-refused" and "accept_data_loss_s >= 1200" in d["detail"]
    d = decision(invoke(command("failover", mode="failover", accept_data_loss_s=1500, request_id="r3")))
    assert d["outcome"] == "executed"
    assert res.db.promotions() == []  # nothing before the approval
    world.overrides.clear()


def test_primary_region_lost_switchover_refused_failover_allowed(w):
    w.fo.db.down_regions.add("us-east-1")
    w.fo.db.clusters[fo.PRIMARY_ARN].status = "inaccessible-encryption-credentials"
    d = decision(invoke(command("failover", mode="switchover")))
    assert d["outcome"] == "skipped:precheck-refused" and "use mode failover" in d["detail"]
    state = start(w, mode="failover", request_id="fo-1")
    open_gate(w, state)
    approve(w)
    step("act", state, w.clock.now())
    [(region, op, params)] = w.fo.db.promotions()
    assert (region, op, params["AllowDataLoss"]) == (fo.SECONDARY_REGION, "failover_global_cluster", True)


def test_unhealthy_secondary_record_refuses(w, monkeypatch):
    from failover.global_database import GlobalDatabase

    monkeypatch.setattr(GlobalDatabase, "health_check_ok", lambda self, hc: (False, f"health check {hc}: 0/3 OK"))
    d = decision(invoke(command("failover", mode="switchover")))
    assert d["outcome"] == "skipped:precheck-refused" and "record is unhealthy" in d["detail"]


# --------------------------------------------------------------------------- kill switch, failures


def test_kill_switch_mid_workflow_stops_the_act_until_released(w):
    state = start(w)
    open_gate(w, state)
    approve(w)
    w.set_kill_switch("failover", True)
    w.invalidate_kill_switch_caches()
    with pytest.raises(StepDeferred):
        step("act", state, w.clock.now())
    assert w.fo.db.promotions() == [] and outcomes(w)[-1] == "skipped:kill-switch"
    # Approvals and the gate stop too; a reject (stopping) still runs.
    w.set_kill_switch("failover", False)
    w.invalidate_kill_switch_caches()
    step("act", state, w.clock.now(), retry=1)
    assert len(w.fo.db.promotions()) == 1


def test_kill_switch_stops_a_new_failover_and_an_approval(w):
    w.set_kill_switch("global", True)
    w.invalidate_kill_switch_caches()
    d = decision(invoke(command("failover", mode="switchover")))
    assert d["outcome"] == "skipped:kill-switch" and w.fo.workflow.executions == {}


def test_api_failure_is_audited_failed_paged_and_claims_nothing(w):
    state = start(w)
    open_gate(w, state)
    approve(w)
    w.fo.db.faults["switchover_global_cluster"] = _error("InvalidGlobalClusterStateFault", "busy",
                                                         "SwitchoverGlobalCluster")
    with pytest.raises(ActionFailed):
        step("act", state, w.clock.now())
    record = w.audit_records()[-1]
    assert record["outcome"] == "failed:InvalidGlobalClusterStateFault" and record["operation"] == "act"
    assert run_status(w) == "approved"  # no "promoting" claimed
    assert w.fo.db.writer == fo.PRIMARY_ARN and w.fo.db.failover_state is None
    # The workflow gives up after its retries: the run is closed failed, paged.
    step("close", state | {"closing": "failed", "error": {"Error": "ActionFailed", "Cause": "busy"}}, w.clock.now())
    assert run_status(w) == "failed"
    last = w.audit_records()[-1]
    assert last["outcome"] == "skipped:failover-failed" and last.get("page") is True
    assert "nothing was done to the database" in last["detail"]


def test_writer_never_arriving_pages_stuck(w):
    state = start(w)
    open_gate(w, state)
    approve(w)
    state = step("act", state, w.clock.now())
    w.clock.advance(1801)
    out = step("await_writer", state, w.clock.now())
    assert out["verdict"] == "stuck"
    assert w.audit_records()[-1]["outcome"] == "skipped:promotion-stuck"


# --------------------------------------------------------------------------- failback


def test_failback_refused_until_the_old_primary_is_a_healthy_member_then_switches_back(w):
    db = w.fo.db
    d = decision(invoke(command("failback")))  # the writer is still the primary
    assert d["outcome"] == "skipped:precheck-refused"
    # After a failover with data loss, the old primary is detached.
    db.writer = fo.SECONDARY_ARN
    db.members = [fo.SECONDARY_ARN]
    d = decision(invoke(command("failback", request_id="fb-1")))
    assert d["outcome"] == "skipped:precheck-refused" and "not a member" in d["detail"]
    # It rejoined but the lag is not steady yet (one datapoint).
    db.members = [fo.SECONDARY_ARN, fo.PRIMARY_ARN]
    fo.put_lag(w.clients, [500.0], w.clock.now(), cluster="orders", region="us-east-1")
    d = decision(invoke(command("failback", request_id="fb-2")))
    assert d["outcome"] == "skipped:precheck-refused" and "not steady" in d["detail"]
    fo.put_lag(w.clients, [400.0, 300.0, 200.0], w.clock.now() - timedelta(seconds=30), cluster="orders",
               region="us-east-1")
    out = invoke(command("failback", request_id="fb-3"))
    assert decision(out)["outcome"] == "executed", out
    [state] = [dict(e["input"]) for e in w.fo.workflow.executions.values()]
    assert state["mode"] == "failback"
    open_gate(w, state)
    approve(w)
    step("act", state, w.clock.now())
    [(region, op, params)] = db.promotions()
    assert (region, op, params["TargetDbClusterIdentifier"]) == ("us-east-1", "switchover_global_cluster",
                                                                 fo.PRIMARY_ARN)
    db.settle()
    state = step("await_writer", state, w.clock.now())
    # Route 53: the primary's record was PRIMARY all along (nothing to swap back here).
    assert step("route", state, w.clock.now())["verdict"] == "continue"
    assert step("complete", state, w.clock.now())["verdict"] == "continue"
    assert run_status(w) == "completed" and db.writer == fo.PRIMARY_ARN


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("payload", "field"), [
    (command("failover", mode="sideways"), "mode"),
    (command("failover"), "mode"),
    (command("failover", mode="switchover", accept_data_loss_s=60), "accept_data_loss_s"),
    (command("failover", mode="failover", accept_data_loss_s=-1), "accept_data_loss_s"),
    (command("failover", mode="failover", accept_data_loss_s="600"), "accept_data_loss_s"),
    (command("failover", mode="switchover") | {"failover": "payments"}, "failover: unknown failover 'payments'"),
    (command("failover", mode="switchover", dry_run="no"), "dry_run"),
    (command("failover", mode="switchover") | {"reason": ""}, "reason"),
    (command("approve_failover") | {"extra": 1}, "extra"),
    (command("failover_now"), "command"),
])
def test_malformed_commands_are_rejected_naming_the_field_and_do_nothing(w, payload, field):
    before = w.fo.db.snapshot()
    out = invoke(payload)
    assert out["status"] == "rejected"
    assert any(field in e for e in out["errors"]), out["errors"]
    assert w.fo.workflow.executions == {} and w.fo.db.snapshot() == before and run_status(w) is None


def test_malformed_workflow_step_is_rejected(w):
    from failover.step_response import StepRejected

    with pytest.raises(StepRejected, match=r"reflex_step\.input\.mode"):
        step("act", {"run_id": "x", "failover": fo.NAME, "mode": "sideways", "approval_timeout_s": 900},
             w.clock.now())
    with pytest.raises(StepRejected, match="task_token"):
        step("wait_for_approval", {"run_id": "x", "failover": fo.NAME, "mode": "switchover",
                                   "approval_timeout_s": 900}, w.clock.now())


def test_a_second_approval_approves_nothing_more(w):
    state = start(w)
    token = open_gate(w, state)
    assert approve(w)["outcome"] == "executed"
    again = decision(invoke(command("approve_failover", "carol")))
    assert again["outcome"] == "skipped:no-run-waiting"
    assert [c[1] for c in w.fo.workflow.callbacks] == [token]


def test_a_failback_right_after_a_promotion_waits_for_the_cooldown(w):
    w.fo.db.on_promotion = lambda db: db.settle()
    state = start(w)
    open_gate(w, state)
    approve(w)
    for name in ("act", "await_writer", "route", "complete"):
        state = step(name, state, w.clock.now())
    assert run_status(w) == "completed"
    fo.put_lag(w.clients, [100.0, 120.0, 90.0], w.clock.now(), cluster="orders", region="us-east-1")
    d = decision(invoke(command("failback", request_id="fb-now")))
    assert d["outcome"] == "skipped:cooldown" and "cooldown 900s" in d["detail"]
    w.clock.advance(900)
    fo.put_lag(w.clients, [100.0, 120.0, 90.0], w.clock.now(), cluster="orders", region="us-east-1")
    assert decision(invoke(command("failback", request_id="fb-later")))["outcome"] == "executed"


def test_an_interrupted_approval_is_completed_by_the_next_approve_and_acts_once(w, monkeypatch):
    """The record says approved but the gate's callback failed (throttled): the act does not run (the workflow still
    waits), the approve is not reported done, and the next approve_failover completes the callback."""
    state = start(w)
    token = open_gate(w, state)
    workflow = w.fo.workflow
    original = workflow.send_task_success

    def throttled(**params):
        raise _error("ThrottlingException", "Rate exceeded", "SendTaskSuccess")

    monkeypatch.setattr(workflow, "send_task_success", throttled)
    d = approve(w)
    assert d["outcome"] == "failed:ThrottlingException", d
    assert run_status(w) == "approved" and workflow.callbacks == []
    monkeypatch.setattr(workflow, "send_task_success", original)
    d = decision(invoke(command("approve_failover", "carol")))
    assert d["outcome"] == "executed" and d["after"]["callback"] == "success" and d["after"]["approved_by"] == "bob"
    assert workflow.callbacks == [("success", token, {"approved_by": "bob", "reason": "approve_failover in the test"})]
    assert step("act", state, w.clock.now())["verdict"] == "continue"
    assert step("act", state, w.clock.now(), retry=5)["verdict"] == "continue"
    assert len(w.fo.db.promotions()) == 1


def test_a_step_payload_claiming_an_approval_is_not_one(w):
    state = start(w)
    open_gate(w, state)  # nobody approved; a forged input claims an approval
    forged = state | {"approval": {"approved_by": "mallory"}}
    assert step("act", forged, w.clock.now())["verdict"] == "stuck"
    record = w.audit_records()[-1]
    assert record["outcome"] == "skipped:run-closed" and w.fo.db.promotions() == []
