"""The `databases` section of the stage config: the PostgreSQL databases the advisor reads and guards.

Each database names how to connect (a Secrets Manager secret in the RDS format, or IAM authentication to a
host), its role (primary or replica), the advisor policy (schedule, how many statements, the thresholds that
make a table "large", whether proposals may be applied and with which lock timeout) and the runaway-query
policy (the alarms on that database's CPU or connections, the longest a query may run, who is never
touched, whether to terminate rather than cancel, how many backends per invocation, dry-run).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from reflex_core.config_base import AlarmMatch, Cron, RateLimit, StageConfig, StrictModel, repeated

DATABASE_NAME = r"^[a-z][a-z0-9\-]{0,39}$"
PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$"


class SecretConnection(StrictModel):
    """A Secrets Manager secret holding `host`, `port`, `username`, `password` and `dbname` (RDS's format)."""

    kind: Literal["secret"]
    secret_arn: str = Field(pattern=r"^arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:[A-Za-z0-9/_+=.@\-]+$")
    sslmode: Literal["disable", "prefer", "require", "verify-full"] = "require"

    @property
    def resource_arns(self) -> list[str]:
        return [self.secret_arn]


class IamConnection(StrictModel):
    """IAM database authentication (`rds-db:connect`): a short-lived token instead of a password."""

    kind: Literal["iam"]
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.\-]+$")
    port: int = Field(default=5432, ge=1, le=65535)
    dbname: str = Field(pattern=PG_IDENTIFIER)
    user: str = Field(pattern=PG_IDENTIFIER)
    # The DB instance or cluster resource id (db-XXXX / cluster-XXXX) that scopes rds-db:connect.
    resource_id: str = Field(pattern=r"^(db|cluster|prx)-[A-Za-z0-9]+$")
    sslmode: Literal["require", "verify-full"] = "require"

    @property
    def resource_arns(self) -> list[str]:
        return []


Connection = Annotated[SecretConnection | IamConnection, Field(discriminator="kind")]


class LargeTable(StrictModel):
    """A table is "large" (sequential scans on it are reported, indexes proposed for it) past either bound."""

    rows: int = Field(default=10_000, ge=1)
    bytes: int = Field(default=64 * 1024 * 1024, ge=8192)


class AdvisorPolicy(StrictModel):
    enabled: bool = True
    schedule: Cron | None = Field(default="0 6 * * ? *", description="EventBridge Scheduler cron body (UTC)")
    top_n: int = Field(default=20, ge=1, le=200, description="statements reported per ranking")
    analyse_n: int = Field(default=20, ge=1, le=500, description="slowest statements examined for indexes")
    large_table: LargeTable = Field(default_factory=LargeTable)
    # An index candidate on a column whose predicate keeps more than this fraction of the rows is not proposed.
    max_selectivity: float = Field(default=0.2, gt=0, le=1)
    # A proposal must lower the statement's estimated cost to at most this fraction of before (0.5 = halve).
    min_cost_ratio: float = Field(default=0.5, gt=0, lt=1)
    min_statement_cost: float = Field(default=100.0, ge=0, description="plans cheaper than this are not examined")
    unused_index_min_bytes: int = Field(default=1024 * 1024, ge=0)
    allow_apply: bool = False
    lock_timeout_ms: int = Field(default=5000, ge=100, le=600_000)
    statement_timeout_ms: int = Field(default=10_000, ge=100, le=600_000,
                                      description="statement timeout of the advisor's own (read-only) queries")


class RunawayPolicy(StrictModel):
    alarms: AlarmMatch
    max_runtime_s: int = Field(default=300, ge=1, le=86_400)
    allow_roles: list[str] = Field(default_factory=list)
    allow_applications: list[str] = Field(default_factory=list)
    terminate: bool = False
    max_per_invocation: int = Field(default=5, ge=1, le=100)
    dry_run: bool = False
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(max_actions_per_hour=60))


