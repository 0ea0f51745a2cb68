"""Holdings for the realtime engine from any `Broker` (engine.positions.PositionSource).

Start-of-session quantities and today's net cost are rebuilt from the broker's activities, so the
valuation measures a share bought today from its cost and a share sold today up to its sale
(see engine.types.Position). `HoldingsNotifier` is the broker's `on_change` hook: it announces
changed accounts on `holdings:changed` so `PositionSync` reloads just those.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from decimal import Decimal

import msgspec
import redis

from brokerage import paper_rules as rules
from brokerage.broker import Broker
from brokerage.errors import NotFound
from brokerage.models import Activity
from engine.clock import Clock
from engine.redis_keys import HOLDINGS_CHANNEL
from engine.types import AccountHoldings, Position

log = logging.getLogger(__name__)

ZERO = Decimal(0)


class BrokerPositionSource:
    """`account_ids` lists the accounts to load; by default the broker's own list (the paper broker has one)."""

    def __init__(
        self, broker: Broker, clock: Clock, account_ids: Callable[[], Iterable[str]] | None = None
    ) -> None:
        if account_ids is None:
            listing = getattr(broker, "list_account_ids", None)
            if listing is None:
                raise ValueError(f"{type(broker).__name__} cannot list its accounts: pass account_ids")
            account_ids = listing
        self.broker = broker
        self.clock = clock
        self._account_ids = account_ids

    def load_all(self, keep: Callable[[str], bool] | None = None) -> list[AccountHoldings]:
        return self.load([a for a in self._account_ids() if keep is None or keep(a)])

    def load(self, account_ids: Collection[str]) -> list[AccountHoldings]:
        out = []
        for account_id in account_ids:
            try:
                holdings = self.holdings(account_id)
            except NotFound:
                continue
            if holdings is not None:
                out.append(holdings)
        return out

    def holdings(self, account_id: str) -> AccountHoldings | None:
        """None for a closed account (it leaves the live portfolio).

        A broker that can answer directly (`PaperBroker.holdings`) is asked; any other Broker's
        holdings are rebuilt from its account, positions and activities.
        """
        direct = getattr(self.broker, "holdings", None)
        if direct is not None:
            held: AccountHoldings | None = direct(account_id)
            return held
        return holdings_from_activities(self.broker, self.clock, account_id)


def holdings_from_activities(broker: Broker, clock: Clock, account_id: str) -> AccountHoldings | None:
    """Holdings through the Broker protocol alone: today's fills turn positions into start-of-day ones."""
    account = broker.get_account(account_id)
    if account.status == "ACCOUNT_CLOSED":
        return None
    now = clock.now()
    session = rules.current_session(now)
    bought: dict[str, Decimal] = {}
    cost: dict[str, Decimal] = {}
    deposits = ZERO
    for act in broker.list_activities(account_id):
        if rules.current_session(act.date) != session:
            continue
        if act.activity_type == "FILL" and act.symbol and act.qty is not None:
            sign = 1 if act.side == "buy" else -1
            bought[act.symbol] = bought.get(act.symbol, ZERO) + sign * act.qty
            cost[act.symbol] = cost.get(act.symbol, ZERO) + sign * _fill_amount(act)
        elif act.activity_type in ("CSD", "CSW"):
            deposits += act.net_amount
    positions = []
    held = {p.symbol: p for p in broker.list_positions(account_id)}
    for symbol in sorted(set(held) | set(bought)):
        pos = held.get(symbol)
        qty = pos.qty if pos else ZERO
        positions.append(
            Position(
                symbol=symbol,
                qty=qty,
                start_qty=qty - bought.get(symbol, ZERO),
                net_cost_today=cost.get(symbol, ZERO),
                avg_entry_price=pos.avg_entry_price if pos else ZERO,
            )
        )
    return AccountHoldings(
        account_id=account_id,
        cash=account.cash,
        positions=positions,
        session=session.isoformat(),
        deposits_today=deposits,
        as_of=now.timestamp(),
    )


def _fill_amount(act: Activity) -> Decimal:
    """The cash a fill moved; brokers that leave net_amount empty on fills get qty x price."""
    if act.net_amount:
        return abs(act.net_amount)
    return rules.cents((act.qty or ZERO) * (act.price or ZERO))


class HoldingsNotifier:
    """`on_change` hook: publishes changed account ids as a JSON list on `holdings:changed`."""

    def __init__(self, redis_url: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)

    def __call__(self, account_ids: list[str]) -> None:
        if not account_ids:
            return
        try:
            self._client.publish(HOLDINGS_CHANNEL, msgspec.json.encode(sorted(account_ids)))
        except redis.RedisError:  # the ledger change stands; the next full sync picks it up
            log.exception("could not announce changed holdings for %s", account_ids)

    def close(self) -> None:
        self._client.close()
