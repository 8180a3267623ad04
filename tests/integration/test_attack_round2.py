"""Adversarial tests, round 2 (branch atk2): attacks on the fixes of 2026-12-02.

Each test asserts the CORRECT behaviour and fails on the current code; its docstring names the defect.
Attacks that held are listed in ATTACK_ROUND2.md (no test).
"""

from __future__ import annotations

import contextlib
from typing import Any

from botocore.exceptions import ClientError

from tests.support.resharder_world import GROUP  # fixtures `stub`, `reshard`: tests/conftest.py
from tests.support.resharder_world import console as _console


def console(command: str, **extra: Any) -> dict[str, Any]:
    return _console(command, reason="attack round 2", **extra)


def _throttled(op: str) -> ClientError:
    return ClientError({"Error": {"Code": "Throttling", "Message": "Rate exceeded"}}, op)


# --------------------------------------------------------------------------- resharder: reconcile without marker


def test_resharder_retry_never_audits_someone_elses_resharding_as_executed_when_no_marker_was_written(
        world, reshard, stub, clock) -> None:
    """Defect (fix 5, `ReshardingReaction.reconcile`): the module promises "a resharding Reflex did not send is
    never audited as Reflex's", and `execute` refuses such a state (`Superseded("already-there")`). But
    `reconcile` answers `applied` for any add/remove whenever the group shows the intended count -- the marker
    (`_ours`) is only required for `rebalance`. Scenario: an operator's add_shards (3 -> 4) is planned and its
    intent recorded; the marker write is throttled (nothing is sent), and the re-read after the failure is
    throttled too, so the intent stays open. Meanwhile another operator adds the shard by hand in the console
    (the group is available with 4 shards). The re-sent command completes the open intent: reconcile says
    `applied` and the audit records `executed` (cooldown recorded) for a change Reflex never sent -- no marker,
    no ModifyReplicationGroupShardConfiguration call. Expected: not `executed` (e.g. `skipped:target-changed`
    or `skipped:already-there`)."""
    rt = world.activate("resharder", clock)
    real_put = rt.store.put_doc
    real_describe = stub.describe_replication_groups
    st = {"put_failed": False, "describes_after": 0}

    def put_doc(pk: str, doc: dict[str, Any], expires_at: float) -> None:
        if pk.startswith("resharder#sent#") and not st["put_failed"]:
            st["put_failed"] = True
            raise _throttled("PutItem")
        real_put(pk, doc, expires_at)

    def describe(**params: Any) -> Any:
        if st["put_failed"] and st["describes_after"] == 0:  # the re-read right after the failed attempt
            st["describes_after"] += 1
            raise _throttled("DescribeReplicationGroups")
        return real_describe(**params)

    rt.store.put_doc = put_doc  # type: ignore[method-assign]
    stub.describe_replication_groups = describe  # type: ignore[method-assign]
    first = reshard(console("add_shards", request_id="grow-1"))
    assert first["decisions"][0]["outcome"].startswith("failed:"), first
    assert stub.modifications == []
    assert rt.store.get_doc(f"resharder#sent#elasticache-rg/{GROUP}") is None
    # Someone else adds the shard (console / CLI): the group is available with 4 shards.
    stub.add_group(GROUP, 4)
    clock.advance(120)
    again = reshard(console("add_shards", request_id="grow-1"))  # the operator re-sends the command
    assert stub.modifications == []
    outcomes = [d["outcome"] for d in again["decisions"]]
    assert "executed" not in outcomes, again["decisions"]


# --------------------------------------------------------------------------- mover: resumable rollback after a switch

import pytest  # noqa: E402
from moto import mock_aws  # noqa: E402

from simulator.pg_cluster import PostgresCluster, postgres_available  # noqa: E402
from tests.support.shards import (  # noqa: E402
    check_placement,
    make_mover,
    reset_databases,
    seed,
    shard_set,
    state_table,
)

DBS = ["r2_a", "r2_b", "atk_a", "atk_b"]  # atk_*: the shard reaction world of test_attack_shards
pg_only = pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")


@pytest.fixture(scope="module")
def pgc() -> Any:
    if not postgres_available():
        pytest.skip("PostgreSQL server binaries not installed")
    with PostgresCluster(DBS) as cluster:
        yield cluster


