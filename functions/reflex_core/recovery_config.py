"""The typed config of disaster recovery (`recovery:` in `config/<stage>.yaml`).

Per protected resource (an Aurora cluster, an RDS instance, a DynamoDB table, an ElastiCache replication
group or an S3 bucket): its objectives (RTO, RPO), its backups (cron, retention, PITR, cross-region copy),
the checks that prove a restored copy is usable, when it is drilled and where a drill's copy lives (a
subnet group and security groups that are never production's).

What is refused here, at synth time, with the field named: an RTO or RPO of zero or less, an RPO the
backups cannot meet (the longest gap between two scheduled backups is longer than the RPO and there is no
PITR), PITR on a service that has none, a drill network that is production's, a copy to the stage's own
region, and references to resources that are not configured.
"""

from __future__ import annotations

import re
from itertools import pairwise
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from reflex_core.config_base import Cron, StageConfig, StrictModel, repeated

ResourceKind = Literal["aurora-cluster", "rds-instance", "dynamodb-table", "elasticache", "s3-bucket"]

# AWS Backup's resource type names (DescribeRestoreJob.ResourceType, restore testing selections).
BACKUP_RESOURCE_TYPE: dict[str, str] = {
    "aurora-cluster": "Aurora", "rds-instance": "RDS", "dynamodb-table": "DynamoDB",
    "elasticache": "ElastiCache", "s3-bucket": "S3",
}
# Kinds AWS Backup restore testing covers; ElastiCache is drilled through its own restore (the workflow).
RESTORE_TESTING_KINDS = frozenset({"aurora-cluster", "rds-instance", "dynamodb-table", "s3-bucket"})
# The shortest RPO point-in-time recovery can promise: RDS/Aurora restore to within 5 minutes of now,
# DynamoDB likewise; S3 continuous backups (AWS Backup) too. ElastiCache has no PITR.
PITR_FLOOR_S = {"aurora-cluster": 300, "rds-instance": 300, "dynamodb-table": 300, "s3-bucket": 900}
SQL_KINDS = frozenset({"aurora-cluster", "rds-instance"})
SG_ID = re.compile(r"^sg-[0-9a-f]{8,17}$")


# --------------------------------------------------------------------------- cron arithmetic


