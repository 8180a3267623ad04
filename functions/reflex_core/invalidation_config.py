"""The `invalidation:` section of a stage config: Redis caches and CloudFront distributions Reflex invalidates.

    invalidation:
      vpc: {vpc_id: vpc-0abc..., subnet_ids: [subnet-..., subnet-...], cache_security_group_id: sg-...}
      caches:
        - name: catalog
          redis: {host: master.catalog.abc123.euw1.cache.amazonaws.com, tls: true, auth: secret, secret_id: ...}
          tag_namespace: shop
          on_events: [{source: app.content, detail_type: ContentChanged}]
      cdn:
        - name: site
          distribution_id: E2EXAMPLE12345
          coalesce_window_s: 60
          origin: {bucket: shop-site-origin, inventory: true, path_rules: [{key_prefix: site/, path_prefix: /}]}
          on_events: [{source: app.content, detail_type: ContentChanged}]

Every model refuses unknown keys. What is checked here is what can be checked without the network: names,
patterns (the same validation the invalidator applies at run time), paths, limits CloudFront imposes, and
consistency (a managed distribution needs its `create:` block, a created cache needs the VPC).
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import quote

from pydantic import Field, field_validator, model_validator

from invalidator.cache_tags import CacheTagError, validate_name
from invalidator.cdn_path_planner import (
    CLOUDFRONT_MAX_PATHS_PER_BATCH,
    CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT,
    OverInvalidationBudget,
    PlannerConfig,
)
from invalidator.redis_connection import RedisConnectionSettings
from invalidator.redis_invalidation import InvalidationInputError, validate_pattern
from reflex_core.config_base import (
    AlarmMatch,
    Cron,
    EventMatch,
    RateLimit,
    StageConfig,
    StrictModel,
    Timezone,
    repeated,
)

OWNER_NAME = r"^[a-z][a-z0-9\-]{0,31}$"
MANAGED = "managed"
_DISTRIBUTION_ID = r"^([A-Z0-9]{8,20}|managed)$"
# Characters left as they are in an invalidation path; everything else is percent-encoded (RFC 1738 unsafe
# characters, non-ASCII, and `*`, which CloudFront would read as a wildcard).
_PATH_SAFE = "/~!$&'()+,;=:@-._"
# Reflex publishes its own decisions as `reflex.<stage>`: reacting to any `reflex.` source could loop.
_OWN_SOURCE_PREFIX = "reflex."


_ESCAPE = re.compile(r"(%[0-9A-Fa-f]{2})")


def encode_cdn_path(path: str, *, wildcard: bool = False) -> str:
    """A CDN path as CloudFront requires it: RFC 1738 unsafe and non-ASCII characters percent-encoded (UTF-8),
    exactly as the S3-key mapping does; valid `%XX` escapes are kept (encoding twice changes nothing), a lone
    `%` becomes `%25`, and a wildcard keeps its trailing `*`. `#tag` items are left as they are."""
    if path.startswith("#"):
        return path
    body, star = (path[:-1], "*") if wildcard and path.endswith("*") else (path, "")
    parts = _ESCAPE.split(body)
    return "".join(part if i % 2 else quote(part, safe=_PATH_SAFE) for i, part in enumerate(parts)) + star


def _check_paths(paths: list[str], field: str) -> list[str]:
    for i, path in enumerate(paths):
        if not path.startswith(("/", "#")):
            raise ValueError(f"{field}[{i}]: must start with '/' (or '#' for a cache tag): {path[:80]!r}")
        if "*" in path:
            raise ValueError(f"{field}[{i}]: wildcards go in `wildcards`, not in `paths`")
    return paths


class InvalidationSpec(StrictModel):
    """What to invalidate when the trigger itself does not say (a schedule, an alarm, an event without detail).

    `keys`, `patterns` and `tags` apply to caches; `paths` and `wildcards` to CDN distributions.
    """

    keys: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    paths: list[str] = Field(default_factory=list)
    wildcards: list[str] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for i, key in enumerate(v):
            if not key:
                raise ValueError(f"keys[{i}]: must not be empty")
        return v

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for i, pattern in enumerate(v):
            try:
                validate_pattern(pattern, field=f"patterns[{i}]")
            except InvalidationInputError as err:
                raise ValueError(str(err)) from None
        return v

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        for i, tag in enumerate(v):
            try:
                validate_name(tag, f"tags[{i}]")
            except CacheTagError as err:
                raise ValueError(str(err)) from None
        return v

    @field_validator("paths")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        return _check_paths(v, "paths")

    @field_validator("wildcards")
    @classmethod
    def _wildcards(cls, v: list[str]) -> list[str]:
        for i, w in enumerate(v):
            if not w.startswith("/") or not w.endswith("*") or "*" in w[:-1]:
                raise ValueError(f"wildcards[{i}]: a wildcard path starts with '/' and ends with its only '*'")
        return v

    @property
    def for_cache(self) -> bool:
        return bool(self.keys or self.patterns or self.tags)

    @property
    def for_cdn(self) -> bool:
        return bool(self.paths or self.wildcards)


class TriggerEvent(EventMatch):
    """A custom EventBridge event (e.g. `app.content` / `ContentChanged`, `app.deploy` / `DeploymentCompleted`).

    The event's `detail` may name what to invalidate (`keys`, `patterns`, `tags`, `paths`, `wildcards`);
    `invalidate` is used when it names nothing for this cache or distribution.
    """

    invalidate: InvalidationSpec | None = None

    @field_validator("source")
    @classmethod
    def _not_reflex(cls, v: str) -> str:
        if v.startswith(_OWN_SOURCE_PREFIX):
            raise ValueError(f"{v!r}: 'reflex.' sources are Reflex's own events; reacting to them could loop")
        return v


class AlarmInvalidation(StrictModel):
    """Invalidate `invalidate` when one of `alarms` goes into ALARM (e.g. a stale-content alarm)."""

    alarms: AlarmMatch
    invalidate: InvalidationSpec


class ScheduledInvalidation(StrictModel):
    """A periodic invalidation (EventBridge Scheduler)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{0,31}$")
    cron: Cron = Field(description="EventBridge Scheduler cron body, e.g. '0 3 * * ? *'")
    timezone: Timezone = Field(default="UTC", description="IANA time zone name of the cron, e.g. Europe/Paris")
    invalidate: InvalidationSpec
    sweep_purges: bool = Field(default=True, description=(
        "a cache's schedule also finishes tag purges a failed run left behind (tag:{ns:tag}:purging:<id>)"))


