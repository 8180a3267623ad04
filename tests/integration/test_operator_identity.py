"""Operator identity enforced by the pipeline: with an `operators:` allowlist, a console command acts only when
Lambda's function URL verified its caller and the allowlist lets that caller do it; everything else is refused
naming the field, audited, and changes nothing (docs/security.md)."""

from __future__ import annotations

from typing import Any

import pytest

from reflex_core.identity import OperatorAllowlist
from tests.conftest import ROOT
from tests.unit.test_identity import ACCOUNT, ALICE, AUDITOR, MALLORY, SET_CAPACITY, url_event


@pytest.fixture
def dev_config():  # overrides the conftest fixture: dev with prod's kind of allowlist
    from reflex_core.config import load_config_file

    config = load_config_file(ROOT / "config" / "dev.yaml")
    allowlist = OperatorAllowlist(operator=[f"arn:aws:iam::{ACCOUNT}:role/ReflexOperators"],
                                  read_only=[f"arn:aws:sts::{ACCOUNT}:assumed-role/ReflexAuditors/*"])
    return config.model_copy(update={"operators": allowlist, "account": ACCOUNT})


def _api(world: Any) -> int:
    return int(world.clients.ecs.describe_services(cluster="web", services=["api"])["services"][0]["desiredCount"])


def _refused(response: dict[str, Any], field: str) -> None:
    assert response["status"] == "rejected", response
    assert any(e.startswith(field) for e in response["errors"]), response["errors"]


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
    assert _api(world) == 6
    (record,) = [r for r in world.audit_records() if r["operation"] == "set_capacity"]
    assert record["who"] == f"operator:{ALICE}"


def test_a_verified_caller_outside_the_allowlist_is_refused(world, invoke) -> None:
    before = _api(world)
    _refused(invoke(url_event(SET_CAPACITY, caller=MALLORY)), "requestContext.authorizer.iam.userArn")
    assert _api(world) == before


def test_a_read_only_caller_may_dry_run_but_not_act(world, invoke) -> None:
    before = _api(world)
    _refused(invoke(url_event(SET_CAPACITY, caller=AUDITOR)), "requestContext.authorizer.iam.userArn")
    dry = invoke(url_event(SET_CAPACITY | {"dry_run": True}, caller=AUDITOR))
    assert [d["outcome"] for d in dry["decisions"]] == ["dry-run"], dry
    assert _api(world) == before


def test_a_malformed_function_url_request_is_answered_not_parked(world, invoke) -> None:
    response = invoke(url_event(SET_CAPACITY, caller=None))
    _refused(response, "requestContext.authorizer.iam")
    assert world.dlq_messages() == []
