"""`Broker` on Alpaca's Broker API through alpaca-py's `BrokerClient`.

Every call goes through alpaca-py; what comes back is turned into `brokerage.models` types (amounts
as `Decimal`) and every failure into a `brokerage.errors` type, so the gateway never sees an SDK or
`requests` exception. Known gaps of the SDK are handled here rather than worked around by callers:

- ACH relationship lists: the SDK's status enum knows only QUEUED/APPROVED/PENDING, so a list that
  holds a CANCELED or CANCEL_REQUESTED relationship (every account that ever replaced its bank link)
  fails to parse. Lists are therefore read raw through the client's own transport and mapped field
  by field, tolerating unknown statuses and missing optional fields.
- Non-UUID ids are refused by the SDK before any request (`ValueError`). They name nothing, so each
  method checks its ids first (`_id`) and answers `NotFound`, as for an unknown UUID; any other
  `ValueError` the SDK raises during a call comes from reading Alpaca's answer (`broker_protocol`).
- A 409 means different things per call: on a second ACH relationship it is `ach_relationship_exists`,
  on an account application `email_in_use`, the codes the paper broker gives for the same refusals.
- The SDK's session has no timeout: a default one is mounted so a hung connection ends as `Unavailable`.
- There is no GET for one transfer and no spec'd lookup by client order id: both are found by listing.

Idempotency: orders carry `client_order_id`; a retried `submit_order` whose first attempt landed is
answered with the existing order. Transfers and close-all take no idempotency key at Alpaca, so a
caller that must not repeat one (account closure) checks first: `list_transfers` for a transfer of
that amount and direction still open, `list_positions` before `close_all_positions` (close-all on an
account with no positions left answers an empty list, so repeating it is harmless).

The SDK sends order quantities as JSON numbers (floats); amounts with up to 15 significant digits
(cents, 9-decimal fractional shares) survive that exactly. Methods are blocking; run them off the
event loop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar, cast
from zoneinfo import ZoneInfo

import requests
from alpaca.broker.client import BrokerClient
from alpaca.broker.enums import BankAccountType, TransferDirection, TransferTiming
from alpaca.broker.models import Account, TradeAccount
from alpaca.broker.models import Agreement as SdkAgreement
from alpaca.broker.models import Contact as SdkContact
from alpaca.broker.models import Disclosures as SdkDisclosures
from alpaca.broker.models import Identity as SdkIdentity
from alpaca.broker.requests import (
    CreateAccountRequest,
    CreateACHRelationshipRequest,
    CreateACHTransferRequest,
    CreatePlaidRelationshipRequest,
    GetAccountActivitiesRequest,
    LimitOrderRequest,
    ListAccountsRequest,
    MarketOrderRequest,
)
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import ClosePositionResponse, NonTradeActivity, Position, TradeActivity
from alpaca.trading.models import Order as SdkOrder
from alpaca.trading.requests import GetOrdersRequest
from pydantic import BaseModel, ValidationError
from requests.adapters import HTTPAdapter

from brokerage.errors import BrokerageError, Conflict, InvalidRequest, NotFound, Rejected, Unavailable
from brokerage.models import (
    AccountApplication,
    AchRelationship,
    Activity,
    BrokerAccount,
    BrokerPosition,
    CloseResult,
    ManualAchRequest,
    Order,
    OrderRequest,
    Transfer,
)
from brokerage.store import normalize_email
from engine.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")
# alpaca-py's methods are typed `Model | RawData`; with raw_data off (the default, as here) the answer is the model,
# which the casts below tell mypy.
CENT = Decimal("0.01")
NEW_YORK = ZoneInfo("America/New_York")
DAY_BOOKED_AT = dt.time(16, 0)  # a date-only activity counts as of that day's close in New York
ORDER_LIST_LIMIT = 500  # Alpaca's maximum page; the default of 50 would hide older orders


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request of the SDK's session a timeout (alpaca-py sets none)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    # HTTPAdapter.send spells out its keyword arguments; this passes them all through, adding only a timeout
    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        kwargs["timeout"] = kwargs.get("timeout") or self._timeout_s
        return super().send(request, **kwargs)


class AlpacaBroker:
    """The `Broker` protocol on one Alpaca Broker API partner account.

    Keys come from BROKER_API_KEY/BROKER_SECRET_KEY; ALPACA_ENVIRONMENT picks sandbox or live, and
    CLERA_ALPACA_BROKER_URL (a stand-in, a proxy) overrides both. `on_change` hears the account ids
    whose positions or cash an order call may have moved (e.g. a `HoldingsNotifier`, so the live
    portfolio re-syncs right after a trade instead of waiting for the periodic re-sync).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        on_change: Callable[[list[str]], None] | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        if not (settings.broker_api_key and settings.broker_secret_key):
            raise Unavailable("Alpaca is not configured: set BROKER_API_KEY and BROKER_SECRET_KEY",
                              code="broker_not_configured")
        self._client = BrokerClient(
            settings.broker_api_key,
            settings.broker_secret_key,
            sandbox=settings.alpaca_environment == "sandbox",
            url_override=settings.alpaca_broker_url,
        )
        adapter = _TimeoutAdapter(timeout_s)
        self._client._session.mount("https://", adapter)
        self._client._session.mount("http://", adapter)
        self._on_change = on_change

    # --- accounts ---------------------------------------------------------------------------
    def create_account(self, application: AccountApplication) -> BrokerAccount:
        request = _build("account application", lambda: _account_request(application))
        account = self._call("create account", self._client.create_account, request, conflict_code="email_in_use")
        return _account_from(cast(Account, account), None)

    def get_account(self, account_id: str) -> BrokerAccount:
        _id(account_id, "account")
        account = self._call(f"account {account_id}", self._client.get_account_by_id, account_id)
        trade = self._call(f"account {account_id}", self._client.get_trade_account_by_id, account_id)
        return _account_from(cast(Account, account), cast(TradeAccount, trade))

    def find_account_by_email(self, email: str) -> BrokerAccount | None:
        """Through Alpaca's account search, which matches tokens anywhere: the exact email is picked here."""
        wanted = normalize_email(email)
        if wanted is None:
            return None
        query = _build("account search", lambda: ListAccountsRequest(query=wanted))
        for account in cast(list[Account], self._call("account search", self._client.list_accounts, query)):
            if account.contact and normalize_email(account.contact.email_address) == wanted:
                return self.get_account(str(account.id))  # with its balances, which the search leaves out
        return None

    def close_account(self, account_id: str) -> BrokerAccount:
        _id(account_id, "account")
        self._call(f"close account {account_id}", self._client.close_account, account_id)
        return self.get_account(account_id)

    # --- bank links -------------------------------------------------------------------------
    def list_ach_relationships(self, account_id: str) -> list[AchRelationship]:
        path_id = _id(account_id, "account")
        raw = self._call(f"ACH relationships of account {account_id}", self._client.get,
                         f"/accounts/{path_id}/ach_relationships")
        if not isinstance(raw, list):
            raise Unavailable("Alpaca answered an ACH relationship list that is not a list", code="broker_protocol")
        out = []
        for item in raw:
            rel = _ach_from_raw(item)
            if rel is None:
                log.warning("skipping an ACH relationship Alpaca sent without id/created_at: %r", item)
            else:
                out.append(rel)
        return out

    def create_ach_relationship(self, account_id: str, request: ManualAchRequest) -> AchRelationship:
        _id(account_id, "account")
        account = self._call(f"account {account_id}", self._client.get_account_by_id, account_id)
        owner = _account_from(cast(Account, account), None).owner_name
        if not owner:
            raise Rejected(f"account {account_id} has no owner name on file", code="no_owner_name")
        body = _build("ACH relationship", lambda: CreateACHRelationshipRequest(
            account_owner_name=owner,
            bank_account_type=BankAccountType(request.bank_account_type),
            bank_account_number=request.bank_account_number,
            bank_routing_number=request.bank_routing_number,
            nickname=request.nickname,
        ))
        rel = self._call(f"create ACH relationship for account {account_id}",
                         self._client.create_ach_relationship_for_account, account_id, body,
                         conflict_code="ach_relationship_exists")
        return _ach_from_model(cast(BaseModel, rel))

    def create_ach_relationship_from_processor_token(self, account_id: str, processor_token: str) -> AchRelationship:
        _id(account_id, "account")
        if not processor_token.strip():
            raise InvalidRequest("processor_token is empty", code="invalid_processor_token")
        body = _build("ACH relationship", lambda: CreatePlaidRelationshipRequest(processor_token=processor_token))
        rel = self._call(f"create ACH relationship for account {account_id}",
                         self._client.create_ach_relationship_for_account, account_id, body,
                         conflict_code="ach_relationship_exists")
        return _ach_from_model(cast(BaseModel, rel))

    def delete_ach_relationship(self, account_id: str, relationship_id: str) -> None:
        _id(account_id, "account")
        _id(relationship_id, "ACH relationship")
        self._call(f"ACH relationship {relationship_id}", self._client.delete_ach_relationship_for_account,
                   account_id, relationship_id)

    # --- transfers --------------------------------------------------------------------------
    def create_transfer(self, account_id: str, relationship_id: str, amount: Decimal, direction: str) -> Transfer:
        if direction not in ("INCOMING", "OUTGOING"):
            raise InvalidRequest(f"direction must be INCOMING or OUTGOING, not {direction!r}", code="invalid_direction")
        _check_cents(amount, "amount")
        _id(account_id, "account")
        _id(relationship_id, "ACH relationship")
        body = _build("transfer", lambda: CreateACHTransferRequest(
            amount=str(amount), direction=TransferDirection(direction), timing=TransferTiming.IMMEDIATE,
            relationship_id=_id(relationship_id, "ACH relationship"),
        ))
        transfer = self._call(f"create transfer for account {account_id}",
                              self._client.create_transfer_for_account, account_id, body)
        return _transfer_from(_dump(cast(BaseModel, transfer)))

    def get_transfer(self, account_id: str, transfer_id: str) -> Transfer:
        wanted = str(_id(transfer_id, "transfer"))
        for transfer in self.list_transfers(account_id):
            if transfer.id == wanted:
                return transfer
        raise NotFound(f"transfer {transfer_id} not found for account {account_id}", code="transfer_not_found")

    def list_transfers(self, account_id: str) -> list[Transfer]:
        _id(account_id, "account")
        transfers = self._call(f"transfers of account {account_id}", self._client.get_transfers_for_account, account_id)
        return [_transfer_from(_dump(t)) for t in cast(list[BaseModel], transfers)]

    def cancel_transfer(self, account_id: str, transfer_id: str) -> None:
        _id(account_id, "account")
        _id(transfer_id, "transfer")
        self._call(f"transfer {transfer_id}", self._client.cancel_transfer_for_account, account_id, transfer_id)

    # --- trading ----------------------------------------------------------------------------
    def submit_order(self, account_id: str, request: OrderRequest) -> Order:
        _id(account_id, "account")
        body = _build("order", lambda: _order_request(request))
        try:
            order = self._call(f"order for account {account_id}", self._client.submit_order_for_account,
                               account_id, body)
        except (Rejected, InvalidRequest, Conflict):
            if request.client_order_id is None:
                raise
            existing = self._find_by_client_id(account_id, request.client_order_id)
            if existing is None:
                raise
            return existing
        self._changed(account_id)
        return _order_from(_dump(cast(SdkOrder, order)), account_id)

    def get_order(self, account_id: str, order_id: str) -> Order:
        _id(account_id, "account")
        _id(order_id, "order")
        order = self._call(f"order {order_id}", self._client.get_order_for_account_by_id, account_id, order_id)
        return _order_from(_dump(cast(SdkOrder, order)), account_id)

    def list_orders(self, account_id: str, status: str = "all") -> list[Order]:
        if status not in ("open", "closed", "all"):
            raise InvalidRequest(f"status must be open, closed or all, not {status!r}", code="invalid_status")
        _id(account_id, "account")
        query = GetOrdersRequest(status=QueryOrderStatus(status), limit=ORDER_LIST_LIMIT)
        orders = self._call(f"orders of account {account_id}", self._client.get_orders_for_account, account_id, query)
        return [_order_from(_dump(o), account_id) for o in cast(list[SdkOrder], orders)]

    def cancel_order(self, account_id: str, order_id: str) -> None:
        _id(account_id, "account")
        _id(order_id, "order")
        self._call(f"order {order_id}", self._client.cancel_order_for_account_by_id, account_id, order_id)
        self._changed(account_id)

    def list_positions(self, account_id: str) -> list[BrokerPosition]:
        _id(account_id, "account")
        positions = self._call(f"positions of account {account_id}",
                               self._client.get_all_positions_for_account, account_id)
        return [_position_from(_dump(p)) for p in cast(list[Position], positions)]

    def close_all_positions(self, account_id: str) -> list[CloseResult]:
        """Cancels open orders first (they would hold the shares) and answers one line per position."""
        _id(account_id, "account")
        results = self._call(f"close positions of account {account_id}",
                             self._client.close_all_positions_for_account, account_id, cancel_orders=True)
        self._changed(account_id)
        return [_close_from(r) for r in cast(list[ClosePositionResponse], results)]

    def list_activities(self, account_id: str) -> list[Activity]:
        """Fills (`FILL`) and cash movements (`CSD`/`CSW`, ...), newest first."""
        query = GetAccountActivitiesRequest(account_id=_id(account_id, "account"))
        activities = self._call(f"activities of account {account_id}", self._client.get_account_activities, query)
        return [_activity_from(a) for a in cast(list[TradeActivity | NonTradeActivity], activities)]

    # --- plumbing ---------------------------------------------------------------------------
    def _changed(self, account_id: str) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change([account_id])
        except Exception:  # the trade stands; the periodic re-sync catches up
            log.exception("on_change hook failed for account %s", account_id)

    def _find_by_client_id(self, account_id: str, client_order_id: str) -> Order | None:
        for order in self.list_orders(account_id, "all"):
            if order.client_order_id == client_order_id:
                return order
        return None

    def _call(
        self, what: str, fn: Callable[..., T], *args: Any, conflict_code: str | None = None, **kwargs: Any
    ) -> T:
        """One SDK call; `conflict_code` names what Alpaca's 409 means for this call.

        Ids are checked (`_id`) and requests built (`_build`) before this, so a `ValueError` raised
        in here is alpaca-py failing to read Alpaca's answer, not the caller's input.
        """
        try:
            return fn(*args, **kwargs)
        except APIError as e:
            raise _from_api_error(e, what, conflict_code) from e
        except requests.JSONDecodeError as e:  # a RequestException too, but Alpaca did answer
            raise Unavailable(f"{what}: Alpaca answered a body that is not JSON", code="broker_protocol") from e
        except requests.RequestException as e:
            raise Unavailable(f"{what}: Alpaca is not reachable ({type(e).__name__})", code="broker_unreachable") from e
        except ValidationError as e:
            raise Unavailable(f"{what}: Alpaca answered in a shape alpaca-py cannot parse",
                              code="broker_protocol", details=_problems(e)) from e
        except ValueError as e:
            raise Unavailable(f"{what}: alpaca-py cannot read Alpaca's answer ({e})", code="broker_protocol") from e


