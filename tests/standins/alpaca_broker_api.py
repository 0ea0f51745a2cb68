"""A local stand-in for Alpaca's Broker API, for tests that drive alpaca-py's `BrokerClient` over real HTTP.

Every request is checked against Alpaca's published OpenAPI document (`alpaca-broker-api.yaml` beside
this file, a copy of the reference in shared/): the path and method must exist there, declared path
and query parameters must fit their schemas, and JSON bodies must satisfy the referenced schema
(required fields, enums, types, formats; `$ref`/`allOf`/`oneOf` resolved). Anything else is refused the
way Alpaca refuses it: `{"code": ..., "message": ...}` with 401/404/405/400/422. Requests that pass the
spec then meet the business rules Alpaca enforces (one active ACH relationship -> 409, buying power,
closable accounts) over in-memory state.

The ledger is a toy (instant market fills at a price the test sets, no real settlement calendar), but
the wire format is the one alpaca-py parses. Test hooks (`set_price`, `complete_transfer`,
`move_transfer`, `fail_transfer`, `end_of_day`, `close_market`, `open_market`, `halt`,
`add_ach_relationship`, `fail_next`) are plain Python methods, not HTTP routes. Timestamps come from
`clock` (real time unless a test passes its own, e.g. a `ManualClock.now`).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import re
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SPEC_FILE = Path(__file__).with_name("alpaca-broker-api.yaml")
NEW_YORK = ZoneInfo("America/New_York")
CENT = Decimal("0.01")
QTY_STEP = Decimal("0.000000001")
ERROR_CODES = {400: 40010000, 401: 40110000, 403: 40310000, 404: 40410000, 405: 40510000, 409: 40910000,
               422: 42210000, 500: 50010000}
OPEN_ORDER = ("new", "accepted", "pending_new", "partially_filled")
OPEN_TRANSFER = ("QUEUED", "APPROVAL_PENDING", "PENDING")  # still cancelable
IN_FLIGHT_TRANSFER = (*OPEN_TRANSFER, "SENT_TO_CLEARING", "APPROVED")  # on their way, not yet booked
ACTIVE_ACH = ("QUEUED", "APPROVED", "PENDING")


class ApiError(Exception):
    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body or {"code": ERROR_CODES.get(status, status * 100000), "message": message}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _ts(t: dt.datetime | None, nanos: bool = False) -> str | None:
    """Alpaca's timestamps: RFC 3339 in UTC with a `Z`; order timestamps carry nanoseconds."""
    if t is None:
        return None
    text = t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return (text + "000Z") if nanos else (text + "Z")


def _money(x: Decimal) -> str:
    return str(x.quantize(CENT, ROUND_HALF_UP))


# --- the spec -------------------------------------------------------------------------------------
def _amend(doc: dict[str, Any]) -> dict[str, Any]:
    """Two places where the published document lags the API alpaca-py talks to (PROTOCOLS.md).

    - alpaca-py closes accounts with `POST /v1/accounts/{id}/actions/close` (the document only has
      the older `DELETE /v1/accounts/{id}`);
    - an ACH relationship may be created from a Plaid processor token alone (`{"processor_token"}`),
      which the document's schema would refuse for lacking the bank fields.
    """
    doc["paths"]["/v1/accounts/{account_id}/actions/close"] = {
        "parameters": [{"$ref": "#/components/parameters/AccountID"}],
        "post": {"operationId": "closeAccount", "responses": {"204": {"description": "No content."}}},
    }
    schemas = doc["components"]["schemas"]
    manual = schemas["CreateACHRelationshipRequest"]
    plaid = {"type": "object", "properties": {"processor_token": {"type": "string", "minLength": 1}},
             "required": ["processor_token"]}
    schemas["CreateACHRelationshipRequest"] = {"anyOf": [manual, plaid]}
    return doc


@dataclass
class Operation:
    template: str
    method: str
    op: dict[str, Any]
    params: list[dict[str, Any]]


