"""AlpacaBroker through alpaca-py's BrokerClient against the spec-validating Broker API stand-in (real HTTP)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests
from alpaca.broker.client import BrokerClient
from alpaca.common.exceptions import APIError
from pydantic import ValidationError
from standins.alpaca_broker_api import NEW_YORK, AlpacaBrokerStandIn, Spec

from brokerage.alpaca_broker import AlpacaBroker
from brokerage.errors import Conflict, InvalidRequest, NotFound, Rejected, Unavailable
from brokerage.factory import position_source_from_settings
from brokerage.models import AccountApplication, BrokerAccount, ManualAchRequest, OrderRequest
from brokerage.store_factory import store_from_settings
from engine.clock import ManualClock
from engine.config import Settings, load_settings

KEY, SECRET = "PKTEST", "s3cret"
BANK = ManualAchRequest(bank_account_type="CHECKING", bank_account_number="000123456789",
                        bank_routing_number="121000358", nickname="Main checking")


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec.load()


@pytest.fixture
def api(spec: Spec) -> Iterator[AlpacaBrokerStandIn]:
    with AlpacaBrokerStandIn(KEY, SECRET, spec=spec) as server:
        yield server


def settings(url: str | None, secret: str = SECRET, **env: str) -> Settings:
    values = {"CLERA_BROKER": "alpaca", "BROKER_API_KEY": KEY, "BROKER_SECRET_KEY": secret, **env}
    if url is not None:
        values["CLERA_ALPACA_BROKER_URL"] = url
    return load_settings(values, env_file=None)


@pytest.fixture
def broker(api: AlpacaBrokerStandIn) -> AlpacaBroker:
    return AlpacaBroker(settings(api.url))


def application(email: str = "ada@example.com", **overrides: Any) -> AccountApplication:
    raw: dict[str, Any] = {
        "contact": {"email_address": email, "phone_number": "+15555550100", "street_address": ["20 N San Mateo Dr"],
                    "city": "San Mateo", "state": "CA", "postal_code": "94401"},
        "identity": {"given_name": "Ada", "family_name": "Lovelace", "date_of_birth": "1990-12-10",
                     "country_of_tax_residence": "USA", "funding_source": ["employment_income"],
                     "tax_id": "666-55-4321", "tax_id_type": "USA_SSN"},
        "disclosures": {"is_control_person": False, "is_affiliated_exchange_or_finra": False,
                        "is_politically_exposed": False, "immediate_family_exposed": False},
        "agreements": [{"agreement": "customer_agreement", "signed_at": "2025-01-02T15:04:05Z",
                        "ip_address": "203.0.113.7"}],
    }
    for path, value in overrides.items():
        section, name = path.split("__")
        raw[section][name] = value
    return msgspec.convert(raw, AccountApplication)


def funded(broker: AlpacaBroker, api: AlpacaBrokerStandIn, cash: str, email: str = "ada@example.com") -> BrokerAccount:
    account = broker.create_account(application(email))
    rel = broker.create_ach_relationship(account.id, BANK)
    api.complete_transfer(broker.create_transfer(account.id, rel.id, Decimal(cash), "INCOMING").id)
    return broker.get_account(account.id)


def test_create_account_reads_back_with_balances(broker: AlpacaBroker) -> None:
    created = broker.create_account(application())
    assert created.status == "SUBMITTED"
    assert (created.email, created.owner_name) == ("ada@example.com", "Ada Lovelace")
    uuid.UUID(created.id)

    read = broker.get_account(created.id)
    assert read.status == "ACTIVE" and read.account_number == created.account_number
    assert (read.cash, read.cash_withdrawable, read.equity, read.buying_power) == (Decimal(0),) * 4
    assert isinstance(read.cash, Decimal) and read.pattern_day_trader is False and read.daytrade_count == 0

    with pytest.raises(Conflict) as taken:
        broker.create_account(application())  # same email
    assert (taken.value.status, taken.value.code) == (409, "email_in_use")  # the paper broker's code


def test_find_account_by_email_picks_the_exact_email(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    assert broker.find_account_by_email("ada@example.com") is None
    broker.create_account(application("nada@example.com"))  # Alpaca's search matches this one too
    ada = broker.create_account(application())
    found = broker.find_account_by_email(" ADA@example.com")
    assert found is not None and (found.id, found.email, found.status) == (ada.id, "ada@example.com", "ACTIVE")
    assert ("GET", "/v1/accounts", 200) in api.requests_seen()
    assert broker.find_account_by_email("da@example.com") is None and broker.find_account_by_email(" ") is None


def test_manual_ach_relationship_and_the_409_on_a_second(broker: AlpacaBroker) -> None:
    account = broker.create_account(application())
    rel = broker.create_ach_relationship(account.id, BANK)
    assert rel.account_id == account.id
    assert rel.account_owner_name == "Ada Lovelace"  # taken from the account's identity
    assert (rel.bank_routing_number, rel.nickname, rel.status) == ("121000358", "Main checking", "QUEUED")

    with pytest.raises(Conflict) as second:
        broker.create_ach_relationship(account.id, BANK)
    assert "already has an active relationship" in second.value.message
    assert (second.value.status, second.value.code) == (409, "ach_relationship_exists")  # as the paper broker says
    with pytest.raises(Conflict) as plaid:
        broker.create_ach_relationship_from_processor_token(account.id, "processor-sandbox-0a1b2c3d")
    assert plaid.value.code == "ach_relationship_exists"
    assert [r.status for r in broker.list_ach_relationships(account.id)] == ["APPROVED"]


def test_a_list_with_canceled_relationships_parses(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    account = broker.create_account(application())
    first = broker.create_ach_relationship(account.id, BANK)
    broker.delete_ach_relationship(account.id, first.id)
    api.add_ach_relationship(account.id, "CANCEL_REQUESTED")
    second = broker.create_ach_relationship(account.id, BANK)  # the deleted one no longer blocks

    # the SDK's own model cannot read this list: the gap is real, not hypothetical
    with pytest.raises(ValidationError):
        BrokerClient(KEY, SECRET, url_override=api.url).get_ach_relationships_for_account(account.id)

    by_id = {r.id: r.status for r in broker.list_ach_relationships(account.id)}
    assert by_id[first.id] == "CANCELED" and by_id[second.id] == "APPROVED"
    assert sorted(by_id.values()) == ["APPROVED", "CANCELED", "CANCEL_REQUESTED"]
    with pytest.raises(Rejected):
        broker.delete_ach_relationship(account.id, first.id)  # already canceled


def test_relationship_from_a_plaid_processor_token(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    account = broker.create_account(application())
    rel = broker.create_ach_relationship_from_processor_token(account.id, "processor-sandbox-0a1b2c3d")
    assert rel.account_id == account.id and rel.status == "QUEUED"
    assert rel.bank_account_type == "CHECKING" and rel.account_owner_name == "Ada Lovelace"
    posted = [r for r in api.requests_seen() if r[0] == "POST" and r[1].endswith("/ach_relationships")]
    assert posted == [("POST", f"/v1/accounts/{account.id}/ach_relationships", 200)]

    other = broker.create_account(application("bob@example.com"))
    with pytest.raises(Rejected):
        broker.create_ach_relationship_from_processor_token(other.id, "not-a-plaid-token")
    with pytest.raises(InvalidRequest):
        broker.create_ach_relationship_from_processor_token(other.id, "  ")


def test_transfers_lifecycle(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    account = broker.create_account(application())
    rel = broker.create_ach_relationship(account.id, BANK)
    deposit = broker.create_transfer(account.id, rel.id, Decimal("1000.25"), "INCOMING")
    assert (deposit.amount, deposit.direction, deposit.status, deposit.relationship_id) == (
        Decimal("1000.25"), "INCOMING", "QUEUED", rel.id)
    assert broker.get_account(account.id).cash == 0  # not usable until it completes

    api.complete_transfer(deposit.id)
    assert broker.get_transfer(account.id, deposit.id).status == "COMPLETE"
    after = broker.get_account(account.id)
    assert (after.cash, after.cash_withdrawable, after.equity) == (Decimal("1000.25"),) * 3

    with pytest.raises(Rejected):
        broker.create_transfer(account.id, rel.id, Decimal("1000.26"), "OUTGOING")
    withdrawal = broker.create_transfer(account.id, rel.id, Decimal("250.50"), "OUTGOING")
    assert broker.get_account(account.id).cash_withdrawable == Decimal("749.75")
    broker.cancel_transfer(account.id, withdrawal.id)
    assert broker.get_transfer(account.id, withdrawal.id).status == "CANCELED"
    assert broker.get_account(account.id).cash_withdrawable == Decimal("1000.25")
    with pytest.raises(Rejected):
        broker.cancel_transfer(account.id, withdrawal.id)
    with pytest.raises(Rejected):
        broker.cancel_transfer(account.id, deposit.id)  # complete

    assert {t.id for t in broker.list_transfers(account.id)} == {deposit.id, withdrawal.id}
    [booked] = broker.list_activities(account.id)
    assert (booked.activity_type, booked.net_amount) == ("CSD", Decimal("1000.25"))
    [sent_date] = [a["date"] for a in api.state.activities if a["account_id"] == account.id]
    assert booked.date.astimezone(NEW_YORK).date().isoformat() == sent_date  # a date-only booking stays on its day

    sent = len(api.requests_seen())
    for bad in (Decimal(0), Decimal("-5"), Decimal("0.001"), Decimal("NaN")):
        with pytest.raises(InvalidRequest):
            broker.create_transfer(account.id, rel.id, bad, "INCOMING")
    with pytest.raises(InvalidRequest):
        broker.create_transfer(account.id, rel.id, Decimal(5), "SIDEWAYS")
    assert len(api.requests_seen()) == sent  # refused before anything went out
    with pytest.raises(NotFound):
        broker.get_transfer(account.id, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        broker.get_transfer(account.id, "transfer-1")
    with pytest.raises(Rejected):
        broker.create_transfer(account.id, str(uuid.uuid4()), Decimal(5), "INCOMING")  # no such relationship


def test_orders_positions_and_fills(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    api.set_price("AAPL", "187.25")
    api.set_price("MSFT", "402.10")
    account = funded(broker, api, "1000.00")

    by_notional = broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", notional=Decimal("100.00"),
                                                               client_order_id="n-1"))
    assert by_notional.status == "filled" and by_notional.notional == Decimal("100")
    assert by_notional.filled_qty == Decimal("0.534045393") and by_notional.filled_avg_price == Decimal("187.25")
    fractional = broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal("0.5")))
    assert fractional.filled_qty == Decimal("0.5") and fractional.client_order_id  # one is always sent

    limit = broker.submit_order(account.id, OrderRequest(symbol="MSFT", side="buy", type="limit", qty=Decimal(1),
                                                         limit_price=Decimal("390.00"), time_in_force="gtc"))
    assert (limit.status, limit.type, limit.limit_price, limit.time_in_force) == (
        "new", "limit", Decimal("390"), "gtc")
    assert broker.get_account(account.id).buying_power == Decimal("1000.00") - Decimal("100.00") - Decimal(
        "93.63") - Decimal("390.00")
    assert [o.id for o in broker.list_orders(account.id, "open")] == [limit.id]
    broker.cancel_order(account.id, limit.id)
    assert broker.get_order(account.id, limit.id).status == "canceled"
    with pytest.raises(Rejected):
        broker.cancel_order(account.id, by_notional.id)  # filled
    assert {o.id for o in broker.list_orders(account.id)} == {by_notional.id, fractional.id, limit.id}

    again = broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", notional=Decimal("100.00"),
                                                         client_order_id="n-1"))
    assert again.id == by_notional.id  # a retry does not buy twice
    assert broker.get_account(account.id).cash == Decimal("806.37")

    [position] = broker.list_positions(account.id)
    assert (position.symbol, position.qty, position.cost_basis) == ("AAPL", Decimal("1.034045393"), Decimal("193.63"))
    assert position.lastday_price is None
    equity = broker.get_account(account.id).equity
    assert equity == Decimal("806.37") + (position.qty * Decimal("187.25")).quantize(Decimal("0.01"))
    api.end_of_day()
    [position] = broker.list_positions(account.id)
    assert position.lastday_price == Decimal("187.25")
    assert position.avg_entry_price == (position.cost_basis / position.qty).quantize(Decimal("0.0001"))
    assert broker.get_account(account.id).last_equity == equity

    fills = [a for a in broker.list_activities(account.id) if a.activity_type == "FILL"]
    assert sorted((a.order_id, a.qty, a.net_amount) for a in fills) == sorted([
        (by_notional.id, Decimal("0.534045393"), Decimal("-100.00")),
        (fractional.id, Decimal("0.5"), Decimal("-93.63")),  # 0.5 x 187.25 = 93.625, half up as charged
    ])

    with pytest.raises(Rejected):
        broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(2)))  # holds ~1.03
    with pytest.raises(Rejected):
        broker.submit_order(account.id, OrderRequest(symbol="ZZZZ", side="buy", qty=Decimal(1)))  # no such asset
    with pytest.raises(Rejected):
        broker.submit_order(account.id, OrderRequest(symbol="MSFT", side="buy", qty=Decimal(5)))  # buying power
    for bad in (OrderRequest(symbol="AAPL", side="buy"),
                OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1), notional=Decimal(5)),
                OrderRequest(symbol="AAPL", side="buy", type="limit", notional=Decimal(5), limit_price=Decimal(1)),
                OrderRequest(symbol="AAPL", side="buy", type="limit", qty=Decimal(1)),
                OrderRequest(symbol="AAPL", side="buy", qty=Decimal(-1))):
        with pytest.raises(InvalidRequest):
            broker.submit_order(account.id, bad)


def test_close_all_positions_answers_207_per_symbol(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    for symbol, price in (("AAPL", "100.00"), ("IBM", "50.00"), ("GOOG", "20.00")):
        api.set_price(symbol, price)
    account = funded(broker, api, "1000.00")
    for symbol in ("AAPL", "IBM", "GOOG"):
        broker.submit_order(account.id, OrderRequest(symbol=symbol, side="buy", qty=Decimal(2)))
    resting = broker.submit_order(account.id, OrderRequest(symbol="IBM", side="sell", type="limit", qty=Decimal(2),
                                                           limit_price=Decimal("99.00"), time_in_force="gtc"))
    api.halt("GOOG")

    results = {r.symbol: r for r in broker.close_all_positions(account.id)}
    assert api.requests_seen()[-1] == ("DELETE", f"/v1/trading/accounts/{account.id}/positions", 207)
    assert (results["AAPL"].status, results["IBM"].status, results["GOOG"].status) == (200, 200, 403)
    assert results["GOOG"].order_id is None and "halted" in (results["GOOG"].message or "")
    assert broker.get_order(account.id, results["AAPL"].order_id or "").side == "sell"
    assert broker.get_order(account.id, resting.id).status == "canceled"  # cancel_orders=True freed IBM
    assert [p.symbol for p in broker.list_positions(account.id)] == ["GOOG"]
    assert broker.get_account(account.id).cash == Decimal("1000.00") - Decimal("40.00")


def test_close_account(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    api.set_price("AAPL", "10.00")
    account = funded(broker, api, "20.00")
    broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    with pytest.raises(Rejected):
        broker.close_account(account.id)  # a position is open
    broker.close_all_positions(account.id)
    with pytest.raises(Rejected):
        broker.close_account(account.id)  # $20 still there
    with pytest.raises(Rejected):
        broker.create_transfer(account.id, broker.list_ach_relationships(account.id)[0].id, Decimal("19.50"),
                               "OUTGOING")  # $10 of it is sale proceeds, not settled yet
    api.end_of_day()
    [rel] = broker.list_ach_relationships(account.id)
    api.complete_transfer(broker.create_transfer(account.id, rel.id, Decimal("19.50"), "OUTGOING").id)

    closed = broker.close_account(account.id)
    assert closed.status == "ACCOUNT_CLOSED" and closed.cash == Decimal("0.50")
    with pytest.raises(Rejected):
        broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))


def test_error_mapping(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    sent = len(api.requests_seen())
    some = str(uuid.uuid4())
    for call in (lambda: broker.get_account("acct-1"), lambda: broker.list_ach_relationships("acct-1"),
                 lambda: broker.list_activities("acct-1"), lambda: broker.list_positions("1234"),
                 lambda: broker.delete_ach_relationship(some, "rel-1"),
                 lambda: broker.delete_ach_relationship("acct-1", some),
                 lambda: broker.create_ach_relationship("acct-1", BANK),
                 lambda: broker.create_ach_relationship_from_processor_token("acct-1", "processor-sandbox-1"),
                 lambda: broker.submit_order("acct-1", OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1))),
                 lambda: broker.get_order(some, "order-1"), lambda: broker.cancel_order(some, "order-1"),
                 lambda: broker.list_orders("acct-1"), lambda: broker.list_transfers("acct-1"),
                 lambda: broker.cancel_transfer(some, "transfer-1"), lambda: broker.close_all_positions("acct-1"),
                 lambda: broker.close_account("acct-1")):
        with pytest.raises(NotFound) as e:
            call()
        assert e.value.status == 404 and "not found" in e.value.message
    assert len(api.requests_seen()) == sent  # refused before anything was sent

    unknown = str(uuid.uuid4())
    for call in (lambda: broker.get_account(unknown), lambda: broker.list_ach_relationships(unknown),
                 lambda: broker.list_orders(unknown)):
        with pytest.raises(NotFound) as e:
            call()
        assert e.value.details["alpaca_status"] == 404

    with pytest.raises(InvalidRequest) as enum:  # the SDK's own enum check, before sending
        broker.create_account(application(identity__funding_source=["lottery"]))
    assert json.loads(json.dumps(enum.value.details))[0]["field"] == "funding_source.0"
    good = application("c@example.com")
    bad_ip = msgspec.structs.replace(good, agreements=[msgspec.structs.replace(good.agreements[0], ip_address="x")])
    with pytest.raises(Rejected) as invalid:  # the server's spec check (format ipv4)
        broker.create_account(bad_ip)
    assert invalid.value.details["alpaca_status"] == 422 and "ip_address" in invalid.value.message
    account = broker.create_account(application())

    with pytest.raises(Unavailable) as denied:
        AlpacaBroker(settings(api.url, secret="wrong")).get_account(account.id)
    assert denied.value.code == "broker_unauthorized" and denied.value.status == 503
    api.fail_next(503, "service unavailable")
    with pytest.raises(Unavailable):
        broker.get_account(account.id)
    assert broker.get_account(account.id).id == account.id  # and it recovers


def test_unreachable_and_hung_upstream_are_unavailable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        hung = AlpacaBroker(settings(f"http://127.0.0.1:{port}"), timeout_s=0.3)
        with pytest.raises(Unavailable) as e:  # accepted, never answered
            hung.get_account(str(uuid.uuid4()))
        assert e.value.code == "broker_unreachable"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(Unavailable):
        AlpacaBroker(settings(f"http://127.0.0.1:{port}")).list_positions(str(uuid.uuid4()))


class _OddAlpaca(http.server.BaseHTTPRequestHandler):
    """An upstream that answers 200 with bodies alpaca-py cannot read."""

    def do_GET(self) -> None:
        body = b"<html>maintenance</html>" if "/positions" in self.path else b'[{"id": "a1", "account_id": "x"}]'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: Any) -> None:
        pass


def test_answers_alpaca_py_cannot_read_are_unavailable_not_not_found() -> None:
    """Only the SDK's non-UUID id check means 404; any other ValueError in a call is a protocol problem."""
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OddAlpaca) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            broker = AlpacaBroker(settings(f"http://127.0.0.1:{server.server_address[1]}"))
            account = str(uuid.uuid4())
            with pytest.raises(Unavailable) as activity:  # an activity without activity_type: the SDK's ValueError
                broker.list_activities(account)
            assert (activity.value.status, activity.value.code) == (503, "broker_protocol")
            assert "activity_type" in activity.value.message
            with pytest.raises(Unavailable) as html:  # a 200 that is not JSON
                broker.list_positions(account)
            assert (html.value.status, html.value.code) == (503, "broker_protocol")
        finally:
            server.shutdown()


