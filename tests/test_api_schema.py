"""`/openapi.json` says what the server enforces: schemathesis, run as a client generator would run it,
against the whole app under uvicorn (every route set, a paper ledger, the in-process chat runner and
closure process), with every check on and zero failures allowed.

Schemathesis generates requests from the schema (valid ones, and invalid ones for the negative
checks) and holds the responses to it: no 5xx, every status and body documented, schema-valid
input accepted, invalid input refused, and no route answering without its credentials.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
from agent_support import fund, paper_world, whole_app
from conftest import free_port
from gateway_support import ALICE, API_KEY, Gateway, make_settings, make_store, token

from gateway.app import default_providers
from gateway.openapi import DECIMAL_PATTERN
from gateway.routes_core import TICKER_PATTERN
from gateway.services import Services

SCHEMATHESIS = Path(sys.executable).with_name("st")
CONFIG = Path(__file__).parents[1] / "schemathesis.toml"


async def test_schemathesis_finds_nothing_the_schema_does_not_promise(tmp_path: Path, redis_url: str) -> None:
    settings, db, store, clock, broker = paper_world(tmp_path, redis_url)
    account = fund(broker, clock, "alice@example.com", "20000", {"AAPL": "10"})
    store.ensure_user(ALICE)
    store.add_account(ALICE, account, status="active")
    gateway = whole_app(tmp_path, redis_url, settings, db, store, clock, broker)
    await gateway.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{gateway.http}/openapi.json",
            "--checks", "all",
            "-H", f"X-API-Key: {API_KEY}",
            "-H", f"Authorization: Bearer {token(ALICE, ttl_s=3600)}",
            "--max-examples", "20",
            "--seed", "20261203",
            "--generation-database", "none",
            "--workers", "1",
            "--request-timeout", "30",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    finally:
        await gateway.stop()
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-20000:]
    assert "operations" in report.lower()  # it ran and tested the document's operations


async def test_the_document_states_the_constraints_the_routes_check(tmp_path: Path, redis_url: str) -> None:
    """What schemathesis relies on, read directly: required query parameters, path patterns, decimal
    strings, and the plain-HTTP answer of the WebSocket path."""
    services = Services.in_process(make_settings(redis_url, tmp_path), redis_url, make_store(tmp_path / "store.db"))
    gateway = Gateway(services, free_port(), default_providers())
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.http) as http:
            doc = (await http.get("/openapi.json")).json()
            plain = await http.get("/ws/portfolio/acct-alice-1")
            page = await http.get("/docs")
            bundle = await http.get("/docs/static/swagger-ui-bundle.js")
    finally:
        await gateway.stop()
    threads = doc["paths"]["/api/chat/threads"]["get"]["parameters"]
    assert [(p["name"], p["in"], p["required"]) for p in threads] == [("accountId", "query", True)]
    company = doc["paths"]["/api/company/{ticker}"]["get"]["parameters"][0]
    assert company["schema"]["pattern"] == TICKER_PATTERN
    transfer = doc["components"]["schemas"]["TransferBody"]["properties"]["amount"]
    assert transfer == {"anyOf": [{"type": "string", "pattern": DECIMAL_PATTERN}, {"type": "number"}]}
    assert set(doc["paths"]["/ws/portfolio/{account_id}"]["get"]["responses"]) == {"101", "426"}
    assert plain.status_code == 426 and plain.headers["upgrade"] == "websocket"
    assert plain.json()["error"]["code"] == "upgrade_required"
    # the interactive docs come from the installed package, not from a CDN
    assert page.status_code == 200 and "/docs/static/swagger-ui-bundle.js" in page.text and "http" not in page.text
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
