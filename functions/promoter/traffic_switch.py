"""Read and write the traffic weights of a pair, and count healthy targets (all AWS calls of traffic).

* ALB: the forward action of the listener's default actions (DescribeListeners / ModifyListener) or of one
  listener rule (DescribeRules / ModifyRule). Both target groups stay in the forward config, the one not
  serving at weight 0: removing it would stop its health checks, and a rollback would need more than one
  call. Other actions (authentication, ...) and the stickiness config are kept as they are.
* Route 53: the two weighted records of the pair, written as two UPSERTs in one ChangeBatch (atomic).

A write always carries both weights (they sum to 100) in one call, and is refused (`UnsafeWeights`) when
a colour that would receive traffic has no healthy target: Reflex never makes things worse.
"""

from __future__ import annotations

import copy
from typing import Any, Protocol

from reflex_core.aws_clients import AwsClients
from reflex_core.promotion_config import COLOURS, AlbPairTarget, Colour, PromotionPair, Route53PairTarget

# Route 53 considers an endpoint healthy when more than 18 % of its health checkers report it healthy.
ROUTE53_HEALTHY_FRACTION = 0.18


class TrafficSwitchError(RuntimeError):
    """The pair's listener, rule or records are not in a shape Reflex can shift safely."""


class UnsafeWeights(RuntimeError):
    """The write would send traffic to a colour with no healthy target."""


class TrafficSwitch(Protocol):
    def read(self) -> dict[str, int]:
        """Current weights per colour, as percentages summing to 100."""

    def write(self, weights: dict[str, int]) -> None:
        """Write both weights in one API call."""

    def snapshot(self) -> tuple[dict[str, int], Any]:
        """The current weights and what a write needs (the forward actions, the records): one read."""

    def write_over(self, weights: dict[str, int], snapshot: Any) -> None:
        """Write both weights in one API call, over a `snapshot` just taken (no second read)."""


def percentages(raw: dict[str, int], *, all_zero_is_even: bool = False) -> dict[str, int]:
    """Weights as percentages. Every weight 0: Route 53 then answers with every record equally
    (`all_zero_is_even`); for a listener the split is undefined."""
    total = sum(raw.values())
    if total <= 0 and all_zero_is_even:
        return {"blue": 50, "green": 50}
    if total <= 0:
        raise TrafficSwitchError(f"every weight is 0 ({raw}); the traffic split is undefined")
    blue = round(raw.get("blue", 0) * 100 / total)
    return {"blue": blue, "green": 100 - blue}


class AlbForward:
    def __init__(self, clients: AwsClients, target: AlbPairTarget) -> None:
        self._elb = clients.elbv2
        self._t = target

    def _actions(self) -> list[dict[str, Any]]:
        if self._t.listener_arn:
            listeners = self._elb.describe_listeners(ListenerArns=[self._t.listener_arn])["Listeners"]
            return list(listeners[0]["DefaultActions"])
        rules = self._elb.describe_rules(RuleArns=[self._t.rule_arn])["Rules"]
        return list(rules[0]["Actions"])

    def _colour_of(self) -> dict[str, Colour]:
        return {self._t.blue_target_group_arn: "blue", self._t.green_target_group_arn: "green"}

    def _forward(self, actions: list[dict[str, Any]]) -> dict[str, Any]:
        forwards = [a for a in actions if a.get("Type") == "forward"]
        if len(forwards) != 1:
            raise TrafficSwitchError(f"{self._t.switch_arn} has {len(forwards)} forward actions; expected one")
        return forwards[0]

    def read(self) -> dict[str, int]:
        return self._weights(self._actions())

    def snapshot(self) -> tuple[dict[str, int], Any]:
        actions = self._actions()
        return self._weights(actions), actions

    def _weights(self, actions: list[dict[str, Any]]) -> dict[str, int]:
        forward = self._forward(actions)
        colour_of = self._colour_of()
        groups = forward.get("ForwardConfig", {}).get("TargetGroups") or [
            {"TargetGroupArn": forward.get("TargetGroupArn"), "Weight": 1}]
        raw = {"blue": 0, "green": 0}
        for group in groups:
            colour = colour_of.get(str(group.get("TargetGroupArn")))
            if colour is None:
                raise TrafficSwitchError(f"{self._t.switch_arn} forwards to {group.get('TargetGroupArn')}, which is "
                                         "neither the blue nor the green target group of the pair")
            raw[colour] += int(group.get("Weight", 1))
        return percentages(raw)

    def write(self, weights: dict[str, int]) -> None:
        self.write_over(weights, self._actions())

    def write_over(self, weights: dict[str, int], snapshot: Any) -> None:
        actions = copy.deepcopy(snapshot)
        forward = self._forward(actions)
        forward.pop("TargetGroupArn", None)
        config = dict(forward.get("ForwardConfig") or {})
        config["TargetGroups"] = [{"TargetGroupArn": self._t.target_group(c), "Weight": int(weights[c])}
                                  for c in COLOURS]
        forward["ForwardConfig"] = config
        if self._t.listener_arn:
            self._elb.modify_listener(ListenerArn=self._t.listener_arn, DefaultActions=actions)
        else:
            self._elb.modify_rule(RuleArn=self._t.rule_arn, Actions=actions)