def test_settings_pick_the_endpoint_and_missing_keys_are_unavailable(api: AlpacaBrokerStandIn) -> None:
    assert AlpacaBroker(settings(api.url))._client._base_url == api.url
    assert AlpacaBroker(settings(None))._client._base_url == "https://broker-api.sandbox.alpaca.markets"
    live = AlpacaBroker(settings(None, ALPACA_ENVIRONMENT="production"))
    assert live._client._base_url == "https://broker-api.alpaca.markets"
    with pytest.raises(Unavailable) as unset:
        AlpacaBroker(load_settings({}, env_file=None))
    assert unset.value.code == "broker_not_configured"


def test_order_calls_announce_the_account(api: AlpacaBrokerStandIn) -> None:
    heard: list[list[str]] = []
    broker = AlpacaBroker(settings(api.url), on_change=heard.append)
    api.set_price("AAPL", "10.00")
    account = funded(broker, api, "50.00")
    assert heard == []  # account, bank link and transfer calls move no holdings
    order = broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", type="limit", qty=Decimal(1),
                                                         limit_price=Decimal("9.00")))
    broker.cancel_order(account.id, order.id)
    broker.close_all_positions(account.id)
    assert heard == [[account.id]] * 3
    with pytest.raises(Rejected):
        broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(100)))
    assert len(heard) == 3  # a refused order changed nothing


