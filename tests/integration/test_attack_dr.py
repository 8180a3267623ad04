"""Adversarial tests of regional failover and on-demand drills (an SRE/security review). Each test names one
suspected defect; its docstring gives the scenario and the safe behaviour expected. The tests reuse the
repository's harnesses: the real handlers, the deployed workflow definitions run by the local workflow driver
(drills) or the steps sent as Step Functions sends them (failover)."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from drills.drill_workflow import drill_definition
from simulator.failover_world import _error
from simulator.workflow_driver import LocalWorkflows

# The drill helpers of the existing suite (same module, same harness).
from tests.integration.test_drills_on_demand import (
    answer,
    approve_and_start_restore,
    complete_restore,
    copy_exists,
    ledger,
    run_of,
    started_drill,
)
from tests.integration.test_drills_on_demand import (
    invoke as dr_invoke,
)
from tests.support import drills as dr
from tests.support import drills_on_demand as od
from tests.support import failover as fo
from tests.support.failover import command, decision
from tests.support.failover import invoke as fo_invoke
from tests.support.failover import step as fo_step


class LostAnswer(Exception):
    """The Lambda invocation applied, but Step Functions got no answer (it retries the task as Lambda.Unknown)."""

    error_type = "Lambda.Unknown"


# =========================================================================== on-demand drills


@pytest.fixture
def dev_config():
    return od.drills_config()


@pytest.fixture
def drills(world, clock, monkeypatch):
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
    backup, data_api, cache = dr.BackupStub(session), dr.DataApiStub(session), od.CacheStub(session)
    world.overrides.update({"backup": backup.client, "rds-data": data_api.client, "elasticache": cache.client})
    dr.create_rds(world.clients)
    monkeypatch.setenv("REFLEX_RESTORE_ROLE_ARN", od.RESTORE_ROLE)
    world.settings = world.settings.model_copy(update={"workflow_arn": od.MACHINE_ARN})
    world.driver = LocalWorkflows(drill_definition(od.FUNCTION_ARN), od.MACHINE_ARN, od.FUNCTION_ARN, dr_invoke,
                                  clock)
    world.overrides["stepfunctions"] = world.driver
    world.runtime(clock, reaction="drills")
    world.backup, world.data_api, world.cache = backup, data_api, cache
    world.od = od.OnDemandBackup(backup.stub)
    yield world
    world.overrides.clear()


def test_attack1_drill_poll_answer_lost_after_restore_completed_loops_forever_copy_never_deleted(drills, clock):
    """The restore completes; the poll step that saw it records the drill `restored`, but its answer is lost
    (Lambda.Unknown) and Step Functions retries the step. The retry finds the drill no longer restoring
    (skipped:not-restoring) and hands back its *input* state, whose verdict is still `running`: AfterPoll loops to
    WaitForRestore, every later poll skips the same way, forever. Validate, Teardown and Record never run: the
    restored copy of production data stays up (unalarmed: it is not in the ledger), the drill is never recorded.
    Safe: a retried step carries on from the drill's record (restored -> Validate -> Teardown -> Record); within an
    hour the copy is gone and the drill recorded."""
    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    complete_restore(drills, clock, drill_id, copy_id, point)  # poll 1 ran (running); poll 2 will complete
    real = drills.driver._invoke
    lost = {"done": False}

    def lossy(event: dict[str, Any]) -> Any:
        out = real(event)
        if event["reflex_step"]["step"] == "poll_restore" and not lost["done"]:
            lost["done"] = True
            raise LostAnswer("the invocation's answer was lost")
        return out

    drills.driver._invoke = lossy
    drills.driver.run_until(clock.now() + timedelta(hours=1))
    assert lost["done"]
    run = run_of(drills, drill_id)
    polls = [r for r in drills.audit_records() if r.get("operation") == "poll_restore"]
    assert run["status"] == "recorded", (run["status"], len(polls), drills.driver.execution(drill_id).state)
    assert not copy_exists(drills, copy_id)


def test_attack2_drill_requester_can_approve_their_own_production_drill(drills, clock):
    """A production-like drill waits for `approve_drill` (the CAB gate), but the requester approves it herself:
    `_plan_answer` never compares the approver with `requested_by` (the failover gate does: skipped:self-approval).
    Safe: the requester's approve is refused (skipped:self-approval) and the drill keeps waiting."""
    drill_id, _ = started_drill(drills)  # requested by alice
    drills.driver.run_due()
    assert run_of(drills, drill_id)["status"] == "awaiting-approval"
    [d] = answer("approve_drill", drill_id, operator="alice")["decisions"]
    assert d["outcome"] == "skipped:self-approval", d
    assert run_of(drills, drill_id)["status"] == "awaiting-approval"


