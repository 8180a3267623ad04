"""Operator identity: verified by Lambda (function URL, AuthType AWS_IAM), checked against `operators:`.

The parse and the allowlist are pure (reflex_core.identity, the function URL branch of parse_trigger); the last test
sends a function URL request through the real scaler handler and finds the verified ARN in the audit trail.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from reflex_core.identity import (
    FUNCTION_URL_SOURCE,
    IdentityError,
    OperatorAllowlist,
    check_console_trigger,
    principal_arns,
)
from reflex_core.triggers import TriggerError, parse_trigger

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
ACCOUNT = "123456789012"
ALICE = f"arn:aws:sts::{ACCOUNT}:assumed-role/ReflexOperators/alice"
AUDITOR = f"arn:aws:sts::{ACCOUNT}:assumed-role/ReflexAuditors/bob"
MALLORY = f"arn:aws:sts::{ACCOUNT}:assumed-role/Developers/mallory"
ALLOWLIST = OperatorAllowlist(operator=[f"arn:aws:iam::{ACCOUNT}:role/ReflexOperators"],
                              read_only=[f"arn:aws:sts::{ACCOUNT}:assumed-role/ReflexAuditors/*"])


def url_event(command: dict[str, Any], caller: str | None = ALICE, *, base64_body: bool = False,
              method: str = "POST") -> dict[str, Any]:
    """A Lambda function URL request (payload format 2.0) as Lambda delivers it with AuthType AWS_IAM."""
    body = json.dumps(command)
    context: dict[str, Any] = {"requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "accountId": "anonymous",
                               "domainName": "abc.lambda-url.eu-west-1.on.aws",
                               "http": {"method": method, "path": "/", "protocol": "HTTP/1.1",
                                        "sourceIp": "192.0.2.1", "userAgent": "awscurl"}}
    if caller is not None:
        context["authorizer"] = {"iam": {"accessKey": "ASIAEXAMPLE", "accountId": caller.split(":")[4],
                                         "callerId": "AROAEXAMPLE:alice", "userArn": caller, "userId": "AROAEXAMPLE"}}
    return {"version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
            "headers": {"content-type": "application/json"}, "requestContext": context,
            "body": base64.b64encode(body.encode()).decode() if base64_body else body,
            "isBase64Encoded": base64_body}


SET_CAPACITY = {"command": "set_capacity", "policy": "api", "desired": 6, "reason": "launch", "operator": "root"}


def test_function_url_request_becomes_a_console_trigger_carrying_the_verified_caller() -> None:
    trigger = parse_trigger(url_event(SET_CAPACITY), NOW)
    assert (trigger.kind, trigger.source, trigger.who) == ("console", FUNCTION_URL_SOURCE, f"operator:{ALICE}")
    # The claimed "operator" ("root") is replaced by the verified identity.
    assert trigger.payload is not None and trigger.payload["operator"] == ALICE
    assert trigger.payload["desired"] == 6
    assert parse_trigger(url_event(SET_CAPACITY, base64_body=True), NOW).payload == trigger.payload


@pytest.mark.parametrize(("event", "field"), [
    (url_event(SET_CAPACITY, caller=None), "requestContext.authorizer.iam"),
    (url_event(SET_CAPACITY, method="GET"), "requestContext.http.method"),
    ({**url_event(SET_CAPACITY), "body": "not json"}, "body"),
    ({**url_event(SET_CAPACITY), "body": json.dumps({"policy": "api"})}, "body.command"),
    ({**url_event(SET_CAPACITY), "requestContext": {"authorizer": {}}}, "requestContext"),
])
def test_a_request_without_a_verified_caller_or_command_is_refused_naming_the_field(event: dict, field: str) -> None:
    with pytest.raises(TriggerError) as err:
        parse_trigger(event, NOW)
    assert any(e.startswith(field + ":") for e in err.value.errors), err.value.errors


def test_a_caller_from_another_account_than_its_arn_says_is_refused() -> None:
    event = url_event(SET_CAPACITY)
    event["requestContext"]["authorizer"]["iam"]["accountId"] = "210987654321"
    with pytest.raises(TriggerError, match="is not in account 210987654321"):
        parse_trigger(event, NOW)


def _check(event: dict[str, Any], allowlist: OperatorAllowlist = ALLOWLIST, **kwargs: Any) -> Any:
    trigger = parse_trigger(event, NOW)
    return check_console_trigger(trigger.source, trigger.who, trigger.payload, allowlist, **kwargs)


def test_an_allowlisted_operator_may_act_matched_by_its_role() -> None:
    operator = _check(url_event(SET_CAPACITY))
    assert (operator.arn, operator.role, operator.who) == (ALICE, "operator", f"operator:{ALICE}")
    assert principal_arns(ALICE) == [ALICE, f"arn:aws:iam::{ACCOUNT}:role/ReflexOperators"]


def test_a_read_only_operator_may_only_dry_run() -> None:
    assert _check(url_event({**SET_CAPACITY, "dry_run": True}, caller=AUDITOR)).role == "read-only"
    with pytest.raises(IdentityError) as err:
        _check(url_event(SET_CAPACITY, caller=AUDITOR))
    assert err.value.errors[0].startswith("requestContext.authorizer.iam.userArn:")
    assert "read-only" in err.value.errors[0]


def test_a_caller_not_in_the_allowlist_is_refused_naming_it() -> None:
    with pytest.raises(IdentityError, match="Developers/mallory is not in the stage's operators allowlist"):
        _check(url_event(SET_CAPACITY, caller=MALLORY))
    with pytest.raises(IdentityError, match="is not the stage's account"):
        _check(url_event(SET_CAPACITY), expected_account="210987654321")


def test_a_directly_invoked_command_with_a_claimed_operator_is_refused_when_verification_is_required() -> None:
    direct = parse_trigger(SET_CAPACITY, NOW)
    assert direct.who == "console:root"  # what the payload claims, never trusted
    with pytest.raises(IdentityError) as err:
        check_console_trigger(direct.source, direct.who, direct.payload, ALLOWLIST)
    assert err.value.errors[0].startswith("operator: a console command needs a verified operator")
    # Without an allowlist (dev), the direct command is not refused; the audit shows the claim as such.
    assert check_console_trigger(direct.source, direct.who, direct.payload, OperatorAllowlist()) is None
    # Nor are triggers that are not console commands.
    assert check_console_trigger("eventbridge", "event:app.ops", None, ALLOWLIST) is None


def test_an_assertion_in_the_event_cannot_pass_for_a_verified_identity() -> None:
    # A direct invocation that claims the function-url source or an operator `who` is still a direct console payload.
    forged = {**SET_CAPACITY, "source": FUNCTION_URL_SOURCE, "who": f"operator:{ALICE}"}
    trigger = parse_trigger(forged, NOW)
    assert (trigger.source, trigger.who) == ("console", "console:root")
    with pytest.raises(IdentityError):
        check_console_trigger(trigger.source, trigger.who, trigger.payload, ALLOWLIST)


@pytest.mark.parametrize("pattern", ["arn:aws:iam::123456789012:role/*", "arn:aws:sts::123456789012:*", "alice",
                                     "arn:aws:s3:::bucket"])
def test_allowlist_refuses_patterns_that_name_nobody_in_particular(pattern: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        OperatorAllowlist(operator=[pattern])


def test_without_listed_operators_a_function_url_caller_may_only_dry_run(world: Any, invoke: Any) -> None:
    # dev lists no operators: IAM alone cannot tell the operators' policy from the read-only one.
    answer = invoke(url_event(SET_CAPACITY))
    assert answer["statusCode"] == 403, answer  # a function URL caller gets an HTTP response
    refused = json.loads(answer["body"])
    assert refused["status"] == "rejected" and refused["errors"][0].startswith("operators.operator:"), refused
    answer = invoke(url_event(SET_CAPACITY | {"dry_run": True}))
    response = json.loads(answer["body"])
    assert answer["statusCode"] == 200 and response["status"] == "ok", response
    (record,) = [r for r in world.audit_records() if r["operation"] == "set_capacity"]
    assert record["who"] == f"operator:{ALICE}"
    assert record["trigger"]["source"] == FUNCTION_URL_SOURCE
    assert record["outcome"] == "dry-run"


def test_listing_only_read_only_principals_still_requires_a_verified_operator() -> None:
    allowlist = OperatorAllowlist(read_only=[AUDITOR])
    assert allowlist.verification_required
    trigger = parse_trigger(dict(SET_CAPACITY), NOW)
    with pytest.raises(IdentityError, match="verified operator"):
        check_console_trigger(trigger.source, trigger.who, trigger.payload, allowlist)
    assert not OperatorAllowlist(read_only=[AUDITOR], require_verified=False).verification_required
