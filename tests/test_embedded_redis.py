"""The embedded redis-server, started exactly as `clera serve` starts it when no Redis is configured."""

from __future__ import annotations

import psutil
import redis

from engine import pubsub
from engine.config import load_settings
from engine.redis_server import redis_from_settings
from engine.types import LastPrice


async def test_embedded_server_serves_the_realtime_names_and_stops_with_its_owner(tmp_path) -> None:
    settings = load_settings({"CLERA_DATA_DIR": str(tmp_path)}, env_file=None)
    assert settings.redis_external_url is None
    url, server = redis_from_settings(settings)
    assert server is not None and url.startswith("unix://")
    try:
        client = pubsub.connect(url)
        await pubsub.write_prices(client, [LastPrice("AAPL", 577.0, 570.0, 1.0, "2012-06-01", "replay")])
        assert (await pubsub.read_prices(client, ["AAPL"]))["AAPL"].last == 577.0
        info = await client.info("server")
        assert int(info["redis_version"].split(".")[0]) >= 6 and info["process_id"] == server.pid
        # a second process-level client (as an actor would open) reaches the same server
        other = redis.Redis.from_url(url)
        assert other.get("price:AAPL") is not None
        other.close()
        await client.aclose()
    finally:
        server.close()
    assert not psutil.pid_exists(server.pid) or psutil.Process(server.pid).status() == psutil.STATUS_ZOMBIE


def test_embedded_server_starts_empty_each_time(tmp_path) -> None:
    """Nothing of a previous run (another replay epoch's prices) survives into the next one."""
    settings = load_settings({"CLERA_DATA_DIR": str(tmp_path)}, env_file=None)
    for run in range(2):
        url, server = redis_from_settings(settings)
        assert server is not None
        client = redis.Redis.from_url(url)
        try:
            assert client.dbsize() == 0, f"run {run} found the previous run's keys"
            client.set("price:AAPL", b"from run %d" % run)
        finally:
            client.close()
            server.close()


def test_external_redis_wins_when_configured(redis_url) -> None:
    url, server = redis_from_settings(load_settings({"REDIS_URL": redis_url}, env_file=None))
    assert (url, server) == (redis_url, None)
    url, server = redis_from_settings(load_settings({"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379"}, env_file=None))
    assert (url, server) == ("redis://127.0.0.1:6379/0", None)
