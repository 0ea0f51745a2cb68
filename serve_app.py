"""The Ray Serve application: the gateway (REST + WebSocket) as a `Gateway` deployment, and the
agents as an `AgentGraph` deployment it calls through a handle.

`serve run serve_app:app` / `serve deploy serve_config.yaml` on a cluster, or `clera serve` locally.
Each replica builds the Starlette app of `gateway.app` from Ray-backed services (broker calls run as
Ray tasks, engine health from the topology's actors) and makes sure the engine topology exists.
Outside `clera serve`, Redis must be external (`REDIS_URL`): an embedded one dies with its owner
and other nodes cannot reach it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Concatenate, Literal, cast

import msgspec
import ray
import redis
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator
from starlette.applications import Starlette

from actors import placement, topology
from actors.closure_orchestrator import closure_call, start_orchestrator
from actors.common import setup_process
from agents.wiring import runner_from_settings
from brokerage.broker import Broker
from brokerage.company_profiles import load_default_company_profiles
from brokerage.factory import process_broker
from brokerage.store_factory import store_from_settings
from engine.chat import (
    ChatEvent,
    ChatTurn,
    Decision,
    OrderEdit,
    ThreadDetail,
    ThreadSummary,
)
from engine.config import ConfigError, Settings, get_settings
from gateway.app import build_app
from gateway.services import (
    AsyncBroker,
    ClosureCalls,
    EngineState,
    P,
    R,
    RedisConnector,
    RedisPortfolioReads,
    Services,
)

REPLAY_EPOCH_KEY = "clera:replay_epoch"


def require_external_redis(settings: Settings) -> str:
    url = settings.redis_external_url
    if not url:
        raise ConfigError(
            "REDIS_URL is not set. `serve run serve_app:app` and `serve deploy serve_config.yaml` need an "
            "external Redis that every node reaches (e.g. REDIS_URL=redis://10.0.0.5:6379/0); only "
            "`clera serve` starts an embedded Redis, for one machine."
        )
    return url


def require_shared_database(settings: Settings) -> None:
    """On a multi-node cluster the store, the paper ledger and the conversations (checkpoints and who
    owns each thread, kept beside the store whatever CLERA_STORE says) must live in PostgreSQL: broker
    tasks and replicas land on any node, and a SQLite file on each would be a different ledger."""
    if not settings.database_url and len([n for n in ray.nodes() if n.get("Alive")]) > 1:
        raise ConfigError(
            "DATABASE_URL is not set on a multi-node Ray cluster: the store, the paper ledger and the chat "
            "conversations would be a separate SQLite file on every node. Set DATABASE_URL to a PostgreSQL "
            "database all nodes reach."
        )


def shared_replay_epoch(settings: Settings, redis_url: str) -> Settings:
    """A replay needs one epoch for every process; without `clera serve` to set it, the first replica
    to start stores one in Redis and every other process reads the same value."""
    if settings.feed != "replay" or settings.replay_epoch is not None:
        return settings
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(REPLAY_EPOCH_KEY, repr(time.time()), nx=True)
        epoch = float(client.get(REPLAY_EPOCH_KEY) or time.time())
    finally:
        client.close()
    return msgspec.structs.replace(settings, replay_epoch=epoch)


def deployment_options(settings: Settings) -> dict[str, Any]:
    """Sized for sockets: every open WebSocket is an ongoing request for its whole life."""
    return {
        "max_ongoing_requests": settings.serve_max_ongoing,
        "autoscaling_config": {
            "min_replicas": settings.serve_min_replicas,
            "max_replicas": settings.serve_max_replicas,
            "target_ongoing_requests": settings.serve_target_ongoing,
        },
        "ray_actor_options": {"num_cpus": 0.1},
    }


def direct_ingress_environ(settings: Settings) -> dict[str, str]:
    """Serve's switches for a socket-heavy gateway, for the environment of every Ray process (the
    controller and the replicas read them when they start, so they are set before Ray starts).

    Direct ingress: each gateway replica serves HTTP and WebSockets on its own port as well, so a
    socket's frames skip the proxy, which spends about half a millisecond of CPU per frame and
    queues frames for slow clients (measured in bench/gateway.py). The app runs on the loop that
    serves the sockets, without a cross-thread hop per ASGI message; its blocking calls already go
    to threads. Experimental in Ray 2.60: CLERA_SERVE_DIRECT_INGRESS=false falls back to the proxy.
    """
    if not settings.serve_direct_ingress:
        return {}
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(settings.direct_port),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(settings.direct_port + 100),
    }


# --- Ray-backed services ----------------------------------------------------------------------
_brokers: dict[Settings, Broker] = {}


@ray.remote(num_cpus=0, max_retries=0)  # never retried: a retried order or transfer could happen twice
def _broker_call(settings: Settings, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One Broker method on this worker's broker for `settings` (its secrets this worker's own)."""
    broker = _brokers.get(settings)
    if broker is None:
        broker = _brokers[settings] = process_broker(settings, require_external_redis(settings))
    return getattr(broker, method)(*args, **kwargs)


