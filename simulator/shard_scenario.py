"""The shard rebalancing scenario (`reaction: shards`): real PostgreSQL, the real shards handler, moto, and the
deployed move workflow run by the local Step Functions driver on a virtual clock.

A throw-away PostgreSQL cluster (wal_level=logical) holds one database per shard; the set is seeded; a live
write workload (threads writing through the router, remembering every acknowledged write) runs for the whole
scenario; the steps (an alarm, console commands) go through the handler; every started move's workflow is
driven to its end. The scenario then checks that every acknowledged write is present exactly once, on the
shard the map names, and prints the timeline, the audit and the final row counts.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from contextlib import redirect_stdout
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:reflex-demo-shards"
WORKFLOW_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:reflex-demo-shard-moves"
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
SCHEMA = """
CREATE TABLE orders (tenant text NOT NULL, id bigint NOT NULL, v int NOT NULL, note text,
    created timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tenant, id));
CREATE TABLE order_lines (tenant text NOT NULL, order_id bigint NOT NULL, line int NOT NULL,
    qty numeric(10, 2) NOT NULL, PRIMARY KEY (tenant, order_id, line));
"""


def is_shard_scenario(path: str) -> bool:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("reaction") == "shards"


def _alarm_event(name: str, state: str, value: float, threshold: float, at: datetime) -> dict[str, Any]:
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "CloudWatch Alarm State Change",
            "source": "aws.cloudwatch", "account": "123456789012", "time": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": "us-east-1", "resources": [f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{name}"],
            "detail": {"alarmName": name,
                       "state": {"value": state, "reason": f"Threshold Crossed: {value} > {threshold}",
                                 "reasonData": json.dumps({"version": "1.0", "recentDatapoints": [value],
                                                           "threshold": threshold}), "timestamp": stamp},
                       "previousState": {"value": "OK", "reason": "Threshold Crossed", "timestamp": stamp},
                       "configuration": {"metrics": [{"id": "m1", "returnData": True, "metricStat": {
                           "metric": {"namespace": "AWS/RDS", "name": "CPUUtilization", "dimensions": {}},
                           "period": 60, "stat": "Average"}}]}}}


def run(path: str, out_dir: str = "out", check: bool = False) -> int:
    import psycopg
    from moto import mock_aws

    from reflex_core.clock import VirtualClock
    from reflex_core.config import parse_config
    from reflex_core.runtime import install_runtime
    from shards.buckets import bucket_of
    from shards.router import Router
    from shards.shard_map import ShardMapStore
    from shards.workflow_definition import move_definition
    from simulator.aws_world import create_world
    from simulator.pg_cluster import PostgresCluster, postgres_available
    from simulator.shard_workload import Workload, check_placement
    from simulator.workflow_driver import LocalWorkflows

    scenario = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not postgres_available():
        print("error: the PostgreSQL server binaries (initdb) are not installed; see README.md")
        return 2
    spec = scenario["set"]
    shard_names = [s["name"] for s in spec["shards"]]
    dbs = [n.replace("-", "_") for n in shard_names]
    lines: list[str] = []

    def say(text: str) -> None:
        lines.append(text)
        print(text, flush=True)

    say(f"Scenario {scenario['name']}: {scenario.get('description', '').strip()}")
    with PostgresCluster(dbs) as pgc, mock_aws():
        for db in dbs:
            with psycopg.connect(pgc.dsn(db), autocommit=True) as conn:
                conn.execute(SCHEMA)
        shards = [s | {"connection": {"kind": "dsn", "dsn": pgc.dsn(db)}} for s, db in zip(spec["shards"], dbs,
                                                                                            strict=True)]
        config = parse_config({"stage": "demo", "notify": {"topic_name": "reflex-demo"}, "sharding": {"sets": [
            {k: v for k, v in spec.items() if k != "shards"} | {
                "shards": shards, "cooldown_s": 0,
                "tables": [{"name": "orders", "key_column": "tenant"},
                           {"name": "order_lines", "key_column": "tenant"}]}]}}, path)
        sset = config.sharding.sets[0]  # type: ignore[union-attr]
        clock = VirtualClock(T0)
        world = create_world(config)
        world.settings = world.settings.model_copy(update={"workflow_arn": WORKFLOW_ARN})
        from shards import handler
        from simulator.scenario import SimulatedContext

        handler_log = io.StringIO()  # the handler's EMF and log lines go to <name>.handler.log, not the timeline

        def invoke(event: dict[str, Any]) -> Any:
            world.activate("shards", clock)
            with redirect_stdout(handler_log):
                return handler.lambda_handler(event, SimulatedContext(function_name="reflex-demo-shards"))

        driver = LocalWorkflows(move_definition(FUNCTION_ARN), WORKFLOW_ARN, FUNCTION_ARN, invoke, clock)
        world.overrides["stepfunctions"] = driver
        rt = world.activate("shards", clock)
        store = ShardMapStore(rt.clients.dynamodb, rt.settings.state_table, clock)
        shard_map = store.ensure(sset.name, sset.buckets, sset.key.type, sset.initial_assignment())

        seed = scenario.get("seed", {})
        expected: dict[tuple[str, int], int] = {}
        for t in range(int(seed.get("tenants", 100))):
            tenant = f"tenant-{t}"
            db = dbs[shard_names.index(shard_map.owners[bucket_of(tenant, sset.buckets)])]
            rows = [(tenant, i, i) for i in range(int(seed.get("orders_per_tenant", 10)))]
            with psycopg.connect(pgc.dsn(db), autocommit=True) as conn, conn.cursor() as cur:
                cur.executemany("INSERT INTO orders (tenant, id, v) VALUES (%s, %s, %s)", rows)
                cur.executemany("INSERT INTO order_lines (tenant, order_id, line, qty) VALUES (%s, %s, 1, 2.5)",
                                [(a, b) for a, b, _ in rows])
            expected.update({(a, b): c for a, b, c in rows})
        say(f"Seeded {len(expected)} orders of {seed.get('tenants', 100)} tenants: "
            + ", ".join(f"{n} {shard_map.owners.count(n)} buckets" for n in shard_names))

        router = Router(lambda: store.load(sset.name) or shard_map, ttl_s=0.05, retry_after_s=0.01)
        wl = scenario.get("workload", {})
        writers = [f"tenant-{t}" for t in range(int(wl.get("tenants", 30)))]
        work = Workload(sset, router, writers, expected, threads=int(wl.get("threads", 3)))

        def play() -> None:
            for step in scenario.get("steps", []):
                at = T0 + timedelta(seconds=float(step.get("at_s", 0)))
                if at > clock.now():
                    driver.run_until(at)
                    clock.set(at)
                if "alarm" in step:
                    a = step["alarm"]
                    event = _alarm_event(a["name"], a.get("state", "ALARM"), float(a.get("value", 100)),
                                         float(a.get("threshold", 80)), clock.now())
                    what = f"alarm {a['name']} -> {a.get('state', 'ALARM')}"
                else:
                    event = {"set": sset.name, "reason": "scenario step", "operator": "demo"} | step["console"]
                    what = f"console {step['console']['command']}"
                result = invoke(event)
                for d in result.get("decisions", []):
                    say(f"  {clock.now():%H:%M:%S}  {what:<34} {d['outcome']:<28} {str(d.get('detail', ''))[:110]}")
                if result.get("status") == "rejected":
                    say(f"  {clock.now():%H:%M:%S}  {what:<34} rejected: {'; '.join(result['errors'])}")
                time.sleep(0.2)  # let the writers write between steps
            started = time.monotonic()
            while driver.next_due() is not None and time.monotonic() - started < 300:
                driver.run_due()
                due = driver.next_due()
                if due is not None and due > clock.now():
                    clock.set(due)
                time.sleep(0.01)

        work.run(play)
        install_runtime(None)
        rt = world.activate("shards", clock)
        records = world.audit_records()
        for move in store.moves(sset.name, unfinished_only=False):
            say(f"Move {move.id}: buckets {move.buckets} {move.source} -> {move.target} ({move.mode}), "
                f"{move.phase}; write fence {move.fence_ms} ms")
            for at, phase, note in move.history:
                say(f"  {datetime.fromtimestamp(at, UTC):%H:%M:%S}  {phase:<12} {note}")
        final = store.load(sset.name)
        assert final is not None
        counts = {}
        for name, db in zip(shard_names, dbs, strict=True):
            with psycopg.connect(pgc.dsn(db), autocommit=True) as conn:
                row = conn.execute("SELECT count(*) FROM orders").fetchone()
                counts[name] = int(row[0]) if row else 0
        say(f"Workload: {work.acked} acknowledged writes, {work.waited} waits on a fenced bucket, "
            f"{work.refused} refusals by a shard's fence (stale map), errors: {len(work.errors)}")
        say("Final buckets: " + ", ".join(f"{n} {final.owners.count(n)}" for n in shard_names)
            + f" (map version {final.version})")
        say(f"Final rows: {counts} = {sum(counts.values())}; acknowledged model: {len(expected)}")
        ok = not work.errors
        try:
            check_placement(sset, _mover_view(sset, store), expected)
            say("Check: every acknowledged write present exactly once, on the shard the map names: PASS")
        except AssertionError as err:
            ok = False
            say(f"Check: FAIL: {err}")
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        name = scenario["name"]
        (out / f"{name}.audit.json").write_text(json.dumps(records, indent=2, default=str) + "\n", encoding="utf-8")
        (out / f"{name}.timeline.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (out / f"{name}.handler.log").write_text(handler_log.getvalue(), encoding="utf-8")
        print(f"Wrote {out / f'{name}.audit.json'}, {out / f'{name}.timeline.txt'}")
        install_runtime(None)
    return 0 if ok or not check else 1


class _MapView:
    """What check_placement needs of a mover: the current map."""

    def __init__(self, store: Any, set_name: str) -> None:
        self._store = store
        self._set = set_name

    def map(self) -> Any:
        return self._store.load(self._set)


def _mover_view(sset: Any, store: Any) -> Any:
    return _MapView(store, sset.name)