def test_attack3_drill_approval_whose_callback_was_throttled_can_never_be_completed(drills, clock, monkeypatch):
    """bob approves; the record is written `approved` (token dropped) and then SendTaskSuccess is throttled. The
    pipeline's verify reads only the record, so bob is told `executed` ("the call answered ThrottlingException, but
    the change is in place"). The workflow still waits, but the record no longer holds the token: a second
    approve_drill is refused (not-awaiting-approval: "drill is approved"), and the drill times out and is recorded
    not-approved while the audit trail says it was approved (approved_by bob). Safe (as the failover gate does):
    the approve is not reported done until the callback went through, the record keeps the token, and the next
    approve_drill completes it; the drill then restores."""
    drill_id, _ = started_drill(drills)
    drills.driver.run_due()
    real = drills.driver.send_task_success
    calls = {"n": 0}

    def throttled_once(**params: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                              "SendTaskSuccess")
        return real(**params)

    monkeypatch.setattr(drills.driver, "send_task_success", throttled_once)
    [first] = answer("approve_drill", drill_id)["decisions"]
    [again] = answer("approve_drill", drill_id, operator="carol")["decisions"]
    drills.driver.run_until(clock.now() + timedelta(seconds=601))  # past the approval timeout
    run = run_of(drills, drill_id)
    approvals = [(first["outcome"], first["detail"][-90:]), (again["outcome"], again["detail"][-90:])]
    # The drill must not end not-approved while the audit trail says an approve_drill was executed.
    assert not (run["outcome"] == "not-approved" and "executed" in (first["outcome"], again["outcome"])), (
        run["status"], run["outcome"], run["approved_by"], approvals)


# =========================================================================== regional failover


@pytest.fixture
def w(world, clock):
    res = fo.create_failover(world, clock.now())
    world.runtime(clock, reaction="failover")
    world.fo = res
    world.clock = clock
    yield world
    world.overrides.clear()


def _run(w) -> Any:
    from failover.failover_runs import RunStore

    return RunStore(w.clients.dynamodb, w.settings.state_table).load(fo.NAME).run


def _start(w, mode: str = "switchover", operator: str = "alice", **fields: Any) -> dict[str, Any]:
    d = decision(fo_invoke(command("failover", operator, mode=mode, **fields)))
    assert d["outcome"] == "executed", d
    [name] = list(w.fo.workflow.executions)
    return dict(w.fo.workflow.executions[name]["input"])


def _open_gate(w, state: dict[str, Any]) -> str:
    token = w.fo.workflow.new_token()
    fo_step("wait_for_approval", state, w.clock.now(), token=token, state_name="Approval")
    return token


