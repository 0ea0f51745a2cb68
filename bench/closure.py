"""Account closure benchmark (not a test): prints ONE JSON object.

N account closures (1,000; `--quick` 200) started at once on the paper broker, its ledger, the store
and the closure records in PostgreSQL (a schema of its own per run in the machine's `test` database,
dropped at the end), prices in an embedded redis-server. Every account is opened, linked to a bank,
funded (most under the daily ACH limit, a fifth over it: withdrawn in two or three daily chunks) and
holds one or two positions, bought on the Tuesday and sold at other prices by the closure, so the
proceeds are not the cost. Both runs close the same plan of accounts (same deposits and buys), each
on accounts of its own:

- ray (`--ray-mode tasks`, the default): plain Ray tasks of one CPU each calling
  `ClosureProcess.initiate` / `advance`, one per unfinished closure per day; the driver moves the
  day and every task sets its worker's ManualClock to it (10:00 New York), so both runs make the
  same passes on the same days.
- ray (`--ray-mode orchestrator`): the `ClosureOrchestrator` actor (actors/closure_orchestrator.py)
  advancing every unfinished closure as `advance_closure` tasks, the closures initiated through
  `closure_call` tasks (as the Serve gateway's runner does, at most 2 per CPU in flight). Every Ray
  process reads the same replay clock (`clock_from_settings`: CLERA_FEED=replay,
  CLERA_REPLAY_START/EPOCH/SESSION_SECONDS), one replayed trading day per `--session-seconds` of
  wall time. Its tasks are `num_cpus=0`, so Ray starts a worker process (with its PostgreSQL
  connections) per closure in flight: at 200 closures on 2 CPUs that overran PostgreSQL's
  max_connections=100 ("too many clients"), hence not the default.
- in_process: one `ClosureProcess` in this process on a `ManualClock` set to 10:00 New York of each
  trading day in turn; after each day's move a loop calls `advance` for every unfinished closure
  (initiation included in the time). The baseline.

Reported per run: closures completed per wall minute (initiation of the first to completion of the
last), advance passes, replayed days, CPU (the whole machine, this process, the Ray processes), and
`checks`: every closure completed, exactly one liquidation each, every account closed at the
broker and in the store, and the total withdrawn (sum of the ledger's completed OUTGOING transfers)
equal to the total balances after liquidation (deposits - buys + sells at the ledger) to the cent.

    python bench/closure.py --quick    # 200 closures
    python bench/closure.py            # 1,000 closures
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_support import print_json_only  # noqa: E402

from brokerage.models import AccountApplication, ManualAchRequest, OrderRequest  # noqa: E402
from engine import calendar  # noqa: E402
from engine.redis_keys import price_key  # noqa: E402

UTC = dt.UTC
PG_URL = os.environ.get("CLERA_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
NAMESPACE = "clera-bench-closure"
SEED = 20120606
# Mon 2012-06-04: opened and funded; Tue 06-05: the buys; Wed 06-06: every closure initiated.
MON, TUE, WED = dt.date(2012, 6, 4), dt.date(2012, 6, 5), dt.date(2012, 6, 6)
BUY_PRICES = {"AAPL": "571.25", "MSFT": "28.51", "IBM": "193.81", "GOOG": "570.98", "FB": "26.81"}
SELL_PRICES = {"AAPL": "580.32", "MSFT": "29.03", "IBM": "195.48", "GOOG": "578.59", "FB": "25.87"}
ACH_DAILY_LIMIT = Decimal("50000")
CENT = Decimal("0.01")
BANK = ManualAchRequest(bank_account_type="CHECKING", bank_account_number="123456789", bank_routing_number="121000358")
MAX_DAYS = 30


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def at_ten(day: dt.date) -> dt.datetime:
    """10:00 New York on `day` (half an hour after the open)."""
    return calendar.session_bounds(day)[0] + dt.timedelta(minutes=30)


# --- the plan: the same accounts for both runs ---------------------------------------------------
@dataclass(frozen=True)
class Plan:
    deposit: Decimal
    buys: dict[str, Decimal]  # symbol -> whole shares


def make_plan(n: int, seed: int = SEED) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for _ in range(n):
        if rng.random() < 0.8:
            deposit = Decimal(rng.randint(200_000, 4_900_000)) / 100  # $2,000 .. $49,000: one withdrawal
        else:
            deposit = Decimal(rng.randint(5_000_000, 12_000_000)) / 100  # $50,000 .. $120,000: 2-3 chunks
        symbols = rng.sample(sorted(BUY_PRICES), rng.choice((1, 2)))
        buys = {}
        for symbol in symbols:
            budget = deposit * Decimal(rng.uniform(0.15, 0.4))
            buys[symbol] = max(
                Decimal(1), (budget / Decimal(BUY_PRICES[symbol])).to_integral_value(rounding="ROUND_FLOOR")
            )
        plans.append(Plan(deposit, buys))
    return plans


def set_prices(redis_url: str, prices: dict[str, str]) -> None:
    import redis

    from engine.types import LastPrice

    client = redis.Redis.from_url(redis_url)
    try:
        for symbol, last in prices.items():
            value = float(last)
            client.set(
                price_key(symbol), msgspec.json.encode(LastPrice(symbol, value, value, 0.0, "2012-06-05", "replay"))
            )
    finally:
        client.close()


def application(email: str) -> AccountApplication:
    """A valid application (the bench's own people, signed on the replay's first day)."""
    contact = {"email_address": email, "phone_number": "555-555-5555", "street_address": ["1 Bench St"],
               "city": "San Francisco", "state": "CA", "postal_code": "94105"}
    identity = {"given_name": "Bench", "family_name": "Closure", "date_of_birth": "1990-01-01",
                "tax_id": "123-45-6789", "tax_id_type": "USA_SSN", "country_of_tax_residence": "USA",
                "funding_source": ["employment_income"]}
    disclosures = dict.fromkeys(
        ("is_control_person", "is_affiliated_exchange_or_finra", "is_politically_exposed", "immediate_family_exposed"),
        False,
    )
    agreement = {"agreement": "customer_agreement", "signed_at": "2012-06-01T00:00:00Z", "ip_address": "127.0.0.1"}
    raw = {"contact": contact, "identity": identity, "disclosures": disclosures, "agreements": [agreement]}
    return msgspec.convert(raw, AccountApplication)


# --- PostgreSQL schemas ----------------------------------------------------------------------------
def create_schema() -> tuple[str, str]:
    schema = f"bench_closure_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return schema, f"{PG_URL}?options=-csearch_path%3D{schema}"


def drop_schema(schema: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def pg_connections() -> int:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = 'test'").fetchone()
    return int(row[0]) if row else 0


# --- a run's world ---------------------------------------------------------------------------------
@dataclass
class World:
    name: str
    schema: str
    db_url: str
    environ: dict[str, str]
    accounts: list[tuple[str, str, str]] = field(default_factory=list)  # (account id, relationship id, user id)


def world_environ(name: str, db_url: str, redis_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "DATABASE_URL": db_url, "REDIS_URL": redis_url, "CLERA_DATA_DIR": str(tmp / name),
        "CLERA_BROKER": "paper", "CLERA_STORE": "sql", "CLERA_ACH_DAILY_LIMIT": str(ACH_DAILY_LIMIT),
        "CLERA_RAY_NAMESPACE": NAMESPACE, **extra,
    }


def open_accounts(world: World, plans: list[Plan], redis_url: str, threads: int = 8) -> None:
    """Opened, linked and funded on Monday, the positions bought on Tuesday (a ManualClock), and
    recorded in the store as the account of a user of its own, `active`."""
    from brokerage.paper import PaperBroker
    from brokerage.prices import RedisPriceReader
    from brokerage.sql import Database
    from brokerage.sql_store import SqlStore
    from engine.clock import ManualClock
    from engine.config import load_settings

    settings = load_settings(world.environ, env_file=None)
    clock = ManualClock(at_ten(MON))
    broker = PaperBroker(Database(world.db_url), clock, RedisPriceReader(redis_url), settings=settings)
    store = SqlStore(Database(world.db_url))
    store.migrate()

    def fund(i: int) -> tuple[str, str, str]:
        email = f"{world.name}-{i}@bench.example.com"
        account = broker.create_account(application(email))
        rel = broker.create_ach_relationship(account.id, BANK)
        broker.create_transfer(account.id, rel.id, plans[i].deposit, "INCOMING")
        user = f"bench-closure-{world.name}-{i}"
        store.ensure_user(user, email)
        store.add_account(user, account.id, email=email, status="active")
        return account.id, rel.id, user

    with ThreadPoolExecutor(threads) as pool:
        world.accounts = list(pool.map(fund, range(len(plans))))
    clock.set(at_ten(TUE))

    def buy(i: int) -> None:
        account_id = world.accounts[i][0]
        for symbol, qty in plans[i].buys.items():
            order = broker.submit_order(account_id, OrderRequest(symbol=symbol, side="buy", qty=qty))
            assert order.status == "filled", order

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(buy, range(len(plans))))


# --- CPU -------------------------------------------------------------------------------------------
def _ray_processes() -> list[psutil.Process]:
    procs = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            line = " ".join(proc.info["cmdline"] or [])
            if (
                proc.info["name"] in ("raylet", "gcs_server")
                or line.startswith("ray::")
                or ("/ray/" in line and "default_worker" in line)
            ):
                procs.append(proc)
    return procs


class CpuMeter:
    """CPU seconds of the machine, this process and the Ray processes (a Ray process that appeared
    during the run counts whole; one that ended during it is lost: `machine` is the honest total)."""

    def __init__(self) -> None:
        self.me = psutil.Process()
        self.machine0 = self._machine()
        self.me0 = sum(self.me.cpu_times()[:2])
        self.ray0 = {p.pid: self._cpu(p) for p in _ray_processes()}
        self.t0 = time.perf_counter()
        self.ray_max = len(self.ray0)
        self.pg_max = 0

    @staticmethod
    def _machine() -> float:
        t = psutil.cpu_times()
        return t.user + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + t.nice

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            return sum(proc.cpu_times()[:2])
        return 0.0

    def sample(self) -> None:
        self.ray_max = max(self.ray_max, len(_ray_processes()))
        with contextlib.suppress(Exception):
            self.pg_max = max(self.pg_max, pg_connections())

    def result(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        ray_now = {p.pid: self._cpu(p) for p in _ray_processes()}
        ray_s = sum(v - self.ray0.get(pid, 0.0) for pid, v in ray_now.items())
        return {
            "machine_cores": round((self._machine() - self.machine0) / wall, 2),
            "this_process_cores": round((sum(self.me.cpu_times()[:2]) - self.me0) / wall, 2),
            "ray_processes_cores": round(ray_s / wall, 2),
            "ray_processes_max": self.ray_max,
            "postgres_connections_max": self.pg_max,
        }


# --- the checks, from the ledger, the store and the closure records --------------------------------
def checks(world: World, expected: int) -> dict[str, Any]:
    ids = [a[0] for a in world.accounts]
    with psycopg.connect(world.db_url, autocommit=True) as conn:
        def rows(sql: str) -> list[tuple[Any, ...]]:
            return conn.execute(sql, (ids,)).fetchall()

        incoming = rows("SELECT account_id, amount FROM paper_transfers WHERE account_id = ANY(%s)"
                        " AND direction = 'INCOMING' AND status = 'COMPLETE'")
        outgoing = rows("SELECT account_id, amount, status FROM paper_transfers WHERE account_id = ANY(%s)"
                        " AND direction = 'OUTGOING'")
        fills = rows("SELECT account_id, side, amount FROM paper_fills WHERE account_id = ANY(%s)")
        sells = rows("SELECT account_id, count(*) FROM paper_orders WHERE account_id = ANY(%s) AND side = 'sell'"
                     " GROUP BY account_id")
        held = rows("SELECT account_id, count(*) FROM paper_positions WHERE account_id = ANY(%s) GROUP BY account_id")
        accounts = rows("SELECT id, status, cash FROM paper_accounts WHERE id = ANY(%s)")
        store = rows("SELECT status, count(*) FROM user_accounts WHERE account_id = ANY(%s) GROUP BY status")
        records = rows("SELECT step, body FROM account_closures WHERE account_id = ANY(%s)")
    balance: dict[str, Decimal] = {i: Decimal(0) for i in ids}
    for account_id, amount in incoming:
        balance[account_id] += Decimal(amount)
    for account_id, side, amount in fills:
        balance[account_id] += Decimal(amount) if side == "sell" else -Decimal(amount)
    withdrawn = sum((Decimal(a) for _, a, s in outgoing if s == "COMPLETE"), Decimal(0))
    void = sum(1 for _, _, s in outgoing if s in ("CANCELED", "REJECTED", "RETURNED"))
    in_flight = sum(1 for _, _, s in outgoing if s not in ("COMPLETE", "CANCELED", "REJECTED", "RETURNED"))
    total = sum(balance.values(), Decimal(0))
    steps: dict[str, int] = {}
    liquidations_not_one = 0
    for step, body in records:
        steps[step] = steps.get(step, 0) + 1
        if json.loads(body).get("liquidations") != 1:
            liquidations_not_one += 1
    positions_per_account = dict.fromkeys(ids, 0)
    sell_orders = dict(sells)
    remaining_cash = sum((Decimal(c) for _, _, c in accounts), Decimal(0))
    return {
        "closures": expected,
        "completed": steps.get("completed", 0),
        "failed": steps.get("failed", 0),
        "steps": steps,
        "all_completed": steps.get("completed", 0) == expected,
        "broker_accounts_closed": sum(1 for _, s, _ in accounts if s == "ACCOUNT_CLOSED"),
        "store_accounts": dict(store),
        "balances_after_liquidation": str(total.quantize(CENT)),
        "withdrawn": str(withdrawn.quantize(CENT)),
        "withdrawn_equals_balances": withdrawn == total,
        "cash_left_at_broker": str(remaining_cash.quantize(CENT)),
        "withdrawals_completed": sum(1 for _, _, s in outgoing if s == "COMPLETE"),
        "withdrawals_void": void,
        "withdrawals_in_flight": in_flight,
        "positions_left": sum(int(n) for _, n in held),
        "sell_orders": sum(int(n) for n in sell_orders.values()),
        "accounts_without_a_sell": sum(1 for a in positions_per_account if a not in sell_orders),
        "records_with_liquidations_not_one": liquidations_not_one,
    }


def expected_checks(c: dict[str, Any], positions: int) -> bool:
    return (
        c["all_completed"] and c["failed"] == 0 and c["withdrawn_equals_balances"]
        and c["broker_accounts_closed"] == c["closures"] and c["store_accounts"] == {"closed": c["closures"]}
        and Decimal(c["cash_left_at_broker"]) == 0 and c["withdrawals_void"] == 0 and c["withdrawals_in_flight"] == 0
        and c["positions_left"] == 0 and c["sell_orders"] == positions and c["records_with_liquidations_not_one"] == 0
    )


def completed_count(db_url: str) -> dict[str, int]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        return {
            s: int(n) for s, n in conn.execute("SELECT step, count(*) FROM account_closures GROUP BY step").fetchall()
        }


# --- (b) one process -----------------------------------------------------------------------------
def run_in_process(world: World, redis_url: str) -> dict[str, Any]:
    from brokerage.closure.process import ClosureProcess
    from brokerage.closure.records import ClosureStore
    from brokerage.email import OutboxMailer
    from brokerage.paper import PaperBroker
    from brokerage.prices import RedisPriceReader
    from brokerage.sql import Database
    from brokerage.sql_store import SqlStore
    from engine.clock import ManualClock
    from engine.config import load_settings

    settings = load_settings(world.environ, env_file=None)
    clock = ManualClock(at_ten(WED))
    db = Database(world.db_url)
    records = ClosureStore(db)
    records.migrate()
    process = ClosureProcess(
        PaperBroker(db, clock, RedisPriceReader(redis_url), settings=settings), records, SqlStore(db), clock,
        OutboxMailer(settings.data_path / "outbox"), settings,
    )
    meter = CpuMeter()
    started = time.perf_counter()
    for account_id, rel_id, user in world.accounts:
        answer = process.initiate(account_id, user, rel_id)
        assert answer["success"], answer
    initiated_s = time.perf_counter() - started
    day, days, passes, errors = WED, 0, 0, 0
    completion: list[float] = []
    done = 0
    while days < MAX_DAYS:
        unfinished = process.unfinished()
        if not unfinished:
            break
        day = calendar.next_trading_day(day)
        clock.set(at_ten(day))
        days += 1
        for account_id in unfinished:
            try:
                record = process.advance(account_id)
            except Exception as exc:  # noqa: BLE001 - counted; the next day tries again
                errors += 1
                progress(f"in_process: advancing {account_id} failed: {exc!r}")
                continue
            passes += 1
            if record.step == "completed":
                done += 1
                completion.append(time.perf_counter() - started)
        meter.sample()
        progress(f"in_process: replayed day {days} ({day}), {done}/{len(world.accounts)} completed")
    wall = time.perf_counter() - started
    return {
        "clock": "ManualClock, set to 10:00 New York of each trading day in turn",
        **_day_by_day_figures(wall, initiated_s, done, days, passes, errors, len(world.accounts)),
        "time_to_half_s": round(sorted(completion)[len(completion) // 2], 2) if completion else None,
        "cpu": meter.result(),
    }


# --- (a) the Ray orchestrator and tasks --------------------------------------------------------------
def run_ray(world: World, redis_url: str, session_s: float, timeout_s: float) -> dict[str, Any]:
    import ray

    from actors import closure_orchestrator as co
    from engine.clock import ReplayClock
    from engine.config import load_settings

    # the replay starts 5% into Wednesday's replayed day (the market open): its first open is now
    epoch = time.time() - 0.05 * session_s
    environ = {**world.environ, "CLERA_FEED": "replay", "CLERA_REPLAY_START": WED.isoformat(),
               "CLERA_REPLAY_SESSION_SECONDS": repr(session_s), "CLERA_REPLAY_EPOCH": repr(epoch)}
    world.environ = environ
    settings = load_settings(environ, env_file=None)
    clock = ReplayClock(settings.replay_start, settings.replay_session_seconds, epoch, settings.replay_open_fraction)
    ray.get(co.closure_call.remote(settings, "unfinished", ()))  # the records' tables exist, a worker is warm
    orchestrator = co.start_orchestrator(settings)
    ray.get(orchestrator.status.remote())
    meter = CpuMeter()
    started = time.perf_counter()
    day0 = clock.position()[0]
    # at most 2 initiations in flight per CPU: closure_call is a num_cpus=0 task, so every one in
    # flight gets a worker process of its own (and its database connections)
    window = max(2, 2 * int(ray.available_resources().get("CPU", 2)))
    answers, pending = [], list(world.accounts)
    while pending:
        batch, pending = pending[:window], pending[window:]
        answers += ray.get([co.closure_call.remote(settings, "initiate", (a, u, r)) for a, r, u in batch])
    initiated_s = time.perf_counter() - started
    bad = [a for a in answers if not a.get("success")]
    assert not bad, bad[:3]
    deadline = time.monotonic() + timeout_s
    last_report = 0.0
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = completed_count(world.db_url)
        finished = counts.get("completed", 0) + counts.get("failed", 0)
        meter.sample()
        if finished >= len(world.accounts):
            break
        if time.monotonic() - last_report > 5:
            last_report = time.monotonic()
            progress(f"ray: replayed day {clock.position()[0] - day0} ({clock.now():%Y-%m-%d %H:%M} UTC), {counts}")
        time.sleep(0.2)
    wall = time.perf_counter() - started
    days = clock.position()[0] - day0
    status = ray.get(orchestrator.status.remote())
    done = counts.get("completed", 0)
    passes = status["advanced"] + status["failed"]
    return {
        "mode": "orchestrator",
        "clock": f"ReplayClock from the shared settings (CLERA_REPLAY_*): one replayed trading day per {session_s} "
            "wall s",
        "orchestrator": "actors/closure_orchestrator.py ClosureOrchestrator (named, detached) + advance_closure tasks",
        "wake_s": settings.closure_wake_s,
        "wall_s": round(wall, 2),
        "initiate_s": round(initiated_s, 2),
        "closures_per_minute": round(done / wall * 60, 1),
        "timed_out": counts.get("completed", 0) + counts.get("failed", 0) < len(world.accounts),
        "replayed_days": days,
        "clock_bound": days * session_s >= wall * 0.9 and days <= 6,
        "advance_passes": passes,
        "advance_passes_per_closure": round(passes / max(len(world.accounts), 1), 2),
        "advance_errors": status["failed"],
        "orchestrator_wakes": status["wakes"],
        "ms_per_initiate": round(initiated_s / max(len(world.accounts), 1) * 1000, 2),
        "cpu": meter.result(),
    }


# --- (a') plain Ray tasks, bounded: one advance per unfinished closure per day -----------------------
def _task_world(environ: dict[str, str]) -> tuple[Any, Any]:
    """This worker's ClosureProcess on a ManualClock of its own (built once per worker and run), which
    every task first sets to the moment the driver gives it: all processes agree on the day."""
    import types

    cache = sys.modules.setdefault("_clera_bench_closure_cache", types.ModuleType("_clera_bench_closure_cache"))
    key = json.dumps(environ, sort_keys=True)
    found = getattr(cache, "worlds", {}).get(key)
    if found is None:
        from brokerage.closure.process import ClosureProcess
        from brokerage.closure.records import ClosureStore
        from brokerage.email import OutboxMailer
        from brokerage.paper import PaperBroker
        from brokerage.prices import RedisPriceReader
        from brokerage.sql import Database
        from brokerage.sql_store import SqlStore
        from engine.clock import ManualClock
        from engine.config import load_settings

        settings = load_settings(environ, env_file=None)
        clock = ManualClock(at_ten(WED))
        db = Database(settings.database_url or "")
        process = ClosureProcess(
            PaperBroker(db, clock, RedisPriceReader(environ["REDIS_URL"]), settings=settings), ClosureStore(db),
            SqlStore(db), clock, OutboxMailer(settings.data_path / "outbox"), settings,
        )
        found = (process, clock)
        cache.worlds = {**getattr(cache, "worlds", {}), key: found}
    return found


def _bench_task(environ: dict[str, str], now: str, method: str, args: tuple) -> Any:
    process, clock = _task_world(environ)
    clock.set(dt.datetime.fromisoformat(now))
    answer = getattr(process, method)(*args)
    return answer.step if method == "advance" else answer


def run_ray_tasks(world: World, redis_url: str, ray_cpus: int) -> dict[str, Any]:
    """Ray tasks of one CPU each (so at most `ray_cpus` run, on as many workers), the day moved by the
    driver: every task sets its worker's ManualClock to 10:00 New York of the day it belongs to."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False)(_bench_task)
    env = world.environ
    from brokerage.closure.records import ClosureStore
    from brokerage.sql import Database

    ClosureStore(Database(world.db_url)).migrate()
    ray.get([task.remote(env, at_ten(WED).isoformat(), "unfinished", ()) for _ in range(ray_cpus * 2)])  # warm workers
    meter = CpuMeter()
    started = time.perf_counter()
    answers = ray.get([task.remote(env, at_ten(WED).isoformat(), "initiate", (a, u, r)) for a, r, u in world.accounts])
    initiated_s = time.perf_counter() - started
    assert all(a.get("success") for a in answers)
    unfinished = [a for a, _, _ in world.accounts]
    day, days, passes, errors, done = WED, 0, 0, 0, 0
    while unfinished and days < MAX_DAYS:
        day = calendar.next_trading_day(day)
        days += 1
        refs = {task.remote(env, at_ten(day).isoformat(), "advance", (a,)): a for a in unfinished}
        left = []
        for ref, account_id in refs.items():
            try:
                step = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - counted; the next day tries again
                errors += 1
                progress(f"ray_tasks: advancing {account_id} failed: {exc!r}")
                left.append(account_id)
                continue
            passes += 1
            if step == "completed":
                done += 1
            elif step != "failed":
                left.append(account_id)
        unfinished = left
        meter.sample()
        progress(f"ray_tasks: replayed day {days} ({day}), {done}/{len(world.accounts)} completed")
    wall = time.perf_counter() - started
    return {
        "mode": "plain Ray tasks (num_cpus=1) calling ClosureProcess.initiate/advance, one per unfinished closure "
            "per day",
        "clock": "a ManualClock in each worker, set by every task to 10:00 New York of the day the driver is on",
        **_day_by_day_figures(wall, initiated_s, done, days, passes, errors, len(world.accounts)),
        "cpu": meter.result(),
    }