class DatabaseTarget(StrictModel):
    name: str = Field(pattern=DATABASE_NAME)
    connection: Connection
    role: Literal["primary", "replica"] = "primary"
    # VPC placement of the advisor function for this database (all databases share the function's subnets).
    security_group_id: str | None = Field(default=None, pattern=r"^sg-[0-9a-f]{8,17}$")
    advisor: AdvisorPolicy = Field(default_factory=AdvisorPolicy)
    runaway: RunawayPolicy | None = None
    shard: str | None = Field(
        default=None, pattern=r"^[a-z][a-z0-9_\-]{0,39}/[a-z][a-z0-9_\-]{0,39}$",
        description="`<set>/<shard>` when this database is a shard of `sharding:`: the advisor never builds an "
                    "index while a move involves that shard, and a move never starts during a build")

    @property
    def key(self) -> str:
        return f"postgres/{self.name}"

    @property
    def build_lock(self) -> str:
        """The state-table lock (`lock#db:<...>`) an index build holds; a shard move checks it before starting."""
        return f"db:{self.shard or self.name}"

    @model_validator(mode="after")
    def _replica_rules(self) -> DatabaseTarget:
        if self.role == "replica" and self.advisor.allow_apply:
            raise ValueError("advisor.allow_apply: indexes are built on the primary; a replica cannot apply them")
        return self


class DatabaseNetwork(StrictModel):
    """Where the advisor function runs: subnets and the VPC that reach the configured databases."""

    vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$")
    subnet_ids: list[str] = Field(min_length=1)
    availability_zones: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _paired(self) -> DatabaseNetwork:
        if len(self.subnet_ids) != len(self.availability_zones):
            raise ValueError("subnet_ids and availability_zones must have the same length (one zone per subnet)")
        return self


class RdsProxy(StrictModel):
    """An optional RDS Proxy in front of a database (the application's and Reflex's own connections)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9\-]{0,59}$")
    database: str = Field(pattern=DATABASE_NAME, description="the configured database it fronts")
    engine_secret_arn: str = Field(
        pattern=r"^arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:[A-Za-z0-9/_+=.@\-]+$")
    db_cluster_identifier: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9\-]{0,62}$")
    db_instance_identifier: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9\-]{0,62}$")
    max_connections_percent: int = Field(default=80, ge=1, le=100)

    @model_validator(mode="after")
    def _one_target(self) -> RdsProxy:
        if (self.db_cluster_identifier is None) == (self.db_instance_identifier is None):
            raise ValueError("give exactly one of db_cluster_identifier or db_instance_identifier")
        return self


class Databases(StrictModel):
    network: DatabaseNetwork | None = None
    targets: list[DatabaseTarget] = Field(default_factory=list)
    proxies: list[RdsProxy] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> Databases:
        dupes = repeated([d.name for d in self.targets])
        if dupes:
            raise ValueError(f"targets: database names must be unique; repeated: {', '.join(dupes)}")
        known = {d.name for d in self.targets}
        for i, proxy in enumerate(self.proxies):
            if proxy.database not in known:
                raise ValueError(f"proxies.{i}.database: no database {proxy.database!r} "
                                 f"(configured: {', '.join(sorted(known)) or 'none'})")
            db = next(d for d in self.targets if d.name == proxy.database)
            if db.security_group_id is None or self.network is None:
                raise ValueError(f"proxies.{i}.database: a proxy runs in `network` and reaches its database through "
                                 f"the database's security_group_id; set both for {db.name!r}")
        dupes = repeated([p.name for p in self.proxies])
        if dupes:
            raise ValueError(f"proxies: names must be unique; repeated: {', '.join(dupes)}")
        return self


class DatabaseStageConfig(StageConfig):
    """What the advisor validates at run time: the common part and the `databases` section."""

    databases: Databases | None = None

    def database(self, name: str) -> DatabaseTarget | None:
        if self.databases is None:
            return None
        return next((d for d in self.databases.targets if d.name == name), None)

    @property
    def database_targets(self) -> list[DatabaseTarget]:
        return self.databases.targets if self.databases else []
