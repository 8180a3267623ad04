"""boto3 clients behind one injectable container.

Every AWS call in Reflex goes through `AwsClients`, so tests hand in moto-backed or
fault-injecting clients and the simulator hands in clients bound to its moto session.
Retries: botocore "standard" mode retries throttling and 5xx with exponential backoff and jitter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_ATTEMPTS = 5

# A service name, or `<service>@<region>` for a client of another region (the failover reaction reads and acts in
# both regions of a global database); every factory accepts both forms.
ClientFactory = Callable[[str], Any]


def split_service(name: str) -> tuple[str, str | None]:
    """`rds@eu-central-1` -> ("rds", "eu-central-1"); `rds` -> ("rds", None)."""
    service, _, region = name.partition("@")
    return service, region or None


def default_client_factory(max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> ClientFactory:
    def make(name: str) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            # total_max_attempts counts the first call; botocore's max_attempts would count retries only.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=3,
            read_timeout=10,
        )
        service, region = split_service(name)
        return boto3.session.Session().client(service, config=config,  # type: ignore[call-overload]
                                              region_name=region)

    return make


class AwsClients:
    """Lazily creates one client per service, once, and shares it (boto3 clients are thread-safe)."""

    def __init__(self, factory: ClientFactory | None = None) -> None:
        self._factory = factory or default_client_factory()
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, service: str) -> Any:
        with self._lock:
            client = self._clients.get(service)
            if client is None:
                client = self._factory(service)
                self._clients[service] = client
            return client

    def in_region(self, service: str, region: str | None) -> Any:
        """The client of `service` in `region` (None: the function's own region)."""
        return self.get(f"{service}@{region}" if region else service)

    def __getattr__(self, service: str) -> Any:
        # clients.dynamodb, clients.ecs, ... read naturally at call sites.
        if service.startswith("_"):
            raise AttributeError(service)
        return self.get(service.replace("_", "-"))
