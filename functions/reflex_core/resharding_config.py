"""The `resharding` section of the stage config: ElastiCache (Redis OSS / Valkey) cluster-mode replication groups
whose shards (node groups) the resharder adds, removes and rebalances.

Per policy: the replication group, bounds on its node-group count, the memory/CPU alarms that add shards, when
shards may be removed (never while an alarm of the policy is in ALARM), cooldowns, rate limit, and whether the
periodic check rebalances slots that are unevenly spread. The resharder reads nothing else.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from reflex_core.config_base import AlarmMatch, EventMatch, RateLimit, StageConfig, StrictModel, repeated

# ElastiCache: 1-40 characters, letters, digits and hyphens, starting with a letter (no trailing or double
# hyphen: checked by the policy).
REPLICATION_GROUP_ID = r"^[A-Za-z][A-Za-z0-9-]{0,39}$"
# ElastiCache allows up to 500 node groups per replication group.
MAX_NODE_GROUPS = 500


class ShardBounds(StrictModel):
    """Bounds on the replication group's node-group (shard) count, and on one change."""

    min: int = Field(ge=1, le=MAX_NODE_GROUPS)
    max: int = Field(ge=1, le=MAX_NODE_GROUPS)
    max_step: int = Field(default=1, ge=1, le=MAX_NODE_GROUPS)

    @model_validator(mode="after")
    def _ordered(self) -> ShardBounds:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class AddShards(StrictModel):
    """Add `step` shards when one of these alarms (memory, CPU, by name, prefix or tag) goes into ALARM."""

    alarms: AlarmMatch
    step: int = Field(default=1, ge=1, le=MAX_NODE_GROUPS)
    # Online resharding moves slots for minutes to hours: the next addition waits at least this long.
    cooldown_s: int = Field(default=1800, ge=0)
    # While an alarm stays in ALARM, add again once the cooldown has passed (periodic check).
    repeat_while_alarm: bool = True


class RemoveShards(StrictModel):
    """Remove `step` shards once every alarm of the policy has been OK this long (never while one is in ALARM)."""

    when_ok_for_s: int = Field(default=3600, ge=300)
    step: int = Field(default=1, ge=1, le=MAX_NODE_GROUPS)
    cooldown_s: int = Field(default=3600, ge=0)


class ReshardingPolicy(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    replication_group: str = Field(pattern=REPLICATION_GROUP_ID, description="ElastiCache replication group id")
    bounds: ShardBounds
    add_shards: AddShards | None = None
    # Removing shards moves data too: off unless configured.
    remove_shards: RemoveShards | None = None
    # The periodic check rebalances slots spread more unevenly than `slot_tolerance` (a fraction of the even
    # share per shard), with ModifyReplicationGroupShardConfiguration at the current node-group count.
    rebalance_slots: bool = False
    slot_tolerance: float = Field(default=0.05, gt=0, le=1)
    on_events: list[EventMatch] = Field(default_factory=list)
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(max_actions_per_hour=4))
    dry_run: bool = False

    @field_validator("replication_group")
    @classmethod
    def _hyphens(cls, value: str) -> str:
        if value.endswith("-") or "--" in value:
            raise ValueError("a replication group id cannot end with a hyphen or contain two in a row")
        return value

    @property
    def key(self) -> str:
        return f"elasticache-rg/{self.replication_group}"

    @property
    def alarm_scope(self) -> str:
        """The name under which alarm memory groups this policy's alarms (apart from other reactions' policies)."""
        return f"resharding:{self.name}"


class ReshardingStageConfig(StageConfig):
    """What the resharder validates at run time: the common part and the `resharding` section."""

    resharding: list[ReshardingPolicy] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_resharding(self) -> ReshardingStageConfig:
        dupes = repeated([p.name for p in self.resharding])
        if dupes:
            raise ValueError(f"resharding policy names must be unique; repeated: {', '.join(dupes)}")
        dupes = repeated([p.replication_group for p in self.resharding])
        if dupes:
            raise ValueError(f"each replication group may have one resharding policy; repeated: {', '.join(dupes)}")
        for i, policy in enumerate(self.resharding):
            for j, match in enumerate(policy.on_events):
                if match.source == self.own_source:
                    raise ValueError(f"resharding.{i}.on_events.{j}.source: {self.own_source!r} is the source of "
                                     "Reflex's own decision events; reacting to it would loop")
        return self

    def resharding_policy(self, name: str) -> ReshardingPolicy | None:
        return next((p for p in self.resharding if p.name == name), None)
