"""The paper broker's rules as pure functions: input checks, rounding, settlement and ACH timing.

Kept free of I/O so the rules can be read (and tested) on their own; `brokerage.paper` applies
them inside its SQL transactions.

Timing (all on the injected market clock):
- The *current session* is the latest NYSE trading day whose open has passed. Fills, transfers
  and day trades are stamped with it, so after Monday's close "today" is still Monday until
  Tuesday's open.
- Sale proceeds settle T+1: on the next trading day after the fill's session (New York date).
- An ACH transfer is QUEUED when created, SENT_TO_CLEARING at the ACH cut-off (the last session
  close before it completes, or at once if that close has passed) and COMPLETE at the first market
  open after its creation. A deposit's cash is usable only then; a withdrawal's cash leaves the
  account when it is created (and comes back if it is cancelled while still QUEUED).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from zoneinfo import ZoneInfo

import msgspec

from brokerage.errors import InvalidRequest
from brokerage.models import AccountApplication, OrderRequest
from engine import calendar

UTC = dt.UTC
NEW_YORK = ZoneInfo("America/New_York")
CENT = Decimal("0.01")
NANO = Decimal("0.000000001")
PRICE_STEP = Decimal("0.0001")
MAX_AMOUNT = Decimal("1000000000")  # one billion dollars: above it an amount is a typo, not a trade
MIN_NOTIONAL = Decimal("1")  # the smallest order value, by notional or qty x price
CLOSE_ACCOUNT_MAX_CASH = Decimal("1.00")
PDT_WINDOW_DAYS = 5
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")


# --- money and quantities ---------------------------------------------------------------------
def cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def shares_down(value: Decimal) -> Decimal:
    """Fractional shares are kept to 9 decimals; a notional order never buys more than it pays for."""
    return value.quantize(NANO, rounding=ROUND_DOWN)


def to_price(value: float) -> Decimal:
    """A feed price (float) as a ledger price: 4 decimals, the finest NYSE increment (sub-dollar)."""
    return Decimal(repr(value)).quantize(PRICE_STEP, rounding=ROUND_HALF_UP)


def _decimal(value: object, field: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, str)):
        raise InvalidRequest(f"{field} must be a decimal number", details={"field": field})
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise InvalidRequest(f"{field} must be a decimal number", details={"field": field}) from None
    if not number.is_finite():
        raise InvalidRequest(f"{field} must be a finite number", details={"field": field})
    return number


def _decimals(number: Decimal) -> int:
    exponent = number.normalize().as_tuple().exponent
    return -exponent if isinstance(exponent, int) and exponent < 0 else 0


def check_amount(value: object, field: str = "amount") -> Decimal:
    """A positive dollar amount with at most two decimals (cents), returned quantized to cents."""
    number = _decimal(value, field)
    if number <= 0:
        raise InvalidRequest(f"{field} must be greater than zero", details={"field": field})
    if _decimals(number) > 2:
        raise InvalidRequest(f"{field} must have at most 2 decimals (whole cents)", details={"field": field})
    if number > MAX_AMOUNT:
        raise InvalidRequest(f"{field} must not exceed {MAX_AMOUNT}", details={"field": field})
    return number.quantize(CENT)


def check_qty(value: object) -> Decimal:
    number = _decimal(value, "qty")
    if number <= 0:
        raise InvalidRequest("qty must be greater than zero", details={"field": "qty"})
    if _decimals(number) > 9:
        raise InvalidRequest("qty must have at most 9 decimals", details={"field": "qty"})
    if number > MAX_AMOUNT:
        raise InvalidRequest(f"qty must not exceed {MAX_AMOUNT}", details={"field": "qty"})
    return number.quantize(NANO).normalize()


def check_notional(value: object) -> Decimal:
    number = check_amount(value, "notional")
    if number < MIN_NOTIONAL:
        raise InvalidRequest(f"notional must be at least ${MIN_NOTIONAL}", details={"field": "notional"})
    return number


def check_limit_price(value: object) -> Decimal:
    """Positive; whole cents from $1 up, up to 4 decimals below $1 (the sub-penny rule)."""
    number = _decimal(value, "limit_price")
    if number <= 0:
        raise InvalidRequest("limit_price must be greater than zero", details={"field": "limit_price"})
    allowed = 2 if number >= 1 else 4
    if _decimals(number) > allowed:
        raise InvalidRequest(
            f"limit_price must have at most {allowed} decimals at this price", details={"field": "limit_price"}
        )
    if number > MAX_AMOUNT:
        raise InvalidRequest(f"limit_price must not exceed {MAX_AMOUNT}", details={"field": "limit_price"})
    return number


def check_symbol(value: object) -> str:
    symbol = value.strip().upper() if isinstance(value, str) else ""
    if not _SYMBOL.match(symbol):
        raise InvalidRequest(f"invalid symbol {value!r}", details={"field": "symbol"})
    return symbol


# --- orders -------------------------------------------------------------------------------------
class OrderInput(msgspec.Struct, kw_only=True):
    """An order request after validation: normalised symbol, exact amounts, a client order id."""

    symbol: str
    side: str
    type: str
    time_in_force: str
    client_order_id: str
    qty: Decimal | None = None
    notional: Decimal | None = None
    limit_price: Decimal | None = None


def check_order(request: OrderRequest) -> OrderInput:
    symbol = check_symbol(request.symbol)
    if request.side not in ("buy", "sell"):
        raise InvalidRequest("side must be buy or sell", details={"field": "side"})
    if request.type not in ("market", "limit"):
        raise InvalidRequest("type must be market or limit", details={"field": "type"})
    if request.time_in_force not in ("day", "gtc"):
        raise InvalidRequest("time_in_force must be day or gtc", details={"field": "time_in_force"})
    if (request.qty is None) == (request.notional is None):
        raise InvalidRequest("give exactly one of qty and notional", details={"field": "qty"})
    qty = check_qty(request.qty) if request.qty is not None else None
    notional = check_notional(request.notional) if request.notional is not None else None
    limit_price = None
    if request.type == "limit":
        if notional is not None:
            raise InvalidRequest("notional is only for market orders", details={"field": "notional"})
        if request.limit_price is None:
            raise InvalidRequest("a limit order needs limit_price", details={"field": "limit_price"})
        limit_price = check_limit_price(request.limit_price)
    elif request.limit_price is not None:
        raise InvalidRequest("limit_price is only for limit orders", details={"field": "limit_price"})
    client_id = request.client_order_id
    if client_id is not None and (not isinstance(client_id, str) or not 1 <= len(client_id) <= 128):
        raise InvalidRequest("client_order_id must be 1-128 characters", details={"field": "client_order_id"})
    return OrderInput(
        symbol=symbol,
        side=request.side,
        type=request.type,
        time_in_force=request.time_in_force,
        client_order_id=client_id or str(uuid.uuid4()),
        qty=qty,
        notional=notional,
        limit_price=limit_price,
    )


# --- applications -----------------------------------------------------------------------------
def check_application(application: AccountApplication, today: dt.date) -> AccountApplication:
    """The application re-validated as its declared types, with the checks Alpaca makes on filing.
    `today` is a real-world date (age is not a replayed fact)."""
    try:
        app = msgspec.convert(msgspec.to_builtins(application), AccountApplication)
    except (msgspec.ValidationError, TypeError) as exc:
        raise InvalidRequest(f"invalid account application: {exc}") from None
    problems = []
    dob = app.identity.date_of_birth
    age = today.year - dob.year - ((today.month, today.day) < (dob.month, dob.day))
    if age < 18:
        problems.append("the applicant must be at least 18 years old")
    if age > 130:
        problems.append("date_of_birth is not plausible")
    if not app.identity.given_name.strip() or not app.identity.family_name.strip():
        problems.append("given_name and family_name must not be blank")
    if not any(a.agreement == "customer_agreement" for a in app.agreements):
        problems.append("the customer_agreement must be signed")
    if problems:
        raise InvalidRequest("invalid account application: " + "; ".join(problems), details=problems)
    return app


# --- time -------------------------------------------------------------------------------------
def new_york_date(moment: dt.datetime) -> dt.date:
    return moment.astimezone(NEW_YORK).date()


def current_session(moment: dt.datetime) -> dt.date:
    """The latest trading day whose open is at or before `moment`."""
    day = moment.astimezone(UTC).date()
    if not calendar.is_trading_day(day):
        day = calendar.previous_trading_day(day)
    if calendar.session_bounds(day)[0] > moment:
        day = calendar.previous_trading_day(day)
    return day


def next_open_after(moment: dt.datetime) -> dt.datetime:
    """The first session open strictly after `moment`."""
    day = moment.astimezone(UTC).date()
    if not calendar.is_trading_day(day):
        day = calendar.next_trading_day(day)
    opens = calendar.session_bounds(day)[0]
    if opens > moment:
        return opens
    return calendar.session_bounds(calendar.next_trading_day(day))[0]


def transfer_schedule(created: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(sent to clearing, complete) for an ACH transfer created at `created`."""
    complete = next_open_after(created)
    cutoff = calendar.session_bounds(calendar.previous_trading_day(complete.astimezone(UTC).date()))[1]
    return max(created, cutoff), complete


def settle_date(session: dt.date) -> dt.date:
    """T+1 on NYSE trading days."""
    return calendar.add_trading_days(session, 1)


def settles_at(day: dt.date) -> dt.datetime:
    """When proceeds settling on `day` become withdrawable: the start of that New York date."""
    return dt.datetime.combine(day, dt.time(), NEW_YORK).astimezone(UTC)


def pdt_window(session: dt.date) -> dt.date:
    """First session of the 5-trading-day window ending with `session`."""
    day = session
    for _ in range(PDT_WINDOW_DAYS - 1):
        day = calendar.previous_trading_day(day)
    return day


def session_close(session: dt.date) -> dt.datetime:
    return calendar.session_bounds(session)[1]
