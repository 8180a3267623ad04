"""The typed config of blue/green promotion pairs (`promotions:` in `config/<stage>.yaml`).

A pair is two colours of one service behind one traffic switch:

* `alb`: an Application Load Balancer listener (its default action) or one listener rule, forwarding to a
  blue and a green target group with weights. A shift is one ModifyListener / ModifyRule call.
* `route53`: two weighted records (same name and type, set identifiers `blue` / `green`) in one hosted
  zone. A shift is one ChangeResourceRecordSets call carrying both records.

The colour that is live is recorded in the state table (never inferred from weights alone); a promotion
moves traffic from the live colour to the other one along the pair's `schedule`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from reflex_core.config_base import AlarmMatch, EventMatch, StrictModel, repeated
from reflex_core.scaling_config import ScalingStageConfig

Colour = Literal["blue", "green"]
COLOURS: tuple[Colour, Colour] = ("blue", "green")

_ELB_ARN = r"^arn:aws[a-z\-]*:elasticloadbalancing:[a-z0-9\-]+:\d{12}:"
LISTENER_ARN = re.compile(_ELB_ARN + r"listener/app/[A-Za-z0-9\-]{1,32}/[0-9a-f]{16}/[0-9a-f]{16}$")
RULE_ARN = re.compile(_ELB_ARN + r"listener-rule/app/[A-Za-z0-9\-]{1,32}/[0-9a-f]{16}/[0-9a-f]{16}/[0-9a-f]{16}$")
TARGET_GROUP_ARN = re.compile(_ELB_ARN + r"targetgroup/[A-Za-z0-9\-]{1,32}/[0-9a-f]{16}$")


def other(colour: Colour) -> Colour:
    return "green" if colour == "blue" else "blue"


def arn_account_region(arn: str) -> tuple[str, str]:
    parts = arn.split(":")
    return parts[4], parts[3]


# --------------------------------------------------------------------------- traffic switches


class AlbPairTarget(StrictModel):
    """Weighted forward action of a listener (default action) or of one listener rule."""

    kind: Literal["alb"]
    listener_arn: str | None = Field(default=None, description="the listener whose default action forwards")
    rule_arn: str | None = Field(default=None, description="or: the listener rule whose action forwards")
    blue_target_group_arn: str
    green_target_group_arn: str

    @field_validator("listener_arn")
    @classmethod
    def _listener(cls, v: str | None) -> str | None:
        if v is not None and not LISTENER_ARN.match(v):
            raise ValueError("not an Application Load Balancer listener ARN "
                             "(arn:aws:elasticloadbalancing:<region>:<account>:listener/app/<lb>/<id>/<id>)")
        return v

    @field_validator("rule_arn")
    @classmethod
    def _rule(cls, v: str | None) -> str | None:
        if v is not None and not RULE_ARN.match(v):
            raise ValueError("not an Application Load Balancer listener rule ARN "
                             "(arn:aws:elasticloadbalancing:<region>:<account>:listener-rule/app/<lb>/<id>/<id>/<id>)")
        return v

    @field_validator("blue_target_group_arn", "green_target_group_arn")
    @classmethod
    def _target_group(cls, v: str) -> str:
        if not TARGET_GROUP_ARN.match(v):
            raise ValueError("not a target group ARN (arn:aws:elasticloadbalancing:<region>:<account>:"
                             "targetgroup/<name>/<id>)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> AlbPairTarget:
        if (self.listener_arn is None) == (self.rule_arn is None):
            raise ValueError("give exactly one of listener_arn or rule_arn")
        if self.blue_target_group_arn == self.green_target_group_arn:
            raise ValueError("blue and green must be different target groups")
        places = {arn_account_region(a) for a in self.arns}
        if len(places) != 1:
            raise ValueError("the listener (or rule) and both target groups must be in one account and region")
        return self

    @property
    def switch_arn(self) -> str:
        return self.listener_arn or self.rule_arn or ""

    @property
    def arns(self) -> list[str]:
        return [self.switch_arn, self.blue_target_group_arn, self.green_target_group_arn]

    def target_group(self, colour: Colour) -> str:
        return self.blue_target_group_arn if colour == "blue" else self.green_target_group_arn

    def health_target_groups(self, colour: Colour) -> list[str]:
        return [self.target_group(colour)]

    def health_check_id(self, colour: Colour) -> str | None:
        return None

    @property
    def key(self) -> str:
        return "alb/" + self.switch_arn.split(":", 5)[5]


class Route53Side(StrictModel):
    """One colour of a weighted record pair, and where its health is read."""

    set_identifier: str = Field(min_length=1, max_length=128)
    target_group_arns: list[str] = Field(default_factory=list, description="target groups behind this side "
                                                                          "(their healthy targets are counted)")
    health_check_id: str | None = Field(default=None, pattern=r"^[0-9a-f\-]{36}$",
                                        description="a Route 53 health check of this side's endpoint")

    @field_validator("target_group_arns")
    @classmethod
    def _target_groups(cls, v: list[str]) -> list[str]:
        for arn in v:
            if not TARGET_GROUP_ARN.match(arn):
                raise ValueError(f"{arn!r} is not a target group ARN")
        return v

    @model_validator(mode="after")
    def _health_known(self) -> Route53Side:
        if not self.target_group_arns and self.health_check_id is None:
            raise ValueError("give target_group_arns and/or health_check_id: Reflex never shifts traffic to a "
                             "side whose health it cannot read")
        return self


class Route53PairTarget(StrictModel):
    kind: Literal["route53"]
    hosted_zone_id: str = Field(pattern=r"^Z[A-Z0-9]{1,32}$")
    record_name: str = Field(min_length=1, max_length=253)
    record_type: Literal["A", "AAAA", "CNAME"]
    blue: Route53Side
    green: Route53Side

    @field_validator("record_name")
    @classmethod
    def _normalized(cls, v: str) -> str:
        # Route 53's own form: lower case, no trailing dot (also what the IAM condition key compares).
        name = v.lower().rstrip(".")
        if not re.fullmatch(r"[a-z0-9_\-]+(\.[a-z0-9_\-]+)+", name):
            raise ValueError("record_name must be a DNS name such as www.example.com")
        return name

    @model_validator(mode="after")
    def _distinct(self) -> Route53PairTarget:
        if self.blue.set_identifier == self.green.set_identifier:
            raise ValueError("blue and green need different set identifiers")
        return self

    def side(self, colour: Colour) -> Route53Side:
        return self.blue if colour == "blue" else self.green

    def health_target_groups(self, colour: Colour) -> list[str]:
        return list(self.side(colour).target_group_arns)

    def health_check_id(self, colour: Colour) -> str | None:
        return self.side(colour).health_check_id

    @property
    def arns(self) -> list[str]:
        return [*self.blue.target_group_arns, *self.green.target_group_arns]

    @property
    def key(self) -> str:
        return f"route53/{self.hosted_zone_id}/{self.record_name}/{self.record_type}"


PairTarget = Annotated[AlbPairTarget | Route53PairTarget, Field(discriminator="kind")]


# --------------------------------------------------------------------------- schedules


class AllAtOnce(StrictModel):
    kind: Literal["all-at-once"]


class Canary(StrictModel):
    """`percent` of the traffic for `bake_s`, then everything."""

    kind: Literal["canary"]
    percent: int = Field(ge=1, le=99)
    bake_s: int = Field(ge=0, le=86_400)


class Linear(StrictModel):
    """+`step_percent` every `interval_s` until 100 % (the last step may be smaller)."""

    kind: Literal["linear"]
    step_percent: int = Field(ge=1, le=50)
    interval_s: int = Field(ge=0, le=86_400)


Schedule = Annotated[AllAtOnce | Canary | Linear, Field(discriminator="kind")]


class Approval(StrictModel):
    """Wait for a console `promote` before the last step; roll back when nobody approves in time."""

    timeout_s: int = Field(default=3600, ge=60, le=7 * 86_400)


class ScaleInFreeze(StrictModel):
    """Scaling policies (names from `scaling:`) whose scale-in is frozen while a colour is the one traffic
    is moving away from: it must keep its capacity until the promotion can no longer be rolled back."""

    blue: list[str] = Field(default_factory=list)
    green: list[str] = Field(default_factory=list)

    def policies(self, colour: Colour) -> list[str]:
        return list(self.blue if colour == "blue" else self.green)


# --------------------------------------------------------------------------- the pair


class PromotionPair(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,40}$")
    target: PairTarget
    schedule: Schedule = Field(default_factory=lambda: Canary(kind="canary", percent=10, bake_s=300))
    bake_s: int = Field(default=300, ge=0, le=86_400, description="bake after the last step (the schedule sets "
                                                                  "the bake between earlier steps)")
    min_healthy_green: int = Field(default=1, ge=1, le=10_000,
                                   description="healthy targets the incoming colour needs before and during")
    guard_alarms: AlarmMatch
    approval: Approval | None = None
    retention_s: int = Field(default=3600, ge=0, le=7 * 86_400,
                             description="after finalizing, the old colour stays at weight 0 this long: a "
                                         "rollback within it is one API call")
    max_pause_s: int = Field(default=86_400, ge=60, le=7 * 86_400,
                             description="a paused promotion rolls back when not resumed within this time")
    freeze_scale_in: ScaleInFreeze = Field(default_factory=ScaleInFreeze)
    green_ready: EventMatch = Field(default_factory=lambda: EventMatch(source="app.deploy", detail_type="GreenReady"))
    completed_event: EventMatch | None = Field(
        default=None, description="the event published when a promotion finalizes; default: the GreenReady "
                                  "event's source with detail-type DeploymentCompleted")
    max_actions_per_hour: int = Field(default=120, ge=10, le=1000,
                                      description="rate limit of this pair's steps (rollbacks are never limited)")
    dry_run: bool = False

    @model_validator(mode="after")
    def _guards(self) -> PromotionPair:
        if self.guard_alarms.tags:
            # DescribeAlarms cannot filter by tag, and a guard that cannot be read is no guard.
            raise ValueError("guard_alarms.tags: not supported for promotions; name the alarms (names or prefixes)")
        if self.completed == self.green_ready:
            raise ValueError("completed_event: must differ from green_ready (a promotion would start itself)")
        return self

    @property
    def completed(self) -> EventMatch:
        """The DeploymentCompleted event: in the deploying team's namespace (their GreenReady source), where
        the pipeline and Reflex's other reactions (cache invalidation) listen; never a `reflex.` source,
        which reactions refuse to consume."""
        return self.completed_event or EventMatch(source=self.green_ready.source, detail_type="DeploymentCompleted")

    def steps(self) -> list[tuple[int, int]]:
        """(weight of the incoming colour, bake after it) for each step, ending at 100."""
        s = self.schedule
        if isinstance(s, Canary):
            return [(s.percent, s.bake_s), (100, self.bake_s)]
        if isinstance(s, Linear):
            weights = list(range(s.step_percent, 100, s.step_percent))
            return [(w, s.interval_s) for w in weights] + [(100, self.bake_s)]
        return [(100, self.bake_s)]


class PromotionStageConfig(ScalingStageConfig):
    """What the promoter validates at run time: the common part, `promotions`, and `scaling` (scale-in freezes
    name scaling policies)."""

    promotions: list[PromotionPair] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_promotions(self) -> PromotionStageConfig:
        names = [p.name for p in self.promotions]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"promotion names must be unique; repeated: {', '.join(dupes)}")
        keys = [p.target.key for p in self.promotions]
        dupes = repeated(keys)
        if dupes:
            raise ValueError(f"each listener, rule or record may have one promotion pair; repeated: {', '.join(dupes)}")
        known = {p.name for p in self.scaling}
        for i, pair in enumerate(self.promotions):
            for field, match in (("green_ready", pair.green_ready), ("completed_event", pair.completed)):
                if match.source.startswith(self.own_source):
                    raise ValueError(f"promotions.{i}.{field}.source: {match.source!r} is a source of Reflex's own "
                                     "events; other reactions refuse to consume it")
            for colour in COLOURS:
                for name in pair.freeze_scale_in.policies(colour):
                    if name not in known:
                        raise ValueError(f"promotions.{i}.freeze_scale_in.{colour}: no scaling policy {name!r} "
                                         f"(configured: {', '.join(sorted(known)) or 'none'})")
            if self.account or self.region:
                for arn in pair.target.arns:
                    account, region = arn.split(":")[4], arn.split(":")[3]
                    if (self.account and account != self.account) or (self.region and region != self.region):
                        raise ValueError(f"promotions.{i}.target: {arn} is not in this stage's account/region")
        return self

    def promotion(self, name: str) -> PromotionPair | None:
        return next((p for p in self.promotions if p.name == name), None)
