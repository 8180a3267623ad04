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


def _drill_statements(dev: Synthesized, policy_prefix: str) -> list[dict[str, Any]]:
    return [st for k, p in dev.resources("AWS::IAM::Policy").items() if k.startswith(policy_prefix)
            for st in p["Properties"]["PolicyDocument"]["Statement"]]


def test_drills_function_permissions_are_read_and_report_only_but_for_drill_copies(dev: Synthesized) -> None:
    statements = _drill_statements(dev, "RecoveryDrills")
    actions = {a for s in statements for a in as_list(s["Action"])}
    drills_actions = {"backup:DescribeRestoreJob", "backup:PutRestoreValidationResult", "rds:DescribeDBClusters",
                      "rds:DescribeDBInstances", "rds-data:ExecuteStatement", "secretsmanager:GetSecretValue",
                      "dynamodb:Scan", "dynamodb:DescribeTable"}
    assert drills_actions <= actions
    reads = drills_actions | {"backup:DescribeRecoveryPoint", "backup:GetRecoveryPointRestoreMetadata",
                              "backup:ListRecoveryPointsByBackupVault"}
    for statement in statements:
        writes = [a for a in as_list(statement["Action"])
                  if a.startswith(("rds:", "rds-data:", "backup:", "s3:", "elasticache:")) and a not in reads]
        if not writes:
            continue
        resources = render(as_list(statement["Resource"]), dev.json["Resources"])
        if writes == ["backup:StartRestoreJob"]:
            # Restores come from AWS Backup's recovery points only (the copy's name and network are checked first).
            assert all(":recovery-point:" in r or ":awsbackup:" in r for r in resources), resources
            continue
        # Every other change is a deletion of a drill copy: names that start with the drill prefix.
        assert {a.split(":", 1)[1][:6] for a in writes} == {"Delete"}, statement
        assert all("reflex-drill-*" in r for r in resources), resources
    (pass_role,) = [s for s in statements if "iam:PassRole" in as_list(s["Action"])]
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "backup.amazonaws.com"}}
    (role,) = render(as_list(pass_role["Resource"]), dev.json["Resources"])
    assert role.startswith("<RecoveryBackupRole") and role.endswith(".Arn>"), role  # the backup role only


def _drill_machine(dev: Synthesized) -> dict[str, Any]:
    (machine,) = [m for m in dev.resources("AWS::StepFunctions::StateMachine").values()
                  if m["Properties"]["StateMachineName"] == "reflex-dev-drill"]
    return machine


def _drills_function(dev: Synthesized) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, f) for k, f in dev.resources("AWS::Lambda::Function").items()
                if f["Properties"]["Handler"] == "drills.handler.lambda_handler"]
    return found