@pytest.fixture
def env(pgc: PostgresCluster) -> Any:
    reset_databases(pgc, DBS[:2])
    with mock_aws():
        yield {"pgc": pgc, "ddb": state_table()}


def _buckets(mover: Any, sset: Any, shard: str, count: int) -> list[int]:
    from shards.buckets import bucket_of

    owners = mover.map().owners
    found = sorted({bucket_of(f"tenant-{t}", sset.buckets) for t in range(60)
                    if owners[bucket_of(f"tenant-{t}", sset.buckets)] == shard})
    return found[:count]


@pg_only
@pytest.mark.postgres
def test_an_online_rollback_after_the_switch_interrupted_before_its_map_write_resumes(
        env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect (fix 1, "rollback resumable after a crash via `#source-current`"): in `_rollback` after a switch
    (online) the source is brought current, marked `#source-current`, the reverse stream torn down -- then the
    source's `reflex.copy_progress` rows are deleted with `move_id LIKE '<id>%'`, which deletes the
    `#source-current` mark too, BEFORE the map is put back. If the map write fails there (a DynamoDB throttle,
    a Lambda timeout), the retry finds the map still switched and no `#source-current` mark, so it waits for a
    marker to travel through the reverse stream -- which is gone. Every retry fails with "reverse replication
    did not catch up; retry the rollback": the move is stuck in `rolling_back` forever, both fences closed.
    Expected: the retry resumes and the move ends `rolled_back`, every row on the source, the map naming it."""
    import shards.mover as mover_module

    monkeypatch.setattr(mover_module, "MARKER_WAIT_S", 8.0)  # the real 30 s only makes the stuck retry slower
    sset = shard_set(env["pgc"], DBS[:2], transfer="online", grace_period_s=3600)
    mover = make_mover(sset, env["ddb"])
    expected = seed(env["pgc"], sset, mover, tenants=30, orders_per_tenant=10)
    buckets = _buckets(mover, sset, "r2-a", 2)
    mover.start(buckets, "r2-a", "r2-b", move_id="m-back")
    assert mover.run("m-back", wait=False).phase == "switched"
    mover.request_abort("m-back", "operator abort")

    real_update = mover._update_map
    failed: list[str] = []

    def update_map(change: str, edit: Any) -> Any:
        if "rolled back" in change and not failed:
            failed.append(change)
            raise RuntimeError("injected: the map write of the rollback failed (throttled / timed out)")
        return real_update(change, edit)

    mover._update_map = update_map  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="injected"):
        mover.run("m-back", wait=False)
    assert failed
    outcome: Any = None
    try:  # Step Functions retries the step
        outcome = mover.run("m-back", wait=False).phase
    except RuntimeError as err:
        outcome = repr(err)
    assert outcome == "rolled_back", (outcome, mover.load("m-back").phase)
    assert all(mover.map().owners[b] == "r2-a" for b in buckets)
    check_placement(sset, mover, expected)


@pg_only
@pytest.mark.postgres
def test_a_rollback_after_the_switch_tells_the_caches_the_buckets_went_back(env: dict[str, Any]) -> None:
    """Defect (fix 2, ShardMoved at least once): ShardMoved is published once the map names the target
    (`_announce_switch`), so consumers (the invalidator dropping `shard:<set>:<b>` tags, routers' caches,
    applications keeping per-bucket state) learn the buckets went to the target. When the move then rolls back
    during the grace period (abort, or a rollback after the switch), the map names the source again, but
    nothing is announced: the last ShardMoved any consumer saw for those buckets names a shard that no longer
    owns them, and entries cached from the target during the grace period are never dropped. Expected: the
    rollback of a switched (and announced) move announces the move back (an `on_switched`-like notification
    whose target is the shard the map names now)."""
    sset = shard_set(env["pgc"], DBS[:2], transfer="block_writes", grace_period_s=3600)
    announced: list[tuple[str, str, list[int]]] = []

    def on_switched(move: Any) -> None:
        announced.append((move.source, move.target, list(move.buckets)))

    mover = make_mover(sset, env["ddb"], on_switched=on_switched)
    expected = seed(env["pgc"], sset, mover, tenants=30, orders_per_tenant=5)
    buckets = _buckets(mover, sset, "r2-a", 2)
    mover.start(buckets, "r2-a", "r2-b", move_id="m-announce")
    assert mover.run("m-announce", wait=False).phase == "switched"
    assert announced and announced[-1][1] == "r2-b"
    mover.request_abort("m-announce", "operator abort during the grace period")
    assert mover.run("m-announce", wait=False).phase == "rolled_back"
    check_placement(sset, mover, expected)
    owners = mover.map().owners
    assert all(owners[b] == "r2-a" for b in buckets)
    assert announced[-1][1] == "r2-a", f"announcements {announced}; the map names r2-a"


# --------------------------------------------------------------------------- shard map item budget


def test_a_claim_the_map_budget_accepts_can_always_be_switched() -> None:
    """Defect (fix 4, MAP_ITEM_BUDGET): `ShardReaction._map_room` checks a claim against the budget with the
    map's CURRENT owners and the buckets' `copying` states -- but the switch rewrites `owners` too, and owners
    are run-length encoded: moving scattered buckets (every other bucket of a half, as a planner or an operator
    spreading load does) turns 2 runs into tens of thousands. Here (65,536 buckets, 16,384 even buckets of
    shard a moved to b) the claim is accepted (about 100 KB), but the map as the switch leaves it is over
    350 KB: `ShardMapStore.save` raises MapTooLarge in `_from_verified`, AFTER the source was fenced and the
    target opened -- every retry fails the same way, and the moving buckets refuse writes until an operator
    aborts. Expected: a claim is accepted only if the map still fits once the move is switched (refused at
    plan time naming `buckets`)."""
    from shards.shard_map import BucketState, MapTooLarge, ShardMap, ShardMapStore
    from shards.shard_reaction import ShardReaction
    from tests.support.shards import TABLE

    n = 65536
    owners = ["r2-a"] * (n // 2) + ["r2-b"] * (n // 2)
    moving = list(range(0, n // 2, 2))
    moves = [{"id": "mv0123456789-0", "buckets": moving, "source": "r2-a", "target": "r2-b"}]
    with mock_aws():
        store = ShardMapStore(state_table(), TABLE)
        current = store.save(ShardMap(set_name="orders", buckets=n, key_type="text", owners=owners), "created")
        problem = ShardReaction._map_room(current, moves)
        if problem:
            return  # refused at plan time: the correct answer
        claimed = ShardMap(set_name="orders", buckets=n, key_type="text", owners=list(owners),
                           version=current.version,
                           states={b: BucketState("copying", moves[0]["id"], "r2-a", "r2-b") for b in moving})
        claimed = store.save(claimed, "claim")
        for b in moving:  # what Mover._from_verified's `switch` edit does
            claimed.owners[b] = "r2-b"
            claimed.states[b] = BucketState("switched", moves[0]["id"], "r2-a", "r2-b")
        try:
            store.save(claimed, "switch")
        except MapTooLarge as err:
            pytest.fail(f"the claim was accepted ({current.item_bytes():,} bytes before it) but its switch "
                        f"cannot be saved: {err}")


# --------------------------------------------------------------------------- pipeline: dry runs under hard-stop


def test_a_dry_run_under_hard_stop_takes_no_lock_on_the_target(world, reshard, stub, clock) -> None:
    """Defect (fix 7, dry runs planned under the kill switch): `Pipeline._guarded` now lets a dry run through
    `hard-stop` ("the planner runs, nothing moves"), but it still goes through the whole guarded section: it
    ACQUIRES THE TARGET'S LOCK (a conditional write to the state table, with a lease) around plan(). Under
    `hard-stop` ("stops everything", docs/architecture.md) an operator's dry run therefore writes to Reflex's
    state and holds the target: a dry run whose invocation dies inside plan() (planner reads of every shard,
    a DescribeReplicationGroups that hangs) leaves the lock held for its lease, and when the switch is
    released the first real action -- or, at `on`, a safety rollback -- is `skipped:locked`. A dry run executes
    nothing and needs no exclusion. Expected: under hard-stop a dry run answers `dry-run` without taking the
    lock (no write to the state table)."""
    world.set_kill_switch_value("resharder", "hard-stop")
    rt = world.activate("resharder", clock)
    rt.kill_switch.invalidate()
    taken: list[str] = []
    real_acquire = rt.store.acquire_lock

    def acquire_lock(key: str, *args: Any, **kwargs: Any) -> bool:
        taken.append(key)
        return real_acquire(key, *args, **kwargs)

    rt.store.acquire_lock = acquire_lock  # type: ignore[method-assign]
    response = reshard(console("add_shards", dry_run=True))
    [decision] = response["decisions"]
    assert decision["outcome"] == "dry-run", decision
    assert stub.modifications == []
    assert taken == [], f"a dry run under hard-stop took the lock of {taken}"


# --------------------------------------------------------------------------- invalidator: orphaned follow-up


def _inv_progress(env: Any, target: str) -> dict[str, Any] | None:
    import json

    item = env.world.clients.dynamodb.get_item(TableName=env.world.settings.state_table,
                                               Key={"pk": {"S": f"invalidation#redis/catalog/pattern/{target}"}})
    return json.loads(item["Item"]["doc"]["S"]) if "Item" in item else None


@pytest.mark.redis
def test_an_orphaned_follow_up_is_carried_out_by_the_retry_of_the_event_that_ended_the_run(clock) -> None:
    """Defect (fix 6, follow-up adoption): `_end` marks a follow-up whose message could not be queued
    `orphaned` "so that the next trigger of this target (this invocation's retry included) carries it out".
    That holds for continuation messages (SQS redelivers them under a new idempotency key, so they plan anew
    and `_plan_run` adopts). But a run that completes in its FIRST invocation (an EventBridge ContentChanged,
    retried by Lambda with the same event id) is retried through the open intent: `_complete` re-executes the
    intent's old action (`idempotent_execute`), never plans, so nothing adopts. The old action's `new_run`
    finds the orphan (live lease), coalesces into it (`mark_pending`) and is audited as done -- the orphan is
    never carried out: the requests that arrived during the first run are not invalidated until some other
    request of the same target happens to come (and, before its lease ends, none restarts it). Expected:
    after the retry, the follow-up has run (no orphaned progress left, the keys written meanwhile deleted)."""
    import json

    import redis as redis_lib
    from botocore.exceptions import ClientError as BotoClientError

    from invalidator.invalidation_progress import ProgressStore
    from tests.conftest import T0
    from tests.support.invalidation import (
        PORT,
        KeySpace,
        cache_entry,
        content_changed,
        invalidation_env,
        make_config,
        shared_redis_up,
    )

    if not shared_redis_up():
        pytest.skip(f"no Redis on 127.0.0.1:{PORT}")
    space = KeySpace(redis_lib.Redis(host="127.0.0.1", port=PORT))
    try:
        space.fill([f"item:{i}" for i in range(50)])
        pattern = space.key("item:*")
        config = make_config(caches=[cache_entry(namespace=space.namespace, continuation={
            "time_budget_s": 30, "retry_delay_s": 0, "max_retries": 2}, scan={"count": 200})])
        real_finish = ProgressStore.finish
        arrived: list[str] = []

        def finish(self: Any, target_key: str, run_id: str) -> Any:
            if not arrived:  # a second request of the same pattern arrived while the run was scanning
                arrived.append(run_id)
                assert self.mark_pending(target_key, run_id, "content-service (second request)", T0.timestamp())
                space.fill(["item:written-during-the-run"])  # what that second request is about
            return real_finish(self, target_key, run_id)

        with invalidation_env(config, clock) as env:
            sqs = env.world.clients.sqs
            real_send = sqs.send_message
            failed: list[str] = []

            def send_message(**kwargs: Any) -> Any:
                if json.loads(kwargs["MessageBody"]).get("reason") == "follow-up" and not failed:
                    failed.append(kwargs["MessageBody"])
                    raise BotoClientError({"Error": {"Code": "ServiceUnavailable", "Message": "simulated"}},
                                          "SendMessage")
                return real_send(**kwargs)

            ProgressStore.finish = finish  # type: ignore[method-assign]
            sqs.send_message = send_message  # type: ignore[method-assign]
            event = content_changed({"patterns": [pattern]}, T0)
            try:
                with contextlib.suppress(Exception):
                    env.invoke("invalidator", event)
                assert failed and arrived, (failed, arrived)
                assert (_inv_progress(env, pattern) or {}).get("orphaned") is True
                clock.advance(60)
                try:
                    retried: Any = env.invoke("invalidator", event)  # Lambda's retry of the same event
                except Exception as err:  # noqa: BLE001
                    retried = repr(err)
                env.run_continuations()
            finally:
                ProgressStore.finish = real_finish  # type: ignore[method-assign]
                sqs.send_message = real_send  # type: ignore[method-assign]
            left = _inv_progress(env, pattern)
            assert left is None or not left.get("orphaned"), (
                f"the follow-up is still orphaned: {left}; retry: {retried}")
            assert space.count("item:*") == 0, "the key written during the first run was never invalidated"
    finally:
        space.cleanup()


# --------------------------------------------------------------------------- shard console: move ids


@pg_only
@pytest.mark.postgres
def test_a_move_command_naming_a_finished_move_is_refused_not_audited_executed(pgc: PostgresCluster) -> None:
    """Defect (fix 3, move ids): `_id_taken` refuses an id recorded for OTHER buckets, but an id recorded for
    the SAME buckets is taken for "a retry" whatever the record's phase. An operator whose move rolled back
    (aborted, verification mismatch, catch-up timeout) re-sends the same `move` (same `move_id`, or the same
    request_id once the idempotency record expired): plan() accepts it, execute() calls `Mover.start`, which
    returns the existing `rolled_back` record, the workflow start is ignored as ExecutionAlreadyExists -- and
    the command is audited `executed` although nothing was claimed and nothing will move. Expected: a move
    id whose record is finished is refused naming `move_id` (or a new move really runs); never `executed`
    with the buckets left where they were and no move under way."""
    from tests.integration.test_attack_shards import _console as shard_console
    from tests.integration.test_attack_shards import _make_world, _mover_of

    with _make_world(pgc, transfer="block_writes") as w:
        first = shard_console(w, command="move", buckets=[0, 1], target="atk-b", move_id="m-again",
                              request_id="again-1")
        assert first["decisions"][0]["outcome"] == "executed", first["decisions"]
        mover = _mover_of(w)
        mover.request_abort("m-again", "operator abort")
        assert mover.run("m-again", wait=False).phase == "rolled_back"
        second = shard_console(w, command="move", buckets=[0, 1], target="atk-b", move_id="m-again",
                               request_id="again-2")
        [decision] = second["decisions"]
        record = mover.load("m-again")
        moving = bool(mover.map().states)
        assert decision["outcome"] != "executed" or (moving and not record.finished), (
            decision["outcome"], decision.get("after"), record.phase)


@pytest.mark.parametrize("value", ["no", 0, "false", 1])
def test_shard_console_dry_run_is_strictly_a_boolean(value: Any) -> None:
    """Defect (fix 3, shard console strictness): every field of the shard console was made strict (bucket
    items `StrictInt | StrictStr`, no booleans or floats), but `ShardCommand.dry_run` is still a lax `bool`:
    `"dry_run": "no"`, `0` or `"false"` validate as False -- a REAL move (fence, copy, switch) from a payload
    that is not a boolean -- and `1` as True. The scaler, promoter and resharder refuse exactly these values
    (tests/unit/test_strict_payloads.py; the resharder's `"dry_run": "no" is not false`), and the identity
    layer already reads the field strictly (`required_role`: `payload.get("dry_run") is True`), so for `1` the
    reaction and the access check disagree on what the command is. Expected: rejected naming `dry_run`."""
    from reflex_core.sharding_config import ShardSet
    from reflex_core.triggers import TriggerError
    from shards.shard_commands import validate_command

    sset = ShardSet.model_validate({
        "name": "orders", "buckets": 64, "tables": [{"name": "orders", "key_column": "tenant"}],
        "shards": [{"name": "a", "connection": {"kind": "dsn", "dsn": "postgresql://x/a"}},
                   {"name": "b", "connection": {"kind": "dsn", "dsn": "postgresql://x/b"}}]})

    class Config:
        class sharding:
            sets = [sset]

    payload = {"command": "move", "set": "orders", "buckets": [3], "target": "b", "reason": "attack round 2",
               "operator": "mallory", "dry_run": value}
    with pytest.raises(TriggerError) as err:
        validate_command(payload, Config)  # type: ignore[arg-type]
    assert any(e.startswith("dry_run") for e in err.value.errors), err.value.errors
