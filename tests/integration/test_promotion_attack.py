"""Adversarial review of issue 16's race fixes by a reviewer with a fresh context. Each test reproduced a defect of
the code as reviewed. Fixed: attack1/1b (check order), 2/2b (close), 3/3b (retention end fences rollbacks, the fast
path's write undone), 4 (no reconcile retry of a failed rollback; close while unreadable), 5 (Route 53 all-zero
weights), 6 (a blocked enforcement pages once), 7 (a rollback beaten by a simultaneous one is audited
`skipped:already-rolled-back`), 8 (a hand change after finalize is announced and paged, never rolled back)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from reflex_core.clock import VirtualClock
from reflex_core.runtime import install_runtime
from tests.conftest import T0
from tests.integration.test_promotion_race_defects import _third_target_group
from tests.support import events as ev
from tests.support.promotion import PromotionBench, bench, with_pair
from tests.support.promotion_races import LATENCY, Race

BLUE = {"blue": 100, "green": 0}
GREEN = {"blue": 0, "green": 100}


@pytest.fixture
def make(dev_config) -> Iterator[Any]:
    with mock_aws():
        yield lambda **changes: bench(with_pair(dev_config, **changes), VirtualClock(T0))
    install_runtime(None)


def _remove_third_target_group(b: PromotionBench, weights: dict[str, int]) -> None:
    """The operator repairs the listener: only blue and green again."""
    target = b.world.config.promotions[0].target
    elb = b.world.clients.elbv2
    (listener,) = elb.describe_listeners(ListenerArns=[target.listener_arn])["Listeners"]
    actions = listener["DefaultActions"]
    forward = next(a for a in actions if a["Type"] == "forward")
    forward["ForwardConfig"]["TargetGroups"] = [
        {"TargetGroupArn": target.blue_target_group_arn, "Weight": weights["blue"]},
        {"TargetGroupArn": target.green_target_group_arn, "Weight": weights["green"]}]
    forward.pop("TargetGroupArn", None)
    elb.modify_listener(ListenerArn=target.listener_arn, DefaultActions=actions)


def _finalized_then_retention_ended_by_green_ready(b: PromotionBench) -> None:
    """Green finalized (v2), blue retained; v3 lands on blue, its GreenReady ends blue's retention (the preflight
    refuses: v3 not up yet). Blue is no longer a rollback target (docs/architecture.md, issue 16)."""
    b.green_ready(release="v2")
    b.run(400)
    assert b.record().promotion.status == "finalized" and b.weights() == GREEN
    b.healthy("blue", 0)
    b.green_ready(release="v3")
    b.run(5)
    p = b.record().promotion
    assert p.status == "finalized" and p.releases.get("blue") == "v3"


# --------------------------------------------------------------------------- 1. unplannable path skips the checks


def test_attack1_alarm_after_retention_ended_with_unreadable_switch_never_puts_traffic_on_unapproved_release(
        make) -> None:
    """A guard alarm after the retention ended must be `skipped:retention-ended` (a human decides). With the listener
    unreadable at that moment (a third target group), `_plan_rollback` takes the unplannable branch *before* the
    finalized/retention checks: the finalized promotion becomes `rollback-failed` (blocking every GreenReady), and
    once the listener is repaired the reconcile 'retries the rollback': 100 % onto blue, which runs v3 (unapproved)."""
    b = make(approval=None, bake_s=30)
    _finalized_then_retention_ended_by_green_ready(b)
    _third_target_group(b)
    with contextlib.suppress(Exception):
        b.alarm(LATENCY, "ALARM")
    p = b.record().promotion
    status = f"{p.status} ({p.reason})"
    # The operator repairs the listener (green serving); blue's v3 is up now.
    _remove_third_target_group(b, GREEN)
    b.healthy("blue", 2)
    b.clock.advance(60)
    b.reconcile()
    assert b.weights() == GREEN, ("the reconcile put 100 % on blue, which runs v3, a release nobody approved; the "
                                  f"alarm had recorded the finalized promotion {status}")
    assert b.record().promotion.status == "finalized"


def test_attack1b_abort_of_a_finalized_promotion_with_unreadable_switch_is_refused_not_rollback_failed(make) -> None:
    """`abort` of a finalized promotion is refused ('finalized; rollback within the retention window instead'), but
    only when the switch is readable: unreadable, the abort records it `rollback-failed`, stops nothing sensible, and
    pages; after repair the reconcile moves all traffic back to blue: an abort turned into a rollback."""
    b = make(approval=None, bake_s=30)
    b.green_ready(release="v2")
    b.run(400)
    assert b.record().promotion.status == "finalized"
    _third_target_group(b)
    with contextlib.suppress(Exception):
        b.console("abort", reason="abort the finished promotion?")
    p = b.record().promotion
    status = f"{p.status} ({p.reason})"
    _remove_third_target_group(b, GREEN)
    b.clock.advance(60)
    b.reconcile()
    assert b.weights() == GREEN, f"an abort (refused on a finalized promotion) ended as a rollback to blue: {status}"
    assert b.record().promotion.status == "finalized"


# --------------------------------------------------------------------------- 2. close is not conditional


def test_attack2_close_decided_before_a_guard_alarm_overwrites_the_rollback(make) -> None:
    """Issue 16: 'a rollback must win against every step or command running at the same time'. An operator's
    `close live=green` (mid-canary) is planned; a guard alarm's rollback runs to its end (blue 100, rolled back,
    epoch+1); then the close resumes: its record write is not conditional on the promotion/epoch/status it was
    planned on, so it writes green 100 and records `closed` on green. The reconcile then keeps green forever: the
    colour whose guard alarm just fired gets all the traffic, and the rollback's decision is undone."""
    b = make()
    b.green_ready(release="v2")
    b.run(1)
    assert b.weights() == {"blue": 90, "green": 10}
    race = Race(b, ("ModifyListener", 1), 0)  # the close stops right before its traffic write
    race.install()
    out: dict[str, Any] = {}

    def close() -> None:
        out["close"] = b.console("close", live="green", reason="ship it now")

    def alarm() -> None:
        race.muted = True
        b.set_alarm(LATENCY, "ALARM")
        race.muted = False
        out["alarm"] = b.invoke(ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), value=2.5, threshold=1.0))

    race.run(close, alarm)
    # Fixed two ways: a `close` mid-promotion onto the new colour is refused (it would skip the gate and disarm
    # the guards; test_attack2b), and a close that does run re-checks the record it was decided on before its
    # traffic write and writes its record conditionally (PromotionMoved otherwise).
    if not race.fired:
        assert out["close"]["decisions"][0]["outcome"] == "skipped:in-flight", out["close"]
        out["alarm"] = out.get("alarm") or b.invoke(ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), value=2.5,
                                                                          threshold=1.0))
    assert out["alarm"]["decisions"][0]["outcome"] == "executed", out["alarm"]
    record = b.record()
    assert record.promotion.status == "rolled-back", (
        f"the rollback was overwritten by a close decided before it: {record.promotion.status} on {record.live}; "
        f"close said {out['close']['decisions'][0]['outcome']}")
    assert b.weights() == BLUE


