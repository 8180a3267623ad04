"""Issue 13's fault matrix: each AWS call of an acting invocation x each fault kind, then Lambda's retries.

`make test` runs a sample of the cells (every fault kind on the calls around the action, and a spread of the
others); `make fault-matrix` (REFLEX_FULL_FAULT_MATRIX=1) runs every cell. docs/resilience.md summarizes it.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import T0
from tests.support import events as ev
from tests.support.fault_matrix import MATRIX_KINDS, Case, clean_calls, run_cell

FULL = os.environ.get("REFLEX_FULL_FAULT_MATRIX") == "1"


def _world():
    from reflex_core.config import load_config_file
    from reflex_core.scaling_config import Prewarm
    from simulator.aws_world import create_world
    from tests.conftest import ROOT

    config = load_config_file(ROOT / "config" / "dev.yaml")
    morning = Prewarm(name="morning", cron="0 8 ? * MON-FRI *", timezone="UTC", min=10, for_minutes=60)
    scaling = [p.model_copy(update={"prewarm": [morning]}) if p.name == "workers" else p for p in config.scaling]
    return create_world(config.model_copy(update={"scaling": scaling}), {"api": 4, "workers": 2, "reporting-db": 1})


def _clock():
    from reflex_core.clock import VirtualClock

    return VirtualClock(T0 + timedelta(seconds=30))


def _scaler():
    from scaler.handler import lambda_handler

    return lambda_handler


def _api(world) -> int:
    return world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"]


def _workers(world) -> tuple[int, int]:
    g = world.clients.autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["web-workers"])[
        "AutoScalingGroups"][0]
    return g["MinSize"], g["DesiredCapacity"]


ALARM_CASE = Case(
    name="scaler: api latency alarm into ALARM (breach 60 % -> +50 %)",
    setup=lambda world, clock: None,
    deliveries=lambda world: [
        ev.eventbridge_alarm("api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0),
        ev.sns_alarm("api-p99-latency-high", "ALARM", T0, value=1.6, threshold=1.0),
    ],
    observe=_api,
    target_key="ecs-service/web/api",
    handler=_scaler,
)

PREWARM_CASE = Case(
    name="scaler: weekday-morning pre-warm of the workers ASG (floor 0 -> 10)",
    setup=lambda world, clock: None,
    deliveries=lambda world: [ev.schedule("workers-morning", "prewarm", T0, policy="workers",
                                          params={"prewarm": "morning"})],
    observe=_workers,
    target_key="asg/web-workers",
    handler=_scaler,
)



# --------------------------------------------------------------------------- promoter: a guard alarm's rollback

LATENCY = "web-p99-latency-high"
CANARY_WEIGHTS = {"blue": 90, "green": 10}
KNOWN_GOOD = {"blue": 100, "green": 0}


def _promotion_world():
    from reflex_core.config import load_config_file
    from simulator.aws_world import create_world
    from tests.conftest import ROOT
    from tests.support.promotion import with_pair

    config = with_pair(load_config_file(ROOT / "config" / "dev.yaml"), bake_s=30, retention_s=120)
    return create_world(config, {"api": 4, "workers": 2, "reporting-db": 1})


def _promotion_setup(world, clock) -> None:
    """A promotion in its canary (the first shift made, the workflow baking), then the guard alarm breaches."""
    from tests.support.promotion import PromotionBench

    bench = PromotionBench(world=world, clock=clock)
    bench.green_ready(release="v2")
    bench.run(1)
    record = bench.record()
    assert record.promotion.status == "shifting" and bench.weights() == CANARY_WEIGHTS, (record, bench.weights())
    clock.advance(20)
    bench.set_alarm(LATENCY, "ALARM")
    world.bench = bench
    world.setup_audit = {r["id"] for r in world.audit_records()}  # the promotion so far: not the cell's changes


def _weights(world) -> dict[str, int]:
    from promoter.traffic_switch import PairTraffic

    pair = world.config.promotion("web")
    return PairTraffic(world.clients, pair).read()


def _promotion_facts(world) -> dict[str, Any]:
    bench = world.bench
    record = bench.world.activate("promoter", bench.clock).store.promotion_record("web")
    return {"setup_audit": world.setup_audit, "live": record.live, "status": record.promotion.status,
            "execution": bench.driver.execution(record.promotion.id).status,
            "freezes": sorted(bench.world.activate("promoter", bench.clock).store.scale_in_freezes("api"))}


def _promoter():
    from promoter.handler import lambda_handler

    return lambda_handler


def _promoter_cold_start() -> None:
    """A new process: the fast rollback's in-memory record of the weights it wrote is gone."""
    from promoter.fast_rollback import FastRollback
    from promoter.handler import REACTION

    REACTION.fast_rollback = FastRollback()


