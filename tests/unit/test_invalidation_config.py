"""The `invalidation:` config: what it refuses (naming the field), origin path rules, and request validation."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from invalidator.cdn_messages import PathsError, validate_cdn_paths
from invalidator.invalidation_requests import console_request, continuation_request, event_request
from reflex_core.config import ConfigError, ReflexConfig, load_config_file, parse_config
from reflex_core.invalidation_config import CdnOrigin, PathRule
from reflex_core.triggers import TriggerError, parse_trigger
from tests.conftest import ROOT, T0
from tests.support.events import custom_event


def _config(invalidation: dict[str, Any]) -> ReflexConfig:
    return parse_config({"stage": "unit", "notify": {"topic_name": "t"}, "invalidation": invalidation}, "unit.yaml")


def _cache(**kw: Any) -> dict[str, Any]:
    return {"name": "catalog", "redis": {"host": "cache.internal"}, **kw}


def _cdn(**kw: Any) -> dict[str, Any]:
    return {"name": "site", "distribution_id": "E2EXAMPLE0TEST1", **kw}


def _error(invalidation: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        _config(invalidation)
    return str(err.value)


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_shipped_configs_have_an_invalidation_example(stage: str) -> None:
    inv = load_config_file(ROOT / "config" / f"{stage}.yaml").invalidation
    assert inv.caches and inv.cdn and inv.vpc is not None


@pytest.mark.parametrize(("invalidation", "field", "message"), [
    ({"caches": [{"name": "catalog"}]}, "invalidation.caches.0", "exactly one of `redis`"),
    ({"caches": [_cache(create={})]}, "invalidation.caches.0", "exactly one of `redis`"),
    ({"caches": [{"name": "catalog", "create": {}}]}, "invalidation", "a created cache lives in a VPC"),
    ({"caches": [_cache(), _cache()]}, "invalidation", "cache names must be unique"),
    ({"caches": [_cache(name="Catalog")]}, "invalidation.caches.0.name", "pattern"),
    ({"caches": [_cache(tag_namespace="a{b}")]}, "tag_namespace", "'{' or '}'"),
    ({"caches": [_cache(on_events=[{"source": "reflex.dev", "detail_type": "X"}])]}, "source", "Reflex's own"),
    ({"caches": [_cache(on_events=[{"source": "aws.s3", "detail_type": "Object Created"}])]}, "source", "aws."),
    ({"caches": [_cache(on_alarms=[{"alarms": {"names": ["a"]}, "invalidate": {"paths": ["/x"]}}])]},
     "invalidation.caches.0", "belong to a `cdn` entry"),
    ({"caches": [_cache(schedules=[{"name": "n", "cron": "0 3 * * ?", "invalidate": {"patterns": ["p:*"]}}])]},
     "cron", "6 fields"),
    ({"caches": [_cache(schedules=[{"name": "n", "cron": "0 3 * * ? *", "invalidate": {"patterns": ["p:["]}}])]},
     "patterns", "patterns[0]: unbalanced '['"),
    ({"caches": [_cache(scan={"count": 0})]}, "scan.count", "greater than or equal to 1"),
    ({"cdn": [_cdn(max_paths_per_batch=3001)]}, "max_paths_per_batch", "less than or equal to 3000"),
    ({"cdn": [_cdn(max_wildcards=16)]}, "max_wildcards", "less than or equal to 15"),
    ({"cdn": [_cdn(coalesce_window_s=301)]}, "coalesce_window_s", "less than or equal to 300"),
    ({"cdn": [_cdn(distribution_id="managed")]}, "invalidation.cdn.0", "'managed' and a `create` block"),
    ({"cdn": [_cdn(distribution_id="managed", create={})]}, "invalidation.cdn.0", "needs `origin`"),
    ({"cdn": [_cdn(), _cdn(name="other")]}, "invalidation", "each distribution may have one cdn entry"),
    ({"cdn": [_cdn(on_alarms=[{"alarms": {"names": ["a"]}, "invalidate": {"paths": ["x"]}}])]},
     "paths", "must start with '/'"),
    ({"cdn": [_cdn(schedules=[{"name": "n", "cron": "0 3 * * ? *", "invalidate": {"paths": ["#tag"]}}])]},
     "invalidation.cdn.0", "cache_tags: true"),
    ({"cdn": [_cdn(origin={"bucket": "b-origin", "path_rules": [{"path_prefix": "site/"}]})]},
     "path_prefix", "start and end with '/'"),
    ({"cdn": [_cdn(wildcard_prefixes_without_inventory=["/no-slash"])]}, "invalidation.cdn.0",
     "wildcard_prefixes_without_inventory[0]"),
    ({"vpc": {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": ["subnet-1"]}}, "subnet_ids", "not a subnet id"),
])
def test_bad_config_is_refused_naming_the_field(invalidation: dict[str, Any], field: str, message: str) -> None:
    text = _error(invalidation)
    assert "unit.yaml" in text and field in text and message in text, text


def test_paths_of_an_origin_key() -> None:
    rule = PathRule(key_prefix="site/", path_prefix="/", pretty_suffixes=[".html"])
    assert rule.paths_for("site/docs/index.html") == ["/docs/index.html", "/docs/"]
    assert rule.paths_for("site/index.html") == ["/index.html", "/"]
    assert rule.paths_for("site/a/b.html") == ["/a/b.html", "/a/b"]
    assert rule.paths_for("site/img/a b+c.png") == ["/img/a%20b+c.png"]
    assert rule.paths_for("site/dir/") == []
    origin = CdnOrigin(bucket="b-origin", path_rules=[PathRule(), PathRule(key_prefix="site/", path_prefix="/v2/")])
    assert origin.paths_for("site/x.css") == ["/v2/x.css"]  # the longest key prefix wins
    assert origin.paths_for("other/x.css") == ["/other/x.css"]


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=120).filter(lambda k: not k.endswith("/")))
def test_every_mapped_path_is_one_cloudfront_accepts(key: str) -> None:
    cdn = _config({"cdn": [_cdn(origin={"bucket": "b-origin"})]}).invalidation.cdn[0]
    assert cdn.origin is not None
    paths = cdn.origin.paths_for(key)
    assert paths and all(p.startswith("/") for p in paths)
    validate_cdn_paths(cdn, paths, [])


def test_path_validation_names_the_field() -> None:
    cdn = _config({"cdn": [_cdn(max_paths_per_request=2)]}).invalidation.cdn[0]
    with pytest.raises(PathsError) as err:
        validate_cdn_paths(cdn, ["/a", "b"], [], prefix="detail.")
    assert err.value.errors == ["detail.paths[1]: must start with '/': 'b'"]
    with pytest.raises(PathsError, match="more than the 2 allowed"):
        validate_cdn_paths(cdn, ["/a", "/b", "/c"], [])
    with pytest.raises(PathsError, match=r"wildcards\[0\]"):
        validate_cdn_paths(cdn, ["/a"], ["/img/*/x"])
    assert validate_cdn_paths(cdn, ["/a", "/a"], ["/img/*"]) == (["/a"], ["/img/*"])


# ------------------------------------------------------------------ requests


def _trigger(event: dict[str, Any]):
    return parse_trigger(event, datetime.now(UTC), "req-1")


def _both() -> ReflexConfig:
    content = [{"source": "app.content", "detail_type": "ContentChanged"}]
    return _config({"caches": [_cache(on_events=content), _cache(name="sessions", on_events=content)],
                    "cdn": [_cdn(on_events=content)]})


def test_an_event_may_restrict_which_caches_act() -> None:
    config = _both()
    request = event_request(_trigger(custom_event("app.content", "ContentChanged",
                                                  {"tags": ["t"], "caches": ["sessions"]}, T0)), config)
    assert request is not None and [w.cache for w in request.caches] == ["sessions"]
    assert [s.reason for s in request.skips] == ["nothing-to-invalidate"]  # the distribution: no paths given
    with pytest.raises(TriggerError, match=r"detail.caches\[0\]: no cache entry named 'nope'"):
        event_request(_trigger(custom_event("app.content", "ContentChanged", {"tags": ["t"], "caches": ["nope"]},
                                            T0)), config)


def test_console_commands_refuse_unknown_keys_and_need_an_operator() -> None:
    config = _both()
    with pytest.raises(TriggerError) as err:
        console_request({"command": "invalidate_cache", "cache": "catalog", "keys": ["k"], "reason": "why",
                         "operator": "me", "force": True}, config)
    assert err.value.errors == ["force: Extra inputs are not permitted"]
    with pytest.raises(TriggerError, match="operator: Field required"):
        console_request({"command": "flush_cache", "cache": "catalog", "confirm": "catalog", "reason": "why"}, config)


def test_a_continuation_message_is_validated() -> None:
    config = _both()
    ok = {"reflex_queue": {"queue": "q", "kind": "continue", "message_ids": ["m#1"], "body": {
        "cache": "catalog", "operation": "pattern", "target": "p:*", "run_id": "r", "runs": 1, "attempt": 0,
        "reason": "time-budget"}}}
    request = continuation_request(_trigger(ok), config)
    assert request.continuation is not None and request.continuation.runs == 1
    bad = {"reflex_queue": {**ok["reflex_queue"], "body": {**ok["reflex_queue"]["body"], "operation": "drop"}}}
    with pytest.raises(TriggerError, match=r"reflex_queue\.body\.operation"):
        continuation_request(_trigger(bad), config)
    other = {"reflex_queue": {**ok["reflex_queue"], "body": {**ok["reflex_queue"]["body"], "cache": "x"}}}
    with pytest.raises(TriggerError, match=r"reflex_queue\.body\.cache: no cache named 'x'"):
        continuation_request(_trigger(other), config)


def test_the_queue_trigger_keys_on_its_messages() -> None:
    one = _trigger({"reflex_queue": {"queue": "q", "kind": "k", "message_ids": ["b#1", "a#1"]}})
    same = _trigger({"reflex_queue": {"queue": "q", "kind": "k", "message_ids": ["a#1", "b#1"]}})
    again = _trigger({"reflex_queue": {"queue": "q", "kind": "k", "message_ids": ["a#2", "b#1"]}})
    assert one.kind == "queue" and one.who == "queue:q" and one.source == "sqs:q"
    assert one.idempotency_key == same.idempotency_key != again.idempotency_key
    with pytest.raises(TriggerError, match=r"reflex_queue\.message_ids"):
        _trigger({"reflex_queue": {"queue": "q", "kind": "k", "message_ids": []}})


@pytest.mark.parametrize(("vpc", "message"), [
    ({"endpoints": ["dynamodb"]}, "route_table_ids: the DynamoDB gateway endpoint"),
    ({"endpoints": ["sqs"], "route_table_ids": ["rtb-0123456789abcdef1"]}, "route_table_ids: only used by"),
    ({"endpoints": ["sqs", "sqs"]}, "endpoints: each service once; repeated: sqs"),
    ({"endpoints": ["dynamodb"], "route_table_ids": ["main"]}, "route_table_ids.0: 'main' is not a route table id"),
    ({"endpoints": ["s3"]}, "invalidation.vpc.endpoints.0: Input should be"),
])
def test_vpc_endpoint_settings_are_checked(vpc, message):
    data = {"stage": "dev", "notify": {"topic_name": "reflex-dev"},
            "invalidation": {"vpc": {"vpc_id": "vpc-0123456789abcdef0", "subnet_ids": ["subnet-0123456789abcdef1"],
                                     **vpc}}}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data, "dev.yaml")
