"""The engine's metrics and `clera status`, against a real running system: `clera serve` as a
subprocess (its own Ray, so this module is `own_ray`), real traffic (a WebSocket held open, a chat
turn, an order and an order refused), then Ray's Prometheus endpoint is read over HTTP and `clera
status` is run against that Ray the way an operator would, with RAY_ADDRESS.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_entry_points import BIN, _engine_up, _environ, _nothing_left_behind, _ports, _until, commands  # noqa: F401
from test_gateway_ws import next_of
from websockets.asyncio.client import ClientConnection, connect

from clera_cli.dev_secrets import SECRETS_FILE
from clera_cli.status import RAY_TOKEN_FILE

pytestmark = [pytest.mark.own_ray, pytest.mark.timeout(900)]


ENDPOINTS = """
import json, ray
ray.init(address={address!r}, logging_level="error", log_to_driver=False)
print(json.dumps([(n["NodeManagerAddress"], n["MetricsExportPort"]) for n in ray.nodes() if n["Alive"]]))
"""


def metrics_ports(gcs_address: str) -> list[tuple[str, int]]:
    """Every node's Prometheus endpoint, as Ray lists it, asked by a driver of its own (the token of
    `clera serve`'s Ray, as `clera status` sends it: Ray reads the mode once per process)."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"} if RAY_TOKEN_FILE.is_file() else dict(os.environ)
    done = subprocess.run([sys.executable, "-c", ENDPOINTS.format(address=gcs_address)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return [tuple(e) for e in json.loads(done.stdout.strip().splitlines()[-1])]


def read_metrics(endpoints: list[tuple[str, int]]) -> dict[str, dict[frozenset, float]]:
    """ray_clera_* samples summed over processes: name -> {our tags: value}."""
    found: dict[str, dict[frozenset, float]] = defaultdict(lambda: defaultdict(float))
    ray_tags = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId", "JobId"}
    for host, port in endpoints:
        text = httpx.get(f"http://{host}:{port}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.startswith("ray_clera_"):
                    tags = frozenset((k, v) for k, v in sample.labels.items()
                                     if k not in ray_tags and not k.startswith("otel_"))
                    found[sample.name][tags] += sample.value
    return found


async def heartbeats(ws: ClientConnection) -> None:
    while True:
        await ws.send(json.dumps({"type": "heartbeat"}))
        await asyncio.sleep(5)


def value(found: dict[str, dict[frozenset, float]], name: str, **tags: str) -> float:
    return sum(v for t, v in found.get(name, {}).items() if set(tags.items()) <= t)


async def test_metrics_reach_prometheus_and_clera_status_shows_the_running_system(
    tmp_path: Path, commands,  # noqa: F811 - the fixture imported above
) -> None:
    port, direct = _ports()
    data, marker = tmp_path / "data", uuid.uuid4().hex
    env = _environ(marker, CLERA_DATA_DIR=str(data), CLERA_PORT=str(port), CLERA_DIRECT_PORT=str(direct))
    served = commands([str(BIN / "clera"), "serve"], env, tmp_path)
    await served.wait_for(r"^output is not a terminal")
    out = served.stdout()
    gcs = re.search(r"^Ray: (\S+)", out, re.MULTILINE)
    assert gcs is not None, out
    secrets = json.loads((data / SECRETS_FILE).read_text())
    demo_token = re.search(r"^(eyJ\S+)$", out, re.MULTILINE)
    assert demo_token is not None
    account = re.findall(r"^  demo-[\w-]+ +(\S+)$", out, re.MULTILINE)[0]
    headers = {"Authorization": f"Bearer {demo_token[1]}", "X-API-Key": secrets["BACKEND_API_KEY"]}

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http, \
            connect(f"ws://127.0.0.1:{direct}/ws/portfolio/{account}?token={demo_token[1]}") as ws:
        await _until(lambda: http.get("/api/health"), _engine_up, deadline_s=180)
        assert (await next_of(ws))["account_id"] == account  # live snapshots flow to an open socket
        beating = asyncio.create_task(heartbeats(ws))  # a silent peer is dropped after CONNECTION_TIMEOUT
        turn = await http.post("/api/chat", headers=headers, json={"message": "what do I own?", "accountId": account})
        assert turn.status_code == 200, turn.text
        # one order the rules refuse (far beyond any demo account's cash), one that may go through
        refused = await http.post("/api/trade", headers=headers,
                                  json={"accountId": account, "side": "buy", "symbol": "AAPL", "notional": "90000000"})
        assert refused.status_code == 422, refused.text
        small = await http.post("/api/trade", headers=headers,
                                json={"accountId": account, "side": "buy", "symbol": "AAPL", "notional": "5"})
        assert small.status_code in (200, 422), small.text

        endpoints = await asyncio.to_thread(metrics_ports, gcs[1])
        wanted = {  # each after the traffic above; Ray's agents export every few seconds
            "ray_clera_ticks_ingested_total": lambda m: value(m, "ray_clera_ticks_ingested_total", source="replay") > 0,
            "ray_clera_batch_size_count": lambda m: value(m, "ray_clera_batch_size_count") > 0,
            "ray_clera_tick_to_publish_ms_count": lambda m: value(m, "ray_clera_tick_to_publish_ms_count") > 0,
            "ray_clera_snapshots_published_total": lambda m: (
                value(m, "ray_clera_snapshots_published_total", kind="live") > 0
            ),
            "ray_clera_open_websockets": lambda m: value(m, "ray_clera_open_websockets") >= 1,
            "ray_clera_chat_turns_total": lambda m: (
                value(m, "ray_clera_chat_turns_total", route="chat", outcome="ok") >= 1
            ),
            "ray_clera_chat_turn_ms_count": lambda m: value(m, "ray_clera_chat_turn_ms_count", route="chat") >= 1,
            "ray_clera_orders_total": lambda m: (
                value(m, "ray_clera_orders_total", outcome="rejected", path="api") >= 1
                and value(m, "ray_clera_orders_total", outcome="placed", path="api") == (small.status_code == 200)
            ),
            "ray_clera_closures": lambda m: "ray_clera_closures" in m,  # the orchestrator's gauge, zero closures
        }
        deadline = time.monotonic() + 120
        while True:
            found = await asyncio.to_thread(read_metrics, endpoints)
            missing = [name for name, check in wanted.items() if not check(found)]
            if not missing:
                break
            assert time.monotonic() < deadline, f"not on the Prometheus endpoint: {missing}"
            await asyncio.sleep(2)

        # `clera status` from another process, pointed at this Ray, while the socket is still open
        status = await asyncio.to_thread(
            subprocess.run, [str(BIN / "clera"), "status"], env={**env, "RAY_ADDRESS": gcs[1], "COLUMNS": "200"},
            cwd=tmp_path, capture_output=True, text=True, timeout=180,
        )
        beating.cancel()
    assert status.returncode == 0, status.stderr
    screen = status.stdout
    assert f"clera status {gcs[1]}" in screen
    assert re.search(r"feed replay connected +subscribed \d+ +reconnects 0 +ticks/s [\d,]+ +shards (\d+)/\1", screen), (
        screen
    )
    assert re.search(r"open sockets 1 +chat turns [1-9]", screen), screen
    assert "closures in progress 0" in screen
    for name in ("clera.market_feed", "clera.symbol_shard.0", "clera.portfolio_shard.0", "clera.position_sync",
                 "clera.closure_orchestrator", "SERVE_REPLICA::clera#Gateway", "SERVE_REPLICA::clera#AgentGraph"):
        assert name in screen, screen
    assert re.search(r"clera\.market_feed +ALIVE +0 ", screen), screen

    assert await served.ctrl_c() == 0
    await _nothing_left_behind(marker, tmp_path)
