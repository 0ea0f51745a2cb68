"""The portfolio manager's tools: holdings and allocation, diversification, risk, rebalancing,
activity and cash. Read-only by construction: nothing here can reach an order."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from agents import metrics, rebalance
from agents.deps import AgentDeps
from agents.tools.analyst import last_close_day
from agents.tools.registry import agent_tool, money, pct, plain, ratio
from brokerage import paper_rules as rules
from brokerage.errors import BrokerageError
from brokerage.models import BrokerPosition

AGENT = "portfolio_management"
UNKNOWN_SECTOR = "Unknown"
ZERO = Decimal(0)


def _value(deps: AgentDeps, position: BrokerPosition) -> Decimal:
    """Market value at the last price the feed knows; the broker's own figure when the feed has none."""
    last = deps.prices.last(position.symbol)
    if last is not None:
        return rules.cents(position.qty * rules.to_price(last.last))
    if position.market_value is not None:
        return rules.cents(position.market_value)
    return rules.cents(position.cost_basis)


def _sector(deps: AgentDeps, symbol: str) -> str:
    profile = deps.store.get_company_profile(symbol)
    if profile is None:
        return UNKNOWN_SECTOR
    return profile.sector or profile.industry or UNKNOWN_SECTOR


def _holdings(deps: AgentDeps, account_id: str) -> tuple[list[BrokerPosition], dict[str, Decimal], Decimal]:
    positions = [p for p in deps.broker.list_positions(account_id) if p.qty > 0]
    values = {p.symbol: _value(deps, p) for p in positions}
    cash = deps.broker.get_account(account_id).cash
    return positions, values, cash


def _sector_values(values: dict[str, Decimal], sector_of: dict[str, str]) -> dict[str, Decimal]:
    sectors: dict[str, Decimal] = {}
    for symbol, value in values.items():
        sectors[sector_of[symbol]] = sectors.get(sector_of[symbol], ZERO) + value
    return sectors


@agent_tool(AGENT)
def get_portfolio(deps: AgentDeps, account_id: str) -> dict[str, Any]:
    """Holdings of the account with their values, allocation by position and by sector, cash and total."""
    positions, values, cash = _holdings(deps, account_id)
    invested = sum(values.values(), ZERO)
    weights = metrics.allocation(values)
    sector_of = {symbol: _sector(deps, symbol) for symbol in values}
    sectors = _sector_values(values, sector_of)
    sector_weights = metrics.allocation(sectors)
    holdings = [
        {
            "symbol": p.symbol,
            "qty": plain(p.qty),
            "market_value": money(values[p.symbol]),
            "cost_basis": money(p.cost_basis),
            "unrealized_pl": money(values[p.symbol] - p.cost_basis),
            "weight_pct": pct(weights[p.symbol]),
            "sector": sector_of[p.symbol],
        }
        for p in sorted(positions, key=lambda p: values[p.symbol], reverse=True)
    ]
    return {
        "account_id": account_id,
        "total_value": money(invested + cash),
        "invested": money(invested),
        "cash": money(cash),
        "holdings": holdings,
        "sectors": [
            {"sector": s, "value": money(v), "weight_pct": pct(sector_weights[s])}
            for s, v in sorted(sectors.items(), key=lambda kv: kv[1], reverse=True)
        ],
        "sector_source": "company profiles in the store (sector, else the first listed industry)",
    }


@agent_tool(AGENT)
def diversification(deps: AgentDeps, account_id: str) -> dict[str, Any]:
    """How concentrated the account is: largest weight, HHI, number of sectors and a 1-10 diversification score."""
    _, values, _ = _holdings(deps, account_id)
    if not values:
        return {"account_id": account_id, "error": "the account holds no positions"}
    weights = metrics.allocation(values)
    sector_weights = metrics.allocation(_sector_values(values, {s: _sector(deps, s) for s in values}))
    largest, largest_weight = metrics.largest_weight(weights) or ("", 0.0)  # never None: there are positions
    hhi = metrics.hhi(weights)
    return {
        "account_id": account_id,
        "positions": len(values),
        "largest_position": largest,
        "largest_weight_pct": pct(largest_weight),
        "hhi": f"{hhi:.4f}",
        "effective_holdings": f"{1 / hhi:.2f}" if hhi > 0 else None,
        "sectors": len(sector_weights),
        "score": metrics.diversification_score(weights, sector_weights),
        "score_formula": metrics.diversification_score.__doc__,
    }


def _closes_by_symbol(deps: AgentDeps, symbols: list[str], start: Any, end: Any) -> dict[str, list[tuple[Any, float]]]:
    return {s: deps.history.closes(s, start, end) for s in symbols}