class Spec:
    """A small generic OpenAPI 3.0 request validator over the loaded document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.routes: list[tuple[int, re.Pattern[str], str]] = []
        for template in doc["paths"]:
            regex = re.sub(r"\\\{([a-z_]+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
            literal = sum(1 for seg in template.split("/") if seg and not seg.startswith("{"))
            self.routes.append((literal, re.compile(f"^{regex}$"), template))
        self.routes.sort(key=lambda r: -r[0])  # `/v1/accounts/activities` before `/v1/accounts/{id}`

    @classmethod
    def load(cls, path: Path = SPEC_FILE) -> Spec:
        return cls(_amend(yaml.safe_load(path.read_text())))

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].lstrip("#/").split("/"):
                target = target[part]
            node = target
        return node

    def match(self, method: str, path: str) -> tuple[Operation, dict[str, str]]:
        for _, regex, template in self.routes:
            m = regex.match(path)
            if m is None:
                continue
            item = self.doc["paths"][template]
            op = item.get(method.lower())
            if op is None:
                raise ApiError(405, "Method Not Allowed")
            params = [self.resolve(p) for p in item.get("parameters", []) + op.get("parameters", [])]
            return Operation(template, method.upper(), op, params), m.groupdict()
        raise ApiError(404, "Not Found")

    def check_parameters(self, op: Operation, path_params: dict[str, str], query: dict[str, str]) -> None:
        for p in op.params:
            source = path_params if p["in"] == "path" else query if p["in"] == "query" else None
            if source is None or p["name"] not in source:
                if p.get("required") and source is not None:
                    raise ApiError(422, f"{p['name']} is required")
                continue
            raw = source[p["name"]]
            schema = self.resolve(p.get("schema", {}))
            value: Any = raw
            if schema.get("type") == "integer":
                if not re.fullmatch(r"-?\d+", raw):
                    raise ApiError(422, f"{p['name']}: {raw!r} is not an integer")
                value = int(raw)
            elif schema.get("type") == "boolean":
                if raw.lower() not in ("true", "false"):
                    raise ApiError(422, f"{p['name']}: {raw!r} is not a boolean")
                value = raw.lower() == "true"
            errors = self.errors(schema, value, p["name"])
            if errors:
                status = 400 if p["in"] == "path" else 422
                raise ApiError(status, "; ".join(errors))

    def check_body(self, op: Operation, body: Any) -> None:
        content = op.op.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            return
        errors = self.errors(content["schema"], body, "body")
        if errors:
            raise ApiError(422, "; ".join(errors))

    def errors(self, schema: dict[str, Any], value: Any, where: str) -> list[str]:
        s = self.resolve(schema)
        if value is None:
            return [] if s.get("nullable") or not s else [f"{where}: must not be null"]
        out: list[str] = []
        for sub in s.get("allOf", []):
            out += self.errors(sub, value, where)
        for key in ("oneOf", "anyOf"):
            if key in s and all(self.errors(sub, value, where) for sub in s[key]):
                out.append(f"{where}: matches none of the allowed shapes")
        kind = s.get("type")
        if kind is not None and not _type_ok(kind, s.get("format"), value):
            return [*out, f"{where}: expected {kind}" + (f" ({s['format']})" if s.get("format") else "")]
        if "enum" in s and value not in s["enum"]:
            out.append(f"{where}: {value!r} is not one of {s['enum']}")
        if (isinstance(value, int | float) and not isinstance(value, bool)
                and (value < s.get("minimum", value) or value > s.get("maximum", value))):
            out.append(f"{where}: {value} is out of range")
        if isinstance(value, str) and (
            len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", len(value))
        ):
            out.append(f"{where}: length out of range")
        if isinstance(value, dict):
            out += [f"{where}.{r}: required" for r in s.get("required", []) if r not in value]
            for name, sub in s.get("properties", {}).items():
                if name in value:
                    out += self.errors(sub, value[name], f"{where}.{name}")
        if isinstance(value, list) and "items" in s:
            for i, item in enumerate(value):
                out += self.errors(s["items"], item, f"{where}[{i}]")
        return out


def _type_ok(kind: str, fmt: str | None, value: Any) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind != "string":
        return True
    if fmt == "decimal" and isinstance(value, int | float) and not isinstance(value, bool):
        return True  # Alpaca takes decimals as strings or JSON numbers; alpaca-py sends numbers
    if not isinstance(value, str):
        return False
    try:
        if fmt == "uuid":
            uuid.UUID(value)
        elif fmt == "date":
            dt.date.fromisoformat(value)
        elif fmt == "date-time":
            dt.datetime.fromisoformat(value)
        elif fmt == "decimal":
            Decimal(value)
        elif fmt == "ipv4":
            ipaddress.IPv4Address(value)
    except (ValueError, InvalidOperation):
        return False
    return True


# --- in-memory state ------------------------------------------------------------------------------
@dataclass
class Account:
    id: str
    account_number: str
    created_at: dt.datetime
    application: dict[str, Any]
    status: str = "SUBMITTED"
    cash: Decimal = Decimal(0)
    unsettled: Decimal = Decimal(0)
    pending_out: Decimal = Decimal(0)
    last_equity: Decimal = Decimal(0)

    @property
    def email(self) -> str:
        return self.application["contact"]["email_address"]

    @property
    def owner_name(self) -> str:
        identity = self.application["identity"]
        return f"{identity['given_name']} {identity['family_name']}"


@dataclass
class Position:
    symbol: str
    asset_id: str
    qty: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    lastday_price: Decimal | None = None


@dataclass
class State:
    accounts: dict[str, Account] = field(default_factory=dict)
    ach: dict[str, dict[str, Any]] = field(default_factory=dict)
    transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    positions: dict[tuple[str, str], Position] = field(default_factory=dict)
    activities: list[dict[str, Any]] = field(default_factory=list)
    prices: dict[str, Decimal] = field(default_factory=dict)
    asset_ids: dict[str, str] = field(default_factory=dict)
    halted: set[str] = field(default_factory=set)
    untradable: set[str] = field(default_factory=set)  # listed by /v1/assets with tradable=false
    requests: list[tuple[str, str, int]] = field(default_factory=list)


@dataclass
class Call:
    """One request that passed the spec: its path parameters, query and JSON body."""

    path: dict[str, str]
    query: dict[str, str]
    body: Any


Handler = Callable[["AlpacaBrokerStandIn", Call], tuple[int, Any]]


class AlpacaBrokerStandIn:
    """The server: `with AlpacaBrokerStandIn(key, secret) as api:` then `BrokerClient(..., url_override=api.url)`."""

    def __init__(self, api_key: str = "test-key", secret_key: str = "test-secret", spec: Spec | None = None,
                 clock: Callable[[], dt.datetime] | None = None) -> None:
        self.spec = spec or Spec.load()
        self.now: Callable[[], dt.datetime] = clock or _now
        self.market_open = True  # market orders fill at once; while closed they queue for `open_market`
        self._auth = "Basic " + base64.b64encode(f"{api_key}:{secret_key}".encode()).decode()
        self.state = State()
        self._lock = threading.RLock()
        self._fail_next: tuple[int, str] | None = None
        self._lose_next: tuple[str, str, int] | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- lifecycle ---
    def __enter__(self) -> AlpacaBrokerStandIn:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = Starlette(routes=[Route("/{path:path}", self._endpoint,
                                      methods=["GET", "POST", "PUT", "PATCH", "DELETE"])])
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the Alpaca stand-in did not start")
            self._thread.join(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(10)

    # --- test hooks ---
    def set_price(self, symbol: str, price: Decimal | str) -> None:
        with self._lock:
            self.state.prices[symbol] = Decimal(price)
            self.state.asset_ids.setdefault(symbol, str(uuid.uuid4()))

    def halt(self, symbol: str) -> None:
        """Make closing this symbol fail (as a halted asset would), to exercise partial 207 answers."""
        with self._lock:
            self.state.halted.add(symbol)

    def complete_transfer(self, transfer_id: str) -> None:
        """Move a queued transfer to COMPLETE and book it, as Alpaca's clearing eventually does."""
        with self._lock:
            t = self.state.transfers[transfer_id]
            assert t["status"] in IN_FLIGHT_TRANSFER, t["status"]
            acct = self.state.accounts[t["account_id"]]
            amount = Decimal(t["amount"])
            if t["direction"] == "INCOMING":
                acct.cash += amount
            else:
                acct.cash -= amount
                acct.pending_out -= amount
            t["status"] = "COMPLETE"
            t["updated_at"] = _ts(self.now())
            self._activity(acct.id, {
                "activity_type": "CSD" if t["direction"] == "INCOMING" else "CSW",
                "date": self.now().astimezone(NEW_YORK).date().isoformat(),
                "net_amount": _money(amount if t["direction"] == "INCOMING" else -amount),
                "description": f"ACH transfer {t['id']}", "status": "executed",
            })

    def move_transfer(self, transfer_id: str, status: str) -> None:
        """Move an in-flight transfer along Alpaca's clearing statuses (PENDING, SENT_TO_CLEARING, APPROVED)."""
        with self._lock:
            t = self.state.transfers[transfer_id]
            assert t["status"] in IN_FLIGHT_TRANSFER and status in IN_FLIGHT_TRANSFER, (t["status"], status)
            t.update(status=status, updated_at=_ts(self.now()))

    def fail_transfer(self, transfer_id: str, status: str = "REJECTED", reason: str = "rejected by the bank") -> None:
        """The transfer is REJECTED before it was booked, or RETURNED (before or after it completed):
        an outgoing one's cash is the account's again, an incoming one's is taken back."""
        with self._lock:
            t = self.state.transfers[transfer_id]
            assert status in ("REJECTED", "RETURNED"), status
            assert t["status"] in IN_FLIGHT_TRANSFER or (status == "RETURNED" and t["status"] == "COMPLETE"), t
            acct = self.state.accounts[t["account_id"]]
            amount = Decimal(t["amount"])
            if t["status"] == "COMPLETE":
                acct.cash += -amount if t["direction"] == "INCOMING" else amount
            elif t["direction"] == "OUTGOING":
                acct.pending_out -= amount
            t.update(status=status, reason=reason, updated_at=_ts(self.now()))

    def close_market(self) -> None:
        """From now on market orders are accepted and queue until `open_market`, as after the close."""
        with self._lock:
            self.market_open = False

    def open_market(self) -> None:
        """The open: queued market orders fill at the current prices."""
        with self._lock:
            self.market_open = True
            for order in sorted(self.state.orders.values(), key=lambda o: o["submitted_at"]):
                if order["type"] == "market" and order["status"] in OPEN_ORDER:
                    price = self.state.prices[order["symbol"]]
                    qty = (Decimal(order["qty"]) if order["qty"] is not None
                           else (Decimal(order["notional"]) / price).quantize(QTY_STEP, ROUND_DOWN))
                    self._fill(self.state.accounts[order["account_id"]], order, price, qty)

    def end_of_day(self) -> None:
        """Roll the day: sale proceeds settle, equity and prices become yesterday's."""
        with self._lock:
            for acct in self.state.accounts.values():
                acct.unsettled = Decimal(0)
                acct.last_equity = self._equity(acct)
            for pos in self.state.positions.values():
                pos.lastday_price = self.state.prices.get(pos.symbol)

    def add_ach_relationship(self, account_id: str, status: str) -> str:
        """Insert a relationship in any status (e.g. CANCEL_REQUESTED, which the API itself produces slowly)."""
        with self._lock:
            rel = self._new_relationship(self.state.accounts[account_id], "CHECKING", "123456789", "121000358", None)
            rel["status"] = status
            return rel["id"]

    def fail_next(self, status: int, message: str = "internal server error") -> None:
        """Answer the next authorised request with this error (an outage, as the SDK would see it)."""
        with self._lock:
            self._fail_next = (status, message)

    def lose_next_answer(self, method: str, path_suffix: str, status: int = 500) -> None:
        """The next `method` request whose path ends with `path_suffix` takes effect, but its answer is
        lost: the caller sees `status` (a gateway failing after Alpaca acted)."""
        with self._lock:
            self._lose_next = (method.upper(), path_suffix, status)

    def requests_seen(self) -> list[tuple[str, str, int]]:
        with self._lock:
            return list(self.state.requests)

    # --- HTTP ---
    async def _endpoint(self, request: Request) -> Response:
        raw = await request.body()
        status, body = self._handle(request.method, request.url.path, dict(request.query_params),
                                    request.headers.get("authorization"), raw)
        with self._lock:
            self.state.requests.append((request.method, request.url.path, status))
            lose = self._lose_next
            if lose is not None and lose[0] == request.method and request.url.path.endswith(lose[1]):
                self._lose_next = None
                status, body = lose[2], {"code": ERROR_CODES.get(lose[2], lose[2] * 100000),
                                         "message": "upstream connection lost"}
        if body is None:
            return Response(status_code=status)
        return JSONResponse(body, status_code=status)

    def _handle(self, method: str, path: str, query: dict[str, str], auth: str | None, raw: bytes) -> tuple[int, Any]:
        try:
            if auth != self._auth:
                raise ApiError(401, "request is not authorized")
            with self._lock:
                failure, self._fail_next = self._fail_next, None
            if failure is not None:
                raise ApiError(*failure)
            op, path_params = self.spec.match(method, path)
            self.spec.check_parameters(op, path_params, query)
            body: Any = None
            if raw.strip():
                try:
                    body = json.loads(raw)
                except ValueError:
                    raise ApiError(400, "request body format is invalid") from None
            if "requestBody" in op.op:
                if body is None and op.op["requestBody"].get("required"):
                    raise ApiError(400, "request body is required")
                self.spec.check_body(op, body)
            handler = HANDLERS.get((op.method, op.template))
            if handler is None:
                raise ApiError(501, f"{op.method} {op.template} is in the spec but not in the stand-in")
            with self._lock:
                return handler(self, Call(path_params, query, body))
        except ApiError as e:
            return e.status, e.body

    # --- helpers used by handlers ---
    def _account(self, account_id: str, active: bool = False) -> Account:
        acct = self.state.accounts.get(account_id)
        if acct is None:
            raise ApiError(404, "account not found")
        if active and acct.status != "ACTIVE":
            raise ApiError(403, f"account is not active (status {acct.status})")
        return acct

    def _equity(self, acct: Account) -> Decimal:
        value = acct.cash
        for (owner, symbol), pos in self.state.positions.items():
            if owner == acct.id:
                value += pos.qty * self.state.prices.get(symbol, Decimal(0))
        return value.quantize(CENT, ROUND_HALF_UP)

    def _reserved(self, acct: Account) -> Decimal:
        """Cash held by open buy orders (a queued market order at the current price)."""
        def held(o: dict[str, Any]) -> Decimal:
            if o["notional"] is not None:
                return Decimal(o["notional"])
            return Decimal(o["qty"]) * Decimal(o["limit_price"] or self.state.prices[o["symbol"]])

        return sum((held(o) for o in self._open_orders(acct.id) if o["side"] == "buy"), Decimal(0))

    def _held(self, account_id: str, symbol: str) -> Decimal:
        return sum((Decimal(o["qty"]) for o in self._open_orders(account_id)
                    if o["side"] == "sell" and o["symbol"] == symbol), Decimal(0))

    def _open_orders(self, account_id: str) -> list[dict[str, Any]]:
        return [o for o in self.state.orders.values() if o["account_id"] == account_id and o["status"] in OPEN_ORDER]

    def _withdrawable(self, acct: Account) -> Decimal:
        return max(Decimal(0), acct.cash - acct.unsettled - acct.pending_out - self._reserved(acct))

    def _activity(self, account_id: str, fields: dict[str, Any]) -> None:
        now = self.now()
        self.state.activities.append({
            "id": f"{now.strftime('%Y%m%d%H%M%S%f')}000::{uuid.uuid4()}", "account_id": account_id, **fields,
        })

    def _new_relationship(self, acct: Account, kind: str, number: str, routing: str,
                          nickname: str | None, processor_token: str | None = None) -> dict[str, Any]:
        now = _ts(self.now())
        rel = {
            "id": str(uuid.uuid4()), "account_id": acct.id, "created_at": now, "updated_at": now,
            "status": "QUEUED", "account_owner_name": acct.owner_name, "bank_account_type": kind,
            "bank_account_number": number, "bank_routing_number": routing, "nickname": nickname,
            "processor_token": processor_token,
        }
        self.state.ach[rel["id"]] = rel
        return rel

    def _fill(self, acct: Account, order: dict[str, Any], price: Decimal, qty: Decimal) -> None:
        key = (acct.id, order["symbol"])
        pos = self.state.positions.setdefault(
            key, Position(order["symbol"], self.state.asset_ids[order["symbol"]]))
        if order["notional"] is not None:
            gross = Decimal(order["notional"])
        else:
            gross = (qty * price).quantize(CENT, ROUND_HALF_UP)
        if order["side"] == "buy":
            acct.cash -= gross
            pos.qty += qty
            pos.cost += gross
        else:
            acct.cash += gross
            acct.unsettled += gross
            pos.cost = (pos.cost * (pos.qty - qty) / pos.qty).quantize(CENT, ROUND_HALF_UP)
            pos.qty -= qty
            if pos.qty == 0:
                del self.state.positions[key]
        now = self.now()
        order.update(status="filled", filled_qty=str(qty), filled_avg_price=str(price),
                     filled_at=_ts(now, True), updated_at=_ts(now, True))
        self._activity(acct.id, {
            "activity_type": "FILL", "transaction_time": _ts(now, True), "type": "fill",
            "price": str(price), "qty": str(qty), "side": order["side"], "symbol": order["symbol"],
            "leaves_qty": "0", "order_id": order["id"], "cum_qty": str(qty), "order_status": "filled",
        })

    def _submit(self, acct: Account, body: dict[str, Any]) -> dict[str, Any]:
        symbol, side, kind = body["symbol"], body["side"], body["type"]
        if kind not in ("market", "limit") or side not in ("buy", "sell"):
            raise ApiError(422, f"{kind} {side} orders are not supported")
        if (body.get("qty") is None) == (body.get("notional") is None):
            raise ApiError(422, "exactly one of qty or notional is required")
        coid = body.get("client_order_id") or str(uuid.uuid4())
        if any(o["client_order_id"] == coid and o["account_id"] == acct.id for o in self.state.orders.values()):
            raise ApiError(422, "client_order_id must be unique")
        price = self.state.prices.get(symbol)
        if price is None:
            raise ApiError(422, f'asset "{symbol}" not found')
        try:
            qty = Decimal(str(body["qty"])) if body.get("qty") is not None else None
            notional = Decimal(str(body["notional"])) if body.get("notional") is not None else None
            limit = Decimal(str(body["limit_price"])) if body.get("limit_price") is not None else None
        except InvalidOperation:
            raise ApiError(422, "invalid decimal") from None
        if notional is not None and (kind != "market" or body["time_in_force"] != "day"):
            raise ApiError(422, "notional orders must be market orders with time_in_force day")
        if notional is not None and notional < 1:
            raise ApiError(403, "cost basis must be >= 1")
        if qty is not None and qty <= 0:
            raise ApiError(422, "qty must be > 0")
        if kind == "limit" and (limit is None or limit <= 0):
            raise ApiError(422, "limit_price is required for limit orders")
        fill_qty = qty if qty is not None else (notional / price).quantize(QTY_STEP, ROUND_DOWN)
        if side == "buy":
            cost = notional if notional is not None else fill_qty * (limit or price)
            if cost > acct.cash - acct.pending_out - self._reserved(acct):
                raise ApiError(403, "insufficient buying power")
        else:
            pos = self.state.positions.get((acct.id, symbol))
            available = (pos.qty if pos else Decimal(0)) - self._held(acct.id, symbol)
            if fill_qty > available:
                raise ApiError(403, f"insufficient qty available for order (requested: {fill_qty}, "
                                    f"available: {available})")
        now = _ts(self.now(), True)
        order = {
            "id": str(uuid.uuid4()), "client_order_id": coid, "account_id": acct.id,
            "created_at": now, "updated_at": now, "submitted_at": now, "filled_at": None,
            "expired_at": None, "canceled_at": None, "failed_at": None, "replaced_at": None,
            "replaced_by": None, "replaces": None, "asset_id": self.state.asset_ids[symbol], "symbol": symbol,
            "asset_class": "us_equity", "notional": None if notional is None else str(notional),
            "qty": None if qty is None else str(qty), "filled_qty": "0", "filled_avg_price": None,
            "order_class": "simple", "order_type": kind, "type": kind, "side": side,
            "time_in_force": body["time_in_force"], "limit_price": None if limit is None else str(limit),
            "stop_price": None, "status": "accepted", "extended_hours": bool(body.get("extended_hours")),
            "legs": None, "trail_percent": None, "trail_price": None, "hwm": None, "commission": 0,
        }
        self.state.orders[order["id"]] = order
        if kind == "market":
            if self.market_open:
                self._fill(acct, order, price, fill_qty)  # else it stays `accepted` until the open
        else:
            order["status"] = "new"
        return order

    def _account_json(self, acct: Account) -> dict[str, Any]:
        return {
            "id": acct.id, "account_number": acct.account_number, "status": acct.status,
            "crypto_status": "INACTIVE", "currency": "USD", "last_equity": _money(acct.last_equity),
            "created_at": _ts(acct.created_at), "account_type": "trading", "enabled_assets": ["us_equity"],
            **acct.application,
        }

    def _trade_account_json(self, acct: Account) -> dict[str, Any]:
        equity = self._equity(acct)
        buying_power = _money(max(Decimal(0), acct.cash - acct.pending_out - self._reserved(acct)))
        long_value = _money(equity - acct.cash)
        return {
            "id": acct.id, "account_number": acct.account_number, "status": acct.status, "currency": "USD",
            "cash": _money(acct.cash), "cash_withdrawable": _money(self._withdrawable(acct)),
            "cash_transferable": _money(self._withdrawable(acct)), "buying_power": buying_power,
            "regt_buying_power": buying_power, "non_marginable_buying_power": buying_power,
            "daytrading_buying_power": "0", "equity": _money(equity), "last_equity": _money(acct.last_equity),
            "portfolio_value": _money(equity), "long_market_value": long_value, "short_market_value": "0",
            "pending_transfer_in": _money(sum((Decimal(t["amount"]) for t in self.state.transfers.values()
                                               if t["account_id"] == acct.id and t["direction"] == "INCOMING"
                                               and t["status"] in IN_FLIGHT_TRANSFER), Decimal(0))),
            "pending_transfer_out": _money(acct.pending_out), "pattern_day_trader": False,
            "daytrade_count": 0, "trading_blocked": False, "transfers_blocked": False, "account_blocked": False,
            "created_at": _ts(acct.created_at), "multiplier": "1", "shorting_enabled": False,
            "initial_margin": "0", "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
            "accrued_fees": "0", "previous_close": None, "last_long_market_value": "0",
            "last_short_market_value": "0", "last_cash": _money(acct.cash), "last_initial_margin": "0",
            "last_regt_buying_power": buying_power, "last_buying_power": buying_power,
            "clearing_broker": "ALPACA_APCA",
        }

    def _position_json(self, account_id: str, pos: Position) -> dict[str, Any]:
        price = self.state.prices[pos.symbol]
        value = (pos.qty * price).quantize(CENT, ROUND_HALF_UP)
        return {
            "asset_id": pos.asset_id, "symbol": pos.symbol, "exchange": "NASDAQ", "asset_class": "us_equity",
            "asset_marginable": True, "qty": str(pos.qty),
            "qty_available": str(pos.qty - self._held(account_id, pos.symbol)),
            "avg_entry_price": str((pos.cost / pos.qty).quantize(Decimal("0.0001"), ROUND_HALF_UP)),
            "side": "long", "market_value": str(value), "cost_basis": _money(pos.cost),
            "unrealized_pl": _money(value - pos.cost), "current_price": str(price),
            "lastday_price": None if pos.lastday_price is None else str(pos.lastday_price),
        }


