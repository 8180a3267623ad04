"""CloudFront invalidation end to end, against moto: the invalidator queues paths, the batcher (fed as the SQS
event source mapping would) coalesces a batching window into one CreateInvalidation per distribution, plans
with the inventory, respects CloudFront's in-flight limits, retries TooManyInvalidationsInProgress without
losing a path, and tracks each invalidation until it is Completed."""

from __future__ import annotations

import json

import pytest

from simulator.invalidation_scenario import emf_metrics
from tests.conftest import T0
from tests.support.invalidation import (
    audit_by_operation,
    cdn_entry,
    console,
    content_changed,
    invalidation_env,
    make_config,
    outcomes,
)


def _config(**overrides):
    return make_config(cdn=[cdn_entry(**overrides)])


def _sent(env) -> list[str]:
    return [p for request in env.cloudfront.requests for p in request["paths"]]


def _batch(env) -> dict | None:
    return env.deliver(env.cdn_queue_urls["site"], "cdn_batcher", due=env.due())


def test_a_burst_of_content_changes_becomes_one_invalidation(clock) -> None:
    with invalidation_env(_config(), clock) as env:
        for i in range(5):
            response = env.invoke("invalidator", content_changed({"paths": [f"/products/{i}", "/"]}, T0))
            assert outcomes(response) == ["executed"]
        assert env.cloudfront.requests == []  # nothing sent before the batching window closes
        assert _batch(env) == {"batchItemFailures": []}
        (request,) = env.cloudfront.requests
        assert request["distribution"] == env.distributions["site"]
        assert sorted(request["paths"]) == ["/", *(f"/products/{i}" for i in range(5))]
        (record,) = audit_by_operation(env, "create_invalidation")
        assert record["outcome"] == "executed"
        assert record["before"]["requested"]["messages"] == 5
        assert record["before"]["requested"]["paths"] == 6
        assert record["action"]["intended"]["billed_paths"] == 6
        assert record["action"]["intended"]["estimated_cost_usd"] == "0.000"  # within the free 1,000
        assert record["after"]["paths_sent"] == 6
        assert record["after"]["invalidation_id"] == request["id"]


def test_the_planner_collapses_changes_into_a_wildcard_within_the_budget(clock) -> None:
    objects = {"site": [f"site/news/{i}.html" for i in range(10)] + [f"site/shop/{i}.html" for i in range(20)]}
    config = _config(over_invalidation={"max_objects": 5}, origin={
        "bucket": "site-origin-itest", "inventory": True, "path_rules": [{"key_prefix": "site/", "path_prefix": "/"}]})
    with invalidation_env(config, clock, origin_objects=objects) as env:
        changed = [f"/news/{i}.html" for i in range(8)] + ["/shop/3.html"]
        env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=changed))
        _batch(env)
        (request,) = env.cloudfront.requests
        assert sorted(request["paths"]) == ["/news/*", "/shop/3.html"]
        (record,) = audit_by_operation(env, "create_invalidation")
        intended = record["action"]["intended"]
        assert (intended["billed_paths"], intended["over_invalidated"], intended["wildcards"]) == (2, 2, ["/news/*"])


def test_too_many_invalidations_in_progress_is_retried_without_losing_a_path(clock) -> None:
    with invalidation_env(_config(), clock) as env:
        env.invoke("invalidator", content_changed({"paths": ["/a", "/b"]}, T0))
        env.invoke("invalidator", content_changed({"paths": ["/c"]}, T0))
        # Briefly refused: the batcher waits and retries within the invocation.
        env.cloudfront.refuse = ["TooManyInvalidationsInProgress"]
        assert _batch(env) == {"batchItemFailures": []}
        assert sorted(_sent(env)) == ["/a", "/b", "/c"]
        # Refused on every attempt: the messages come back to the queue (partial batch failure), nothing lost.
        env.invoke("invalidator", content_changed({"paths": ["/d", "/e"]}, T0))
        env.invoke("invalidator", content_changed({"paths": ["/f"]}, T0))
        env.cloudfront.refuse = ["TooManyInvalidationsInProgress"] * 4
        response = _batch(env)
        assert response is not None and len(response["batchItemFailures"]) == 2
        assert sorted(p for b in env.queue_bodies(env.cdn_queue_urls["site"]) for p in b.get("paths", [])) == [
            "/d", "/e", "/f"]
        failed = [r for r in audit_by_operation(env, "create_invalidation") if r["outcome"].startswith("failed:")]
        assert [r["outcome"] for r in failed] == ["failed:TooManyInvalidationsInProgress"]
        assert _batch(env) == {"batchItemFailures": []}
        assert sorted(_sent(env)) == ["/a", "/b", "/c", "/d", "/e", "/f"]
        assert len(env.cloudfront.requests) == 2


