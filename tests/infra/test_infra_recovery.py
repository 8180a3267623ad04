"""Disaster recovery in the dev stack (config/dev.yaml `recovery:`): vault, plan, selections, restore testing,
the drills function's rule, schedule, IAM and alarms."""

from __future__ import annotations

import json
from typing import Any

import pytest
from synth_support import ACCOUNT, REGION, Synthesized, as_list, render

pytestmark = pytest.mark.slow


def _one(dev: Synthesized, type_: str) -> dict[str, Any]:
    (resource,) = dev.resources(type_).values()
    return resource["Properties"]


def test_vault_encrypted_with_a_rotated_key_and_kept(dev: Synthesized) -> None:
    (vault,) = dev.resources("AWS::Backup::BackupVault").values()
    assert vault["Properties"]["BackupVaultName"] == "reflex-dev-dr"
    assert vault["DeletionPolicy"] == "Retain"
    key_id = vault["Properties"]["EncryptionKeyArn"]["Fn::GetAtt"][0]
    assert dev.json["Resources"][key_id]["Properties"]["EnableKeyRotation"] is True
    assert "LockConfiguration" not in vault["Properties"]  # vault_lock is off in dev


def test_plan_rules_follow_each_resource(dev: Synthesized) -> None:
    rules = {r["RuleName"]: r for r in _one(dev, "AWS::Backup::BackupPlan")["BackupPlan"]["BackupPlanRule"]}
    orders, carts = rules["reflex-orders-db"], rules["reflex-carts"]
    assert orders["ScheduleExpression"] == "cron(0 3 * * ? *)" and orders["EnableContinuousBackup"] is True
    assert orders["Lifecycle"] == {"DeleteAfterDays": 14}
    [copy] = orders["CopyActions"]
    assert copy["DestinationBackupVaultArn"] == f"arn:aws:backup:eu-central-1:{ACCOUNT}:backup-vault:reflex-dev-dr-copy"
    assert copy["Lifecycle"] == {"DeleteAfterDays": 7}
    # DynamoDB PITR is a table setting, not an AWS Backup continuous backup.
    assert carts["ScheduleExpression"] == "cron(0 */6 * * ? *)" and carts["EnableContinuousBackup"] is False


def test_selections_name_exactly_the_protected_arns(dev: Synthesized) -> None:
    arns = sorted(render(s["Properties"]["BackupSelection"]["Resources"][0], dev.json["Resources"])
                  for s in dev.resources("AWS::Backup::BackupSelection").values())
    assert arns == [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/shop-carts",
                    f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:orders"]


def test_restore_testing_plans_and_selections_isolate_the_copy(dev: Synthesized) -> None:
    plans = {p["Properties"]["RestoreTestingPlanName"]: p["Properties"]
             for p in dev.resources("AWS::Backup::RestoreTestingPlan").values()}
    assert set(plans) == {"reflex_orders_db", "reflex_carts"}
    orders = plans["reflex_orders_db"]
    assert orders["ScheduleExpression"] == "cron(0 5 ? * MON *)"
    assert orders["RecoveryPointSelection"]["Algorithm"] == "LATEST_WITHIN_WINDOW"
    assert plans["reflex_carts"]["RecoveryPointSelection"]["Algorithm"] == "RANDOM_WITHIN_WINDOW"
    selections = {s["Properties"]["RestoreTestingSelectionName"]: s["Properties"]
                  for s in dev.resources("AWS::Backup::RestoreTestingSelection").values()}
    sel = selections["reflex_orders_db"]
    assert sel["ProtectedResourceType"] == "Aurora" and sel["ValidationWindowHours"] == 2
    overrides = sel["RestoreMetadataOverrides"]
    assert overrides["dbsubnetgroupname"] == "drills-isolated"
    assert json.loads(overrides["vpcsecuritygroupids"]) == ["sg-0d0d0d0d0d0d0d0d1"]
    assert "sg-0a1b2c3d4e5f60701" not in json.dumps(overrides)  # never production's group


def test_rule_takes_completed_and_failed_jobs_of_reflex_plans_only(dev: Synthesized) -> None:
    [rule] = [r["Properties"] for r in dev.resources("AWS::Events::Rule").values()
              if r["Properties"].get("EventPattern", {}).get("source") == ["aws.backup"]]
    pattern = rule["EventPattern"]
    assert pattern["detail-type"] == ["Restore Job State Change"]
    assert pattern["detail"]["status"] == ["COMPLETED", "FAILED"]
    assert len(pattern["detail"]["restoreTestingPlanArn"]) == 2
    [target] = rule["Targets"]
    assert "DeadLetterConfig" in target and target["RetryPolicy"]["MaximumRetryAttempts"] == 3


def test_drills_function_permissions_are_read_and_report_only(dev: Synthesized) -> None:
    policies = [p for k, p in dev.resources("AWS::IAM::Policy").items() if k.startswith("RecoveryDrills")]
    assert policies
    actions = {a for p in policies for s in p["Properties"]["PolicyDocument"]["Statement"]
               for a in as_list(s["Action"])}
    drills_actions = {"backup:DescribeRestoreJob", "backup:PutRestoreValidationResult", "rds:DescribeDBClusters",
                      "rds:DescribeDBInstances", "rds-data:ExecuteStatement", "secretsmanager:GetSecretValue",
                      "dynamodb:Scan", "dynamodb:DescribeTable"}
    assert drills_actions <= actions
    writes = {a for a in actions if a.startswith(("rds:", "rds-data:", "backup:", "dynamodb:", "s3:"))} - drills_actions
    # Beyond the state tables (the pipeline's own), nothing that could change a database, a backup or a bucket.
    assert {a for a in writes if not a.startswith("dynamodb:")} == set()


def test_alarms_per_drilled_resource(dev: Synthesized) -> None:
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in dev.resources("AWS::CloudWatch::Alarm").values()
              if a["Properties"].get("AlarmName", "").startswith("reflex-dev-drill-")}
    for res in ("orders-db", "carts"):
        for kind in ("objectivemissed", "failed", "notisolated", "overdue", "leftover"):
            assert f"reflex-dev-drill-{res}-{kind}" in alarms
    overdue = alarms["reflex-dev-drill-orders-db-overdue"]
    assert overdue["MetricName"] == "LastSuccessfulDrillAgeHours" and overdue["Threshold"] == 192
    assert overdue["TreatMissingData"] == "breaching"
    dims = {d["Name"]: d["Value"] for d in overdue["Dimensions"]}
    assert dims == {"stage": "dev", "resource": "orders-db", "service": "drills"}