def test_the_stand_in_refuses_what_the_spec_does_not_allow(api: AlpacaBrokerStandIn) -> None:
    http = requests.Session()
    http.auth = (KEY, SECRET)
    acct = AlpacaBroker(settings(api.url)).create_account(application()).id

    def call(method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, dict[str, Any]]:
        r = http.request(method, api.url + path, json=body, **kw)
        return r.status_code, r.json()

    status, err = call("GET", "/v1/accounts/nope/whatever")
    assert status == 404 and set(err) == {"code", "message"}
    assert call("PUT", "/v1/accounts")[0] == 405
    assert call("GET", f"/v1/trading/accounts/{acct}/orders", params={"status": "bogus"})[0] == 422
    assert call("GET", "/v1/accounts/activities", params={"page_size": "1000"})[0] == 422
    assert call("GET", "/v1/accounts/activities", params={"account_id": "acct-1"})[0] == 422
    status, err = call("POST", "/v1/accounts", {"contact": {"email_address": "x@example.com"}})
    assert status == 422 and "body.identity: required" in err["message"]
    status, err = call("POST", f"/v1/accounts/{acct}/transfers", {
        "transfer_type": "ach", "amount": "10", "direction": "SIDEWAYS", "timing": "immediate",
        "relationship_id": str(uuid.uuid4())})
    assert status == 422 and "SIDEWAYS" in err["message"]
    status, err = call("POST", f"/v1/trading/accounts/{acct}/orders", {"symbol": "AAPL", "side": "buy", "qty": "1"})
    assert status == 422 and "body.type: required" in err["message"]
    assert http.post(api.url + "/v1/accounts", data=b"{not json", headers={"Content-Type": "application/json"}
                     ).status_code == 400
    assert requests.get(f"{api.url}/v1/accounts/{acct}").status_code == 401
    assert call("GET", f"/v1/accounts/{acct}")[0] == 200  # the same request, authorised and in the spec

    # an SDK call the published spec lacks is refused too, so nothing slips past the check
    with pytest.raises(APIError) as missing:
        BrokerClient(KEY, SECRET, url_override=api.url).get_order_for_account_by_client_id(acct, "c-1")
    assert missing.value.status_code == 404 and json.loads(str(missing.value))["message"] == "Not Found"


