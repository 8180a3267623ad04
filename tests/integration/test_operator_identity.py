"""Operator identity enforced by the pipeline: with an `operators:` allowlist, a console command acts only when
Lambda's function URL verified its caller and the allowlist lets that caller do it; everything else is refused
naming the field, audited, and changes nothing (docs/security.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reflex_core.identity import OperatorAllowlist
from tests.conftest import ROOT, FakeLambdaContext
from tests.unit.test_identity import ACCOUNT, ALICE, AUDITOR, MALLORY, SET_CAPACITY, url_event


@pytest.fixture
def dev_config():  # overrides the conftest fixture: dev with prod's kind of allowlist
    from reflex_core.config import load_config_file

    config = load_config_file(ROOT / "config" / "dev.yaml")
    allowlist = OperatorAllowlist(operator=[f"arn:aws:iam::{ACCOUNT}:role/ReflexOperators"],
                                  read_only=[f"arn:aws:sts::{ACCOUNT}:assumed-role/ReflexAuditors/*"])
    return config.model_copy(update={"operators": allowlist, "account": ACCOUNT})


@pytest.fixture
def invoke(world):
    """The real scaler handler; a function URL request's HTTP response is unwrapped: its JSON body, with the HTTP
    status under `http_status` (a direct console command's answer has none)."""
    from scaler.handler import lambda_handler

    def _invoke(event: dict[str, Any]) -> dict[str, Any]:
        out = lambda_handler(event, FakeLambdaContext())
        if "statusCode" in out:
            assert out["headers"]["content-type"] == "application/json"
            return json.loads(out["body"]) | {"http_status": out["statusCode"]}
        return out

    return _invoke


def _api(world: Any) -> int:
    return int(world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"])


def _refused(response: dict[str, Any], field: str, http_status: int | None = None) -> None:
    assert response["status"] == "rejected", response
    assert any(e.startswith(field) for e in response["errors"]), response["errors"]
    assert response.get("http_status") == http_status, response


def test_a_direct_console_command_is_refused_when_the_stage_requires_a_verified_operator(world, invoke) -> None:
    before = _api(world)
    response = invoke(dict(SET_CAPACITY))
    _refused(response, "operator:")
    assert "function URL" in response["errors"][0]
    assert _api(world) == before
    (record,) = world.audit_records()
    assert record["outcome"] == "rejected:validation"
    assert world.dlq_messages() == []  # a console caller gets the error back; nothing to park


def test_a_verified_operator_through_the_function_url_acts(world, invoke) -> None:
    response = invoke(url_event(SET_CAPACITY, caller=ALICE))
    assert [d["outcome"] for d in response["decisions"]] == ["executed"], response
    assert response["http_status"] == 200
    assert _api(world) == 6
    (record,) = [r for r in world.audit_records() if r["operation"] == "set_capacity"]
    assert record["who"] == f"operator:{ALICE}"


def test_a_verified_caller_outside_the_allowlist_is_refused(world, invoke) -> None:
    before = _api(world)
    _refused(invoke(url_event(SET_CAPACITY, caller=MALLORY)), "requestContext.authorizer.iam.userArn", 403)
    assert _api(world) == before


def test_a_read_only_caller_may_dry_run_but_not_act(world, invoke) -> None:
    before = _api(world)
    _refused(invoke(url_event(SET_CAPACITY, caller=AUDITOR)), "requestContext.authorizer.iam.userArn", 403)
    dry = invoke(url_event(SET_CAPACITY | {"dry_run": True}, caller=AUDITOR))
    assert [d["outcome"] for d in dry["decisions"]] == ["dry-run"], dry
    assert _api(world) == before


def test_a_malformed_function_url_request_is_answered_not_parked(world, invoke) -> None:
    response = invoke(url_event(SET_CAPACITY, caller=None))
    _refused(response, "requestContext.authorizer.iam", 403)
    assert world.dlq_messages() == []


def test_a_function_url_caller_gets_http_statuses_it_can_act_on(world, invoke, clock) -> None:
    malformed = invoke(url_event(SET_CAPACITY | {"desired": "six"}, caller=ALICE))
    _refused(malformed, "desired", 400)
    world.runtime(clock).store.acquire_lock("ecs-service/web/api", "another-invocation", clock.now(), 60)
    busy = invoke(url_event(SET_CAPACITY | {"request_id": "busy-1"}, caller=ALICE))
    assert busy["status"] == "retry" and busy["http_status"] == 503, busy
    assert _api(world) == 4


def test_a_command_re_sent_through_the_function_url_with_its_request_id_acts_once(world, invoke) -> None:
    command = SET_CAPACITY | {"request_id": "change-7"}
    first = url_event(command, caller=ALICE)
    again = url_event(command, caller=ALICE)
    again["requestContext"] = again["requestContext"] | {"requestId": "another-envelope", "timeEpoch": 1796194900}
    assert first != again  # a new HTTP request: another envelope, the same command
    assert [d["outcome"] for d in invoke(first)["decisions"]] == ["executed"]
    assert invoke(again).get("duplicate") is True
    assert _api(world) == 6
    # Another command under the same request id is not the same command: decided on its own.
    other = invoke(url_event(command | {"desired": 7}, caller=ALICE))
    assert other.get("duplicate") is None and other["decisions"][0]["operation"] == "set_capacity"