# --------------------------------------------------------------------------- regional failover (recovery.failover)


def _failover_statements(dev: Synthesized) -> dict[str, dict[str, Any]]:
    policies = [p for k, p in dev.resources("AWS::IAM::Policy").items() if k.startswith("RecoveryFailoverPolicy")]
    assert len(policies) == 1
    return {s["Sid"]: s for s in policies[0]["Properties"]["PolicyDocument"]["Statement"]}


def test_failover_promotes_only_the_configured_global_cluster_and_members(dev: Synthesized) -> None:
    statements = _failover_statements(dev)
    promote = statements["PromoteGlobalCluster"]
    assert sorted(as_list(promote["Action"])) == ["rds:FailoverGlobalCluster", "rds:SwitchoverGlobalCluster"]
    assert sorted(render(as_list(promote["Resource"]), dev.json["Resources"])) == sorted([
        f"arn:aws:rds::{ACCOUNT}:global-cluster:orders-global",
        f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster:orders",
        f"arn:aws:rds:us-west-2:{ACCOUNT}:cluster:orders-replica"])
    assert "Condition" not in promote
    # Nothing else in the failover policy writes to RDS.
    writes = {a for s in statements.values() for a in as_list(s["Action"])
              if a.startswith("rds:") and not a.startswith("rds:Describe")}
    assert writes == {"rds:FailoverGlobalCluster", "rds:SwitchoverGlobalCluster"}


def test_failover_route53_swap_is_limited_to_the_record(dev: Synthesized) -> None:
    statements = _failover_statements(dev)
    (swap,) = [s for sid, s in statements.items() if sid.startswith("SwapFailoverRecords")]
    assert as_list(swap["Action"]) == ["route53:ChangeResourceRecordSets"]
    assert as_list(swap["Resource"]) == ["arn:aws:route53:::hostedzone/Z0DEVEXAMPLE00001"]
    assert swap["Condition"] == {"ForAllValues:StringEquals": {
        "route53:ChangeResourceRecordSetsNormalizedRecordNames": ["orders-db.dev.example.com"],
        "route53:ChangeResourceRecordSetsRecordTypes": ["CNAME"],
        "route53:ChangeResourceRecordSetsActions": ["CREATE", "DELETE"]}}


def test_failover_state_machine_runs_the_tested_definition(dev: Synthesized) -> None:
    from failover.workflow_definition import failover_definition

    machines = {k: m for k, m in dev.resources("AWS::StepFunctions::StateMachine").items()
                if k.startswith("RecoveryFailover")}
    (machine,) = machines.values()
    props = machine["Properties"]
    assert props["StateMachineName"] == "reflex-dev-failover"
    assert props["TracingConfiguration"] == {"Enabled": True}
    definition = json.loads(render(props["DefinitionString"], dev.json["Resources"]))
    expected = failover_definition("<fn>")
    assert set(definition["States"]) == set(expected["States"])
    assert definition["States"]["Approval"]["TimeoutSecondsPath"] == "$.approval_timeout_s"
    (function,) = [f for k, f in dev.resources("AWS::Lambda::Function").items() if k.startswith("RecoveryFailover")]
    env = function["Properties"]["Environment"]["Variables"]
    assert render(env["REFLEX_WORKFLOW_ARN"], dev.json["Resources"]) == (
        f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-failover")


def test_failover_definition_is_closed_and_every_path_ends() -> None:
    from failover.workflow_definition import failover_definition

    states = failover_definition("arn:aws:lambda:eu-west-1:123456789012:function:f")["States"]
    targets = set()
    for state in states.values():
        targets.update(filter(None, [state.get("Next"), state.get("Default")]))
        targets.update(c["Next"] for c in state.get("Choices", []) + state.get("Catch", []))
    assert targets <= set(states) and set(states) - targets == {"Approval"}
    # A timed-out or rejected approval never reaches the act.
    catches = {c["ErrorEquals"][0]: c["Next"] for c in states["Approval"]["Catch"]}
    assert catches["States.Timeout"] == "NotApproved" and catches["Reflex.Rejected"] == "NotApproved"
    assert states["NotApproved"]["Next"] == "CloseNotApproved"
    assert states["CloseNotApproved"]["Next"] == "NotApprovedEnd"
