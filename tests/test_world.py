"""The paper world kept in CLERA_DATA_DIR: its market time never goes back across restarts, its ledger
never holds activity dated after "now", and `--fresh` removes exactly the world's files.

Real parts: the paper ledger on a SQLite file, the demo accounts opened, funded and bought through
it, prices in the real Redis, the replay clock (read off a wall time the test moves, so a replayed
week takes no real week) and the position file written by the real keeper thread.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from pathlib import Path

import pytest
from gateway_support import make_settings
from paper_support import set_price

import cli
from brokerage.paper import PaperBroker, newest_record
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from clera_cli.dev_secrets import SECRETS_FILE
from clera_cli.world import fresh_world, resume_epoch
from engine import world
from engine.clock import ReplayClock
from engine.config import ConfigError, Settings
from gateway import demo

UTC = dt.UTC

def resumed_at(clock: ReplayClock, moment: dt.datetime) -> bool:
    """The clock stands at `moment`, or just after it (a millisecond of wall time, `RESUME_SLACK_S`)."""
    return clock.ahead(-2 * world.RESUME_SLACK_S).now() <= moment <= clock.now()


def replay_clock(settings: Settings, epoch: float, wall: list[float]) -> ReplayClock:
    return ReplayClock(settings.replay_start, settings.replay_session_seconds, epoch,
                       settings.replay_open_fraction, wall=lambda: wall[0])


def activity_times(broker: PaperBroker, accounts: list[str]) -> list[dt.datetime]:
    times = [a.date for account in accounts for a in broker.list_activities(account)]
    times += [t.created_at for account in accounts for t in broker.list_transfers(account)]
    times += [o.updated_at for account in accounts for o in broker.list_orders(account, "all")]
    return times


def test_a_demo_world_restarted_twice_never_goes_back_in_market_time(tmp_path: Path, redis_url: str) -> None:
    """Three runs of the demo world as `clera serve` wires them (epoch from the saved position and the
    ledger, the keeper saving while it runs), with hours of downtime between them: every run starts
    where the last one stopped, and nothing in the ledger is dated after the clock's "now"."""
    settings = make_settings(redis_url, tmp_path, CLERA_REPLAY_SESSION_SECONDS="60")
    holdings = demo.demo_holdings(None)
    for i, symbol in enumerate(sorted({p.symbol for h in holdings for p in h.positions})):
        set_price(redis_url, symbol, 50.0 + i)
    prices = RedisPriceReader(redis_url)

    def price_of(symbol: str) -> float | None:
        last = prices.last(symbol)
        return None if last is None else last.last

    ledger = Database.for_settings(None, settings.sqlite_path)
    store = SqlStore(ledger)
    store.migrate()
    wall = [1_900_000_000.0]
    last_now: dt.datetime | None = None
    starts: list[dt.datetime] = []
    for run in range(3):
        epoch, reached = world.resume_epoch(settings, newest_record(ledger), wall[0])
        clock = replay_clock(settings, epoch, wall)
        starts.append(clock.now())
        if run == 0:
            assert reached is None and clock.now().date() == settings.replay_start
        else:
            assert reached is not None and last_now is not None and resumed_at(clock, last_now)
        broker = PaperBroker(ledger, clock, prices, settings=settings)
        keeper = world.PositionKeeper(settings, clock)
        keeper.start()
        ids = demo.create_demo_accounts(store, broker, holdings)
        for _ in range(150):  # two and a half replayed days, a step of 1 s of wall time (6.5 market minutes)
            wall[0] += 1.0
            for account_id, target in demo.demo_targets(store, holdings):
                demo.converge(broker, account_id, target, price_of)
            assert max(activity_times(broker, ids)) <= clock.now()
        keeper.close()
        last_now = clock.now()
        assert world.saved_moment(settings) == last_now
        wall[0] += 8 * 3600.0  # the demo is down overnight
    assert starts == sorted(starts) and len(set(starts)) == 3
    for account_id, target in demo.demo_targets(store, holdings):  # bought once, whatever the restarts
        bought: dict[str, Decimal] = {}
        for a in broker.list_activities(account_id):
            if a.activity_type == "FILL" and a.symbol and a.qty:
                bought[a.symbol] = bought.get(a.symbol, Decimal(0)) + a.qty
        assert bought == {p.symbol: p.qty for p in target.positions}


