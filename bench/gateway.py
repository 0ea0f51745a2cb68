"""Gateway benchmark (not a test): prints one JSON object.

Everything runs as in production, on one machine: the engine topology on Ray (simulated feed ->
symbol shards -> portfolio shards -> Redis) values one account per socket and publishes it at its
coalescing rate (CLERA_PUBLISH_HZ per account, CLERA_PUBLISH_BUDGET per portfolio shard), while
clients watch those accounts over WebSockets.

REST: requests/s and latency of `GET /api/portfolio/{id}` through Serve's proxy, on the replica's own
port and through plain uvicorn serving the same app, in the same run (the ratios are the cost of Serve).
WebSocket fan-out: N clients, one account each, on ONE gateway process: a Serve replica's own
WebSocket server (CLERA_NATIVE_WS, frames written straight to the sockets), the same replica's ASGI
route on its own port (direct ingress) and through Serve's HTTP proxy, and plain uvicorn. Reports
messages/s delivered against what the engine published for those accounts, tick-to-client latency
(receipt minus the newest tick in the snapshot), publish-to-client latency, the CPU of every process
and RSS per connection.

    python bench/gateway.py --quick      # under a minute: 1,000 sockets on the replica's own WebSocket server
    python bench/gateway.py              # 100, 1,000 and 5,000 sockets on every target

The load generator (this process), the uvicorn server, the Ray processes and Redis are separate
processes on the same 2 cores; Redis is an embedded redis-server unless --redis-url is given.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
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

from bench_support import free_port_range  # noqa: E402

from engine.auth import mint_jwt  # noqa: E402

USER = "bench-user"
APP = "clera-bench"
NAMESPACE = "clera-bench"
POSITIONS = 5  # per account
SYMBOLS = 500
TICKS_PER_S = 2_000  # each symbol ~4 trades/s: an account of 5 changes ~20 times a second, faster than it is published


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _account(i: int) -> str:
    return f"b{i:06d}"  # the ids bench/realtime.py's make_accounts gives


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None  # JSON has no NaN
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


# --- child process -----------------------------------------------------------------------------
def run_uvicorn(port: int, environ: dict[str, str]) -> None:
    import uvicorn

    from brokerage.store_factory import store_from_settings
    from engine.config import load_settings
    from gateway import routes_core, ws
    from gateway.app import build_app
    from gateway.services import Services

    settings = load_settings(environ, env_file=None)
    assert settings.redis_url
    services = Services.in_process(settings, settings.redis_url, store_from_settings(settings))
    app = build_app(services, [routes_core.routes, ws.routes])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", backlog=4096)


# --- load generators ---------------------------------------------------------------------------
async def rest_load(base: str, token: str, accounts: int, seconds: float, concurrency: int) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors: dict[int, int] = {}
    headers = {"Authorization": f"Bearer {token}"}
    end = time.perf_counter() + seconds

    async def worker(k: int, session: aiohttp.ClientSession) -> None:
        i = k
        while time.perf_counter() < end:
            started = time.perf_counter()
            async with session.get(f"{base}/api/portfolio/{_account(i % accounts)}", headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors[r.status] = errors.get(r.status, 0) + 1
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


class _Head(msgspec.Struct, gc=False):
    as_of: float
    publish_ts: float


class _Frame(msgspec.Struct, gc=False):
    type: str
    snapshot: _Head | None = None  # only these two fields are decoded; the positions are skipped


_frame_decoder = msgspec.json.Decoder(_Frame)


class Engine:
    """The running topology's live-snapshot counters (what was offered to the sockets)."""

    def __init__(self, topology: Any, meter: Any) -> None:
        self.topology = topology
        self.meter = meter

    async def published(self) -> tuple[int, list[float]]:
        """Live snapshots published so far, and the rate each watched account gets per shard."""
        statuses = await asyncio.gather(*(p.status.remote() for p in self.topology.portfolio_shards))
        return sum(s["stats"]["published"] for s in statuses), [s["stats"]["live_hz"] for s in statuses]


