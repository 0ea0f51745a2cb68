"""The commands that start everything, run for real as subprocesses: `clera serve` (what `make demo`
runs) and `serve run` of serve_config.yaml (what `serve deploy` does on a cluster).

Each command starts its own local Ray, which cannot share the session's Ray of the other tests: this
module is marked `own_ray` and `make test` runs it in a pytest process of its own. Ctrl-C is what
stops them: the tests send SIGINT to the command's process group, as a terminal does, and check that
nothing the command started (Ray, the engine's detached actors, the embedded redis-server) outlives it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import msgspec
import psutil
import pytest
import redis
import yaml
from conftest import free_port
from gateway_support import ALICE, API_KEY, JWT_SECRET, bearer, publish, snapshot, token
from test_gateway_ws import next_of
from websockets.asyncio.client import connect

from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from clera_cli.dev_secrets import SECRETS_FILE
from clera_cli.watch import watch_frames
from engine.auth import mint_jwt, verify_jwt
from engine.config import Settings
from gateway import demo

pytestmark = [pytest.mark.own_ray, pytest.mark.timeout(900)]  # each starts and stops a whole Ray

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
MARKER = "CLERA_ENTRY_POINT_TEST_RUN"  # inherited by every process a command starts (not a setting)
SETTING_NAMES = {field.encode_name for field in msgspec.structs.fields(Settings)}


def _default_sigint() -> None:
    """A command started from a shell without job control would ignore SIGINT, and Python then never
    raises KeyboardInterrupt: give the command the default disposition a terminal gives it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Command:
    """One command in a process group of its own; its output goes to files (Ray's logs would fill a pipe)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.stdout_path, self.stderr_path = cwd / "stdout.txt", cwd / "stderr.txt"
        with self.stdout_path.open("w") as out, self.stderr_path.open("w") as err:
            self.process = subprocess.Popen(
                argv, env=env, cwd=cwd, stdout=out, stderr=err, start_new_session=True, preexec_fn=_default_sigint
            )

    def stdout(self) -> str:
        return self.stdout_path.read_text()

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    async def wait_for(self, pattern: str, *, in_stderr: bool = False, deadline_s: float = 300) -> re.Match[str]:
        """The first match of `pattern` in the output, waiting for it while the command runs."""
        deadline = time.monotonic() + deadline_s
        while True:
            found = re.search(pattern, self.stderr() if in_stderr else self.stdout(), re.MULTILINE)
            if found is not None:
                return found
            assert self.process.poll() is None, f"exited with {self.process.returncode}:\n{self.stderr()[-4000:]}"
            assert time.monotonic() < deadline, f"no {pattern!r} yet:\n{self.stdout()[-2000:]}"
            await asyncio.sleep(0.5)

    async def ctrl_c(self, timeout_s: float = 180) -> int:
        os.killpg(self.process.pid, signal.SIGINT)
        return await asyncio.to_thread(self.process.wait, timeout_s)

    async def sigterm(self, timeout_s: float = 180) -> int:
        """SIGTERM to the command alone, as Docker and Kubernetes send it (not to its process group)."""
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, timeout_s)


def _environ(marker: str, **values: str) -> dict[str, str]:
    """This process's environment without any setting, Ray address or Serve switch of its own."""
    env = {
        name: value for name, value in os.environ.items()
        if name not in SETTING_NAMES and not name.startswith(("RAY_", "CLERA_"))
    }
    return {**env, MARKER: marker, **values}