def test_attack2b_close_mid_canary_skips_the_gate_and_disarms_the_guard_alarms(make) -> None:
    """`close` is accepted on an in-flight promotion, onto the colour under test: 100 % green at the canary, no
    approval, no bake, no DeploymentCompleted. Afterwards a guard alarm finds the record `closed` (enforced on
    green) and is skipped `already-rolled-back`: nothing protects the unapproved release any more."""
    b = make()
    b.green_ready(release="v2")
    b.run()
    assert b.record().promotion.status == "awaiting-approval"
    b.console("close", live="green", reason="settle it")
    b.clock.advance(30)
    (decision,) = b.alarm(LATENCY, "ALARM")["decisions"]
    assert b.weights() == BLUE, (
        f"guard alarm after a mid-canary close: {decision['outcome']}; traffic {b.weights()} on the unapproved release")


# --------------------------------------------------------------------------- 3. fast path vs the end of retention


def test_attack3_fast_rollback_decided_before_a_green_ready_ends_retention_leaves_traffic_on_the_new_release(
        make) -> None:
    """Green finalized (v2), blue retained. A guard alarm's invocation reads the record (blue retained) in its fast
    path; before its write, v3's GreenReady for blue is handled (retention ended: blue 'no longer a rollback
    target'). The fast path then writes 100 % blue (v3, unapproved); the pipeline reads the record afresh, finds
    `skipped:retention-ended` and pages 'a human decides' - but nothing undoes the fast path's write, the finalized
    record is not enforced by the reconcile, and the new promotion's preflight refuses (traffic not on green).
    Users stay on the unapproved release while the audit says the rollback was skipped."""
    b = make(approval=None, bake_s=30)
    b.green_ready(release="v2")
    b.run(400)
    assert b.record().promotion.status == "finalized" and b.weights() == GREEN
    race = Race(b, ("ModifyListener", 1), 0)  # the alarm's fast path stops right before its write
    race.install()
    out: dict[str, Any] = {}

    def alarm() -> None:
        race.muted = True
        b.set_alarm(LATENCY, "ALARM")
        race.muted = False
        out["alarm"] = b.invoke(ev.eventbridge_alarm(LATENCY, "ALARM", b.clock.now(), value=2.5, threshold=1.0))

    def green_ready() -> None:
        out["ready"] = b.green_ready(release="v3")

    race.run(alarm, green_ready)
    assert race.fired, race.calls
    race.muted = True
    b.run(5)
    p = b.record().promotion
    assert p.releases.get("blue") == "v3"
    (decision,) = out["alarm"]["decisions"]
    b.clock.advance(60)
    b.reconcile()
    assert b.weights() == GREEN, (
        f"100 % on blue (v3, never approved) after the alarm's decision {decision['outcome']}; record "
        f"{p.status} live={b.record().live}")


