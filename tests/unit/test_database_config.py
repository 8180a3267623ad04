"""The `databases` section: valid examples load, and every mistake is refused naming its field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from reflex_core.config import ConfigError, load_config_file, parse_config
from reflex_core.config_base import load_stage_config
from reflex_core.database_config import DatabaseStageConfig

ROOT = Path(__file__).resolve().parents[2]
SECRET = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:reflex/app-AbCdEf"


def base() -> dict[str, Any]:
    return {"stage": "test", "notify": {"topic_name": "reflex-test"}, "databases": {"targets": [{
        "name": "app", "connection": {"kind": "secret", "secret_arn": SECRET},
        "runaway": {"alarms": {"names": ["app-db-cpu-high"]}}}]}}


def refused(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "test.yaml")
    return str(err.value)


def test_dev_example_and_defaults() -> None:
    cfg = load_config_file(ROOT / "config" / "dev.yaml")
    app = cfg.database("app")
    assert app is not None and app.role == "primary" and app.runaway is not None
    assert app.runaway.terminate is False and app.runaway.max_per_invocation == 5
    assert app.advisor.allow_apply is False and app.advisor.lock_timeout_ms == 5000
    replica = cfg.database("app-replica")
    assert replica is not None and replica.connection.kind == "iam" and replica.runaway is None
    minimal = parse_config(base(), "t").database("app")
    assert minimal is not None and minimal.advisor.min_cost_ratio == 0.5 and minimal.runaway is not None
    assert minimal.runaway.dry_run is False and minimal.runaway.max_runtime_s == 300


def test_the_advisor_function_validates_only_its_section(tmp_path: Path) -> None:
    view = load_stage_config(ROOT / "config" / "dev.yaml", DatabaseStageConfig)
    assert [d.name for d in view.database_targets] == ["app", "app-replica"]
    assert not hasattr(view, "scaling")


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["databases"]["targets"][0].update(name="App_DB"), "databases.targets.0.name"),
    (lambda d: d["databases"]["targets"][0]["connection"].update(secret_arn="arn:aws:s3:::nope"),
     "databases.targets.0.connection.secret.secret_arn"),
    (lambda d: d["databases"]["targets"][0].update(connection={"kind": "iam", "host": "db", "dbname": "app",
                                                                "user": "x"}),
     "databases.targets.0.connection.iam.resource_id"),
    (lambda d: d["databases"]["targets"][0].update(role="standby"), "databases.targets.0.role"),
    (lambda d: d["databases"]["targets"][0].update(advisor={"top_n": 0}), "databases.targets.0.advisor.top_n"),
    (lambda d: d["databases"]["targets"][0].update(advisor={"schedule": "0 6 * * *"}),
     "databases.targets.0.advisor.schedule"),
    (lambda d: d["databases"]["targets"][0].update(advisor={"min_cost_ratio": 1.5}),
     "databases.targets.0.advisor.min_cost_ratio"),
    (lambda d: d["databases"]["targets"][0].update(advisor={"lock_timeout_ms": 10}),
     "databases.targets.0.advisor.lock_timeout_ms"),
    (lambda d: d["databases"]["targets"][0]["runaway"].update(max_per_invocation=0),
     "databases.targets.0.runaway.max_per_invocation"),
    (lambda d: d["databases"]["targets"][0]["runaway"].update(alarms={}), "databases.targets.0.runaway.alarms"),
    (lambda d: d["databases"]["targets"][0]["runaway"].update(terminat=True),
     "databases.targets.0.runaway.terminat"),
    (lambda d: d["databases"]["targets"][0].update(role="replica", advisor={"allow_apply": True}),
     "advisor.allow_apply: indexes are built on the primary"),
    (lambda d: d["databases"]["targets"].append(copy.deepcopy(d["databases"]["targets"][0])),
     "database names must be unique; repeated: app"),
    (lambda d: d["databases"].update(proxies=[{"name": "p", "database": "other", "engine_secret_arn": SECRET,
                                               "db_cluster_identifier": "app"}]),
     "proxies.0.database: no database 'other'"),
    (lambda d: d["databases"].update(network={"vpc_id": "vpc-0a1b2c3d", "subnet_ids": ["subnet-1"],
                                              "availability_zones": []}),
     "databases.network.availability_zones"),
    (lambda d: d["databases"]["targets"][0].update(shard="orders"), "databases.targets.0.shard"),
    (lambda d: d["databases"]["targets"][0].update(shard="orders/orders-9"),
     "databases.targets.0.shard: 'orders/orders-9' is not a shard of sharding.sets (known: none)"),
])
def test_mistakes_name_the_field(change: Any, field: str) -> None:
    data = base()
    change(data)
    assert field in refused(data)
