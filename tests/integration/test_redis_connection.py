"""Building the redis client: AUTH with a token from (moto) Secrets Manager against a redis-server started
with --requirepass, TLS, ElastiCache IAM tokens (checked structurally and by re-computing the signature),
retries and timeouts, and the token never showing in logs, reprs or the audit description."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import redis
from botocore.credentials import Credentials
from moto import mock_aws
from pydantic import ValidationError

from invalidator.redis_connection import (
    IAM_TOKEN_TTL_S,
    ElastiCacheIamCredentialProvider,
    RedisAuthError,
    RedisConnectionSettings,
    SecretScrubber,
    SecretsManagerCredentialProvider,
    build_redis_client,
    parse_redis_secret,
    redact,
    scrub,
)
from tests.support.redis_cluster import RedisServer, make_tls_files, redis_binaries_available

pytestmark = [pytest.mark.redis,
              pytest.mark.skipif(not redis_binaries_available(), reason="redis-server/redis-cli not installed")]

TOKEN = "tok-" + secrets.token_hex(16)


@pytest.fixture(scope="module")
def auth_server() -> Iterator[RedisServer]:
    with RedisServer(password=TOKEN) as server:
        yield server


@pytest.fixture
def secretsmanager() -> Iterator[object]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


def all_text(client: object) -> str:
    """Every representation of a client an operator could end up logging."""
    pool = getattr(client, "connection_pool", None)
    parts = [repr(client), str(client)]
    if pool is not None:
        parts += [repr(pool), repr(getattr(pool, "connection_kwargs", ""))]
        parts += [repr(c) for c in getattr(pool, "_available_connections", [])]
    return "\n".join(parts)


# --------------------------------------------------------------------------- AUTH from Secrets Manager


def test_auth_with_a_json_secret_that_also_names_the_endpoint(auth_server, secretsmanager, caplog):
    secretsmanager.create_secret(Name="reflex/redis", SecretString=json.dumps(
        {"password": TOKEN, "host": "127.0.0.1", "port": auth_server.port}))
    settings = RedisConnectionSettings(tls=False, auth="secret", secret_id="reflex/redis")
    caplog.set_level(logging.DEBUG)  # every logger, redis-py's included
    client = build_redis_client(settings, secrets_client=secretsmanager)
    assert client.ping() is True
    client.set("k", "v")
    assert client.get("k") == b"v"
    # The provider is asked once per new connection; the secret is fetched once and cached.
    for _ in range(3):
        client.connection_pool.disconnect()
        assert client.ping()
    provider = client.connection_pool.connection_kwargs["credential_provider"]
    assert provider.fetches == 1
    assert TOKEN not in caplog.text
    assert TOKEN not in all_text(client) and TOKEN not in repr(provider) and TOKEN not in repr(settings)
    assert TOKEN not in json.dumps(settings.describe())
    assert "reflex/redis" in caplog.text  # what *is* logged: where the credentials come from
    client.close()


def test_auth_with_a_plain_string_secret_and_host_from_settings(auth_server, secretsmanager):
    secretsmanager.create_secret(Name="plain", SecretString=TOKEN)
    settings = RedisConnectionSettings(host="127.0.0.1", port=auth_server.port, tls=False, auth="secret",
                                       secret_id="plain")
    client = build_redis_client(settings, secrets_client=secretsmanager)
    assert client.ping()
    client.close()


def test_a_wrong_secret_fails_without_revealing_either_token(auth_server, secretsmanager, caplog):
    wrong = "wrong-" + secrets.token_hex(8)
    secretsmanager.create_secret(Name="wrong", SecretString=json.dumps({"auth_token": wrong}))
    settings = RedisConnectionSettings(host="127.0.0.1", port=auth_server.port, tls=False, auth="secret",
                                       secret_id="wrong", retries=0)
    caplog.set_level(logging.DEBUG)
    client = build_redis_client(settings, secrets_client=secretsmanager)
    with pytest.raises(redis.AuthenticationError) as err:
        client.ping()
    assert wrong not in str(err.value) and TOKEN not in str(err.value)
    assert wrong not in caplog.text
    client.close()


def test_a_rotated_secret_is_picked_up_after_the_cache_expires(auth_server, secretsmanager):
    secretsmanager.create_secret(Name="rotating", SecretString=TOKEN)
    now = [0.0]
    provider = SecretsManagerCredentialProvider(secretsmanager, "rotating", cache_s=60, clock=lambda: now[0])
    settings = RedisConnectionSettings(host="127.0.0.1", port=auth_server.port, tls=False, auth="secret",
                                       secret_id="rotating", retries=0)
    client = build_redis_client(settings, credential_provider=provider)
    assert client.ping()
    rotated = "rot-" + secrets.token_hex(8)
    admin = redis.Redis(host="127.0.0.1", port=auth_server.port, password=TOKEN)
    admin.config_set("requirepass", rotated)
    try:
        secretsmanager.put_secret_value(SecretId="rotating", SecretString=rotated)
        client.connection_pool.disconnect()
        with pytest.raises(redis.AuthenticationError):
            client.ping()  # still the cached (old) token
        now[0] = 61.0
        client.connection_pool.disconnect()
        assert client.ping()
        assert provider.fetches == 2
    finally:
        redis.Redis(host="127.0.0.1", port=auth_server.port, password=rotated).config_set("requirepass", TOKEN)
        admin.close()
        client.close()


@pytest.mark.parametrize(("raw", "expected"), [
    ("s3cret-value", ("s3cret-value", None)),
    ('"s3cret-value"', ("s3cret-value", None)),
    ('{"password": "pw-123456", "username": "app"}', ("pw-123456", "app")),
    ('{"authToken": "tk-123456", "host": "h", "port": "6380"}', ("tk-123456", None)),
    (b'{"token": "bin-123456"}', ("bin-123456", None)),
])
def test_secret_formats(raw, expected):
    secret = parse_redis_secret(raw)
    assert (secret.password, secret.username) == expected
    assert secret.password not in repr(secret)


@pytest.mark.parametrize(("raw", "field"), [("", "secret"), ("{}", "secret"), ('{"password": "p", "port": "x"}',
                                                                               "secret.port"), ("[1]", "secret")])
def test_unusable_secrets_name_the_field_not_the_value(raw, field):
    with pytest.raises(RedisAuthError) as err:
        parse_redis_secret(raw)
    assert err.value.field == field


# --------------------------------------------------------------------------- TLS, and the IAM token on the wire


@pytest.fixture(scope="module")
def tls_server() -> Iterator[tuple[RedisServer, Path]]:
    with tempfile.TemporaryDirectory(prefix="reflex-tls-") as tmp:
        files = make_tls_files(Path(tmp))
        with RedisServer(tls=files) as server:
            yield server, files.ca


def test_tls_with_certificate_verification(tls_server, secretsmanager):
    server, ca = tls_server
    settings = RedisConnectionSettings(host="localhost", port=server.port, tls=True, tls_ca_file=str(ca))
    client = build_redis_client(settings)
    assert client.ping()
    client.close()
    plain = RedisConnectionSettings(host="localhost", port=server.port, tls=False, retries=0, socket_timeout_s=1)
    with pytest.raises(redis.ConnectionError):
        build_redis_client(plain).ping()  # a TLS-only server refuses plain text


def test_iam_token_is_sent_as_the_password_of_the_iam_user(tls_server, caplog):
    server, ca = tls_server
    provider = ElastiCacheIamCredentialProvider("app-user", "sessions", "eu-west-1",
                                                credentials=Credentials("AKIDEXAMPLE", "secret-key", "session-token"))
    token = provider.token()
    admin = redis.Redis(host="localhost", port=server.port, ssl=True, ssl_ca_certs=str(ca))
    # Stand-in for ElastiCache: a user whose password is exactly the signed token.
    admin.acl_setuser("app-user", enabled=True, passwords=[f"+{token}"], keys=["*"], commands=["+@all"])
    settings = RedisConnectionSettings(host="localhost", port=server.port, tls=True, tls_ca_file=str(ca),
                                       auth="iam", iam_user_id="app-user", iam_cache_name="sessions",
                                       region="eu-west-1")
    caplog.set_level(logging.DEBUG)
    client = build_redis_client(settings, credential_provider=provider)
    assert client.ping()
    assert client.acl_whoami() in ("app-user", b"app-user")
    assert token not in caplog.text and token not in all_text(client) and token not in repr(provider)
    assert "<redacted>" in repr(provider)
    client.close()
    admin.close()


# --------------------------------------------------------------------------- the IAM token, structurally


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "elasticache", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


@pytest.mark.parametrize("serverless", [False, True])
def test_iam_token_is_a_sigv4_presigned_connect_request(serverless):
    provider = ElastiCacheIamCredentialProvider(
        "app-user", "My-Cache", "us-east-2", serverless=serverless,
        credentials=Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", "FwoGZXIvYXdzEXAMPLE"))
    user, token = provider.get_credentials()
    assert user == "app-user"
    assert not token.startswith("https://")
    host, _, query = token.partition("/?")
    assert host == "my-cache"  # lower-cased, as ElastiCache names are
    params = urllib.parse.parse_qsl(query, keep_blank_values=True)
    values = dict(params)
    assert [k for k, _ in params][:2] == ["Action", "User"]
    assert values["Action"] == "connect" and values["User"] == "app-user"
    assert ("ResourceType" in values) is serverless
    if serverless:
        assert values["ResourceType"] == "ServerlessCache"
    assert values["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert values["X-Amz-Expires"] == str(IAM_TOKEN_TTL_S) == "900"
    assert values["X-Amz-SignedHeaders"] == "host"
    assert values["X-Amz-Security-Token"] == "FwoGZXIvYXdzEXAMPLE"
    assert re.fullmatch(r"\d{8}T\d{6}Z", values["X-Amz-Date"])
    date = values["X-Amz-Date"][:8]
    assert values["X-Amz-Credential"] == f"AKIDEXAMPLE/{date}/us-east-2/elasticache/aws4_request"
    assert re.fullmatch(r"[0-9a-f]{64}", values["X-Amz-Signature"])
    # Recompute the signature independently (SigV4, GET /, host header only, empty payload).
    canonical_query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted((k, v) for k, v in params if k != "X-Amz-Signature"))
    canonical_request = "\n".join(["GET", "/", canonical_query, "host:my-cache", "", "host",
                                   hashlib.sha256(b"").hexdigest()])
    string_to_sign = "\n".join(["AWS4-HMAC-SHA256", values["X-Amz-Date"],
                                f"{date}/us-east-2/elasticache/aws4_request",
                                hashlib.sha256(canonical_request.encode()).hexdigest()])
    expected = hmac.new(_signing_key("wJalrXUtnFEMI/K7MDENG", date, "us-east-2"), string_to_sign.encode(),
                        hashlib.sha256).hexdigest()
    assert values["X-Amz-Signature"] == expected


def test_iam_token_is_cached_and_renewed_before_it_expires():
    now = [1_000.0]
    provider = ElastiCacheIamCredentialProvider("u", "c", "us-east-1", clock=lambda: now[0],
                                                credentials=Credentials("AKID", "SECRET"))
    first = provider.token()
    now[0] += IAM_TOKEN_TTL_S - 200
    assert provider.token() == first and provider.signings == 1
    now[0] += 100  # within the renewal margin
    provider.token()
    assert provider.signings == 2


def test_iam_credentials_can_come_from_a_callable_and_refresh():
    calls = []

    def source():
        calls.append(1)
        return Credentials(f"AKID{len(calls)}", "SECRET")

    now = [0.0]
    provider = ElastiCacheIamCredentialProvider("u", "c", "us-east-1", credentials=source, clock=lambda: now[0])
    assert "AKID1%2F" in provider.token()
    now[0] += IAM_TOKEN_TTL_S
    assert "AKID2%2F" in provider.token()


# --------------------------------------------------------------------------- settings, retries, redaction


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"auth": "secret"}, "secret_id"),
    ({"host": "h", "auth": "iam", "iam_user_id": "u"}, "iam_cache_name"),
    ({"host": "h", "auth": "iam", "iam_user_id": "u", "iam_cache_name": "c", "tls": False}, "requires tls"),
    ({}, "host is required"),
    ({"host": "h", "cluster": True, "db": 3}, "database 0"),
    ({"host": "h", "password": "x"}, "Extra inputs"),
])
def test_settings_refuse_inconsistent_combinations(kwargs, words):
    with pytest.raises(ValidationError, match=words):
        RedisConnectionSettings(**kwargs)


def test_client_has_timeouts_and_exponential_retry():
    settings = RedisConnectionSettings(host="127.0.0.1", port=1, tls=False, retries=4, socket_timeout_s=0.5,
                                       connect_timeout_s=0.25)
    client = build_redis_client(settings)
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.5 and kwargs["socket_connect_timeout"] == 0.25
    retry = kwargs["retry"]
    assert retry.get_retries() == 4
    assert redis.ConnectionError in retry._supported_errors and redis.TimeoutError in retry._supported_errors
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_cluster_settings_build_a_cluster_client_lazily():
    # RedisCluster connects at construction, so only the type and kwargs are checked here without a server;
    # the cluster path itself is exercised by test_redis_invalidation.py.
    settings = RedisConnectionSettings(host="127.0.0.1", port=1, cluster=True, tls=False, retries=0,
                                       connect_timeout_s=0.2)
    with pytest.raises(redis.exceptions.RedisClusterException):
        build_redis_client(settings)


def test_redaction_helpers():
    assert redact("abc") == "<redacted>" and redact(None) == "<none>"
    assert scrub(f"auth {TOKEN} ok", [TOKEN]) == "auth <redacted> ok"
    scrubber = SecretScrubber()
    scrubber.add(TOKEN)
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token=%s", (TOKEN,), None)
    scrubber.filter(record)
    assert TOKEN not in record.getMessage()


def test_scrubber_removes_a_secret_that_a_library_logs(secretsmanager, caplog):
    # Whatever else might log the token, with the scrubber on the handler it never gets out.
    secretsmanager.create_secret(Name="noisy", SecretString=TOKEN)
    scrubber = SecretScrubber()
    caplog.handler.addFilter(scrubber)
    caplog.set_level(logging.DEBUG)
    provider = SecretsManagerCredentialProvider(secretsmanager, "noisy", scrubber=scrubber)
    provider.get_credentials()
    logging.getLogger("some.library").debug("response body: %s", TOKEN)
    assert TOKEN not in caplog.text and "<redacted>" in caplog.text
