"""The monitoring part of the dev stack as CloudFormation: the two dashboards with widgets for every kind of
resource watched, the alarms with the thresholds derived from the SLOs, the composite rules, the actions to the
encrypted topic, the saved Logs Insights queries, the journey canary and its alarms; and the alarm names agree
with the config's, so the names policies may use are the names that exist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from synth_support import ROOT, Synthesized, render

import app as reflex_app
from reflex_core.config import ConfigError, load_config_file

pytestmark = pytest.mark.slow


def _alarms(synth: Synthesized) -> dict[str, dict[str, Any]]:
    """Alarm name -> properties, metric and composite alarms alike."""
    out = {}
    for type_ in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"):
        for resource in synth.resources(type_).values():
            name = resource["Properties"].get("AlarmName")
            if isinstance(name, str):
                out[name] = resource["Properties"]
    return out


def _logical_id(synth: Synthesized, alarm_name: str) -> str:
    for type_ in ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm"):
        for logical_id, resource in synth.resources(type_).items():
            if resource["Properties"].get("AlarmName") == alarm_name:
                return logical_id
    raise AssertionError(f"no alarm {alarm_name}")


def _dashboard(synth: Synthesized, name: str) -> str:
    """The dashboard's JSON body as deployed (references as `<LogicalId>`)."""
    (body,) = [d["Properties"]["DashboardBody"] for d in synth.resources("AWS::CloudWatch::Dashboard").values()
               if d["Properties"]["DashboardName"] == name]
    text = str(render(body, synth.json["Resources"]))
    assert json.loads(text)["widgets"]
    return text


def _topic_id(synth: Synthesized) -> str:
    (topic_id,) = synth.resources("AWS::SNS::Topic")
    return topic_id


def _metrics(props: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Metric id -> MetricStat or Expression of a metric-math alarm."""
    return {m["Id"]: m.get("MetricStat") or {"Expression": m["Expression"]} for m in props["Metrics"]}


def _reaction_functions(synth: Synthesized) -> list[Any]:
    from reflex_constructs.reaction_function import ReactionFunction

    return [c for c in synth.stack.node.find_all() if isinstance(c, ReactionFunction)]


def _rule(synth: Synthesized, props: dict[str, Any]) -> str:
    return str(render(props["AlarmRule"], synth.json["Resources"]))


# ------------------------------------------------------------------ names: config == template


def test_every_alarm_the_config_names_is_created_and_nothing_else(dev: Synthesized) -> None:
    config = load_config_file(ROOT / "config" / "dev.yaml")
    assert config.monitoring is not None
    expected = sorted(config.monitoring.alarm_names("dev"))
    assert dev.stack.monitoring.alarm_names == expected
    types = ("AWS::CloudWatch::Alarm", "AWS::CloudWatch::CompositeAlarm")
    in_template = sorted(r["Properties"]["AlarmName"] for t in types
                         for logical_id, r in dev.resources(t).items() if logical_id.startswith("Monitoring"))
    assert in_template == expected


# ------------------------------------------------------------------ dashboards


def test_one_detail_and_one_summary_dashboard_per_stage(dev: Synthesized) -> None:
    names = sorted(d["Properties"]["DashboardName"] for d in dev.resources("AWS::CloudWatch::Dashboard").values())
    assert names == ["reflex-dev", "reflex-dev-Summary"]


@pytest.mark.parametrize(("what", "needle"), [
    ("load balancer", '"AWS/ApplicationELB","TargetResponseTime","LoadBalancer",'
                      '"app/web/0123456789abcdef"'),
    ("ECS service", '"AWS/ECS","CPUUtilization","ClusterName","web","ServiceName","api"'),
    ("Auto Scaling group", '"AutoScalingGroupName","web-workers"'),
    ("Aurora cluster", '"AWS/RDS","CPUUtilization","DBClusterIdentifier","reporting"'),
    ("shard instance", '"DBInstanceIdentifier","shard-1"'),
    ("ElastiCache", '"AWS/ElastiCache","CPUUtilization","CacheClusterId","catalog-001"'),
    ("CloudFront", '"AWS/CloudFront","Requests","DistributionId","E2EXAMPLE0DEV01"'),
    ("canary", '"CloudWatchSynthetics","Duration","CanaryName"'),
    ("Reflex functions", '"AWS/Lambda","Duration","FunctionName","<ScalerFunction'),
    ("Reflex DLQs", '"AWS/SQS","ApproximateNumberOfMessagesVisible","QueueName","<ScalerFunctionDead'),
    ("decisions by outcome", """SEARCH('{Reflex,stage,reaction,outcome,reason} MetricName=\\"Decisions\\" """
                             """stage=\\"dev\\"', 'Sum', 300)"""),
    ("circuit breakers", '"reason","circuit-open-tripped"'),
])
def test_detail_dashboard_has_widgets_for_every_kind_watched(dev: Synthesized, what: str, needle: str) -> None:
    assert needle in _dashboard(dev, "reflex-dev"), what


