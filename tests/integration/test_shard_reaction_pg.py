"""The shard reaction end to end: console commands through the real handler and pipeline, the deployed move
workflow run by the local Step Functions driver, real PostgreSQL shards, moto for AWS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from moto import mock_aws

from reflex_core.clock import VirtualClock
from reflex_core.config import parse_config
from reflex_core.runtime import install_runtime
from shards.buckets import bucket_of
from simulator.pg_cluster import PostgresCluster, postgres_available
from tests.conftest import ROOT, T0, FakeLambdaContext
from tests.support.shards import SCHEMA, check_placement, reset_databases

pytestmark = [pytest.mark.postgres,
              pytest.mark.skipif(not postgres_available(), reason="PostgreSQL server binaries not installed")]
DBS = ["r_shard_a", "r_shard_b", "r_shard_c"]
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:reflex-dev-shards"
WORKFLOW_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:reflex-dev-shard-moves"


@pytest.fixture(scope="module")
def pgc() -> Iterator[PostgresCluster]:
    with PostgresCluster(DBS) as cluster:
        yield cluster


def _config(pgc: PostgresCluster, **set_over: Any) -> Any:
    data = yaml.safe_load((ROOT / "config" / "dev.yaml").read_text())
    shards = [{"name": db.replace("_", "-"), "connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for db in DBS]
    shards[2] |= {"max_bytes": 1000, "weight": 0.5}
    data["sharding"] = {"sets": [{"name": "orders", "buckets": 32, "shards": shards,
                                  "placement": [{"shard": "r-shard-a", "buckets": ["0-15"]},
                                                {"shard": "r-shard-b", "buckets": ["16-31"]}],
                                  "tables": [{"name": "orders", "key_column": "tenant"},
                                             {"name": "order_lines", "key_column": "tenant"}],
                                  "grace_period_s": 600, "cooldown_s": 0} | set_over]}
    return parse_config(data, "dev.yaml+shards")


@pytest.fixture
def shards_world(pgc: PostgresCluster) -> Iterator[dict[str, Any]]:
    from shards import handler
    from shards.workflow_definition import move_definition
    from simulator.aws_world import create_world
    from simulator.workflow_driver import LocalWorkflows

    reset_databases(pgc, DBS)
    clock = VirtualClock(T0)
    with mock_aws():
        config = _config(pgc)
        world = create_world(config)
        world.settings = world.settings.model_copy(update={"workflow_arn": WORKFLOW_ARN})
        world.set_kill_switch("shards", False)

        def invoke(event: dict[str, Any]) -> Any:
            world.activate("shards", clock)
            return handler.lambda_handler(event, FakeLambdaContext())

        driver = LocalWorkflows(move_definition(FUNCTION_ARN), WORKFLOW_ARN, FUNCTION_ARN, invoke, clock)
        world.overrides["stepfunctions"] = driver
        world.runtime(clock, "shards")
        yield {"world": world, "invoke": invoke, "driver": driver, "clock": clock, "config": config, "pgc": pgc}
    install_runtime(None)


def _seed(pgc: PostgresCluster, config: Any) -> dict[tuple[str, int], int]:
    import psycopg

    sset = config.sharding.sets[0]
    owners = sset.initial_assignment()
    expected: dict[tuple[str, int], int] = {}
    for t in range(40):
        tenant = f"tenant-{t}"
        db = DBS[[s.name for s in sset.shards].index(owners[bucket_of(tenant, sset.buckets)])]
        with psycopg.connect(pgc.dsn(db), autocommit=True) as conn:
            for i in range(5):
                conn.execute("INSERT INTO orders (tenant, id, v) VALUES (%s, %s, %s)", (tenant, i, i))
                expected[(tenant, i)] = i
    return expected


def _console(env: dict[str, Any], **payload: Any) -> dict[str, Any]:
    body = {"set": "orders", "reason": "test move", "operator": "alice"} | payload
    return env["invoke"](body)


def _mover(env: dict[str, Any]) -> Any:
    from shards.shard_reaction import ShardReaction

    rt = env["world"].activate("shards", env["clock"])
    return ShardReaction().mover(env["config"].sharding.sets[0], rt)


def test_console_move_runs_the_workflow_to_done(shards_world: dict[str, Any]) -> None:
    env = shards_world
    expected = _seed(env["pgc"], env["config"])
    out = _console(env, command="move", buckets=["0-3"], target="r-shard-b")
    decision = out["decisions"][0]
    assert decision["outcome"] == "executed", decision
    move_id = decision["intended"]["moves"][0]["id"]
    driver = env["driver"]
    execution = driver.execution(f"orders-{move_id}")
    driver.run_until_idle()
    assert execution.status == "SUCCEEDED", execution.history if hasattr(execution, "history") else execution
    mover = _mover(env)
    assert all(mover.map().owners[b] == "r-shard-b" for b in range(4))
    assert mover.load(move_id).phase == "done"
    check_placement(env["config"].sharding.sets[0], mover, expected)
    audit = env["world"].audit_records()
    steps = [r for r in audit if r.get("operation") == "advance" and r["outcome"] == "executed"]
    assert steps and any((r.get("after") or {}).get("step", {}).get("fence_ms") is not None for r in steps)
    # status reports the map
    status = _console(env, command="status")["decisions"][0]
    assert status["outcome"] == "skipped:status" and '"r-shard-b": 20' in status["detail"]


@pytest.mark.parametrize(("payload", "field"), [
    ({"command": "move", "set": "nope", "buckets": [1], "target": "r-shard-b"}, "set: no shard set 'nope'"),
    ({"command": "move", "buckets": [1], "target": "zz"}, "target: no shard 'zz'"),
    ({"command": "move", "buckets": ["1-x"], "target": "r-shard-b"}, "buckets"),
    ({"command": "move", "buckets": [99], "target": "r-shard-b"}, "buckets: outside 0-31"),
    ({"command": "move", "target": "r-shard-b"}, "buckets: required"),
    ({"command": "drain"}, "shard: required"),
    ({"command": "teleport"}, "command: unknown command"),
    ({"command": "move", "buckets": [1], "target": "r-shard-b", "extra": 1}, "extra"),
])
def test_malformed_console_payloads_are_rejected_naming_the_field(shards_world: dict[str, Any],
                                                                  payload: dict[str, Any], field: str) -> None:
    out = _console(shards_world, **payload)
    assert out["status"] == "rejected"
    assert any(field in e for e in out["errors"]), out["errors"]
    assert _mover(shards_world).map().states == {}
    assert shards_world["world"].audit_records()[-1]["outcome"] == "rejected:validation"


def test_refusals_are_audited_and_move_nothing(shards_world: dict[str, Any]) -> None:
    env = shards_world
    _seed(env["pgc"], env["config"])
    # target at capacity (r-shard-c: max_bytes 1000)
    out = _console(env, command="move", buckets=[0, 1, 2, 3, 4, 5, 6, 7], target="r-shard-c")
    assert out["decisions"][0]["outcome"] == "skipped:target-at-capacity"
    assert "target: r-shard-c" in out["decisions"][0]["detail"]
    # the database advisor builds an index on r-shard-b's database (databases.targets[].shard: orders/r-shard-b)
    rt = env["world"].runtime(env["clock"], "shards")
    assert rt.store.acquire_lock("db:orders/r-shard-b", "advisor-build", env["clock"].now(), 600)
    building = _console(env, command="move", buckets=[8], target="r-shard-b")["decisions"][0]
    assert building["outcome"] == "skipped:move-refused" and "index build" in building["detail"], building
    rt.store.release_lock("db:orders/r-shard-b", "advisor-build")
    # a plan over a set that is already moving
    started = _console(env, command="move", buckets=[8], target="r-shard-b")["decisions"][0]
    assert started["outcome"] == "executed"
    for command in ("rebalance", "drain", "add_shard"):
        extra = {"shard": "r-shard-c"} if command != "rebalance" else {}
        out = _console(env, command=command, **extra)
        assert out["decisions"][0]["outcome"] == "skipped:set-moving", out
    # the buckets already moving
    again = _console(env, command="move", buckets=[8], target="r-shard-c")["decisions"][0]
    assert again["outcome"] == "skipped:move-refused" and "already moving" in again["detail"]
    mover = _mover(env)
    assert set(mover.map().states) == {8}
    outcomes = [r["outcome"] for r in env["world"].audit_records()]
    assert outcomes.count("skipped:set-moving") == 3


def test_kill_switch_and_dry_run_move_nothing(shards_world: dict[str, Any]) -> None:
    env = shards_world
    _seed(env["pgc"], env["config"])
    dry = _console(env, command="move", buckets=[0], target="r-shard-b", dry_run=True)["decisions"][0]
    assert dry["outcome"] == "dry-run" and dry["intended"]["moves"][0]["buckets"] == [0]
    env["world"].set_kill_switch("shards", True)
    env["clock"].advance(60)  # past the kill switch's cache
    killed = _console(env, command="move", buckets=[0], target="r-shard-b", request_id="k1")["decisions"][0]
    assert killed["outcome"] == "skipped:kill-switch"
    mover = _mover(env)
    assert mover.map().states == {} and mover.store.moves("orders") == []
    assert not env["driver"].executions


def test_drain_of_the_last_accepting_shard_is_refused(pgc: PostgresCluster) -> None:
    from reflex_core.triggers import TriggerError
    from shards.shard_commands import validate_command

    config = _config(pgc, shards=[{"name": "only", "connection": {"kind": "dsn", "dsn": pgc.dsn(DBS[0])}}],
                     placement=[])
    with pytest.raises(TriggerError) as err:
        validate_command({"command": "drain", "set": "orders", "shard": "only", "reason": "why not",
                          "operator": "bob"}, config)
    assert "shard: only is the last shard" in err.value.errors[0]


def test_abort_during_the_grace_period_rolls_back(shards_world: dict[str, Any]) -> None:
    env = shards_world
    expected = _seed(env["pgc"], env["config"])
    move_id = _console(env, command="move", buckets=["0-1"], target="r-shard-b")["decisions"][0]["intended"][
        "moves"][0]["id"]
    driver, clock = env["driver"], env["clock"]
    from datetime import timedelta

    mover = _mover(env)
    # Until the switch, in virtual time but well inside the 600 s grace period. Steps that wait in real time
    # (catch-up, with real deadlines) can take a few more virtual rounds on a loaded machine: no fixed 60 s.
    end = clock.now() + timedelta(seconds=400)
    while mover.load(move_id).phase != "switched" and clock.now() < end:
        driver.run_until(clock.now() + timedelta(seconds=10))
    assert mover.load(move_id).phase == "switched"
    out = _console(env, command="abort", move_id=move_id)["decisions"][0]
    assert out["outcome"] == "executed" and out["after"] == {"moves": {move_id: "abort"}}
    driver.run_until_idle()
    assert driver.execution(f"orders-{move_id}").status == "FAILED"  # RolledBack
    assert mover.load(move_id).phase == "rolled_back"
    assert all(mover.map().owners[b] == "r-shard-a" for b in range(2))
    check_placement(env["config"].sharding.sets[0], mover, expected)
    assert json.dumps(SCHEMA)  # the schema the tests share
