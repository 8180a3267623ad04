"""The invalidation side of the moto world: what the stack would hold for `invalidation:` of a config.

On top of `aws_world.create_world`: each cdn entry's origin bucket and CloudFront distribution (moto names
the distribution; the world's config carries the id moto gave it), its coalescing queue, the continuation
queue, the invalidation kill switches, and an `InvalidationRuntime` whose Redis clients point at a local
server (tests and the simulator pass the factory; the configured hosts are not reachable here).

moto completes a CloudFront invalidation the moment it is created; `CloudFrontInProgress` keeps it InProgress
for a while on the (virtual) clock and can refuse a create with `TooManyInvalidationsInProgress`, so tracking
and retries are exercised. `deliver` plays an SQS event source mapping with ReportBatchItemFailures: it hands
the visible messages of a queue to a handler as one batch, deletes the processed ones and makes the failed ones
visible again.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from invalidator.invalidation_runtime import (
    InvalidationRuntime,
    InvalidationSettings,
    RedisFactory,
    install_invalidation_runtime,
)
from reflex_core.clock import Clock
from reflex_core.config import ReflexConfig
from reflex_core.invalidation_config import MANAGED
from simulator.aws_world import REGION, World, _shared_session
from simulator.scenario import ACCOUNT, SimulatedContext

REACTIONS = ("invalidator", "cdn_batcher", "cache_health")
HANDLERS = {"invalidator": "invalidator.handler", "cdn_batcher": "cdn_batcher.handler",
            "cache_health": "cache_health.handler"}


_CLOUDFRONT_PATH_CHARS = re.compile(r"^[A-Za-z0-9/~!$&'()+,;=:@\-._*%]*$")


def invalid_cdn_path(path: str) -> bool:
    """CloudFront's documented rule: non-ASCII and RFC 1738 unsafe characters must be URL-encoded; `%` only in a
    valid `%XX` escape. `#tag` items are not paths."""
    if path.startswith("#"):
        return False
    if not _CLOUDFRONT_PATH_CHARS.match(path):
        return True
    return bool(re.search(r"%(?![0-9A-Fa-f]{2})", path))


class CloudFrontInProgress:
    """A CloudFront client whose invalidations stay InProgress for `seconds` of `clock`, and which refuses the
    next creates with the codes queued in `refuse` (e.g. TooManyInvalidationsInProgress)."""

    def __init__(self, real: Any, clock: Clock, seconds: float = 0.0) -> None:
        self._real = real
        self._clock = clock
        self.seconds = seconds
        self.refuse: list[str] = []
        self.refuse_paths: set[str] = set()  # paths refused for any other reason CloudFront may have
        self.refused: list[list[str]] = []
        self.created: dict[str, datetime] = {}
        self.requests: list[dict[str, Any]] = []

    def _status(self, invalidation_id: str) -> str:
        made = self.created.get(invalidation_id)
        if made is None or (self._clock.now() - made).total_seconds() >= self.seconds:
            return "Completed"
        return "InProgress"

    def create_invalidation(self, **kwargs: Any) -> dict[str, Any]:
        if self.refuse:
            code = self.refuse.pop(0)
            raise ClientError({"Error": {"Code": code, "Message": f"simulated {code}"}}, "CreateInvalidation")
        items = list(kwargs["InvalidationBatch"]["Paths"].get("Items", []))
        invalid = [p for p in items if invalid_cdn_path(p) or p in self.refuse_paths]
        if invalid:
            # What CloudFront documents (moto accepts anything): an invalid path fails the whole request.
            self.refused.append(invalid)
            raise ClientError({"Error": {"Code": "InvalidArgument", "Message": (
                "Your request contains one or more invalid invalidation paths.")}}, "CreateInvalidation")
        resp: dict[str, Any] = self._real.create_invalidation(**kwargs)
        inv = resp["Invalidation"]
        self.created.setdefault(inv["Id"], self._clock.now())
        self.requests.append({"distribution": kwargs["DistributionId"],
                              "paths": list(kwargs["InvalidationBatch"]["Paths"].get("Items", [])),
                              "reference": kwargs["InvalidationBatch"]["CallerReference"], "id": inv["Id"]})
        inv["Status"] = self._status(inv["Id"])
        return resp

    def get_invalidation(self, **kwargs: Any) -> dict[str, Any]:
        resp: dict[str, Any] = self._real.get_invalidation(**kwargs)
        resp["Invalidation"]["Status"] = self._status(resp["Invalidation"]["Id"])
        return resp

    def list_invalidations(self, **kwargs: Any) -> dict[str, Any]:
        resp: dict[str, Any] = self._real.list_invalidations(**kwargs)
        for item in resp.get("InvalidationList", {}).get("Items", []) or []:
            item["Status"] = self._status(item["Id"])
        return resp

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@dataclass
class InvalidationWorld:
    world: World
    clock: Clock
    runtime: InvalidationRuntime
    cloudfront: CloudFrontInProgress
    continuation_url: str
    cdn_queue_urls: dict[str, str]
    distributions: dict[str, str]
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config(self) -> ReflexConfig:
        return self.world.config

    def invoke(self, reaction: str, event: Any, context: Any = None) -> dict[str, Any]:
        import importlib

        self.world.activate(reaction, self.clock)
        install_invalidation_runtime(self.runtime)
        handler = importlib.import_module(HANDLERS[reaction]).lambda_handler
        ctx = context or SimulatedContext(function_name=f"reflex-{self.config.stage}-{reaction}",
                                          memory_limit_in_mb=512)
        result: dict[str, Any] = handler(event, ctx)
        return result

    def queue_bodies(self, url: str) -> list[dict[str, Any]]:
        """The messages waiting in a queue (peeked: left in the queue)."""
        sqs = self.world.clients.sqs
        seen: dict[str, dict[str, Any]] = {}
        for _ in range(50):
            resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=0)
            messages = resp.get("Messages", [])
            new = [m for m in messages if m["MessageId"] not in seen]
            if not new:
                break
            for m in new:
                seen[m["MessageId"]] = json.loads(m["Body"])
        return list(seen.values())

    def deliver(self, url: str, reaction: str, *, batch_size: int = 10_000,
                due: Callable[[dict[str, Any]], bool] | None = None) -> dict[str, Any] | None:
        """One event source mapping delivery: the queue's visible (and due) messages, as one SQS batch."""
        sqs = self.world.clients.sqs
        taken: list[dict[str, Any]] = []
        while len(taken) < batch_size:
            resp = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=min(10, batch_size - len(taken)),
                                       VisibilityTimeout=300, AttributeNames=["ApproximateReceiveCount"])
            messages = resp.get("Messages", [])
            if not messages:
                break
            taken.extend(messages)
        waiting = [m for m in taken if due is not None and not due(json.loads(m["Body"]))]
        batch = [m for m in taken if m not in waiting]
        for m in waiting:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
        if not batch:
            return None
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{url.rsplit('/', 1)[-1]}"
        event = {"Records": [{
            "messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
            "attributes": {"ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1")},
            "messageAttributes": {}, "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs",
            "eventSourceARN": arn, "awsRegion": REGION} for m in batch]}
        response = self.invoke(reaction, event)
        failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        for m in batch:
            if m["MessageId"] in failed:
                sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
            else:
                sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        self.deliveries.append({"queue": url.rsplit("/", 1)[-1], "messages": len(batch), "failed": len(failed)})
        return response

    def due(self) -> Callable[[dict[str, Any]], bool]:
        """Messages whose `not_before` (tracking) has come on the world's clock."""
        now = self.clock.now().timestamp()
        return lambda body: float(body.get("not_before", 0)) <= now

    def run_continuations(self, max_rounds: int = 100) -> list[dict[str, Any]]:
        """Deliver the continuation queue one message at a time until it is empty (or `max_rounds`)."""
        out = []
        for _ in range(max_rounds):
            response = self.deliver(self.continuation_url, "invalidator", batch_size=1)
            if response is None:
                break
            out.append(response)
        return out