@agent_tool(AGENT)
def risk_metrics(deps: AgentDeps, account_id: str, period: str = "") -> dict[str, Any]:
    """Risk of the current holdings over a window: annualised volatility, beta against the market proxy,
    Sharpe ratio and max drawdown. `period`: "ytd" or N followed by d/w/m/y ("6m", "1y"); "" = last year."""
    positions, _, _ = _holdings(deps, account_id)
    if not positions:
        return {"account_id": account_id, "error": "the account holds no positions"}
    try:
        start, end = metrics.period_window(last_close_day(deps), period, "", "")
    except BrokerageError as exc:
        return {"account_id": account_id, "error": exc.message}
    closes = _closes_by_symbol(deps, [p.symbol for p in positions], start, end)
    missing = sorted(s for s, c in closes.items() if len(c) < 2)
    series = metrics.portfolio_series({p.symbol: p.qty for p in positions if p.symbol not in missing},
                                      {s: c for s, c in closes.items() if s not in missing})
    if len(series) < 2:
        return {"account_id": account_id, "error": f"not enough price history between {start} and {end}"}
    market = deps.history.market_closes(series[0][0], series[-1][0])
    values = [v for _, v in series]
    drawdown = metrics.max_drawdown(series)
    rf = float(deps.settings.risk_free_rate)
    return {
        "account_id": account_id,
        "start": series[0][0].isoformat(),
        "end": series[-1][0].isoformat(),
        "method": "today's holdings valued at each day's close over the window",
        "total_return_pct": pct(metrics.total_return(values)),
        "annualized_volatility_pct": pct(metrics.annualized_volatility(values)),
        "beta": ratio(metrics.beta(series, market)) if len(market) >= 2 else None,
        "sharpe": ratio(metrics.sharpe(values, rf)),
        "risk_free_rate_pct": pct(rf),
        "max_drawdown_pct": pct(drawdown.depth),
        "market": deps.history.market_label,
        "left_out": missing,
        "history_source": deps.history.source,
        "window_note": (
            f"asked from {start}; prices for every holding start on {series[0][0]}"
            if (series[0][0] - start).days > 7 else None
        ),
    }


@agent_tool(AGENT)
def rebalance_plan(deps: AgentDeps, account_id: str, target: str = "") -> dict[str, Any]:
    """Trades (whole-cent dollar amounts) that move the holdings toward `target`: "equal_weight" (default),
    "conservative", "balanced" or "aggressive". A plan only: nothing is ordered here."""
    positions, values, cash = _holdings(deps, account_id)
    if not positions:
        return {"account_id": account_id, "error": "the account holds no positions to rebalance"}
    goal = target or "equal_weight"
    start, end = metrics.period_window(last_close_day(deps), "1y", "", "")
    vols: dict[str, float] = {}
    for symbol, closes in _closes_by_symbol(deps, list(values), start, end).items():
        vol = metrics.annualized_volatility([c for _, c in closes])
        if vol is not None:
            vols[symbol] = vol
    try:
        plan = rebalance.plan(values, cash, goal, vols)
    except BrokerageError as exc:
        return {"account_id": account_id, "error": exc.message}
    return {
        "account_id": account_id,
        "target": goal,
        "trades": [{"symbol": t.symbol, "side": t.side, "notional": money(t.notional)} for t in plan.trades],
        "target_weights_pct": {s: pct(w) for s, w in plan.target_weights.items()},
        "current_weights_pct": {s: pct(w) for s, w in plan.current_weights.items()},
        "cash_after": money(plan.cash_after),
        "notes": plan.notes,
        "how_to_execute": "each trade is a separate order the person confirms with the trade agent",
    }


@agent_tool(AGENT)
def account_activity(deps: AgentDeps, account_id: str, kind: str = "") -> dict[str, Any]:
    """Account activity, newest first. `kind`: "" (everything), "trades" (purchase and sale history)
    or "cash" (deposits and withdrawals)."""
    if kind not in ("", "trades", "cash"):
        return {"error": f"kind must be '', 'trades' or 'cash', not {kind!r}"}
    activities = deps.broker.list_activities(account_id)
    if kind == "trades":
        activities = [a for a in activities if a.activity_type == "FILL"]
    elif kind == "cash":
        activities = [a for a in activities if a.activity_type != "FILL"]
    rows = [
        {
            "date": a.date.isoformat(),
            "type": a.activity_type,
            "symbol": a.symbol,
            "side": a.side,
            "qty": None if a.qty is None else plain(a.qty),
            "price": None if a.price is None else plain(a.price),
            "net_amount": money(a.net_amount),
            "description": a.description,
        }
        for a in activities[:50]
    ]
    bought = sum((-a.net_amount for a in activities if a.activity_type == "FILL" and a.side == "buy"), ZERO)
    sold = sum((a.net_amount for a in activities if a.activity_type == "FILL" and a.side == "sell"), ZERO)
    return {
        "account_id": account_id,
        "kind": kind or "all",
        "count": len(activities),
        "shown": len(rows),
        "total_bought": money(abs(bought)),
        "total_sold": money(abs(sold)),
        "activities": rows,
    }


@agent_tool(AGENT)
def cash_available(deps: AgentDeps, account_id: str) -> dict[str, Any]:
    """Cash in the account, what can be withdrawn, and the buying power available to invest."""
    account = deps.broker.get_account(account_id)
    return {
        "account_id": account_id,
        "cash": money(account.cash),
        "cash_withdrawable": money(account.cash_withdrawable),
        "buying_power": money(account.buying_power),
        "equity": money(account.equity),
    }