def _alarm_deliveries(world) -> list[dict[str, Any]]:
    at = world.bench.clock.now()
    return [ev.eventbridge_alarm(LATENCY, "ALARM", at, value=2.5, threshold=1.0),
            ev.sns_alarm(LATENCY, "ALARM", at, value=2.5, threshold=1.0)]


def _check_rollback(case: Case, cell, clean) -> None:
    label = cell.label(case)
    # The rollback happened: the weights end on the last known-good colour, and the record says so.
    assert cell.final == KNOWN_GOOD, f"weights end {cell.final}, not on blue: {label}"
    facts = {k: v for k, v in cell.facts.items() if k != "setup_audit"}
    assert facts["live"] == "blue" and facts["status"] == "rolled-back", f"{facts}: {label}"
    assert facts["execution"] == "ABORTED", f"the workflow still runs ({facts}): {label}"
    assert facts["freezes"] == [], f"the scale-in freeze is left ({facts}): {label}"
    # At most one change: the canary weights, then the known-good ones, never back to the canary.
    assert cell.states[0] == CANARY_WEIGHTS, label
    seen_good = False
    for state in cell.states:
        assert state in (CANARY_WEIGHTS, KNOWN_GOOD), f"a third weighting {state}: {label}"
        assert not (seen_good and state == CANARY_WEIGHTS), f"stepped back to the canary: {label}"
        seen_good = seen_good or state == KNOWN_GOOD
    # Exactly one audit record of the change, with its true outcome: executed, from the canary to blue.
    rollbacks = [r for r in cell.audit if r["target"] == case.target_key and r["outcome"] == "executed"
                 and r["id"] not in cell.facts["setup_audit"]]
    assert [r["operation"] for r in rollbacks] == ["rollback"], f"executed records {rollbacks}: {label}"
    (record,) = rollbacks
    assert record["before"]["weights"] == CANARY_WEIGHTS, \
        f"the rollback's record says the weights were {record['before']['weights']}: {label}"
    # The re-read may fail on its own (a persistent fault on DescribeListeners): the record says so.
    assert record["after"].get("weights") == KNOWN_GOOD or "verify_error" in record["after"], \
        f"after {record['after']}: {label}"
    failed = [r for r in cell.audit if r["target"] == case.target_key and r["outcome"].startswith("failed:")
              and r["operation"] == "rollback"]
    # A failed attempt may be audited (then retried), never after the executed record.
    assert all(r["at"] <= record["at"] for r in failed), f"a failure audited after the rollback: {label}"
    _check_locks(cell, label)


ROLLBACK_CASE = Case(
    name="promoter: guard alarm into ALARM during a canary (rollback to blue; + its SNS copy)",
    setup=_promotion_setup,
    deliveries=_alarm_deliveries,
    observe=_weights,
    target_key="promotion/web",
    handler=_promoter,
    reaction="promoter",
    facts=_promotion_facts,
    check=_check_rollback,
    cold_start=_promoter_cold_start,
)


# --------------------------------------------------------------------------- invalidator: ContentChanged

PATHS = ["/products/42", "/"]
_SPACES: list[Any] = []


def _invalidation_world():
    import redis

    from simulator.aws_world import create_world
    from tests.support.invalidation import PORT, KeySpace, cache_entry, cdn_entry, make_config

    space = KeySpace(redis.Redis(host="127.0.0.1", port=PORT))
    _SPACES.append(space)
    config = make_config(caches=[cache_entry(namespace=space.namespace)], cdn=[cdn_entry()])
    world = create_world(config)
    world.space = space  # type: ignore[attr-defined]
    return world


