"""`GET /api/company/{ticker}` and the analyst's company tool with the FMP key: live, cached, stale."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from gateway_support import API_KEY, make_settings, make_store, running_gateway
from standins.fmp_api import FmpStandin, stable_profile
from test_agent_tools import make_world

from brokerage.store import CompanyProfile

KEY = "fmp-live-key"
HEADERS = {"X-API-Key": API_KEY}


@pytest.fixture
def fmp() -> Iterator[FmpStandin]:
    with FmpStandin(KEY, limit=4, window_s=0.5, retry_after="0.1") as server:
        yield server


def fmp_env(fmp: FmpStandin, **extra: str) -> dict[str, str]:
    return {
        "FINANCIAL_MODELING_PREP_API_KEY": KEY, "CLERA_FMP_URL": fmp.url, "CLERA_FMP_RATE_LIMIT": str(fmp.limit),
        "CLERA_FMP_RATE_WINDOW_S": str(fmp.window_s), "CLERA_FMP_BACKOFF_S": "0.01", "CLERA_FMP_ATTEMPTS": "2",
        **extra,
    }


async def test_live_profile_and_quote_then_the_cache(tmp_path: Path, redis_url: str, fmp: FmpStandin) -> None:
    settings = make_settings(redis_url, tmp_path, **fmp_env(fmp, CLERA_COMPANY_CACHE_TTL_S="0.3"))
    store = make_store(tmp_path / "store.db")
    store.upsert_company_profiles(
        [CompanyProfile(symbol="AAPL", company_name="Apple (stored)", source="pytickersymbols")]
    )
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        first = (await http.get("/api/company/aapl", headers=HEADERS)).json()
        assert (first["live"], first["stale"], first["error"]) == (True, False, None)
        assert first["profile"]["company_name"] == "AAPL Holdings Inc." and first["profile"]["source"] == "fmp"
        assert first["profile"]["market_cap"] == stable_profile("AAPL")["marketCap"]
        assert first["quote"]["price"] == stable_profile("AAPL")["price"] and first["quote"]["source"] == "fmp"
        assert first["fetched_at"] is not None
        calls = sum(fmp.calls.values())
        assert calls == 2  # one profile, one quote

        cached = (await http.get("/api/company/AAPL", headers=HEADERS)).json()
        assert cached == first and sum(fmp.calls.values()) == calls  # answered from the cache

        await asyncio.sleep(0.4)  # past CLERA_COMPANY_CACHE_TTL_S
        again = (await http.get("/api/company/AAPL", headers=HEADERS)).json()
        assert again["live"] is True and sum(fmp.calls.values()) == calls + 2

        fmp.unknown.add("ONLYSTORED")
        store.upsert_company_profiles([CompanyProfile(symbol="ONLYSTORED", company_name="Stored Only")])
        known_offline = (await http.get("/api/company/ONLYSTORED", headers=HEADERS)).json()
        assert (known_offline["live"], known_offline["stale"]) == (False, False)
        assert known_offline["profile"]["company_name"] == "Stored Only"
        fmp.unknown.add("NOWHERE")
        missing = await http.get("/api/company/NOWHERE", headers=HEADERS)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_fmp_failing_answers_the_stored_profile_as_stale(tmp_path: Path, redis_url: str, fmp: FmpStandin) -> None:
    settings = make_settings(redis_url, tmp_path, **fmp_env(fmp))
    store = make_store(tmp_path / "store.db")
    store.upsert_company_profiles([CompanyProfile(symbol="IBM", company_name="IBM (stored)", source="fmp")])
    fmp.down = True
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        stale = await http.get("/api/company/IBM", headers=HEADERS)
        assert stale.status_code == 200
        body = stale.json()
        assert (body["live"], body["stale"], body["quote"]) == (False, True, None)
        assert body["profile"]["company_name"] == "IBM (stored)" and "503" in body["error"]
        assert KEY not in stale.text

        nothing = await http.get("/api/company/MSFT", headers=HEADERS)
        assert nothing.status_code == 503 and nothing.json()["error"]["code"] == "company_data_unavailable"

        fmp.down = False
        fmp.profiles["IBM"] = "<html>not json rows</html>"
        malformed = (await http.get("/api/company/IBM", headers=HEADERS)).json()
        assert malformed["stale"] is True and "malformed" in malformed["error"]


async def test_concurrent_lookups_stay_within_the_rate_limit(tmp_path: Path, redis_url: str, fmp: FmpStandin) -> None:
    """Twenty different tickers at once: two FMP requests each against a budget of 4 per 0.5 s. Each
    lookup waits at most CLERA_COMPANY_LIVE_WAIT_S for a slot; those that get none answer stale."""
    settings = make_settings(redis_url, tmp_path, **fmp_env(fmp, CLERA_COMPANY_LIVE_WAIT_S="0.6"))
    store = make_store(tmp_path / "store.db")
    tickers = [f"T{n:02d}" for n in range(20)]
    store.upsert_company_profiles([CompanyProfile(symbol=t, company_name=f"{t} stored") for t in tickers])
    async with running_gateway(settings, store, free_port()) as gw, httpx.AsyncClient(base_url=gw.http) as http:
        answers = await asyncio.gather(*(http.get(f"/api/company/{t}", headers=HEADERS) for t in tickers))
    bodies = [a.json() for a in answers]
    assert all(a.status_code == 200 for a in answers)
    assert fmp.max_in_window() <= fmp.limit and fmp.over_limit == 0
    live = [b for b in bodies if b["live"]]
    stale = [b for b in bodies if b["stale"]]
    assert len(live) + len(stale) == len(tickers) and live
    assert all("budget" in b["error"] for b in stale)


def test_the_analyst_tool_reads_through_the_same_service(tmp_path: Path, redis_url: str, fmp: FmpStandin) -> None:
    world = make_world(tmp_path, redis_url, **fmp_env(fmp))
    got = world.run("company_profile", "acct", symbol="Apple")
    assert got["name"] == "AAPL Holdings Inc." and got["source"] == "fmp" and got["live"] is True
    assert got["sector"] == "Technology" and got["quote"]["price"] == stable_profile("AAPL")["price"]
    assert world.run("company_profile", "acct", symbol="AAPL") == got and sum(fmp.calls.values()) == 2  # cached

    fmp.down = True
    stale = world.run("company_profile", "acct", symbol="MSFT")
    assert stale["stale"] is True and stale["source"] == "pytickersymbols" and stale["name"].startswith("Microsoft")
