"""Invalidation scenarios (`reaction: invalidator`): events, console commands and queue deliveries played through the
real invalidator, CDN batcher and cache health handlers, against moto and, when it is reachable, the local Redis.

    name: content_change
    reaction: invalidator
    start: 2026-11-26T09:00:00Z
    config: config/dev.yaml
    redis: [{cache: catalog, tagged: [{key: "page:/products/42", tags: [product:42]}]}]
    steps:
      - {t: "00:00", id: first, event: {source: app.content, detail_type: ContentChanged, detail: {paths: [/a]}}}
      - {t: "00:30", redeliver: first, expect: {outcome: "skipped:duplicate-delivery"}}
      - {t: "01:00", batch: site, expect: {invalidations: 1}}       # the batching window of cdn `site` closes
      - {t: "01:10", tag step with needs_redis: true ...}

Steps: `event` (a custom EventBridge event), `console` (a console payload), `redeliver` (the same event again),
`batch` (the SQS event source mapping hands the distribution's queue to the batcher: due messages only),
`continuations` (the continuation queue, one message per invocation, until empty), `collect` (the cache health
collector). `expect` checks an outcome, a detail, the CloudFront invalidations made so far, the paths sent and
the keys removed by the step.

Redis: the config's hosts are not reachable here, so every cache is the local server at 127.0.0.1:6379 when it
answers, under a tag namespace and key prefix of the run's own (removed at the end). When it does not answer,
steps marked `needs_redis` are shown as skipped, saying so, and their expectations are not checked.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from reflex_core.config import ReflexConfig, load_config_file
from simulator.scenario import (
    ROOT,
    CheckResult,
    DecisionView,
    ExpectationResults,
    OneKindStep,
    ScenarioError,
    decision_views,
    format_offset,
    parse_offset,
    powertools_logs_to,
)

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
STEP_KINDS = ("event", "console", "redeliver", "batch", "continuations", "collect")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSpec(_Strict):
    source: str = Field(min_length=1)
    detail_type: str = Field(min_length=1)
    detail: dict[str, Any] = Field(default_factory=dict)


class TaggedEntry(_Strict):
    key: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    ttl_s: int = Field(default=3600, ge=1)


class RedisSeed(_Strict):
    cache: str = Field(min_length=1)
    tagged: list[TaggedEntry] = Field(default_factory=list)


class InvalidationExpect(_Strict):
    outcome: str | None = None
    detail: str | None = None
    invalidations: int | None = Field(default=None, ge=0, description="CloudFront invalidations made so far")
    paths_sent: int | None = Field(default=None, ge=0, description="paths in the invalidations of this step")
    removed: int | None = Field(default=None, ge=0, description="Redis keys removed by this step")
    completed: bool | None = Field(default=None, description="an invalidation was seen Completed in this step")

    @model_validator(mode="after")
    def _something(self) -> InvalidationExpect:
        if all(v is None for v in self.model_dump().values()):
            raise ValueError("give at least one of outcome, detail, invalidations, paths_sent, removed, completed")
        return self


class InvalidationStep(OneKindStep):
    step_kinds = STEP_KINDS

    t: float
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    note: str = ""
    event: EventSpec | None = None
    console: dict[str, Any] | None = None
    redeliver: str | None = None
    batch: str | None = None
    continuations: Literal[True] | None = None
    collect: Literal[True] | None = None
    needs_redis: bool = False
    expect: InvalidationExpect | None = None

    @field_validator("t", mode="before")
    @classmethod
    def _offset(cls, v: Any) -> float:
        return parse_offset(v)



class InvalidationScenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    reaction: Literal["invalidator"]
    description: str = ""
    start: datetime
    config: str | None = None
    cloudfront_propagation_s: float = Field(default=60.0, ge=0, description="how long an invalidation is InProgress")
    origin_objects: dict[str, list[str]] = Field(default_factory=dict, description="origin bucket keys per cdn")
    redis: list[RedisSeed] = Field(default_factory=list)
    steps: list[InvalidationStep] = Field(min_length=1)

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @model_validator(mode="after")
    def _ordered(self) -> InvalidationScenario:
        seen: set[str] = set()
        previous = 0.0
        for i, step in enumerate(self.steps):
            if step.t < previous:
                raise ValueError(f"steps[{i}].t: before the previous step; steps run in time order")
            previous = step.t
            if step.redeliver is not None and step.redeliver not in seen:
                raise ValueError(f"steps[{i}].redeliver: no earlier step with id {step.redeliver!r}")
            if step.id:
                seen.add(step.id)
        return self


def is_invalidation_scenario(path: str | Path) -> bool:
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and data.get("reaction") == "invalidator"


def load_invalidation_scenario(path: str | Path) -> InvalidationScenario:
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return InvalidationScenario.model_validate(data)
    except (OSError, yaml.YAMLError) as err:
        raise ScenarioError(f"{p}: cannot read the scenario: {err}") from None
    except ValidationError as err:
        lines = [f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {str(e['msg']).removeprefix('Value error, ')}"
                 for e in err.errors()]
        raise ScenarioError(f"{p}: invalid scenario\n  " + "\n  ".join(lines)) from None


# --------------------------------------------------------------------------- the run


@dataclass
class StepEntry:
    offset_s: float
    at: datetime
    step_id: str | None
    kind: str
    label: str
    note: str = ""
    status: str = ""
    skipped: str = ""
    decisions: list[DecisionView] = field(default_factory=list)
    invalidations: list[dict[str, Any]] = field(default_factory=list)
    completed: list[float] = field(default_factory=list)
    removed: int = 0
    checks: list[CheckResult] = field(default_factory=list)
    error: str | None = None
    event: dict[str, Any] | None = None

    @property
    def offset(self) -> str:
        return format_offset(self.offset_s)

    def to_json(self) -> dict[str, Any]:
        return {"offset": self.offset, "at": self.at.isoformat().replace("+00:00", "Z"), "step": self.step_id,
                "kind": self.kind, "label": self.label, "note": self.note or None, "status": self.status,
                "skipped": self.skipped or None, "error": self.error,
                "decisions": [{k: v for k, v in d.__dict__.items() if v is not None} for d in self.decisions],
                "invalidations": self.invalidations, "completed_after_s": self.completed, "removed": self.removed,
                "expectations": [c.__dict__ for c in self.checks], "event": self.event}


@dataclass
class InvalidationRun(ExpectationResults):
    scenario: InvalidationScenario
    config_path: str
    redis_note: str
    entries: list[StepEntry]
    audit: list[dict[str, Any]]
    invalidations: list[dict[str, Any]]
    handler_output: str = ""

    def timeline_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario.name, "description": self.scenario.description,
                "start": self.scenario.start.isoformat().replace("+00:00", "Z"), "config": self.config_path,
                "redis": self.redis_note, "entries": [e.to_json() for e in self.entries],
                "cloudfront_invalidations": self.invalidations,
                "expectations": {"passed": sum(c.passed for c in self.checks),
                                 "failed": sum(not c.passed for c in self.checks)}}


def _redis_reachable() -> bool:
    try:
        import redis

        return bool(redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=0.5,
                                socket_timeout=0.5).ping())
    except Exception:  # noqa: BLE001 - any failure means: not usable here
        return False


class InvalidationScenarioRunner:
    """Plays a scenario inside an active `mock_aws()`."""

    def __init__(self, scenario: InvalidationScenario, config: ReflexConfig) -> None:
        self.scenario = scenario
        self.run_id = uuid.uuid4().hex[:8]
        self.redis_up = _redis_reachable()
        self.prefix = f"sim:{self.run_id}:"
        namespace = f"sim-{self.run_id}"
        caches = [c.model_copy(update={"tag_namespace": namespace}) for c in config.invalidation.caches]
        self.config = config.model_copy(update={"invalidation": config.invalidation.model_copy(
            update={"caches": caches})})
        self.namespace = namespace
        self._sent: dict[str, dict[str, Any]] = {}
        self._seen_audit: set[str] = set()
        self._output = io.StringIO()

    def run(self) -> InvalidationRun:
        from reflex_core.clock import VirtualClock
        from simulator.aws_world import create_world
        from simulator.invalidation_world import create_invalidation_world, local_redis_factory

        self.clock = VirtualClock(self.scenario.start)
        world = create_world(self.config)
        world.runtime(self.clock)
        factory = local_redis_factory(REDIS_HOST, REDIS_PORT) if self.redis_up else _unreachable_factory
        self.env = create_invalidation_world(world, self.clock, redis_factory=factory,
                                             propagation_s=self.scenario.cloudfront_propagation_s,
                                             origin_objects=self.scenario.origin_objects)
        entries: list[StepEntry] = []
        try:
            if self.redis_up:
                self._seed()
            with powertools_logs_to(self._output):
                for step in self.scenario.steps:
                    when = self.scenario.start + timedelta(seconds=step.t)
                    if when > self.clock.now():
                        self.clock.set(when)
                    entries.append(self._step(step))
        finally:
            if self.redis_up:
                self._cleanup()
        requests = [{"id": r["id"], "paths": r["paths"], "status": self.env.cloudfront.get_invalidation(
            DistributionId=r["distribution"], Id=r["id"])["Invalidation"]["Status"]}
            for r in self.env.cloudfront.requests]
        note = (f"local Redis {REDIS_HOST}:{REDIS_PORT} (tag namespace {self.namespace}, keys under {self.prefix})"
                if self.redis_up else
                f"NO local Redis at {REDIS_HOST}:{REDIS_PORT}: steps that need Redis were skipped (start redis-server "
                "to run them)")
        return InvalidationRun(scenario=self.scenario, config_path="", redis_note=note, entries=entries,
                               audit=world.audit_records(), invalidations=requests,
                               handler_output=self._output.getvalue())

    # ------------------------------------------------------------------ Redis
    def _client(self) -> Any:
        import redis

        return redis.Redis(host=REDIS_HOST, port=REDIS_PORT)

    def _seed(self) -> None:
        from invalidator.cache_tags import TaggedCache

        cache = TaggedCache(self._client(), namespace=self.namespace)
        for seed in self.scenario.redis:
            for entry in seed.tagged:
                cache.set(self.prefix + entry.key, f"<cached {entry.key}>", tags=entry.tags, ttl_s=entry.ttl_s)

    def _cleanup(self) -> None:
        client = self._client()
        for match in (self.prefix + "*", f"tag:{{{self.namespace}:*"):
            keys = list(client.scan_iter(match=match, count=1000))
            if keys:
                client.unlink(*keys)

    # ------------------------------------------------------------------ steps
    def _invoke(self, reaction: str, event: Any) -> tuple[dict[str, Any], str]:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            response = self.env.invoke(reaction, event)
        self._output.write(buffer.getvalue())
        return response, buffer.getvalue()

    def _step(self, step: InvalidationStep) -> StepEntry:
        entry = StepEntry(offset_s=step.t, at=self.clock.now(), step_id=step.id, kind=step.kind, label="",
                          note=step.note)
        requests_before = len(self.env.cloudfront.requests)
        if step.needs_redis and not self.redis_up:
            entry.label = self._label(step)
            entry.skipped = f"SKIPPED: no local Redis at {REDIS_HOST}:{REDIS_PORT}"
            return entry
        output = ""
        try:
            if step.event is not None or step.redeliver is not None or step.console is not None:
                event = self._event(step)
                entry.event = event
                response, output = self._invoke("invalidator", event)
                entry.status = str(response.get("status", "?")) + (" (duplicate)" if response.get("duplicate") else "")
                entry.label = self._label(step)
                entry.decisions = self._decisions(response)
            elif step.batch is not None:
                url = self.env.cdn_queue_urls[step.batch]
                buffer = io.StringIO()
                with contextlib.redirect_stdout(buffer):
                    response_or_none = self.env.deliver(url, "cdn_batcher", due=self.env.due())
                output = buffer.getvalue()
                self._output.write(output)
                entry.label = f"batching window of {step.batch} closes: its queue to the batcher"
                tracking = sum(1 for b in self.env.queue_bodies(url) if b.get("kind") == "track")
                failed = len(response_or_none.get("batchItemFailures", [])) if response_or_none else 0
                entry.status = "; ".join(part for part in (
                    "nothing due" if response_or_none is None else "",
                    f"{failed} message(s) back to the queue" if failed else "",
                    f"tracking: {tracking} invalidation(s) still in progress, checked again later" if tracking else "",
                ) if part) or "delivered"
                entry.decisions = self._decisions({})
            elif step.continuations:
                buffer = io.StringIO()
                with contextlib.redirect_stdout(buffer):
                    responses = self.env.run_continuations()
                output = buffer.getvalue()
                self._output.write(output)
                entry.label = "continuation queue, one message per invocation"
                entry.status = f"{len(responses)} continuation(s)"
                entry.decisions = self._decisions({})
            else:
                response, output = self._invoke("cache_health", {"reflex_schedule": {
                    "name": "collect", "operation": "collect", "execution_id": str(uuid.uuid4())}})
                entry.label = "cache health collector (schedule)"
                entry.status = json.dumps(response.get("caches", {}))[:200]
        except Exception as err:  # noqa: BLE001 - Lambda would retry; the timeline shows what was raised
            entry.status = "raised"
            entry.error = f"{type(err).__name__}: {str(err)[:300]}"
        entry.invalidations = [{"id": r["id"], "paths": len(r["paths"])}
                               for r in self.env.cloudfront.requests[requests_before:]]
        entry.completed = [float(m["CdnInvalidationSeconds"][0]) for m in emf_metrics(output, "CdnInvalidationSeconds")]
        entry.removed = sum(int((d.after or {}).get("removed", 0)) for d in entry.decisions
                            if d.operation in ("invalidate_keys", "invalidate_pattern", "invalidate_tag", "flush"))
        if step.expect is not None:
            entry.checks = self._check(step.expect, entry)
        return entry

    def _event(self, step: InvalidationStep) -> dict[str, Any]:
        if step.redeliver is not None:
            return copy.deepcopy(self._sent[step.redeliver])
        if step.console is not None:
            event = dict(step.console)
        else:
            assert step.event is not None
            event = {"version": "0", "id": str(uuid.uuid4()), "detail-type": step.event.detail_type,
                     "source": step.event.source, "account": "123456789012",
                     "time": self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ"), "region": "us-east-1", "resources": [],
                     "detail": step.event.detail}
        if step.id:
            self._sent[step.id] = copy.deepcopy(event)
        return event

    def _label(self, step: InvalidationStep) -> str:
        if step.event is not None:
            what = ", ".join(f"{k}={v}" for k, v in step.event.detail.items())
            return f"{step.event.source}/{step.event.detail_type} {what}"[:90]
        if step.console is not None:
            return f"console {step.console.get('command')} by {step.console.get('operator', '?')}"
        if step.redeliver is not None:
            return f"redelivery of '{step.redeliver}' (identical event)"
        return step.kind

    def _decisions(self, response: dict[str, Any]) -> list[DecisionView]:
        records = {r["id"]: r for r in self.env.world.audit_records() if r["id"] not in self._seen_audit}
        self._seen_audit.update(records)
        return decision_views(response, records)

    def _check(self, expect: InvalidationExpect, entry: StepEntry) -> list[CheckResult]:
        checks = []
        outcomes = [d.outcome for d in entry.decisions]
        if expect.outcome is not None:
            checks.append(CheckResult("outcome", expect.outcome, outcomes, expect.outcome in outcomes))
        if expect.detail is not None:
            details = [d.detail for d in entry.decisions]
            checks.append(CheckResult("detail", expect.detail, details, any(expect.detail in d for d in details)))
        if expect.invalidations is not None:
            total = len(self.env.cloudfront.requests)
            checks.append(CheckResult("invalidations", expect.invalidations, total, total == expect.invalidations))
        if expect.paths_sent is not None:
            sent = sum(i["paths"] for i in entry.invalidations)
            checks.append(CheckResult("paths_sent", expect.paths_sent, sent, sent == expect.paths_sent))
        if expect.removed is not None:
            checks.append(CheckResult("removed", expect.removed, entry.removed, entry.removed == expect.removed))
        if expect.completed is not None:
            seen = bool(entry.completed)
            checks.append(CheckResult("completed", expect.completed, seen, seen == expect.completed))
        return checks


def _unreachable_factory(*_: Any) -> Any:
    import redis

    raise redis.ConnectionError(f"no local Redis at {REDIS_HOST}:{REDIS_PORT}")


def emf_metrics(output: str, name: str) -> list[dict[str, Any]]:
    """The EMF lines of a metric in captured stdout."""
    found = []
    for line in output.splitlines():
        if line.startswith("{") and f'"{name}"' in line:
            with contextlib.suppress(json.JSONDecodeError):
                data = json.loads(line)
                if name in data:
                    found.append(data)
    return found


def run_invalidation_scenario(scenario: InvalidationScenario, config: ReflexConfig,
                              config_path: str = "") -> InvalidationRun:
    from moto import mock_aws

    from invalidator.invalidation_runtime import install_invalidation_runtime
    from reflex_core.runtime import install_runtime

    try:
        with mock_aws():
            result = InvalidationScenarioRunner(scenario, config).run()
    finally:
        install_runtime(None)
        install_invalidation_runtime(None)
    result.config_path = config_path
    return result


def run_invalidation_file(path: str | Path, config_override: str | None = None) -> InvalidationRun:
    scenario = load_invalidation_scenario(path)
    given = config_override or scenario.config
    if not given:
        raise ScenarioError("no config: give --config PATH or `config:` in the scenario")
    candidates = [Path(given)] if Path(given).is_absolute() else [Path.cwd() / given, Path(path).parent / given,
                                                                 ROOT / given]
    config_path = next((c for c in candidates if c.is_file()), None)
    if config_path is None:
        raise ScenarioError(f"config file {given} not found")
    return run_invalidation_scenario(scenario, load_config_file(config_path), str(config_path))


# --------------------------------------------------------------------------- rendering


def render_run(run: InvalidationRun) -> str:
    s = run.scenario
    lines = [f"Reflex simulator: {s.name}   (config {run.config_path or '?'}, invalidation)"]
    lines += [f"  {line}" for line in s.description.strip().splitlines()]
    lines.append(f"  start {s.start.strftime('%Y-%m-%d %H:%M:%S')} UTC; CloudFront invalidations take "
                 f"{s.cloudfront_propagation_s:g}s; Redis: {run.redis_note}")
    lines.append("")
    header = ("T+", "UTC", "STEP", "TRIGGER", "DECISION", "DETAIL", "CHECK")
    rows = [header]
    for e in run.entries:
        check = "" if not e.checks else ("ok" if all(c.passed for c in e.checks) else "FAIL")
        first = True
        extra = [f"CreateInvalidation {i['id']}: {i['paths']} path(s)" for i in e.invalidations]
        extra += [f"invalidation completed after {c:g}s (CdnInvalidationSeconds)" for c in e.completed]
        # Quiet decisions (nothing for this cache or distribution) are logged, not audited: not shown here.
        items: list[tuple[str, str]] = [(d.outcome, _detail(d)) for d in e.decisions if d.audited]
        if e.skipped:
            items = [("skipped", e.skipped)]
        elif e.error:
            items.append(("raised", e.error))
        items += [("cloudfront", x) for x in extra]
        if not items:
            items = [(e.status or "(no decision)", "")]
        for outcome, detail in items:
            rows.append((e.offset if first else "", e.at.strftime("%H:%M:%S") if first else "",
                         (e.step_id or "") if first else "", (e.label[:60] if first else ""), outcome, detail[:110],
                         check if first else ""))
            first = False
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        lines.append(("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]).rstrip())
    lines += ["", f"Audit trail: {len(run.audit)} records"]
    by_outcome: dict[str, int] = {}
    for record in run.audit:
        key = f"{record['reaction']} {record['outcome']}"
        by_outcome[key] = by_outcome.get(key, 0) + 1
    lines += [f"  {k}: {v}" for k, v in sorted(by_outcome.items())]
    lines.append(f"CloudFront invalidations: {len(run.invalidations)}")
    lines += [f"  {i['id']}: {len(i['paths'])} path(s), {i['status']}" for i in run.invalidations]
    failed = run.failed_checks
    lines.append(f"Expectations: {len(run.checks) - len(failed)} passed, {len(failed)} failed")
    lines += [f"  FAIL {e.offset} {e.step_id or ''} {c.check}: expected {c.expected!r}, got {c.actual!r}"
              for e, c in failed]
    return "\n".join(lines)


def _detail(d: DecisionView) -> str:
    after = d.after or {}
    if d.operation in ("invalidate_keys", "invalidate_pattern", "invalidate_tag") and "removed" in after:
        return f"{after.get('kind')} {after.get('target')}: {after.get('matched')} matched, {after.get('removed')} " \
               f"removed ({after.get('status')})"
    if d.operation == "queue_cdn_paths" and after:
        return f"{after.get('queued_paths')} path(s) queued for the batching window ({after.get('coalesce_window_s')}s)"
    if d.operation == "create_invalidation" and after:
        return (f"{after.get('paths_sent')} path(s) sent in one invalidation, status {after.get('status')}; "
                f"cost est. ${(d.intended or {}).get('estimated_cost_usd', '?')}")
    return d.detail


def main(scenario_path: str, config: str | None, out_dir: str, check: bool) -> int:
    """`python -m simulator` for an invalidation scenario (see simulator/__main__.py)."""
    import sys

    from reflex_core.config import ConfigError

    try:
        run = run_invalidation_file(scenario_path, config)
    except (ScenarioError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(render_run(run))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = run.scenario.name
    files = {out / f"{name}.audit.json": run.audit, out / f"{name}.timeline.json": run.timeline_json()}
    for path, data in files.items():
        path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    (out / f"{name}.handler.log").write_text(run.handler_output, encoding="utf-8")
    print(f"Wrote {', '.join(str(p) for p in files)}, {out / f'{name}.handler.log'}")
    if check and not run.passed:
        print(f"--check: {len(run.failed_checks)} expectation(s) failed", file=sys.stderr)
        return 1
    return 0