# --- handlers, keyed by the spec operation they implement -------------------------------------------
def _create_account(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    email = c.body["contact"].get("email_address")
    if not email:
        raise ApiError(422, "contact.email_address is required")
    if any(a.email == email for a in api.state.accounts.values()):
        raise ApiError(409, "email address is already in use")
    acct = Account(
        id=str(uuid.uuid4()), account_number=f"9{len(api.state.accounts) + 20000000:08d}", created_at=api.now(),
        application={k: c.body[k] for k in ("contact", "identity", "disclosures", "agreements")},
    )
    api.state.accounts[acct.id] = acct
    answer = api._account_json(acct)
    acct.status = "ACTIVE"  # the sandbox approves within moments; the creation answer still says SUBMITTED
    return 200, answer


def _list_accounts(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    """`query` holds space-delimited tokens; an account matches when each token is in its account
    number, phone number, name or email (case-insensitive), as Alpaca searches."""
    tokens = c.query.get("query", "").lower().split()

    def searchable(acct: Account) -> str:
        phone = acct.application["contact"].get("phone_number") or ""
        return " ".join((acct.account_number, phone, acct.owner_name, acct.email)).lower()

    found = [a for a in api.state.accounts.values() if all(t in searchable(a) for t in tokens)]
    return 200, [api._account_json(a) for a in sorted(found, key=lambda a: a.created_at)]


def _get_account(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    return 200, api._account_json(api._account(c.path["account_id"]))


def _close_account(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    if acct.status == "ACCOUNT_CLOSED":
        raise ApiError(422, "account is already closed")
    if any(owner == acct.id for owner, _ in api.state.positions) or api._open_orders(acct.id):
        raise ApiError(422, "account has open positions or orders")
    if acct.cash > 1:
        raise ApiError(422, "account cash must be withdrawn before closing")
    acct.status = "ACCOUNT_CLOSED"
    return 204, None


def _trade_account(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    return 200, api._trade_account_json(api._account(c.path["account_id"]))


def _list_ach(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    wanted = set(c.query["statuses"].split(",")) if c.query.get("statuses") else None
    rels = [r for r in api.state.ach.values()
            if r["account_id"] == acct.id and (wanted is None or r["status"] in wanted)]
    return 200, rels


def _create_ach(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"], active=True)
    if any(r["account_id"] == acct.id and r["status"] in ACTIVE_ACH for r in api.state.ach.values()):
        raise ApiError(409, f"account {acct.id} already has an active relationship")
    if "processor_token" in c.body and "bank_account_number" not in c.body:
        token = c.body["processor_token"]
        if not token.startswith("processor-"):
            raise ApiError(422, "invalid processor token")
        rel = api._new_relationship(acct, "CHECKING", "********0000", "011401533", "Plaid Checking", token)
    else:
        rel = api._new_relationship(acct, c.body["bank_account_type"], c.body["bank_account_number"],
                                    c.body["bank_routing_number"], c.body.get("nickname"))
    answer = dict(rel)
    rel["status"] = "APPROVED"  # the sandbox approves within moments
    return 200, answer


def _delete_ach(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    rel = api.state.ach.get(c.path["ach_relationship_id"])
    if rel is None or rel["account_id"] != acct.id:
        raise ApiError(404, "relationship not found")
    if rel["status"] not in ACTIVE_ACH:
        raise ApiError(422, f"relationship is {rel['status']}")
    rel.update(status="CANCELED", updated_at=_ts(api.now()))
    return 204, None


def _create_transfer(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"], active=True)
    if c.body["transfer_type"] != "ach":
        raise ApiError(422, "only ach transfers are supported")
    rel = api.state.ach.get(c.body.get("relationship_id") or "")
    if rel is None or rel["account_id"] != acct.id:
        raise ApiError(422, "relationship_id does not name a relationship of this account")
    if rel["status"] != "APPROVED":
        raise ApiError(422, f"relationship is {rel['status']}, not APPROVED")
    amount = Decimal(str(c.body["amount"]))
    if amount <= 0 or amount != amount.quantize(CENT):
        raise ApiError(422, "amount must be a positive amount in cents")
    if c.body["direction"] == "OUTGOING":
        if amount > api._withdrawable(acct):
            raise ApiError(403, "insufficient withdrawable cash")
        acct.pending_out += amount
    now = _ts(api.now())
    t = {
        "id": str(uuid.uuid4()), "relationship_id": rel["id"], "account_id": acct.id, "type": "ach",
        "status": "QUEUED", "reason": None, "amount": _money(amount), "direction": c.body["direction"],
        "created_at": now, "updated_at": now, "expires_at": None, "additional_information": None,
        "requested_amount": _money(amount), "fee": "0",
    }
    api.state.transfers[t["id"]] = t
    return 200, t


def _list_transfers(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    items = [t for t in api.state.transfers.values() if t["account_id"] == acct.id
             and c.query.get("direction") in (None, t["direction"])]
    items.sort(key=lambda t: t["created_at"], reverse=True)
    offset = int(c.query.get("offset", 0))
    limit = int(c.query["limit"]) if "limit" in c.query else len(items)
    return 200, items[offset:offset + limit]


def _cancel_transfer(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    t = api.state.transfers.get(c.path["transfer_id"])
    if t is None or t["account_id"] != acct.id:
        raise ApiError(404, "transfer not found")
    if t["status"] not in OPEN_TRANSFER:
        raise ApiError(422, f"transfer is {t['status']} and can no longer be canceled")
    if t["direction"] == "OUTGOING":
        acct.pending_out -= Decimal(t["amount"])
    t.update(status="CANCELED", updated_at=_ts(api.now()))
    return 204, None


def _create_order(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    return 200, api._submit(api._account(c.path["account_id"], active=True), c.body)


def _list_orders(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    status = c.query.get("status", "open")
    items = [o for o in api.state.orders.values() if o["account_id"] == acct.id
             and (status == "all" or (o["status"] in OPEN_ORDER) == (status == "open"))]
    items.sort(key=lambda o: o["submitted_at"], reverse=c.query.get("direction", "desc") == "desc")
    return 200, items[: int(c.query.get("limit", 50))]


def _get_order(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    order = api.state.orders.get(c.path["order_id"])
    if order is None or order["account_id"] != acct.id:
        raise ApiError(404, "order not found")
    return 200, order


def _cancel_order(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    _status, order = _get_order(api, c)
    if order["status"] not in OPEN_ORDER:
        raise ApiError(422, f"order is {order['status']} and can no longer be canceled")
    now = _ts(api.now(), True)
    order.update(status="canceled", canceled_at=now, updated_at=now)
    return 204, None


def _list_positions(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    mine = [p for (owner, _), p in sorted(api.state.positions.items()) if owner == acct.id]
    return 200, [api._position_json(acct.id, p) for p in mine]


def _close_all(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    acct = api._account(c.path["account_id"])
    if c.query.get("cancel_orders", "false").lower() == "true":
        for order in api._open_orders(acct.id):
            now = _ts(api.now(), True)
            order.update(status="canceled", canceled_at=now, updated_at=now)
    results = []
    for (owner, symbol), pos in sorted(api.state.positions.items()):
        if owner != acct.id:
            continue
        held = api._held(acct.id, symbol)
        if symbol in api.state.halted or held:
            message = "asset is halted" if symbol in api.state.halted else (
                f"insufficient qty available for order (requested: {pos.qty}, available: {pos.qty - held})")
            results.append({"symbol": symbol, "status": 403, "body": {
                "code": 40310000, "message": message, "symbol": symbol, "available": float(pos.qty - held),
                "existing_qty": float(pos.qty), "held_for_orders": float(held)}})
            continue
        order = api._submit(acct, {"symbol": symbol, "side": "sell", "type": "market", "qty": str(pos.qty),
                                   "time_in_force": "day"})
        results.append({"symbol": symbol, "status": 200, "order_id": order["id"], "body": order})
    return 207, results


def _activities(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    items = [a for a in api.state.activities if c.query.get("account_id") in (None, a["account_id"])]
    items.sort(key=lambda a: a["id"], reverse=c.query.get("direction", "desc") == "desc")
    if "page_token" in c.query:
        ids = [a["id"] for a in items]
        if c.query["page_token"] not in ids:
            raise ApiError(422, "invalid page_token")
        items = items[ids.index(c.query["page_token"]) + 1:]
    return 200, items[: int(c.query.get("page_size", 100))]


def _assets(api: AlpacaBrokerStandIn, c: Call) -> tuple[int, Any]:
    """Every priced symbol is an active US equity; `untradable` ones are listed with tradable=false."""
    if c.query.get("status", "all") == "inactive" or c.query.get("asset_class", "us_equity") != "us_equity":
        return 200, []
    return 200, [
        {"id": asset_id, "class": "us_equity", "exchange": "NASDAQ", "symbol": symbol, "name": f"{symbol} Inc.",
         "status": "active", "tradable": symbol not in api.state.untradable, "marginable": True, "shortable": True,
         "easy_to_borrow": True, "fractionable": True}
        for symbol, asset_id in sorted(api.state.asset_ids.items())
    ]


HANDLERS: dict[tuple[str, str], Handler] = {
    ("POST", "/v1/accounts"): _create_account,
    ("GET", "/v1/accounts"): _list_accounts,
    ("GET", "/v1/accounts/{account_id}"): _get_account,
    ("POST", "/v1/accounts/{account_id}/actions/close"): _close_account,
    ("GET", "/v1/trading/accounts/{account_id}/account"): _trade_account,
    ("GET", "/v1/accounts/{account_id}/ach_relationships"): _list_ach,
    ("POST", "/v1/accounts/{account_id}/ach_relationships"): _create_ach,
    ("DELETE", "/v1/accounts/{account_id}/ach_relationships/{ach_relationship_id}"): _delete_ach,
    ("POST", "/v1/accounts/{account_id}/transfers"): _create_transfer,
    ("GET", "/v1/accounts/{account_id}/transfers"): _list_transfers,
    ("DELETE", "/v1/accounts/{account_id}/transfers/{transfer_id}"): _cancel_transfer,
    ("POST", "/v1/trading/accounts/{account_id}/orders"): _create_order,
    ("GET", "/v1/trading/accounts/{account_id}/orders"): _list_orders,
    ("GET", "/v1/trading/accounts/{account_id}/orders/{order_id}"): _get_order,
    ("DELETE", "/v1/trading/accounts/{account_id}/orders/{order_id}"): _cancel_order,
    ("GET", "/v1/trading/accounts/{account_id}/positions"): _list_positions,
    ("DELETE", "/v1/trading/accounts/{account_id}/positions"): _close_all,
    ("GET", "/v1/accounts/activities"): _activities,
    ("GET", "/v1/assets"): _assets,
}
