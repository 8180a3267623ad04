"""The shard reaction in the dev stack (config/dev.yaml, set `orders`): the function in the VPC reaching only
the shard databases, the move workflow, triggers, and IAM scoped to the configured secrets and users."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from synth_support import (
    ACCOUNT,
    REGION,
    Synthesized,
    as_list,
    iam_statements,
    render,
    synthesize,
    unpinned,
    write_config,
)

from shards.workflow_definition import move_definition

pytestmark = pytest.mark.slow


def _function(synth: Synthesized) -> tuple[str, dict[str, Any]]:
    (found,) = [(k, f) for k, f in synth.resources("AWS::Lambda::Function").items()
                if f["Properties"]["Handler"] == "shards.handler.lambda_handler"]
    return found


def _statements_with(synth: Synthesized, action: str) -> list[dict[str, Any]]:
    return [s for s in iam_statements(synth) if action in as_list(s["Action"])]


def test_function_runs_in_the_vpc_with_its_own_group(dev: Synthesized) -> None:
    _, function = _function(dev)
    props = function["Properties"]
    assert props["Timeout"] == 300 and props["Architectures"] == ["arm64"]
    vpc = props["VpcConfig"]
    assert sorted(vpc["SubnetIds"]) == ["subnet-0a1b2c3d4e5f60711", "subnet-0a1b2c3d4e5f60722"]
    (group_ref,) = vpc["SecurityGroupIds"]
    group = dev.json["Resources"][group_ref["Fn::GetAtt"][0]]
    egress = group["Properties"]["SecurityGroupEgress"]
    postgres = sorted((e["DestinationSecurityGroupId"], e["FromPort"]) for e in egress if e["FromPort"] == 5432)
    assert postgres == [("sg-0a1b2c3d4e5f60781", 5432), ("sg-0a1b2c3d4e5f60782", 5432)]
    assert {e["FromPort"] for e in egress} == {443, 5432}
    assert "SecurityGroupIngress" not in group["Properties"]
    ingress = sorted(i["Properties"]["GroupId"] for i in dev.resources("AWS::EC2::SecurityGroupIngress").values()
                     if i["Properties"].get("Description") == "Reflex shard mover")
    assert ingress == ["sg-0a1b2c3d4e5f60781", "sg-0a1b2c3d4e5f60782"]


def test_secrets_and_workflow_permissions_are_scoped(dev: Synthesized) -> None:
    (secrets,) = [s for s in _statements_with(dev, "secretsmanager:GetSecretValue")
                  if any("orders-1-AbCdEf" in str(r) for r in as_list(s["Resource"]))]
    assert sorted(as_list(secrets["Resource"])) == [
        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:reflex/dev/orders-1-AbCdEf",
        f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:reflex/dev/orders-2-AbCdEf"]
    starts = [render(as_list(s["Resource"]), dev.json["Resources"])
              for s in _statements_with(dev, "states:StartExecution")]
    assert [f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-shard-moves"] in starts
    assert all(r in ([f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-shard-moves"],
                     [f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-promotion"],
                     [f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-drill"],
                     [f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-dev-failover"]) for r in starts), starts


def test_the_deployed_definition_is_the_tested_one(dev: Synthesized) -> None:
    (machine,) = [m for m in dev.resources("AWS::StepFunctions::StateMachine").values()
                  if m["Properties"]["StateMachineName"] == "reflex-dev-shard-moves"]
    definition = json.loads(render(machine["Properties"]["DefinitionString"], dev.json["Resources"]))
    fn = definition["States"]["Advance"]["Parameters"]["FunctionName"]
    assert definition == move_definition(fn)


def test_triggers_rules_and_schedule(dev: Synthesized) -> None:
    patterns = [unpinned(r["Properties"]["EventPattern"]) for r in dev.resources("AWS::Events::Rule").values()]
    assert {"source": ["app.shards"], "detail-type": ["ShardAdded"]} in patterns
    prefixes = [p for p in patterns if p.get("detail", {}).get("alarmName") == [{"prefix": "orders-1-"}]]
    assert prefixes
    schedules = [s for s in dev.resources("AWS::Scheduler::Schedule").values()
                 if "balance_check" in json.dumps(s["Properties"]["Target"].get("Input", ""))]
    assert len(schedules) == 1 and schedules[0]["Properties"]["ScheduleExpression"] == "rate(60 minutes)"


def test_iam_auth_grants_rds_db_connect_on_the_configured_users_only(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[2] / "config" / "prod.yaml").read_text()
    write_config(tmp_path / "config", "prod", text)
    prod = synthesize("prod", tmp_path / "config", tmp_path / "out")
    (connect,) = _statements_with(prod, "rds-db:connect")
    assert sorted(render(as_list(connect["Resource"]), prod.json["Resources"])) == [
        f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:cluster-ABCDEFGHIJKLMNOP{i}/reflex_mover" for i in (1, 2, 3)]
    assert not [s for s in _statements_with(prod, "secretsmanager:GetSecretValue")
                if any("orders-" in str(r) for r in as_list(s["Resource"]))]
    (report,) = prod.validation_report()["pluginReports"]
    assert report["conclusion"] == "success" and report["violations"] == []