def test_drill_workflow_is_the_tested_definition_with_catch_timeouts_and_the_approval_token(dev: Synthesized) -> None:
    from drills.drill_workflow import drill_definition

    function_id, function = _drills_function(dev)
    machine = _drill_machine(dev)
    definition = json.loads(render(machine["Properties"]["DefinitionString"], dev.json["Resources"]))
    assert definition == drill_definition(f"<{function_id}.Arn>")
    states = definition["States"]
    approval = states["AwaitApproval"]
    assert approval["Resource"].endswith(".waitForTaskToken")
    assert approval["TimeoutSecondsPath"] == "$.approval_timeout_s"
    assert approval["Parameters"]["Payload"]["reflex_step"]["task_token.$"] == "$$.Task.Token"
    # No approval, no drill: the timeout and a rejection record the drill without starting a restore.
    catches = {tuple(c["ErrorEquals"]): c["Next"] for c in approval["Catch"]}
    assert catches[("States.Timeout",)] == "NotApproved" and states["NotApproved"]["Next"] == "Record"
    assert not any("States.TaskFailed" in r["ErrorEquals"] for r in approval["Retry"])
    # Once a restore may have started, every failure leads to the teardown, and the teardown's to the leftover.
    for name in ("StartRestore", "PollRestore", "Validate"):
        assert states[name]["Catch"] == [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Teardown"}]
        assert states[name]["TimeoutSeconds"] == 900
    assert states["Teardown"]["Catch"][0]["Next"] == "RecordLeftover"
    [failed] = [r for r in states["Teardown"]["Retry"] if r["ErrorEquals"] == ["States.TaskFailed"]]
    assert failed["MaxAttempts"] == 1  # retried once
    assert states["RecordLeftover"]["Catch"][0]["Next"] == "Record"
    assert states["AfterPoll"]["Default"] == "Teardown"
    env = function["Properties"]["Environment"]["Variables"]
    assert render(env["REFLEX_WORKFLOW_ARN"], dev.json["Resources"]).endswith(":stateMachine:reflex-dev-drill")
    assert "RecoveryBackupRole" in str(env["REFLEX_RESTORE_ROLE_ARN"])


def test_drill_callbacks_and_starts_are_scoped_to_the_drill_machine(dev: Synthesized) -> None:
    statements = _drill_statements(dev, "RecoveryDrills")
    for action in ("states:StartExecution", "states:SendTaskSuccess", "states:SendTaskFailure"):
        [statement] = [s for s in statements if action in as_list(s["Action"])]
        (resource,) = render(as_list(statement["Resource"]), dev.json["Resources"])
        assert resource.endswith(":stateMachine:reflex-dev-drill"), resource


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


def test_drill_workflow_failed_executions_alarm(dev: Synthesized) -> None:
    """A drill whose execution fails without recording (RecordFailed: no DrillFailed datapoint) still alarms."""
    alarms = {a["Properties"]["AlarmName"]: a["Properties"] for a in dev.resources("AWS::CloudWatch::Alarm").values()
              if isinstance(a["Properties"].get("AlarmName"), str)}
    failed = alarms["reflex-dev-drill-failed"]
    assert (failed["Namespace"], failed["MetricName"], failed["Statistic"]) == ("AWS/States", "ExecutionsFailed",
                                                                               "Sum")
    assert failed["Threshold"] == 0 and failed["AlarmActions"]
    assert [d["Name"] for d in failed["Dimensions"]] == ["StateMachineArn"]


# ------------------------------------------------------------------ a stage drilling every kind on demand

CACHES_YAML = """
stage: drl
prod_like: false
notify: {topic_name: reflex-drl}
recovery:
  vault_name: reflex-drl-dr
  resources:
    - name: sessions
      kind: elasticache
      identifier: sessions
      objectives: {rto_s: 3600, rpo_s: 86400}
      backup: {cron: "0 2 * * ? *", retention_days: 7}
      drill: {cron: "0 7 ? * WED *", approval: true}
      isolation: {subnet_group: drills-cache, security_group_ids: [sg-0c0c0c0c0c0c0c0c1],
                  production_subnet_group: sessions-prod, production_security_group_ids: [sg-0b0b0b0b0b0b0b0b1]}
    - name: assets
      kind: s3-bucket
      identifier: shop-assets
      objectives: {rto_s: 7200, rpo_s: 86400}
      backup: {cron: "0 1 * * ? *", retention_days: 7}
      checks: [{name: assets-count, kind: object-count, expect: {kind: at-least, value: 1}}]
      drill: {cron: "0 8 ? * THU *"}
      isolation: {name_prefix: dr-assets-}
"""


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    from synth_support import synthesize, write_config

    config_dir = tmp_path_factory.mktemp("drl-config")
    write_config(config_dir, "drl", CACHES_YAML)
    return synthesize("drl", config_dir, tmp_path_factory.mktemp("cdk-drl"))


def test_cache_and_bucket_drills_restore_and_delete_drill_prefixed_copies_only(caches: Synthesized) -> None:
    statements = {s.get("Sid"): s for s in _drill_statements(caches, "RecoveryDrills")}
    resources = {sid: render(as_list(s["Resource"]), caches.json["Resources"]) for sid, s in statements.items()}
    assert all(":replicationgroup:reflex-drill-*" in r or ":cluster:reflex-drill-*" in r
               for r in resources["DeleteDrillCaches"])
    create = resources["RestoreDrillCaches"]
    assert not any(":replicationgroup:" in r and not r.endswith(":reflex-drill-*") for r in create), create
    assert any(r.endswith(":subnetgroup:drills-cache") for r in create)
    # Buckets: the bucket resource's own drill prefix (the cache's is not a bucket's).
    assert resources["DeleteDrillBuckets"] == ["arn:aws:s3:::dr-assets-*"]
    assert resources["DeleteDrillObjects"] == ["arn:aws:s3:::dr-assets-*/*"]
    # No restore testing for a cache: the bucket's plan only; both drilled on demand through the workflow.
    assert len(caches.resources("AWS::Backup::RestoreTestingPlan")) == 1
    assert [m["Properties"]["StateMachineName"] for m in caches.resources("AWS::StepFunctions::StateMachine")
            .values()] == ["reflex-drl-drill"]


def test_cache_drill_variant_passes_nag_and_cfn_lint(caches: Synthesized) -> None:
    from pathlib import Path

    from cfnlint.api import lint_file

    (report,) = caches.validation_report()["pluginReports"]
    assert report["conclusion"] == "success" and report["violations"] == []
    (template,) = Path(caches.outdir).glob("*.template.json")
    assert [f"{m.rule.id} {m.message}" for m in lint_file(template)] == []


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