def _invalidation_setup(world, clock) -> None:
    from invalidator.cache_tags import TaggedCache
    from simulator.invalidation_world import create_invalidation_world, local_redis_factory
    from tests.support.invalidation import PORT

    world.runtime(clock)
    world.inv = create_invalidation_world(world, clock, redis_factory=local_redis_factory(port=PORT))
    space = world.space
    space.fill(["product:1", "product:2", "other"])
    tagged = TaggedCache(space.client, namespace=space.namespace)
    for i in range(3):
        tagged.set(space.key(f"fragment:{i}"), "html", tags=["product:42"], ttl_s=600)
    tagged.set(space.key("fragment:untouched"), "html", tags=["product:7"], ttl_s=600)


def _content_changed(world) -> list[dict[str, Any]]:
    from tests.support.invalidation import content_changed

    space = world.space
    return [content_changed({"keys": [space.key("product:1"), space.key("product:2")], "tags": ["product:42"],
                             "paths": PATHS}, world.inv.clock.now())]


def _invalidation_attach(world, injector) -> None:
    """CloudFront is answered by the world's wrapper (in-progress times); its real client carries the faults."""
    from botocore.config import Config

    from simulator.aws_world import REGION, _shared_session

    wrapper = world.overrides["cloudfront"]
    world.plain_cloudfront = wrapper._real
    config = Config(region_name=REGION, retries={"mode": "standard", "total_max_attempts": 3})
    wrapper._real = injector.attach(_shared_session().client("cloudfront", config=config))


def _invoke_invalidator(world, event, context):
    return world.inv.invoke("invalidator", event, context)


def _invalidator_context():
    from simulator.scenario import SimulatedContext

    return SimulatedContext(function_name="reflex-itest-invalidator", memory_limit_in_mb=512)


def _batcher_delivery(world) -> list[Any]:
    """The batcher's event source mapping: the coalescing queue's visible, due messages as one batch; the ones it
    reports failed, or all of them when it dies, come back (the visibility timeout has passed by the next)."""
    def deliver() -> None:
        import json

        from simulator.aws_world import REGION
        from simulator.scenario import ACCOUNT

        env = world.inv
        sqs = world.observer_clients.sqs  # the mapping's calls, not the function's
        url = env.cdn_queue_urls["site"]
        taken: list[dict[str, Any]] = []
        while True:
            got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=300,
                                      AttributeNames=["ApproximateReceiveCount"]).get("Messages", [])
            if not got:
                break
            taken.extend(got)
        due = env.due()
        batch = [m for m in taken if due(json.loads(m["Body"]))]
        for m in taken:
            if m not in batch:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        if not batch:
            return
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": {"ApproximateReceiveCount": m["Attributes"]["ApproximateReceiveCount"]},
            "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
            "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{url.rsplit('/', 1)[-1]}", "awsRegion": REGION}
            for m in batch]}
        failed = {m["MessageId"] for m in batch}
        try:
            response = env.invoke("cdn_batcher", event)
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        finally:
            for m in batch:
                if m["MessageId"] in failed:
                    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
                else:
                    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    return [deliver]


def _cdn_invalidations(world) -> list[dict[str, Any]]:
    """What CloudFront holds: one invalidation per CallerReference (CloudFront returns the one already made for a
    repeated reference; moto makes another, so the references are what is counted)."""
    cf = world.plain_cloudfront
    dist = world.inv.distributions["site"]
    items = cf.list_invalidations(DistributionId=dist).get("InvalidationList", {}).get("Items", []) or []
    by_ref: dict[str, list[str]] = {}
    for item in items:
        batch = cf.get_invalidation(DistributionId=dist, Id=item["Id"])["Invalidation"]["InvalidationBatch"]
        by_ref.setdefault(batch["CallerReference"], list(batch["Paths"].get("Items", []) or []))
    return [{"reference": ref, "paths": paths} for ref, paths in by_ref.items()]


def _invalidation_state(world) -> tuple[int, int, int, bool]:
    """(targeted keys left, untouched keys left, CloudFront invalidations, every path invalidated)."""
    space = world.space
    targeted = ["product:1", "product:2", "fragment:0", "fragment:1", "fragment:2"]
    left = sum(int(space.client.exists(space.key(k))) for k in targeted)
    kept = sum(int(space.client.exists(space.key(k))) for k in ("other", "fragment:untouched"))
    made = _cdn_invalidations(world)
    covered = set(PATHS) <= {p for inv in made for p in inv["paths"]}
    return left, kept, len(made), covered