def test_attack4_failover_whose_workflow_failed_to_start_is_claimed_started_and_blocks_the_next(w, monkeypatch):
    """Region loss at 3 a.m.: `failover` records the run `started`, then StartExecution is throttled. No workflow
    runs. Safe: the decision says it failed (not executed), and the operator's next `failover` (a new request)
    starts the run's workflow or a new run -- it is not refused `failover-in-flight` by a run with no workflow for
    the approval timeout plus an hour (as the on-demand drills do: "a failed start blocks nothing")."""
    workflow = w.fo.workflow
    real = workflow.start_execution
    calls = {"n": 0}

    def throttled_once(**params: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise _error("ThrottlingException", "Rate exceeded", "StartExecution")
        return real(**params)

    monkeypatch.setattr(workflow, "start_execution", throttled_once)
    first = decision(fo_invoke(command("failover", mode="failover", request_id="r1")))
    assert workflow.executions == {}
    second = decision(fo_invoke(command("failover", mode="failover", request_id="r2")))
    outcomes = [(first["outcome"], first["detail"][-80:]), (second["outcome"], second["detail"][:120])]
    assert first["outcome"] != "executed", outcomes  # no workflow was started
    assert len(workflow.executions) == 1, outcomes


def test_attack5_failover_approved_but_callback_pending_cannot_be_rejected(w, monkeypatch):
    """bob approves; the record says approved, but the gate's SendTaskSuccess is throttled: the workflow still
    waits at the gate and nothing was acted. alice (who learns the primary is back) sends reject_failover: it is
    refused (skipped:no-run-waiting, "the last run is approved") although the gate is still open, and the next
    approve_failover by anyone completes bob's approval and promotes. Safe: a run that has not acted and whose gate
    still waits can be rejected (the gate fails, the run is not-approved, nothing is done)."""
    state = _start(w)
    _open_gate(w, state)
    workflow = w.fo.workflow
    original = workflow.send_task_success

    def throttled(**params: Any) -> Any:
        raise _error("ThrottlingException", "Rate exceeded", "SendTaskSuccess")

    monkeypatch.setattr(workflow, "send_task_success", throttled)
    assert decision(fo_invoke(command("approve_failover", "bob")))["outcome"] == "failed:ThrottlingException"
    monkeypatch.setattr(workflow, "send_task_success", original)
    d = decision(fo_invoke(command("reject_failover", "carol")))
    assert d["outcome"] == "executed", d
    assert _run(w).status == "not-approved" and w.fo.db.promotions() == []


def test_attack6_failover_with_unknown_lag_accepts_zero_seconds_of_data_loss(w):
    """The primary region is gone: no lag datapoint. The operator sends mode failover with accept_data_loss_s 0 (or
    a value below the RPO): the pre-check takes it ("lag unknown; up to 0s of data loss accepted") although the
    loss is unknown and may exceed the RPO -- the operator explicitly said they accept no loss. Safe: with the lag
    unknown, accept_data_loss_s must be at least the RPO (an unknown lag can only be bounded by what was accepted)
    or the failover is refused naming accept_data_loss_s."""
    from failover.failover_runs import RunStore  # noqa: F401

    w.clock.advance(3600)  # the lag datapoints are older than the 5-minute window: lag unknown
    d = decision(fo_invoke(command("plan_failover", mode="failover", accept_data_loss_s=0)))
    assert d["before"]["prechecks"]["lag_s"] is None, d["before"]["prechecks"]
    assert d["before"]["prechecks"]["passed"] is False, d["detail"]
    assert "accept_data_loss_s" in d["detail"]


def test_attack7_failover_request_id_reused_after_idempotency_ttl_claims_a_start_that_did_nothing(w):
    """A runbook script reuses its request_id ("orders-failover"). The first run was not approved (timed out) and
    ended. Hours later (past the idempotency TTL) the same command is sent again: its run id is the old run's,
    StartExecution answers ExecutionAlreadyExists (swallowed), no run record is written: nothing starts, yet the
    operator is told it started (or a misleading failure). Safe: either a new run starts (a workflow runs and waits
    for approval) or the command is refused saying the request id was used by an ended run."""
    state = _start(w, request_id="orders-failover")
    token = _open_gate(w, state)
    w.clock.advance(901)
    w.fo.workflow.time_out(token)
    fo_step("close", state | {"closing": "not-approved", "error": {"Error": "States.Timeout", "Cause": ""}},
            w.clock.now(), state_name="CloseNotApproved")
    assert _run(w).status == "not-approved"
    w.clock.advance(4 * 3600)  # past guardrails.idempotency_ttl_s (3600)
    # Setup: Powertools expires idempotency records on wall-clock time, not the virtual clock: drop them as the TTL
    # would have (as tests/integration/test_failure_semantics.py does).
    ddb = w.clients.dynamodb
    for item in ddb.scan(TableName=w.settings.idempotency_table)["Items"]:
        ddb.delete_item(TableName=w.settings.idempotency_table, Key={"id": item["id"]})
    fo.put_lag(w.clients, [900.0, 800.0], w.clock.now())
    d = decision(fo_invoke(command("failover", mode="switchover", request_id="orders-failover")))
    run = _run(w)
    started_now = run.status == "started" and len(w.fo.workflow.executions) == 2
    refused = d["outcome"].startswith("skipped:") or d["outcome"].startswith("rejected")
    assert started_now or refused, (d["outcome"], d["detail"][:200], run.status, len(w.fo.workflow.executions))


def test_attack8_failover_approved_run_held_by_the_kill_switch_cannot_be_cancelled(w):
    """bob approves (the gate completes); on-call sees the primary coming back and turns the kill switch on: the act
    is deferred (StepDeferred, retried for about 3.4 h). The runbook says reject_failover still runs under the kill
    switch and cancels a run, but a run that is `approved` and has not acted is refused (skipped:no-run-waiting):
    when the switch is released the act promotes with a stale approval. Safe: reject_failover cancels any run
    that has not acted yet (the run ends not-approved; the act, when it comes, does nothing)."""
    from failover.step_response import StepDeferred

    state = _start(w)
    _open_gate(w, state)
    assert decision(fo_invoke(command("approve_failover", "bob")))["outcome"] == "executed"
    w.set_kill_switch("failover", True)
    w.invalidate_kill_switch_caches()
    with pytest.raises(StepDeferred):
        fo_step("act", state, w.clock.now())
    d = decision(fo_invoke(command("reject_failover", "carol")))
    w.set_kill_switch("failover", False)
    w.invalidate_kill_switch_caches()
    fo_step("act", state, w.clock.now(), retry=1)
    assert (d["outcome"], w.fo.db.promotions()) == ("executed", []), (d["outcome"], d["detail"][:160],
                                                                      w.fo.db.promotions())


def test_attack9_failover_route53_swap_does_not_recheck_the_writer(w):
    """await_writer saw orders-replica as writer (run `promoted`). Before the route step runs (deferred by the lock
    or kill switch, or simply 30 s later), the writer moves back to orders (a manual switchover, an AWS-side
    recovery). The route step trusts the run record and makes the replica's record PRIMARY: the application's
    writes now go to a reader (read-only errors) until `complete` notices and pages. Safe: the route step re-reads
    the global cluster and refuses (pages, swaps nothing) unless the target is the writer."""
    w.fo.db.on_promotion = lambda db: db.settle()
    state = _start(w)
    _open_gate(w, state)
    decision(fo_invoke(command("approve_failover", "bob")))
    for name in ("act", "await_writer"):
        state = fo_step(name, state, w.clock.now())
    assert _run(w).status == "promoted" and w.fo.db.writer == fo.SECONDARY_ARN
    w.fo.db.writer = fo.PRIMARY_ARN  # the writer moved back before the swap
    fo_step("route", state, w.clock.now())
    roles = fo.record_roles(w.clients, w.fo.hosted_zone_id)
    assert roles == {fo.PRIMARY_SET: "PRIMARY", fo.SECONDARY_SET: "SECONDARY"}, roles


def test_attack10_drill_teardown_deletes_the_planned_name_not_the_copy_the_restore_created(drills, clock):
    """The restore job completes with CreatedResourceArn naming a cluster other than the planned copy name (AWS
    Backup did not apply the name override, or the job is another one). Validation judges the created copy (it is
    isolated: passed), teardown deletes the *planned* name, finds it "already gone" and -- the drill being
    restored/validated -- does not watch it: the drill is recorded passed with "teardown: ... already gone", the real
    copy of production data stays up and nothing alarms (not in the ledger). Safe: teardown deletes the copy the
    restore created (a drill-prefixed name), or refuses/alarms on the mismatch; the copy never outlives the drill
    unalarmed."""
    from tests.integration.test_drills_on_demand import COUNT_SQL, FRESH_SQL

    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    started = clock.now()
    stray = "reflex-drill-" + "f" * 20  # drill-prefixed, isolated, but not the planned copy name
    assert stray != copy_id
    copy_arn = dr.restore_copy(drills.clients, stray)
    drills.od.status("od-job-1", "COMPLETED", started=started, point=point, created=copy_arn, took_s=900)
    newest = (point["CreationDate"] - timedelta(seconds=60)).strftime("%Y-%m-%d %H:%M:%S")
    drills.data_api.answer(copy_arn, COUNT_SQL, {"longValue": 10_000})
    drills.data_api.answer(dr.cluster_arn("orders"), COUNT_SQL, {"longValue": 10_020})
    drills.data_api.answer(copy_arn, FRESH_SQL, {"stringValue": newest})
    drills.driver.run_until_idle()
    run = run_of(drills, drill_id)
    leftovers = [c["identifier"] for c in ledger(drills).get("copies", [])]
    assert not copy_exists(drills, stray) or stray in leftovers, (run["status"], run["outcome"], run["teardown"],
                                                                  leftovers)


def test_attack11_drill_hard_stop_for_hours_leaves_the_copy_undeleted_unrecorded_and_unalarmed(drills, clock, capsys):
    """A drill's restore completed (the copy exists). The kill switch goes to `hard-stop` for an incident lasting
    three hours. Every step defers (StepDeferred, about 42 minutes each), then is caught: PollRestore -> Teardown
    -> RecordLeftover -> Record -> RecordFailed (Reflex.DrillNotRecorded). The runbook accepts the copy may remain
    but promises "the reflex-<stage>-drill-failed alarm": that alarm watches the DrillFailed metric, which only
    record_result publishes -- it never ran. The drill state machine has no failed-executions alarm (failover,
    promotion and shards workflows do). Result: the run stays `restoring`, the copy of production data is neither
    deleted nor in the ledger (check_drills silent), no DrillFailed datapoint: nothing alarms. Safe: the copy is
    deleted, or recorded as a leftover, or at least the drill-failed alarm fires."""
    from tests.integration.test_drills_on_demand import values

    drill_id, copy_id, point = approve_and_start_restore(drills, clock)
    complete_restore(drills, clock, drill_id, copy_id, point)
    drills.set_kill_switch_value("drills", "hard-stop")
    drills.invalidate_kill_switch_caches()
    drills.driver.run_until(clock.now() + timedelta(hours=3))
    drills.set_kill_switch_value("drills", "off")
    drills.invalidate_kill_switch_caches()
    drills.driver.run_until(clock.now() + timedelta(hours=2))
    run = run_of(drills, drill_id)
    execution = drills.driver.execution(drill_id)
    leftovers = [c["identifier"] for c in ledger(drills).get("copies", [])]
    failed_metric = values(capsys.readouterr().out, "DrillFailed")
    alarmed = copy_id in leftovers or 1 in failed_metric
    assert not copy_exists(drills, copy_id) or alarmed, (
        run["status"], execution.status, execution.error, leftovers, failed_metric)


class _LedgerWriteFailsOnce:
    """The moto DynamoDB client, except that the next put_item of the resource's drill ledger is throttled."""

    def __init__(self, real: Any, pk: str) -> None:
        self._real, self._pk, self.failed = real, pk, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def put_item(self, **kwargs: Any) -> Any:
        if not self.failed and kwargs.get("Item", {}).get("pk", {}).get("S") == self._pk:
            self.failed = True
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}},
                              "PutItem")
        return self._real.put_item(**kwargs)


