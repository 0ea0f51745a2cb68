"""`clera serve` (what `make demo` runs) restarted twice, for real: the paper world continues where it
stopped (`--fresh` is tested in process, tests/test_world.py). Each run starts its own local Ray, so the
module is `own_ray`.

Replayed days last 6 s here (one a minute in the demo), so the demo accounts are funded and bought
within the first run and each later run lives a few more days.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_entry_points import BIN, Command, _environ, _nothing_left_behind, _ports, _until, commands  # noqa: F401

from clera_cli.dev_secrets import SECRETS_FILE
from engine import world
from engine.config import load_settings
from gateway import demo

pytestmark = [pytest.mark.own_ray, pytest.mark.timeout(1500)]
# one ACH deposit per demo account, one fill per position it holds
EXPECTED_ACTIVITIES = sum(1 + len(h.positions) for h in demo.demo_holdings(None))


class Run:
    """One `clera serve` until Ctrl-C: its printed accounts and token, the API it serves."""

    def __init__(self, command: Command, http: httpx.AsyncClient, data: Path) -> None:
        self.command, self.http = command, http
        out = command.stdout()
        self.accounts = re.findall(r"^  demo-[\w-]+ +(\S+)$", out, re.MULTILINE)
        token = re.search(r"^(eyJ\S+)$", out, re.MULTILINE)
        assert self.accounts and token is not None, out
        key = json.loads((data / SECRETS_FILE).read_text())["BACKEND_API_KEY"]
        self.headers = {"Authorization": f"Bearer {token[1]}", "X-API-Key": key}

    async def snapshot(self, done: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        """The first stored snapshot of the first demo account that satisfies `done`."""
        response = await _until(
            lambda: self.http.get(f"/api/portfolio/{self.accounts[0]}", headers=self.headers),
            lambda r: r.status_code == 200 and done(r.json()), deadline_s=240,
        )
        return response.json()

    async def activity_dates(self) -> list[float]:
        dates = []
        for account in self.accounts:
            response = await self.http.get(f"/api/portfolio/{account}/activities", headers=self.headers)
            assert response.status_code == 200, response.text
            dates += [dt.datetime.fromisoformat(a["date"]).timestamp() for a in response.json()["activities"]]
        return dates


async def test_a_demo_restarted_twice_continues_its_world(tmp_path: Path, commands) -> None:  # noqa: F811 - the fixture
    port, direct = _ports()
    data, marker = tmp_path / "data", uuid.uuid4().hex
    env = _environ(marker, CLERA_DATA_DIR=str(data), CLERA_PORT=str(port), CLERA_DIRECT_PORT=str(direct),
                   CLERA_REPLAY_SESSION_SECONDS="6")
    reached = 0.0  # the latest market time seen (a snapshot's as_of, an activity's date)
    first_accounts: list[str] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        for restart in range(3):
            served = commands([str(BIN / "clera"), "serve"], env, tmp_path)
            await served.wait_for(r"^output is not a terminal")
            run = Run(served, http, data)
            said = served.stdout()
            if restart == 0:
                assert "a new paper world: the replay starts at 2012-06-01" in said
                first_accounts = run.accounts
            else:
                assert re.search(r"^continuing the paper world at 2012-\d\d-\d\d .* ET", said, re.MULTILINE), said
                assert run.accounts == first_accounts
            if restart > 0:  # the ledger as the last run left it
                lived = await run.activity_dates()
                assert lived and max(lived) <= reached
            first = await run.snapshot(lambda s: s["as_of"] > 0)  # valued at a replayed tick
            # the world's market time never goes back, so nothing it holds is dated after its "now"
            assert first["as_of"] >= reached, (restart, first["as_of"], reached)
            if restart == 0:  # the demo accounts fund (deposits clear at the next open) and buy, once
                await _until(run.activity_dates, lambda dates: len(dates) == EXPECTED_ACTIVITIES, deadline_s=240)
            later = await run.snapshot(lambda s: s["session"] > first["session"])  # noqa: B023 - a replayed day passes
            reached = max(later["as_of"], *await run.activity_dates())
            assert len(await run.activity_dates()) == EXPECTED_ACTIVITIES  # nothing funded or bought twice
            assert await served.ctrl_c() == 0
            assert (
                world.saved_moment(load_settings({"CLERA_DATA_DIR": str(data)}, env_file=None)).timestamp() >= reached
            )
            await _nothing_left_behind(marker, tmp_path)