def _invalidation_facts(world) -> dict[str, Any]:
    ddb = world.clients.dynamodb
    items = ddb.scan(TableName=world.settings.state_table).get("Items", [])
    runs = {i["pk"]["S"]: float(i["lease_until"]["N"]) if "lease_until" in i else None for i in items
            if i["pk"]["S"].startswith("invalidation#")}
    queued = [m for m in world.inv.queue_bodies(world.inv.cdn_queue_urls["site"]) if m.get("kind") == "paths"]
    return {"runs": runs, "invalidations": _cdn_invalidations(world), "queued_paths": queued}


def _check_invalidation(case: Case, cell, clean) -> None:
    label = cell.label(case)
    left, kept, made, covered = cell.final
    # The change that should happen has happened: the keys and tagged keys are gone, every path invalidated.
    assert left == 0, f"{left} targeted keys left: {label}"
    assert kept == 2, f"an untouched key was removed: {label}"
    assert covered, f"a path was never invalidated ({cell.facts['invalidations']}): {label}"
    assert cell.facts["queued_paths"] == [], f"paths left in the queue: {label}"
    # At most one change per transition, within what the design allows (docs/resilience.md): one CloudFront
    # invalidation, or a second one only when queueing the paths is re-run (its outcome unknown to the retry).
    assert made <= _allowed_invalidations(cell), f"{made} CloudFront invalidations: {label}"
    # Every change has exactly one audit record with its true outcome.
    executed: dict[str, int] = {}
    for r in cell.audit:
        if r["outcome"] == "executed":
            executed[r["target"]] = executed.get(r["target"], 0) + 1
    for target, n in executed.items():
        if target != "cdn/site":
            assert n == 1, f"{n} executed records of {target}: {label}"
    redis_done = {_kind(t) for t in executed if t.startswith("redis/")}
    assert redis_done == {_kind(t) for t in clean_targets(clean) if t.startswith("redis/")}, \
        f"executed Redis targets {sorted(redis_done)}: {label}"
    assert executed.get("cdn/site/queue") == 1, f"queueing audited {executed.get('cdn/site/queue')} times: {label}"
    refs = [r["action"]["params"]["caller_reference"] for r in cell.audit
            if r["target"] == "cdn/site" and r["outcome"] == "executed"]
    made_refs = [inv["reference"] for inv in cell.facts["invalidations"]]
    assert sorted(refs) == sorted(made_refs), f"invalidations {made_refs}, executed records {refs}: {label}"
    # Locks and leases end released or expiring.
    _check_locks(cell, label)
    for pk, lease in cell.facts["runs"].items():
        assert lease is not None and lease <= cell.now + 600, f"run {pk} left with lease {lease}: {label}"


def _kind(target: str) -> str:
    """A key list's target names the hash of its keys (under each cell's own key prefix): compare its kind."""
    return target.rsplit("/", 1)[0] if "/keys/" in target else target


def clean_targets(clean) -> set[str]:
    return {r["target"] for r in clean.audit if r["outcome"] == "executed" and r.get("target")}


def _allowed_invalidations(cell) -> int:
    """Queueing paths is at least once: SendMessageBatch to a standard queue cannot be told apart from its repeat, so a
    retry that finds the queueing intent `planned` (the invocation died or failed after SendMessageBatch was applied
    and before the intent said `applied`) sends the paths again, and the batcher makes a second invalidation when
    the first message was consumed in between. Any other fault: exactly one."""
    calls = cell.clean_calls
    sends = [i + 1 for i, op in enumerate(calls) if op == "sqs.SendMessageBatch"]
    if not sends or cell.kind == "lost-response":  # a lost answer: botocore's own retry, in the same batch
        return 1
    first = sends[0]
    applied = next((i + 1 for i, op in enumerate(calls) if i + 1 > first and op == "dynamodb.UpdateItem"), first)
    return 2 if first <= cell.call <= applied else 1


INVALIDATION_CASE = Case(
    name="invalidator: ContentChanged (2 keys, a tag of 3 keys, 2 CloudFront paths via the batcher)",
    setup=_invalidation_setup,
    deliveries=_content_changed,
    observe=_invalidation_state,
    target_key="cdn/site/queue",
    handler=lambda: None,  # type: ignore[arg-type,return-value]
    reaction="invalidator",
    invoke=_invoke_invalidator,
    follow_ups=_batcher_delivery,
    attach=_invalidation_attach,
    facts=_invalidation_facts,
    check=_check_invalidation,
    context=_invalidator_context,
)


