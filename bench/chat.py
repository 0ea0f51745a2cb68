"""Chat benchmark (not a test): prints ONE JSON object.

Chat turns (`POST /api/chat`) with the offline model (CLERA_LLM=offline), while the realtime engine
runs on Ray with the replay feed (so `price:{SYMBOL}` keys are live) and values the bench user's paper
accounts, opened, funded and filled through the Broker port like `clera serve`'s demo accounts:

- serve: the `Gateway` deployment reached through Serve's HTTP proxy, calling the `AgentGraph`
  deployment through its handle (how `clera serve` answers REST on CLERA_PORT);
- serve_direct: the same replica on its own port (direct ingress, no proxy hop);
- handle: the `AgentGraph` deployment called from this process through a handle (no HTTP, no
  gateway): what the agent replica and the handle hop cost alone;
- in_process: `gateway.app.build_app(Services.in_process(..., chat=runner))` with the in-process
  `AgentRunner` under plain uvicorn in its own process (the baseline; the ratios are the cost of Serve).

Each of 1, 10 and 50 concurrent conversations is its own thread (its first turn creates it, the later
ones pass its threadId) sending its next turn when the previous answer arrives. Turns alternate
between a single-tool quote ("what's the price of AAPL?" -> get_quote) and a portfolio turn ("how is
my portfolio?" -> get_portfolio); every answer is checked (status, tool, a price / holdings in the
result). Reports turns/s and p50/p99 latency per kind, CPU of every process, the Serve/in-process
ratios, and the intent parser's accuracy (bench/intents.py).

    python bench/chat.py --quick    # 20 turns per conversation at 1 and 10, 4 at 50
    python bench/chat.py            # 60 turns per conversation at 1 and 10, 12 at 50

Redis is an embedded redis-server unless --redis-url is given (the machine's db 13 is the tests').
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_support import free_port_range, print_json_only  # noqa: E402

from engine.auth import mint_jwt  # noqa: E402 - after the sys.path line, like bench_support
from engine.redis_keys import price_key  # noqa: E402

USER = "bench-chat-user"
APP = "clera-bench-chat"
NAMESPACE = "clera-bench-chat"
API_KEY = "bench-chat-key-0123456789"
SECRET = "bench-chat-secret-0123456789abcdef0123456789abcdef"
ACCOUNTS = 10  # conversation i talks about account i % ACCOUNTS
SYMBOLS = ("AAPL", "MSFT", "IBM", "GOOG", "FB")
DEPOSIT = Decimal(100000)
TARGET_P99_MS = 300.0
KINDS = ("quote", "portfolio")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None  # JSON has no NaN
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def holdings_of(i: int) -> dict[str, Decimal]:
    """Account i's shares: three or four of the replayed symbols, different per account."""
    picked = [SYMBOLS[(i + k) % len(SYMBOLS)] for k in range(3 + i % 2)]
    return {s: Decimal(5 + 5 * ((i + k) % 4)) for k, s in enumerate(picked)}


