"""The `clera` command's Ray-free parts: dev secrets, token, config table, and the watch client's reconnects."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from conftest import free_port
from gateway_support import ALICE, ALICE_ACCOUNT, make_settings, make_store, publish, running_gateway, snapshot, token
from rich.console import Console

import cli
from clera_cli.dev_secrets import SECRETS_FILE
from clera_cli.watch import AuthRefused, default_watch_url, watch_frames
from clera_cli.watch_view import portfolio_view
from engine.auth import verify_jwt
from engine.config import load_settings


@pytest.fixture
def bare_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name in ("BACKEND_API_KEY", "SUPABASE_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLERA_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def test_token_uses_a_dev_secret_generated_once(bare_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["token", "--user", "user-7"]) == 0
    first = capsys.readouterr().out.strip()
    stored = json.loads((bare_env / SECRETS_FILE).read_text())
    assert verify_jwt(first, stored["SUPABASE_JWT_SECRET"]) == "user-7"
    assert stored["BACKEND_API_KEY"] and stored["BACKEND_API_KEY"] != stored["SUPABASE_JWT_SECRET"]
    assert (bare_env / SECRETS_FILE).stat().st_mode & 0o077 == 0  # readable by the owner only
    assert cli.main(["token", "--user", "user-8"]) == 0  # a restart keeps the secret: old tokens stay valid
    assert json.loads((bare_env / SECRETS_FILE).read_text()) == stored
    assert verify_jwt(capsys.readouterr().out.strip(), stored["SUPABASE_JWT_SECRET"]) == "user-8"


def test_configured_secrets_win(bare_env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("SUPABASE_JWT_SECRET", "configured-secret-0123456789abcdef012345")
    monkeypatch.setenv("BACKEND_API_KEY", "configured-key")
    assert cli.main(["token", "--user", "u"]) == 0
    assert verify_jwt(capsys.readouterr().out.strip(), "configured-secret-0123456789abcdef012345") == "u"
    assert not (bare_env / SECRETS_FILE).exists()


def test_config_markdown_and_bad_config(bare_env: Path, monkeypatch, capsys) -> None:
    assert cli.main(["config", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| `REDIS_URL` |" in out and "| `HEARTBEAT_INTERVAL` | `30.0` |" in out
    monkeypatch.setenv("CLERA_PORT", "eighty")
    assert cli.main(["config"]) == 2
    assert "CLERA_PORT" in capsys.readouterr().out


async def test_watch_reconnects_after_the_gateway_restarts(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path)
    store = make_store(tmp_path / "store.db")
    await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=1))
    async with running_gateway(settings, store, free_port()) as gw:
        frames: list[dict] = []
        statuses: list[str] = []
        stop = asyncio.Event()
        url = f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"

        async def until(predicate) -> None:
            while not predicate():
                await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch_frames(url, frames.append, statuses.append, stop=stop))
        await asyncio.wait_for(until(lambda: any(f.get("seq") == 1 for f in frames)), 10)
        await gw.restart()
        await asyncio.wait_for(until(lambda: statuses.count("connected") >= 2), 20)
        await publish(redis_url, snapshot(ALICE_ACCOUNT, seq=2))
        await asyncio.wait_for(until(lambda: any(f.get("seq") == 2 for f in frames)), 10)
        assert any(s.startswith("disconnected") for s in statuses), statuses  # the screen said so
        stop.set()
        await asyncio.wait_for(watcher, 10)


async def test_watch_stops_on_a_refusal(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path)
    async with running_gateway(settings, make_store(tmp_path / "store.db"), free_port()) as gw:
        with pytest.raises(AuthRefused):
            await asyncio.wait_for(watch_frames(f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token=bad", print), 10)


async def test_watch_stops_on_a_wrong_url(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url, tmp_path)
    async with running_gateway(settings, make_store(tmp_path / "store.db"), free_port()) as gw:
        with pytest.raises(AuthRefused, match="HTTP 403"):  # Starlette refuses unknown socket paths
            await asyncio.wait_for(watch_frames(f"{gw.ws}/ws/nowhere?token=x", print), 10)


def test_watch_defaults_to_the_replicas_own_port_when_direct_ingress_is_on() -> None:
    direct = load_settings({"CLERA_PORT": "9000", "CLERA_DIRECT_PORT": "9101"}, env_file=None)
    assert default_watch_url(direct) == "ws://127.0.0.1:9101"  # past the proxy: latest snapshot only
    proxy_only = load_settings(
        {"CLERA_PORT": "9000", "CLERA_DIRECT_PORT": "9101", "CLERA_SERVE_DIRECT_INGRESS": "false"}, env_file=None
    )
    assert default_watch_url(proxy_only) == "ws://127.0.0.1:9000"


async def test_watch_latency_under_replay_is_within_a_second_of_the_truth(redis_url: str, tmp_path: Path) -> None:
    """Under replay a snapshot's `as_of` is market time (2012): the watch measures its latency from the
    snapshot's wall-clock ingest time and shows `as_of` as the market time it is."""
    settings = make_settings(redis_url, tmp_path)
    market = dt.datetime(2012, 6, 4, 14, 31, 5, tzinfo=dt.UTC).timestamp()  # 10:31:05 in New York
    async with running_gateway(settings, make_store(tmp_path / "store.db"), free_port()) as gw:
        arrived: dict[str, Any] = {}
        done = asyncio.Event()

        def on_frame(frame: dict[str, Any]) -> None:  # what `clera watch` keeps of a frame
            if frame.get("type") == "portfolio_update" and frame["seq"] == 9:
                arrived.update(frame=frame, received_at=time.time())
                done.set()

        ingested = time.time()
        replayed = msgspec.structs.replace(
            snapshot(ALICE_ACCOUNT, seq=9), as_of=market, ingest_ts=ingested, publish_ts=ingested + 0.001
        )
        await publish(redis_url, replayed)
        url = f"{gw.ws}/ws/portfolio/{ALICE_ACCOUNT}?token={token(ALICE)}"
        await asyncio.wait_for(watch_frames(url, on_frame, stop=done), 10)
    truth_s = arrived["received_at"] - ingested
    screen = Console(record=True, width=400, file=io.StringIO())
    screen.print(portfolio_view(ALICE_ACCOUNT, arrived["frame"], "connected", arrived["received_at"]))
    shown = screen.export_text()
    latency = re.search(r"latency (\d+) ms", shown)
    assert latency is not None, shown
    assert abs(int(latency[1]) / 1000 - truth_s) < 1.0, (latency[0], truth_s)
    assert "market time 2012-06-04 10:31:05 ET" in shown
