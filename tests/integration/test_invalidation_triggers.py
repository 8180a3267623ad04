"""Every trigger of the invalidator through the real handler, against moto and the shared local Redis (keys
under a prefix of each test's own, removed afterwards): custom events, DeploymentCompleted defaults, S3 object
events mapped by the path rules, alarms, schedules and console commands."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from invalidator.cache_tags import TaggedCache
from tests.conftest import T0
from tests.support.events import eventbridge_alarm, schedule
from tests.support.invalidation import (
    DEPLOYED,
    PORT,
    KeySpace,
    audit_by_operation,
    cache_entry,
    cdn_entry,
    console,
    content_changed,
    invalidation_env,
    make_config,
    outcomes,
    s3_event,
    shared_redis_up,
)

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(not shared_redis_up(), reason=f"no Redis on 127.0.0.1:{PORT} (make services)")]


@pytest.fixture
def space() -> Iterator[KeySpace]:
    ks = KeySpace(redis.Redis(host="127.0.0.1", port=PORT))
    yield ks
    ks.cleanup()


def _config(space: KeySpace, **cache_overrides):
    return make_config(
        caches=[cache_entry(namespace=space.namespace, **cache_overrides)],
        cdn=[cdn_entry(on_events=[{"source": "app.content", "detail_type": "ContentChanged"},
                                  {**DEPLOYED, "invalidate": {"paths": ["/", "/index.html"]}}],
                       on_alarms=[{"alarms": {"names": ["site-stale-content"]}, "invalidate": {"paths": ["/news"]}}],
                       schedules=[{"name": "hourly-home", "cron": "0 * * * ? *", "invalidate": {"paths": ["/"]}}])])


def _queued_paths(env) -> list[str]:
    return [p for body in env.queue_bodies(env.cdn_queue_urls["site"]) for p in body.get("paths", [])]


def test_content_changed_removes_keys_patterns_and_tags_and_queues_paths(space, clock) -> None:
    space.fill(["product:1", "product:2", "page:/a", "page:/b", "other"])
    tagged = TaggedCache(space.client, namespace=space.namespace)
    for i in range(5):
        tagged.set(space.key(f"fragment:{i}"), "html", tags=["product:42"], ttl_s=600)
    tagged.set(space.key("fragment:untouched"), "html", tags=["product:7"], ttl_s=600)
    with invalidation_env(_config(space), clock) as env:
        response = env.invoke("invalidator", content_changed({
            "keys": [space.key("product:1"), space.key("product:2"), space.key("missing")],
            "patterns": [space.key("page:*")], "tags": ["product:42"], "paths": ["/products/42", "/"]}, T0))
        assert response["status"] == "ok"
        by_op = {d["operation"]: d for d in response["decisions"]}
        assert set(by_op) == {"invalidate_keys", "invalidate_pattern", "invalidate_tag", "queue_cdn_paths"}
        assert all(d["outcome"] == "executed" for d in response["decisions"])
        keys_after = by_op["invalidate_keys"]["after"]
        assert (keys_after["matched"], keys_after["removed"], keys_after["status"]) == (3, 2, "complete")
        assert by_op["invalidate_pattern"]["after"]["matched"] == 2
        assert by_op["invalidate_pattern"]["after"]["removed"] == 2
        assert by_op["invalidate_tag"]["after"]["removed"] == 5
        assert by_op["queue_cdn_paths"]["after"]["queued_paths"] == 2
        assert sorted(_queued_paths(env)) == ["/", "/products/42"]
        # The audit records counts per pattern and per tag (one record each).
        pattern_audit = audit_by_operation(env, "invalidate_pattern")
        assert [(r["action"]["params"]["target"], r["after"]["removed"]) for r in pattern_audit] == [
            (space.key("page:*"), 2)]
        assert [r["after"]["removed"] for r in audit_by_operation(env, "invalidate_tag")] == [5]
    assert space.count() == 2  # "other" and the fragment tagged product:7
    assert space.client.exists(space.key("fragment:untouched"))


def test_deployment_completed_without_detail_uses_the_config_defaults(space, clock) -> None:
    space.fill(["page:/x", "page:/y", "keep"])
    config = _config(space, on_events=[{**DEPLOYED, "invalidate": {"patterns": [space.key("page:*")]}}])
    with invalidation_env(config, clock) as env:
        response = env.invoke("invalidator", content_changed({"version": "2026.11.26-1"}, T0, **{
            "source": "app.deploy", "detail_type": "DeploymentCompleted"}))
        assert sorted(outcomes(response)) == ["executed", "executed"]
        assert sorted(_queued_paths(env)) == ["/", "/index.html"]
    assert space.count("page:*") == 0 and space.count() == 1


def test_s3_object_events_become_cdn_paths_through_the_rules(space, clock) -> None:
    with invalidation_env(_config(space), clock) as env:
        created = env.invoke("invalidator", s3_event("Object Created", "site-origin-itest", "site/docs/index.html", T0))
        deleted = env.invoke("invalidator", s3_event("Object Deleted", "site-origin-itest", "site/shop/cart.html", T0))
        unmapped = env.invoke("invalidator", s3_event("Object Created", "site-origin-itest", "private/x.bin", T0))
        foreign = env.invoke("invalidator", s3_event("Object Created", "another-bucket", "site/a.html", T0))
        assert outcomes(created) == outcomes(deleted) == ["executed"]
        assert outcomes(unmapped) == ["skipped:unmapped-key"]
        assert outcomes(foreign) == ["skipped:no-policy"]
        assert sorted(_queued_paths(env)) == ["/docs/", "/docs/index.html", "/shop/cart", "/shop/cart.html"]
        record = audit_by_operation(env, "queue_cdn_paths")[0]
        assert record["action"]["params"]["origin_key"] in ("site/docs/index.html", "site/shop/cart.html")


def test_an_alarm_into_alarm_invalidates_and_other_transitions_do_not(space, clock) -> None:
    space.fill(["catalog:1", "catalog:2"])
    config = _config(space, on_alarms=[{"alarms": {"prefixes": ["catalog-stale"]},
                                        "invalidate": {"patterns": [space.key("catalog:*")]}}])
    with invalidation_env(config, clock) as env:
        ok = env.invoke("invalidator", eventbridge_alarm("catalog-stale-content", "OK", T0, previous="ALARM"))
        assert outcomes(ok) == ["skipped:alarm-not-firing"]
        assert space.count() == 2
        clock.advance(60)
        firing = env.invoke("invalidator", eventbridge_alarm("catalog-stale-content", "ALARM", clock.now()))
        assert outcomes(firing) == ["executed"]
        assert firing["decisions"][0]["after"]["removed"] == 2
        cdn_alarm = env.invoke("invalidator", eventbridge_alarm("site-stale-content", "ALARM", clock.now()))
        assert outcomes(cdn_alarm) == ["executed"]
        assert _queued_paths(env) == ["/news"]
        unrelated = env.invoke("invalidator", eventbridge_alarm("api-cpu-high", "ALARM", clock.now()))
        assert outcomes(unrelated) == ["skipped:no-policy"]
    assert space.count() == 0


def test_a_schedule_runs_the_configured_invalidation(space, clock) -> None:
    space.fill(["tmp:1", "tmp:2", "tmp:3", "keep"])
    config = _config(space, schedules=[{"name": "nightly", "cron": "0 3 * * ? *",
                                        "invalidate": {"patterns": [space.key("tmp:*")]}}])
    with invalidation_env(config, clock) as env:
        response = env.invoke("invalidator", schedule("cache-catalog-nightly", "invalidate", T0, policy="catalog",
                                                      params={"scope": "cache", "schedule": "nightly"}))
        assert outcomes(response) == ["executed", "executed"]  # the pattern, and the sweep of tag purges
        cdn = env.invoke("invalidator", schedule("cdn-site-hourly-home", "invalidate", T0, policy="site",
                                                 params={"scope": "cdn", "schedule": "hourly-home"}))
        assert outcomes(cdn) == ["executed"]
        unknown = env.invoke("invalidator", schedule("x", "invalidate", T0, policy="catalog",
                                                     params={"scope": "cache", "schedule": "weekly"}))
        assert unknown["status"] == "rejected"
        assert any("reflex_schedule.params.schedule" in e for e in unknown["errors"])
    assert space.count() == 1


def test_console_commands_act_under_the_same_guardrails(space, clock) -> None:
    space.fill(["k:1", "k:2", "p:1"])
    with invalidation_env(_config(space), clock) as env:
        dry = env.invoke("invalidator", console("invalidate_cache", cache="catalog", patterns=[space.key("p:*")],
                                                dry_run=True))
        assert outcomes(dry) == ["dry-run"]
        assert space.count("p:*") == 1
        keys = env.invoke("invalidator", console("invalidate_cache", cache="catalog",
                                                 keys=[space.key("k:1"), space.key("k:2")]))
        assert outcomes(keys) == ["executed"] and keys["decisions"][0]["after"]["removed"] == 2
        paths = env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=["/a", "/b"],
                                                  wildcards=["/img/*"]))
        assert outcomes(paths) == ["executed"]
        bodies = env.queue_bodies(env.cdn_queue_urls["site"])
        assert bodies[0]["paths"] == ["/a", "/b"] and bodies[0]["wildcards"] == ["/img/*"]
        assert bodies[0]["requested_by"] == "console:sre"
        env.world.set_kill_switch("invalidator", True)
        env.world.activate("invalidator", clock).kill_switch.invalidate()
        stopped = env.invoke("invalidator", console("invalidate_cache", cache="catalog", patterns=[space.key("p:*")]))
        assert outcomes(stopped) == ["skipped:kill-switch"]
    assert space.count() == 1


def test_events_for_nobody_and_duplicates_act_once(space, clock) -> None:
    space.fill(["d:1"])
    with invalidation_env(_config(space), clock) as env:
        unrelated = env.invoke("invalidator", content_changed({"patterns": ["x:*"]}, T0, source="app.other"))
        assert outcomes(unrelated) == ["skipped:no-policy"]
        event = content_changed({"patterns": [space.key("d:*")]}, T0)
        first = env.invoke("invalidator", event)
        again = env.invoke("invalidator", json.loads(json.dumps(event)))
        assert outcomes(first) == ["executed"]
        assert again.get("duplicate") is True
        assert [r["outcome"] for r in env.world.audit_records()].count("skipped:duplicate-delivery") == 1