def _left_behind(marker: str, run_dir: Path) -> list[psutil.Process]:
    """Live processes of one run: Ray's and the actors' inherit its marker; the embedded redis-server
    daemonizes, but works in the run's data directory."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            if process.environ().get(MARKER) == marker or Path(process.cwd()).is_relative_to(run_dir):
                found.append(process)
        except psutil.Error:
            continue  # gone meanwhile, or not ours to inspect
    return found


async def _nothing_left_behind(marker: str, run_dir: Path) -> None:
    deadline = time.monotonic() + 60  # Ray's workers notice their raylet's end on their own
    while (left := _left_behind(marker, run_dir)) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    assert not left, f"still running: {[(p.pid, p.name()) for p in left]}"


@pytest.fixture
def commands() -> Iterator[Callable[[list[str], dict[str, str], Path], Command]]:
    """Starts commands; whatever a failed test left running is stopped (by process group, then by pid)."""
    started: list[tuple[Command, str, Path]] = []

    def start(argv: list[str], env: dict[str, str], cwd: Path) -> Command:
        command = Command(argv, env, cwd)
        started.append((command, env[MARKER], cwd))
        return command

    yield start
    for command, marker, cwd in started:
        if command.process.poll() is None:
            os.killpg(command.process.pid, signal.SIGINT)
            try:
                command.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(command.process.pid, signal.SIGKILL)
                command.process.wait(10)
        for process in _left_behind(marker, cwd):
            process.kill()


def _ports() -> tuple[int, int]:
    """Serve's proxy port, and a first replica port whose range (100 ports) leaves the proxy's alone."""
    port = free_port()
    while True:
        direct = free_port()
        if not direct <= port <= direct + 100:
            return port, direct


async def _until(
    request: Callable[[], Awaitable[httpx.Response]], done: Callable[[httpx.Response], bool], deadline_s: float
) -> httpx.Response:
    """The first response that satisfies `done`, asking again while the server is still coming up."""
    deadline = time.monotonic() + deadline_s
    last: httpx.Response | Exception | None = None
    while time.monotonic() < deadline:
        try:
            last = await request()
            if done(last):
                return last
        except httpx.TransportError as exc:
            last = exc
        await asyncio.sleep(0.5)
    raise AssertionError(f"gave up waiting; last answer: {getattr(last, 'text', last)!r}")


def _engine_up(response: httpx.Response) -> bool:
    """The engine seen healthy, and so the whole answer "ok" (it is "degraded" until then)."""
    body = response.json() if response.status_code == 200 else {}
    return body.get("engine", {}).get("state") == "ok" and body.get("status") == "ok"


async def test_clera_serve_runs_everything_and_stops_on_ctrl_c(tmp_path: Path, commands) -> None:
    port, direct = _ports()
    data, marker = tmp_path / "data", uuid.uuid4().hex
    env = _environ(marker, CLERA_DATA_DIR=str(data), CLERA_PORT=str(port), CLERA_DIRECT_PORT=str(direct))
    # no REDIS_URL: the embedded one; no dashboard (the full run below shows it)
    served = commands([str(BIN / "clera"), "serve", "--no-dashboard"], env, tmp_path)

    await served.wait_for(r"^output is not a terminal")  # printed last, once everything is up
    out = served.stdout()
    secrets = json.loads((data / SECRETS_FILE).read_text())  # generated on first start
    url = f"http://127.0.0.1:{port}"
    assert f"Clera engine is up at {url}" in out
    assert f"API key (X-API-Key):  {secrets['BACKEND_API_KEY']}" in out
    demo_token = re.search(r"^(eyJ\S+)$", out, re.MULTILINE)
    assert demo_token is not None and verify_jwt(demo_token[1], secrets["SUPABASE_JWT_SECRET"]) == demo.DEMO_USER
    watch_url = re.search(r"clera watch ACCOUNT --url (\S+)$", out, re.MULTILINE)
    assert watch_url is not None and watch_url[1] == f"ws://127.0.0.1:{direct}"  # past the proxy
    accounts = re.findall(r"^  demo-[\w-]+ +(\S+)$", out, re.MULTILINE)
    assert accounts, out
    assert "live portfolios" not in out  # no table drawn into a file
    assert "Ray dashboard" not in out

    account, auth = accounts[0], {"Authorization": f"Bearer {demo_token[1]}"}
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        health = (await _until(lambda: http.get("/api/health"), _engine_up, deadline_s=180)).json()
        assert health["redis_reachable"] and health["engine"]["feed_connected"]
        assert health["engine"]["shards_alive"] == health["engine"]["shards_expected"] > 0
        assert (await http.get("/ws/health")).json()["status"] == "healthy"  # the seed's word for "ok"
        company = await http.get("/api/company/AAPL", headers={"X-API-Key": secrets["BACKEND_API_KEY"]})
        assert company.status_code == 200
        portfolio = await _until(
            lambda: http.get(f"/api/portfolio/{account}", headers=auth), lambda r: r.status_code == 200, 120
        )
        assert portfolio.json()["account_id"] == account
        stranger = mint_jwt("someone-else", secrets["SUPABASE_JWT_SECRET"])
        denied = await http.get(f"/api/portfolio/{account}", headers={"Authorization": f"Bearer {stranger}"})
        assert denied.status_code == 403
        # the demo user chats with its account at once, through the AgentGraph deployment
        chat_headers = {**auth, "X-API-Key": secrets["BACKEND_API_KEY"]}
        turn = await http.post("/api/chat", headers=chat_headers, timeout=60,
                               json={"message": "what do I own?", "accountId": account})
        assert turn.status_code == 200, turn.text
        assert turn.json()["agent"] == "portfolio_management" and turn.json()["steps"][0]["tool"] == "get_portfolio"
        assert re.search(r"^chat: +clera chat ACCOUNT --url \S+", out, re.MULTILINE)

    # the socket `clera watch` opens, at the URL printed for it, and one through Serve's proxy
    frames: list[dict] = []
    got_one = asyncio.Event()

    def on_frame(frame: dict) -> None:
        if frame.get("type") == "portfolio_update":
            frames.append(frame)
            got_one.set()

    socket_path = f"/ws/portfolio/{account}?token={demo_token[1]}"
    await asyncio.wait_for(watch_frames(f"{watch_url[1]}{socket_path}", on_frame, stop=got_one), 60)
    assert frames[0]["account_id"] == account and frames[0]["total_value"].startswith("$")
    async with connect(f"ws://127.0.0.1:{port}{socket_path}") as ws:
        assert (await next_of(ws))["account_id"] == account

    assert await served.ctrl_c() == 0
    assert re.search(r"^stopping \.\.\.$", served.stdout(), re.MULTILINE)
    await _nothing_left_behind(marker, tmp_path)


async def test_serve_run_of_serve_config_starts_the_engine_and_refuses_without_redis(
    tmp_path: Path, redis_url: str, pg_url: str, commands
) -> None:
    """`serve run` of serve_config.yaml with the machine's Redis and PostgreSQL in its environment: the import path
    `serve_app:app`, whose replicas get-or-create the engine's named detached actors (two replicas, so
    two of them race for it). `serve run serve_app:app` alone takes the same path but always binds
    port 8000. A second application of the same file without REDIS_URL shows the refusal."""
    port, _ = _ports()
    marker = uuid.uuid4().hex
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"].update(host="127.0.0.1", port=port)
    (app,) = config["applications"]
    refused = copy.deepcopy(app)  # the same application where REDIS_URL is unset (empty means unset)
    refused.update(
        name="clera-without-redis", route_prefix="/without-redis", runtime_env={"env_vars": {"REDIS_URL": ""}}
    )
    config["applications"].append(refused)
    (tmp_path / "serve_config.yaml").write_text(yaml.safe_dump(config))
    # an account of this test alone in the shared store (pub/sub channels are shared by every Redis database)
    account = f"acct-entry-{uuid.uuid4().hex[:8]}"
    store = SqlStore(Database(pg_url))
    store.migrate()
    store.ensure_user(ALICE)
    store.add_account(ALICE, account, status="active")
    # every setting comes from the nodes' environment, as the config says; RAY_ADDRESS=local: a Ray of its own
    env = _environ(
        marker, RAY_ADDRESS="local", BACKEND_API_KEY=API_KEY, SUPABASE_JWT_SECRET=JWT_SECRET, REDIS_URL=redis_url,
        DATABASE_URL=pg_url, CLERA_DATA_DIR=str(tmp_path / "data"), CLERA_SERVE_MIN_REPLICAS="2",
    )
    running = commands([str(BIN / "serve"), "run", str(tmp_path / "serve_config.yaml")], env, tmp_path)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        health = (await _until(lambda: http.get("/api/health"), _engine_up, deadline_s=300)).json()
        assert health["engine"]["shards_alive"] == health["engine"]["shards_expected"] > 0
        assert health["redis_reachable"] and health["engine"]["feed_connected"]
        prices = redis.Redis.from_url(redis_url)
        try:  # the engine the application started writes to REDIS_URL, not to a Redis of its own
            deadline = time.monotonic() + 60
            while not prices.keys("price:*"):
                assert time.monotonic() < deadline, "no price from the engine in REDIS_URL"
                await asyncio.sleep(0.5)
        finally:
            prices.close()
        company = await http.get("/api/company/AAPL", headers={"X-API-Key": API_KEY})
        assert company.status_code == 200  # loaded into DATABASE_URL's store when a replica starts
        await publish(redis_url, snapshot(account, seq=7))
        portfolio = await http.get(f"/api/portfolio/{account}", headers=bearer(ALICE))
        assert portfolio.status_code == 200 and portfolio.json()["seq"] == 7
    async with connect(f"ws://127.0.0.1:{port}/ws/portfolio/{account}?token={token(ALICE)}") as ws:
        assert (await next_of(ws))["seq"] == 7

    refusal = await running.wait_for(r"ConfigError: (REDIS_URL is not set\..*)$", in_stderr=True)
    assert "serve deploy serve_config.yaml" in refusal[1]

    await running.ctrl_c()
    await _nothing_left_behind(marker, tmp_path)


def _with_password(url: str, password: str) -> str:
    """The test database's URL with a password in it (trust authentication ignores it)."""
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{password}@", 1)