def test_attack12_drill_start_reported_failed_while_its_workflow_runs_allows_a_second_concurrent_drill(drills,
                                                                                                      clock):
    """start_drill records the drill, starts its workflow, then the ledger write (active drill, cooldown start) is
    throttled: the answer is failed (verify: no execution ARN recorded yet) although the drill's workflow runs. The
    operator sends start_drill again (a new request): no active drill, no cooldown in the ledger -> a second drill of
    the same production resource starts while the first is in flight (two restores, two copies; the first one's
    fate is not what the operator was told). Safe: either the first answer says the drill started, or the second
    request is refused (drill-in-flight) -- never two drills of one resource at once."""
    drills.overrides["dynamodb"] = _LedgerWriteFailsOnce(drills.clients.dynamodb._real, "drill:orders-db")
    first = start_drill_raw()
    drills.overrides.pop("dynamodb")
    second = start_drill_raw(request_id="req-2")
    running = [e.name for e in drills.driver.executions.values() if e.status == "RUNNING"]
    assert not (first["outcome"] != "executed" and len(running) > 1), (
        first["outcome"], first["detail"][-120:], second["outcome"], running)
    assert len(running) <= 1, (first["outcome"], second["outcome"], running)


def start_drill_raw(request_id: str = "req-1") -> dict[str, Any]:
    out = dr_invoke({"command": "start_drill", "resource": "orders-db", "operator": "alice",
                     "reason": "quarterly DR drill", "request_id": request_id})
    [d] = out["decisions"]
    return d