async def wait_for_last_values(redis_url: str, accounts: int, timeout_s: float = 60.0) -> None:
    """Every account valued once (the shards write each one's first last value within seconds)."""
    from engine.pubsub import connect, last_key

    client = connect(redis_url)
    try:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            values = await client.mget([last_key(_account(i)) for i in range(accounts)])
            if all(v is not None for v in values):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"not every account had a last value after {timeout_s:.0f} s")
    finally:
        await client.aclose()


async def forget_interest(redis_url: str, accounts: int) -> None:
    """No account stays live from an earlier run: the engine publishes only what this run watches."""
    from engine.pubsub import connect, interest_key

    client = connect(redis_url)
    try:
        await client.delete(*(interest_key(_account(i)) for i in range(accounts)))
    finally:
        await client.aclose()


class Watcher(asyncio.Protocol):
    """One client socket, RFC 6455 by hand on a bare asyncio transport: the measuring instrument.

    The 5,000 clients share the 2 cores with the gateway and the engine, so their cost is taken
    from what the gateway gets. A task and a stream per socket (websockets' asyncio client) cost
    about 30 us per message, websockets' sans-I/O protocol on a bare transport about 17; this about
    half that again: the server's frames are unmasked, unfragmented text, so a frame is a header
    and a slice. Pings are answered and a close is returned, as a browser does.
    """

    def __init__(self, host: str, port: int, path: str, on_frame: Any, on_gone: Any) -> None:
        self.host, self.port, self.path = host, port, path
        self.on_frame, self.on_gone = on_frame, on_gone
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16)).decode()
        self.buffer = bytearray()
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self.key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buffer
        buf += data
        if not self.open and not self._handshake():
            return
        pos, size = 0, len(buf)
        while size - pos >= 2:
            opcode, length, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 4]), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2 : pos + 10]), 10
            if size - pos < head + length:
                break
            payload = bytes(buf[pos + head : pos + head + length])
            pos += head + length
            if opcode == 0x1:
                self.on_frame(now, payload)
            elif opcode == 0x9:
                self._send(0xA, payload)  # pong
            elif opcode == 0x8:
                self._send(0x8, payload[:2])
                self.transport.close()
                self.on_gone(f"closed {int.from_bytes(payload[:2]) if payload else 1005}")
                return
        del buf[:pos]

    def _handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").lower()
        accept = base64.b64encode(hashlib.sha1((self.key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        if not head.startswith("http/1.1 101") or f"sec-websocket-accept: {accept.decode().lower()}" not in head:
            self.on_gone(f"handshake refused: {head.splitlines()[0][:40]}")
            self.transport.close()
            return False
        del self.buffer[: end + 4]
        self.open = True
        return True

    def _send(self, opcode: int, payload: bytes) -> None:
        """A client frame: masked, as RFC 6455 requires (control frames only, so short)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(masked)]) + mask + masked)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_gone(type(exc).__name__ if exc else "connection closed")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.open:
                self._send(0x8, (1000).to_bytes(2, "big"))
            self.transport.close()


async def ws_fanout(
    ws_base: str, token: str, clients: int, seconds: float, engine: Engine, rss_of: Any
) -> dict[str, Any]:
    host, port = ws_base.removeprefix("ws://").split(":")
    received = 0
    failed: dict[str, int] = {}
    tick_latency: list[float] = []
    publish_latency: list[float] = []
    measuring = False
    connected = asyncio.Event()
    ready = 0
    rss_before = rss_of()
    loop = asyncio.get_running_loop()

    def watcher(i: int) -> Watcher:
        first = True
        gone = False

        def on_frame(now: float, raw: bytes) -> None:
            nonlocal first, received, ready
            frame = _frame_decoder.decode(raw)
            if frame.type != "portfolio_update" or frame.snapshot is None:
                return
            if first:  # the stored last value, sent on connect
                first = False
                ready += 1
                if ready == clients:
                    connected.set()
            elif measuring:
                received += 1
                tick_latency.append(now - frame.snapshot.as_of)
                publish_latency.append(now - frame.snapshot.publish_ts)

        def on_gone(why: str) -> None:
            nonlocal gone
            if not gone and not closing:
                gone = True
                failed[why] = failed.get(why, 0) + 1

        return Watcher(host, int(port), f"/ws/portfolio/{_account(i)}?token={token}", on_frame, on_gone)

    closing = False
    sockets: list[Watcher] = []

    async def open_one(i: int) -> None:
        try:
            _, protocol = await loop.create_connection(lambda: watcher(i), host, int(port))
            sockets.append(protocol)
        except OSError as exc:
            failed[type(exc).__name__] = failed.get(type(exc).__name__, 0) + 1

    async def connect_all() -> None:
        for start in range(0, clients, 200):  # connect in waves: the listen backlog is finite
            await asyncio.gather(*(open_one(i) for i in range(start, min(clients, start + 200))))
            await asyncio.sleep(0.2)

    t0 = time.time()
    await connect_all()
    try:
        await asyncio.wait_for(connected.wait(), timeout=60)
    except TimeoutError:
        closing = True
        for sock in sockets:
            sock.close()
        raise RuntimeError(
            f"only {ready} of {clients} sockets got their first snapshot within 60 s (failed: {failed})"
        ) from None
    connect_s = time.time() - t0
    rss_after = rss_of()
    # the shards see the new interest within a second; then let what the connection storm left in
    # Redis and socket buffers drain, so the window measures the steady state
    await asyncio.sleep(3.0 + clients / 1000)
    measuring = True
    started = time.time()
    (published0, _), cpu_before = (
        await engine.published(),
        (rss_of.cpu(), engine.meter.cpu(), psutil.Process().cpu_times()),
    )
    await asyncio.sleep(seconds)
    measuring = False
    elapsed = time.time() - started
    (published1, live_hz), cpu_after = (
        await engine.published(),
        (rss_of.cpu(), engine.meter.cpu(), psutil.Process().cpu_times()),
    )
    closing = True
    for sock in sockets:
        sock.close()
    await asyncio.sleep(0.5)
    per_conn = {k: round((rss_after[k] - rss_before[k]) / clients / 1024, 1) for k in rss_before}

    def cores(index: int) -> dict[str, float]:
        return {k: round((cpu_after[index][k] - cpu_before[index][k]) / elapsed, 2) for k in cpu_before[index]}

    server = cores(0)
    return {
        "clients": clients,
        "engine_published_msgs_per_s": round((published1 - published0) / elapsed, 1),
        "engine_live_hz_per_account": live_hz,
        "msgs_per_s": round(received / elapsed, 1),
        "p50_ms": _ms(_pct(tick_latency, 0.50)),
        "p99_ms": _ms(_pct(tick_latency, 0.99)),
        "publish_to_client_p50_ms": _ms(_pct(publish_latency, 0.50)),
        "publish_to_client_p99_ms": _ms(_pct(publish_latency, 0.99)),
        "connect_s": round(connect_s, 2),
        "failed_sockets": failed,
        "rss_kb_per_conn": per_conn,
        # cores busy per process during the window (2 in all on the reference machine)
        "server_cores": server,
        "engine_cores": cores(1),
        "loadgen_cores": round((sum(cpu_after[2][:2]) - sum(cpu_before[2][:2])) / elapsed, 2),
        # the gateway's own cost per delivered message, whatever else the machine is busy with
        "server_us_per_msg": round(sum(server.values()) * elapsed / max(received, 1) * 1e6, 1),
    }


# --- orchestration -----------------------------------------------------------------------------
def _wait_port(port: int, timeout: float = 60) -> None:
    """Until something accepts TCP connections on the port (the replica's own WebSocket server)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1,000 sockets, short runs (under a minute)")
    parser.add_argument("--clients", type=int, nargs="*", help="socket counts (default 100 1000 5000)")
    parser.add_argument("--redis-url", help="external Redis (default: an embedded redis-server)")
    parser.add_argument("--ws-targets", nargs="*", default=None,
                        choices=["serve-native", "serve-direct", "serve", "uvicorn"],
                        help="where to run the fan-out (default: serve-native; all four without --quick)")
    parser.add_argument("--serve-uvicorn", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_uvicorn:
        run_uvicorn(args.serve_uvicorn, json.loads(os.environ["CLERA_BENCH_ENV"]))
        return

    from engine.config import load_settings
    from engine.redis_server import EmbeddedRedis

    clients_list = args.clients or ([1000] if args.quick else [100, 1000, 5000])
    accounts = max(clients_list)
    rest_s = 3.0 if args.quick else 10.0
    ws_s = 5.0 if args.quick else 12.0
    tmp = Path(tempfile.mkdtemp(prefix="clera-bench-"))
    embedded = None if args.redis_url else EmbeddedRedis(tmp / "redis")
    redis_url = args.redis_url or embedded.url
    secret = "bench-secret-0123456789abcdef0123456789abcdef"
    sys.path.insert(0, str(ROOT / "bench"))
    from realtime import make_accounts

    accounts_file = tmp / "accounts.json"
    make_accounts({"accounts": accounts, "positions": POSITIONS, "symbols": SYMBOLS}, accounts_file)
    direct_port = free_port_range(101, 38_200)
    ws_port = free_port_range(101, direct_port + 101)  # the replicas' own WebSocket servers
    environ = {
        # engine tuning from the environment (CLERA_PUBLISH_HZ, CLERA_PUBLISH_BUDGET, CLERA_FLUSH_MS, ...)
        **{k: v for k, v in os.environ.items() if k.startswith("CLERA_")},
        "REDIS_URL": redis_url, "CLERA_DATA_DIR": str(tmp / "data"), "SUPABASE_JWT_SECRET": secret,
        "BACKEND_API_KEY": "bench-key", "CLERA_RAY_NAMESPACE": NAMESPACE,
        "CLERA_FEED": "simulated", "CLERA_SIM_SYMBOLS": str(SYMBOLS), "CLERA_SIM_TICKS_PER_S": str(TICKS_PER_S),
        "CLERA_POSITIONS": "file", "CLERA_DEMO_ACCOUNTS_FILE": str(accounts_file), "CLERA_PINNED_SYMBOLS": ",",
        "CLERA_SERVE_MIN_REPLICAS": "1", "CLERA_SERVE_MAX_REPLICAS": "1", "CLERA_DIRECT_PORT": str(direct_port),
        "CLERA_NATIVE_WS": "true", "CLERA_WS_PORT": str(ws_port),
    }
    settings = load_settings(environ, env_file=None)

    # Only the JSON goes to stdout: Ray, Serve and the child processes write to fd 1 too.
    result_fd = os.dup(1)
    os.dup2(2, 1)
    import ray
    from ray import serve

    import serve_app
    from actors.topology import start_topology, stop_topology
    from brokerage.store_factory import store_from_settings

    # As `clera serve` starts Ray: direct ingress on; workers at the load generator's priority (Ray
    # starts them at nice 15, and a busy machine would otherwise starve only the Ray side).
    serve_env = {**serve_app.direct_ingress_environ(settings), "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
                 "RAY_worker_niceness": "0"}
    os.environ.update(serve_env)
    os.environ.update(serve_app.settings_environ(settings))  # the local Ray's secrets: never an argument
    store = store_from_settings(settings)
    store.ensure_user(USER)
    for i in range(accounts):
        store.add_account(USER, _account(i), status="active")
    token = mint_jwt(USER, secret, ttl_s=3600)
    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()[0]},
        "workload": {"accounts": accounts, "positions": POSITIONS, "symbols": SYMBOLS, "ticks_per_s": TICKS_PER_S,
                     "publish_hz": settings.publish_hz, "publish_budget_per_shard": settings.publish_budget,
                     "portfolio_shards": settings.portfolio_shards, "flush_ms": settings.flush_ms},
        "serve_env": serve_env, "rest": {}, "ws": {},
    }

    uv_port, serve_port = _free_port(), _free_port()
    uv = subprocess.Popen(
        [sys.executable, __file__, "--serve-uvicorn", str(uv_port)], cwd=ROOT,
        env={**os.environ, "CLERA_BENCH_ENV": json.dumps(environ)},
    )
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="error",
                 log_to_driver=False, namespace=NAMESPACE)
        topology = start_topology(settings, redis_url)
        engine = Engine(topology, _rss_finder("ray::MarketFeed", "ray::SymbolShard", "ray::PortfolioShard",
                                              "ray::PositionSync", "redis-server"))
        serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
        serve.run(serve_app.gateway_app(settings, start_engine=False), name=APP, route_prefix="/")
        _wait_http(f"http://127.0.0.1:{uv_port}/api/health")
        _wait_http(f"http://127.0.0.1:{serve_port}/api/health")
        _wait_http(f"http://127.0.0.1:{direct_port}/api/health")
        _wait_port(ws_port)
        asyncio.run(wait_for_last_values(redis_url, accounts))
        for name, port in (("serve", serve_port), ("serve_direct", direct_port), ("uvicorn", uv_port)):
            result["rest"][name] = asyncio.run(
                rest_load(f"http://127.0.0.1:{port}", token, accounts, rest_s, concurrency=32)
            )
        for name in ("serve", "serve_direct"):
            result["rest"][f"{name}_over_uvicorn_rps"] = round(
                result["rest"][name]["rps"] / max(result["rest"]["uvicorn"]["rps"], 1e-9), 3
            )
        targets = args.ws_targets or (
            ["serve-native"] if args.quick else ["serve-native", "serve-direct", "uvicorn", "serve"]
        )
        ports = {"serve": serve_port, "uvicorn": uv_port, "serve-direct": direct_port, "serve-native": ws_port}
        finders = {"serve": (f"ServeReplica:{APP}", "ProxyActor"), "uvicorn": ("--serve-uvicorn",),
                   "serve-direct": (f"ServeReplica:{APP}",), "serve-native": (f"ServeReplica:{APP}",)}
        for target in targets:
            rss_of = _rss_finder(*finders[target])
            runs = []
            for n in clients_list:
                asyncio.run(forget_interest(redis_url, accounts))
                try:
                    runs.append(
                        asyncio.run(ws_fanout(f"ws://127.0.0.1:{ports[target]}", token, n, ws_s, engine, rss_of))
                    )
                except Exception as exc:  # noqa: BLE001 - a run that cannot complete is a result too
                    runs.append(
                        {
                            "clients": n,
                            "error": f"{type(exc).__name__}: {exc}"[:300],
                            "msgs_per_s": 0.0,
                            "p50_ms": None,
                            "p99_ms": None,
                        }
                    )
            biggest = runs[-1]
            key = "ws" if target == targets[0] else f"ws_{target.replace('-', '_')}"
            result[key] = {
                **{
                    k: biggest.get(k)
                    for k in ("clients", "msgs_per_s", "p50_ms", "p99_ms", "engine_published_msgs_per_s")
                },
                "target": target,
                "runs": runs,
                "latency": f"tick (newest price in the snapshot) to client receipt, through one {target} gateway "
                    "process",
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
            stop_topology(settings)
        with contextlib.suppress(Exception):
            ray.shutdown()
        uv.terminate()
        uv.wait(10)
        if embedded is not None:
            embedded.close()
    os.write(result_fd, (json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