def _field_values(text: str, low: int, high: int, field: str) -> list[int]:
    values: set[int] = set()
    for part in text.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/", 1)
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(f"cron {field}: bad step {step_text!r}")
            step = int(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            a, b = part.split("-", 1)
            if not (a.isdigit() and b.isdigit()):
                raise ValueError(f"cron {field}: bad range {part!r}")
            start, end = int(a), int(b)
        elif part.isdigit():
            start = int(part)
            end = high if step > 1 else start
        else:
            raise ValueError(f"cron {field}: {part!r} is not a number, range, list or step")
        if not (low <= start <= end <= high):
            raise ValueError(f"cron {field}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return sorted(values)


def max_backup_gap_s(cron: str) -> int:
    """The longest time between two runs of a six-field cron (minutes hours dom month dow year), in seconds.

    Minutes and hours are computed exactly; a restricted day-of-month or day-of-week is taken as weekly at
    best (a day-of-month rule as monthly), which errs towards refusing an RPO rather than promising one.
    """
    minutes_f, hours_f, dom, _month, dow, _year = cron.split()
    minutes = _field_values(minutes_f, 0, 59, "minutes")
    hours = _field_values(hours_f, 0, 23, "hours")
    times = [h * 60 + m for h in hours for m in minutes]
    gaps = [b - a for a, b in pairwise(times)] + [times[0] + 1440 - times[-1]]
    gap = max(gaps) * 60
    if dom not in ("*", "?"):
        return max(gap, 31 * 86400)
    if dow not in ("*", "?"):
        days = dow.replace("MON-FRI", "2-6").split(",")
        # Five weekdays leave a three-day gap over the weekend; anything else is at best weekly.
        return max(gap, 3 * 86400 if days == ["2-6"] else 7 * 86400)
    return gap


# --------------------------------------------------------------------------- pieces


class Objectives(StrictModel):
    rto_s: int = Field(description="recovery time objective: restore + validation must finish within it")
    rpo_s: int = Field(description="recovery point objective: the most data (as time) a restore may lose")

    @field_validator("rto_s", "rpo_s")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("must be greater than 0 seconds")
        return v


class CrossRegionCopy(StrictModel):
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d$")
    vault_name: str = Field(default="reflex-dr-copy", pattern=r"^[a-zA-Z0-9\-_]{2,50}$",
                            description="the vault in the other region (created by the copy region's stack)")
    retention_days: int | None = Field(default=None, ge=1, le=36500)


class Backup(StrictModel):
    cron: Cron = Field(description="AWS Backup schedule (six-field cron, UTC)")
    retention_days: int = Field(ge=1, le=36500)
    pitr: bool = Field(default=False, description="point-in-time recovery (continuous backup) where the service has it")
    copy_to: CrossRegionCopy | None = None

    @field_validator("cron")
    @classmethod
    def _parsable(cls, v: str) -> str:
        max_backup_gap_s(v)
        return v


class WithinPercentOfProduction(StrictModel):
    """The restored value is within `percent` % of the same check on the production resource (read only)."""

    kind: Literal["within-percent-of-production"]
    percent: float = Field(gt=0, le=100)


class FreshWithinRpo(StrictModel):
    """The value is a timestamp no older than the RPO before the recovery point (the backup holds recent data)."""

    kind: Literal["fresh-within-rpo"]


class AtLeast(StrictModel):
    kind: Literal["at-least"]
    value: float


class EqualsValue(StrictModel):
    kind: Literal["equals"]
    value: float | str


Expectation = Annotated[WithinPercentOfProduction | FreshWithinRpo | AtLeast | EqualsValue,
                        Field(discriminator="kind")]


class ValidationCheck(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    kind: Literal["sql", "item-count", "object-count"]
    query: str | None = Field(default=None, max_length=4000,
                              description="sql: one read-only SELECT returning one value")
    database: str | None = Field(default=None, description="sql: the database to run it in")
    prefix: str = Field(default="", description="object-count: the key prefix counted")
    expect: Expectation

    @model_validator(mode="after")
    def _shape(self) -> ValidationCheck:
        if self.kind == "sql":
            if not self.query:
                raise ValueError("query: required for a sql check")
            if not re.match(r"^\s*(select|with)\b", self.query, re.IGNORECASE) or ";" in self.query.strip()[:-1]:
                raise ValueError("query: one read-only SELECT (or WITH ... SELECT) statement")
        elif self.query is not None:
            raise ValueError(f"query: only sql checks have a query ({self.kind} counts)")
        if isinstance(self.expect, FreshWithinRpo) and self.kind != "sql":
            raise ValueError("expect: fresh-within-rpo needs a sql check returning a timestamp")
        return self


class DrillSchedule(StrictModel):
    cron: Cron = Field(description="when AWS Backup restore testing (or the workflow) drills this resource")
    start_window_hours: int = Field(default=1, ge=1, le=168)
    recovery_point: Literal["latest", "random"] = "latest"
    lookback_days: int = Field(default=7, ge=1, le=365, description="random: pick within this many days")
    validation_window_hours: int = Field(default=2, ge=1, le=168,
                                         description="AWS Backup deletes the restored copy after this")
    # A drill older than this (since the last successful one) raises the "drill overdue" alarm.
    max_age_hours: int | None = Field(default=None, ge=1, le=8760)
    # On-demand drills (console `start_drill`, the drill workflow): production's wait for an operator.
    approval: bool | None = Field(
        default=None, description="an on-demand drill waits for an operator's `approve_drill` before any restore "
                                  "starts (no approval within approval_timeout_s: no drill); default: yes on a "
                                  "production stage (prod_like), no elsewhere")
    approval_timeout_s: int = Field(default=3600, ge=60, le=86400,
                                    description="how long an on-demand drill waits for its approval")
    restore_timeout_s: int = Field(default=14400, ge=600, le=86400,
                                   description="an on-demand restore still running after this fails the drill "
                                               "(its copy is torn down)")
    poll_interval_s: int = Field(default=60, ge=10, le=3600,
                                 description="how often the drill workflow reads the restore's status")
    cooldown_s: int = Field(default=3600, ge=0, le=604800,
                            description="an on-demand drill of the resource is refused this soon after the last one "
                                        "started")

    def needs_approval(self, prod_like: bool) -> bool:
        return prod_like if self.approval is None else self.approval


class Isolation(StrictModel):
    """Where a drill's copy lives. None of it may be production's: a drill never restores next to production."""

    subnet_group: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9\-_. ]{1,255}$",
                                     description="DB or cache subnet group of the drill network")
    security_group_ids: list[str] = Field(default_factory=list)
    production_subnet_group: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9\-_. ]{1,255}$")
    production_security_group_ids: list[str] = Field(default_factory=list)
    name_prefix: str = Field(default="reflex-drill-", pattern=r"^[a-z][a-z0-9\-]{2,30}$",
                             description="every restored copy's name starts with it")

    @field_validator("security_group_ids", "production_security_group_ids")
    @classmethod
    def _sgs(cls, v: list[str]) -> list[str]:
        for sg in v:
            if not SG_ID.match(sg):
                raise ValueError(f"{sg!r} is not a security group id (sg-...)")
        return v

    @model_validator(mode="after")
    def _apart(self) -> Isolation:
        shared = sorted(set(self.security_group_ids) & set(self.production_security_group_ids))
        if shared:
            raise ValueError(f"security_group_ids: {', '.join(shared)} is a production security group; "
                             "a drill's copy must not be reachable like production")
        if self.subnet_group and self.subnet_group == self.production_subnet_group:
            raise ValueError(f"subnet_group: {self.subnet_group!r} is production's subnet group")
        return self


