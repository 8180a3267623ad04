"""The `sharding` section of the stage config: PostgreSQL shard sets whose hash buckets Reflex moves online.

A shard set (e.g. `orders`) is N PostgreSQL databases holding the same tables; every row belongs to one
of `buckets` hash buckets of its shard key (`shards.buckets.bucket_of`, computed identically in Python,
in the fence trigger and in the replication row filter), and every bucket to one shard (the shard map in
DynamoDB). Moving a bucket moves the rows of all the set's `tables` whose key falls in it, together.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from reflex_core.config_base import AlarmMatch, EventMatch, RateLimit, StageConfig, StrictModel, repeated

SHARD_NAME = r"^[a-z][a-z0-9_\-]{0,39}$"
SQL_IDENT = r"^[a-z_][a-z0-9_]{0,62}$"
SECRET_ID = re.compile(r"^(arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:)?[A-Za-z0-9/_+=.@\-]{1,512}$")


class SecretConnection(StrictModel):
    """A Secrets Manager secret in the RDS form (JSON with host, port, username, password, dbname)."""

    kind: Literal["secret"] = "secret"
    secret_id: str = Field(description="secret name or ARN")

    @field_validator("secret_id")
    @classmethod
    def _secret(cls, v: str) -> str:
        if not SECRET_ID.match(v):
            raise ValueError("not a Secrets Manager secret name or ARN")
        return v


class IamConnection(StrictModel):
    """RDS IAM authentication: a token from `rds:GenerateDBAuthToken`, scoped by `rds-db:connect` on
    arn:aws:rds-db:<region>:<account>:dbuser:<resource_id>/<user>."""

    kind: Literal["iam"] = "iam"
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=5432, ge=1, le=65535)
    database: str = Field(pattern=SQL_IDENT)
    user: str = Field(pattern=SQL_IDENT)
    resource_id: str = Field(pattern=r"^(db|cluster)-[A-Z0-9]{1,64}$",
                             description="the DbiResourceId (or cluster resource id) the IAM policy names")
    region: str | None = Field(default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")


class LocalConnection(StrictModel):
    """A plain libpq connection string (local runs, tests and the simulator only: no credentials in config)."""

    kind: Literal["dsn"] = "dsn"
    dsn: str = Field(min_length=1, max_length=1000)

    @field_validator("dsn")
    @classmethod
    def _no_password(cls, v: str) -> str:
        if "password" in v.lower() or re.search(r"://[^/@]*:[^/@]*@", v):
            raise ValueError("a dsn may not carry a password; use a secret or IAM authentication")
        return v


class Shard(StrictModel):
    name: str = Field(pattern=SHARD_NAME)
    connection: SecretConnection | IamConnection | LocalConnection = Field(discriminator="kind")
    weight: float = Field(default=1.0, gt=0, le=1000, description="capacity weight: share of the buckets' bytes")
    accepting: bool = Field(default=True, description="false: never a move's target (draining or retiring)")
    max_concurrent_moves: int = Field(default=1, ge=1, le=16)
    max_bytes: int | None = Field(default=None, ge=1, description="capacity: a move that would exceed it is refused")
    security_group_id: str | None = Field(default=None, pattern=r"^sg-[0-9a-f]{8,17}$",
                                          description="the database's security group (the functions get ingress)")
    port: int = Field(default=5432, ge=1, le=65535)
    replication_dsn: str | None = Field(
        default=None, max_length=1000,
        description="how the OTHER shards' servers reach this one for logical replication (online mode); "
                    "default: the connection's host/port/database")
    alarms: AlarmMatch | None = Field(default=None, description="alarms on this shard's database (hot shard)")


class Placement(StrictModel):
    """Explicit initial placement of bucket ranges (default: equal contiguous ranges in shard order)."""

    shard: str = Field(pattern=SHARD_NAME)
    buckets: list[str] = Field(min_length=1, description='bucket numbers or ranges, e.g. ["0-1023", "2048"]')

    def expand(self) -> list[int]:
        out: list[int] = []
        for part in self.buckets:
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
            if not m:
                raise ValueError(f"{part!r} is not a bucket number or range a-b")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if hi < lo:
                raise ValueError(f"{part!r}: range end below its start")
            out.extend(range(lo, hi + 1))
        return out


class ShardTable(StrictModel):
    """A table moved with its rows' buckets: `key_column` holds the shard key (the tenant)."""

    name: str = Field(pattern=r"^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$")
    key_column: str = Field(pattern=SQL_IDENT)


