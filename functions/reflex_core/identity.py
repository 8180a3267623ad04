"""Operator identity, verified rather than asserted (docs/security.md).

A console command that changes something (approve or abort a promotion, flush a cache, set a capacity, ...) must
come from a person whose identity AWS has verified. The entry point is each function's IAM-authenticated Lambda
function URL (`AuthType: AWS_IAM`): Lambda checks the SigV4 signature and the caller's permissions
(`lambda:InvokeFunctionUrl`, and `lambda:InvokeFunction` with `lambda:InvokedViaFunctionUrl`, both granted by the
stack's operators' managed policy), then passes the verified caller in `requestContext.authorizer.iam`. This module
turns that into an `Operator`, checked against the stage config's `operators:` allowlist:

```yaml
operators:
  operator:  ["arn:aws:sts::123456789012:assumed-role/ReflexOperators/*"]   # may change things
  read_only: ["arn:aws:iam::123456789012:role/ReflexAuditors"]               # dry runs only
```

A pattern is an ARN with `*` and `?` wildcards, matched against the caller's ARN; for an assumed role the role's
own ARN (`arn:aws:iam::<account>:role/<name>`) is matched too, so a pattern may name the role either way. A
payload's own `operator` field is never trusted: it is kept in the audit as `claimed_operator` only.

Everything here is pure (no AWS call): the function URL event is the evidence.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["operator", "read-only"]
OPERATOR: Role = "operator"
READ_ONLY: Role = "read-only"
# The `source` of a trigger that came through the function URL (parse_trigger sets it).
FUNCTION_URL_SOURCE = "function-url"
_ARN_PATTERN = re.compile(r"^arn:aws[a-z\-]*:(iam|sts)::(\d{12}|\*|\?+):[A-Za-z0-9+=,.@_\-/*?]+$")
_ASSUMED_ROLE = re.compile(r"^arn:(aws[a-z\-]*):sts::(\d{12}):assumed-role/([^/]+)/.+$")


class IdentityError(ValueError):
    """The verified identity is missing, malformed or not allowed; `errors` name the field (`field: problem`).

    `reflex_core.triggers.TriggerError` is raised from it where a trigger is parsed, so the pipeline audits the
    refusal like any bad input."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


class OperatorAllowlist(BaseModel):
    """`operators:` of the stage config: who may send console commands, by verified IAM ARN."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operator: list[str] = Field(default_factory=list, description="ARN patterns of principals that may act")
    read_only: list[str] = Field(default_factory=list,
                                 description="ARN patterns of principals that may only run dry runs")
    require_verified: bool | None = Field(
        default=None, description="refuse console commands without a verified identity; default: true when any "
                                  "operator or read-only pattern is listed")

    @field_validator("operator", "read_only")
    @classmethod
    def _arn_patterns(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _ARN_PATTERN.match(value):
                raise ValueError(f"{value!r} is not an IAM or STS ARN pattern (arn:aws:iam::<account>:role/<name>, "
                                 "arn:aws:sts::<account>:assumed-role/<role>/*, wildcards * and ?)")
            if value.split(":", 5)[5] in ("*", "role/*", "user/*", "assumed-role/*"):
                raise ValueError(f"{value!r} allows every principal of the account: name the role or user")
        return values

    @property
    def verification_required(self) -> bool:
        # Listing read-only principals says who may only look: a direct invocation, which could claim any name,
        # must not then act unverified.
        return bool(self.operator or self.read_only) if self.require_verified is None else self.require_verified


@dataclass(frozen=True)
class VerifiedCaller:
    """The IAM principal Lambda authenticated for a function URL request."""

    arn: str
    account: str
    user_id: str = ""


@dataclass(frozen=True)
class Operator:
    """A caller allowed by the allowlist, with the role it was allowed as."""

    arn: str
    account: str
    role: Role

    @property
    def who(self) -> str:
        """The audit's `who`: the verified ARN, never a name from the payload."""
        return f"operator:{self.arn}"


