"""The agents and the tools each one holds: the one list the graph, the offline model and the evaluation share.

Tool arguments follow the seed's lesson on tool calling: an optional argument defaults to "" or 0,
never None, because a model that sends null for a string breaks pydantic validation. Money and
share counts travel as decimal strings so an amount reaches the broker exactly as the person said it.
"""

from __future__ import annotations

from typing import Literal

AgentName = Literal["financial_analyst", "portfolio_management", "trade_execution"]
AGENTS: tuple[AgentName, ...] = ("financial_analyst", "portfolio_management", "trade_execution")
NO_AGENT = "none"

# The supervisor's one tool: which agents answer this turn, in order.
ROUTE_TOOL = "route"

# tool name -> the argument names it takes (all strings except where the tool's signature says)
ANALYST_TOOLS: tuple[str, ...] = ("company_profile", "get_quote", "stock_performance")
PORTFOLIO_TOOLS: tuple[str, ...] = (
    "get_portfolio",
    "diversification",
    "risk_metrics",
    "rebalance_plan",
    "account_activity",
    "cash_available",
)
TRADE_TOOLS: tuple[str, ...] = ("buy", "sell", "rebalance_orders")

TOOLS_OF: dict[str, tuple[str, ...]] = {
    "financial_analyst": ANALYST_TOOLS,
    "portfolio_management": PORTFOLIO_TOOLS,
    "trade_execution": TRADE_TOOLS,
}
# Only the trade agent may hold these; the graph refuses them anywhere else, whatever a model asks.
ORDER_TOOLS: frozenset[str] = frozenset(TRADE_TOOLS)
# The two that prepare a single order for confirmation.
SINGLE_ORDER_TOOLS: frozenset[str] = frozenset(("buy", "sell"))