# ------------------------------------------------------------- 4. rollback-failed: the runbook races the reconcile


def _route53_records(b: PromotionBench) -> dict[str, dict[str, Any]]:
    target = b.world.config.promotions[0].target
    sets = b.world.clients.route53.list_resource_record_sets(HostedZoneId=target.hosted_zone_id)["ResourceRecordSets"]
    return {r["SetIdentifier"]: r for r in sets if r.get("SetIdentifier") in ("blue", "green")}


def test_attack4_reconcile_undoes_the_operators_choice_between_repairing_the_switch_and_close(make) -> None:
    """Runbook 'A rollback failed': 1. fix (restore blue's record) or keep the new colour, 2. put the traffic there by
    hand, 3. `close`. `close` needs a readable switch, so steps 1-2 must come first; but as soon as the switch is
    readable, the next reconcile (every minute) 'retries the rollback' of the `rollback-failed` promotion and moves
    all traffic to blue, the colour the operator just decided against, before their `close` arrives."""
    from tests.integration.test_promotion_race_defects import _delete_blue_record
    from tests.integration.test_promotion_races import ROUTE53

    b = make(target=ROUTE53)
    b.green_ready(release="v2")
    b.run(1)
    blue = _route53_records(b)["blue"]
    _delete_blue_record(b)
    with contextlib.suppress(Exception):
        b.alarm(LATENCY, "ALARM")
    assert b.record().promotion.status == "rollback-failed"
    # Steps 1-2 by hand: blue's record back at weight 0, green at 100 (the operator keeps green).
    target = b.world.config.promotions[0].target
    green = dict(_route53_records(b)["green"], Weight=100)
    b.world.clients.route53.change_resource_record_sets(HostedZoneId=target.hosted_zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": dict(blue, Weight=0)},
        {"Action": "UPSERT", "ResourceRecordSet": green}]})
    assert b.weights() == GREEN
    b.clock.advance(60)  # the operator types the close command; the schedule fires meanwhile
    b.reconcile()
    assert b.weights() == GREEN, ("the reconcile moved 100 % to blue between the operator's repair and their "
                                  f"`close`: {b.weights()}, record {b.record().promotion.status}")