class ProtectedResource(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9\-]{0,39}$")
    kind: ResourceKind
    identifier: str = Field(min_length=1, max_length=255,
                            description="cluster / instance id, table name, replication group id or bucket name")
    objectives: Objectives
    backup: Backup
    checks: list[ValidationCheck] = Field(default_factory=list)
    drill: DrillSchedule | None = None
    isolation: Isolation = Field(default_factory=Isolation)
    # Aurora/RDS: the Secrets Manager secret the drill's Data API statements run with.
    secret_arn: str | None = Field(default=None,
                                   pattern=r"^arn:aws[a-z\-]*:secretsmanager:[a-z0-9\-]+:\d{12}:secret:.+$")

    @model_validator(mode="after")
    def _consistent(self) -> ProtectedResource:
        if self.backup.pitr and self.kind not in PITR_FLOOR_S:
            raise ValueError("backup.pitr: ElastiCache has no point-in-time recovery; use snapshots only")
        gap = max_backup_gap_s(self.backup.cron)
        if self.backup.pitr:
            floor = PITR_FLOOR_S[self.kind]
            if self.objectives.rpo_s < floor:
                raise ValueError(f"objectives.rpo_s: {self.objectives.rpo_s}s is below what point-in-time "
                                 f"recovery of a {self.kind} can restore to ({floor}s)")
        elif self.objectives.rpo_s < gap:
            raise ValueError(f"objectives.rpo_s: {self.objectives.rpo_s}s cannot be met by backup.cron "
                             f"{self.backup.cron!r} (up to {gap}s between backups) without backup.pitr")
        names = [c.name for c in self.checks]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"checks: names must be unique; repeated: {', '.join(dupes)}")
        for i, check in enumerate(self.checks):
            # A restored cache is checked by its status only: the drill function does not reach into its network.
            allowed = {"sql"} if self.kind in SQL_KINDS else {
                "dynamodb-table": {"item-count"}, "s3-bucket": {"object-count"}, "elasticache": set(),
            }[self.kind]
            if check.kind not in allowed:
                raise ValueError(f"checks.{i}.kind: a {self.kind} is checked with "
                                 f"{', '.join(sorted(allowed)) or 'no checks (its status only)'}, not {check.kind}")
        if self.drill is not None and self.kind in SQL_KINDS and self.checks and self.secret_arn is None:
            raise ValueError("secret_arn: sql checks of a drilled database need the secret to run them with")
        if (self.drill is not None and self.kind in ("aurora-cluster", "rds-instance", "elasticache")
                and not (self.isolation.subnet_group and self.isolation.security_group_ids)):
                raise ValueError("isolation: a drilled database or cache needs its own subnet_group and "
                                 "security_group_ids (never production's)")
        if self.identifier.startswith(self.isolation.name_prefix):
            raise ValueError(f"identifier: {self.identifier!r} starts with the drill prefix "
                             f"{self.isolation.name_prefix!r}; drills could not be told from production")
        return self

    @property
    def key(self) -> str:
        return f"recovery:{self.kind}:{self.identifier}"

    @property
    def restore_testing(self) -> bool:
        return self.kind in RESTORE_TESTING_KINDS


