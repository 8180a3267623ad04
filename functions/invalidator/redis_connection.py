"""Build the redis client the invalidator uses: standalone or cluster, TLS, AUTH or ElastiCache IAM auth.

    settings = RedisConnectionSettings(host="master.sessions.abc123.use1.cache.amazonaws.com", tls=True,
                                       auth="secret", secret_id="reflex/redis")
    client = build_redis_client(settings, secrets_client=clients.secretsmanager)

Credentials are never held by the settings, never passed as `password=` and never logged: redis-py asks
a credential provider for them each time it opens a connection. botocore's DEBUG dump of the Secrets
Manager response is filtered out; `SecretScrubber` can be put on log handlers as a last line of defence.

* `auth="secret"`: `SecretsManagerCredentialProvider` reads the secret (`GetSecretValue`) and caches it
  for `secret_cache_s`, so a rotated token is picked up by the next connection after that. The secret is
  either the token as a plain string or JSON with `password` (or `auth_token`/`authToken`/`token`) and
  optionally `username`, `host` and `port` (then `host` may be left out of the settings).
* `auth="iam"`: `ElastiCacheIamCredentialProvider` signs, with the function's own AWS credentials, a
  SigV4 presigned `connect` request for the user id and the replication group (or serverless cache),
  valid 15 minutes; it is cached and renewed before it expires. ElastiCache requires TLS for IAM auth.

Timeouts are short and connection/timeout errors are retried with exponential backoff and jitter.
`redis` and botocore are imported only when a client is built (cold start of the handler stays light).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

logger = logging.getLogger(__name__)

IAM_TOKEN_TTL_S = 900  # ElastiCache accepts a signed connect token for 15 minutes
IAM_TOKEN_RENEW_BEFORE_S = 120
SECRET_PASSWORD_KEYS = ("password", "auth_token", "authToken", "token")


class RedisAuthError(ValueError):
    """Credentials that cannot be used. The message names the field, never the secret's value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


# --------------------------------------------------------------------------- redaction


def redact(value: object) -> str:
    """What a secret looks like in a repr, a log line or the audit: its presence, never its content."""
    if value is None or value == "":
        return "<none>"
    return "<redacted>"


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced by `<redacted>` (defence in depth for logs)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


class SecretScrubber(logging.Filter):
    """A logging filter that removes known secrets from messages; providers register what they fetch."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str) -> None:
        if secret:
            with self._lock:
                self._secrets.add(secret)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = tuple(self._secrets)
        if secrets:
            message = record.getMessage()
            cleaned = scrub(message, secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


class _SecretResponseGuard(logging.Filter):
    """Drops botocore's DEBUG dump of a Secrets Manager response body, which holds the secret in clear."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return "SecretString" not in message and "SecretBinary" not in message


_GUARD = _SecretResponseGuard()


def guard_botocore_response_logs() -> None:
    """Install `_SecretResponseGuard` on botocore's parser logger (idempotent). Done by every secret provider:
    a function run at DEBUG must not print the token through botocore's "Response body" line."""
    parsers = logging.getLogger("botocore.parsers")
    if _GUARD not in parsers.filters:
        parsers.addFilter(_GUARD)


# --------------------------------------------------------------------------- settings