def test_concurrent_calls_share_one_client(broker: AlpacaBroker, api: AlpacaBrokerStandIn) -> None:
    api.set_price("AAPL", "10.00")
    account = funded(broker, api, "100.00")
    errors: list[BaseException] = []

    def buy() -> None:
        try:
            broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=buy) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert broker.list_positions(account.id)[0].qty == 8 and broker.get_account(account.id).cash == Decimal("20.00")


def test_holdings_for_the_live_portfolio_come_from_positions_and_fills(
    api: AlpacaBrokerStandIn, tmp_path: Path, redis_url: str
) -> None:
    """The engine's source over AlpacaBroker (as the shards build it): today's fills split a position
    into start and today."""
    conf = settings(api.url, CLERA_DATA_DIR=str(tmp_path))
    broker = AlpacaBroker(conf)
    api.set_price("AAPL", "100.00")
    account = funded(broker, api, "1000.00")
    store_from_settings(conf).add_account("user-ada", account.id)
    broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(2)))
    broker.submit_order(account.id, OrderRequest(symbol="AAPL", side="buy", notional=Decimal("50.00")))
    now = dt.datetime.now(dt.UTC)

    [today] = position_source_from_settings(conf, redis_url=redis_url, clock=ManualClock(now)).load_all()
    [aapl] = today.positions
    assert today.account_id == account.id
    assert today.cash == Decimal("750.00") and aapl.qty == Decimal("2.5")
    assert (aapl.start_qty, aapl.net_cost_today) == (Decimal(0), Decimal("250.00"))

    later = ManualClock(now + dt.timedelta(days=7))  # another session: the same shares were all held at its start
    [next_week] = position_source_from_settings(conf, redis_url=redis_url, clock=later).load_all()
    assert (next_week.positions[0].start_qty, next_week.positions[0].net_cost_today) == (Decimal("2.5"), Decimal(0))