def test_attack13_failover_run_that_acted_but_could_not_be_closed_blocks_every_later_failover_forever(w):
    """The act promoted (run `promoted`), then the Route 53 step failed after its retries and the close step failed
    too (hard-stop, DynamoDB throttled): the workflow ends in CloseFailed, whose cause says "the run ... ends by
    itself after its approval deadline". That holds only for runs that never acted: a `promoting`/`promoted` run
    is in flight forever (in_flight never goes stale after the act), and reject_failover cannot end it (it only
    answers runs at the gate). Days later, the next region incident: `failback` (and any `failover`) is refused
    `failover-in-flight` until someone edits the state table by hand. Safe: a run whose workflow ended stops
    holding the global database (it goes stale, or a console command can close it)."""
    w.fo.db.on_promotion = lambda db: db.settle()
    state = _start(w)
    _open_gate(w, state)
    decision(fo_invoke(command("approve_failover", "bob")))
    for name in ("act", "await_writer"):
        state = fo_step(name, state, w.clock.now())
    assert _run(w).status == "promoted"
    # Route failed after its retries -> Abandon -> CloseAbandoned failed after its retries -> CloseFailed (ended).
    w.fo.workflow.end(state["run_id"], "FAILED")  # setup: the workflow fake does not run executions; tell it
    w.clock.advance(2 * 86400)
    fo.put_lag(w.clients, [100.0, 120.0, 90.0], w.clock.now(), cluster="orders", region="us-east-1")
    fo.put_lag(w.clients, [100.0, 120.0, 90.0], w.clock.now())
    reject = decision(fo_invoke(command("reject_failover", "carol")))
    d = decision(fo_invoke(command("failback", request_id="fb-2-days-later")))
    assert d["outcome"] != "skipped:failover-in-flight", (d["outcome"], d["detail"][:200], reject["outcome"])