def test_the_in_flight_limit_defers_what_does_not_fit(clock) -> None:
    config = _config(max_paths_per_request=3000)
    with invalidation_env(config, clock, propagation_s=600) as env:
        env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=[f"/p/{i}" for i in range(2995)]))
        _batch(env)
        env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=[f"/q/{i}" for i in range(10)]))
        _batch(env)
        assert [len(r["paths"]) for r in env.cloudfront.requests] == [2995, 5]
        (record,) = [r for r in audit_by_operation(env, "create_invalidation") if r["after"]
                     and r["after"]["paths_sent"] == 5]
        assert record["before"]["in_flight"] == {"invalidations": 1, "paths": 2995, "wildcards": 0}
        assert record["action"]["intended"]["deferred"] == 5
        # Full: nothing is sent, the paths wait in the queue.
        full = _batch(env)
        assert full is not None and len(full["batchItemFailures"]) == 1
        assert "skipped:in-flight-limit" in [r["outcome"] for r in audit_by_operation(env, "create_invalidation")]
        clock.advance(700)  # both invalidations completed
        _batch(env)
        assert sorted(_sent(env)) == sorted([f"/p/{i}" for i in range(2995)] + [f"/q/{i}" for i in range(10)])


def test_each_invalidation_is_tracked_until_completed(clock, capsys) -> None:
    with invalidation_env(_config(tracking={"poll_s": 60, "give_up_after_s": 3600}), clock,
                          propagation_s=300) as env:
        env.invoke("invalidator", content_changed({"paths": ["/a"]}, T0))
        _batch(env)
        url = env.cdn_queue_urls["site"]
        (track,) = env.queue_bodies(url)
        assert track["kind"] == "track" and track["not_before"] == T0.timestamp() + 60
        assert _batch(env) is None  # not due yet
        clock.advance(60)
        _batch(env)  # still in progress: checked again later
        (again,) = env.queue_bodies(url)
        assert again["polls"] == 1 and again["not_before"] == T0.timestamp() + 120
        capsys.readouterr()
        clock.advance(300)
        _batch(env)
        assert env.queue_bodies(url) == []
        (metric,) = emf_metrics(capsys.readouterr().out, "CdnInvalidationSeconds")
        assert metric["CdnInvalidationSeconds"] == [360.0]
        assert metric["cdn"] == "site"


def test_bad_paths_are_refused_with_the_field_named_and_nothing_is_sent(clock) -> None:
    with invalidation_env(_config(max_paths_per_request=3), clock) as env:
        no_slash = env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=["/ok", "products/1"]))
        assert no_slash["status"] == "rejected" and any(e.startswith("paths[1]") for e in no_slash["errors"])
        too_many = env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=["/1", "/2", "/3", "/4"]))
        assert too_many["status"] == "rejected" and any("more than the 3 allowed" in e for e in too_many["errors"])
        tag = env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=["#product-42"]))
        assert tag["status"] == "rejected" and any("cache-tag" in e for e in tag["errors"])
        empty = env.invoke("invalidator", content_changed({"paths": []}, T0))
        assert empty["status"] == "rejected" and empty["errors"] == ["detail.paths: must not be empty"]
        assert empty["parked_in_dlq"] is True
        assert env.queue_bodies(env.cdn_queue_urls["site"]) == []
        # A malformed message on the queue is rejected alone; the good ones of the batch are sent.
        env.world.clients.sqs.send_message(QueueUrl=env.cdn_queue_urls["site"], MessageBody=json.dumps(
            {"kind": "paths", "cdn": "site", "paths": ["no-slash"]}))
        env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=["/fine"]))
        assert _batch(env) == {"batchItemFailures": []}
        assert _sent(env) == ["/fine"]
        rejected = [r for r in env.world.audit_records() if r["reaction"] == "cdn_batcher"
                    and r["outcome"] == "rejected:validation"]
        assert len(rejected) == 1 and "paths[0]" in rejected[0]["detail"]


