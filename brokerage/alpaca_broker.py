"""`Broker` on Alpaca's Broker API through alpaca-py's `BrokerClient`.

Every call goes through alpaca-py; what comes back is turned into `brokerage.models` types (amounts
as `Decimal`, `brokerage.alpaca_answers`) and every failure into a `brokerage.errors` type
(`brokerage.alpaca_errors`), so the gateway never sees an SDK or `requests` exception; requests are
built and checked in `brokerage.alpaca_requests`. Known gaps of the SDK are handled here rather than
worked around by callers:

- ACH relationship lists: the SDK's status enum knows only QUEUED/APPROVED/PENDING, so a list that
  holds a CANCELED or CANCEL_REQUESTED relationship (every account that ever replaced its bank link)
  fails to parse. Lists are therefore read raw through the client's own transport and mapped field
  by field, tolerating unknown statuses and missing optional fields.
- Non-UUID ids are refused by the SDK before any request (`ValueError`). They name nothing, so each
  method checks its ids first (`uuid_of`) and answers `NotFound`, as for an unknown UUID; any other
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

import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any, cast

import requests
from alpaca.broker.client import BrokerClient
from alpaca.broker.enums import BankAccountType, TransferDirection, TransferTiming
from alpaca.broker.models import Account, TradeAccount
from alpaca.broker.requests import (
    CreateACHRelationshipRequest,
    CreateACHTransferRequest,
    CreatePlaidRelationshipRequest,
    GetAccountActivitiesRequest,
    ListAccountsRequest,
)
from alpaca.trading.enums import QueryOrderStatus
from alpaca.trading.models import ClosePositionResponse, NonTradeActivity, Position, TradeActivity
from alpaca.trading.models import Order as SdkOrder
from alpaca.trading.requests import GetOrdersRequest
from pydantic import BaseModel
from requests.adapters import HTTPAdapter

from brokerage import models
from brokerage.alpaca_answers import (
    account_from,
    ach_from_model,
    ach_from_raw,
    activity_from,
    close_from,
    dump,
    order_from,
    position_from,
    transfer_from,
)
from brokerage.alpaca_errors import build, check_cents, sdk_call, uuid_of
from brokerage.alpaca_requests import account_request, order_request
from brokerage.errors import Conflict, InvalidRequest, NotFound, Rejected, Unavailable
from brokerage.store import normalize_email
from engine.config import Settings

log = logging.getLogger(__name__)
# alpaca-py's methods are typed `Model | RawData`; with raw_data off (the default, as here) the answer is the
# model, which the casts below tell mypy.
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
    def create_account(self, application: models.AccountApplication) -> models.BrokerAccount:
        request = build("account application", lambda: account_request(application))
        account = sdk_call("create account", self._client.create_account, request, conflict_code="email_in_use")
        return account_from(cast(Account, account), None)

    def get_account(self, account_id: str) -> models.BrokerAccount:
        uuid_of(account_id, "account")
        account = sdk_call(f"account {account_id}", self._client.get_account_by_id, account_id)
        trade = sdk_call(f"account {account_id}", self._client.get_trade_account_by_id, account_id)
        return account_from(cast(Account, account), cast(TradeAccount, trade))

    def find_account_by_email(self, email: str) -> models.BrokerAccount | None:
        """Through Alpaca's account search, which matches tokens anywhere: the exact email is picked here."""
        wanted = normalize_email(email)
        if wanted is None:
            return None
        query = build("account search", lambda: ListAccountsRequest(query=wanted))
        for account in cast(list[Account], sdk_call("account search", self._client.list_accounts, query)):
            if account.contact and normalize_email(account.contact.email_address) == wanted:
                return self.get_account(str(account.id))  # with its balances, which the search leaves out
        return None

    def close_account(self, account_id: str) -> models.BrokerAccount:
        uuid_of(account_id, "account")
        sdk_call(f"close account {account_id}", self._client.close_account, account_id)
        return self.get_account(account_id)

    # --- bank links -------------------------------------------------------------------------
    def list_ach_relationships(self, account_id: str) -> list[models.AchRelationship]:
        path_id = uuid_of(account_id, "account")
        raw = sdk_call(f"ACH relationships of account {account_id}", self._client.get,
                       f"/accounts/{path_id}/ach_relationships")
        if not isinstance(raw, list):
            raise Unavailable("Alpaca answered an ACH relationship list that is not a list", code="broker_protocol")
        out = []
        for item in raw:
            rel = ach_from_raw(item)
            if rel is None:
                log.warning("skipping an ACH relationship Alpaca sent without id/created_at: %r", item)
            else:
                out.append(rel)
        return out

    def create_ach_relationship(
        self, account_id: str, request: models.ManualAchRequest
    ) -> models.AchRelationship:
        uuid_of(account_id, "account")
        account = sdk_call(f"account {account_id}", self._client.get_account_by_id, account_id)
        owner = account_from(cast(Account, account), None).owner_name
        if not owner:
            raise Rejected(f"account {account_id} has no owner name on file", code="no_owner_name")
        body = build("ACH relationship", lambda: CreateACHRelationshipRequest(
            account_owner_name=owner,
            bank_account_type=BankAccountType(request.bank_account_type),
            bank_account_number=request.bank_account_number,
            bank_routing_number=request.bank_routing_number,
            nickname=request.nickname,
        ))
        rel = sdk_call(f"create ACH relationship for account {account_id}",
                       self._client.create_ach_relationship_for_account, account_id, body,
                       conflict_code="ach_relationship_exists")
        return ach_from_model(cast(BaseModel, rel))

    def create_ach_relationship_from_processor_token(
        self, account_id: str, processor_token: str
    ) -> models.AchRelationship:
        uuid_of(account_id, "account")
        if not processor_token.strip():
            raise InvalidRequest("processor_token is empty", code="invalid_processor_token")
        body = build("ACH relationship", lambda: CreatePlaidRelationshipRequest(processor_token=processor_token))
        rel = sdk_call(f"create ACH relationship for account {account_id}",
                       self._client.create_ach_relationship_for_account, account_id, body,
                       conflict_code="ach_relationship_exists")
        return ach_from_model(cast(BaseModel, rel))

    def delete_ach_relationship(self, account_id: str, relationship_id: str) -> None:
        uuid_of(account_id, "account")
        uuid_of(relationship_id, "ACH relationship")
        sdk_call(f"ACH relationship {relationship_id}", self._client.delete_ach_relationship_for_account,
                 account_id, relationship_id)

    # --- transfers --------------------------------------------------------------------------
    def create_transfer(
        self, account_id: str, relationship_id: str, amount: Decimal, direction: str
    ) -> models.Transfer:
        if direction not in ("INCOMING", "OUTGOING"):
            raise InvalidRequest(f"direction must be INCOMING or OUTGOING, not {direction!r}", code="invalid_direction")
        check_cents(amount, "amount")
        uuid_of(account_id, "account")
        uuid_of(relationship_id, "ACH relationship")
        body = build("transfer", lambda: CreateACHTransferRequest(
            amount=str(amount), direction=TransferDirection(direction), timing=TransferTiming.IMMEDIATE,
            relationship_id=uuid_of(relationship_id, "ACH relationship"),
        ))
        transfer = sdk_call(f"create transfer for account {account_id}",
                            self._client.create_transfer_for_account, account_id, body)
        return transfer_from(dump(cast(BaseModel, transfer)))

    def get_transfer(self, account_id: str, transfer_id: str) -> models.Transfer:
        wanted = str(uuid_of(transfer_id, "transfer"))
        for transfer in self.list_transfers(account_id):
            if transfer.id == wanted:
                return transfer
        raise NotFound(f"transfer {transfer_id} not found for account {account_id}", code="transfer_not_found")

    def list_transfers(self, account_id: str) -> list[models.Transfer]:
        uuid_of(account_id, "account")
        transfers = sdk_call(f"transfers of account {account_id}", self._client.get_transfers_for_account, account_id)
        return [transfer_from(dump(t)) for t in cast(list[BaseModel], transfers)]

    def cancel_transfer(self, account_id: str, transfer_id: str) -> None:
        uuid_of(account_id, "account")
        uuid_of(transfer_id, "transfer")
        sdk_call(f"transfer {transfer_id}", self._client.cancel_transfer_for_account, account_id, transfer_id)

    # --- trading ----------------------------------------------------------------------------
    def submit_order(self, account_id: str, request: models.OrderRequest) -> models.Order:
        uuid_of(account_id, "account")
        body = build("order", lambda: order_request(request))
        try:
            order = sdk_call(f"order for account {account_id}", self._client.submit_order_for_account,
                             account_id, body)
        except (Rejected, InvalidRequest, Conflict):
            if request.client_order_id is None:
                raise
            existing = self._find_by_client_id(account_id, request.client_order_id)
            if existing is None:
                raise
            return existing
        self._changed(account_id)
        return order_from(dump(cast(SdkOrder, order)), account_id)

    def get_order(self, account_id: str, order_id: str) -> models.Order:
        uuid_of(account_id, "account")
        uuid_of(order_id, "order")
        order = sdk_call(f"order {order_id}", self._client.get_order_for_account_by_id, account_id, order_id)
        return order_from(dump(cast(SdkOrder, order)), account_id)

    def list_orders(self, account_id: str, status: str = "all") -> list[models.Order]:
        if status not in ("open", "closed", "all"):
            raise InvalidRequest(f"status must be open, closed or all, not {status!r}", code="invalid_status")
        uuid_of(account_id, "account")
        query = GetOrdersRequest(status=QueryOrderStatus(status), limit=ORDER_LIST_LIMIT)
        orders = sdk_call(f"orders of account {account_id}", self._client.get_orders_for_account, account_id, query)
        return [order_from(dump(o), account_id) for o in cast(list[SdkOrder], orders)]

    def cancel_order(self, account_id: str, order_id: str) -> None:
        uuid_of(account_id, "account")
        uuid_of(order_id, "order")
        sdk_call(f"order {order_id}", self._client.cancel_order_for_account_by_id, account_id, order_id)
        self._changed(account_id)

    def list_positions(self, account_id: str) -> list[models.BrokerPosition]:
        uuid_of(account_id, "account")
        positions = sdk_call(f"positions of account {account_id}",
                             self._client.get_all_positions_for_account, account_id)
        return [position_from(dump(p)) for p in cast(list[Position], positions)]

    def close_all_positions(self, account_id: str) -> list[models.CloseResult]:
        """Cancels open orders first (they would hold the shares) and answers one line per position."""
        uuid_of(account_id, "account")
        results = sdk_call(f"close positions of account {account_id}",
                           self._client.close_all_positions_for_account, account_id, cancel_orders=True)
        self._changed(account_id)
        return [close_from(r) for r in cast(list[ClosePositionResponse], results)]

    def list_activities(self, account_id: str) -> list[models.Activity]:
        """Fills (`FILL`) and cash movements (`CSD`/`CSW`, ...), newest first."""
        query = GetAccountActivitiesRequest(account_id=uuid_of(account_id, "account"))
        activities = sdk_call(f"activities of account {account_id}", self._client.get_account_activities, query)
        return [activity_from(a) for a in cast(list[TradeActivity | NonTradeActivity], activities)]

    # --- plumbing ---------------------------------------------------------------------------
    def _changed(self, account_id: str) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change([account_id])
        except Exception:  # the trade stands; the periodic re-sync catches up
            log.exception("on_change hook failed for account %s", account_id)

    def _find_by_client_id(self, account_id: str, client_order_id: str) -> models.Order | None:
        for order in self.list_orders(account_id, "all"):
            if order.client_order_id == client_order_id:
                return order
        return None