DASHBOARD_VIEWS = """
import json, sys
from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
from ray.util.state import list_actors, list_jobs, list_tasks

address = sys.argv[1]
listing = {"address": address, "detail": True, "limit": 10_000, "raise_on_missing_output": False}
print(json.dumps({
    "tasks": repr(list_tasks(**listing)), "actors": repr(list_actors(**listing)), "jobs": repr(list_jobs(**listing)),
    "serve": json.dumps(ServeSubmissionClient(address).get_serve_details()),
}))
"""


def _dashboard_listings(address: str) -> dict[str, str]:
    """What the dashboard's task, actor, job and Serve views show, through Ray's state API and Serve's
    client, from a process of its own: the local Ray `clera serve` started asks for its token
    (~/.ray/auth_token), which a client only sends with RAY_AUTH_MODE=token."""
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    done = subprocess.run([sys.executable, "-c", DASHBOARD_VIEWS, address], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _secret_hits(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value in text]


async def test_a_full_run_shows_no_secret_and_stops_on_sigterm(tmp_path: Path, pg_url: str, commands) -> None:
    """`clera serve` with every kind of secret configured, the dashboard on: demo accounts, a new account
    linked to a bank through Plaid (its stand-in), a transfer, trades through the API and through the
    agents, refusals. None of the secret values is in any answer, in the command's output or Ray's logs,
    or in what Ray's state API (the dashboard's task, actor and job views) lists. Then SIGTERM alone,
    as Docker or Kubernetes send it, stops everything."""
    from paper_support import application
    from standins.plaid_api import PlaidStandin
    from test_plaid import sandbox_public_token

    port, direct = _ports()
    dashboard_port = free_port()
    marker = uuid.uuid4().hex
    secrets = {name: f"{name.lower()}-{uuid.uuid4().hex}" for name in (
        "BACKEND_API_KEY", "SUPABASE_JWT_SECRET", "PLAID_SECRET", "BROKER_API_KEY", "BROKER_SECRET_KEY",
        "OPENAI_API_KEY", "CLERA_SMTP_PASSWORD", "SUPABASE_SERVICE_ROLE_KEY")}
    db_password = f"pw-{uuid.uuid4().hex}"
    hidden = {**secrets, "DATABASE_URL password": db_password}
    ray_dir = Path(tempfile.mkdtemp(prefix="clera-ray-", dir="/tmp"))  # short: Ray's sockets live in it
    with PlaidStandin("plaid-client", secrets["PLAID_SECRET"]) as plaid_api:
        env = _environ(
            marker, **secrets, CLERA_DATA_DIR=str(tmp_path / "data"), CLERA_PORT=str(port),
            CLERA_DIRECT_PORT=str(direct), DATABASE_URL=_with_password(pg_url, db_password),
            CLERA_REPLAY_SESSION_SECONDS="10", PLAID_CLIENT_ID="plaid-client", CLERA_PLAID_HOST=plaid_api.url,
            BACKEND_PUBLIC_URL="https://api.example.com", RAY_TMPDIR=str(ray_dir),
        )
        served = commands(
            [str(BIN / "clera"), "serve", "--dashboard-port", str(dashboard_port)], env, tmp_path
        )
        await served.wait_for(r"^output is not a terminal")
        out = served.stdout()
        assert f"Ray dashboard: http://127.0.0.1:{dashboard_port}" in out
        assert "API key (X-API-Key):  BACKEND_API_KEY (as configured)" in out  # the operator's own: not shown
        demo_token = re.search(r"^(eyJ\S+)$", out, re.MULTILINE)
        accounts = re.findall(r"^  demo-[\w-]+ +(\S+)$", out, re.MULTILINE)
        assert demo_token is not None and accounts
        headers = {"X-API-Key": secrets["BACKEND_API_KEY"], "Authorization": f"Bearer {demo_token[1]}"}
        answers: list[httpx.Response] = []

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60) as http:
            async def ask(method: str, path: str, **kw: object) -> httpx.Response:
                response = await http.request(method, path, **kw)
                answers.append(response)
                return response

            await _until(lambda: ask("GET", "/api/health"), _engine_up, deadline_s=180)
            # a demo account buys once its ACH deposit has cleared (a replayed day is 10 s here)
            bought = await _until(
                lambda: ask("POST", "/api/trade", json={
                    "accountId": accounts[0], "side": "buy", "ticker": "AAPL", "notional_amount": "25"}),
                lambda r: r.status_code == 200, deadline_s=180,
            )
            assert bought.json()["symbol"] == "AAPL"
            turn = await ask("POST", "/api/chat", json={"message": "buy $20 of Apple", "accountId": accounts[0]})
            assert turn.status_code == 200 and turn.json()["interrupt"] is not None, turn.text
            placed = await ask(
                "POST",
                "/api/chat/resume",
                json={
                    "threadId": turn.json()["threadId"],
                    "interruptId": turn.json()["interrupt"]["id"],
                    "decision": "confirm",
                },
            )
            assert placed.status_code == 200, placed.text
            # a new account of the demo user, its bank linked through Plaid, then funded
            app = msgspec.to_builtins(application(f"{uuid.uuid4().hex[:8]}@example.com"))
            created = await ask("POST", "/create-alpaca-account", json={"alpacaData": app})
            assert created.status_code in (200, 201), created.text
            account = created.json()["id"]
            link = await ask("POST", "/create-ach-relationship-link", json={"accountId": account})
            assert link.status_code == 200 and link.json()["link_token"] in plaid_api.link_tokens
            public_token = sandbox_public_token(plaid_api)
            linked = await ask(
                "POST", "/exchange-plaid-token", json={"accountId": account, "publicToken": public_token}
            )
            assert linked.status_code == 200 and linked.json()["status"] == "APPROVED", linked.text
            deposit = await ask("POST", "/initiate-ach-transfer", json={
                "accountId": account, "relationshipId": linked.json()["id"], "amount": "500", "direction": "INCOMING"})
            assert deposit.status_code in (200, 201), deposit.text
            # refusals: a wrong key, a stranger's account, a bad body, a Plaid token Plaid never issued
            assert (await ask("GET", f"/api/account/{account}", headers={"X-API-Key": "wrong"})).status_code == 401
            stranger = mint_jwt("someone-else", secrets["SUPABASE_JWT_SECRET"])
            assert (await ask("GET", f"/api/account/{account}", headers={"Authorization": f"Bearer {stranger}"})
                    ).status_code == 403
            assert (await ask("POST", "/api/trade", content=b"{")).status_code == 400
            forged = await ask("POST", "/exchange-plaid-token", json={"accountId": account, "publicToken": "public-x"})
            assert 400 <= forged.status_code < 500

        for response in answers:
            assert not _secret_hits(response.text, hidden), (response.request.url, response.text)
        listed = await asyncio.to_thread(_dashboard_listings, f"http://127.0.0.1:{dashboard_port}")
        assert "_broker_call" in listed["tasks"]  # brokerage calls ran as tasks, with their arguments
        assert "PortfolioShard" in listed["actors"] and "Gateway" in listed["serve"]
        for view, text in listed.items():
            assert not _secret_hits(text, hidden), view

        assert await served.sigterm() == 0, served.stderr()[-3000:]
    assert re.search(r"^stopping \.\.\.$", served.stdout(), re.MULTILINE)
    await _nothing_left_behind(marker, tmp_path)
    logs = [path for path in ray_dir.rglob("*") if path.is_file() and not path.is_socket()]
    assert any(path.suffix in (".log", ".out", ".err") for path in logs)
    for path in [*logs, served.stdout_path, served.stderr_path]:
        text = path.read_bytes().decode(errors="replace")
        assert not _secret_hits(text, hidden), path
    shutil.rmtree(ray_dir, ignore_errors=True)