def test_attack14_failover_close_pages_nothing_was_done_after_a_switchover_that_landed(w):
    """The act's SwitchoverGlobalCluster is accepted by RDS (the global cluster is switching over) but its answer is
    lost (read timeout). The retries cannot read the global cluster (DescribeGlobalClusters throttled), so the
    workflow abandons the run and closes it `failed`. The close step's page says "nothing was done to the database"
    because `acted_at` is only set after a *confirmed* act -- while the writer is moving. On-call is told the
    database is untouched during a switchover. Safe: when the act's intent was written (the call may have been
    made), the close says the database call may have been made and to check the writer (runbook)."""
    from botocore.exceptions import ReadTimeoutError

    def lost_answer(db: Any) -> None:
        # The call applied; from now on the global cluster cannot be read (throttled), and its answer is lost.
        db.on_promotion = None
        db.sticky_faults = True
        db.faults["describe_global_clusters"] = _error("Throttling", "Rate exceeded", "DescribeGlobalClusters")
        raise ReadTimeoutError(endpoint_url="https://rds.us-west-2.amazonaws.com")

    state = _start(w)
    _open_gate(w, state)
    decision(fo_invoke(command("approve_failover", "bob")))
    w.fo.db.on_promotion = lost_answer
    first = None
    try:
        first = fo_step("act", state, w.clock.now())
    except Exception as err:  # noqa: BLE001 - the step fails: the workflow retries, then abandons
        first = type(err).__name__
    assert w.fo.db.failover_state is not None, first  # the switchover is under way
    for retry in (1, 2):
        w.clock.advance(10 * retry)
        with contextlib.suppress(Exception):  # the step fails: the workflow retries, then abandons
            fo_step("act", state, w.clock.now(), retry=retry)
    out = fo_step("close", state | {"closing": "failed", "error": {"Error": "ActionFailed", "Cause": "timeout"}},
                  w.clock.now(), state_name="CloseAbandoned")
    last = w.audit_records()[-1]
    assert last["outcome"] == "skipped:failover-failed" and last.get("page") is True, last
    assert "nothing was done to the database" not in last["detail"], (last["detail"], out.get("verdict"))