class ShardKey(StrictModel):
    """The shard key's type: `text` hashes md5(key) (first 4 bytes, big endian) mod buckets; `integer` is
    key mod buckets (non-negative). See functions/shards/buckets.py."""

    type: Literal["text", "integer"] = "text"


class ShardSet(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,39}$")
    buckets: int = Field(default=4096, ge=1, le=65536)
    key: ShardKey = Field(default_factory=ShardKey)
    shards: list[Shard] = Field(min_length=1)
    placement: list[Placement] = Field(default_factory=list)
    tables: list[ShardTable] = Field(min_length=1)
    transfer: Literal["online", "block_writes"] = "online"
    online_verify: Literal["snapshot", "fenced"] = Field(
        default="snapshot",
        description="online mode, where the verification runs: `snapshot` (default) before the switch's fence, on "
                    "snapshots taken under a brief fence of its own (the fences stay short whatever the bucket's "
                    "size; changes after the snapshot are trusted to the verified replication stream, as Vitess "
                    "trusts a VDiff); `fenced` inside the switch's fence, on the final state (the fence then lasts "
                    "as long as hashing the buckets' rows on both shards)")
    tolerance: float = Field(default=0.10, gt=0, le=1)
    improvement_threshold: float = Field(default=0.0, ge=0, le=1,
                                         description="skip moves whose gain is below this share of the bytes moved")
    max_moves_per_plan: int = Field(default=64, ge=1, le=4096)
    metric: Literal["bytes", "load"] = "bytes"
    throughput_bytes_per_s: float = Field(default=50e6, gt=0)
    grace_period_s: int = Field(default=3600, ge=0, le=14 * 86_400,
                                description="after a switch, the source rows are kept this long (rollback)")
    copy_chunk_rows: int = Field(default=50_000, ge=100, le=10_000_000,
                                 description="rows of the table per copy chunk: the first chunk, and every chunk "
                                             "when copy_chunk_target_s is 0")
    copy_chunk_target_s: float = Field(default=5.0, ge=0, le=120,
                                       description="grow each next chunk (up to 100 x copy_chunk_rows) so that it "
                                                   "takes about this long; a crash repeats at most one chunk")
    delete_batch_rows: int = Field(default=5_000, ge=100, le=1_000_000)
    fence_lock_timeout_ms: int = Field(default=2_000, ge=10, le=60_000)
    catch_up_timeout_s: int = Field(default=3_600, ge=10, le=86_400)
    alarms: AlarmMatch | None = Field(default=None, description="hot-shard alarms for the whole set")
    on_events: list[EventMatch] = Field(default_factory=lambda: [EventMatch(source="app.shards",
                                                                            detail_type="ShardAdded")])
    balance_check_every_minutes: int | None = Field(default=60, ge=5, le=7 * 1440)
    cooldown_s: int = Field(default=600, ge=0, le=86_400)
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(max_actions_per_hour=120))
    dry_run: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> ShardSet:
        dupes = repeated([s.name for s in self.shards])
        if dupes:
            raise ValueError(f"shards: names must be unique; repeated: {', '.join(dupes)}")
        dupes = repeated([t.name for t in self.tables])
        if dupes:
            raise ValueError(f"tables: names must be unique; repeated: {', '.join(dupes)}")
        if len(self.shards) > self.buckets:
            raise ValueError("buckets: fewer buckets than shards")
        names = {s.name for s in self.shards}
        seen: set[int] = set()
        for i, p in enumerate(self.placement):
            if p.shard not in names:
                raise ValueError(f"placement.{i}.shard: no shard {p.shard!r} (configured: {', '.join(sorted(names))})")
            try:
                numbers = p.expand()
            except ValueError as err:
                raise ValueError(f"placement.{i}.buckets: {err}") from None
            for b in numbers:
                if b >= self.buckets:
                    raise ValueError(f"placement.{i}.buckets: bucket {b} is outside 0-{self.buckets - 1}")
                if b in seen:
                    raise ValueError(f"placement.{i}.buckets: bucket {b} is placed twice")
                seen.add(b)
        if self.placement and len(seen) != self.buckets:
            raise ValueError(f"placement: places {len(seen)} of {self.buckets} buckets; place all or none")
        return self

    def shard(self, name: str) -> Shard | None:
        return next((s for s in self.shards if s.name == name), None)

    def initial_assignment(self) -> list[str]:
        """bucket -> shard name before any move: the explicit placement, else equal contiguous ranges."""
        if self.placement:
            out = [""] * self.buckets
            for p in self.placement:
                for b in p.expand():
                    out[b] = p.shard
            return out
        n = len(self.shards)
        return [self.shards[b * n // self.buckets].name for b in range(self.buckets)]


class ShardingVpc(StrictModel):
    """Where the shard functions run: subnets that reach the shard databases (and, without NAT, endpoints)."""

    vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$")
    subnet_ids: list[str] = Field(min_length=1)
    availability_zones: list[str] = Field(min_length=1)

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, v: list[str]) -> list[str]:
        for s in v:
            if not re.fullmatch(r"subnet-[0-9a-f]{8,17}", s):
                raise ValueError(f"{s!r} is not a subnet id")
        return v

    @model_validator(mode="after")
    def _zones(self) -> ShardingVpc:
        if len(self.availability_zones) != len(self.subnet_ids):
            raise ValueError("availability_zones: give one zone per subnet, in the same order")
        return self


class ShardingConfig(StrictModel):
    vpc: ShardingVpc | None = None
    sets: list[ShardSet] = Field(default_factory=list)
    shard_moved_event: EventMatch | None = Field(
        default=None, description="the ShardMoved event published after each switch, in the application's "
                                  "namespace so the invalidator may consume it (default: app.shards / ShardMoved; "
                                  "never a reflex.<stage> source, which reactions refuse to consume)")

    @model_validator(mode="after")
    def _unique(self) -> ShardingConfig:
        dupes = repeated([s.name for s in self.sets])
        if dupes:
            raise ValueError(f"sets: names must be unique; repeated: {', '.join(dupes)}")
        return self

    def set(self, name: str) -> ShardSet | None:
        return next((s for s in self.sets if s.name == name), None)


class ShardingStageConfig(StageConfig):
    """What the shard functions validate at run time: the common part and `sharding`."""

    sharding: ShardingConfig | None = None

    @model_validator(mode="after")
    def _check_sharding(self) -> ShardingStageConfig:
        if self.sharding is None:
            return self
        if self.shard_moved_source.startswith(self.own_source):
            raise ValueError(f"sharding.shard_moved_event.source: {self.shard_moved_source!r} is a source of "
                             "Reflex's own events; the invalidator would refuse to consume it")
        for i, s in enumerate(self.sharding.sets):
            for j, ev in enumerate(s.on_events):
                if ev.source.startswith(self.own_source):
                    raise ValueError(f"sharding.sets.{i}.on_events.{j}.source: {ev.source!r} is a source of "
                                     "Reflex's own events; reactions refuse to consume it")
            if self.sharding.sets and any(sh.connection.kind != "dsn" for sh in s.shards) and \
                    self.sharding.vpc is None:
                raise ValueError(f"sharding.vpc: required when shards connect by secret or IAM (set {s.name})")
        return self

    @property
    def shard_moved_source(self) -> str:
        ev = self.sharding.shard_moved_event if self.sharding else None
        return ev.source if ev else "app.shards"

    @property
    def shard_moved_detail_type(self) -> str:
        ev = self.sharding.shard_moved_event if self.sharding else None
        return ev.detail_type if ev else "ShardMoved"