class Failover(StrictModel):
    """A regional failover target: an Aurora Global Database and optionally its Route 53 failover record pair.

    The protected `resource` is the global database's original primary (in the stage's region);
    `secondary_cluster_arn` the member in the other region that a switchover or failover promotes. With
    `hosted_zone_id` and `record_name`, the pair of failover records (`Failover: PRIMARY` / `SECONDARY`) of that
    name is swapped after the promotion so that the new writer's record is PRIMARY; `secondary_set_identifier`
    names the record (its `SetIdentifier`) that serves the secondary region (the other one serves the primary).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9\-]{0,39}$")
    resource: str = Field(description="the aurora-cluster resource (by name) that is the global database's primary")
    global_cluster: str = Field(pattern=r"^[a-zA-Z][a-zA-Z0-9\-]{0,62}$")
    secondary_cluster_arn: str = Field(pattern=r"^arn:aws[a-z\-]*:rds:[a-z0-9\-]+:\d{12}:cluster:[a-zA-Z0-9\-]+$")
    hosted_zone_id: str | None = Field(default=None, pattern=r"^Z[A-Z0-9]{1,32}$")
    record_name: str | None = Field(default=None, min_length=1, max_length=255,
                                    pattern=r"^([a-zA-Z0-9_\-]+\.)*[a-zA-Z0-9_\-]+\.?$")
    record_type: Literal["A", "AAAA", "CNAME"] = "CNAME"
    secondary_set_identifier: str | None = Field(default=None, min_length=1, max_length=128,
                                                 description="SetIdentifier of the secondary region's record")
    approval_timeout_s: int = Field(default=900, ge=60, le=86400)
    # Two promotions of the same global database closer than this are refused (a failback right after a
    # failover is a decision to take calmly; the cooldown is per global cluster).
    cooldown_s: int = Field(default=900, ge=0, le=86400)
    # How long the workflow polls for the new writer before it pages and gives up watching.
    promotion_timeout_s: int = Field(default=1800, ge=120, le=7200)

    @model_validator(mode="after")
    def _dns(self) -> Failover:
        dns = (self.hosted_zone_id, self.record_name, self.secondary_set_identifier)
        if any(v is not None for v in dns) and not all(v is not None for v in dns):
            raise ValueError("hosted_zone_id: the Route 53 step needs hosted_zone_id, record_name and "
                             "secondary_set_identifier together (or none of them)")
        return self

    @property
    def key(self) -> str:
        """The lock, cooldown and rate-limit key: one failover at a time per global database."""
        return f"failover:{self.global_cluster}"

    @property
    def secondary_region(self) -> str:
        return self.secondary_cluster_arn.split(":")[3]

    @property
    def dns(self) -> bool:
        return self.hosted_zone_id is not None


class Recovery(StrictModel):
    vault_name: str = Field(default="reflex-dr", pattern=r"^[a-zA-Z0-9\-_]{2,50}$")
    vault_lock: bool = Field(default=False, description="compliance-mode vault lock (irreversible after grace)")
    resources: list[ProtectedResource] = Field(default_factory=list)
    failover: list[Failover] = Field(default_factory=list)
    leftover_grace_s: int = Field(default=3600, ge=300, le=86400,
                                  description="a drill copy still there this long after its window ends alarms")

    @model_validator(mode="after")
    def _references(self) -> Recovery:
        dupes = repeated([r.name for r in self.resources])
        if dupes:
            raise ValueError(f"resources: names must be unique; repeated: {', '.join(dupes)}")
        dupes = repeated([r.key for r in self.resources])
        if dupes:
            raise ValueError(f"resources: each resource may be protected once; repeated: {', '.join(dupes)}")
        by_name = {r.name: r for r in self.resources}
        dupes = repeated([f.name for f in self.failover])
        if dupes:
            raise ValueError(f"failover: names must be unique; repeated: {', '.join(dupes)}")
        dupes = repeated([f.global_cluster for f in self.failover])
        if dupes:
            raise ValueError(f"failover: each global cluster may be configured once; repeated: {', '.join(dupes)}")
        for i, fo in enumerate(self.failover):
            target = by_name.get(fo.resource)
            if target is None:
                raise ValueError(f"failover.{i}.resource: no protected resource {fo.resource!r} "
                                 f"(configured: {', '.join(sorted(by_name)) or 'none'})")
            if target.kind != "aurora-cluster":
                raise ValueError(f"failover.{i}.resource: {fo.resource!r} is a {target.kind}; "
                                 "failover needs an aurora-cluster")
        return self

    def resource(self, name: str) -> ProtectedResource | None:
        return next((r for r in self.resources if r.name == name), None)

    def failover_target(self, name: str) -> Failover | None:
        return next((f for f in self.failover if f.name == name), None)


class RecoveryStageConfig(StageConfig):
    """What the drills function validates at run time: the common part and the `recovery` section."""

    recovery: Recovery = Field(default_factory=Recovery)

    @model_validator(mode="after")
    def _check_recovery(self) -> RecoveryStageConfig:
        for i, res in enumerate(self.recovery.resources):
            copy = res.backup.copy_to
            if copy is not None and self.region and copy.region == self.region:
                raise ValueError(f"recovery.resources.{i}.backup.copy_to.region: {copy.region} is the stage's own "
                                 "region; a cross-region copy must leave it")
            if self.is_prod_like and res.drill is not None and res.drill.approval is False:
                raise ValueError(f"recovery.resources.{i}.drill.approval: a production stage's on-demand drills wait "
                                 "for an operator's approval (remove `approval: false`)")
        for i, fo in enumerate(self.recovery.failover):
            if self.region and fo.secondary_region == self.region:
                raise ValueError(f"recovery.failover.{i}.secondary_cluster_arn: {fo.secondary_region} is the "
                                 "stage's own region; the secondary of a global database is in another region")
        return self
