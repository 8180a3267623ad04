"""Logger, Tracer and Metrics, created once per process and shared by the core and every handler.

The CDK constructs set POWERTOOLS_SERVICE_NAME (the reaction) and POWERTOOLS_METRICS_NAMESPACE;
the defaults below apply to local runs.
"""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "reflex")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Reflex")

logger = Logger(service=SERVICE)
# Only botocore is patched: patching everything X-Ray supports imports (or tries) a dozen unused libraries.
tracer = Tracer(service=SERVICE, patch_modules=["botocore"])
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
