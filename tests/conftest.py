"""Shared fixtures: the real Redis and PostgreSQL servers of the machine, one local Ray per session.

No fixture here fakes a project component. Redis tests use database 13 of 127.0.0.1:6379 (flushed
per test); PostgreSQL tests get a fresh schema of database `test` per test.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

import psycopg
import pytest

REDIS_URL = os.environ.get("CLERA_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
PG_URL = os.environ.get("CLERA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
# Serve replicas of the tests listen here (and on the next ports) besides Serve's proxy, as under `clera serve`.
DIRECT_PORT = int(os.environ.get("CLERA_TEST_DIRECT_PORT", "38100"))
# ... and their own WebSocket servers here (CLERA_WS_PORT), right after the direct ports' range.
WS_PORT = int(os.environ.get("CLERA_TEST_WS_PORT", str(DIRECT_PORT + 101)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The machine's Redis 7, emptied for this test (`make test` starts it)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.ping()  # a missing server fails the test loudly: CI must not skip it
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh schema in the machine's PostgreSQL `test` database, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


# The secrets of the tests that run on Ray. A Settings never carries its secrets across processes:
# Ray's workers read them from their own environment, here the one they inherit from this process.
RAY_SECRETS = {
    "BACKEND_API_KEY": "test-api-key-0123456789",
    "SUPABASE_JWT_SECRET": "test-jwt-secret-0123456789abcdef0123456789",
    "BROKER_API_KEY": "PKENGINE",
    "BROKER_SECRET_KEY": "engine-secret",
}


@contextlib.contextmanager
def ray_secrets() -> Iterator[None]:
    """RAY_SECRETS in this process's environment while a local Ray starts (its processes inherit
    them), and out of it afterwards, so the in-process tests still see an environment without them."""
    saved = {name: os.environ.get(name) for name in RAY_SECRETS}
    os.environ.update(RAY_SECRETS)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray for the whole session (starting Ray costs seconds)."""
    import ray

    from engine.config import load_settings
    from serve_app import direct_ingress_environ

    # what `clera serve` does before it starts Ray: every Ray process inherits these
    os.environ.update(direct_ingress_environ(load_settings({"CLERA_DIRECT_PORT": str(DIRECT_PORT)}, env_file=None)))
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
    with ray_secrets():
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            namespace="clera-test",
            logging_level="warning",
            log_to_driver=True,
        )
    yield
    ray.shutdown()