# --------------------------------------------------------------------------- 5. Route 53: all-zero weights


def test_attack5_route53_all_zero_weights_make_the_rollback_unplannable(make) -> None:
    """Route 53 treats a weighted group whose weights are all 0 as an equal split (AWS docs: 'If you set Weight to 0
    for all records in the group, traffic is routed to all resources with equal probability'). Both records exist and
    are writable, yet `percentages` raises TrafficSwitchError ('every weight is 0'): a guard alarm's rollback becomes
    `rollback-failed` and the failing green keeps half the traffic, instead of the rollback writing blue 100."""
    from tests.integration.test_promotion_races import ROUTE53

    b = make(target=ROUTE53)
    b.green_ready(release="v2")
    b.run(1)
    target = b.world.config.promotions[0].target
    records = _route53_records(b)
    b.world.clients.route53.change_resource_record_sets(HostedZoneId=target.hosted_zone_id, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": dict(records[c], Weight=0)} for c in ("blue", "green")]})
    with contextlib.suppress(Exception):
        b.alarm(LATENCY, "ALARM")
    weights = {c: int(r["Weight"]) for c, r in _route53_records(b).items()}
    assert weights == BLUE, (f"guard alarm left Route 53 at {weights} (an equal split onto the failing green); record "
                             f"{b.record().promotion.status}")


def test_attack3b_rollback_decided_during_retention_executes_after_the_green_ready_ended_it(make) -> None:
    """The pipeline's own rollback has the same hole as the fast path (no fast path here: a console `rollback`).
    v3's GreenReady for blue is being handled (it ends blue's retention); the rollback preempts its lock and plans on
    the record read before that write (blue retained); the GreenReady writes the end of retention; the rollback then
    executes: 100 % blue (v3, unapproved) and records `rolled-back` live=blue, which the reconcile then enforces.
    `_execute_rollback`'s record change is not conditional on the state it was decided from (epoch/retention)."""
    b = make(approval=None, bake_s=30)
    b.green_ready(release="v2")
    b.run(400)
    assert b.record().promotion.status == "finalized" and b.weights() == GREEN
    race = Race(b, ("PutItem:promotion", 1), ("ModifyListener", 1))
    race.install()
    out: dict[str, Any] = {}

    def green_ready() -> None:
        out["ready"] = b.green_ready(release="v3")

    def rollback() -> None:
        out["rollback"] = b.console("rollback", reason="green looks slow")

    race.run(green_ready, rollback)
    assert race.fired and race.handed["second"], race.calls
    race.muted = True
    b.run(5)
    record = b.record()
    assert record.promotion.releases.get("blue") == "v3", record.promotion.releases
    b.clock.advance(60)
    b.reconcile()
    outcome = out["rollback"]["decisions"][0]["outcome"]
    # Fixed: the rollback's record write is conditional on the epoch it was decided from (ending the retention
    # bumps it); fenced, it puts the record's weights back and fails `PromotionMoved`. v3's own promotion then
    # runs its canary as approved: never 100 % on blue by a rollback.
    record = b.record()
    assert outcome == "failed:PromotionMoved", out["rollback"]
    assert b.weights() != BLUE and not (record.promotion.status == "rolled-back" and record.live == "blue"), (
        f"rollback {outcome} put 100 % on blue (v3, unapproved) after blue's retention ended; "
        f"record {record.promotion.status} live={record.live}, weights {b.weights()}")


# ------------------------------------------------------------- 6. reconcile vs an emptied known-good colour


def test_attack6_reconcile_pages_every_minute_when_the_rolled_back_colour_is_empty(make) -> None:
    """After a rollback to blue, blue loses every healthy target and the on-call moves the traffic to green by hand
    (the only thing that keeps the site up). The reconcile enforces the rolled-back record each minute: each run is a
    `failed:UnsafeWeights` decision, a notice, and a failed schedule invocation (retried by the scheduler), forever
    until someone `close`s. The rollback-failed path is paged once and then quiet; this one is not."""
    from tests.support.promotion import notices

    b = make()
    inbox = notices(b.world)
    b.green_ready(release="v2")
    b.run(1)
    b.alarm(LATENCY, "ALARM")
    b.set_alarm(LATENCY, "OK")
    assert b.record().promotion.status == "rolled-back"
    inbox()
    b.healthy("blue", 0)
    from promoter.traffic_switch import PairTraffic

    PairTraffic(b.world.clients, b.world.config.promotions[0]).switch.write(GREEN)
    raised = 0
    for _ in range(5):
        b.clock.advance(60)
        try:
            b.reconcile()
        except Exception:  # noqa: BLE001 - a failed schedule invocation
            raised += 1
    sent = len(inbox())
    failed = [a for a in b.audit() if a["trigger"].get("kind") == "schedule" and a["outcome"].startswith("failed:")]
    assert b.weights() == GREEN
    assert sent <= 1 and raised <= 1, (f"5 reconcile periods: {sent} notices, {raised} failed invocations, "
                                       f"{len(failed)} failed audit records ({failed[0]['outcome'] if failed else ''})")
    assert sent == 1 and b.record().blocked  # the first one paged, and is remembered
    # Blue can take traffic again: the record is enforced, and the memory cleared (a later block pages again).
    b.healthy("blue", 2)
    b.clock.advance(60)
    b.reconcile()
    assert b.weights() == BLUE and b.record().blocked == ""


# --------------------------------------------------------------------------- 7. two guard alarms at once


def test_attack7_two_guard_alarms_at_once_audit_one_rollback_not_two(make) -> None:
    """Two guard alarms enter ALARM together (latency and 5xx usually do): two invocations, both preempt the lock.
    Both are audited `executed rollback: blue 90 / green 10 -> blue 100 / green 0`: the trail shows two rollbacks
    each claiming the same transition (and two notices), while only one moved traffic and recorded the rollback; the
    second found the promotion rolled back already (its record write was a no-op) and should say so."""
    b = make()
    b.green_ready(release="v2")
    b.run(1)
    race = Race(b, ("PutItem:promotion", 1), 0)
    race.install()
    out: dict[str, Any] = {}

    def alarm(name: str) -> Any:
        def run() -> None:
            race.muted = True
            b.set_alarm(name, "ALARM")
            race.muted = False
            out[name] = b.invoke(ev.eventbridge_alarm(name, "ALARM", b.clock.now(), value=2.5, threshold=1.0))
        return run

    race.run(alarm(LATENCY), alarm("web-5xx-rate-high"))
    assert race.fired
    assert b.weights() == BLUE and b.record().promotion.status == "rolled-back"
    moved = [r for r in b.audit() if r["operation"] == "rollback" and r["outcome"] == "executed"
             and (r.get("before") or {}).get("weights") != (r.get("after") or {}).get("weights")]
    assert len(moved) == 1, [(r["reason"] if "reason" in r else r.get("detail", ""))[:90] for r in moved]
    second = [r for r in b.audit() if r["operation"] == "rollback" and r["outcome"] == "skipped:already-rolled-back"]
    assert len(second) == 1 and "already rolled-back by another decision" in second[0]["detail"], second


# --------------------------------------------------------------------------- 8. finalize vs a hand change


def test_attack8_a_hand_change_right_after_finalize_rolls_back_the_finalized_release(make) -> None:
    """Issue 16 decided that weights changed by hand make a shift (and a check) *hold*. Finalize is different: its
    record write lands (finalized, live green), then it re-reads the weights, finds blue 1 / green 99 (a hand tweak),
    raises WeightsMoved; the retried finalize is `skipped:weights-mismatch` and the workflow rolls the *finalized*,
    approved, baked release back to blue (no guard alarm involved). DeploymentCompleted never goes out."""
    from promoter.traffic_switch import PairTraffic

    b = make(approval=None, bake_s=30)
    state = {"armed": False, "done": False}

    def params(params: dict[str, Any], model: Any, **_: Any) -> None:
        if (b.current_step == "finalize" and model.name == "PutItem"
                and params.get("Item", {}).get("pk", {}).get("S", "").startswith("promotion#")):
            state["armed"] = True

    def before(model: Any, **_: Any) -> None:
        if state["armed"] and not state["done"] and model.name == "GetItem":
            state["done"] = True
            PairTraffic(b.world.clients, b.world.config.promotions[0]).switch.write({"blue": 1, "green": 99})

    from tests.support.promotion import completed_events

    done = completed_events(b.world)
    b.world.clients.get("dynamodb").meta.events.register("before-parameter-build", params)
    b.world.clients.get("dynamodb").meta.events.register("before-call", before)
    b.green_ready(release="v2")
    b.run(400)
    assert state["done"]
    p = b.record().promotion
    assert p.status in ("finalized", "completed") or p.paused, (
        f"a 1 % hand change after the finalize's record write ended in {p.status} ({p.reason}); weights {b.weights()}")
    # The finalized release is announced once, the hand change left alone, and the finalize's audit pages.
    assert b.weights() == {"blue": 1, "green": 99}
    assert [e["detail"]["release"] for e in done()] == ["v2"]
    (final,) = [r for r in b.audit() if r["operation"] == "finalize" and r["outcome"] == "executed"]
    assert final.get("page") and "changed outside Reflex after the finalize" in final["detail"], final


def test_a_hand_change_between_the_last_check_and_the_finalize_holds(make) -> None:
    """Before the finalize's record lands a hand change holds the promotion, like a shift or a check does
    (issue 16): paused, nothing announced, no rollback; `resume` re-checks and finalizes once the weights are back."""
    from promoter.traffic_switch import PairTraffic
    from tests.support.promotion import completed_events

    b = make(approval=None, bake_s=30)
    done = completed_events(b.world)
    armed = {"hit": False}

    def before(model: Any, params: dict[str, Any], **_: Any) -> None:
        if b.current_step == "finalize" and not armed["hit"] and model.name == "GetItem":
            armed["hit"] = True
            PairTraffic(b.world.clients, b.world.config.promotions[0]).switch.write({"blue": 5, "green": 95})

    b.world.clients.get("dynamodb").meta.events.register("before-call", before)
    b.green_ready(release="v2")
    b.run(400)
    assert armed["hit"]
    p = b.record().promotion
    assert p.status == "held" and p.paused, (p.status, p.reason)
    assert b.weights() == {"blue": 5, "green": 95} and done() == []
    assert not [r for r in b.audit() if r["operation"] == "rollback"]


def test_close_is_accepted_while_the_switch_is_unreadable_and_the_reconcile_applies_it(make) -> None:
    """The operator may decide first and repair after: `close` on a `rollback-failed` promotion whose switch cannot
    be read records the decision; once the switch is readable the reconcile writes 100 % on the chosen colour."""
    from tests.integration.test_promotion_race_defects import _delete_blue_record
    from tests.integration.test_promotion_races import ROUTE53

    b = make(target=ROUTE53)
    b.green_ready(release="v2")
    b.run(1)
    blue = _route53_records(b)["blue"]
    _delete_blue_record(b)
    with contextlib.suppress(Exception):
        b.alarm(LATENCY, "ALARM")
    assert b.record().promotion.status == "rollback-failed"
    (decision,) = b.console("close", live="green", reason="keep green; blue's record is being restored")["decisions"]
    assert decision["outcome"] == "executed", decision
    record = b.record()
    assert record.promotion.status == "closed" and record.live == "green"
    target = b.world.config.promotions[0].target
    b.world.clients.route53.change_resource_record_sets(HostedZoneId=target.hosted_zone_id, ChangeBatch={"Changes": [
        {"Action": "CREATE", "ResourceRecordSet": dict(blue, Weight=50)}]})
    b.clock.advance(60)
    b.reconcile()
    assert b.weights() == GREEN
