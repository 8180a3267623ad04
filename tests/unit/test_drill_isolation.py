"""Before any restore call: the restore metadata must name a new copy, with the drill prefix, in the drill network."""

from __future__ import annotations

import pytest

from drills.restored_copies import identifier_from_arn, planned_restore_problems
from reflex_core.recovery_config import ProtectedResource


def orders() -> ProtectedResource:
    return ProtectedResource.model_validate({
        "name": "orders-db", "kind": "aurora-cluster", "identifier": "orders",
        "objectives": {"rto_s": 3600, "rpo_s": 86400},
        "backup": {"cron": "0 3 * * ? *", "retention_days": 7},
        "isolation": {"subnet_group": "drills", "security_group_ids": ["sg-0d0d0d0d0d0d0d0d1"],
                      "production_subnet_group": "prod", "production_security_group_ids": ["sg-0a0a0a0a0a0a0a0a1"]},
    })


GOOD = {"DBClusterIdentifier": "reflex-drill-orders-1", "DBSubnetGroupName": "drills",
        "VpcSecurityGroupIds": '["sg-0d0d0d0d0d0d0d0d1"]'}


def test_a_copy_in_the_drill_network_is_allowed():
    assert planned_restore_problems(orders(), GOOD) == []


@pytest.mark.parametrize(("change", "problem"), [
    ({"DBClusterIdentifier": "orders"}, "'orders' is the production resource"),
    ({"DBClusterIdentifier": "orders-copy"}, "does not start with the drill prefix"),
    ({"DBClusterIdentifier": ""}, "the restore names no new copy"),
    ({"VpcSecurityGroupIds": '["sg-0a0a0a0a0a0a0a0a1"]'}, "sg-0a0a0a0a0a0a0a0a1 are production's"),
    ({"VpcSecurityGroupIds": ""}, "needs the drill's security groups"),
    ({"VpcSecurityGroupIds": '["sg-0e0e0e0e0e0e0e0e1"]'}, "are not the drill's"),
    ({"DBSubnetGroupName": "prod"}, "is not the drill subnet group"),
])
def test_anything_next_to_production_is_refused(change, problem):
    problems = planned_restore_problems(orders(), GOOD | change)
    assert any(problem in p for p in problems), problems


@pytest.mark.parametrize(("arn", "name"), [
    ("arn:aws:rds:eu-west-1:123456789012:cluster:orders", "orders"),
    ("arn:aws:rds:eu-west-1:123456789012:db:orders-1", "orders-1"),
    ("arn:aws:dynamodb:eu-west-1:123456789012:table/shop-carts", "shop-carts"),
    ("arn:aws:s3:::shop-assets", "shop-assets"),
    ("arn:aws:elasticache:eu-west-1:123456789012:replicationgroup:sessions", "sessions"),
])
def test_identifier_from_arn(arn, name):
    assert identifier_from_arn(arn) == name