def _distribution_config(bucket: str | None, name: str) -> dict[str, Any]:
    domain = f"{bucket}.s3.{REGION}.amazonaws.com" if bucket else f"{name}.origin.example.com"
    return {
        "CallerReference": f"reflex-{name}-{uuid.uuid4().hex[:8]}", "Comment": f"reflex simulated {name}",
        "Enabled": True,
        "Origins": {"Quantity": 1, "Items": [{"Id": "origin", "DomainName": domain,
                                              "S3OriginConfig": {"OriginAccessIdentity": ""}}]},
        "DefaultCacheBehavior": {"TargetOriginId": "origin", "ViewerProtocolPolicy": "redirect-to-https",
                                 "MinTTL": 0, "ForwardedValues": {"QueryString": False, "Cookies": {"Forward": "none"}},
                                 "TrustedSigners": {"Enabled": False, "Quantity": 0}},
    }


def create_invalidation_world(world: World, clock: Clock, *, redis_factory: RedisFactory | None = None,
                              propagation_s: float = 0.0, origin_objects: dict[str, list[str]] | None = None
                              ) -> InvalidationWorld:
    """Create the invalidation resources for `world.config` and install the invalidation runtime.

    `origin_objects`: keys to put in each cdn entry's origin bucket (by cdn name), for the inventory.
    """
    clients = world.clients
    config = world.config
    stage = config.stage
    for scope in REACTIONS:
        world.set_kill_switch(scope, False)
    continuation_url = clients.sqs.create_queue(QueueName=f"reflex-{stage}-invalidation-continue")["QueueUrl"]
    queue_urls: dict[str, str] = {}
    distributions: dict[str, str] = {}
    managed: dict[str, str] = {}
    cdn_entries = []
    for cdn in config.invalidation.cdn:
        bucket = cdn.origin.bucket if cdn.origin else None
        if bucket:
            clients.s3.create_bucket(Bucket=bucket)
            for key in (origin_objects or {}).get(cdn.name, []):
                clients.s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        made = clients.cloudfront.create_distribution(DistributionConfig=_distribution_config(bucket, cdn.name))
        dist_id = made["Distribution"]["Id"]
        distributions[cdn.name] = dist_id
        queue_urls[cdn.name] = clients.sqs.create_queue(QueueName=f"reflex-{stage}-cdn-{cdn.name}")["QueueUrl"]
        if cdn.distribution_id == MANAGED:
            managed[cdn.name] = dist_id
            cdn_entries.append(cdn)
        else:
            cdn_entries.append(cdn.model_copy(update={"distribution_id": dist_id}))
    # moto picks the distribution ids: the world's config names them (validated again, like a real config).
    invalidation = config.invalidation.model_copy(update={"cdn": cdn_entries})
    world.config = type(config).model_validate(config.model_copy(update={"invalidation": invalidation})
                                               .model_dump())
    settings = InvalidationSettings(continuation_queue_url=continuation_url, cdn_queue_urls=queue_urls,
                                    managed_distributions=managed)
    runtime = InvalidationRuntime(settings, redis_factory=redis_factory, queue_delays=False, sleep=lambda _s: None)
    install_invalidation_runtime(runtime)
    # Wrap a plain moto client: the world's own `cloudfront` client defers to this override.
    cloudfront = CloudFrontInProgress(_shared_session().client("cloudfront", region_name=REGION), clock,
                                      propagation_s)
    world.overrides["cloudfront"] = cloudfront
    world._runtimes.clear()  # built from the old config
    return InvalidationWorld(world=world, clock=clock, runtime=runtime, cloudfront=cloudfront,
                             continuation_url=continuation_url, cdn_queue_urls=queue_urls,
                             distributions=distributions)


def local_redis_factory(host: str = "127.0.0.1", port: int = 6379, *, cluster: bool = False) -> RedisFactory:
    """Every cache of the config answered by one local server (plain TCP, no auth)."""
    def make(cache: Any, settings: Any, rt: Any) -> Any:
        import redis
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry

        if cluster:
            return RedisCluster(host=host, port=port, socket_timeout=2, socket_connect_timeout=2)
        # No hidden client-side retries: the invalidator's own resume-and-retry is what runs.
        return redis.Redis(host=host, port=port, socket_timeout=2, socket_connect_timeout=2,
                           retry=Retry(NoBackoff(), 0))

    return make