def _unique_names(items: list[ScheduledInvalidation]) -> list[ScheduledInvalidation]:
    names = [s.name for s in items]
    dupes = repeated(names)
    if dupes:
        raise ValueError(f"schedule names must be unique; repeated: {', '.join(dupes)}")
    return items


# --------------------------------------------------------------------------- caches


class ScanTuning(StrictModel):
    """How gently a pattern or tag is scanned (see functions/invalidator/redis_invalidation.py)."""

    count: int = Field(default=100, ge=1, le=100_000, description="SCAN COUNT per page")
    batch_size: int = Field(default=500, ge=1, le=10_000, description="keys unlinked per round trip")
    pause_ms: float = Field(default=0.0, ge=0, le=1000, description="pause after each batch, for live traffic")
    strategy: Literal["server", "client"] = "server"


class ContinuationPolicy(StrictModel):
    """How a long invalidation is split over invocations, and how often a failing one is retried."""

    time_budget_s: float = Field(default=40.0, ge=0.001, le=840,
                                 description="work per invocation at most (less if the Lambda has less time)")
    max_runs: int = Field(default=200, ge=1, le=10_000, description="continuations before giving up")
    max_retries: int = Field(default=3, ge=0, le=20, description="resumes after a Redis failure before failing")
    retry_delay_s: int = Field(default=10, ge=0, le=900, description="first retry delay; doubles per attempt")


class CacheHealth(StrictModel):
    """Alarms on what the collector publishes; `null` disables one. They are ordinary CloudWatch alarms named
    `reflex-<stage>-cache-<name>-hit-ratio-low` / `-evictions-high`: any reaction can name them."""

    hit_ratio_below: float | None = Field(default=0.8, ge=0, le=1)
    evictions_above: int | None = Field(default=1000, ge=0)
    evaluation_periods: int = Field(default=3, ge=1, le=100)


