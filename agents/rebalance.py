"""Rebalancing plans: the trades that move the held positions to a risk profile's target, in exact cents.

A plan only reweights what the person already holds (it never picks new stocks) and keeps part of
the account in cash. Targets are fractions of the whole account (positions plus cash):

| target         | cash kept                 | invested part weighted by                  | cap per position |
|----------------|---------------------------|--------------------------------------------|------------------|
| `conservative` | 25% of the account        | inverse volatility (calmer stocks weigh more) | 30% of the account |
| `balanced`     | 10% of the account        | half equal weight, half inverse volatility | 40% of the account |
| `aggressive`   | 2% of the account         | equal weight                               | none             |
| `equal_weight` | today's cash, unchanged   | equal weight                               | none             |

A cap that binds (few holdings, or one very calm stock) hands the excess to the uncapped positions
pro rata; when every position is at its cap the rest stays in cash, since a cap is a limit on risk,
not a target to reach by other means. Volatility is annualised (from `metrics.annualized_volatility`);
a position without a usable one is given the median of the others (equal weight if none has one).

Money rules, so the plan can be sent to the broker as notional orders unchanged:
- every amount is a whole-cent `Decimal`; `cash_after + Σ values_after == total_value` exactly;
- sells come first, then buys, and the buys never spend more than the cash after the sells minus the
  reserve (they are scaled down when rounding or skipped sells would break that);
- target values are rounded to the cent (never adding up to more than the investable amount), buys
  down and sells up, so every position lands within a cent below its target unless its trade was
  skipped or scaled;
- a trade under $1 (the broker's minimum order) is skipped and listed in `notes`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Literal

import msgspec

from brokerage.errors import InvalidRequest
from brokerage.paper_rules import CENT, MIN_NOTIONAL

ZERO = Decimal(0)


class RiskProfile(msgspec.Struct, frozen=True):
    """`cash_reserve` and `max_position` are fractions of the account total; a None reserve keeps the
    current cash. `inverse_volatility` is the share of the invested weight set by inverse volatility
    (the rest is equal weight)."""

    name: str
    cash_reserve: Decimal | None
    inverse_volatility: Decimal
    max_position: Decimal | None
    summary: str


PROFILES: dict[str, RiskProfile] = {
    p.name: p
    for p in (
        RiskProfile("conservative", Decimal("0.25"), Decimal(1), Decimal("0.30"),
                    "25% cash, the rest weighted by inverse volatility, no position over 30%"),
        RiskProfile("balanced", Decimal("0.10"), Decimal("0.5"), Decimal("0.40"),
                    "10% cash, half equal weight and half inverse volatility, no position over 40%"),
        RiskProfile("aggressive", Decimal("0.02"), ZERO, None, "2% cash, the rest in equal weights"),
        RiskProfile("equal_weight", None, ZERO, None, "cash unchanged, the invested value in equal weights"),
    )
}


class Trade(msgspec.Struct, frozen=True):
    symbol: str
    side: Literal["buy", "sell"]
    notional: Decimal


class RebalancePlan(msgspec.Struct, frozen=True):
    """Weights are fractions of `total_value` (cash is what they leave); `target_values` are the whole-cent
    values aimed at, `values_after` what the trades reach; `cash_reserve` is the least cash the plan
    keeps when it buys anything."""

    target: str
    total_value: Decimal
    trades: list[Trade]
    current_weights: dict[str, float]
    target_weights: dict[str, float]
    target_values: dict[str, Decimal]
    values_after: dict[str, Decimal]
    cash_before: Decimal
    cash_reserve: Decimal
    cash_after: Decimal
    notes: list[str]


def plan(
    positions: Mapping[str, Decimal], cash: Decimal, target: str, volatilities: Mapping[str, float]
) -> RebalancePlan:
    """The trades from `positions` (symbol -> market value) and `cash` to the `target` profile."""
    profile = PROFILES.get(target)
    if profile is None:
        raise InvalidRequest(f"unknown rebalance target {target!r}; choose one of {', '.join(PROFILES)}",
                             details={"field": "target"})
    if cash < 0 or any(value < 0 for value in positions.values()):
        raise InvalidRequest("cash and position values must not be negative", details={"field": "positions"})
    held = {symbol: value for symbol, value in sorted(positions.items()) if value > 0}
    total = cash + sum(held.values(), ZERO)
    notes = [f"{profile.name}: {profile.summary}."]
    current = {s: float(v / total) for s, v in held.items()} if total > 0 else {}
    if profile.cash_reserve is None:
        reserve = cash
    else:
        reserve = min(total, (total * profile.cash_reserve).quantize(CENT, rounding=ROUND_UP))
    investable = total - reserve
    if not held or investable <= 0:
        notes.append("Nothing to invest after the cash reserve." if held else "Nothing to rebalance: no positions.")
        return RebalancePlan(profile.name, total, [], current, current, dict(held), dict(held), cash, reserve, cash,
                             notes)

    weights = _weights(list(held), profile, volatilities, notes)
    if profile.max_position is not None:
        cap = profile.max_position * total / investable
        weights = _capped(weights, cap)
        if all(w == cap for w in weights.values()):
            notes.append(f"Every position is at the {profile.max_position:.0%} cap; the rest stays in cash.")
    targets = _whole_cents({s: investable * weights[s] for s in held}, investable)

    sells: list[Trade] = []
    skipped: list[Trade] = []
    for symbol, value in held.items():
        if targets[symbol] < value:
            # Up to the cent, but never more than the whole cents held (a $0.00 target of $10.005).
            amount = min((value - targets[symbol]).quantize(CENT, rounding=ROUND_UP),
                         value.quantize(CENT, rounding=ROUND_DOWN))
            (sells if amount >= MIN_NOTIONAL else skipped).append(Trade(symbol, "sell", amount))
    wanted: list[Trade] = []
    for symbol, value in held.items():
        amount = (targets[symbol] - value).quantize(CENT, rounding=ROUND_DOWN)
        if amount > 0:
            (wanted if amount >= MIN_NOTIONAL else skipped).append(Trade(symbol, "buy", amount))
    available = cash + sum((t.notional for t in sells), ZERO) - reserve
    buys = _within(wanted, available, skipped, notes)
    if skipped:
        listed = ", ".join(f"{t.side} {t.symbol} ${t.notional}" for t in skipped)
        notes.append(f"Skipped trades under $1: {listed}.")

    after = dict(held)
    for trade in sells:
        after[trade.symbol] -= trade.notional
    for trade in buys:
        after[trade.symbol] += trade.notional
    cash_after = cash + sum((t.notional for t in sells), ZERO) - sum((t.notional for t in buys), ZERO)
    return RebalancePlan(
        target=profile.name,
        total_value=total,
        trades=sells + buys,
        current_weights=current,
        target_weights={s: float(t / total) for s, t in targets.items()},
        target_values=targets,
        values_after=after,
        cash_before=cash,
        cash_reserve=reserve,
        cash_after=cash_after,
        notes=notes,
    )


def _weights(
    symbols: list[str], profile: RiskProfile, volatilities: Mapping[str, float], notes: list[str]
) -> dict[str, Decimal]:
    """Weights of the invested part, summing to 1, in Decimal so the money computed from them is exact."""
    n = Decimal(len(symbols))
    equal = dict.fromkeys(symbols, 1 / n)
    if profile.inverse_volatility == 0:
        return equal
    usable = {s: v for s in symbols if (v := volatilities.get(s)) is not None and math.isfinite(v) and v > 0}
    if not usable:
        notes.append("No volatility known for any position: equal weights used instead of inverse volatility.")
        return equal
    missing = [s for s in symbols if s not in usable]
    if missing:
        fill = statistics.median(usable.values())
        notes.append(f"No volatility for {', '.join(missing)}: the median of the others ({fill:.1%}) is assumed.")
        usable.update(dict.fromkeys(missing, fill))
    inverse = {s: 1 / Decimal(repr(usable[s])) for s in symbols}
    norm = sum(inverse.values(), ZERO)
    k = profile.inverse_volatility
    return {s: (1 - k) * equal[s] + k * inverse[s] / norm for s in symbols}


def _whole_cents(values: dict[str, Decimal], limit: Decimal) -> dict[str, Decimal]:
    """Values to the nearest cent (so a weight that Decimal division left a hair under 0.4 still gives
    $3,000.00, not $2,999.99), then any cents rounding added beyond `limit` taken back, one at a time
    from the largest value."""
    cents = {s: v.quantize(CENT) for s, v in values.items()}
    while sum(cents.values(), ZERO) > limit:
        largest = max(cents, key=lambda s: (cents[s], s))
        cents[largest] -= CENT
    return cents


def _capped(weights: dict[str, Decimal], cap: Decimal) -> dict[str, Decimal]:
    """Weights with none above `cap`: the excess goes to the uncapped ones pro rata, repeatedly, until
    nothing is over; if all are capped they sum to less than 1 and the rest is cash."""
    fixed: dict[str, Decimal] = {}
    free = dict(weights)
    while free:
        room = 1 - sum(fixed.values(), ZERO)
        free_total = sum(free.values(), ZERO)
        scaled = {s: w * room / free_total for s, w in free.items()}
        over = [s for s, w in scaled.items() if w > cap]
        if not over:
            return {**fixed, **scaled}
        for s in over:
            fixed[s] = cap
            del free[s]
    return fixed


def _within(wanted: list[Trade], available: Decimal, skipped: list[Trade], notes: list[str]) -> list[Trade]:
    """The buys scaled down pro rata (to the cent, down) when they would spend more than `available`."""
    need = sum((t.notional for t in wanted), ZERO)
    if need <= available:
        return wanted
    if available <= 0:
        notes.append(f"No buys: the ${need} they need would dip into the cash reserve.")
        return []
    notes.append(f"Buys scaled down from ${need} to the ${available} available above the cash reserve.")
    buys = []
    for trade in wanted:
        amount = (trade.notional * available / need).quantize(CENT, rounding=ROUND_DOWN)
        if amount >= MIN_NOTIONAL:
            buys.append(Trade(trade.symbol, "buy", amount))
        elif amount > 0:
            skipped.append(Trade(trade.symbol, "buy", amount))
    return buys
