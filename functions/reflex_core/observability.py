"""Logger, Tracer and Metrics, created once per process and shared by the core and every handler.

The CDK constructs set POWERTOOLS_SERVICE_NAME (the reaction) and POWERTOOLS_METRICS_NAMESPACE;
the defaults below apply to local runs.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer

from reflex_core.identity import function_url_response, is_function_url_event

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "reflex")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Reflex")

logger = Logger(service=SERVICE)
# Only botocore is patched: patching everything X-Ray supports imports (or tries) a dozen unused libraries.
tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def lambda_entry(handler: Handler) -> Handler:
    """What every Lambda entry point wears: the Lambda context and correlation id in every log line (the event
    itself is not logged: it may carry payloads), one X-Ray subsegment for the invocation (its response is
    not captured), and the EMF metrics flushed at the end."""
    traced = tracer.capture_lambda_handler(capture_response=False)(metrics.log_metrics(handler))
    wrapped: Handler = logger.inject_lambda_context(log_event=False)(traced)

    @functools.wraps(handler)
    def entry(event: dict[str, Any], context: Any) -> dict[str, Any]:
        result = wrapped(event, context)
        if is_function_url_event(event):
            # A caller of the function URL gets an HTTP status it can act on, the same JSON as its body.
            return function_url_response(result)
        return result

    return entry