class RedisConnectionSettings(BaseModel):
    """How to reach one cache. Holds no secret: only where to fetch it (`secret_id`) or whom to sign as."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str | None = Field(default=None, min_length=1, max_length=255)
    port: int = Field(default=6379, ge=1, le=65535)
    cluster: bool = False
    db: int = Field(default=0, ge=0, le=15)
    tls: bool = True
    tls_verify: bool = True
    tls_ca_file: str | None = None
    auth: Literal["none", "secret", "iam"] = "none"
    secret_id: str | None = Field(default=None, min_length=1, max_length=2048)
    secret_cache_s: float = Field(default=300.0, ge=0)
    username: str | None = Field(default=None, min_length=1, max_length=128)
    iam_user_id: str | None = Field(default=None, min_length=1, max_length=128)
    iam_cache_name: str | None = Field(default=None, min_length=1, max_length=128)
    iam_serverless: bool = False
    region: str | None = Field(default=None, min_length=1, max_length=32)
    socket_timeout_s: float = Field(default=2.0, gt=0, le=60)
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    retries: int = Field(default=3, ge=0, le=10)
    backoff_base_s: float = Field(default=0.05, gt=0, le=5)
    backoff_cap_s: float = Field(default=1.0, gt=0, le=30)
    health_check_interval_s: int = Field(default=30, ge=0, le=3600)
    client_name: str = Field(default="reflex-invalidator", pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")
    # ElastiCache RBAC: the read-only user of the cache health collector (docs/security.md, "Redis"), e.g. access
    # string `on ~* -@all +info`. auth "secret": its secret (JSON username + password); auth "iam": its user id.
    health_secret_id: str | None = Field(default=None, min_length=1, max_length=2048)
    health_iam_user_id: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _consistent(self) -> RedisConnectionSettings:
        if self.auth == "secret" and not self.secret_id:
            raise ValueError("auth 'secret' needs secret_id")
        if self.auth == "iam":
            if not (self.iam_user_id and self.iam_cache_name):
                raise ValueError("auth 'iam' needs iam_user_id and iam_cache_name")
            if not self.tls:
                raise ValueError("ElastiCache IAM authentication requires tls: true")
        if self.host is None and self.auth != "secret":
            raise ValueError("host is required unless the secret provides it")
        if self.cluster and self.db != 0:
            raise ValueError("Redis Cluster has only database 0")
        if self.health_secret_id and self.auth != "secret":
            raise ValueError("health_secret_id goes with auth 'secret' (use health_iam_user_id with auth 'iam')")
        if self.health_iam_user_id and self.auth != "iam":
            raise ValueError("health_iam_user_id goes with auth 'iam' (use health_secret_id with auth 'secret')")
        return self

    def for_health_collector(self) -> RedisConnectionSettings:
        """The settings the read-only health collector connects with: its own RBAC user when one is configured."""
        changes: dict[str, Any] = {"client_name": "reflex-cache-health"}
        if self.health_secret_id:
            changes.update(secret_id=self.health_secret_id, username=None)
        if self.health_iam_user_id:
            changes["iam_user_id"] = self.health_iam_user_id
        return self.model_copy(update=changes)

    def describe(self) -> dict[str, Any]:
        """Safe to log and to audit: where, how, and which secret (by id), never a credential."""
        return {"host": self.host, "port": self.port, "cluster": self.cluster, "db": self.db, "tls": self.tls,
                "tls_verify": self.tls_verify, "auth": self.auth, "secret_id": self.secret_id,
                "iam_user_id": self.iam_user_id, "iam_cache_name": self.iam_cache_name}


# --------------------------------------------------------------------------- Secrets Manager


@dataclass(frozen=True)
class RedisSecret:
    password: str = field(repr=False)
    username: str | None = None
    host: str | None = None
    port: int | None = None

    def __repr__(self) -> str:
        return (f"RedisSecret(password={redact(self.password)}, username={self.username!r}, "
                f"host={self.host!r}, port={self.port!r})")


def parse_redis_secret(value: str | bytes) -> RedisSecret:
    """A plain token, or JSON with password/auth_token/authToken/token (+ username, host, port)."""
    text = value.decode("utf-8") if isinstance(value, bytes) else value
    text = text.strip()
    if not text:
        raise RedisAuthError("secret", "is empty")
    try:
        data = json.loads(text)
    except ValueError:
        return RedisSecret(password=text)
    if isinstance(data, str):
        if not data:
            raise RedisAuthError("secret", "is empty")
        return RedisSecret(password=data)
    if not isinstance(data, dict):
        raise RedisAuthError("secret", "must be a token or a JSON object")
    password = next((data[k] for k in SECRET_PASSWORD_KEYS if isinstance(data.get(k), str) and data[k]), None)
    if password is None:
        raise RedisAuthError("secret", f"JSON has none of the keys {', '.join(SECRET_PASSWORD_KEYS)}")
    port = data.get("port")
    try:
        port_number = int(port) if port is not None else None
    except (TypeError, ValueError):
        raise RedisAuthError("secret.port", "must be a number") from None
    username = data.get("username") or data.get("user")
    host = data.get("host") or data.get("endpoint")
    return RedisSecret(password=password, username=str(username) if username else None,
                       host=str(host) if host else None, port=port_number)


class SecretsManagerCredentialProvider:
    """redis-py credential provider (duck-typed `CredentialProvider`) reading the AUTH token from Secrets
    Manager through the injected boto3 client, cached for `cache_s` seconds."""

    def __init__(self, secrets_client: Any, secret_id: str, *, username: str | None = None,
                 cache_s: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 scrubber: SecretScrubber | None = None) -> None:
        self._client = secrets_client
        self.secret_id = secret_id
        self._username = username
        self._cache_s = cache_s
        self._clock = clock
        self._scrubber = scrubber
        self._lock = threading.Lock()
        self._cached: RedisSecret | None = None
        self._fetched_at = 0.0
        self.fetches = 0
        guard_botocore_response_logs()

    def secret(self) -> RedisSecret:
        with self._lock:
            now = self._clock()
            if self._cached is None or now - self._fetched_at >= self._cache_s:
                response = self._client.get_secret_value(SecretId=self.secret_id)
                raw = response.get("SecretString")
                if raw is None:
                    raw = response.get("SecretBinary", b"")
                self._cached = parse_redis_secret(raw)
                self._fetched_at = now
                self.fetches += 1
                if self._scrubber is not None:
                    self._scrubber.add(self._cached.password)
                logger.debug("redis secret fetched", extra={"secret_id": self.secret_id})
            return self._cached

    def invalidate(self) -> None:
        """Forget the cached secret (after an authentication failure, e.g. a rotation)."""
        with self._lock:
            self._cached = None

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        secret = self.secret()
        username = self._username or secret.username
        return (username, secret.password) if username else (secret.password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()

    def __repr__(self) -> str:
        return f"SecretsManagerCredentialProvider(secret_id={self.secret_id!r}, password={redact('set')})"


# --------------------------------------------------------------------------- ElastiCache IAM auth


class ElastiCacheIamCredentialProvider:
    """redis-py credential provider for ElastiCache IAM authentication.

    The password is a SigV4 presigned URL (without its scheme) for
    `GET https://<cache_name>/?Action=connect&User=<user_id>[&ResourceType=ServerlessCache]`, signed for
    service `elasticache` in `region` with the caller's AWS credentials, valid `IAM_TOKEN_TTL_S`.
    `credentials` is a botocore `Credentials` (refreshable ones are frozen at each signing) or a callable
    returning one; by default the botocore session's (the Lambda role's).
    """

    def __init__(self, user_id: str, cache_name: str, region: str, *, serverless: bool = False,
                 credentials: Any = None, clock: Callable[[], float] = time.time,
                 renew_before_s: float = IAM_TOKEN_RENEW_BEFORE_S, scrubber: SecretScrubber | None = None) -> None:
        self.user_id = user_id
        # ElastiCache ids are lower case; the signed host must match the one the service checks.
        self.cache_name = cache_name.lower()
        self.region = region
        self.serverless = serverless
        self._credentials = credentials
        self._clock = clock
        self._renew_before = renew_before_s
        self._scrubber = scrubber
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.signings = 0

    def _frozen_credentials(self) -> Any:
        source = self._credentials
        if source is None:
            import botocore.session

            source = botocore.session.get_session().get_credentials()
            if source is None:
                raise RedisAuthError("credentials", "no AWS credentials available to sign the IAM auth token")
        elif callable(source) and not hasattr(source, "get_frozen_credentials"):
            source = source()
        return source.get_frozen_credentials() if hasattr(source, "get_frozen_credentials") else source

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires_at - self._renew_before:
                self._token = self._sign()
                self._expires_at = now + IAM_TOKEN_TTL_S
                self.signings += 1
                if self._scrubber is not None:
                    self._scrubber.add(self._token)
            return self._token

    def _sign(self) -> str:
        from botocore.auth import SigV4QueryAuth
        from botocore.awsrequest import AWSRequest

        params = {"Action": "connect", "User": self.user_id}
        if self.serverless:
            params["ResourceType"] = "ServerlessCache"
        request = AWSRequest(method="GET", url=f"https://{self.cache_name}/", params=params)
        signer = SigV4QueryAuth(self._frozen_credentials(), "elasticache", self.region, expires=IAM_TOKEN_TTL_S)
        signer.add_auth(request)
        url: str = request.url
        return url.removeprefix("https://")

    def get_credentials(self) -> tuple[str, str]:
        return (self.user_id, self.token())

    async def get_credentials_async(self) -> tuple[str, str]:
        return self.get_credentials()

    def __repr__(self) -> str:
        return (f"ElastiCacheIamCredentialProvider(user_id={self.user_id!r}, cache_name={self.cache_name!r}, "
                f"region={self.region!r}, token={redact(self._token)})")


# --------------------------------------------------------------------------- the client


def build_credential_provider(settings: RedisConnectionSettings, *, secrets_client: Any = None,
                              aws_credentials: Any = None, region: str | None = None,
                              scrubber: SecretScrubber | None = None) -> Any:
    """The provider `settings.auth` asks for, or None for `auth: none`."""
    if settings.auth == "secret":
        if secrets_client is None:
            raise RedisAuthError("secrets_client", "auth 'secret' needs a Secrets Manager client")
        assert settings.secret_id is not None
        return SecretsManagerCredentialProvider(secrets_client, settings.secret_id, username=settings.username,
                                                cache_s=settings.secret_cache_s, scrubber=scrubber)
    if settings.auth == "iam":
        chosen_region = settings.region or region
        if not chosen_region:
            raise RedisAuthError("region", "IAM auth needs the cache's region")
        assert settings.iam_user_id is not None and settings.iam_cache_name is not None
        return ElastiCacheIamCredentialProvider(settings.iam_user_id, settings.iam_cache_name, chosen_region,
                                                serverless=settings.iam_serverless, credentials=aws_credentials,
                                                scrubber=scrubber)
    return None


def build_redis_client(settings: RedisConnectionSettings, *, secrets_client: Any = None,
                       aws_credentials: Any = None, region: str | None = None,
                       scrubber: SecretScrubber | None = None, credential_provider: Any = None,
                       **overrides: Any) -> Any:
    """A `redis.Redis` or `redis.cluster.RedisCluster` for `settings`. Connects lazily (first command).

    `overrides` are passed to the redis-py constructor last (tests use them, e.g. `connection_class`).
    """
    import socket

    import redis
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    provider = credential_provider or build_credential_provider(
        settings, secrets_client=secrets_client, aws_credentials=aws_credentials, region=region, scrubber=scrubber)
    host, port = settings.host, settings.port
    if host is None and isinstance(provider, SecretsManagerCredentialProvider):
        secret = provider.secret()
        host, port = secret.host, secret.port or settings.port
    if not host:
        raise RedisAuthError("host", "neither the settings nor the secret name the host")

    retry = Retry(ExponentialWithJitterBackoff(cap=settings.backoff_cap_s, base=settings.backoff_base_s),
                  settings.retries, supported_errors=(redis.ConnectionError, redis.TimeoutError, socket.timeout))
    kwargs: dict[str, Any] = {
        "host": host, "port": port,
        "socket_timeout": settings.socket_timeout_s, "socket_connect_timeout": settings.connect_timeout_s,
        "retry": retry, "health_check_interval": settings.health_check_interval_s,
        "client_name": settings.client_name, "credential_provider": provider,
    }
    if settings.tls:
        kwargs.update(ssl=True, ssl_cert_reqs="required" if settings.tls_verify else "none",
                      ssl_check_hostname=settings.tls_verify)
        if settings.tls_ca_file:
            kwargs["ssl_ca_certs"] = settings.tls_ca_file
    kwargs.update(overrides)
    logger.info("redis client configured", extra={"redis": settings.describe() | {"host": host, "port": port}})
    if settings.cluster:
        return RedisCluster(**kwargs)
    return redis.Redis(db=settings.db, **kwargs)
