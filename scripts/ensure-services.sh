#!/usr/bin/env bash
# Starts the Redis 7 and PostgreSQL 15 servers the tests use (127.0.0.1:6379, 127.0.0.1:5432 db `test`)
# when they are installed but not running. The product itself needs neither (embedded defaults).
set -euo pipefail

redis_up() { (exec 3<>/dev/tcp/127.0.0.1/6379 && printf 'PING\r\n' >&3 && timeout 2 head -c 5 <&3 | grep -q PONG) 2>/dev/null; }
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! redis_up; then
  if command -v redis-server >/dev/null; then
    mkdir -p /tmp/clera-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/clera-redis --logfile /tmp/clera-redis/redis.log
    for _ in $(seq 50); do redis_up && break; sleep 0.1; done
  fi
  redis_up || { echo "tests need Redis on 127.0.0.1:6379 (install redis-server 7)" >&2; exit 1; }
fi

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | tail -n 1)" main start || true
    for _ in $(seq 100); do pg_up && break; sleep 0.1; done
  fi
  pg_up || { echo "tests need PostgreSQL on 127.0.0.1:5432 with database 'test' (trust auth)" >&2; exit 1; }
fi
psql -h 127.0.0.1 -U postgres -d test -qtAc 'SELECT 1' >/dev/null \
  || { echo "PostgreSQL is up but database 'test' is not reachable as user postgres" >&2; exit 1; }
echo "services: redis 127.0.0.1:6379 and postgresql 127.0.0.1:5432/test are up"
