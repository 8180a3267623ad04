"""The `recovery:` section: objectives against the backup schedule, isolation, references; errors name the field."""

from __future__ import annotations

import copy

import pytest

from reflex_core.config import ConfigError, parse_config
from reflex_core.recovery_config import max_backup_gap_s


def base() -> dict:
    return {
        "stage": "test",
        "region": "eu-west-1",
        "notify": {"topic_name": "reflex-test"},
        "recovery": {"resources": [{
            "name": "orders-db",
            "kind": "aurora-cluster",
            "identifier": "orders",
            "objectives": {"rto_s": 3600, "rpo_s": 900},
            "backup": {"cron": "0 3 * * ? *", "retention_days": 14, "pitr": True},
            "secret_arn": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:orders-AbCdEf",
            "checks": [{"name": "rows", "kind": "sql", "query": "SELECT count(*) FROM orders",
                        "expect": {"kind": "within-percent-of-production", "percent": 1}}],
            "drill": {"cron": "0 5 ? * MON *"},
            "isolation": {"subnet_group": "drills", "security_group_ids": ["sg-0d0d0d0d0d0d0d0d1"],
                          "production_subnet_group": "prod", "production_security_group_ids": ["sg-0a0a0a0a0a0a0a0a1"]},
        }]},
    }


def refused(data: dict, *fragments: str) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data, "inline")
    text = str(err.value)
    for fragment in fragments:
        assert fragment in text, text
    return text


def resource(data: dict) -> dict:
    return data["recovery"]["resources"][0]


def test_valid_section_parses_with_keys_and_kinds():
    cfg = parse_config(base(), "inline")
    [res] = cfg.recovery.resources
    assert res.key == "recovery:aurora-cluster:orders" and res.restore_testing


@pytest.mark.parametrize(("cron", "gap"), [
    ("0 3 * * ? *", 86400), ("0 */6 * * ? *", 21600), ("*/5 * * * ? *", 300), ("0 1,13 * * ? *", 43200),
    ("30 0-23/4 * * ? *", 14400), ("0 5 ? * MON *", 7 * 86400), ("0 5 ? * MON-FRI *", 3 * 86400),
    ("0 2 1 * ? *", 31 * 86400),
])
def test_backup_gap_from_cron(cron, gap):
    assert max_backup_gap_s(cron) == gap


def test_rpo_five_minutes_with_daily_backups_and_no_pitr_is_refused():
    data = base()
    resource(data)["objectives"]["rpo_s"] = 300
    resource(data)["backup"]["pitr"] = False
    refused(data, "recovery.resources.0", "objectives.rpo_s: 300s cannot be met", "86400s between backups")


def test_same_rpo_with_pitr_is_accepted_and_below_pitr_floor_is_refused():
    data = base()
    resource(data)["objectives"]["rpo_s"] = 300
    parse_config(data, "inline")
    resource(data)["objectives"]["rpo_s"] = 60
    refused(data, "objectives.rpo_s: 60s is below what point-in-time recovery")


@pytest.mark.parametrize("field", ["rto_s", "rpo_s"])
@pytest.mark.parametrize("value", [0, -5])
def test_objectives_must_be_positive(field, value):
    data = base()
    resource(data)["objectives"][field] = value
    refused(data, f"recovery.resources.0.objectives.{field}", "greater than 0")


def test_elasticache_has_no_pitr():
    data = base()
    res = resource(data)
    res.update(kind="elasticache", identifier="sessions", checks=[], secret_arn=None)
    res["objectives"]["rpo_s"] = 86400
    refused(data, "backup.pitr: ElastiCache has no point-in-time recovery")


def test_drill_network_must_not_be_production():
    data = base()
    resource(data)["isolation"]["security_group_ids"] = ["sg-0a0a0a0a0a0a0a0a1"]
    refused(data, "isolation", "sg-0a0a0a0a0a0a0a0a1 is a production security group")
    data = base()
    resource(data)["isolation"]["subnet_group"] = "prod"
    refused(data, "isolation", "'prod' is production's subnet group")
    data = base()
    del resource(data)["isolation"]["subnet_group"]
    refused(data, "isolation: a drilled database or cache needs its own subnet_group")


def test_check_kind_must_fit_the_resource():
    data = base()
    resource(data)["checks"][0] = {"name": "n", "kind": "item-count",
                                   "expect": {"kind": "at-least", "value": 1}}
    refused(data, "checks.0.kind: a aurora-cluster is checked with sql, not item-count")


def test_sql_check_is_one_read_only_select():
    data = base()
    resource(data)["checks"][0]["query"] = "DELETE FROM orders"
    refused(data, "checks.0", "one read-only SELECT")
    resource(data)["checks"][0]["query"] = "SELECT 1; DROP TABLE orders"
    refused(data, "checks.0", "one read-only SELECT")