class Route53Weighted:
    def __init__(self, clients: AwsClients, target: Route53PairTarget) -> None:
        self._r53 = clients.route53
        self._t = target

    def _records(self) -> dict[Colour, dict[str, Any]]:
        name = self._t.record_name + "."
        resp = self._r53.list_resource_record_sets(HostedZoneId=self._t.hosted_zone_id, StartRecordName=name,
                                                   StartRecordType=self._t.record_type, MaxItems="20")
        by_id = {self._t.blue.set_identifier: "blue", self._t.green.set_identifier: "green"}
        found: dict[Colour, dict[str, Any]] = {}
        for record in resp.get("ResourceRecordSets", []):
            same = record["Name"].lower().rstrip(".") == self._t.record_name and record["Type"] == self._t.record_type
            colour = by_id.get(record.get("SetIdentifier", ""))
            if same and colour is not None:
                found[colour] = record  # type: ignore[index]
        missing = [c for c in COLOURS if c not in found]
        if missing:
            raise TrafficSwitchError(f"{self._t.record_name} {self._t.record_type}: no weighted record for "
                                     f"{', '.join(missing)} in zone {self._t.hosted_zone_id}")
        return found

    def read(self) -> dict[str, int]:
        return self.snapshot()[0]

    def snapshot(self) -> tuple[dict[str, int], Any]:
        records = self._records()
        return percentages({c: int(records[c].get("Weight", 0)) for c in COLOURS}, all_zero_is_even=True), records

    def write(self, weights: dict[str, int]) -> None:
        self.write_over(weights, self._records())

    def write_over(self, weights: dict[str, int], snapshot: Any) -> None:
        records = snapshot
        changes = []
        for colour in COLOURS:
            record = copy.deepcopy(records[colour])
            record["Weight"] = int(weights[colour])
            changes.append({"Action": "UPSERT", "ResourceRecordSet": record})
        self._r53.change_resource_record_sets(HostedZoneId=self._t.hosted_zone_id, ChangeBatch={
            "Comment": f"Reflex promotion: blue {weights['blue']} / green {weights['green']}", "Changes": changes})


class PairTraffic:
    """A pair's traffic switch plus the health of each colour."""

    def __init__(self, clients: AwsClients, pair: PromotionPair) -> None:
        self._clients = clients
        self.pair = pair
        target = pair.target
        self.switch: TrafficSwitch = (AlbForward(clients, target) if isinstance(target, AlbPairTarget)
                                      else Route53Weighted(clients, target))

    def read(self) -> dict[str, int]:
        return self.switch.read()

    def healthy(self, colour: Colour) -> int:
        """Healthy targets of the colour: its target groups' healthy targets; 0 when its Route 53 health
        check reports it unhealthy; with only a health check, 1 when healthy."""
        target = self.pair.target
        groups = target.health_target_groups(colour)
        count = sum(self._healthy_targets(arn) for arn in groups)
        check = target.health_check_id(colour)
        if check is not None:
            ok = self._health_check_ok(check)
            count = (count if groups else 1) if ok else 0
        return count

    def _healthy_targets(self, target_group_arn: str) -> int:
        resp = self._clients.elbv2.describe_target_health(TargetGroupArn=target_group_arn)
        return sum(1 for d in resp.get("TargetHealthDescriptions", [])
                   if d.get("TargetHealth", {}).get("State") == "healthy")

    def _health_check_ok(self, health_check_id: str) -> bool:
        resp = self._clients.route53.get_health_check_status(HealthCheckId=health_check_id)
        observations = resp.get("HealthCheckObservations", [])
        if not observations:
            return False
        ok = sum(1 for o in observations if str(o.get("StatusReport", {}).get("Status", "")).startswith("Success"))
        return ok / len(observations) > ROUTE53_HEALTHY_FRACTION

    def apply(self, weights: dict[str, int], current: dict[str, int] | None = None) -> bool:
        """Write `weights` unless they are already in place; refuse if a colour that would get traffic has
        no healthy target. Returns whether a write happened."""
        if sorted(weights) != sorted(COLOURS) or sum(weights.values()) != 100 or min(weights.values()) < 0:
            raise ValueError(f"weights must give blue and green, each 0..100, summing to 100: {weights}")
        if current is None:
            current = self.read()
        if current == weights:
            return False
        for colour in COLOURS:
            if weights[colour] > 0 and current.get(colour, 0) < weights[colour] and self.healthy(colour) == 0:
                raise UnsafeWeights(f"{colour} has no healthy target; refusing to send it {weights[colour]} % "
                                    f"of the traffic of {self.pair.name}")
        self.switch.write(weights)
        return True
