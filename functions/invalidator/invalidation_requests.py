"""Every way to ask for an invalidation, validated into one `InvalidationRequest` before anything runs.

* console commands: `invalidate_cache` (keys, patterns, tags), `invalidate_paths` (paths, wildcards),
  `flush_cache` (with `confirm`: the cache's name);
* custom events (`ContentChanged`, `DeploymentCompleted`, ...): `detail` may carry `keys`, `patterns`, `tags`,
  `paths`, `wildcards`, and `caches` / `cdn` to restrict which configured entries act; what it does not name
  comes from the matching `on_events[].invalidate` of the config;
* S3 `Object Created` / `Object Deleted` events of an origin bucket: the key mapped to CDN paths by its rules;
* schedules: the configured schedule's `invalidate`;
* continuations of a long invalidation (the invalidator's own queue).

Alarms need no validation: what they invalidate is in the config. Errors name the field as it appears in the
payload (`patterns[0]`, `detail.tags`, `paths[2]`); nothing is sent when one is found.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from invalidator.cache_tags import CacheTagError, validate_name
from invalidator.cdn_messages import PathsError, validate_cdn_paths
from invalidator.redis_invalidation import InvalidationInputError, validate_pattern
from reflex_core.actions import Skip
from reflex_core.invalidation_config import (
    CacheConfig,
    CdnConfig,
    InvalidationSpec,
    InvalidationStageConfig,
    TriggerEvent,
)
from reflex_core.triggers import Trigger, TriggerError

S3_SOURCE = "aws.s3"
S3_DETAIL_TYPES = ("Object Created", "Object Deleted")
CONTINUATION_QUEUE = "continuation"
CONTINUE_KIND = "continue"


# --------------------------------------------------------------------------- the validated request


@dataclass(frozen=True)
class CacheWork:
    cache: str
    keys: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    flush: bool = False
    confirm: str | None = None
    sweep: bool = False  # also finish tag purges failed runs left behind (a schedule's periodic sweep)


@dataclass(frozen=True)
class CdnWork:
    cdn: str
    paths: tuple[str, ...] = ()
    wildcards: tuple[str, ...] = ()
    origin_key: str | None = None  # the S3 object the paths were mapped from


@dataclass(frozen=True)
class Continuation:
    cache: str
    operation: Literal["pattern", "tag", "keys"]
    target: str
    run_id: str
    runs: int
    attempt: int
    reason: str
    keys: tuple[str, ...] = ()
    requested_by: str = ""
    keys_label: str = ""


@dataclass(frozen=True)
class InvalidationRequest:
    caches: tuple[CacheWork, ...] = ()
    cdn: tuple[CdnWork, ...] = ()
    continuation: Continuation | None = None
    dry_run: bool = False
    reason: str = ""
    skips: tuple[Skip, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------- console commands


class _Command(BaseModel):
    # Built at the first console payload, not at import: most processes never see one (docs/benchmarks.md).
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    reason: str = Field(min_length=3, max_length=500)
    operator: str = Field(min_length=1, max_length=128)
    dry_run: bool = False
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


class InvalidateCacheCommand(_Command):
    command: Literal["invalidate_cache"]
    cache: str = Field(min_length=1)
    keys: list[Any] | None = None
    patterns: list[Any] | None = None
    tags: list[Any] | None = None


class InvalidatePathsCommand(_Command):
    command: Literal["invalidate_paths"]
    cdn: str = Field(min_length=1)
    paths: list[Any] | None = None
    wildcards: list[Any] | None = None


class FlushCacheCommand(_Command):
    command: Literal["flush_cache"]
    cache: str = Field(min_length=1)
    confirm: str = Field(min_length=1, max_length=64, description="the cache's name, repeated")


InvalidatorCommand = Annotated[InvalidateCacheCommand | InvalidatePathsCommand | FlushCacheCommand,
                               Field(discriminator="command")]
_COMMANDS: TypeAdapter[Any] = TypeAdapter(InvalidatorCommand, config=ConfigDict(defer_build=True))
COMMAND_NAMES = ("invalidate_cache", "invalidate_paths", "flush_cache")


def _errors(err: ValidationError, prefix: str, tag: str | None) -> list[str]:
    out = []
    for e in err.errors():
        loc = e["loc"][1:] if tag is not None and e["loc"][:1] == (tag,) else e["loc"]
        out.append(f"{prefix}{'.'.join(str(p) for p in loc) or '<root>'}: {e['msg']}")
    return out


def console_request(payload: dict[str, Any] | None, config: InvalidationStageConfig) -> InvalidationRequest:
    if not isinstance(payload, dict):
        raise TriggerError(["<root>: expected a JSON object with a 'command'"])
    command = payload.get("command")
    if command not in COMMAND_NAMES:
        raise TriggerError([f"command: unknown command {command!r}; expected one of {', '.join(COMMAND_NAMES)}"])
    try:
        cmd = _COMMANDS.validate_python(payload)
    except ValidationError as err:
        raise TriggerError(_errors(err, "", str(command))) from None
    why = f"{cmd.command} by {cmd.operator}: {cmd.reason}"
    if isinstance(cmd, InvalidatePathsCommand):
        cdn = _known_cdn(config, cmd.cdn, "cdn")
        paths = cdn_work(cdn, cmd.paths, cmd.wildcards, prefix="")
        return InvalidationRequest(cdn=(paths,), dry_run=cmd.dry_run, reason=why)
    cache = _known_cache(config, cmd.cache, "cache")
    if isinstance(cmd, FlushCacheCommand):
        return InvalidationRequest(caches=(CacheWork(cache=cache.name, flush=True, confirm=cmd.confirm),),
                                   dry_run=cmd.dry_run, reason=why)
    work = cache_work(cache, cmd.keys, cmd.patterns, cmd.tags, prefix="")
    return InvalidationRequest(caches=(work,), dry_run=cmd.dry_run, reason=why)


def _known_cache(config: InvalidationStageConfig, name: str, field_name: str) -> CacheConfig:
    cache = config.invalidation.cache(name)
    if cache is None:
        known = ", ".join(c.name for c in config.invalidation.caches) or "none"
        raise TriggerError([f"{field_name}: no cache named {name!r} (configured: {known})"])
    return cache


def _known_cdn(config: InvalidationStageConfig, name: str, field_name: str) -> CdnConfig:
    cdn = config.invalidation.cdn_entry(name)
    if cdn is None:
        known = ", ".join(c.name for c in config.invalidation.cdn) or "none"
        raise TriggerError([f"{field_name}: no cdn entry named {name!r} (configured: {known})"])
    return cdn


# --------------------------------------------------------------------------- content validation

# Payload limits, part of validation (errors name the field): a request the invalidator accepts is one whose
# decisions, audit and continuations stay within DynamoDB's and SQS's item limits.
MAX_KEY_BYTES = 1024
MAX_KEYS_BYTES = 4 * 1024 * 1024
MAX_PATTERNS_PER_REQUEST = 50
MAX_TAGS_PER_REQUEST = 100
_MAX_ERRORS = 20


def _utf8_size(text: str) -> int | None:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None



def cache_work(cache: CacheConfig, keys: Any, patterns: Any, tags: Any, *, prefix: str) -> CacheWork:
    """Validate what to invalidate in one cache. A list given but empty is an error, not a no-op."""
    errors: list[str] = []
    given = {"keys": keys, "patterns": patterns, "tags": tags}
    for name, value in given.items():
        if value is None:
            continue
        if not isinstance(value, list):
            errors.append(f"{prefix}{name}: must be a list of strings")
        elif not value:
            errors.append(f"{prefix}{name}: must not be empty")
    if all(v is None for v in given.values()):
        errors.append(f"{prefix}patterns: give at least one of keys, patterns or tags")
    if errors:
        raise TriggerError(errors)
    key_list = [k for k in keys or []]
    total_bytes = 0
    for i, key in enumerate(key_list):
        if not isinstance(key, str) or not key:
            errors.append(f"{prefix}keys[{i}]: must be a non-empty string")
            continue
        size = _utf8_size(key)
        if size is None:
            errors.append(f"{prefix}keys[{i}]: is not valid Unicode (a lone surrogate such as \\ud800); a key must "
                          "be encodable as UTF-8")
        elif size > MAX_KEY_BYTES:
            errors.append(f"{prefix}keys[{i}]: is {size} bytes, more than the {MAX_KEY_BYTES} allowed per key")
        else:
            total_bytes += size
        if len(errors) >= _MAX_ERRORS:
            break
    if len(set(map(str, key_list))) > cache.max_keys_per_request:
        errors.append(f"{prefix}keys: {len(set(map(str, key_list)))} keys, more than the "
                      f"{cache.max_keys_per_request} allowed per request for cache {cache.name!r}")
    if total_bytes > MAX_KEYS_BYTES:
        errors.append(f"{prefix}keys: {total_bytes} bytes in all, more than the {MAX_KEYS_BYTES} allowed per request")
    for name, value, most in (("patterns", patterns, MAX_PATTERNS_PER_REQUEST), ("tags", tags, MAX_TAGS_PER_REQUEST)):
        if value and len(value) > most:
            errors.append(f"{prefix}{name}: {len(value)} {name}, more than the {most} allowed per request "
                          "(split the request, or use a pattern or a tag that covers them)")
    if errors:
        raise TriggerError(errors)
    for i, pattern in enumerate(patterns or []):
        try:
            validate_pattern(pattern, field=f"{prefix}patterns[{i}]", allow_unanchored=cache.allow_flush)
        except InvalidationInputError as err:
            errors.append(str(err))
    for i, tag in enumerate(tags or []):
        try:
            validate_name(tag, f"{prefix}tags[{i}]")
        except CacheTagError as err:
            errors.append(str(err))
    if errors:
        raise TriggerError(errors)
    return CacheWork(cache=cache.name, keys=tuple(dict.fromkeys(key_list)),
                     patterns=tuple(dict.fromkeys(patterns or [])), tags=tuple(dict.fromkeys(tags or [])))


def cdn_work(cdn: CdnConfig, paths: Any, wildcards: Any, *, prefix: str, origin_key: str | None = None) -> CdnWork:
    errors = []
    for name, value in (("paths", paths), ("wildcards", wildcards)):
        if value is not None and not isinstance(value, list):
            errors.append(f"{prefix}{name}: must be a list of strings")
        elif value is not None and not value:
            errors.append(f"{prefix}{name}: must not be empty")
    if errors:
        raise TriggerError(errors)
    try:
        clean_paths, clean_wildcards = validate_cdn_paths(cdn, paths or [], wildcards or [], prefix=prefix)
    except PathsError as err:
        raise TriggerError(err.errors) from None
    return CdnWork(cdn=cdn.name, paths=tuple(clean_paths), wildcards=tuple(clean_wildcards), origin_key=origin_key)


def spec_cache_work(cache: CacheConfig, spec: InvalidationSpec) -> CacheWork:
    return CacheWork(cache=cache.name, keys=tuple(spec.keys), patterns=tuple(spec.patterns), tags=tuple(spec.tags))


def spec_cdn_work(cdn: CdnConfig, spec: InvalidationSpec) -> CdnWork:
    return CdnWork(cdn=cdn.name, paths=tuple(spec.paths), wildcards=tuple(spec.wildcards))


# --------------------------------------------------------------------------- events


_CACHE_FIELDS = ("keys", "patterns", "tags")
_CDN_FIELDS = ("paths", "wildcards")


def _matching(entries: list[Any], source: str, detail_type: str) -> list[tuple[Any, TriggerEvent]]:
    out = []
    for entry in entries:
        match = next((m for m in entry.on_events if m.source == source and m.detail_type == detail_type), None)
        if match is not None:
            out.append((entry, match))
    return out


def _names_filter(detail: dict[str, Any], key: str, known: list[str]) -> set[str] | None:
    value = detail.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or any(not isinstance(v, str) for v in value):
        raise TriggerError([f"detail.{key}: must be a list of names"])
    unknown = [f"detail.{key}[{i}]: no {key[:-1] if key == 'caches' else key} entry named {v!r} "
               f"(configured: {', '.join(known) or 'none'})" for i, v in enumerate(value) if v not in known]
    if unknown:
        raise TriggerError(unknown)
    return set(value)


def event_request(trigger: Trigger, config: InvalidationStageConfig) -> InvalidationRequest | None:
    """None when no cache or distribution listens to this event (audited as `skipped:no-policy`)."""
    ev = trigger.event
    assert ev is not None
    if ev.source == S3_SOURCE and ev.detail_type in S3_DETAIL_TYPES:
        return s3_request(trigger, config)
    inv = config.invalidation
    caches = _matching(inv.caches, ev.source, ev.detail_type)
    cdns = _matching(inv.cdn, ev.source, ev.detail_type)
    if not caches and not cdns:
        return None
    detail = ev.detail
    only_caches = _names_filter(detail, "caches", [c.name for c, _ in caches])
    only_cdn = _names_filter(detail, "cdn", [c.name for c, _ in cdns])
    cache_out: list[CacheWork] = []
    cdn_out: list[CdnWork] = []
    skips: list[Skip] = []
    asks_cache = any(detail.get(f) is not None for f in _CACHE_FIELDS)
    asks_cdn = any(detail.get(f) is not None for f in _CDN_FIELDS)
    for cache, match in caches:
        if only_caches is not None and cache.name not in only_caches:
            continue
        if asks_cache:
            cache_out.append(cache_work(cache, *(detail.get(f) for f in _CACHE_FIELDS), prefix="detail."))
        elif match.invalidate is not None and match.invalidate.for_cache:
            cache_out.append(spec_cache_work(cache, match.invalidate))
        else:
            skips.append(Skip(reason="nothing-to-invalidate", policy=f"cache:{cache.name}", quiet=True,
                              detail="the event names no keys, patterns or tags and the config gives none"))
    for cdn, match in cdns:
        if only_cdn is not None and cdn.name not in only_cdn:
            continue
        if asks_cdn:
            cdn_out.append(cdn_work(cdn, detail.get("paths"), detail.get("wildcards"), prefix="detail."))
        elif match.invalidate is not None and match.invalidate.for_cdn:
            cdn_out.append(spec_cdn_work(cdn, match.invalidate))
        else:
            skips.append(Skip(reason="nothing-to-invalidate", policy=f"cdn:{cdn.name}", quiet=True,
                              detail="the event names no paths and the config gives none"))
    return InvalidationRequest(caches=tuple(cache_out), cdn=tuple(cdn_out), skips=tuple(skips),
                               reason=f"{ev.detail_type} from {ev.source}")


def s3_request(trigger: Trigger, config: InvalidationStageConfig) -> InvalidationRequest | None:
    ev = trigger.event
    assert ev is not None
    bucket = (ev.detail.get("bucket") or {}).get("name") if isinstance(ev.detail.get("bucket"), dict) else None
    obj = ev.detail.get("object")
    key = obj.get("key") if isinstance(obj, dict) else None
    errors = []
    if not isinstance(bucket, str) or not bucket:
        errors.append("detail.bucket.name: required (the origin bucket)")
    if not isinstance(key, str) or not key:
        errors.append("detail.object.key: required (the object that changed)")
    if errors:
        raise TriggerError(errors)
    assert isinstance(bucket, str) and isinstance(key, str)
    cdn = config.invalidation.cdn_for_bucket(bucket)
    if cdn is None or cdn.origin is None:
        return None
    why = f"{ev.detail_type}: s3://{bucket}/{key}"
    paths = cdn.origin.paths_for(key)
    if not paths:
        return InvalidationRequest(reason=why, skips=(Skip(
            reason="unmapped-key", policy=f"cdn:{cdn.name}", target_key=f"cdn/{cdn.name}/queue",
            detail=f"no path rule of cdn {cdn.name!r} maps the key {key[:200]!r}"),))
    work = cdn_work(cdn, paths, None, prefix="detail.object.key -> ", origin_key=key)
    return InvalidationRequest(cdn=(work,), reason=why)


# --------------------------------------------------------------------------- schedules


def schedule_request(trigger: Trigger, config: InvalidationStageConfig) -> InvalidationRequest:
    sched = trigger.schedule
    assert sched is not None
    if sched.operation != "invalidate":
        raise TriggerError([f"reflex_schedule.operation: unknown operation {sched.operation!r} (invalidate)"])
    scope = sched.params.get("scope")
    name = sched.params.get("schedule")
    if scope not in ("cache", "cdn"):
        raise TriggerError(["reflex_schedule.params.scope: must be 'cache' or 'cdn'"])
    owner = sched.policy or ""
    if scope == "cache":
        cache = _known_cache(config, owner, "reflex_schedule.policy")
        scheduled = next((s for s in cache.schedules if s.name == name), None)
        if scheduled is None:
            raise TriggerError([f"reflex_schedule.params.schedule: cache {owner!r} has no schedule {name!r}"])
        work = spec_cache_work(cache, scheduled.invalidate)
        if scheduled.sweep_purges:
            work = replace(work, sweep=True)
        return InvalidationRequest(caches=(work,), reason=f"schedule {name}")
    cdn = _known_cdn(config, owner, "reflex_schedule.policy")
    spec = next((s.invalidate for s in cdn.schedules if s.name == name), None)
    if spec is None:
        raise TriggerError([f"reflex_schedule.params.schedule: cdn {owner!r} has no schedule {name!r}"])
    return InvalidationRequest(cdn=(spec_cdn_work(cdn, spec),), reason=f"schedule {name}")


# --------------------------------------------------------------------------- continuations


class ContinuationMessage(BaseModel):
    """The body of a continuation: which run of which target to continue, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["continue"] = "continue"
    cache: str = Field(min_length=1, max_length=64)
    operation: Literal["pattern", "tag", "keys"]
    target: str = Field(min_length=1, max_length=2048)
    run_id: str = Field(min_length=1, max_length=64)
    runs: int = Field(ge=0)
    attempt: int = Field(ge=0)
    reason: Literal["time-budget", "retry", "follow-up"]
    # Key lists travel by reference (in the state table, see ProgressStore.put_keys); `keys` is read for
    # messages queued before that. `keys_label` names the list's target (`redis/<cache>/keys/<label>`).
    keys: list[str] = Field(default_factory=list)
    keys_label: str = Field(default="", max_length=64)
    requested_by: str = Field(default="", max_length=300)


def continuation_request(trigger: Trigger, config: InvalidationStageConfig) -> InvalidationRequest:
    queued = trigger.queue
    assert queued is not None
    if queued.kind != CONTINUE_KIND:
        raise TriggerError([f"reflex_queue.kind: unknown message kind {queued.kind!r} ({CONTINUE_KIND})"])
    try:
        msg = ContinuationMessage.model_validate(queued.body)
    except ValidationError as err:
        raise TriggerError(_errors(err, "reflex_queue.body.", None)) from None
    _known_cache(config, msg.cache, "reflex_queue.body.cache")
    return InvalidationRequest(continuation=Continuation(
        cache=msg.cache, operation=msg.operation, target=msg.target, run_id=msg.run_id, runs=msg.runs,
        attempt=msg.attempt, reason=msg.reason, keys=tuple(msg.keys), requested_by=msg.requested_by,
        keys_label=msg.keys_label),
        reason=f"continuation ({msg.reason}) of run {msg.run_id[:8]}")
