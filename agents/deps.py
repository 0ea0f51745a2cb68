"""What the agents' tools read and act through, built once per process and handed to each run.

The graph itself holds no connections: a run finds its `AgentDeps` in `config["configurable"]`
(the runner puts it there), or, when LangGraph tooling runs the exported graph, builds the
process-wide default from the settings. The account a tool acts on is never a tool argument: it
is the thread's account, put in the run's configuration by the runner after the ownership check.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool

from agents.history import PriceHistory
from agents.symbols import SymbolResolver
from brokerage.broker import Broker
from brokerage.company_service import CompanyService
from brokerage.errors import Forbidden
from brokerage.prices import PriceReader
from brokerage.store import Store
from engine.clock import Clock
from engine.config import Settings, get_settings

DEPS_KEY = "clera_deps"
ACCOUNT_KEY = "account_id"
USER_KEY = "user_id"


@dataclass
class AgentDeps:
    settings: Settings
    broker: Broker
    store: Store
    prices: PriceReader
    history: PriceHistory
    clock: Clock
    resolver: SymbolResolver
    model: BaseChatModel
    company: CompanyService = None  # type: ignore[assignment]  # built from the settings and the store
    _bound: dict[str, Runnable[Any, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.company is None:
            self.company = CompanyService.from_settings(self.settings, self.store)

    def model_with(self, role: str, tools: Sequence[BaseTool]) -> Runnable[Any, Any]:
        """The model bound to a role's tools, converted once per process rather than on every call."""
        bound = self._bound.get(role)
        if bound is None:
            bound = self._bound[role] = self.model.bind_tools(tools)
        return bound


def deps_of(config: RunnableConfig) -> AgentDeps:
    configurable: dict[str, Any] = config.get("configurable") or {}
    deps = configurable.get(DEPS_KEY)
    return deps if deps is not None else default_deps()


def account_of(config: RunnableConfig) -> str:
    """The thread's account; a run without one cannot touch any account."""
    account = (config.get("configurable") or {}).get(ACCOUNT_KEY)
    if not isinstance(account, str) or not account:
        raise Forbidden("this conversation is not attached to an account", code="no_account")
    return account


@functools.cache
def default_deps() -> AgentDeps:
    """The deps of a process that only has the settings (the graph run by `langgraph` tooling)."""
    from agents.wiring import deps_from_settings  # a cycle: agents.wiring builds the AgentDeps of this module

    return deps_from_settings(get_settings())
