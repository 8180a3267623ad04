"""The promotion side of the moto world: one load balancer (or hosted zone) per pair, the local workflow
driver, and the knobs tests and scenarios turn (healthy targets, guard alarm states).

ALB pair: a VPC with two subnets, the load balancer and the two target groups named as in the config's
ARNs, three healthy (IP) targets per colour, and the listener (or listener rule) forwarding 100 % to blue
and 0 % to green. Route 53 pair: the hosted zone, the two weighted records (blue 100, green 0), the
target groups and health checks the sides name. moto generates its own ARNs and ids; the returned config
carries those, everything else of the pair unchanged. Guard alarms exist (state OK); a prefix gets one
alarm named `<prefix>default`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from reflex_core.aws_clients import AwsClients
from reflex_core.clock import VirtualClock
from reflex_core.config import ReflexConfig
from reflex_core.promotion_config import COLOURS, AlbPairTarget, PromotionPair, Route53PairTarget

REGION = "us-east-1"
ACCOUNT = "123456789012"
TARGETS_PER_COLOUR = 3


def workflow_arn(stage: str) -> str:
    return f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:reflex-{stage}-promotion"


def function_arn(stage: str) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:reflex-{stage}-promoter"


@dataclass
class PairResources:
    pair: PromotionPair
    target_groups: dict[str, str] = field(default_factory=dict)  # colour -> target group ARN (health)
    targets: dict[str, list[str]] = field(default_factory=dict)  # target group ARN -> registered target ids
    health_checks: dict[str, str] = field(default_factory=dict)  # colour -> Route 53 health check id


def _name_from_arn(arn: str, kind: str) -> str:
    # .../targetgroup/<name>/<id> or .../listener/app/<lb>/<id>/<id>
    parts = arn.split(":", 5)[5].split("/")
    return parts[1] if kind == "targetgroup" else parts[2]


def create_pairs(clients: AwsClients, config: ReflexConfig) -> tuple[ReflexConfig, dict[str, PairResources]]:
    if not config.promotions:
        return config, {}
    vpc = clients.ec2.create_vpc(CidrBlock="10.40.0.0/16")["Vpc"]["VpcId"]
    subnets = [clients.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.40.{i}.0/24",
                                         AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
               for i, az in enumerate("ab")]
    pairs: list[PromotionPair] = []
    resources: dict[str, PairResources] = {}
    for pair in config.promotions:
        if isinstance(pair.target, AlbPairTarget):
            remapped, res = _alb_pair(clients, pair, pair.target, vpc, subnets)
        else:
            remapped, res = _route53_pair(clients, pair, pair.target, vpc)
        pairs.append(remapped)
        resources[pair.name] = res
        _guard_alarms(clients, pair)
    return config.model_copy(update={"promotions": pairs}), resources


def _target_group(clients: AwsClients, name: str, vpc: str, res: PairResources, offset: int) -> str:
    arn = clients.elbv2.create_target_group(Name=name, Protocol="HTTP", Port=8080, VpcId=vpc,
                                            TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    ids = [f"10.40.{offset}.{i + 10}" for i in range(TARGETS_PER_COLOUR)]
    clients.elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i, "Port": 8080} for i in ids])
    res.targets[arn] = ids
    return arn


def _alb_pair(clients: AwsClients, pair: PromotionPair, target: AlbPairTarget, vpc: str,
              subnets: list[str]) -> tuple[PromotionPair, PairResources]:
    res = PairResources(pair=pair)
    switch = target.switch_arn
    lb_name = _name_from_arn(switch, "listener")
    lb = clients.elbv2.create_load_balancer(Name=lb_name, Subnets=subnets, Type="application",
                                            Scheme="internal")["LoadBalancers"][0]["LoadBalancerArn"]
    arns = {c: _target_group(clients, _name_from_arn(target.target_group(c), "targetgroup"), vpc, res, 10 + i)
            for i, c in enumerate(COLOURS)}
    res.target_groups = {str(c): arn for c, arn in arns.items()}
    forward = [{"Type": "forward", "ForwardConfig": {"TargetGroups": [
        {"TargetGroupArn": arns["blue"], "Weight": 100}, {"TargetGroupArn": arns["green"], "Weight": 0}]}}]
    update: dict[str, Any] = {"blue_target_group_arn": arns["blue"], "green_target_group_arn": arns["green"]}
    if target.listener_arn:
        listener = clients.elbv2.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80,
                                                 DefaultActions=forward)["Listeners"][0]["ListenerArn"]
        update["listener_arn"] = listener
    else:
        listener = clients.elbv2.create_listener(
            LoadBalancerArn=lb, Protocol="HTTP", Port=80,
            DefaultActions=[{"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "404"}}],
        )["Listeners"][0]["ListenerArn"]
        rule = clients.elbv2.create_rule(ListenerArn=listener, Priority=10, Actions=forward, Conditions=[
            {"Field": "path-pattern", "Values": ["/*"]}])["Rules"][0]["RuleArn"]
        update["rule_arn"] = rule
    remapped = pair.model_copy(update={"target": target.model_copy(update=update)})
    res.pair = remapped
    return remapped, res


def _route53_pair(clients: AwsClients, pair: PromotionPair, target: Route53PairTarget,
                  vpc: str) -> tuple[PromotionPair, PairResources]:
    res = PairResources(pair=pair)
    zone_name = target.record_name.split(".", 1)[1] + "."
    zone = clients.route53.create_hosted_zone(Name=zone_name, CallerReference=f"reflex-{pair.name}")[
        "HostedZone"]["Id"].rsplit("/", 1)[-1]
    sides = {}
    for i, colour in enumerate(COLOURS):
        side = target.side(colour)
        groups = [_target_group(clients, _name_from_arn(arn, "targetgroup"), vpc, res, 20 + 2 * i + j)
                  for j, arn in enumerate(side.target_group_arns)]
        if groups:
            res.target_groups[colour] = groups[0]
        update: dict[str, Any] = {"target_group_arns": groups}
        if side.health_check_id is not None:
            check = clients.route53.create_health_check(
                CallerReference=f"reflex-{pair.name}-{colour}",
                HealthCheckConfig={"Type": "HTTPS", "FullyQualifiedDomainName": f"{colour}.{target.record_name}",
                                   "Port": 443, "ResourcePath": "/health"})["HealthCheck"]["Id"]
            update["health_check_id"] = check
            res.health_checks[colour] = check
        sides[colour] = side.model_copy(update=update)
        value = f"10.40.{30 + i}.10" if target.record_type == "A" else (
            f"fd00::{30 + i}" if target.record_type == "AAAA" else f"{colour}.{zone_name}")
        clients.route53.change_resource_record_sets(HostedZoneId=zone, ChangeBatch={"Changes": [{
            "Action": "CREATE", "ResourceRecordSet": {
                "Name": target.record_name + ".", "Type": target.record_type, "SetIdentifier": side.set_identifier,
                "Weight": 100 if colour == "blue" else 0, "TTL": 30, "ResourceRecords": [{"Value": value}]}}]})
    remapped = pair.model_copy(update={"target": target.model_copy(update={
        "hosted_zone_id": zone, "blue": sides["blue"], "green": sides["green"]})})
    res.pair = remapped
    return remapped, res


def guard_alarm_names(pair: PromotionPair) -> list[str]:
    return [*pair.guard_alarms.names, *(f"{p}default" for p in pair.guard_alarms.prefixes)]


def _guard_alarms(clients: AwsClients, pair: PromotionPair) -> None:
    for name in guard_alarm_names(pair):
        clients.cloudwatch.put_metric_alarm(
            AlarmName=name, MetricName="TargetResponseTime", Namespace="AWS/ApplicationELB", Statistic="Average",
            Period=60, EvaluationPeriods=1, Threshold=1.0, ComparisonOperator="GreaterThanThreshold")


# --------------------------------------------------------------------------- knobs


def set_alarm_state(clients: AwsClients, name: str, state: str, at: datetime | None = None) -> None:
    """What CloudWatch reports for the alarm from now on (DescribeAlarms); the event is sent separately."""
    from simulator.aws_world import set_alarm_state as put_state

    put_state(clients, name, state, at)


def set_healthy_targets(clients: AwsClients, resources: PairResources, colour: str, healthy: int) -> None:
    """Leave `healthy` of the colour's targets registered (and healthy) in its first target group."""
    arn = resources.target_groups[colour]
    ids = resources.targets[arn]
    registered = {d["Target"]["Id"] for d in clients.elbv2.describe_target_health(
        TargetGroupArn=arn)["TargetHealthDescriptions"]}
    keep = set(ids[:healthy])
    gone = [{"Id": i, "Port": 8080} for i in ids if i not in keep and i in registered]
    back = [{"Id": i, "Port": 8080} for i in ids if i in keep and i not in registered]
    if gone:
        clients.elbv2.deregister_targets(TargetGroupArn=arn, Targets=gone)
    if back:
        clients.elbv2.register_targets(TargetGroupArn=arn, Targets=back)


def attach_workflows(world: Any, clock: VirtualClock, invoke: Callable[[dict[str, Any]], Any]) -> Any:
    """The local workflow driver, running the deployed promotion definition, as the world's Step Functions."""
    from promoter.workflow_definition import promotion_definition
    from simulator.workflow_driver import LocalWorkflows

    stage = world.config.stage
    driver = LocalWorkflows(promotion_definition(function_arn(stage)), workflow_arn(stage), function_arn(stage),
                            invoke, clock)
    world.overrides["stepfunctions"] = driver
    return driver