def test_cache_tags_pass_through_when_enabled(clock) -> None:
    with invalidation_env(_config(cache_tags=True), clock) as env:
        env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=["#product-42", "/p/42"]))
        _batch(env)
        assert sorted(_sent(env)) == ["#product-42", "/p/42"]


@pytest.mark.parametrize("scope", ["cdn_batcher", "global"])
def test_the_kill_switch_holds_paths_in_the_queue(clock, scope) -> None:
    with invalidation_env(_config(), clock) as env:
        env.invoke("invalidator", content_changed({"paths": ["/held"]}, T0))
        env.world.set_kill_switch(scope, True)
        env.world.activate("cdn_batcher", clock).kill_switch.invalidate()
        held = _batch(env)
        assert held is not None and len(held["batchItemFailures"]) == 1
        assert env.cloudfront.requests == []
        env.world.set_kill_switch(scope, False)
        env.world.activate("cdn_batcher", clock).kill_switch.invalidate()
        assert _batch(env) == {"batchItemFailures": []}
        assert _sent(env) == ["/held"]


# --------------------------------------------------------------------------- issue 14 #5: unsafe paths


def test_unsafe_and_non_ascii_paths_are_url_encoded_like_s3_keys(clock) -> None:
    raw = ["/test[1].html", "/café.html", '/a"b.html', "/100%.html", "/ok%20already.html"]
    with invalidation_env(_config(), clock) as env:
        response = env.invoke("invalidator", console("invalidate_paths", cdn="site", paths=raw,
                                                     wildcards=["/pré/*"]))
        assert outcomes(response) == ["executed"]
        assert _batch(env) == {"batchItemFailures": []}
        assert env.cloudfront.refused == []  # CloudFront (modelled) accepted every path
        (request,) = env.cloudfront.requests
        assert sorted(request["paths"]) == sorted(["/test%5B1%5D.html", "/caf%C3%A9.html", "/a%22b.html",
                                                   "/100%25.html", "/ok%20already.html", "/pr%C3%A9/*"])
        # The same object through the S3-key mapping gets the same path.
        from reflex_core.invalidation_config import PathRule

        assert PathRule(key_prefix="site/").paths_for("site/café.html")[0] == "/caf%C3%A9.html"


def test_a_path_cloudfront_refuses_is_isolated_and_parked_not_the_whole_batch(clock) -> None:
    with invalidation_env(_config(), clock) as env:
        env.cloudfront.refuse_paths.add("/bad/2")
        for i in range(8):
            env.invoke("invalidator", content_changed({"paths": [f"/bad/{i}"]}, T0))
        assert _batch(env) == {"batchItemFailures": []}
        sent = sorted(_sent(env))
        assert sent == [f"/bad/{i}" for i in range(8) if i != 2]
        (record,) = audit_by_operation(env, "create_invalidation")
        assert record["outcome"] == "executed"
        assert record["after"]["refused_paths"] == 1 and record["after"]["refused_sample"] == ["/bad/2"]
        assert "InvalidArgument" in record["after"]["refused_reason"]
        parked = env.queue_bodies(env.world.settings.dead_letter_queue_url)
        assert [(p["reason"], p["paths"]) for p in parked] == [("cdn-path-refused", ["/bad/2"])]
