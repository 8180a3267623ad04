"""Connections to a configured database: a Secrets Manager secret (RDS's JSON format) or an IAM auth token.

Every connection is read-only by default (`default_transaction_read_only`), names itself in
`pg_stat_activity` (`application_name` reflex-advisor) and carries a statement timeout, so the advisor can
never hold a long lock or write by accident; `apply_index` asks for a writable one explicitly.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from reflex_core.aws_clients import AwsClients
from reflex_core.database_config import DatabaseTarget, IamConnection

APPLICATION_NAME = "reflex-advisor"
CONNECT_TIMEOUT_S = 5


class DatabaseUnavailable(RuntimeError):
    """The database could not be reached or refused the login; the message says which and why."""


def connection_kwargs(target: DatabaseTarget, clients: AwsClients) -> dict[str, Any]:
    conn = target.connection
    if isinstance(conn, IamConnection):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            token = clients.rds.generate_db_auth_token(DBHostname=conn.host, Port=conn.port, DBUsername=conn.user)
        except (ClientError, BotoCoreError) as err:
            raise DatabaseUnavailable(f"database {target.name}: cannot sign an IAM auth token: {err}") from None
        return {"host": conn.host, "port": conn.port, "dbname": conn.dbname, "user": conn.user,
                "password": token, "sslmode": conn.sslmode}
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        raw = clients.secretsmanager.get_secret_value(SecretId=conn.secret_arn)["SecretString"]
    except (ClientError, BotoCoreError) as err:
        raise DatabaseUnavailable(f"database {target.name}: cannot read secret {conn.secret_arn}: "
                                  f"{type(err).__name__} {err}"[:500]) from None
    try:
        secret = json.loads(raw)
        return {"host": secret["host"], "port": int(secret.get("port", 5432)),
                "dbname": secret.get("dbname") or secret.get("database") or "postgres",
                "user": secret["username"], "password": secret.get("password") or None, "sslmode": conn.sslmode}
    except (ValueError, KeyError, TypeError) as err:
        raise DatabaseUnavailable(f"database {target.name}: secret {conn.secret_arn} is not RDS's JSON format "
                                  f"(host, port, username, password, dbname): {type(err).__name__} {err}") from None


def connect(target: DatabaseTarget, clients: AwsClients, *, writable: bool = False,
            statement_timeout_ms: int | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection (CONCURRENTLY cannot run in a transaction block)."""
    kwargs = connection_kwargs(target, clients)
    timeout = statement_timeout_ms if statement_timeout_ms is not None else target.advisor.statement_timeout_ms
    options = f"-c statement_timeout={timeout}"
    if not writable:
        options += " -c default_transaction_read_only=on"
    try:
        return psycopg.connect(**kwargs, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name=APPLICATION_NAME, options=options)
    except psycopg.OperationalError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatabaseUnavailable(f"database {target.name}: cannot connect to {kwargs['host']}:{kwargs['port']}/"
                                  f"{kwargs['dbname']} as {kwargs['user']}: {first}") from None