def test_a_killed_run_resumes_ahead_and_the_ledger_is_a_floor(tmp_path: Path, redis_url: str) -> None:
    settings = make_settings(redis_url, tmp_path)
    wall = [1_900_000_000.0]
    clock = replay_clock(settings, wall[0], wall)
    keeper = world.PositionKeeper(settings, clock)
    keeper.start()
    # were the run killed now, its world would resume ahead of where it stands, never before
    assert world.saved_moment(settings) == clock.ahead(world.LEAD_S).now() > clock.now()
    keeper.close()
    assert world.saved_moment(settings) == clock.now()  # a clean stop: exactly where it stopped
    # a world that saved nothing (an older version, or its file lost) resumes at the ledger's newest record
    world.position_path(settings).unlink()
    floor = dt.datetime(2012, 6, 6, 19, 45, tzinfo=UTC)  # 15:45 in New York
    epoch, reached = world.resume_epoch(settings, floor, wall[0])
    assert reached == floor and resumed_at(replay_clock(settings, epoch, wall), floor)
    # and at night, between two sessions
    night = dt.datetime(2012, 6, 7, 3, 0, tzinfo=UTC)
    epoch, _ = world.resume_epoch(settings, night, wall[0])
    assert resumed_at(replay_clock(settings, epoch, wall), night)
    world.position_path(settings).write_text("{not json")
    with pytest.raises(ConfigError, match="--fresh"):
        world.resume_epoch(settings, None, wall[0])


def test_fresh_removes_the_worlds_files_and_nothing_else(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = make_settings(redis_url, tmp_path)
    data = settings.data_path
    SqlStore(Database.for_settings(None, settings.sqlite_path)).migrate()
    world.save_moment(settings, dt.datetime(2012, 6, 4, 15, 0, tzinfo=UTC))
    for name in ("chat-checkpoints.db", "chat-checkpoints.db-wal", "logs/account_closures/closure_a_1.log",
                 "outbox/1.eml", "clera.db.closure-locks/a.lock", SECRETS_FILE, "notes.txt", "redis/x"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text("x")
    world_files = {"clera.db", "clera.db.closure-locks", "chat-checkpoints.db", "chat-checkpoints.db-wal", "logs",
                   "outbox", world.POSITION_FILE}
    assert world_files <= {p.name for p in data.iterdir()}
    assert resume_epoch(settings) < time.time() - 60  # the old world would continue, in the past
    assert "continuing the paper world at 2012-06-04 11:00:00 ET" in capsys.readouterr().out
    assert cli.build_parser().parse_args(["serve", "--fresh"]).fresh is True
    assert fresh_world(settings) is True
    said = capsys.readouterr().out
    assert "--fresh: starting a new paper world" in said and all(name in said for name in world_files)
    assert sorted(p.name for p in data.iterdir()) == sorted([SECRETS_FILE, "notes.txt", "redis"])
    started = time.time()
    epoch = resume_epoch(settings)  # what `clera serve --fresh` goes on to do: a new world, starting now
    assert started <= epoch <= time.time()
    assert capsys.readouterr().out.startswith("a new paper world: the replay starts at 2012-06-01")
    # a world whose ledger lives in PostgreSQL is not clera's to empty: refused, nothing touched
    elsewhere = make_settings(redis_url, tmp_path, DATABASE_URL="postgresql://nobody@127.0.0.1:1/none")
    world.save_moment(elsewhere, dt.datetime(2012, 6, 4, 15, 0, tzinfo=UTC))
    assert fresh_world(elsewhere) is False
    assert "DATABASE_URL" in capsys.readouterr().out and world.position_path(elsewhere).exists()