# --- errors -------------------------------------------------------------------------------------
def _from_api_error(e: APIError, what: str, conflict_code: str | None = None) -> BrokerageError:
    status = e.status_code or 0
    try:
        body = json.loads(str(e))
        message, alpaca_code = str(body.get("message", body)), body.get("code")
    except (ValueError, AttributeError):
        message, alpaca_code = str(e)[:300], None
    text = f"{what}: {message}"
    details = {"alpaca_status": status, "alpaca_code": alpaca_code}
    if status == 404:
        return NotFound(text, details=details)
    if status == 409:
        return Conflict(text, code=conflict_code, details=details)
    if status in (403, 422):
        return Rejected(text, details=details)
    if status == 400:
        return InvalidRequest(text, details=details)
    if status == 401:
        return Unavailable(f"{what}: Alpaca refused our credentials (check BROKER_API_KEY/BROKER_SECRET_KEY)",
                           code="broker_unauthorized", details=details)
    return Unavailable(f"{what}: Alpaca answered {status}: {message}", code="broker_unavailable", details=details)


def _build(what: str, make: Callable[[], T]) -> T:
    """Builds an SDK request; its validation errors are the caller's bad input."""
    try:
        return make()
    except ValidationError as e:
        raise InvalidRequest(f"invalid {what}: {_problems(e)[0]['message']}", details=_problems(e)) from e
    except ValueError as e:
        raise InvalidRequest(f"invalid {what}: {e}") from e