def test_the_alpaca_position_source_values_the_accounts_the_store_knows(
    api: AlpacaBrokerStandIn, tmp_path: Path, redis_url: str
) -> None:
    """Alpaca cannot say which of its accounts are ours: the store does, read again at every full load."""
    conf = settings(api.url, CLERA_DATA_DIR=str(tmp_path))
    broker = AlpacaBroker(conf)
    store = store_from_settings(conf)
    ours = funded(broker, api, "300.00", "ours@example.com")
    closed = funded(broker, api, "10.00", "closed@example.com")
    stranger = funded(broker, api, "900.00", "stranger@example.com")  # at Alpaca, never recorded by us
    store.add_account("user-a", ours.id, status="active")
    store.add_account("user-b", closed.id, status="active")
    store.set_account_status(closed.id, "closed")
    source = position_source_from_settings(conf, redis_url=redis_url, clock=ManualClock(dt.datetime.now(dt.UTC)))

    assert [(h.account_id, h.cash) for h in source.load_all()] == [(ours.id, Decimal("300.00"))]

    newcomer = funded(broker, api, "42.50", "new@example.com")  # opened while the engine runs
    store.add_account("user-c", newcomer.id)
    loaded = {h.account_id: h.cash for h in source.load_all()}
    assert loaded == {ours.id: Decimal("300.00"), newcomer.id: Decimal("42.50")}
    assert stranger.id not in loaded
    # a shard loads only the accounts it owns: the others cost no call at Alpaca
    before = len(api.requests_seen())
    assert [h.account_id for h in source.load_all(keep=lambda a: a == newcomer.id)] == [newcomer.id]
    per_account = {path for _, path, _ in api.requests_seen()[before:]} - {"/v1/accounts/activities"}
    assert per_account and all(newcomer.id in path for path in per_account)