def message_of(conversation: int, turn: int) -> tuple[str, str, str]:
    """(kind, text, expected tool) of a conversation's turn: quote and portfolio in turn."""
    if turn % 2 == 0:
        symbol = SYMBOLS[(conversation + turn // 2) % len(SYMBOLS)]
        return "quote", f"what's the price of {symbol}?", "get_quote"
    return "portfolio", "how is my portfolio?", "get_portfolio"


def check_turn(kind: str, tool: str, turn: dict[str, Any]) -> str | None:
    """Why an answer is wrong, or None."""
    steps = turn.get("steps") or []
    if not steps or steps[0].get("tool") != tool:
        return f"tool {[s.get('tool') for s in steps]}"
    result = steps[0].get("result") or {}
    if kind == "quote" and not result.get("price"):
        return f"no price: {str(result)[:80]}"
    if kind == "portfolio" and not result.get("holdings"):
        return f"no holdings: {str(result)[:80]}"
    if not turn.get("reply"):
        return "empty reply"
    return None


# --- child process: the in-process baseline under plain uvicorn ---------------------------------
def run_uvicorn(port: int, environ: dict[str, str]) -> None:
    import uvicorn

    from agents.wiring import runner_from_settings
    from brokerage.company_profiles import load_default_company_profiles
    from brokerage.factory import process_broker
    from brokerage.store_factory import store_from_settings
    from engine.config import load_settings
    from gateway.app import build_app
    from gateway.services import Services

    settings = load_settings(environ, env_file=None)
    assert settings.redis_url
    store = store_from_settings(settings)
    load_default_company_profiles(store)
    broker = process_broker(settings, settings.redis_url)
    runner = runner_from_settings(settings, settings.redis_url, store=store, broker=broker)
    app = build_app(Services.in_process(settings, settings.redis_url, store, broker, chat=runner))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", backlog=4096)


# --- CPU of the processes involved ---------------------------------------------------------------
class Meter:
    """CPU seconds of the processes whose command line contains each marker (found when made)."""

    def __init__(self, markers: dict[str, str], pids: dict[str, int] | None = None, loadgen: bool = True) -> None:
        self.procs: dict[str, list[psutil.Process]] = {name: [] for name in markers}
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                line = " ".join(proc.info["cmdline"] or [])
                for name, marker in markers.items():
                    if marker in line:
                        self.procs[name].append(proc)
        for name, pid in (pids or {}).items():
            with contextlib.suppress(psutil.Error):
                self.procs[name] = [psutil.Process(pid)]
        if loadgen:
            self.procs["loadgen"] = [psutil.Process()]

    def cpu(self) -> dict[str, float]:
        out = {}
        for name, plist in self.procs.items():
            total = 0.0
            for proc in plist:
                with contextlib.suppress(psutil.Error):
                    total += sum(proc.cpu_times()[:2])
            out[name] = total
        return out

    def counts(self) -> dict[str, int]:
        return {name: len(plist) for name, plist in self.procs.items() if name != "loadgen"}


ENGINE_MARKERS = {
    "engine_feed": "ray::MarketFeed", "engine_symbol_shards": "ray::SymbolShard",
    "engine_portfolio_shards": "ray::PortfolioShard", "engine_position_sync": "ray::PositionSync",
    "raylet": "/raylet", "gcs": "/gcs_server",
}
TARGET_MARKERS = {
    "serve": {"gateway_replica": f"ServeReplica:{APP}:Gateway", "agent_replica": f"ServeReplica:{APP}:AgentGraph",
              "proxy": "ray::ProxyActor", "serve_controller": "ray::ServeController"},
    "serve_direct": {"gateway_replica": f"ServeReplica:{APP}:Gateway",
                     "agent_replica": f"ServeReplica:{APP}:AgentGraph", "serve_controller": "ray::ServeController"},
    "handle": {"agent_replica": f"ServeReplica:{APP}:AgentGraph", "serve_controller": "ray::ServeController"},
    "in_process": {"uvicorn": "--serve-uvicorn"},
}


# --- load -----------------------------------------------------------------------------------------
class Target:
    """Sends one turn: over HTTP to a gateway, or through a handle to the AgentGraph deployment."""

    def __init__(self, name: str, base: str | None, token: str, handle: Any = None) -> None:
        self.name, self.base, self.handle = name, base, handle
        self.headers = {"X-API-Key": API_KEY, "Authorization": f"Bearer {token}"}
        self.session: Any = None

    async def __aenter__(self) -> Self:
        if self.base is not None:
            import aiohttp

            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=120)
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def turn(self, account: str, thread: str | None, message: str) -> tuple[int, dict[str, Any]]:
        if self.handle is not None:
            import msgspec

            try:
                turn = await self.handle.chat.remote(USER, account, thread, message)
            except Exception as exc:  # noqa: BLE001  (a refusal or a dead replica is a result too)
                return 599, {"error": f"{type(exc).__name__}: {exc}"[:200]}
            return 200, msgspec.to_builtins(turn)
        body: dict[str, Any] = {"message": message, "accountId": account}
        if thread is not None:
            body["threadId"] = thread
        async with self.session.post(f"{self.base}/api/chat", json=body, headers=self.headers) as r:
            data = await r.json(content_type=None)
            return r.status, data


async def conversations(target: Target, accounts: list[str], n: int, turns: int, first: int) -> dict[str, Any]:
    """n conversations of `turns` turns each, all at once; conversation ids from `first` on."""
    latencies: dict[str, list[float]] = {k: [] for k in KINDS}
    by_turn: dict[int, list[float]] = {}
    errors: dict[str, int] = {}
    wrong: list[str] = []

    async def one(c: int) -> None:
        thread: str | None = None
        for k in range(turns):
            kind, text, tool = message_of(c, k)
            started = time.perf_counter()
            try:
                status, data = await target.turn(accounts[c % len(accounts)], thread, text)
            except Exception as exc:  # noqa: BLE001  (a dropped connection is counted, not fatal)
                status, data = 0, {"error": f"{type(exc).__name__}: {exc}"[:200]}
            elapsed = time.perf_counter() - started
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1
                if len(wrong) < 5:
                    wrong.append(f"{status}: {str(data)[:160]}")
                continue
            latencies[kind].append(elapsed)
            by_turn.setdefault(k, []).append(elapsed)
            thread = data.get("threadId", thread)
            why = check_turn(kind, tool, data)
            if why is not None and len(wrong) < 5:
                wrong.append(f"{kind}: {why}")
            if why is not None:
                errors["wrong_answer"] = errors.get("wrong_answer", 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(one(first + c) for c in range(n)))
    elapsed = time.perf_counter() - started
    every = latencies["quote"] + latencies["portfolio"]
    return {
        "conversations": n,
        "turns": len(every),
        "turns_per_s": round(len(every) / elapsed, 1),
        "p50_ms": _pct(every, 0.50),
        "p99_ms": _pct(every, 0.99),
        "by_kind": {k: {"turns": len(v), "p50_ms": _pct(v, 0.50), "p99_ms": _pct(v, 0.99), "max_ms": _pct(v, 1.0)}
                    for k, v in latencies.items()},
        # a thread's history grows turn by turn: its checkpoint is read and written whole
        "p50_ms_first_4_turns": _pct([x for k in range(min(4, turns)) for x in by_turn.get(k, [])], 0.50),
        "p50_ms_last_4_turns": _pct([x for k in range(max(0, turns - 4), turns) for x in by_turn.get(k, [])], 0.50),
        "errors": errors,
        "wrong_samples": wrong,
        "elapsed_s": round(elapsed, 2),
    }


async def measure(target: Target, accounts: list[str], plan: list[tuple[int, int]], markers: dict[str, str],
                  engine_meter: Meter) -> dict[str, Any]:
    async with target:
        progress(f"{target.name}: warm-up")
        await conversations(target, accounts, 10, 4, first=10_000)  # graph compiled, connections open
        levels = []
        for n, turns in plan:
            meter = Meter(markers)  # found again: the agent deployment may have scaled
            cpu0, eng0, t0 = meter.cpu(), engine_meter.cpu(), time.perf_counter()
            run = await conversations(target, accounts, n, turns, first=1_000 * (len(levels) + 1))
            elapsed = time.perf_counter() - t0
            cpu1, eng1 = meter.cpu(), engine_meter.cpu()
            run["cores"] = {k: round((cpu1[k] - cpu0[k]) / elapsed, 2) for k in cpu0}
            run["engine_cores"] = {k: round((eng1[k] - eng0[k]) / elapsed, 2) for k in eng0}
            run["processes"] = meter.counts()
            busy = sum(run["cores"].values()) - run["cores"].get("loadgen", 0.0)
            run["server_cpu_ms_per_turn"] = round(busy * elapsed / max(run["turns"], 1) * 1000, 1)
            progress(f"{target.name}: {n} conversations: {run['turns_per_s']} turns/s, p50 {run['p50_ms']} ms, "
                     f"p99 {run['p99_ms']} ms, errors {run['errors']}")
            levels.append(run)
    return {"levels": levels}


# --- accounts ---------------------------------------------------------------------------------------
def open_accounts(broker: Any, store: Any) -> list[str]:
    """The bench user's paper accounts, opened and sent a deposit (which clears at the next replayed open)."""
    from brokerage.models import ManualAchRequest
    from gateway.demo import _application

    store.ensure_user(USER, email="bench@clera.local")
    ids = []
    for i in range(ACCOUNTS):
        account = broker.create_account(_application(f"bench-{i:02d}"))
        store.add_account(USER, account.id, email=account.email, account_number=account.account_number,
                          status="active")
        broker.get_account(account.id)  # the paper broker approves on touch
        relationship = broker.create_ach_relationship(account.id, ManualAchRequest(
            bank_account_type="CHECKING", bank_account_number="000123456789", bank_routing_number="121000358",
            nickname="Bench checking"))
        broker.create_transfer(account.id, relationship.id, DEPOSIT, "INCOMING")
        ids.append(account.id)
    return ids


def fill_accounts(broker: Any, redis_url: str, ids: list[str], timeout_s: float = 240.0) -> dict[str, Any]:
    """Buys every account's holdings once its deposit has cleared and the feed prices the symbols;
    returns once every position is held (deposits clear and buys fill while the replayed market is open)."""
    import redis

    from brokerage.models import OrderRequest

    client = redis.Redis.from_url(redis_url)
    began = time.time()
    pending = dict(enumerate(ids))
    try:
        while pending:
            if time.time() - began > timeout_s:
                raise RuntimeError(f"{len(pending)} accounts not filled after {timeout_s:.0f} s")
            if any(client.get(price_key(s)) is None for s in SYMBOLS):
                time.sleep(0.5)
                continue
            for i, account_id in list(pending.items()):
                held = {p.symbol: p.qty for p in broker.list_positions(account_id)}
                wanted = holdings_of(i)
                if all(held.get(s, 0) >= q for s, q in wanted.items()):
                    del pending[i]
                    continue
                if broker.get_account(account_id).cash <= 0:
                    continue  # the deposit has not cleared yet
                for symbol, qty in wanted.items():
                    broker.submit_order(account_id, OrderRequest(
                        symbol=symbol, side="buy", qty=qty, client_order_id=f"bench-{account_id}-{symbol}"))
            time.sleep(0.5)
    finally:
        client.close()
    return {"accounts": len(ids), "funded_in_s": round(time.time() - began, 1)}


def intent_accuracy() -> dict[str, Any]:
    try:
        sys.path.insert(0, str(ROOT / "bench"))
        from intents import evaluate  # bench/intents.py

        result = evaluate()
    except ImportError:
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "intents.py")], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        result = json.loads(out.stdout)
    misses = result.pop("misses", [])
    result["misses"] = len(misses)
    result["miss_samples"] = [m["text"] for m in misses[:5]]
    return result


