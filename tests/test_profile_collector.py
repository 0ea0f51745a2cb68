"""`clera profiles collect` against a local FMP stand-in: rate limit held (measured by the stand-in),
429 bursts with Retry-After, 5xx, malformed rows, a refused key, and a run killed and resumed."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from standins.alpaca_broker_api import AlpacaBrokerStandIn
from standins.fmp_api import FmpStandin

import cli
from brokerage.fmp import FmpClient
from brokerage.profile_collector import broker_symbols, collect_profiles, parse_symbols, start_from
from brokerage.rate_limit import WindowLimiter
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from engine.config import load_settings

KEY = "fmp-test-key"
ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = [f"S{n:02d}" for n in range(24)]


@pytest.fixture
def fmp() -> Iterator[FmpStandin]:
    with FmpStandin(KEY, limit=5, window_s=0.5, retry_after="0.2") as server:
        yield server


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    db = Database(f"sqlite:///{tmp_path / 'data' / 'clera.db'}")
    store = SqlStore(db)
    store.migrate()
    yield store
    db.close()


def client_for(fmp: FmpStandin, key: str = KEY, attempts: int = 4) -> FmpClient:
    return FmpClient(key, base_url=fmp.url, limiter=WindowLimiter(fmp.limit, fmp.window_s), attempts=attempts,
                     backoff_s=0.01)


def test_collects_every_symbol_within_the_rate_limit_through_429s_5xx_and_bad_rows(
    fmp: FmpStandin, store: SqlStore
) -> None:
    fmp.script("S01", 429, 429, 429)  # a burst of 429s with Retry-After, then the profile
    fmp.script("S02", 500, 502)  # transient 5xx, then the profile
    fmp.script("S03", 503, 503, 503, 503)  # down for every attempt: failed
    fmp.unknown.add("S04")  # FMP has no such symbol: []
    fmp.profiles["S05"] = ["not an object"]
    fmp.profiles["S06"] = [{"symbol": "OTHER", "companyName": "Other Inc."}]
    fmp.profiles["S07"] = [{
        "symbol": "S07", "companyName": "  Acme\x00 Corp  ", "price": "abc", "marketCap": "NaN", "beta": True,
        "ipoDate": "", "fullTimeEmployees": "lots", "isEtf": "maybe", "isActivelyTrading": "false",
        "description": "   ", "exchange": "NYSE", "lastDividend": "1,234.5", "range": 42,
    }]
    fmp.profiles["S08"] = {"symbol": "S08", "companyName": "Single Object Inc.", "ipoDate": "2001-02-30"}
    seen: list[tuple[str, str]] = []

    summary = collect_profiles(store, client_for(fmp), SYMBOLS, batch_size=5,
                               on_symbol=lambda s, outcome: seen.append((s, outcome)))

    assert fmp.max_in_window() <= fmp.limit and fmp.over_limit == 0
    assert summary.total == len(SYMBOLS) and summary.skipped == 0
    assert summary.failed == {
        "S03": "FMP /stable/profile answered 503",
        "S04": "FMP has no profile for this symbol",
        "S05": "malformed row: expected an object, got str",
        "S06": "the row is for 'OTHER', not S06",
    }
    assert summary.stored == len(SYMBOLS) - 4 == store.count_company_profiles()
    assert sorted(seen) == sorted((s, "failed" if s in summary.failed else "fetched") for s in SYMBOLS)
    assert fmp.requests_for("S01") == 4 and fmp.requests_for("S02") == 3 and fmp.requests_for("S03") == 4

    good = store.get_company_profile("S00")
    assert good is not None and good.source == "fmp"
    assert (good.company_name, good.exchange, good.exchange_short_name, good.ipo_date) == (
        "S00 Holdings Inc.", "NASDAQ Global Select", "NASDAQ", dt.date(1980, 12, 12)
    )
    assert (good.market_cap, good.vol_avg, good.last_div, good.changes, good.full_time_employees) == (
        1_000_000_000 + sum(map(ord, "S00")) * 1_000, 55_000_000, 0.96, -1.5, "164000"
    )
    bad = store.get_company_profile("S07")
    assert bad is not None
    assert (bad.company_name, bad.price, bad.market_cap, bad.beta, bad.ipo_date) == (
        "Acme Corp",
        None,
        None,
        None,
        None,
    )
    assert (bad.full_time_employees, bad.is_etf, bad.is_actively_trading, bad.description) == (None, False, False, None)
    assert (bad.exchange, bad.last_div, bad.range, bad.currency) == ("NYSE", 1234.5, "42", "USD")
    single = store.get_company_profile("S08")
    assert single is not None and single.company_name == "Single Object Inc." and single.ipo_date is None


def test_a_rerun_skips_fresh_profiles_and_retries_the_failed(fmp: FmpStandin, store: SqlStore) -> None:
    fmp.script("S03", 500, 500, 500, 500)
    first = collect_profiles(store, client_for(fmp), SYMBOLS[:6], batch_size=4)
    assert first.stored == 5 and list(first.failed) == ["S03"]

    again = collect_profiles(store, client_for(fmp), SYMBOLS[:6], batch_size=4)
    assert (again.stored, again.skipped, again.failed) == (1, 5, {})
    assert all(fmp.requests_for(s) == 1 for s in SYMBOLS[:6] if s != "S03") and fmp.requests_for("S03") == 5

    later = collect_profiles(store, client_for(fmp), SYMBOLS[:6], now=dt.datetime.now(dt.UTC) + dt.timedelta(days=8))
    assert (later.stored, later.skipped) == (6, 0)  # older than the freshness age: fetched again


def test_a_refused_key_stops_the_run_at_once(fmp: FmpStandin, store: SqlStore) -> None:
    summary = collect_profiles(store, client_for(fmp, key="wrong"), SYMBOLS, batch_size=5)
    assert summary.stopped == "FMP refused the API key on /stable/profile (401)"
    assert summary.stored == 0 and sum(fmp.calls.values()) == 1


def test_symbol_lists_and_start_from() -> None:
    assert parse_symbols("aapl, msft\n# a comment\nibm goog # trailing\n\n") == ["AAPL", "MSFT", "IBM", "GOOG"]
    assert start_from(["A", "B", "C"], "b") == ["B", "C"] and start_from(["A"], None) == ["A"]
    with pytest.raises(ValueError, match="ZZZ"):
        start_from(["A", "B"], "zzz")


def _env(tmp_path: Path, fmp: FmpStandin | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERA_", "FINANCIAL_MODELING"))}
    env["CLERA_DATA_DIR"] = str(tmp_path / "data")
    if fmp is not None:
        env.update({
            "FINANCIAL_MODELING_PREP_API_KEY": KEY, "CLERA_FMP_URL": fmp.url,
            "CLERA_FMP_RATE_LIMIT": str(fmp.limit), "CLERA_FMP_RATE_WINDOW_S": str(fmp.window_s),
            "CLERA_FMP_BACKOFF_S": "0.01",
        })
    return env


def _collect(tmp_path: Path, fmp: FmpStandin, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "profiles", "collect", *args], cwd=tmp_path,
        env=_env(tmp_path, fmp), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def test_a_killed_run_resumes_without_fetching_stored_profiles_again(tmp_path: Path, store: SqlStore) -> None:
    symbols = [f"K{n:02d}" for n in range(30)]
    (tmp_path / "symbols.txt").write_text("\n".join(symbols) + "\n")
    with FmpStandin(KEY, limit=2, window_s=0.5) as fmp:
        run = _collect(tmp_path, fmp, "--from-file", "symbols.txt", "--batch-size", "3")
        try:
            while store.count_company_profiles() < 6:  # two batches written: kill it mid-run
                assert run.poll() is None, run.communicate()[0]
                time.sleep(0.05)
            run.send_signal(signal.SIGKILL)
            run.wait()
        finally:
            run.kill()
        stored_before = {s for s in symbols if store.get_company_profile(s) is not None}
        assert 6 <= len(stored_before) < len(symbols)
        first_run_max = fmp.max_in_window()
        fmp.arrivals.clear()

        resumed = _collect(tmp_path, fmp, "--from-file", "symbols.txt", "--batch-size", "3")
        output, _ = resumed.communicate(timeout=120)
        assert resumed.returncode == 0, output
        assert first_run_max <= fmp.limit and fmp.max_in_window() <= fmp.limit and fmp.over_limit == 0
        assert all(store.get_company_profile(s) is not None for s in symbols)
        assert all(fmp.requests_for(s) == 1 for s in stored_before)
        assert "skipped (stored and fresh)" in output and f"{len(stored_before)}" in output


def test_start_from_symbol_on_the_command_line(tmp_path: Path, fmp: FmpStandin, store: SqlStore) -> None:
    run = _collect(tmp_path, fmp, "--symbols", "AAA,BBB,CCC", "--start-from-symbol", "bbb")
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    assert [s for s in ("AAA", "BBB", "CCC") if store.get_company_profile(s)] == ["BBB", "CCC"]
    bad = _collect(tmp_path, fmp, "--symbols", "AAA", "--start-from-symbol", "ZZZ")
    output, _ = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "ZZZ is not among" in output


def test_without_a_key_the_offline_profiles_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], store: SqlStore
) -> None:
    for name, value in _env(tmp_path, None).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("FINANCIAL_MODELING_PREP_API_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["profiles", "collect"]) == 0
    assert "offline profiles only" in capsys.readouterr().out
    apple = store.get_company_profile("AAPL")
    assert apple is not None and apple.source == "pytickersymbols"


def test_symbols_come_from_alpacas_tradable_assets(tmp_path: Path, fmp: FmpStandin, store: SqlStore) -> None:
    """With Alpaca configured, the symbols are its active, tradable US equities (alpaca-py's asset list)."""
    with AlpacaBrokerStandIn("alpaca-key", "alpaca-secret") as alpaca:
        for symbol in ("MSFT", "AAPL", "HALT"):
            alpaca.set_price(symbol, "100")
        alpaca.state.untradable.add("HALT")
        env = {"CLERA_BROKER": "alpaca", "BROKER_API_KEY": "alpaca-key", "BROKER_SECRET_KEY": "alpaca-secret",
               "CLERA_ALPACA_BROKER_URL": alpaca.url, "CLERA_DATA_DIR": str(tmp_path / "data")}
        assert broker_symbols(load_settings(env, env_file=None)) == ["AAPL", "MSFT"]
        run = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "profiles", "collect"], cwd=tmp_path,
            env={**_env(tmp_path, fmp), **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        output, _ = run.communicate(timeout=60)
    assert run.returncode == 0, output
    assert [s for s in ("AAPL", "MSFT", "HALT") if store.get_company_profile(s)] == ["AAPL", "MSFT"]
    assert ("GET", "/v1/assets", 200) in alpaca.state.requests


def test_without_alpaca_the_offline_symbol_list_is_used() -> None:
    symbols = broker_symbols(load_settings({}, env_file=None))
    assert {"AAPL", "MSFT", "IBM", "GOOG"} <= set(symbols) and "FB" not in symbols  # aliases left out
    assert len(symbols) == len(set(symbols))