@pytest.fixture
def wd(world, clock):
    """The failover world with the deployed failover definition run by the local workflow driver."""
    from failover.handler import lambda_handler
    from failover.workflow_definition import failover_definition
    from tests.conftest import FakeLambdaContext

    fn = "arn:aws:lambda:us-east-1:123456789012:function:reflex-dev-failover"
    sm = "arn:aws:states:us-east-1:123456789012:stateMachine:reflex-dev-failover"
    res = fo.create_failover(world, clock.now())
    driver = LocalWorkflows(failover_definition(fn), sm, fn, lambda e: lambda_handler(e, FakeLambdaContext()), clock)
    world.overrides["stepfunctions"] = driver
    world.settings = world.settings.model_copy(update={"workflow_arn": sm})
    world.runtime(clock, reaction="failover")
    world.fo, world.driver, world.clock = res, driver, clock
    yield world
    world.overrides.clear()


def test_attack15_failover_rejection_is_retried_by_the_approval_gate_and_reopens_it(wd):
    """reject_failover fails the gate's token with `Reflex.Rejected`. The failover definition's Approval task keeps
    the generic Retry, whose `States.TaskFailed` matches every task error but States.Timeout -- so Step Functions
    *retries* the rejected gate (twice, 10 s and 20 s later): open_gate runs again with new tokens, each answered by
    close_gate, before the Catch finally routes to NotApproved. The drill workflow avoids exactly this ("Not
    States.TaskFailed: a rejection must not wait again"). The audit trail shows `open_gate executed` three times for
    one rejected run (the re-entries are audited under the intent's operation), and the rejection reaches its end
    30 s late. Safe: a rejection goes straight to NotApproved; the gate is
    opened once."""
    fo_invoke(command("failover", mode="switchover"))
    wd.driver.run_due()
    [execution] = wd.driver.executions.values()
    assert execution.state == "Approval" and execution.waiting_token
    assert decision(fo_invoke(command("reject_failover", "bob")))["outcome"] == "executed"
    wd.driver.run_until_idle()
    assert execution.status == "FAILED" and execution.error == "Reflex.NotApproved"
    gate = [(r["operation"], r["outcome"]) for r in wd.audit_records() if r.get("operation") in ("open_gate",
                                                                                                "close_gate")]
    retries = [e.detail for e in wd.driver.history if e.kind == "retry"]
    assert gate == [("open_gate", "executed")], (gate, retries)