def test_summary_dashboard_shows_user_impact_and_the_slo(dev: Synthesized) -> None:
    body = _dashboard(dev, "reflex-dev-Summary")
    assert '"type":"alarm"' in body and "web: user impact" in body
    assert "SLO web" in body
    assert "Reflex decisions" in body
    assert '"AWS/Lambda"' not in body  # per-function detail stays on the detail dashboard


# ------------------------------------------------------------------ SLO alarms and their derived thresholds


def test_latency_alarm_is_the_p99_against_the_slo_threshold_in_ms(dev: Synthesized) -> None:
    alarm = _alarms(dev)["reflex-dev-web-latency"]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (800, "GreaterThanThreshold")
    assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (5, 3)
    assert alarm["TreatMissingData"] == "notBreaching"
    metrics = _metrics(alarm)
    assert metrics["latency"]["Stat"] == "p99" and metrics["latency"]["Period"] == 60
    assert metrics["latency"]["Metric"]["MetricName"] == "TargetResponseTime"
    assert any(m.get("Expression") == "1000 * latency" for m in metrics.values())
    assert "AlarmActions" not in alarm  # a signal, not a page


def test_error_rate_alarm_is_5xx_per_100_requests(dev: Synthesized) -> None:
    alarm = _alarms(dev)["reflex-dev-web-error-rate"]
    assert alarm["Threshold"] == 2
    expressions = [m["Expression"] for m in _metrics(alarm).values() if "Expression" in m]
    assert expressions == ["100 * (FILL(target5xx, 0) + FILL(elb5xx, 0)) / requests"]
    assert "AlarmActions" not in alarm


def test_availability_burn_rate_alarms_over_one_hour_and_five_minutes(dev: Synthesized) -> None:
    alarms = _alarms(dev)
    # 99.5 % over 30 days: budget 0.5 %, burn rate 14.4 -> 7.2 % errors, in both windows.
    for name, period in (("reflex-dev-web-availability-burn-1h", 3600), ("reflex-dev-web-availability-burn-5m", 300)):
        alarm = alarms[name]
        assert alarm["Threshold"] == pytest.approx(7.2)
        assert (alarm["EvaluationPeriods"], alarm["DatapointsToAlarm"]) == (1, 1)
        assert {m["Period"] for m in _metrics(alarm).values() if "Period" in m} == {period}
    availability = alarms["reflex-dev-web-availability"]
    long, short = (_logical_id(dev, f"reflex-dev-web-availability-burn-{w}") for w in ("1h", "5m"))
    assert _rule(dev, availability) == f'(ALARM("<{long}.Arn>") AND ALARM("<{short}.Arn>"))'
    assert not availability.get("AlarmActions")


def test_the_user_impact_composite_pages_on_any_symptom_and_only_it(dev: Synthesized) -> None:
    page = _alarms(dev)["reflex-dev-web-user-impact"]
    rule = _rule(dev, page)
    for symptom in ("reflex-dev-web-latency", "reflex-dev-web-error-rate", "reflex-dev-web-availability",
                    "reflex-dev-home-journey-failed", "reflex-dev-home-journey-slow"):
        assert f'ALARM("<{_logical_id(dev, symptom)}.Arn>")' in rule
    assert rule.count(" OR ") == 4
    for cause in ("reflex-dev-api-cpu-high", "reflex-dev-web-availability-burn-1h"):
        assert _logical_id(dev, cause) not in rule
    assert page["AlarmActions"] == [{"Ref": _topic_id(dev)}]


def test_only_pages_and_reflex_alarms_have_actions_and_they_go_to_the_topic(dev: Synthesized) -> None:
    topic = {"Ref": _topic_id(dev)}
    with_actions = {name for name, props in _alarms(dev).items() if props.get("AlarmActions")}
    for name in with_actions:
        assert _alarms(dev)[name]["AlarmActions"] == [topic], name
    monitoring = set(dev.stack.monitoring.alarm_names)
    assert with_actions & monitoring == {"reflex-dev-web-user-impact", "reflex-dev-reflex-circuit-open"}


# ------------------------------------------------------------------ resource alarms


@pytest.mark.parametrize(("name", "threshold", "metric"), [
    ("reflex-dev-api-cpu-high", 75, ("AWS/ECS", "CPUUtilization")),
    ("reflex-dev-api-memory-high", 85, ("AWS/ECS", "MemoryUtilization")),
    ("reflex-dev-workers-cpu-high", 80, ("AWS/EC2", "CPUUtilization")),
    ("reflex-dev-reporting-db-cpu-high", 70, ("AWS/RDS", "CPUUtilization")),
    ("reflex-dev-reporting-db-connections-high", 400, ("AWS/RDS", "DatabaseConnections")),
    ("reflex-dev-shard-1-cpu-high", 80, ("AWS/RDS", "CPUUtilization")),
    ("reflex-dev-catalog-cpu-high", 80, ("AWS/ElastiCache", "CPUUtilization")),
    ("reflex-dev-catalog-evictions-high", 1000, ("AWS/ElastiCache", "Evictions")),
])
def test_resource_alarms_watch_the_configured_metric(dev: Synthesized, name: str, threshold: float,
                                                    metric: tuple[str, str]) -> None:
    alarm = _alarms(dev)[name]
    assert alarm["Threshold"] == threshold
    stats = [alarm] if "MetricName" in alarm else [m["Metric"] for m in _metrics(alarm).values() if "Metric" in m]
    assert any((s.get("Namespace"), s.get("MetricName")) == metric for s in stats), alarm
    assert "AlarmActions" not in alarm