# --------------------------------------------------------------------------- the matrix

ACTING = {
    "alarm": ("UpdateService", "PutItem", "UpdateItem"),
    "prewarm": ("UpdateAutoScalingGroup", "SetDesiredCapacity", "PutItem", "UpdateItem"),
    "rollback": ("ModifyListener",),
    "invalidation": ("SendMessageBatch", "CreateInvalidation"),
}


def _cells(case_id: str, calls: list[str]) -> list[tuple[int, str, str]]:
    cells = [(i + 1, op, kind) for i, op in enumerate(calls) for kind in MATRIX_KINDS]
    if FULL:
        return cells
    acting = {i + 1 for i, op in enumerate(calls) if op.split(".")[1] in ACTING[case_id]}
    if case_id in ("rollback", "invalidation"):
        # The calls around each action too (the writes that record it, the reads that decide it).
        acting |= {i + d for i in acting for d in (-1, 1)}
    return [c for c in cells if c[0] in acting or c[0] % 7 == 0]


def _check_locks(cell, label: str) -> None:
    for key, lock in cell.locks.items():
        assert lock["lease_until"] <= lock["now"] + 130, f"lock of {key} held until {lock['lease_until']}: {label}"


def _check(case: Case, cell, clean) -> None:
    expected_final = clean.final
    label = cell.label(case)
    # At most one change per transition, and the change that should happen has happened.
    assert cell.final == expected_final, label
    # Every state on the way is the initial one, the final one, or (a two-write action interrupted between its
    # writes) a mix of the two: never a third value.
    first = cell.states[0]
    for state in cell.states:
        if isinstance(state, tuple):
            assert all(v in (a, b) for v, a, b in zip(state, first, expected_final, strict=True)), label
        else:
            assert state in (first, expected_final), label
    # Exactly one audit record of the change.
    assert cell.executed == 1, label
    # The lock ends released or expiring within a lease.
    _check_locks(cell, label)


CASES = {"alarm": ALARM_CASE, "prewarm": PREWARM_CASE, "rollback": ROLLBACK_CASE, "invalidation": INVALIDATION_CASE}


@pytest.fixture
def cleanup() -> Any:
    yield
    from invalidator.invalidation_runtime import install_invalidation_runtime
    from reflex_core.runtime import install_runtime

    install_runtime(None)
    install_invalidation_runtime(None)
    while _SPACES:
        _SPACES.pop().cleanup()


@pytest.mark.parametrize("case_id", list(CASES))
def test_fault_matrix(case_id: str, cleanup):
    case = CASES[case_id]
    if case_id == "invalidation":
        from tests.support.invalidation import PORT, shared_redis_up

        if not shared_redis_up():
            pytest.skip(f"no Redis on 127.0.0.1:{PORT} (make services)")
    clock = _clock if case_id in ("alarm", "prewarm") else _promotion_clock
    calls = clean_calls(case, WORLDS[case_id], clock)
    clean = run_cell(case, WORLDS[case_id], clock, 10_000, "none", "throttle")  # a call never reached: clean run
    clean.clean_calls = calls
    assert clean.errors == [], clean
    check = case.check or _check
    if case.check is None:
        assert clean.executed == 1, clean
    else:
        check(case, clean, clean)
    failures = []
    for call, op, kind in _cells(case_id, calls):
        cell = run_cell(case, WORLDS[case_id], clock, call, op, kind)
        cell.clean_calls = calls
        try:
            check(case, cell, clean)
        except AssertionError as err:
            failures.append(str(err))
        except Exception as err:  # noqa: BLE001 - a check that cannot read a cell fails that cell, not the matrix
            failures.append(f"{cell.label(case)}: the check raised {type(err).__name__}: {err}")
    assert not failures, f"{len(failures)} failing cells of {len(_cells(case_id, calls))}:\n" + "\n".join(failures)


def _promotion_clock():
    from reflex_core.clock import VirtualClock

    return VirtualClock(T0)


WORLDS = {"alarm": _world, "prewarm": _world, "rollback": _promotion_world, "invalidation": _invalidation_world}
