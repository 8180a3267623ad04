"""Injected AWS faults, per API and call, for tests and simulator scenarios.

A `FaultInjector` sits on boto3 clients (moto behind them) through two botocore hooks:

* `before-call` (once per API call): counts the call (per operation and overall, `calls`) and decides which
  fault, if any, applies to it;
* `before-send` (once per HTTP attempt, so botocore's own retries are exercised): returns the injected
  response or raises the injected exception instead of (or after) letting moto answer.

Fault kinds:

=================  ======================================================================================
``throttle``       the service answers 400 ``ThrottlingException`` (retried by botocore)
``5xx``            the service answers 503 ``ServiceUnavailable`` (retried by botocore)
``access-denied``  the service answers 403 ``AccessDeniedException`` (not retried)
``timeout``        the request times out before reaching the service (``ReadTimeoutError``; retried)
``lost-response``  the service APPLIES the request, then the answer is lost (``ReadTimeoutError``; botocore
                   retries, so a non-idempotent call is applied twice, a conditional write fails its own
                   condition)
``crash-after``    the service applies the request, then the function dies (``SimulatedCrash``, a
                   ``BaseException`` that no ``except Exception`` catches: like Lambda killing a timed-out
                   invocation)
=================  ======================================================================================

By default a fault hits the first attempt of each matching call only (botocore's retry then succeeds);
`persist=True` hits every attempt, so the call fails once botocore's attempts are used up.
Which calls match: `operation` (``"UpdateService"``, ``"ecs.UpdateService"`` or ``"*"``), and one of
`calls` (1-based indices among the matching calls), `count` (the next N matching calls) or a time window
(`start`/`end` on the injector's clock); with none of them, every matching call.

Error bodies are written in each service's protocol (JSON, query/EC2 XML, REST-XML, REST-JSON, RPC v2 CBOR),
so botocore parses them exactly as it parses AWS's.
"""

from __future__ import annotations

import io
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

FaultKind = Literal["throttle", "5xx", "access-denied", "timeout", "lost-response", "crash-after"]
FAULT_KINDS: tuple[str, ...] = ("throttle", "5xx", "access-denied", "timeout", "lost-response", "crash-after")

_ERRORS: dict[str, tuple[int, str]] = {
    "throttle": (400, "ThrottlingException"),
    "5xx": (503, "ServiceUnavailable"),
    "access-denied": (403, "AccessDeniedException"),
}


class SimulatedCrash(BaseException):
    """The function died right after an AWS call (timeout, out of memory): nothing after it runs."""


@dataclass
class Fault:
    operation: str
    kind: FaultKind
    calls: tuple[int, ...] = ()
    count: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    persist: bool = False
    hits: int = 0  # matching calls this fault was applied to

    def matches(self, service: str, operation: str) -> bool:
        if self.operation in ("*", operation):
            return True
        return self.operation == f"{service}.{operation}"


@dataclass
class CallRecord:
    service: str
    operation: str
    index: int  # 1-based, among all calls seen by the injector
    fault: str | None = None
    attempts: int = 0


@dataclass
class _Active:
    fault: Fault | None
    record: CallRecord
    attempts: int = 0