# --- main --------------------------------------------------------------------------------------------
def _interrupted(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 closures instead of 1,000")
    parser.add_argument("--closures", type=int, help="number of closures (default 1,000; --quick 200)")
    parser.add_argument("--session-seconds", type=float, default=1.0,
                        help="wall seconds per replayed trading day in the Ray run (default 1)")
    parser.add_argument("--wake-s", type=float, default=0.25, help="CLERA_CLOSURE_WAKE_S of the orchestrator")
    parser.add_argument("--ray-cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up on the Ray run after this many s")
    parser.add_argument("--runs", nargs="*", default=["in_process", "ray"], choices=["in_process", "ray"])
    parser.add_argument("--ray-mode", choices=["tasks", "orchestrator"], default="tasks",
                        help="tasks (default): bounded plain Ray tasks, the day moved by the driver; orchestrator:"
                        " the ClosureOrchestrator on the replay clock (two steps per cluster CPU in flight)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupted)
    print_json_only(lambda: run(args))



def _day_by_day_figures(
    wall: float, initiated_s: float, done: int, days: int, passes: int, errors: int, closures: int
) -> dict[str, Any]:
    """What both day-by-day runs (one process, Ray tasks) report alike."""
    return {
        "wall_s": round(wall, 2),
        "initiate_s": round(initiated_s, 2),
        "closures_per_minute": round(done / wall * 60, 1),
        "replayed_days": days,
        "advance_passes": passes,
        "advance_passes_per_closure": round(passes / max(closures, 1), 2),
        "advance_errors": errors,
        "ms_per_advance": round((wall - initiated_s) / max(passes, 1) * 1000, 2),
        "ms_per_initiate": round(initiated_s / max(closures, 1) * 1000, 2),
    }

def run(args: argparse.Namespace) -> dict[str, Any]:
    from engine.redis_server import EmbeddedRedis

    n = args.closures or (200 if args.quick else 1000)
    tmp = Path(tempfile.mkdtemp(prefix="clera-bench-closure-"))
    schemas: list[str] = []
    worlds: dict[str, World] = {}
    embedded = None
    ray_started = False
    try:
        embedded = EmbeddedRedis(tmp / "redis")
        redis_url = embedded.url
        plans = make_plan(n)
        positions = sum(len(p.buys) for p in plans)
        result: dict[str, Any] = {
            "quick": args.quick,
            "ray_mode": args.ray_mode if "ray" in args.runs else None,
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_at_start": round(os.getloadavg()[0], 2)},
            "workload": {
                "closures": n,
                "broker": "paper",
                "ledger": "PostgreSQL (a schema per run)",
                "redis": "embedded",
                "positions": positions,
                "accounts_over_daily_ach_limit": sum(p.deposit > ACH_DAILY_LIMIT for p in plans),
                "deposits": str(sum((p.deposit for p in plans), Decimal(0))),
                "ach_daily_limit": str(ACH_DAILY_LIMIT),
                "days": "funded Mon 2012-06-04, bought Tue 06-05, all closures initiated Wed 06-06",
            },
        }
        set_prices(redis_url, BUY_PRICES)
        for name in args.runs:
            schema, url = create_schema()
            schemas.append(schema)
            extra = {"CLERA_CLOSURE_WAKE_S": repr(args.wake_s)} if name == "ray" else {}
            worlds[name] = World(name, schema, url, world_environ(name, url, redis_url, tmp, **extra))
            progress(f"{name}: opening, funding and filling {n} accounts")
            began = time.perf_counter()
            open_accounts(worlds[name], plans, redis_url)
            progress(f"{name}: {n} accounts ready in {time.perf_counter() - began:.1f}s")
        set_prices(redis_url, SELL_PRICES)  # the closures sell at other prices than the buys

        if "in_process" in worlds:
            progress("in_process: initiating and advancing day by day")
            result["in_process"] = run_in_process(worlds["in_process"], redis_url)
            result["in_process"]["checks"] = checks(worlds["in_process"], n)
        if "ray" in worlds:
            import ray

            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
            os.chdir(ROOT)
            progress("ray: starting Ray")
            ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, logging_level="error",
                     log_to_driver=False, namespace=NAMESPACE)
            ray_started = True
            if args.ray_mode == "orchestrator":
                result["ray"] = run_ray(worlds["ray"], redis_url, args.session_seconds, args.timeout)
            else:
                result["ray"] = run_ray_tasks(worlds["ray"], redis_url, args.ray_cpus)
            result["ray"]["checks"] = checks(worlds["ray"], n)
            result["ray"]["ray_cpus"] = args.ray_cpus

        if "ray" in result and "in_process" in result:
            r, b = result["ray"], result["in_process"]
            result["ray_over_in_process"] = {
                "closures_per_minute": round(r["closures_per_minute"] / max(b["closures_per_minute"], 1e-9), 3),
                "wall": round(r["wall_s"] / max(b["wall_s"], 1e-9), 3),
            }
        result["checks"] = {
            f"{name}_ok": expected_checks(result[name]["checks"], positions)
            for name in ("in_process", "ray")
            if name in result
        }
        result["checks"]["same_total_withdrawn"] = (
            len({result[k]["checks"]["withdrawn"] for k in ("in_process", "ray") if k in result}) == 1
        )
        result["machine"]["load_avg_1m_at_end"] = round(os.getloadavg()[0], 2)
        return result
    finally:
        progress("stopping")
        if ray_started:
            import ray

            with contextlib.suppress(Exception):
                from actors.closure_orchestrator import stop_orchestrator
                from engine.config import load_settings

                if "CLERA_REPLAY_EPOCH" in worlds["ray"].environ:
                    stop_orchestrator(load_settings(worlds["ray"].environ, env_file=None))
            with contextlib.suppress(Exception):
                ray.shutdown()
        if embedded is not None:
            with contextlib.suppress(Exception):
                embedded.close()
        for schema in schemas:
            with contextlib.suppress(Exception):
                drop_schema(schema)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