def unwrapped(exc: ray.exceptions.RayTaskError) -> Exception:
    """The typed error a task or replica raised (mapped to its HTTP status), else the Ray error itself."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


class RayTaskBroker(AsyncBroker):
    """Broker calls as Ray tasks: blocking ledger/HTTP work leaves the replica, and scales with the cluster."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def _run(self, method: Callable[Concatenate[Broker, P], R], *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result: R = await _broker_call.remote(self._settings, method.__name__, args, kwargs)
        except ray.exceptions.RayTaskError as exc:
            raise unwrapped(exc) from None
        return result


class RayClosureRunner(ClosureCalls):
    """The gateway's ClosureRunner: each ClosureProcess call a Ray task on the cluster (retried when its
    worker dies; the process checks the broker's state before acting, so a repeated step is safe)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def _run(self, method: str, *args: Any) -> Any:
        try:
            return await closure_call.remote(self._settings, method, args)
        except ray.exceptions.RayTaskError as exc:
            raise unwrapped(exc) from None


class RayEngineHealth:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    async def refresh(self) -> EngineState:
        report = await topology.health(self._settings)
        shards = report["symbol_shards"] + report["portfolio_shards"]
        alive = sum(1 for shard in shards if shard["alive"])
        feed = report["feed"] or {}
        state: Literal["ok", "degraded", "down"] = "ok" if report["ok"] else ("down" if alive == 0 else "degraded")
        return EngineState(
            state=state,
            feed_connected=bool(feed.get("feed", {}).get("connected")),
            shards_alive=alive,
            shards_expected=len(shards),
            checked_at=time.time(),
            detail={"feed": feed.get("feed"), "position_sync": report["position_sync"] is not None},
        )


def settings_environ(settings: Settings) -> dict[str, str]:
    """The settings as environment variables: what a process started from this one needs to rebuild
    exactly the same settings, `.env` values and the shared replay epoch included (`clera serve` puts
    them in the environment the local Ray inherits)."""
    out: dict[str, str] = {}
    for name, value in msgspec.to_builtins(settings).items():
        if value is not None:
            out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


@serve.deployment(name="AgentGraph")
class AgentGraph:
    """The agents' replica: the graph, its checkpointer, and the broker, store and prices its tools use."""

    def __init__(self, settings: Settings) -> None:
        setup_process(settings)
        redis_url = require_external_redis(settings)
        require_shared_database(settings)
        self.runner = runner_from_settings(shared_replay_epoch(settings, redis_url), redis_url)

    async def chat(self, user_id: str, account_id: str, thread_id: str | None, message: str) -> ChatTurn:
        return await self.runner.chat(user_id, account_id, thread_id, message)

    async def resume(
        self, user_id: str, thread_id: str, interrupt_id: str, decision: Decision, edit: OrderEdit | None
    ) -> ChatTurn:
        return await self.runner.resume(user_id, thread_id, interrupt_id, decision, edit)

    async def stream(
        self, user_id: str, account_id: str, thread_id: str | None, message: str
    ) -> AsyncIterator[ChatEvent]:
        async for event in self.runner.stream(user_id, account_id, thread_id, message):
            yield event

    async def threads(self, user_id: str, account_id: str) -> list[ThreadSummary]:
        return await self.runner.threads(user_id, account_id)

    async def thread(self, user_id: str, thread_id: str) -> ThreadDetail:
        return await self.runner.thread(user_id, thread_id)