# --------------------------------------------------------------------------- the function URL event


def is_function_url_event(event: Any) -> bool:
    """A Lambda function URL request (payload format 2.0): `requestContext.http` and a `rawPath`."""
    return (isinstance(event, dict) and isinstance(event.get("requestContext"), dict)
            and isinstance(event["requestContext"].get("http"), dict) and "rawPath" in event)


# Errors about who is calling (not about what was asked): the caller is refused, 403.
_IDENTITY_FIELDS = ("requestContext.authorizer", "operator:", "operators.operator:")


def function_url_response(result: dict[str, Any]) -> dict[str, Any]:
    """The handler's answer as a function URL response: the same JSON as the body, and an HTTP status a client
    (curl, a script, the AWS CLI's `invoke-url` wrappers) can act on without reading it. 400: the request is
    malformed (errors name the field); 403: the caller may not do this; 503: try again (a lock, a throttled
    read: `Retry-After`); 500: an action failed (audited); 200: decided, whatever the decision."""
    status = result.get("status")
    headers = {"content-type": "application/json"}
    if status == "rejected":
        errors = [str(e) for e in result.get("errors", [])]
        code = 403 if errors and all(e.startswith(_IDENTITY_FIELDS) for e in errors) else 400
    elif status == "failed":
        code = 500
    elif status == "retry":
        code = 503
        headers["retry-after"] = "30"
    else:
        code = 200
    return {"statusCode": code, "headers": headers, "body": json.dumps(result, default=str)}


def verified_caller(event: dict[str, Any]) -> VerifiedCaller:
    """The caller Lambda verified, from `requestContext.authorizer.iam` (present only with AuthType AWS_IAM)."""
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam")
    if not isinstance(iam, dict):
        raise IdentityError(["requestContext.authorizer.iam: missing: the function URL must use AuthType AWS_IAM, "
                             "and only requests signed with SigV4 carry a verified caller"])
    arn = iam.get("userArn")
    account = iam.get("accountId")
    if not isinstance(arn, str) or not arn.startswith("arn:"):
        raise IdentityError(["requestContext.authorizer.iam.userArn: missing or not an ARN"])
    if not isinstance(account, str) or not re.fullmatch(r"\d{12}", account):
        raise IdentityError(["requestContext.authorizer.iam.accountId: missing or not a 12-digit account id"])
    if arn.split(":")[4:5] != [account]:
        raise IdentityError([f"requestContext.authorizer.iam.userArn: {arn} is not in account {account}"])
    return VerifiedCaller(arn=arn, account=account, user_id=str(iam.get("userId") or ""))