def test_circuit_breaker_alarm_sums_every_reaction(dev: Synthesized) -> None:
    alarm = _alarms(dev)["reflex-dev-reflex-circuit-open"]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    metrics = [m["Metric"] for m in _metrics(alarm).values() if "Metric" in m]
    reactions = sorted(d["Value"] for m in metrics for d in m["Dimensions"] if d["Name"] == "reaction")
    assert reactions == sorted(f.reaction for f in _reaction_functions(dev))
    assert {"scaler", "promoter", "invalidator"} <= set(reactions)
    for m in metrics:
        assert (m["Namespace"], m["MetricName"]) == ("Reflex", "Decisions")
        assert {"Name": "outcome", "Value": "skipped"} in m["Dimensions"]
        assert {"Name": "reason", "Value": "circuit-open-tripped"} in m["Dimensions"]
        assert {"Name": "stage", "Value": "dev"} in m["Dimensions"]


# ------------------------------------------------------------------ log aggregation


def test_saved_queries_cover_every_function_log_group(dev: Synthesized) -> None:
    queries = {q["Properties"]["Name"]: q["Properties"] for q in dev.resources("AWS::Logs::QueryDefinition").values()}
    assert sorted(queries) == ["reflex-dev/audit-trail", "reflex-dev/decisions-by-outcome", "reflex-dev/errors",
                               "reflex-dev/rejected-events"]
    function_logs = sorted(dev.stack.resolve(f.log_group.log_group_name)["Ref"] for f in _reaction_functions(dev))
    assert len(function_logs) >= 5
    for query in queries.values():
        assert sorted(g["Ref"] for g in query["LogGroupNames"]) == function_logs
    assert 'filter message = "decision"' in queries["reflex-dev/audit-trail"]["QueryString"]
    assert "stats count(*) as decisions by service, audit.outcome" in \
        queries["reflex-dev/decisions-by-outcome"]["QueryString"]
    assert 'filter message = "rejected malformed trigger"' in queries["reflex-dev/rejected-events"]["QueryString"]
    assert 'level = "ERROR"' in queries["reflex-dev/errors"]["QueryString"]


# ------------------------------------------------------------------ synthetic monitoring


def test_journey_canary_checks_status_and_body_on_its_schedule(dev: Synthesized) -> None:
    (canary,) = [c["Properties"] for c in dev.resources("AWS::Synthetics::Canary").values()]
    assert canary["Name"] == "reflex-dev-home"
    assert canary["RuntimeVersion"] == "syn-nodejs-puppeteer-13.0"
    assert canary["Schedule"]["Expression"] == "rate(5 minutes)"
    script = canary["Code"]["Script"]
    assert '"url": "https://dev.shop.example.com/"' in script
    assert '"expected_status": 200' in script and '"body_contains": "<title>Shop"' in script
    assert canary["ArtifactConfig"] == {"S3Encryption": {"EncryptionMode": "SSE_S3"}}
    bucket = dev.resources("AWS::S3::Bucket")[canary["ArtifactS3Location"]["Fn::Join"][1][1]["Ref"]]
    assert bucket["Properties"]["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert bucket["Properties"]["PublicAccessBlockConfiguration"]["BlockPublicPolicy"] is True


def test_journey_alarms_on_failed_and_slow_runs(dev: Synthesized) -> None:
    alarms = _alarms(dev)
    failed = alarms["reflex-dev-home-journey-failed"]
    assert (failed["Threshold"], failed["ComparisonOperator"]) == (100, "LessThanThreshold")
    assert (failed["EvaluationPeriods"], failed["DatapointsToAlarm"]) == (3, 2)
    stats = [failed] if "MetricName" in failed else [m["Metric"] for m in _metrics(failed).values() if "Metric" in m]
    assert any(s["MetricName"] == "SuccessPercent" and s["Namespace"] == "CloudWatchSynthetics" for s in stats)
    assert alarms["reflex-dev-home-journey-slow"]["Threshold"] == 3000


# ------------------------------------------------------------------ the synth-time check of named alarms


def test_synth_refuses_a_policy_naming_an_unknown_alarm(tmp_path: Path) -> None:
    text = (ROOT / "config" / "dev.yaml").read_text()
    assert "    - web-5xx-rate-high\n" in text
    (tmp_path / "dev.yaml").write_text(text.replace("    - web-5xx-rate-high\n", ""))
    with pytest.raises(ConfigError) as err:
        reflex_app.build_app("dev", tmp_path)
    assert str(tmp_path / "dev.yaml") in str(err.value)
    assert "promotions.0.guard_alarms.names: 'web-5xx-rate-high' is neither created by monitoring" in str(err.value)