# --- orchestration ----------------------------------------------------------------------------------
def _wait_http(url: str, timeout: float = 90) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def ratios(serve: dict[str, Any], base: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for s, b in zip(serve["levels"], base["levels"], strict=True):
        row: dict[str, Any] = {"conversations": s["conversations"]}
        if s["p50_ms"] and b["p50_ms"]:
            row["p50_ratio"] = round(s["p50_ms"] / b["p50_ms"], 2)
        if s["p99_ms"] and b["p99_ms"]:
            row["p99_ratio"] = round(s["p99_ms"] / b["p99_ms"], 2)
        row["throughput_ratio"] = round(s["turns_per_s"] / max(b["turns_per_s"], 1e-9), 3)
        for kind in KINDS:
            sp, bp = s["by_kind"][kind]["p50_ms"], b["by_kind"][kind]["p50_ms"]
            if sp and bp:
                row[f"{kind}_p50_ratio"] = round(sp / bp, 2)
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 turns per conversation at 1 and 10, 4 at 50")
    parser.add_argument("--redis-url", help="external Redis (default: an embedded redis-server; it is flushed)")
    parser.add_argument("--targets", nargs="*", default=["serve", "serve_direct", "handle", "in_process"],
                        choices=["serve", "serve_direct", "handle", "in_process"])
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 10, 50], help="concurrent conversations")
    parser.add_argument("--serve-uvicorn", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_uvicorn:
        run_uvicorn(args.serve_uvicorn, json.loads(os.environ["CLERA_BENCH_ENV"]))
        return
    signal.signal(signal.SIGTERM, _interrupted)

    print_json_only(lambda: run(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    from engine.config import load_settings
    from engine.redis_server import EmbeddedRedis

    per_conv = 20 if args.quick else 60
    plan = [(n, per_conv if n <= 10 else max(2, per_conv // 5)) for n in args.levels]
    tmp = Path(tempfile.mkdtemp(prefix="clera-bench-chat-"))
    embedded = None
    uv: subprocess.Popen | None = None
    ray_started = False
    settings = None
    try:
        embedded = None if args.redis_url else EmbeddedRedis(tmp / "redis")
        redis_url = args.redis_url or embedded.url
        if args.redis_url:
            import redis

            redis.Redis.from_url(redis_url).flushdb()
        session_s = float(os.environ.get("CLERA_REPLAY_SESSION_SECONDS", "60"))
        # The replay clock starts 85% into its first replayed day (the night): the deposits made now
        # clear at the next open, seconds away, instead of a whole replayed day later.
        epoch = time.time() - 0.85 * session_s
        direct_port = free_port_range(101, 39_300)
        environ = {
            **{k: v for k, v in os.environ.items() if k.startswith("CLERA_")},  # engine/agent tuning
            "REDIS_URL": redis_url, "CLERA_DATA_DIR": str(tmp / "data"), "SUPABASE_JWT_SECRET": SECRET,
            "BACKEND_API_KEY": API_KEY, "CLERA_RAY_NAMESPACE": NAMESPACE, "CLERA_FEED": "replay",
            "CLERA_REPLAY_EPOCH": repr(epoch), "CLERA_POSITIONS": "broker", "CLERA_BROKER": "paper",
            "CLERA_LLM": "offline", "CLERA_SERVE_MIN_REPLICAS": "1", "CLERA_SERVE_MAX_REPLICAS": "1",
            "CLERA_DIRECT_PORT": str(direct_port),
        }
        settings = load_settings(environ, env_file=None)
        settings.data_path.mkdir(parents=True, exist_ok=True)

        from brokerage.company_profiles import load_default_company_profiles
        from brokerage.factory import process_broker
        from brokerage.store_factory import store_from_settings

        store = store_from_settings(settings)
        load_default_company_profiles(store)
        broker = process_broker(settings, redis_url)
        accounts = open_accounts(broker, store)
        token = mint_jwt(USER, SECRET, ttl_s=7200)

        import ray
        from ray import serve

        import serve_app
        from actors.topology import start_topology

        serve_env = {
            **serve_app.direct_ingress_environ(settings),
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
            "RAY_worker_niceness": "0",
        }
        os.environ.update(serve_env)
        os.environ.update(serve_app.settings_environ(settings))  # the local Ray's secrets: never an argument
        result: dict[str, Any] = {
            "quick": args.quick,
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
            "workload": {
                "llm": settings.llm, "feed": settings.feed, "replay_session_seconds": settings.replay_session_seconds,
                "accounts": ACCOUNTS, "turns": "quote ('what's the price of AAPL?' -> get_quote) and portfolio "
                "('how is my portfolio?' -> get_portfolio) in turn, one thread per conversation",
                "plan": [{"conversations": n, "turns_each": t} for n, t in plan],
                "agent_replicas": [settings.agent_min_replicas, settings.agent_max_replicas],
                "agent_max_ongoing": settings.agent_max_ongoing, "agent_num_cpus": settings.agent_num_cpus,
                "gateway_replicas": 1, "redis": "embedded" if embedded else "external",
            },
            "serve_env": serve_env,
        }
        uv_port, proxy_port = _free_port(), _free_port()
        if "in_process" in args.targets:
            uv = subprocess.Popen([sys.executable, __file__, "--serve-uvicorn", str(uv_port)], cwd=ROOT,
                                  env={**os.environ, "CLERA_BENCH_ENV": json.dumps(environ)})
        progress("starting Ray, the engine (replay feed) and the Serve app")
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="error",
                 log_to_driver=False, namespace=NAMESPACE)
        ray_started = True
        began = time.time()
        start_topology(settings, redis_url)
        serve.start(http_options={"host": "127.0.0.1", "port": proxy_port})
        serve.run(serve_app.gateway_app(settings, start_engine=False), name=APP, route_prefix="/")
        result["startup_s"] = round(time.time() - began, 1)
        _wait_http(f"http://127.0.0.1:{proxy_port}/api/health")
        _wait_http(f"http://127.0.0.1:{direct_port}/api/health")
        if uv is not None:
            _wait_http(f"http://127.0.0.1:{uv_port}/api/health")
        progress("funding the paper accounts (deposit, then buys at the replayed open)")
        result["accounts"] = fill_accounts(broker, redis_url, accounts)
        redis_pid = embedded.pid if embedded is not None else None
        engine_meter = Meter(ENGINE_MARKERS, {"redis": redis_pid} if redis_pid else None, loadgen=False)
        result["engine_processes"] = engine_meter.counts()

        bases = {"serve": f"http://127.0.0.1:{proxy_port}", "serve_direct": f"http://127.0.0.1:{direct_port}",
                 "in_process": f"http://127.0.0.1:{uv_port}"}
        agent_handle = serve.get_deployment_handle("AgentGraph", app_name=APP)
        feed0 = feed_status()
        for name in args.targets:
            target = Target(name, bases.get(name), token, agent_handle if name == "handle" else None)
            result[name] = asyncio.run(measure(target, accounts, plan, TARGET_MARKERS[name], engine_meter))
        feed1 = feed_status()
        result["engine"] = {
            "feed_connected": bool(feed1["feed"].get("connected")),
            "feed_ticks_during_bench": feed1["stats"].get("ticks", 0) - feed0["stats"].get("ticks", 0),
            "accounts_valued": accounts_valued(redis_url, accounts),
        }

        if "in_process" in args.targets:
            base = result["in_process"]
            result["cost_of_serve"] = {
                name: ratios(result[name], base) for name in ("serve", "serve_direct", "handle") if name in result
            }
        result["intents"] = intent_accuracy()
        result["target_met"] = targets(result, args.targets)
        result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        return result
    finally:
        progress("stopping")
        if ray_started:
            import ray
            from ray import serve

            from actors.topology import stop_topology

            with contextlib.suppress(Exception):
                serve.shutdown()
            if settings is not None:
                with contextlib.suppress(Exception):
                    stop_topology(settings)
            with contextlib.suppress(Exception):
                ray.shutdown()
        if uv is not None:
            uv.terminate()
            try:
                uv.wait(10)
            except subprocess.TimeoutExpired:
                uv.kill()
        if embedded is not None:
            with contextlib.suppress(Exception):
                embedded.close()
        shutil.rmtree(tmp, ignore_errors=True)


def feed_status() -> dict[str, Any]:
    import ray

    from actors.common import lookup, market_feed_name

    handle = lookup(market_feed_name(), NAMESPACE)
    return ray.get(handle.status.remote(), timeout=10) if handle is not None else {"feed": {}, "stats": {}}


def accounts_valued(redis_url: str, ids: list[str]) -> int:
    """Accounts whose live value the engine has written (`portfolio:last:{id}`)."""
    import redis

    from engine.pubsub import last_key

    client = redis.Redis.from_url(redis_url)
    try:
        return sum(v is not None for v in client.mget([last_key(a) for a in ids]))
    finally:
        client.close()


def targets(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """p99 <= 300 ms per kind at 10 concurrent conversations, engine running, per path."""
    out: dict[str, Any] = {}
    for name in names:
        at10 = next((lv for lv in result[name]["levels"] if lv["conversations"] == 10), None)
        if at10 is None:
            continue
        for kind in KINDS:
            p99 = at10["by_kind"][kind]["p99_ms"]
            out[f"{name}_{kind}_p99_le_{TARGET_P99_MS:.0f}ms_at_10"] = p99 is not None and p99 <= TARGET_P99_MS
        out[f"{name}_no_errors"] = all(not lv["errors"] for lv in result[name]["levels"])
    # the target: a single-tool turn through the real gateway and the AgentGraph deployment
    if "serve" in names:
        out["single_tool_turn_through_serve"] = out.get(f"serve_quote_p99_le_{TARGET_P99_MS:.0f}ms_at_10")
    return out


if __name__ == "__main__":
    main()