def _problems(e: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as plain JSON (its `ctx` may hold exception objects the gateway cannot encode)."""
    return [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in e.errors()]


def _id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{what} {value!r} not found", code="not_found") from None


def _check_cents(amount: Decimal, name: str) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0 or amount != amount.quantize(CENT):
        raise InvalidRequest(f"{name} must be a positive amount in whole cents, not {amount}", code="invalid_amount")


# --- requests -----------------------------------------------------------------------------------
def _account_request(a: AccountApplication) -> CreateAccountRequest:
    return CreateAccountRequest(
        contact=SdkContact(
            email_address=a.contact.email_address, phone_number=a.contact.phone_number,
            street_address=a.contact.street_address, city=a.contact.city, state=a.contact.state,
            postal_code=a.contact.postal_code, country=a.contact.country,
        ),
        identity=SdkIdentity(
            given_name=a.identity.given_name, family_name=a.identity.family_name,
            date_of_birth=a.identity.date_of_birth.isoformat(), tax_id=a.identity.tax_id,
            country_of_citizenship=a.identity.country_of_citizenship, country_of_birth=a.identity.country_of_birth,
            country_of_tax_residence=a.identity.country_of_tax_residence,
            # free strings here: the SDK's pydantic model turns them into its enums and refuses an unknown one,
            # which `_build` reports as the caller's bad input
            tax_id_type=a.identity.tax_id_type,  # type: ignore[arg-type]
            funding_source=a.identity.funding_source,  # type: ignore[arg-type]
        ),
        disclosures=SdkDisclosures(
            is_control_person=a.disclosures.is_control_person,
            is_affiliated_exchange_or_finra=a.disclosures.is_affiliated_exchange_or_finra,
            is_politically_exposed=a.disclosures.is_politically_exposed,
            immediate_family_exposed=a.disclosures.immediate_family_exposed,
        ),
        agreements=[
            SdkAgreement(  # a free string the SDK's model checks against its enum, as above
                agreement=g.agreement, ip_address=g.ip_address, signed_at=_rfc3339(g.signed_at)  # type: ignore[arg-type]
            )
            for g in a.agreements
        ],
    )


def _order_request(r: OrderRequest) -> MarketOrderRequest | LimitOrderRequest:
    if (r.qty is None) == (r.notional is None):
        raise InvalidRequest("give exactly one of qty or notional", code="invalid_order")
    if r.qty is not None and (not r.qty.is_finite() or r.qty <= 0):
        raise InvalidRequest(f"qty must be positive, not {r.qty}", code="invalid_order")
    if r.notional is not None:
        _check_cents(r.notional, "notional")
        if r.type != "market":
            raise InvalidRequest("notional orders must be market orders", code="invalid_order")
    common: dict[str, Any] = {
        "symbol": r.symbol, "side": r.side, "time_in_force": r.time_in_force,
        "client_order_id": r.client_order_id or str(uuid.uuid4()),
        "qty": None if r.qty is None else float(r.qty),
        "notional": None if r.notional is None else float(r.notional),
    }
    if r.type == "limit":
        if r.limit_price is None or not r.limit_price.is_finite() or r.limit_price <= 0:
            raise InvalidRequest("a limit order needs a positive limit_price", code="invalid_order")
        return LimitOrderRequest(limit_price=float(r.limit_price), **common)
    return MarketOrderRequest(**common)


# --- answers ------------------------------------------------------------------------------------
def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _dec(value: Any) -> Decimal | None:
    """Alpaca's decimal strings exactly; floats (some SDK fields) via their shortest repr."""
    if value is None or value == "":
        return None
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
    except InvalidOperation:
        raise Unavailable(f"Alpaca sent {value!r} where a number belongs", code="broker_protocol") from None


def _dec0(value: Any) -> Decimal:
    amount = _dec(value)
    return Decimal(0) if amount is None else amount


def _time(value: Any) -> dt.datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = _booked(value)
    else:
        text = str(value)
        parsed = dt.datetime.fromisoformat(text) if "T" in text or " " in text else _booked(dt.date.fromisoformat(text))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _booked(day: dt.date) -> dt.datetime:
    """Alpaca books non-trade activities (deposits, dividends) by New York date: pin them inside that session."""
    return dt.datetime.combine(day, DAY_BOOKED_AT, tzinfo=NEW_YORK).astimezone(dt.UTC)


def _rfc3339(t: dt.datetime) -> str:
    return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _enum(value: Any) -> str:
    return str(getattr(value, "value", value))


def _account_from(account: Account, trade: TradeAccount | None) -> BrokerAccount:
    identity, contact = account.identity, account.contact
    owner = " ".join(p for p in (identity.given_name, identity.family_name) if p) if identity else None
    money: dict[str, Any] = {}
    if trade is not None:
        money = {
            "cash": _dec0(trade.cash),
            "cash_withdrawable": _dec0(trade.cash_withdrawable),
            "equity": _dec0(trade.equity),
            "buying_power": _dec0(trade.buying_power),
            "pattern_day_trader": bool(trade.pattern_day_trader),
            "daytrade_count": trade.daytrade_count or 0,
        }
    last_equity = _dec(trade.last_equity) if trade is not None else None
    if last_equity is None:
        last_equity = _dec0(account.last_equity)
    created = _time(account.created_at)
    assert created is not None  # required by the SDK's model
    return BrokerAccount(
        id=str(account.id), account_number=account.account_number, status=_enum(account.status),
        currency=account.currency or "USD", created_at=created,
        email=contact.email_address if contact else None, owner_name=owner or None,
        last_equity=last_equity, **money,
    )


def _ach_from_model(model: BaseModel) -> AchRelationship:
    rel = _ach_from_raw(_dump(model))
    if rel is None:
        raise Unavailable("Alpaca answered an ACH relationship without id", code="broker_protocol")
    return rel


def _ach_from_raw(item: Any) -> AchRelationship | None:
    """Field by field, any status string accepted: this is where the SDK's enum gap is closed."""
    if not isinstance(item, dict) or not item.get("id") or not item.get("created_at"):
        return None
    created = _time(item["created_at"])
    assert created is not None
    return AchRelationship(
        id=str(item["id"]), account_id=str(item.get("account_id") or ""), status=str(item.get("status") or "UNKNOWN"),
        account_owner_name=str(item.get("account_owner_name") or ""),
        bank_account_type=str(item.get("bank_account_type") or ""),
        bank_account_number=str(item.get("bank_account_number") or ""),
        bank_routing_number=str(item.get("bank_routing_number") or ""),
        nickname=item.get("nickname"), bank_name=item.get("bank_name"),
        created_at=created, updated_at=_time(item.get("updated_at")) or created,
    )


def _transfer_from(d: dict[str, Any]) -> Transfer:
    created = _time(d["created_at"])
    assert created is not None
    return Transfer(
        id=str(d["id"]), account_id=str(d["account_id"]), relationship_id=d.get("relationship_id"),
        amount=_dec0(d["amount"]), direction=str(d["direction"]), status=str(d["status"]),
        type=str(d.get("type") or "ach"), reason=d.get("reason"),
        created_at=created, updated_at=_time(d.get("updated_at")) or created,
    )


def _order_from(d: dict[str, Any], account_id: str) -> Order:
    created = _time(d["created_at"])
    assert created is not None
    return Order(
        id=str(d["id"]), client_order_id=d["client_order_id"], account_id=account_id,
        symbol=d.get("symbol") or "", side=d.get("side") or "", type=d.get("type") or d.get("order_type") or "",
        time_in_force=d["time_in_force"], status=d["status"], qty=_dec(d.get("qty")),
        notional=_dec(d.get("notional")), limit_price=_dec(d.get("limit_price")),
        filled_qty=_dec0(d.get("filled_qty")), filled_avg_price=_dec(d.get("filled_avg_price")),
        created_at=created, updated_at=_time(d.get("updated_at")) or created,
        submitted_at=_time(d.get("submitted_at")), filled_at=_time(d.get("filled_at")),
    )


def _position_from(d: dict[str, Any]) -> BrokerPosition:
    return BrokerPosition(
        symbol=d["symbol"], qty=_dec0(d["qty"]),
        avg_entry_price=_dec0(d["avg_entry_price"]), cost_basis=_dec0(d["cost_basis"]),
        current_price=_dec(d.get("current_price")), market_value=_dec(d.get("market_value")),
        lastday_price=_dec(d.get("lastday_price")), qty_available=_dec(d.get("qty_available")),
    )


def _close_from(r: ClosePositionResponse) -> CloseResult:
    body = _dump(r.body)
    order_id = r.order_id or body.get("id")
    return CloseResult(
        symbol=r.symbol or body.get("symbol") or "", status=r.status or 0,
        order_id=None if order_id is None else str(order_id), message=body.get("message"),
    )


def _activity_from(a: TradeActivity | NonTradeActivity) -> Activity:
    d = _dump(a)
    if isinstance(a, TradeActivity):
        qty, price = _dec0(a.qty), _dec0(a.price)
        gross = (qty * price).quantize(CENT, ROUND_HALF_UP)
        when = _time(a.transaction_time)
        assert when is not None
        return Activity(
            id=a.id, account_id=str(a.account_id), activity_type=_enum(a.activity_type), date=when,
            net_amount=-gross if _enum(a.side) == "buy" else gross, symbol=a.symbol, side=_enum(a.side),
            qty=qty, price=price, order_id=str(a.order_id), status=_enum(a.order_status),
        )
    when = _time(d["date"])
    assert when is not None
    return Activity(
        id=a.id, account_id=str(a.account_id), activity_type=_enum(a.activity_type), date=when,
        net_amount=_dec0(a.net_amount), symbol=a.symbol, qty=_dec(a.qty), price=_dec(a.price),
        status=None if a.status is None else _enum(a.status), description=a.description,
    )