def command_payload(event: dict[str, Any]) -> dict[str, Any]:
    """The console command a function URL request carries in its body (JSON, maybe base64-encoded)."""
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
    if method != "POST":
        raise IdentityError([f"requestContext.http.method: {method!r}: send the command with POST"])
    body = event.get("body")
    if not isinstance(body, str) or not body:
        raise IdentityError(["body: missing: POST the console command as JSON"])
    if event.get("isBase64Encoded"):
        try:
            body = base64.b64decode(body, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise IdentityError(["body: not valid base64-encoded UTF-8"]) from None
    try:
        payload = json.loads(body)
    except json.JSONDecodeError:
        raise IdentityError(["body: not valid JSON"]) from None
    if not isinstance(payload, dict) or "command" not in payload:
        raise IdentityError(["body.command: missing: the body is a console command ({\"command\": ...})"])
    return payload


# --------------------------------------------------------------------------- the allowlist


def principal_arns(arn: str) -> list[str]:
    """The ARNs a caller is matched as: itself and, for an assumed-role session, its role."""
    match = _ASSUMED_ROLE.match(arn)
    if match is None:
        return [arn]
    partition, account, role = match.groups()
    return [arn, f"arn:{partition}:iam::{account}:role/{role}"]


def matches(patterns: list[str], arn: str) -> bool:
    return any(fnmatch.fnmatchcase(candidate, pattern) for pattern in patterns for candidate in principal_arns(arn))


def required_role(payload: dict[str, Any]) -> Role:
    """A dry run changes nothing: read-only operators may ask for one. Anything else needs an operator."""
    return READ_ONLY if payload.get("dry_run") is True else OPERATOR


def authorize(caller: VerifiedCaller, allowlist: OperatorAllowlist, needed: Role, *,
              expected_account: str | None = None) -> Operator:
    """The `Operator` for `caller` if the allowlist lets it do what `needed` asks; `IdentityError` otherwise."""
    field = "requestContext.authorizer.iam.userArn"
    if expected_account and caller.account != expected_account:
        raise IdentityError([f"requestContext.authorizer.iam.accountId: {caller.account} is not the stage's account "
                             f"{expected_account}"])
    if not allowlist.operator:
        # No operator listed: IAM cannot tell the operators' policy from the read-only one (both may invoke the
        # URL), so a verified caller may only dry-run until the stage names its operators.
        if needed == READ_ONLY:
            return Operator(arn=caller.arn, account=caller.account, role=READ_ONLY)
        raise IdentityError([f"operators.operator: the stage lists no operators, so {caller.arn} may only send dry "
                             "runs (\"dry_run\": true) through the function URL; list the operators' role ARNs "
                             "(docs/security.md)"])
    if matches(allowlist.operator, caller.arn):
        return Operator(arn=caller.arn, account=caller.account, role=OPERATOR)
    if matches(allowlist.read_only, caller.arn):
        if needed == READ_ONLY:
            return Operator(arn=caller.arn, account=caller.account, role=READ_ONLY)
        raise IdentityError([f"{field}: {caller.arn} is a read-only operator (operators.read_only): it may only send "
                             "dry runs (\"dry_run\": true)"])
    raise IdentityError([f"{field}: {caller.arn} is not in the stage's operators allowlist (operators.operator, "
                         "operators.read_only)"])


def operator_from_event(event: dict[str, Any], allowlist: OperatorAllowlist, *,
                        expected_account: str | None = None) -> tuple[Operator, dict[str, Any]]:
    """(the verified, allowed operator, the command) of a function URL request; `IdentityError` otherwise."""
    caller = verified_caller(event)
    payload = command_payload(event)
    return authorize(caller, allowlist, required_role(payload), expected_account=expected_account), payload


def operator_label(arn: str) -> str:
    """What a command's `operator` field becomes (at most 128 characters): the verified ARN, or for a long
    assumed-role ARN its `<role>/<session>` part (the full ARN is the trigger's `who`)."""
    if len(arn) <= 128:
        return arn
    return arn.split(":", 5)[5].removeprefix("assumed-role/")[-128:]


def check_console_trigger(source: str, who: str, payload: dict[str, Any] | None, allowlist: OperatorAllowlist, *,
                          expected_account: str | None = None) -> Operator | None:
    """The pipeline's hook: the `Operator` of a console command, or `IdentityError` when it needs one it lacks.

    `source` and `who` are the parsed trigger's. A command that came through the function URL carries the caller
    Lambda verified (`who` = `operator:<arn>`, set by parse_trigger); it is checked against the allowlist here.
    A command invoked directly (the Lambda console's Test tab, `aws lambda invoke`) carries only a claimed name: it
    is refused when the stage requires verification (`operators.verification_required`), else it runs as before
    and the audit's `who` says `console:<claimed name>`.
    """
    if payload is None or "command" not in payload:
        return None
    if source == FUNCTION_URL_SOURCE:
        arn = who.removeprefix("operator:")
        caller = VerifiedCaller(arn=arn, account=arn.split(":")[4] if arn.count(":") >= 5 else "")
        return authorize(caller, allowlist, required_role(payload), expected_account=expected_account)
    if allowlist.verification_required:
        raise IdentityError(["operator: a console command needs a verified operator: send it to the function URL, "
                             "signed with SigV4 (docs/security.md); a claimed \"operator\" field is not trusted"])
    return None