class FaultInjector:
    def __init__(self, clock: Any | None = None) -> None:
        self._clock = clock
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._matching: Counter[int] = Counter()  # id(fault) -> matching calls seen
        self.calls: list[CallRecord] = []

    # ------------------------------------------------------------------ configuration
    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def fail(self, operation: str, kind: FaultKind, **options: Any) -> Fault:
        return self.add(Fault(operation=operation, kind=kind, **options))

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def operations(self) -> list[str]:
        """`service.Operation` of every call seen, in order."""
        return [f"{c.service}.{c.operation}" for c in self.calls]

    # ------------------------------------------------------------------ wiring
    def attach(self, client: Any) -> Any:
        service = client.meta.service_model.service_name
        events = client.meta.events
        events.register_first("before-call", self._before_call_for(service))
        # botocore asks every before-send handler and takes the first answer: moto's must not also run, or an
        # injected error would come back for a request moto has applied. The injector calls moto itself.
        from moto.core.models import botocore_stubber

        events.unregister("before-send", botocore_stubber)
        events.register("before-send", self._before_send_for(client))
        return client

    def wrap_factory(self, factory: Callable[[str], Any]) -> Callable[[str], Any]:
        """A client factory (see reflex_core.aws_clients) whose clients carry this injector."""

        def make(service: str) -> Any:
            return self.attach(factory(service))

        return make

    # ------------------------------------------------------------------ hooks
    def _now(self) -> datetime | None:
        return self._clock.now() if self._clock is not None else None

    def _before_call_for(self, service: str) -> Callable[..., None]:
        def before_call(model: Any, **_: Any) -> None:
            operation = model.name
            now = self._now()
            with self._lock:
                record = CallRecord(service=service, operation=operation, index=len(self.calls) + 1)
                self.calls.append(record)
                chosen: Fault | None = None
                for fault in self._faults:
                    if not fault.matches(service, operation):
                        continue
                    self._matching[id(fault)] += 1
                    if chosen is None and self._applies(fault, self._matching[id(fault)], now):
                        chosen = fault
                if chosen is not None:
                    chosen.hits += 1
                    record.fault = chosen.kind
            self._local.active = _Active(fault=chosen, record=record)

        return before_call

    @staticmethod
    def _applies(fault: Fault, nth: int, now: datetime | None) -> bool:
        if fault.calls:
            return nth in fault.calls
        if fault.count is not None:
            return fault.hits < fault.count
        if fault.start is not None or fault.end is not None:
            if now is None:
                return False
            return (fault.start is None or now >= fault.start) and (fault.end is None or now < fault.end)
        return True

    def _before_send_for(self, client: Any) -> Callable[..., Any]:
        model = client.meta.service_model
        protocol = getattr(model, "resolved_protocol", model.protocol)

        def before_send(request: Any, event_name: str, **kwargs: Any) -> Any:
            active: _Active | None = getattr(self._local, "active", None)
            if active is None:
                return _moto_send(request, event_name, **kwargs)
            active.attempts += 1
            active.record.attempts = active.attempts
            fault = active.fault
            if fault is None or (active.attempts > 1 and not fault.persist):
                return _moto_send(request, event_name, **kwargs)
            if fault.kind in _ERRORS:
                status, code = _ERRORS[fault.kind]
                return error_response(request, protocol, status, code)
            from botocore.exceptions import ReadTimeoutError

            if fault.kind == "timeout":
                raise ReadTimeoutError(endpoint_url=request.url)
            answer = _moto_send(request, event_name, **kwargs)  # the service applies it
            if fault.kind == "lost-response":
                raise ReadTimeoutError(endpoint_url=request.url)
            if fault.kind == "crash-after":
                raise SimulatedCrash(f"function died after {active.record.service}.{active.record.operation}")
            return answer

        return before_send


# moto's DynamoDB checks a condition and writes in two Python steps; real DynamoDB applies a conditional write
# atomically. Serializing moto's handling of DynamoDB requests restores that for concurrent invocations.
_ATOMIC = threading.Lock()


def _moto_send(request: Any, event_name: str, **kwargs: Any) -> Any:
    from moto.core.models import botocore_stubber

    if event_name.startswith("before-send.dynamodb."):
        with _ATOMIC:
            return botocore_stubber(event_name=event_name, request=request, **kwargs)
    return botocore_stubber(event_name=event_name, request=request, **kwargs)


# --------------------------------------------------------------------------- error responses


class _RawBody(io.BytesIO):
    def stream(self, **_: Any) -> Iterator[bytes]:
        chunk = self.read()
        while chunk:
            yield chunk
            chunk = self.read()


def _cbor_text(value: str) -> bytes:
    data = value.encode()
    n = len(data)
    if n < 24:
        head = bytes([0x60 | n])
    elif n < 256:
        head = bytes([0x78, n])
    else:
        head = bytes([0x79]) + n.to_bytes(2, "big")
    return head + data


def error_response(request: Any, protocol: str, status: int, code: str, message: str | None = None) -> Any:
    """An AWS error response in the service's own protocol."""
    from botocore.awsrequest import AWSResponse

    message = message or f"injected {code}"
    headers = {"x-amzn-requestid": "injected-fault"}
    if protocol == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers["content-type"] = "application/x-amz-json-1.1"
    elif protocol == "rest-json":
        body = json.dumps({"message": message}).encode()
        headers["content-type"] = "application/json"
        headers["x-amzn-errortype"] = code
    elif protocol == "smithy-rpc-v2-cbor":
        body = bytes([0xA2]) + _cbor_text("__type") + _cbor_text(code) + _cbor_text("message") + _cbor_text(message)
        headers["content-type"] = "application/cbor"
        headers["smithy-protocol"] = "rpc-v2-cbor"
    elif protocol == "ec2":
        body = (f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors>"
                f"<RequestID>injected-fault</RequestID></Response>").encode()
        headers["content-type"] = "text/xml"
    else:  # query, rest-xml
        body = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                f"</Error><RequestId>injected-fault</RequestId></ErrorResponse>").encode()
        headers["content-type"] = "text/xml"
    return AWSResponse(request.url, status, headers, _RawBody(body))