def test_unknown_expectation_is_named():
    data = base()
    resource(data)["checks"][0]["expect"] = {"kind": "roughly"}
    refused(data, "recovery.resources.0.checks.0.expect")


def test_unknown_resource_reference_in_failover_is_refused():
    data = base()
    data["recovery"]["failover"] = [{
        "name": "orders-global", "resource": "payments-db", "global_cluster": "orders-global",
        "secondary_cluster_arn": "arn:aws:rds:eu-central-1:123456789012:cluster:orders-secondary"}]
    refused(data, "failover.0.resource: no protected resource 'payments-db'", "configured: orders-db")
    data["recovery"]["failover"][0]["resource"] = "orders-db"
    parse_config(data, "inline")


def test_failover_needs_an_aurora_cluster():
    data = base()
    table = copy.deepcopy(resource(data))
    table.update(name="carts", kind="dynamodb-table", identifier="carts", checks=[], secret_arn=None,
                 isolation={})
    data["recovery"]["resources"].append(table)
    data["recovery"]["failover"] = [{
        "name": "x", "resource": "carts", "global_cluster": "g",
        "secondary_cluster_arn": "arn:aws:rds:eu-central-1:123456789012:cluster:s"}]
    refused(data, "failover.0.resource: 'carts' is a dynamodb-table")


def test_duplicate_names_and_copy_to_own_region():
    data = base()
    data["recovery"]["resources"].append(copy.deepcopy(resource(data)))
    refused(data, "resources: names must be unique; repeated: orders-db")
    data = base()
    resource(data)["backup"]["copy_to"] = {"region": "eu-west-1"}
    refused(data, "recovery.resources.0.backup.copy_to.region: eu-west-1 is the stage's own region")


def test_sql_checks_need_a_secret_and_identifier_not_the_drill_prefix():
    data = base()
    resource(data)["secret_arn"] = None
    refused(data, "secret_arn: sql checks of a drilled database need the secret")
    data = base()
    resource(data)["identifier"] = "reflex-drill-orders"
    refused(data, "identifier: 'reflex-drill-orders' starts with the drill prefix")


def test_bad_cron_field_is_named():
    data = base()
    resource(data)["backup"]["cron"] = "0 25 * * ? *"
    refused(data, "recovery.resources.0.backup.cron", "outside 0-23")


def test_on_demand_drills_need_approval_on_a_production_stage():
    data = base()
    assert not parse_config(data, "inline").recovery.resources[0].drill.needs_approval(False)
    prod = copy.deepcopy(data) | {"stage": "prod", "account": "123456789012"}
    drill = parse_config(prod, "inline").recovery.resources[0].drill
    assert drill.approval is None and drill.needs_approval(True)  # the default follows the stage
    resource(prod)["drill"]["approval"] = False
    refused(prod, "recovery.resources.0.drill.approval", "production stage")
    resource(data)["drill"]["approval_timeout_s"] = 10
    refused(data, "approval_timeout_s")


def _failover(**extra) -> dict:
    return {"name": "orders-global", "resource": "orders-db", "global_cluster": "orders-global",
            "secondary_cluster_arn": "arn:aws:rds:eu-central-1:123456789012:cluster:orders-secondary"} | extra


def test_failover_route53_fields_come_together():
    data = base()
    data["recovery"]["failover"] = [_failover(hosted_zone_id="Z0EXAMPLE", record_name="db.example.com")]
    refused(data, "recovery.failover.0", "hosted_zone_id: the Route 53 step needs hosted_zone_id, record_name and "
                  "secondary_set_identifier together")
    data["recovery"]["failover"][0]["secondary_set_identifier"] = "eu-central-1"
    config = parse_config(data, "inline")
    target = config.recovery.failover[0]
    assert target.dns and target.secondary_region == "eu-central-1" and target.key == "failover:orders-global"


def test_failover_secondary_must_leave_the_stage_region_and_entries_are_unique():
    data = base()
    data["recovery"]["failover"] = [_failover(
        secondary_cluster_arn="arn:aws:rds:eu-west-1:123456789012:cluster:orders-secondary")]
    refused(data, "recovery.failover.0.secondary_cluster_arn: eu-west-1 is the stage's own region")
    data["recovery"]["failover"] = [_failover(), _failover(name="again")]
    refused(data, "each global cluster may be configured once; repeated: orders-global")
    data["recovery"]["failover"] = [_failover(), _failover(global_cluster="other")]
    refused(data, "failover: names must be unique; repeated: orders-global")