class ManagedCache(StrictModel):
    """Ask the stack to create an ElastiCache replication group: TLS in transit, encrypted at rest, an AUTH
    token generated in Secrets Manager, Multi-AZ with automatic failover (one replica per shard at least)."""

    engine: Literal["redis", "valkey"] = "valkey"
    engine_version: str = Field(default="8.0", pattern=r"^\d+(\.\d+){0,2}$")
    node_type: str = Field(default="cache.t4g.small", pattern=r"^cache\.[a-z0-9]+\.[a-z0-9]+$")
    shards: int = Field(default=1, ge=1, le=90, description="more than one: cluster mode")
    replicas_per_shard: int = Field(default=1, ge=1, le=5)
    port: int = Field(default=6380, ge=1024, le=65535, description="not 6379: a non-default port")
    snapshot_retention_days: int = Field(default=1, ge=0, le=35)


class CacheConfig(StrictModel):
    name: str = Field(pattern=OWNER_NAME)
    redis: RedisConnectionSettings | None = Field(default=None, description="an existing cache (omit with create)")
    create: ManagedCache | None = None
    tag_namespace: str = Field(default="cache", description="the namespace the application's TaggedCache uses")
    allow_flush: bool = False
    scan: ScanTuning = Field(default_factory=ScanTuning)
    continuation: ContinuationPolicy = Field(default_factory=ContinuationPolicy)
    max_keys_per_request: int = Field(default=10_000, ge=1, le=100_000)
    on_events: list[TriggerEvent] = Field(default_factory=list)
    on_alarms: list[AlarmInvalidation] = Field(default_factory=list)
    schedules: list[ScheduledInvalidation] = Field(default_factory=list)
    health: CacheHealth = Field(default_factory=CacheHealth)
    # Per cache + pattern/tag/key set (the lock's target); every run of a long invalidation counts.
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(max_actions_per_hour=120, open_for_s=900))
    dry_run: bool = False

    @field_validator("tag_namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        try:
            return validate_name(v, "tag_namespace")
        except CacheTagError as err:
            raise ValueError(str(err).split(": ", 1)[-1]) from None

    @field_validator("schedules")
    @classmethod
    def _schedules(cls, v: list[ScheduledInvalidation]) -> list[ScheduledInvalidation]:
        return _unique_names(v)

    @model_validator(mode="after")
    def _consistent(self) -> CacheConfig:
        if (self.redis is None) == (self.create is None):
            raise ValueError("give exactly one of `redis` (an existing cache) or `create` (the stack creates it)")
        specs = [e.invalidate for e in self.on_events if e.invalidate] + [a.invalidate for a in self.on_alarms] \
            + [s.invalidate for s in self.schedules]
        for spec in specs:
            if spec.for_cdn:
                raise ValueError("paths and wildcards belong to a `cdn` entry, not to a cache")
        for spec in [a.invalidate for a in self.on_alarms] + [s.invalidate for s in self.schedules]:
            if not spec.for_cache:
                raise ValueError("an alarm or schedule of a cache must name keys, patterns or tags to invalidate")
        return self

    @property
    def managed(self) -> bool:
        return self.create is not None


# --------------------------------------------------------------------------- CDN


class PathRule(StrictModel):
    """Map an origin object key to CDN paths: keys under `key_prefix` are served under `path_prefix`.

    `site/docs/index.html` with key_prefix `site/`, path_prefix `/` -> `/docs/index.html` and, because it is
    the index document, `/docs/`. `pretty_suffixes: [.html]` also maps `a/b.html` to `/a/b`.
    """

    key_prefix: str = ""
    path_prefix: str = "/"
    index_document: str | None = "index.html"
    pretty_suffixes: list[str] = Field(default_factory=list)

    @field_validator("path_prefix")
    @classmethod
    def _dir(cls, v: str) -> str:
        if not v.startswith("/") or not v.endswith("/"):
            raise ValueError("must start and end with '/'")
        return v

    def paths_for(self, key: str) -> list[str]:
        rest = key[len(self.key_prefix):]
        if not rest or rest.endswith("/"):
            return []  # a "directory" placeholder object is not served
        path = self.path_prefix + rest
        out = [path]
        if self.index_document and (rest == self.index_document or rest.endswith("/" + self.index_document)):
            out.append(path[: -len(self.index_document)])  # the directory it is served for
        else:
            for suffix in self.pretty_suffixes:
                if path.endswith(suffix) and len(path) > len(suffix) + 1:
                    out.append(path[: -len(suffix)])
        return [encode_cdn_path(p.replace("%", "%25")) for p in dict.fromkeys(out)]


class CdnOrigin(StrictModel):
    """The S3 bucket behind the distribution: its object events become CDN paths (through `path_rules`), and
    with `inventory` its listing tells the planner which unchanged objects a wildcard would purge."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
    object_events: bool = Field(default=True, description="react to Object Created / Object Deleted events")
    inventory: bool = False
    inventory_max_objects: int = Field(default=200_000, ge=1, le=5_000_000)
    inventory_cache_s: int = Field(default=300, ge=0, le=86_400)
    path_rules: list[PathRule] = Field(default_factory=lambda: [PathRule()], min_length=1)

    def rule_for(self, key: str) -> PathRule | None:
        """The rule with the longest matching `key_prefix`."""
        matching = [r for r in self.path_rules if key.startswith(r.key_prefix)]
        return max(matching, key=lambda r: len(r.key_prefix)) if matching else None

    def paths_for(self, key: str) -> list[str]:
        rule = self.rule_for(key)
        return rule.paths_for(key) if rule else []


class OverInvalidation(StrictModel):
    """How many unchanged objects wildcards may purge per batch: a count and/or a fraction of the inventory."""

    max_objects: int | None = Field(default=0, ge=0)
    max_ratio: float | None = Field(default=None, ge=0, le=1)


class ManagedDistribution(StrictModel):
    """Ask the stack to create a CloudFront distribution in front of the origin bucket (origin access control):
    long-lived immutable caching for content-hashed assets, `.wasm` served as `application/wasm` and
    compressed, short caching for HTML, HTTPS only, access logs."""

    comment: str = Field(default="", max_length=128)
    price_class: Literal["PriceClass_100", "PriceClass_200", "PriceClass_All"] = "PriceClass_100"
    immutable_paths: list[str] = Field(default_factory=lambda: ["assets/*", "static/*"],
                                       description="path patterns of content-hashed assets")
    immutable_ttl_s: int = Field(default=31_536_000, ge=3600, le=31_536_000)
    html_ttl_s: int = Field(default=60, ge=0, le=86_400)
    wasm: bool = True
    cache_tag_header: str = Field(default="Cache-Tag", pattern=r"^[A-Za-z0-9\-]{1,64}$")
    domain_names: list[str] = Field(default_factory=list)
    certificate_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z\-]*:acm:us-east-1:\d{12}:certificate/.+$")
    web_acl_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z\-]*:wafv2:us-east-1:\d{12}:global/.+$")
    access_logs: bool = True

    @model_validator(mode="after")
    def _certificate(self) -> ManagedDistribution:
        if bool(self.domain_names) != bool(self.certificate_arn):
            raise ValueError("domain_names and certificate_arn go together (an ACM certificate in us-east-1)")
        for i, pattern in enumerate(self.immutable_paths):
            if not pattern or pattern.startswith("/") or " " in pattern:
                raise ValueError(f"immutable_paths[{i}]: a CloudFront path pattern such as 'assets/*'")
        return self


class CdnTracking(StrictModel):
    poll_s: int = Field(default=60, ge=1, le=900, description="how often an invalidation in progress is checked")
    give_up_after_s: int = Field(default=3600, ge=60, le=86_400)


class CdnConfig(StrictModel):
    name: str = Field(pattern=OWNER_NAME)
    distribution_id: str = Field(pattern=_DISTRIBUTION_ID, description="an existing distribution, or 'managed'")
    create: ManagedDistribution | None = None
    coalesce_window_s: int = Field(default=60, ge=0, le=300, description="SQS batching window of the batcher")
    max_paths_per_batch: int = Field(default=CLOUDFRONT_MAX_PATHS_PER_BATCH, ge=1, le=CLOUDFRONT_MAX_PATHS_PER_BATCH)
    max_wildcards: int = Field(default=CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT, ge=0,
                               le=CLOUDFRONT_MAX_WILDCARDS_IN_FLIGHT)
    max_paths_per_request: int = Field(default=3000, ge=1, le=100_000,
                                       description="a single request naming more paths is refused")
    over_invalidation: OverInvalidation = Field(default_factory=OverInvalidation)
    wildcard_prefixes_without_inventory: list[str] = Field(default_factory=list)
    max_over_per_saved_path: float | None = Field(default=None, ge=0)
    cache_tags: bool = Field(default=False, description="allow '#tag' items (the distribution has CacheTagConfig)")
    origin: CdnOrigin | None = None
    on_events: list[TriggerEvent] = Field(default_factory=list)
    on_alarms: list[AlarmInvalidation] = Field(default_factory=list)
    schedules: list[ScheduledInvalidation] = Field(default_factory=list)
    tracking: CdnTracking = Field(default_factory=CdnTracking)
    rate_limit: RateLimit = Field(default_factory=lambda: RateLimit(max_actions_per_hour=60, open_for_s=900))
    dry_run: bool = False

    @field_validator("schedules")
    @classmethod
    def _schedules(cls, v: list[ScheduledInvalidation]) -> list[ScheduledInvalidation]:
        return _unique_names(v)

    @model_validator(mode="after")
    def _consistent(self) -> CdnConfig:
        if (self.distribution_id == MANAGED) != (self.create is not None):
            raise ValueError("distribution_id 'managed' and a `create` block go together")
        if self.create is not None and self.origin is None:
            raise ValueError("a managed distribution needs `origin` (the S3 bucket it serves)")
        specs = [e.invalidate for e in self.on_events if e.invalidate] + [a.invalidate for a in self.on_alarms] \
            + [s.invalidate for s in self.schedules]
        for spec in specs:
            if spec.for_cache:
                raise ValueError("keys, patterns and tags belong to a cache, not to a `cdn` entry")
            if any(p.startswith("#") for p in spec.paths) and not self.cache_tags:
                raise ValueError("'#tag' paths need cache_tags: true")
        for spec in [a.invalidate for a in self.on_alarms] + [s.invalidate for s in self.schedules]:
            if not spec.for_cdn:
                raise ValueError("an alarm or schedule of a distribution must name paths or wildcards")
        self.planner_config()  # the planner's own limits, checked now rather than at the first batch
        return self

    @property
    def managed(self) -> bool:
        return self.create is not None

    def planner_config(self, *, max_wildcards: int | None = None, max_paths_per_batch: int | None = None
                       ) -> PlannerConfig:
        return PlannerConfig(
            max_paths_per_batch=max_paths_per_batch or self.max_paths_per_batch,
            max_wildcards=self.max_wildcards if max_wildcards is None else max_wildcards,
            budget=OverInvalidationBudget(max_objects=self.over_invalidation.max_objects,
                                          max_ratio=self.over_invalidation.max_ratio),
            wildcard_prefixes_without_inventory=tuple(self.wildcard_prefixes_without_inventory),
            cache_tags_enabled=self.cache_tags,
            max_over_per_saved_path=self.max_over_per_saved_path,
        )


# --------------------------------------------------------------------------- the section


class InvalidationVpc(StrictModel):
    """Where the functions that reach Redis run. The subnets need a route to the AWS APIs Reflex calls (a NAT
    gateway, or VPC endpoints for SQS, SSM, SNS, EventBridge, Secrets Manager and DynamoDB)."""

    vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$")
    subnet_ids: list[str] = Field(min_length=1, max_length=16)
    availability_zones: list[str] = Field(default_factory=list,
                                          description="of the subnets, in the same order (optional)")
    cache_security_group_id: str | None = Field(default=None, pattern=r"^sg-[0-9a-f]{8,17}$",
                                                description="the existing caches' group: Reflex adds an ingress")
    endpoints: list[Literal["sqs", "ssm", "sns", "events", "secretsmanager", "monitoring", "dynamodb"]] = Field(
        default_factory=list,
        description="VPC endpoints the stack creates for subnets without a NAT gateway (interface endpoints with "
                    "private DNS, reachable only from the functions' group; DynamoDB as a gateway endpoint). Leave "
                    "out services the VPC already has an endpoint for: a second one with private DNS fails.")
    route_table_ids: list[str] = Field(default_factory=list, max_length=16,
                                       description="the subnets' route tables, for the DynamoDB gateway endpoint")

    @field_validator("subnet_ids")
    @classmethod
    def _subnets(cls, v: list[str]) -> list[str]:
        for i, s in enumerate(v):
            if not re.match(r"^subnet-[0-9a-f]{8,17}$", s):
                raise ValueError(f"subnet_ids[{i}]: {s!r} is not a subnet id")
        return v

    @model_validator(mode="after")
    def _zones(self) -> InvalidationVpc:
        if self.availability_zones and len(self.availability_zones) != len(self.subnet_ids):
            raise ValueError("availability_zones, when given, has one zone per subnet")
        dupes = repeated(self.endpoints)
        if dupes:
            raise ValueError(f"endpoints: each service once; repeated: {', '.join(dupes)}")
        if "dynamodb" in self.endpoints and not self.route_table_ids:
            raise ValueError("route_table_ids: the DynamoDB gateway endpoint is attached to the subnets' route "
                             "tables; give them (or leave dynamodb out of endpoints)")
        if self.route_table_ids and "dynamodb" not in self.endpoints:
            raise ValueError("route_table_ids: only used by the DynamoDB gateway endpoint; add dynamodb to endpoints")
        for i, table in enumerate(self.route_table_ids):
            if not re.match(r"^rtb-[0-9a-f]{8,17}$", table):
                raise ValueError(f"route_table_ids.{i}: {table!r} is not a route table id")
        return self


class InvalidationConfig(StrictModel):
    caches: list[CacheConfig] = Field(default_factory=list)
    cdn: list[CdnConfig] = Field(default_factory=list)
    vpc: InvalidationVpc | None = None
    health_every_minutes: int = Field(default=5, ge=1, le=60, description="the cache health collector's period")

    @model_validator(mode="after")
    def _consistent(self) -> InvalidationConfig:
        for what, names in (("cache", [c.name for c in self.caches]), ("cdn", [c.name for c in self.cdn])):
            dupes = repeated(names)
            if dupes:
                raise ValueError(f"{what} names must be unique; repeated: {', '.join(dupes)}")
        ids = [c.distribution_id for c in self.cdn if c.distribution_id != MANAGED]
        dupes = repeated(ids)
        if dupes:
            raise ValueError(f"each distribution may have one cdn entry; repeated: {', '.join(dupes)}")
        buckets = [c.origin.bucket for c in self.cdn if c.origin is not None and c.origin.object_events]
        dupes = repeated(buckets)
        if dupes:
            raise ValueError(f"each origin bucket's object events may feed one cdn entry; repeated: {', '.join(dupes)}")
        for i, cache in enumerate(self.caches):
            if cache.managed and self.vpc is None:
                raise ValueError(f"caches.{i}.create: a created cache lives in a VPC; give `vpc`")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.caches or self.cdn)

    @property
    def owners(self) -> list[CacheConfig | CdnConfig]:
        """Every cache and distribution: what events, alarms and schedules are configured on."""
        return [*self.caches, *self.cdn]

    def cache(self, name: str) -> CacheConfig | None:
        return next((c for c in self.caches if c.name == name), None)

    def cdn_entry(self, name: str) -> CdnConfig | None:
        return next((c for c in self.cdn if c.name == name), None)

    def cdn_for_bucket(self, bucket: str) -> CdnConfig | None:
        return next((c for c in self.cdn if c.origin is not None and c.origin.object_events
                     and c.origin.bucket == bucket), None)


class InvalidationStageConfig(StageConfig):
    """What the invalidation functions (invalidator, cdn_batcher, cache_health) validate at run time."""

    invalidation: InvalidationConfig = Field(default_factory=InvalidationConfig)