class ServeChatRunner:
    """The gateway's ChatRunner: calls on the `AgentGraph` deployment, its typed errors raised again here."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    @staticmethod
    async def _result(response: Any) -> Any:  # a DeploymentResponse; the handle types it as a union with streams
        try:
            return await response
        except ray.exceptions.RayTaskError as exc:
            raise unwrapped(exc) from None

    async def chat(self, user_id: str, account_id: str, thread_id: str | None, message: str) -> ChatTurn:
        turn: ChatTurn = await self._result(self._handle.chat.remote(user_id, account_id, thread_id, message))
        return turn

    async def resume(
        self, user_id: str, thread_id: str, interrupt_id: str, decision: Decision, edit: OrderEdit | None
    ) -> ChatTurn:
        response = self._handle.resume.remote(user_id, thread_id, interrupt_id, decision, edit)
        turn: ChatTurn = await self._result(response)
        return turn

    async def stream(
        self, user_id: str, account_id: str, thread_id: str | None, message: str
    ) -> AsyncIterator[ChatEvent]:
        events = cast(  # with stream=True the answer is the generator
            "DeploymentResponseGenerator[ChatEvent]",
            self._handle.options(stream=True).stream.remote(user_id, account_id, thread_id, message),
        )
        try:
            async for event in events:
                yield event
        except ray.exceptions.RayTaskError as exc:
            raise unwrapped(exc) from None

    async def threads(self, user_id: str, account_id: str) -> list[ThreadSummary]:
        threads: list[ThreadSummary] = await self._result(self._handle.threads.remote(user_id, account_id))
        return threads

    async def thread(self, user_id: str, thread_id: str) -> ThreadDetail:
        thread: ThreadDetail = await self._result(self._handle.thread.remote(user_id, thread_id))
        return thread


def agent_options(settings: Settings) -> dict[str, Any]:
    """Sized for model calls: a turn holds a replica's slot for its whole length (seconds with a real model)."""
    return {
        "max_ongoing_requests": settings.agent_max_ongoing,
        "autoscaling_config": {
            "min_replicas": settings.agent_min_replicas,
            "max_replicas": settings.agent_max_replicas,
            "target_ongoing_requests": max(1, settings.agent_max_ongoing // 2),
        },
        "ray_actor_options": {"num_cpus": settings.agent_num_cpus, **placement.serve_placement(placement.AGENTS)},
    }


@serve.deployment(name="Gateway")
@serve.ingress()
class Gateway:
    """One replica of the gateway, on the settings of the process that deployed it (its secrets this
    replica's own: a Settings never carries them across processes)."""

    def __init__(
        self, settings: Settings, start_engine: bool = True, agents: DeploymentHandle[Any] | None = None
    ) -> None:
        setup_process(settings)
        redis_url = require_external_redis(settings)
        require_shared_database(settings)
        settings = shared_replay_epoch(settings, redis_url)
        store = store_from_settings(settings)
        load_default_company_profiles(store)
        if start_engine:
            topology.start_topology(settings, redis_url, wait=False)
            start_orchestrator(settings)  # get-or-create: unfinished closures keep moving on the cluster
        connector = RedisConnector(redis_url)
        self.services = Services(
            settings=settings,
            redis=connector,
            store=store,
            portfolio=RedisPortfolioReads(connector),
            broker=RayTaskBroker(settings),
            engine=RayEngineHealth(settings),
            chat=None if agents is None else ServeChatRunner(agents),
            closure=RayClosureRunner(settings),
        )

    def __serve_build_asgi_app__(self) -> Starlette:
        """The app, and with it (CLERA_NATIVE_WS) the replica's own WebSocket server, started by the app's
        lifespan on the replica's event loop and closed with it."""
        return build_app(self.services, socket_server=True)


def gateway_app(settings: Settings, start_engine: bool = True) -> Any:
    """The bound application, with replica sizing and autoscaling from `settings`: the gateway and the
    agent deployment it calls."""
    # @serve.deployment makes these classes Deployments; Ray's annotations keep the plain classes, without `options`
    agents = AgentGraph.options(**agent_options(settings)).bind(settings)  # type: ignore[attr-defined]
    return Gateway.options(**deployment_options(settings)).bind(settings, start_engine, agents)  # type: ignore[attr-defined]


app = gateway_app(get_settings())
