"""The invalidator reaction: what a trigger asks to invalidate, and how each part runs under the guardrails.

One intent per unit of work, each with its own lock (target key):

* `redis/<cache>/pattern/<pattern>`, `redis/<cache>/tag/<tag>`, `redis/<cache>/keys/<hash>`: a scan (or a key
  list) run for at most the invocation's time budget; what is left continues through the continuation queue
  with its checkpoint (`after.status: continuing`), a Redis failure resumes from the last checkpoint after a
  delay (`retrying`) until `continuation.max_retries`, then the run is audited `failed:RetriesExhausted` with the
  counts so far. A second identical request while a run is in progress is coalesced (`skipped:coalesced`): the
  running one, when it ends, starts a follow-up run from the beginning that covers it (see
  invalidation_progress.py). Key lists travel by reference (state-table items), so any continuation fits SQS.
* `redis/<cache>/flush`: only when the cache's policy allows it and the request repeats the cache's name;
  otherwise `skipped:flush-refused`.
* `cdn/<name>/queue`: CDN paths go to the distribution's coalescing queue; the batcher (functions/cdn_batcher)
  sends them. Queueing takes no lock and no rate-limit budget: concurrent events must never refuse each
  other's paths; the CloudFront call itself is guarded in the batcher.

The audit of each intent says what was matched and removed (per pattern, tag or key list) or queued.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace
from typing import Any, Literal

from aws_lambda_powertools.metrics import MetricUnit

from invalidator.cdn_messages import paths_messages, send_bodies
from invalidator.invalidation_metrics import publish
from invalidator.invalidation_progress import ProgressStore, RunProgress
from invalidator.invalidation_requests import (
    CacheWork,
    CdnWork,
    ContinuationMessage,
    InvalidationRequest,
    console_request,
    continuation_request,
    event_request,
    schedule_request,
    spec_cache_work,
    spec_cdn_work,
)
from invalidator.invalidation_runtime import current_invalidation_runtime, mark_final_failure
from invalidator.redis_invalidation import (
    FlushRefused,
    InvalidationInterrupted,
    InvalidationReport,
    check_flush_allowed,
)
from reflex_core.actions import Action, Intent, Skip
from reflex_core.alarm_tags import AlarmTagReader
from reflex_core.invalidation_config import CacheConfig, CdnConfig, InvalidationSpec, InvalidationStageConfig
from reflex_core.observability import logger
from reflex_core.pipeline import GuardSettings
from reflex_core.runtime import Runtime
from reflex_core.state_store import AlarmMemory
from reflex_core.triggers import Trigger, TriggerError

# The runtime this reaction runs with: its config is the reaction's view of the stage config.
ReactionRuntime = Runtime[InvalidationStageConfig]

SAMPLE = 20
_LABEL_MAX = 200


class RetriesExhausted(RuntimeError):
    """Redis kept failing: the run stops, audited as failed with the counts reached (no further retry)."""


class RunLimitReached(RuntimeError):
    """The invalidation needed more continuations than `continuation.max_runs` allows."""


class _UnderConfigured(set[str]):
    """The allowlist: a pattern or tag is not known in advance, the cache or distribution it concerns is.
    Membership is "under a configured cache or distribution" (`redis/<cache>/...`, `cdn/<name>/...`)."""

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and any(key.startswith(prefix) for prefix in iter(self))


def _sample(text: str) -> str:
    """One item of a response's sample: bounded (the full list is in the audit's trigger and the logs)."""
    return text if len(text) <= _LABEL_MAX else text[:_LABEL_MAX] + f"...(+{len(text) - _LABEL_MAX} chars)"


def _label(text: str) -> str:
    if len(text) <= _LABEL_MAX and "\n" not in text:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:32]


def _keys_label(keys: tuple[str, ...] | list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:16]


def _lease_s(cache: CacheConfig) -> float:
    policy = cache.continuation
    longest_wait = min(900, policy.retry_delay_s * 2 ** max(0, policy.max_retries))
    return policy.time_budget_s + longest_wait + 300


class InvalidationReaction:
    # Deleting keys again is harmless: a retry that cannot tell how far an attempt got runs it again.
    idempotent_execute = True
    name = "invalidator"
    config_model = InvalidationStageConfig

    def __init__(self) -> None:
        # What an action carries but its audit record must not (thousands of keys or paths): kept from plan()
        # to execute() of the same guarded section, and the results execute() hands to verify().
        self._payload: dict[str, Any] = {}
        # The same, as the trigger asks it (from intents()): a retry that completes an interrupted attempt runs
        # the stored action without planning again, so execute() finds the keys or paths here.
        self._requested: dict[str, Any] = {}
        self._results: dict[str, dict[str, Any]] = {}
        self._alarm_tags = AlarmTagReader()

    # ------------------------------------------------------------------ validation
    def validate(self, trigger: Trigger, rt: ReactionRuntime) -> InvalidationRequest | None:
        config = rt.config
        if trigger.kind == "console":
            return console_request(trigger.payload, config)
        if trigger.kind == "event":
            return event_request(trigger, config)
        if trigger.kind == "schedule":
            return schedule_request(trigger, config)
        if trigger.kind == "queue":
            return continuation_request(trigger, config)
        if trigger.kind == "alarm":
            return None  # what an alarm invalidates is in the config, validated at synth time
        raise TriggerError([f"<root>: the invalidator does not handle {trigger.kind} triggers"])

    # ------------------------------------------------------------------ alarms
    def _alarm_rules(self, trigger: Trigger,
                     rt: ReactionRuntime) -> list[tuple[CacheConfig | CdnConfig, InvalidationSpec]]:
        alarm = trigger.alarm
        assert alarm is not None
        out: list[tuple[CacheConfig | CdnConfig, InvalidationSpec]] = []
        owners = rt.config.invalidation.owners
        for owner in owners:
            for rule in owner.on_alarms:
                tags = None
                if rule.alarms.tags and not rule.alarms.matches(alarm.name, None):
                    tags = self._alarm_tags.tags(rt.clients.cloudwatch, alarm.arn)
                if rule.alarms.matches(alarm.name, tags):
                    out.append((owner, rule.invalidate))
        return out

    def alarm_policies(self, trigger: Trigger, rt: ReactionRuntime) -> list[str]:
        return sorted({_policy(owner) for owner, _ in self._alarm_rules(trigger, rt)})

    # ------------------------------------------------------------------ intents
    def intents(self, trigger: Trigger, request: InvalidationRequest | None, rt: ReactionRuntime,
                previous: AlarmMemory | None) -> list[Intent | Skip]:
        self._payload.clear()
        self._results.clear()
        self._requested.clear()
        items = self._all_intents(trigger, request, rt)
        for item in items:
            if isinstance(item, Intent) and item.operation == "queue_cdn_paths":
                self._requested[item.target_key] = (list(item.params["paths"]), list(item.params["wildcards"]))
            elif isinstance(item, Intent) and item.params.get("keys"):
                self._requested[item.target_key] = list(item.params["keys"])
        return items

    def _all_intents(self, trigger: Trigger, request: InvalidationRequest | None,
                     rt: ReactionRuntime) -> list[Intent | Skip]:
        if trigger.kind == "alarm":
            return self._alarm_intents(trigger, rt)
        if request is None:
            return []
        items: list[Intent | Skip] = list(request.skips)
        for cache_job in request.caches:
            items += self._cache_intents(cache_job, rt, request.reason, trigger.who)
        for cdn_job in request.cdn:
            items.append(self._queue_intent(cdn_job, request.reason, trigger))
        if request.continuation is not None:
            c = request.continuation
            cache = self._cache(c.cache, rt)
            key = self._target_key(cache.name, c.operation, c.target if c.operation != "keys" else None, c.keys,
                                   label=c.keys_label)
            items.append(Intent(policy=_policy(cache), target_key=key, target={"cache": cache.name},
                                operation=f"invalidate_{c.operation}", reason=request.reason,
                                params={"cache": cache.name, "kind": c.operation, "target": c.target,
                                        "keys": list(c.keys), "requested_by": c.requested_by or trigger.who,
                                        "continuation": {"run_id": c.run_id, "runs": c.runs,
                                                         "attempt": c.attempt, "reason": c.reason}}))
        if request.dry_run:
            items = [i.model_copy(update={"dry_run": True}) if isinstance(i, Intent) else i for i in items]
        return items

    def _alarm_intents(self, trigger: Trigger, rt: ReactionRuntime) -> list[Intent | Skip]:
        alarm = trigger.alarm
        assert alarm is not None
        out: list[Intent | Skip] = []
        why = f"{alarm.name} {alarm.transition}"
        for owner, spec in self._alarm_rules(trigger, rt):
            if alarm.state != "ALARM":
                out.append(Skip(reason="alarm-not-firing", policy=_policy(owner),
                                detail=f"{why}: only a transition into ALARM invalidates"))
            elif isinstance(owner, CacheConfig):
                out += self._cache_intents(spec_cache_work(owner, spec), rt, why, trigger.who)
            else:
                out.append(self._queue_intent(spec_cdn_work(owner, spec), why, trigger))
        return out

    @staticmethod
    def _target_key(cache: str, kind: str, target: str | None, keys: tuple[str, ...] | list[str] = (),
                    label: str = "") -> str:
        if kind == "keys":
            return f"redis/{cache}/keys/{label or _keys_label(keys)}"
        if kind == "flush":
            return f"redis/{cache}/flush"
        assert target is not None
        return f"redis/{cache}/{kind}/{_label(target)}"

    def _cache_intents(self, work: CacheWork, rt: ReactionRuntime, reason: str, who: str) -> list[Intent | Skip]:
        cache = self._cache(work.cache, rt)
        policy = _policy(cache)
        base: dict[str, Any] = {"policy": policy, "target": {"cache": cache.name}, "reason": reason}
        if work.flush:
            return [Intent(**base, target_key=self._target_key(cache.name, "flush", None), operation="flush",
                           params={"cache": cache.name, "confirm": work.confirm})]
        out: list[Intent | Skip] = []
        if work.sweep:
            out.append(Intent(**base, target_key=f"redis/{cache.name}/sweep", operation="sweep_purges",
                              params={"cache": cache.name, "kind": "sweep"}))
        if work.keys:
            out.append(Intent(**base, target_key=self._target_key(cache.name, "keys", None, work.keys),
                              operation="invalidate_keys",
                              params={"cache": cache.name, "kind": "keys", "target": f"{len(work.keys)} keys",
                                      "keys": list(work.keys), "requested_by": who}))
        for kind, targets in (("pattern", work.patterns), ("tag", work.tags)):
            for target in targets:
                out.append(Intent(**base, target_key=self._target_key(cache.name, kind, target),
                                  operation=f"invalidate_{kind}",
                                  params={"cache": cache.name, "kind": kind, "target": target, "requested_by": who}))
        return out

    def _queue_intent(self, work: CdnWork, reason: str, trigger: Trigger) -> Intent:
        return Intent(policy=f"cdn:{work.cdn}", target_key=f"cdn/{work.cdn}/queue", target={"cdn": work.cdn},
                      operation="queue_cdn_paths", reason=reason,
                      params={"cdn": work.cdn, "paths": list(work.paths), "wildcards": list(work.wildcards),
                              "origin_key": work.origin_key, "requested_by": trigger.who,
                              "request": trigger.event_id})

    # ------------------------------------------------------------------ guardrail settings
    def allowed_targets(self, rt: ReactionRuntime) -> set[str]:
        inv = rt.config.invalidation
        return _UnderConfigured({f"redis/{c.name}/" for c in inv.caches} | {f"cdn/{c.name}/" for c in inv.cdn})

    def guard_settings(self, intent: Intent, rt: ReactionRuntime) -> GuardSettings:
        owner: CacheConfig | CdnConfig = (self._cdn(intent.params["cdn"], rt) if "cdn" in intent.params
                                          else self._cache(intent.params["cache"], rt))
        # A continuation was admitted with its first run, and queueing paths is not the CloudFront action:
        # neither may be refused by a lock another invocation holds, nor count against the breaker.
        follow_up = intent.params.get("continuation") is not None or intent.operation == "queue_cdn_paths"
        # A run's real lock is its progress item (created conditionally, see plan): a request arriving while
        # another invocation holds the core's lock must be coalesced into a follow-up, never `skipped:locked`.
        run = intent.operation in ("invalidate_pattern", "invalidate_tag", "invalidate_keys")
        return GuardSettings(out_cooldown_s=0, in_cooldown_s=0,
                             max_actions_per_hour=owner.rate_limit.max_actions_per_hour,
                             circuit_open_for_s=owner.rate_limit.open_for_s,
                             dry_run=rt.config.dry_run or owner.dry_run,
                             preempt_lock=follow_up or run, bypass_rate_limit=follow_up)

    @staticmethod
    def _cache(name: str, rt: ReactionRuntime) -> CacheConfig:
        cache = rt.config.invalidation.cache(name)
        if cache is None:
            raise LookupError(f"no cache {name!r} in the config")
        return cache

    @staticmethod
    def _cdn(name: str, rt: ReactionRuntime) -> CdnConfig:
        cdn = rt.config.invalidation.cdn_entry(name)
        if cdn is None:
            raise LookupError(f"no cdn entry {name!r} in the config")
        return cdn

    @staticmethod
    def _progress(rt: ReactionRuntime) -> ProgressStore:
        return ProgressStore(rt.clients.dynamodb, rt.settings.state_table)

    # ------------------------------------------------------------------ plan
    def plan(self, intent: Intent, rt: ReactionRuntime) -> Action | Skip:
        if intent.operation == "queue_cdn_paths":
            return self._plan_queue(intent, rt)
        cache = self._cache(intent.params["cache"], rt)
        if intent.operation == "flush":
            return self._plan_flush(intent, cache)
        if intent.operation == "sweep_purges":
            return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target,
                          operation=intent.operation, reason=intent.reason, params={"cache": cache.name},
                          before={"cache": cache.name},
                          intended={"sweep": "tag purges left behind by failed runs",
                                    "time_budget_s": cache.continuation.time_budget_s})
        return self._plan_run(intent, cache, rt)

    def _plan_flush(self, intent: Intent, cache: CacheConfig) -> Action | Skip:
        try:
            check_flush_allowed(confirm_name=intent.params.get("confirm"), cache_name=cache.name,
                                allowed=cache.allow_flush)
        except FlushRefused as refused:
            return Skip(reason="flush-refused", policy=intent.policy, target_key=intent.target_key,
                        detail=f"{refused} ({refused.reason}); nothing was sent")
        return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target, operation="flush",
                      params={"cache": cache.name}, before={"cache": cache.name},
                      intended={"flush": cache.name, "mode": "FLUSHDB ASYNC on every primary"}, reason=intent.reason)

    def _plan_run(self, intent: Intent, cache: CacheConfig, rt: ReactionRuntime) -> Action | Skip:
        params = intent.params
        store = self._progress(rt)
        now = rt.clock.now().timestamp()
        current = store.get(intent.target_key)
        follow = params.get("continuation")
        adopted = current is not None and current.orphaned and not (intent.dry_run or rt.config.dry_run
                                                                     or cache.dry_run)
        if adopted:
            assert current is not None
            # A follow-up run whose message was never queued: this trigger carries it out (from its beginning, so
            # it also covers a new request of the same target).
            run = current
        elif follow is not None:
            if current is None or current.run_id != follow["run_id"] or current.runs != follow["runs"]:
                return Skip(reason="superseded", policy=intent.policy, target_key=intent.target_key,
                            detail=f"run {follow['run_id'][:8]} step {follow['runs']} was already done, finished "
                                   "or replaced by a newer run")
            run = current
        else:
            dry = intent.dry_run or rt.config.dry_run or cache.dry_run
            for _ in range(3):
                if current is None or current.lease_until <= now:
                    break
                if dry:
                    return Skip(reason="coalesced", policy=intent.policy, target_key=intent.target_key,
                                before={"run": current.run_id},
                                detail=f"dry run: would be coalesced into a follow-up of {current.describe()}")
                if store.mark_pending(intent.target_key, current.run_id, str(params.get("requested_by", "")), now):
                    return _coalesced(intent, current)
                current = store.get(intent.target_key)  # it ended or was replaced meanwhile: look again
            run = RunProgress(run_id=uuid.uuid4().hex, started_at=now, updated_at=now,
                              lease_until=now + _lease_s(cache), requested_by=str(params.get("requested_by", "")))
        kind = params["kind"]
        keys = list(params.get("keys") or [])
        if kind == "keys" and run.keys_ref and (not keys or adopted):
            keys = list(dict.fromkeys([*store.get_keys(run.keys_ref), *keys]))
        if keys:
            self._payload[intent.target_key] = keys
        before = {"cache": cache.name, "kind": kind, "target": params["target"], "run": run.run_id,
                  "runs_done": run.runs, "attempt": run.attempt, "matched_so_far": run.matched,
                  "removed_so_far": run.removed, "resume_from_checkpoint": run.checkpoint is not None}
        if keys:
            before["keys_sample"] = [_sample(k) for k in keys[:SAMPLE]]
        intended = {"invalidate": kind, "target": params["target"],
                    "time_budget_s": cache.continuation.time_budget_s}
        return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target,
                      operation=intent.operation, reason=intent.reason, before=before, intended=intended,
                      params={"cache": cache.name, "kind": kind, "target": params["target"],
                              "run": {"run_id": run.run_id, "started_at": run.started_at, "runs": run.runs,
                                      "attempt": run.attempt, "matched": run.matched, "removed": run.removed,
                                      "checkpoint": run.checkpoint, "requested_by": run.requested_by,
                                      "keys_ref": run.keys_ref, "orphaned": run.orphaned},
                              "new_run": follow is None and not adopted})

    def _plan_queue(self, intent: Intent, rt: ReactionRuntime) -> Action:
        cdn = self._cdn(intent.params["cdn"], rt)
        paths, wildcards = intent.params["paths"], intent.params["wildcards"]
        self._payload[intent.target_key] = (paths, wildcards)
        return Action(policy=intent.policy, target_key=intent.target_key, target=intent.target,
                      operation=intent.operation, reason=intent.reason,
                      params={"cdn": cdn.name, "paths": len(paths), "wildcards": wildcards,
                              "origin_key": intent.params.get("origin_key"),
                              "requested_by": intent.params.get("requested_by", ""),
                              "request": intent.params.get("request", "")},
                      before={"cdn": cdn.name, "paths_requested": len(paths) + len(wildcards),
                              "paths_sample": [_sample(p) for p in paths[:SAMPLE]],
                              "wildcards": [_sample(w) for w in wildcards[:SAMPLE]]},
                      intended={"queue": f"coalescing queue of {cdn.name}", "paths": len(paths),
                                "wildcards": len(wildcards), "coalesce_window_s": cdn.coalesce_window_s})

    # ------------------------------------------------------------------ execute
    def execute(self, action: Action, rt: ReactionRuntime) -> None:
        if action.operation == "queue_cdn_paths":
            self._execute_queue(action, rt)
        elif action.operation == "flush":
            self._execute_flush(action, rt)
        elif action.operation == "sweep_purges":
            self._execute_sweep(action, rt)
        else:
            self._execute_run(action, rt)

    def _execute_queue(self, action: Action, rt: ReactionRuntime) -> None:
        runtime = current_invalidation_runtime()
        paths, wildcards = self._payload.pop(action.target_key, None) or self._requested[action.target_key]
        cdn = self._cdn(action.params["cdn"], rt)
        bodies = paths_messages(cdn.name, paths, wildcards, requested_by=str(action.params["requested_by"]),
                                request=str(action.params["request"]))
        sent = send_bodies(rt.clients.sqs, runtime.cdn_queue_url(cdn.name), bodies)
        self._results[action.target_key] = {"queued_paths": len(paths), "queued_wildcards": len(wildcards),
                                            "messages": sent, "coalesce_window_s": cdn.coalesce_window_s}

    def _execute_flush(self, action: Action, rt: ReactionRuntime) -> None:
        runtime = current_invalidation_runtime()
        cache = self._cache(action.params["cache"], rt)
        report = runtime.invalidator(cache, rt).flush(confirm_name=cache.name, cache_name=cache.name,
                                                      allowed=cache.allow_flush)
        self._results[action.target_key] = report.as_audit() | {"status": "complete"}
        self._removed_metric(rt, cache, report)

    def _execute_sweep(self, action: Action, rt: ReactionRuntime) -> None:
        runtime = current_invalidation_runtime()
        cache = self._cache(action.params["cache"], rt)
        store = self._progress(rt)
        now = rt.clock.now().timestamp()

        def live(tag: str, snapshot: str) -> bool:
            """A purge a run in progress owns (or may be about to create): not an orphan."""
            current = store.get(self._target_key(cache.name, "tag", tag))
            if current is None or current.lease_until <= now:
                return False
            owned = (current.checkpoint or {}).get("snapshot")
            return owned is None or owned == snapshot

        budget = runtime.time_budget(cache.continuation.time_budget_s)
        result = runtime.invalidator(cache, rt).sweep_purges(live, time_budget_s=max(budget, 0.001))
        self._results[action.target_key] = result
        if result["removed"]:
            publish("RedisKeysRemoved", result["removed"], MetricUnit.Count, stage=rt.settings.stage,
                    cache=cache.name, kind="sweep")

    def _execute_run(self, action: Action, rt: ReactionRuntime) -> None:
        from redis.exceptions import RedisError

        runtime = current_invalidation_runtime()
        cache = self._cache(action.params["cache"], rt)
        kind, target = action.params["kind"], action.params["target"]
        run = RunProgress(**action.params["run"], updated_at=0.0, lease_until=0.0)
        run.orphaned = False  # carried out now (`previous` keeps the mark, should this attempt fail as a whole)
        previous = RunProgress(**action.params["run"], updated_at=run.started_at,
                               lease_until=rt.clock.now().timestamp() + _lease_s(cache))
        keys = self._payload.pop(action.target_key, None) or list(self._requested.get(action.target_key, []))
        store = self._progress(rt)
        self._touch(run, cache, rt)
        new_run = bool(action.params["new_run"])
        # From here on an identical request is coalesced into a follow-up of this run.
        orphan: RunProgress | None = None
        if new_run and not store.create(action.target_key, run, rt.clock.now().timestamp()):
            current = store.get(action.target_key)
            if current is not None and current.run_id == run.run_id:
                # This very run, created by an attempt that died after the write (or whose answer was lost and
                # botocore's retry failed its own condition): it is ours to run, not a run to coalesce into.
                new_run = False
            elif current is not None and current.orphaned:
                orphan = current
            elif current is not None and store.mark_pending(action.target_key, current.run_id, run.requested_by,
                                                          rt.clock.now().timestamp()):
                self._results[action.target_key] = {"status": "coalesced", "into_run": current.run_id,
                                                    "detail": "a run started meanwhile; its follow-up covers this"}
                return
            else:
                raise RuntimeError(f"{action.target_key}: could neither start a run nor join the one in progress")
        elif not new_run and not store.save(action.target_key, run):
            current = store.get(action.target_key)
            if current is None or not current.orphaned:
                self._results[action.target_key] = {"status": "superseded", "run": run.run_id,
                                                    "detail": "a newer run of this target replaced this one"}
                return
            orphan = current
        if orphan is not None:
            # A follow-up run recorded but never queued (the retry of the invocation that ended its predecessor,
            # which re-executes its decided action instead of planning): this attempt carries it out, from its
            # own progress (it also covers this request: it starts from the beginning).
            previous = replace(orphan)
            run = replace(orphan, orphaned=False)
            self._touch(run, cache, rt)
            if kind == "keys" and run.keys_ref:
                keys = list(dict.fromkeys([*store.get_keys(run.keys_ref), *keys]))
            new_run = False
            if not store.save(action.target_key, run):
                self._results[action.target_key] = {"status": "superseded", "run": run.run_id,
                                                    "detail": "a newer run of this target replaced this one"}
                return
        budget = runtime.time_budget(cache.continuation.time_budget_s)
        report: InvalidationReport | None = None
        try:
            invalidator = runtime.invalidator(cache, rt)
            if kind == "keys":
                report = invalidator.delete_keys(keys)
            elif budget > 0 and kind == "pattern":
                report = invalidator.delete_pattern(target, cursor_checkpoint=run.checkpoint, time_budget_s=budget,
                                                    allow_unanchored=cache.allow_flush)
            elif budget > 0:
                report = invalidator.delete_tag(target, cursor_checkpoint=run.checkpoint, time_budget_s=budget,
                                                sscan_count=cache.scan.count)
        except InvalidationInterrupted as err:
            self._interrupted(action, cache, run, err.report, err, keys, rt, new_run=new_run, previous=previous)
            return
        except RedisError as err:  # before the first page: connecting, discovering the cluster
            self._interrupted(action, cache, run, None, err, keys, rt, new_run=new_run, previous=previous)
            return
        except Exception:
            # Not a Redis failure (a bad checkpoint, the secret unreadable): the trigger is retried as a whole,
            # so leave the run as it was found, or a retried first request would find itself "already running".
            if new_run:
                self._end(action, cache, run, keys, rt)
            else:
                store.save(action.target_key, previous)
            raise
        if report is not None and report.complete:
            run.matched, run.removed = report.matched, report.removed
            follow_up = self._end(action, cache, run, keys, rt)
            self._results[action.target_key] = report.as_audit() | {
                "status": "complete", "run": run.run_id, "runs": run.runs + 1} | (
                {"follow_up": follow_up} if follow_up else {})
            self._removed_metric(rt, cache, report)
            return
        # Out of time: checkpoint and continue in a fresh invocation.
        if report is not None:
            run.matched, run.removed = report.matched, report.removed
            run.checkpoint = report.checkpoint.to_dict() if report.checkpoint else run.checkpoint
            run.attempt = 0
        run.runs += 1
        if run.runs >= cache.continuation.max_runs:
            self._end(action, cache, run, keys, rt)
            mark_final_failure(action.target_key)
            raise RunLimitReached(f"{kind} {target!r} not finished after {run.runs} runs (continuation.max_runs): "
                                  f"{run.matched} matched, {run.removed} removed so far")
        self._continue(action, cache, run, keys, rt, reason="time-budget", delay_s=0,
                       new_run=action.params["new_run"], previous=previous)
        self._results[action.target_key] = (report.as_audit() if report is not None else {
            "kind": kind, "target": target, "matched": run.matched, "removed": run.removed, "complete": False}) | {
            "status": "continuing", "run": run.run_id, "runs": run.runs,
            "detail": "time budget spent; continues from its checkpoint"}

    def _interrupted(self, action: Action, cache: CacheConfig, run: RunProgress, report: InvalidationReport | None,
                     err: Exception, keys: list[str], rt: ReactionRuntime, *, new_run: bool,
                     previous: RunProgress) -> None:
        runtime = current_invalidation_runtime()
        runtime.forget_client(cache.name)  # the next attempt reconnects (and re-reads a rotated secret)
        cause = err.__cause__ or err
        error = f"{type(cause).__name__}: {str(cause)[:200]}"
        if report is not None:
            run.matched, run.removed = max(run.matched, report.matched), max(run.removed, report.removed)
            if report.checkpoint is not None:
                run.checkpoint = report.checkpoint.to_dict()
        run.attempt += 1
        run.runs += 1
        logger.warning("redis failed during an invalidation", extra={
            "target": action.target_key, "attempt": run.attempt, "error": type(cause).__name__})
        if run.attempt > cache.continuation.max_retries:
            self._end(action, cache, run, keys, rt)
            mark_final_failure(action.target_key)
            publish("InvalidationsFailed", 1, MetricUnit.Count, stage=rt.settings.stage, cache=cache.name)
            raise RetriesExhausted(
                f"{action.params['kind']} {action.params['target']!r} on cache {cache.name}: gave up after "
                f"{run.attempt} attempt(s) in {run.runs} run(s); {run.matched} matched and {run.removed} removed so "
                f"far; last error {error}") from None
        delay = min(900, cache.continuation.retry_delay_s * 2 ** (run.attempt - 1))
        self._continue(action, cache, run, keys, rt, reason="retry", delay_s=delay, new_run=new_run,
                       previous=previous)
        self._results[action.target_key] = {
            "kind": action.params["kind"], "target": action.params["target"], "matched": run.matched,
            "removed": run.removed, "complete": False, "status": "retrying", "attempt": run.attempt,
            "max_retries": cache.continuation.max_retries, "retry_in_s": delay, "error": error,
            "run": run.run_id, "runs": run.runs, "checkpoint": run.checkpoint}

    def _continue(self, action: Action, cache: CacheConfig, run: RunProgress, keys: list[str], rt: ReactionRuntime, *,
                  reason: Literal["time-budget", "retry"], delay_s: int, new_run: bool,
                  previous: RunProgress) -> None:
        """Save the run's progress, then queue its next step; undo the save if the message cannot be queued
        (so the retried trigger finds the run as it was)."""
        store = self._progress(rt)
        self._touch(run, cache, rt, extra_s=delay_s)
        self._store_keys(run, keys, rt)
        if not store.save(action.target_key, run):
            return  # a newer run of this target replaced this one: it covers what is left
        try:
            self._send(action, cache, run, reason, delay_s, rt)
        except Exception:
            if new_run:
                store.clear(action.target_key, run.run_id)
            else:
                store.save(action.target_key, previous)
            raise

    def _store_keys(self, run: RunProgress, keys: list[str], rt: ReactionRuntime) -> None:
        """A key list travels by reference: stored once per run (chunked items), never in a message."""
        if keys and run.keys_ref is None:
            run.keys_ref = run.run_id
            self._progress(rt).put_keys(run.run_id, keys, run.lease_until + 7 * 86400)

    def _send(self, action: Action, cache: CacheConfig, run: RunProgress,
              reason: Literal["time-budget", "retry", "follow-up"], delay_s: int, rt: ReactionRuntime) -> None:
        runtime = current_invalidation_runtime()
        kind = action.params["kind"]
        message = ContinuationMessage(cache=cache.name, operation=kind, target=action.params["target"],
                                      run_id=run.run_id, runs=run.runs, attempt=run.attempt, reason=reason,
                                      keys_label=action.target_key.rsplit("/", 1)[-1] if kind == "keys" else "",
                                      requested_by=run.requested_by[:300])
        if not runtime.settings.continuation_queue_url:
            raise RuntimeError("no continuation queue is configured")
        rt.clients.sqs.send_message(QueueUrl=runtime.settings.continuation_queue_url,
                                    MessageBody=message.model_dump_json(), DelaySeconds=runtime.delay(delay_s))

    def _end(self, action: Action, cache: CacheConfig, run: RunProgress, keys: list[str],
             rt: ReactionRuntime) -> str | None:
        """The run is over (complete, failed, or given up): forget it, unless requests arrived while it ran;
        then start their follow-up run, from the beginning, and return its id."""
        store = self._progress(rt)
        pending = store.finish(action.target_key, run.run_id)
        if pending is None:
            return None
        now = rt.clock.now().timestamp()
        who = pending.requested_by + (f" (+{pending.count - 1} more)" if pending.count > 1 else "")
        follow = RunProgress(run_id=uuid.uuid4().hex, started_at=now, updated_at=now,
                             lease_until=now + _lease_s(cache), requested_by=who[:300], keys_ref=run.keys_ref)
        self._store_keys(follow, keys, rt)
        if not store.replace(action.target_key, run.run_id, follow):
            return None
        try:
            self._send(action, cache, follow, "follow-up", 0, rt)
        except Exception:
            # Not cleared: that would lose the requests it covers. Marked orphaned, so that the next trigger of
            # this target (this invocation's retry included) carries it out; if even the mark fails, its lease
            # expires and the next request starts a run from the beginning.
            follow.orphaned = True
            try:
                store.save(action.target_key, follow)
            except Exception:  # noqa: BLE001 - the original failure is the one to raise
                logger.exception("could not mark the follow-up run orphaned", extra={"target": action.target_key})
            raise
        logger.info("follow-up run queued", extra={"target": action.target_key, "run": follow.run_id,
                                                   "pending": pending.count})
        return follow.run_id

    @staticmethod
    def _touch(run: RunProgress, cache: CacheConfig, rt: ReactionRuntime, extra_s: float = 0) -> None:
        now = rt.clock.now().timestamp()
        run.updated_at = now
        run.lease_until = now + _lease_s(cache) + extra_s

    @staticmethod
    def _removed_metric(rt: ReactionRuntime, cache: CacheConfig, report: InvalidationReport) -> None:
        publish("RedisKeysRemoved", report.removed, MetricUnit.Count, stage=rt.settings.stage, cache=cache.name,
                kind=report.kind)

    # ------------------------------------------------------------------ after
    def after_executed(self, action: Action, rt: ReactionRuntime) -> None:
        return None

    def verify(self, action: Action, rt: ReactionRuntime) -> dict[str, Any]:
        """What the run did (counts per pattern, tag or key list; or what was queued)."""
        return self._results.pop(action.target_key, {})


def _coalesced(intent: Intent, current: RunProgress) -> Skip:
    return Skip(reason="coalesced", policy=intent.policy, target_key=intent.target_key,
                before={"run": current.run_id, "runs": current.runs, "removed_so_far": current.removed},
                detail=f"an identical invalidation is in progress ({current.describe()}): when it ends, a "
                       "follow-up run starts from the beginning and covers this request")


def _policy(owner: CacheConfig | CdnConfig) -> str:
    return f"{'cache' if isinstance(owner, CacheConfig) else 'cdn'}:{owner.name}"


def describe_request(request: InvalidationRequest | None) -> str:
    """A one-line summary for logs (never the keys themselves)."""
    if request is None:
        return "nothing"
    return json.dumps({"caches": [w.cache for w in request.caches], "cdn": [w.cdn for w in request.cdn],
                       "continuation": request.continuation is not None})
