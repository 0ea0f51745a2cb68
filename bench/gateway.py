"""Gateway benchmark (not a test): prints one JSON object.

REST: requests/s and latency of `GET /api/portfolio/{id}` through a Ray Serve replica and through
plain uvicorn serving the same app, in the same run (their ratio is the cost of Serve).
WebSocket fan-out: N clients, one account each, on ONE Serve replica; every account updates at the
engine's coalescing rate (CLERA_PUBLISH_HZ); reports messages/s delivered, publish-to-client latency
(the engine's own tick-to-publish part is measured by bench/realtime.py), and the replica's and
proxy's RSS per connection.

    python bench/gateway.py --quick      # under a minute: 1,000 sockets
    python bench/gateway.py              # 100, 1,000 and 5,000 sockets

Processes: the load generator (this process), a snapshot publisher and the uvicorn server are
separate processes, as the engine and the clients would be; Redis is an embedded redis-server
unless --redis-url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.auth import mint_jwt  # noqa: E402
from engine.types import PortfolioSnapshot, PositionValue, json_encoder  # noqa: E402

USER = "bench-user"
APP = "clera-bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _account(i: int) -> str:
    return f"bench-{i:05d}"


def _snapshot(account: str, seq: int, now: float) -> PortfolioSnapshot:
    positions = [
        PositionValue(symbol=s, qty=10.0, last_price=100.0 + seq % 7, prev_close=100.0, market_value=1000.0,
                      day_change=float(seq % 7) * 10, day_change_pct=float(seq % 7))
        for s in ("AAPL", "MSFT", "IBM")
    ]
    return PortfolioSnapshot(
        account_id=account, seq=seq, as_of=now, ingest_ts=now, publish_ts=now, total_value=13_000.0 + seq % 7,
        cash=10_000.0, positions_value=3000.0, day_change=float(seq % 7) * 30, day_change_pct=0.1,
        positions=positions, session="2012-06-01", source="simulated",
    )


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None  # JSON has no NaN
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# --- child processes ---------------------------------------------------------------------------
def run_uvicorn(port: int, environ: dict[str, str]) -> None:
    import uvicorn

    from brokerage.store import store_from_settings
    from engine.config import load_settings
    from gateway import routes_core, ws
    from gateway.app import build_app
    from gateway.services import Services

    settings = load_settings(environ, env_file=None)
    assert settings.redis_url
    services = Services.in_process(settings, settings.redis_url, store_from_settings(settings))
    app = build_app(services, [routes_core.routes, ws.routes])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", backlog=4096)


def run_publisher(redis_url: str, accounts: int, hz: float, seconds: float) -> None:
    """The engine's side of the fan-out: every account publishes `hz` snapshots per second, in
    pipelined batches every 25 ms (the engine's flush period)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    names = [_account(i) for i in range(accounts)]
    period = 0.025
    per_tick = accounts * hz * period
    seq = 1_000
    carry = 0.0
    cursor = 0
    end = time.time() + seconds
    next_tick = time.time()
    while time.time() < end:
        carry += per_tick
        batch, carry = int(carry), carry - int(carry)
        now = time.time()
        pipe = client.pipeline(transaction=False)
        for _ in range(batch):
            name = names[cursor]
            cursor = (cursor + 1) % accounts
            if cursor == 0:
                seq += 1
            data = json_encoder.encode(_snapshot(name, seq, now))
            pipe.publish(f"portfolio:{name}", data)
        pipe.execute()
        next_tick += period
        time.sleep(max(0.0, next_tick - time.time()))


# --- load generators ---------------------------------------------------------------------------
async def rest_load(base: str, token: str, accounts: int, seconds: float, concurrency: int) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {token}"}
    end = time.perf_counter() + seconds

    async def worker(k: int, session: aiohttp.ClientSession) -> None:
        nonlocal errors
        i = k
        while time.perf_counter() < end:
            started = time.perf_counter()
            async with session.get(f"{base}/api/portfolio/{_account(i % accounts)}", headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors += 1
            latencies.append(time.perf_counter() - started)
            i += concurrency

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(20):  # warm-up
            async with session.get(f"{base}/api/portfolio/{_account(0)}", headers=headers) as r:
                await r.read()
        started = time.perf_counter()
        await asyncio.gather(*(worker(k, session) for k in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": _ms(_pct(latencies, 0.50)),
        "p99_ms": _ms(_pct(latencies, 0.99)),
        "errors": errors,
        "requests": len(latencies),
    }


class _Frame(msgspec.Struct):
    type: str
    seq: int = 0
    snapshot: dict[str, Any] = {}


_frame_decoder = msgspec.json.Decoder(_Frame)


async def ws_fanout(
    ws_base: str, token: str, clients: int, seconds: float, redis_url: str, hz: float, rss_of: Any
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    received = 0
    failed = 0
    latencies: list[float] = []
    measuring = False
    connected = asyncio.Event()
    ready = 0
    rss_before = rss_of()

    async def client(i: int) -> None:
        nonlocal failed
        try:
            await receive(i)
        except asyncio.CancelledError:
            raise
        except Exception:  # refused or dropped: counted, the run goes on
            failed += 1

    async def receive(i: int) -> None:
        nonlocal received, ready
        url = f"{ws_base}/ws/portfolio/{_account(i)}?token={token}"
        async with connect(url, open_timeout=60, max_size=2**20, compression=None) as ws:
            first = True
            async for raw in ws:
                now = time.time()
                frame = _frame_decoder.decode(raw)
                if frame.type != "portfolio_update":
                    continue
                if first:
                    first = False
                    ready += 1
                    if ready == clients:
                        connected.set()
                    continue
                if measuring:
                    received += 1
                    latencies.append(now - frame.snapshot["publish_ts"])

    async def connect_all() -> list[asyncio.Task[None]]:
        tasks: list[asyncio.Task[None]] = []
        for start in range(0, clients, 200):  # connect in waves: the listen backlog is finite
            tasks.extend(asyncio.create_task(client(i)) for i in range(start, min(clients, start + 200)))
            await asyncio.sleep(0.2)
        return tasks

    t0 = time.time()
    tasks = await connect_all()
    try:
        await asyncio.wait_for(connected.wait(), timeout=120)
    except asyncio.TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise RuntimeError(f"only {ready} of {clients} sockets got their first snapshot within 120 s") from None
    connect_s = time.time() - t0
    rss_after = rss_of()
    publisher = subprocess.Popen(
        [sys.executable, __file__, "--publish", redis_url, str(clients), str(hz), str(seconds + 3)],
        cwd=ROOT,
    )
    await asyncio.sleep(2.0)  # let the publisher reach its rate
    measuring = True
    started = time.time()
    cpu_before = rss_of.cpu(), psutil.Process().cpu_times()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.time() - started
    cpu_after = rss_of.cpu(), psutil.Process().cpu_times()
    publisher.wait()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    per_conn = {k: round((rss_after[k] - rss_before[k]) / clients / 1024, 1) for k in rss_before}
    return {
        "clients": clients,
        "offered_msgs_per_s": round(clients * hz, 1),
        "msgs_per_s": round(received / elapsed, 1),
        "p50_ms": _ms(_pct(latencies, 0.50)),
        "p99_ms": _ms(_pct(latencies, 0.99)),
        "connect_s": round(connect_s, 2),
        "failed_sockets": failed,
        "rss_kb_per_conn": per_conn,
        # one core = 100: a server well under 100 while deliveries lag means the load generator
        # (same 2-core machine) is the limit, not the gateway
        "server_cpu_pct": {k: round((cpu_after[0][k] - cpu_before[0][k]) / elapsed * 100) for k in cpu_before[0]},
        # the gateway's cost per delivered message, whatever else the machine is busy with
        "server_us_per_msg": round(
            sum(cpu_after[0][k] - cpu_before[0][k] for k in cpu_before[0]) / max(received, 1) * 1e6, 1
        ),
        "loadgen_cpu_pct": round(
            (sum(cpu_after[1][:2]) - sum(cpu_before[1][:2])) / elapsed * 100
        ),
    }


# --- orchestration -----------------------------------------------------------------------------
def _wait_http(url: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def _rss_finder(*markers: str) -> Any:
    """RSS (bytes) and CPU seconds of the processes whose command line contains each marker."""
    def find(marker: str) -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(proc.info["cmdline"] or []):
                    found.append(proc)
        return found

    procs = {m: find(m) for m in markers}

    def total(measure: Any) -> dict[str, float]:
        out = {}
        for marker, plist in procs.items():
            value = 0.0
            for proc in plist:
                with contextlib.suppress(psutil.Error):
                    value += measure(proc)
            out[marker] = value
        return out

    class Meter:
        def __call__(self) -> dict[str, float]:
            return total(lambda p: p.memory_info().rss)

        def cpu(self) -> dict[str, float]:
            return total(lambda p: sum(p.cpu_times()[:2]))

    return Meter()


def _replica_port(marker: str) -> int | None:
    """The direct-ingress HTTP port of the (single) Serve replica, or None without direct ingress."""
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(proc.info["cmdline"] or []):
                for conn in proc.net_connections(kind="tcp"):
                    if conn.status == psutil.CONN_LISTEN and 30000 <= conn.laddr.port < 31000:
                        return conn.laddr.port
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1,000 sockets, short runs (under a minute)")
    parser.add_argument("--clients", type=int, nargs="*", help="socket counts (default 100 1000 5000)")
    parser.add_argument("--redis-url", help="external Redis (default: an embedded redis-server)")
    parser.add_argument("--ws-targets", nargs="*", default=None, choices=["serve", "serve-direct", "uvicorn"],
                        help="where to run the fan-out (default: serve-direct and serve; uvicorn too without --quick)")
    parser.add_argument("--serve-uvicorn", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--publish", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_uvicorn:
        run_uvicorn(args.serve_uvicorn, json.loads(os.environ["CLERA_BENCH_ENV"]))
        return
    if args.publish:
        url, n, hz, seconds = args.publish
        run_publisher(url, int(n), float(hz), float(seconds))
        return

    # Serve's experimental direct ingress: each ingress replica also serves HTTP/WebSocket on its own
    # port (30000+), so the fan-out can be measured on one replica with and without the proxy hop.
    # The replica runs the app on the loop that serves the sockets (no cross-thread hop per frame).
    serve_env = {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        # Ray starts workers (the replica, the proxy) at nice 15; uvicorn and the load generator run
        # at nice 0. Same priority for all, or a busy machine would starve only the Serve side.
        "RAY_worker_niceness": "0",
    }
    for name, value in serve_env.items():
        os.environ.setdefault(name, value)
    # Only the JSON goes to stdout: Ray, Serve and the child processes write to fd 1 too.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    import ray
    from ray import serve

    import serve_app
    from brokerage.store import store_from_settings
    from engine.config import load_settings
    from engine.pubsub import publish_snapshots, connect as redis_connect
    from engine.redis_server import EmbeddedRedis

    clients_list = args.clients or ([1000] if args.quick else [100, 1000, 5000])
    rest_s = 3.0 if args.quick else 10.0
    ws_s = 5.0 if args.quick else 12.0
    tmp = Path(tempfile.mkdtemp(prefix="clera-bench-"))
    embedded = None if args.redis_url else EmbeddedRedis(tmp / "redis")
    redis_url = args.redis_url or embedded.url  # type: ignore[union-attr]
    secret = "bench-secret-0123456789abcdef0123456789abcdef"
    environ = {
        "REDIS_URL": redis_url, "CLERA_DATA_DIR": str(tmp / "data"), "SUPABASE_JWT_SECRET": secret,
        "BACKEND_API_KEY": "bench-key", "CLERA_REPLAY_EPOCH": repr(time.time()),
        "CLERA_SERVE_MIN_REPLICAS": "1", "CLERA_SERVE_MAX_REPLICAS": "1",
    }
    settings = load_settings(environ, env_file=None)
    accounts = max(clients_list)
    store = store_from_settings(settings)
    store.ensure_user(USER)
    for i in range(accounts):
        store.add_account(USER, _account(i), status="active")

    async def seed() -> None:
        client = redis_connect(redis_url)
        now = time.time()
        await publish_snapshots(client, [], [_snapshot(_account(i), 1, now) for i in range(accounts)])
        await client.aclose()

    asyncio.run(seed())
    token = mint_jwt(USER, secret, ttl_s=3600)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]},
        "serve_env": {k: os.environ[k] for k in serve_env}, "rest": {}, "ws": {},
    }

    uv_port, serve_port = _free_port(), _free_port()
    uv = subprocess.Popen(
        [sys.executable, __file__, "--serve-uvicorn", str(uv_port)], cwd=ROOT,
        env={**os.environ, "CLERA_BENCH_ENV": json.dumps(environ)},
    )
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="error",
                 log_to_driver=False, namespace="clera-bench")
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
        serve.run(serve_app.gateway_app(settings, environ, start_engine=False), name=APP, route_prefix="/")
        _wait_http(f"http://127.0.0.1:{uv_port}/api/health")
        _wait_http(f"http://127.0.0.1:{serve_port}/api/health")
        for name, port in (("serve", serve_port), ("uvicorn", uv_port)):
            result["rest"][name] = asyncio.run(
                rest_load(f"http://127.0.0.1:{port}", token, accounts, rest_s, concurrency=32)
            )
        result["rest"]["serve_over_uvicorn_rps"] = round(
            result["rest"]["serve"]["rps"] / max(result["rest"]["uvicorn"]["rps"], 1e-9), 3
        )
        targets = args.ws_targets or (["serve-direct", "serve"] if args.quick else ["serve-direct", "serve", "uvicorn"])
        ports = {"serve": serve_port, "uvicorn": uv_port, "serve-direct": _replica_port(f"ServeReplica:{APP}")}
        if ports["serve-direct"] is None:
            targets = [t for t in targets if t != "serve-direct"]
        finders = {"serve": (f"ServeReplica:{APP}", "ProxyActor"), "uvicorn": ("--serve-uvicorn",),
                   "serve-direct": (f"ServeReplica:{APP}",)}
        for target in targets:
            rss_of = _rss_finder(*finders[target])
            runs = []
            for n in clients_list:
                try:
                    runs.append(asyncio.run(ws_fanout(
                        f"ws://127.0.0.1:{ports[target]}", token, n, ws_s, redis_url, settings.publish_hz, rss_of
                    )))
                except Exception as exc:  # a run that cannot complete is a result too
                    runs.append({"clients": n, "error": f"{type(exc).__name__}: {exc}"[:300],
                                 "msgs_per_s": 0.0, "p50_ms": None, "p99_ms": None})
            biggest = runs[-1]
            key = "ws" if target == targets[0] else f"ws_{target.replace('-', '_')}"
            result[key] = {
                **{k: biggest[k] for k in ("clients", "msgs_per_s", "p50_ms", "p99_ms")},
                "target": target, "runs": runs,
                "latency": f"publish to client receipt through one {target} gateway process",
            }
        every = [r for k in result if k.startswith("ws") for r in result[k]["runs"]]
        result["targets"] = {
            "ws_p99_le_500ms_at_5000": {
                k: next((r["p99_ms"] is not None and r["p99_ms"] <= 500
                         for r in result[k]["runs"] if r["clients"] >= 5000), None)
                for k in result if k.startswith("ws")
            },
            "ws_ge_20k_msgs_per_s": max(r["msgs_per_s"] for r in every) >= 20_000,
        }
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        uv.terminate()
        uv.wait(10)
        if embedded is not None:
            embedded.close()
    os.write(result_fd, (json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
