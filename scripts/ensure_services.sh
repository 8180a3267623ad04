#!/usr/bin/env bash
# Make sure the real Redis and PostgreSQL the tests talk to are up on 127.0.0.1.
# Starts them when installed but stopped; says exactly what is missing otherwise.
set -u
REDIS_PORT=${REFLEX_REDIS_PORT:-6379}
PG_PORT=${REFLEX_PG_PORT:-5432}
status=0

redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }
pg_up() { pg_isready -h 127.0.0.1 -p "$PG_PORT" -q 2>/dev/null; }

if redis_up; then
  echo "redis: up on 127.0.0.1:$REDIS_PORT"
elif command -v redis-server >/dev/null 2>&1; then
  echo "redis: starting redis-server on 127.0.0.1:$REDIS_PORT"
  mkdir -p /tmp/reflex-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir /tmp/reflex-redis --logfile /tmp/reflex-redis/redis.log
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
  redis_up && echo "redis: up" || { echo "redis: failed to start (see /tmp/reflex-redis/redis.log)"; status=1; }
else
  echo "redis: MISSING. Install it (Debian/Ubuntu: apt-get install redis-server) or point REFLEX_REDIS_PORT at a running server."
  status=1
fi

if pg_up; then
  echo "postgresql: up on 127.0.0.1:$PG_PORT"
elif command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql >/dev/null 2>&1; then
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  echo "postgresql: starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 100); do pg_up && break; sleep 0.1; done
  pg_up && echo "postgresql: up" || { echo "postgresql: failed to start; see /var/log/postgresql/"; status=1; }
else
  echo "postgresql: MISSING. Install it (Debian/Ubuntu: apt-get install postgresql) with trust auth on 127.0.0.1:$PG_PORT."
  status=1
fi
# The database advisor's tests need HypoPG next to the PostgreSQL server (hypothetical indexes); without it they
# are skipped, so say so (and how to get it) rather than let a green run hide them.
pg_major=$(ls /usr/share/postgresql 2>/dev/null | sort -V | tail -n 1)
if [ -n "$pg_major" ] && [ ! -f "/usr/share/postgresql/$pg_major/extension/hypopg.control" ]; then
  echo "hypopg: MISSING for PostgreSQL $pg_major: the advisor's PostgreSQL tests will be SKIPPED." \
       "Install it (Debian/Ubuntu: apt-get install postgresql-$pg_major-hypopg; .ci/run does)."
fi
exit $status
