"""PaperBroker on a real database (SQLite file and the real PostgreSQL), real Redis prices, a manual clock."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
import redis
from conftest import free_port
from paper_support import (
    BANK,
    MON_MORNING,
    TUE_MORNING,
    UTC,
    application,
    funded_account,
    make_broker,
    open_account,
    set_price,
    sqlite_url,
)

from brokerage.errors import Conflict, InvalidRequest, NotFound, Rejected, Unavailable
from brokerage.factory import broker_from_settings, position_source_from_settings
from brokerage.models import ManualAchRequest, OrderRequest
from brokerage.paper import NextDue, PaperBroker
from brokerage.positions import BrokerPositionSource, HoldingsNotifier, holdings_from_activities
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from engine.clock import ManualClock, ReplayClock
from engine.config import load_settings
from engine.redis_keys import HOLDINGS_CHANNEL

FRI_MORNING = dt.datetime(2025, 1, 17, 15, 0, tzinfo=UTC)
SAT_NOON = dt.datetime(2025, 1, 18, 17, 0, tzinfo=UTC)
MLK_NOON = dt.datetime(2025, 1, 20, 17, 0, tzinfo=UTC)
TUE_EARLY = dt.datetime(2025, 1, 21, 10, 0, tzinfo=UTC)  # 05:00 New York: the settlement date, before the open
TUE_OPEN = dt.datetime(2025, 1, 21, 14, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    return request.getfixturevalue("pg_url")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(MON_MORNING)


@pytest.fixture
def broker(db_url: str, clock: ManualClock, redis_url: str) -> Iterator[PaperBroker]:
    set_price(redis_url, "AAPL", 100.0, 98.0)
    set_price(redis_url, "MSFT", 50.0, 51.0)
    broker = make_broker(db_url, clock, redis_url)
    yield broker
    broker.db.close()


# --- onboarding ---------------------------------------------------------------------------------
def test_onboarding_moves_submitted_to_active_and_rejects_a_reused_email(broker: PaperBroker) -> None:
    created = broker.create_account(application("Ada@Example.com"))
    assert created.status == "SUBMITTED"
    assert created.owner_name == "Ada Lovelace" and created.email == "ada@example.com"
    assert broker.get_account(created.id).status == "ACTIVE"
    history = broker.db.fetchall(
        "SELECT status FROM paper_account_events WHERE account_id = ? ORDER BY at, status", (created.id,)
    )
    assert {r["status"] for r in history} == {"SUBMITTED", "APPROVED", "ACTIVE"}
    stored = broker.db.fetchone("SELECT application FROM paper_accounts WHERE id = ?", (created.id,))
    assert "123-45-6789" not in stored["application"]  # the full tax id is never kept
    with pytest.raises(Conflict) as exc:
        broker.create_account(application("ADA@example.com"))
    assert exc.value.status == 409
    assert broker.list_account_ids() == [created.id]


def test_an_invalid_application_is_refused_and_stores_nothing(broker: PaperBroker) -> None:
    with pytest.raises(InvalidRequest, match="18 years"):
        broker.create_account(application(date_of_birth=f"{dt.date.today().year - 10}-01-01"))  # noqa: DTZ011 - as the broker counts
    bad = application()
    bad.agreements[0].agreement = "margin_agreement"
    with pytest.raises(InvalidRequest, match="customer_agreement"):
        broker.create_account(bad)
    bad_email = application()
    bad_email.contact.email_address = "not-an-email"
    with pytest.raises(InvalidRequest):
        broker.create_account(bad_email)
    with pytest.raises(NotFound):
        broker.get_account("no-such-account")
    assert broker.list_account_ids(include_closed=True) == []


# --- bank links ---------------------------------------------------------------------------------
def test_one_active_ach_relationship_and_the_aba_checksum(broker: PaperBroker) -> None:
    account_id = broker.create_account(application()).id
    bad = ManualAchRequest(
        bank_account_type="CHECKING", bank_account_number="123456789", bank_routing_number="121000359"
    )
    with pytest.raises(InvalidRequest, match="checksum"):
        broker.create_ach_relationship(account_id, bad)
    rel = broker.create_ach_relationship(account_id, BANK)
    assert rel.status == "APPROVED" and rel.account_owner_name == "Ada Lovelace"
    with pytest.raises(Conflict) as exc:
        broker.create_ach_relationship(account_id, BANK)
    assert exc.value.status == 409
    with pytest.raises(Conflict):
        broker.create_ach_relationship_from_processor_token(account_id, "processor-sandbox-0f6a2e1c")
    broker.delete_ach_relationship(account_id, rel.id)
    assert [r.status for r in broker.list_ach_relationships(account_id)] == ["CANCELED"]
    linked = broker.create_ach_relationship_from_processor_token(account_id, "processor-sandbox-0f6a2e1c")
    assert linked.status == "APPROVED" and linked.bank_account_number.startswith("****")
    with pytest.raises(NotFound):
        broker.delete_ach_relationship(account_id, "nope")
    with pytest.raises(InvalidRequest):
        broker.create_ach_relationship_from_processor_token(account_id, "bad token")


# --- transfers ----------------------------------------------------------------------------------
def test_deposit_lifecycle_follows_the_market_clock(broker: PaperBroker, clock: ManualClock) -> None:
    account_id, rel_id = open_account(broker)
    transfer = broker.create_transfer(account_id, rel_id, Decimal("2500.00"), "INCOMING")
    assert transfer.status == "QUEUED"
    assert broker.get_account(account_id).cash == 0
    clock.set(dt.datetime(2025, 1, 13, 21, 30, tzinfo=UTC))  # after Monday's close: the ACH cut-off
    assert broker.get_transfer(account_id, transfer.id).status == "SENT_TO_CLEARING"
    assert broker.get_account(account_id).cash == 0
    with pytest.raises(Rejected):
        broker.cancel_transfer(account_id, transfer.id)
    clock.set(TUE_MORNING)
    assert broker.get_transfer(account_id, transfer.id).status == "COMPLETE"
    account = broker.get_account(account_id)
    assert account.cash == Decimal("2500.00") == account.cash_withdrawable == account.buying_power
    kinds = [(a.activity_type, a.net_amount) for a in broker.list_activities(account_id)]
    assert kinds == [("CSD", Decimal("2500.00"))]


@pytest.mark.parametrize("amount", [Decimal(0), Decimal("-5"), Decimal("1.001"), Decimal("NaN"), "abc", 1.5])
def test_bad_amounts_are_refused_with_the_ledger_unchanged(broker: PaperBroker, amount: object) -> None:
    account_id, rel_id = open_account(broker)
    with pytest.raises(InvalidRequest):
        broker.create_transfer(account_id, rel_id, amount, "INCOMING")  # type: ignore[arg-type]  # the wrong type is the case under test
    with pytest.raises(InvalidRequest):
        broker.create_transfer(account_id, rel_id, Decimal("10"), "SIDEWAYS")
    assert broker.list_transfers(account_id) == []


def test_withdrawals_are_limited_to_withdrawable_cash_and_the_daily_ach_limit(
    db_url: str, clock: ManualClock, redis_url: str
) -> None:
    broker = make_broker(db_url, clock, redis_url, CLERA_ACH_DAILY_LIMIT="1000")
    account_id, rel_id = funded_account(broker, clock, "3000")
    with pytest.raises(Rejected, match="withdrawable"):
        broker.create_transfer(account_id, rel_id, Decimal("3000.01"), "OUTGOING")
    first = broker.create_transfer(account_id, rel_id, Decimal("600"), "OUTGOING")
    assert broker.get_account(account_id).cash == Decimal("2400.00")  # the withdrawal leaves at once
    with pytest.raises(Rejected, match="daily ACH") as exc:
        broker.create_transfer(account_id, rel_id, Decimal("400.01"), "OUTGOING")
    assert exc.value.code == "ach_daily_limit"
    broker.cancel_transfer(account_id, first.id)  # a cancelled withdrawal frees cash and the day's limit
    assert broker.get_account(account_id).cash == Decimal("3000.00")
    broker.create_transfer(account_id, rel_id, Decimal("1000"), "OUTGOING")
    with pytest.raises(Rejected, match="daily ACH"):
        broker.create_transfer(account_id, rel_id, Decimal("0.01"), "OUTGOING")
    clock.set(dt.datetime(2025, 1, 15, 15, 0, tzinfo=UTC))  # a new day, a new limit
    broker.create_transfer(account_id, rel_id, Decimal("1000"), "OUTGOING")
    account = broker.get_account(account_id)
    assert account.cash == Decimal("1000.00")
    withdrawals = [a.net_amount for a in broker.list_activities(account_id) if a.activity_type == "CSW"]
    assert sorted(withdrawals) == [Decimal("-1000.00"), Decimal("-1000.00")]


# --- orders -------------------------------------------------------------------------------------
def test_market_orders_fill_at_the_redis_price(broker: PaperBroker, clock: ManualClock, redis_url: str) -> None:
    account_id, _ = funded_account(broker, clock, "1000")
    order = broker.submit_order(account_id, OrderRequest(symbol="aapl", side="buy", notional=Decimal("250")))
    assert order.status == "filled" and order.symbol == "AAPL"
    assert order.filled_qty == Decimal("2.5") and order.filled_avg_price == Decimal("100")
    frac = broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="buy", qty=Decimal("0.123456789")))
    assert frac.filled_qty == Decimal("0.123456789")
    cost = Decimal("6.17")  # 0.123456789 x 50 = 6.17283945 -> cents
    account = broker.get_account(account_id)
    assert account.cash == Decimal("1000") - Decimal("250") - cost
    assert account.equity == account.cash + Decimal("250") + cost
    positions = {p.symbol: p for p in broker.list_positions(account_id)}
    assert positions["AAPL"].qty == Decimal("2.5") and positions["AAPL"].cost_basis == Decimal("250.00")
    assert positions["AAPL"].lastday_price == Decimal("98")
    set_price(redis_url, "AAPL", 110.0, 98.0)
    assert broker.get_account(account_id).equity == account.equity + Decimal("25")


def test_refused_orders_leave_the_ledger_unchanged(broker: PaperBroker, clock: ManualClock) -> None:
    account_id, _ = funded_account(broker, clock, "100")
    with pytest.raises(Rejected, match="no price for ZZZZ") as exc:
        broker.submit_order(account_id, OrderRequest(symbol="ZZZZ", side="buy", notional=Decimal("10")))
    assert exc.value.code == "no_price"
    with pytest.raises(InvalidRequest, match="at least"):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", notional=Decimal("0.99")))
    with pytest.raises(InvalidRequest, match="9 decimals"):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal("0.0000000001")))
    with pytest.raises(InvalidRequest, match="exactly one"):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1), notional=Decimal(5)))
    with pytest.raises(InvalidRequest):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL; DROP", side="buy", qty=Decimal(1)))
    with pytest.raises(Rejected, match="minimum") as small:
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal("0.0099")))
    assert small.value.code == "below_minimum"
    with pytest.raises(Rejected, match="short selling"):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(1)))
    with pytest.raises(Rejected, match="buying power"):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal("1.01")))
    assert broker.list_orders(account_id) == []
    assert broker.get_account(account_id).cash == Decimal("100.00")


def test_client_order_id_makes_a_submission_idempotent(broker: PaperBroker, clock: ManualClock) -> None:
    account_id, _ = funded_account(broker, clock, "1000")
    request = OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1), client_order_id="retry-1")
    first = broker.submit_order(account_id, request)
    again = broker.submit_order(account_id, request)
    assert again.id == first.id
    assert broker.get_account(account_id).cash == Decimal("900.00")


def test_an_order_sent_while_closed_fills_at_the_next_open(
    db_url: str, clock: ManualClock, redis_url: str
) -> None:
    set_price(redis_url, "AAPL", 100.0)
    changed: list[list[str]] = []
    broker = make_broker(db_url, clock, redis_url, on_change=changed.append)
    account_id, _ = funded_account(broker, clock, "1000")
    clock.set(dt.datetime(2025, 1, 14, 23, 0, tzinfo=UTC))  # Tuesday evening
    order = broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(3)))
    assert order.status == "accepted" and order.filled_qty == 0
    assert broker.get_account(account_id).buying_power == Decimal("700.00")  # set aside while queued
    with pytest.raises(Rejected, match="buying power"):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(8)))
    set_price(redis_url, "AAPL", 104.0)
    clock.set(dt.datetime(2025, 1, 15, 14, 30, 1, tzinfo=UTC))  # just after Wednesday's open
    changed.clear()
    filled = broker.get_order(account_id, order.id)
    assert filled.status == "filled" and filled.filled_avg_price == Decimal("104")
    assert changed == [[account_id]]
    assert broker.get_account(account_id).cash == Decimal("688.00")


def test_process_due_moves_every_account_on_without_a_read(db_url: str, clock: ManualClock, redis_url: str) -> None:
    set_price(redis_url, "AAPL", 100.0)
    changed: list[list[str]] = []
    broker = make_broker(db_url, clock, redis_url, on_change=changed.append)
    trader, _ = funded_account(broker, clock, "1000", email="trader@example.com")
    saver, saver_bank = open_account(broker, email="saver@example.com")
    clock.set(dt.datetime(2025, 1, 14, 23, 0, tzinfo=UTC))
    broker.create_transfer(saver, saver_bank, Decimal("75"), "INCOMING")
    order = broker.submit_order(trader, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    assert broker.process_due() == []  # nothing is due at night
    changed.clear()
    clock.set(dt.datetime(2025, 1, 15, 14, 30, tzinfo=UTC))  # Wednesday's open
    assert broker.process_due() == sorted([trader, saver])
    assert sorted(ids for [ids] in changed) == sorted([trader, saver])
    assert broker.get_order(trader, order.id).status == "filled"
    assert broker.get_account(saver).cash == Decimal("75.00")
    assert broker.process_due() == []


def test_a_queued_buy_that_no_longer_fits_is_rejected_at_the_open(
    broker: PaperBroker, clock: ManualClock, redis_url: str
) -> None:
    account_id, _ = funded_account(broker, clock, "300")
    clock.set(dt.datetime(2025, 1, 14, 23, 0, tzinfo=UTC))
    order = broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(3)))
    set_price(redis_url, "AAPL", 150.0)
    clock.set(dt.datetime(2025, 1, 15, 15, 0, tzinfo=UTC))
    rejected = broker.get_order(account_id, order.id)
    assert rejected.status == "rejected" and "buying power" in (rejected.reason or "")
    assert broker.get_account(account_id).cash == Decimal("300.00")


def test_limit_orders_rest_fill_when_marketable_and_expire_with_the_day(
    broker: PaperBroker, clock: ManualClock, redis_url: str
) -> None:
    account_id, _ = funded_account(broker, clock, "1000")
    resting = broker.submit_order(
        account_id, OrderRequest(symbol="AAPL", side="buy", type="limit", qty=Decimal(2), limit_price=Decimal("95"))
    )
    assert resting.status == "new"
    assert broker.get_account(account_id).buying_power == Decimal("810.00")
    set_price(redis_url, "AAPL", 94.5)
    filled = broker.get_order(account_id, resting.id)
    assert filled.status == "filled" and filled.filled_avg_price == Decimal("94.5")
    day = broker.submit_order(
        account_id, OrderRequest(symbol="MSFT", side="buy", type="limit", qty=Decimal(1), limit_price=Decimal("40"))
    )
    gtc = broker.submit_order(
        account_id,
        OrderRequest(
            symbol="MSFT", side="buy", type="limit", qty=Decimal(1), limit_price=Decimal("41"), time_in_force="gtc"
        ),
    )
    clock.set(dt.datetime(2025, 1, 14, 22, 0, tzinfo=UTC))  # after the close
    assert broker.get_order(account_id, day.id).status == "expired"
    assert broker.get_order(account_id, gtc.id).status == "new"
    broker.cancel_order(account_id, gtc.id)
    assert broker.get_order(account_id, gtc.id).status == "canceled"
    with pytest.raises(Rejected):
        broker.cancel_order(account_id, resting.id)  # already filled
    with pytest.raises(NotFound):
        broker.cancel_order(account_id, "nope")
    assert broker.get_account(account_id).buying_power == broker.get_account(account_id).cash
    assert [o.id for o in broker.list_orders(account_id, "open")] == []
    with pytest.raises(InvalidRequest):
        broker.list_orders(account_id, "everything")


# --- settlement ---------------------------------------------------------------------------------
def test_sale_proceeds_settle_t_plus_1_across_a_weekend_and_a_holiday(
    broker: PaperBroker, clock: ManualClock
) -> None:
    account_id, rel_id = funded_account(broker, clock, "1000")
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(5)))
    clock.set(FRI_MORNING)
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(5)))
    for moment in (FRI_MORNING, SAT_NOON, MLK_NOON):
        clock.set(moment)
        account = broker.get_account(account_id)
        assert account.cash == Decimal("1000.00") and account.buying_power == Decimal("1000.00")
        assert account.cash_withdrawable == Decimal("500.00"), moment
    clock.set(MLK_NOON)
    with pytest.raises(Rejected, match="withdrawable"):
        broker.create_transfer(account_id, rel_id, Decimal("500.01"), "OUTGOING")
    clock.set(TUE_EARLY)
    assert broker.get_account(account_id).cash_withdrawable == Decimal("1000.00")
    broker.create_transfer(account_id, rel_id, Decimal("1000"), "OUTGOING")
    assert broker.get_account(account_id).cash == 0


# --- when the next time-driven step falls due (what PositionSync sleeps until) --------------------
TUE_OPEN_14 = dt.datetime(2025, 1, 14, 14, 30, tzinfo=UTC)
TUE_CLOSE = dt.datetime(2025, 1, 14, 21, 0, tzinfo=UTC)
WED_OPEN = dt.datetime(2025, 1, 15, 14, 30, tzinfo=UTC)


def test_next_due_is_nothing_on_an_idle_ledger_and_at_once_for_an_application(
    broker: PaperBroker, clock: ManualClock
) -> None:
    assert broker.next_due() == NextDue(at=None, waiting_on_prices=False)
    created = broker.create_account(application())
    assert broker.next_due().at == clock.now()  # the approval is due at once
    assert broker.process_due() == [created.id]
    assert broker.get_account(created.id).status == "ACTIVE"
    assert broker.next_due() == NextDue(at=None, waiting_on_prices=False)


@pytest.mark.parametrize("direction", ["INCOMING", "OUTGOING"])
def test_next_due_follows_a_transfer_to_its_cut_off_then_its_completion(
    db_url: str, clock: ManualClock, redis_url: str, direction: str
) -> None:
    changed: list[list[str]] = []
    broker = make_broker(db_url, clock, redis_url, on_change=changed.append)
    account_id, rel_id = funded_account(broker, clock, "100")
    broker.process_due()  # the funding deposit lands
    assert broker.next_due().at is None
    changed.clear()
    transfer = broker.create_transfer(account_id, rel_id, Decimal("40"), direction)
    assert changed == [[account_id]]  # announced, so whoever steps the ledger plans again
    assert broker.next_due() == NextDue(at=TUE_CLOSE, waiting_on_prices=False)  # the ACH cut-off
    clock.set(TUE_CLOSE - dt.timedelta(microseconds=1))
    assert broker.process_due() == [] and broker.get_transfer(account_id, transfer.id).status == "QUEUED"
    clock.set(TUE_CLOSE)
    broker.process_due()
    assert broker.get_transfer(account_id, transfer.id).status == "SENT_TO_CLEARING"
    assert broker.next_due() == NextDue(at=WED_OPEN, waiting_on_prices=False)  # completion at the open
    clock.set(WED_OPEN)
    assert broker.process_due() == [account_id]
    assert broker.get_transfer(account_id, transfer.id).status == "COMPLETE"
    assert broker.get_account(account_id).cash == Decimal("140.00" if direction == "INCOMING" else "60.00")
    assert broker.next_due().at is None


def test_next_due_of_a_transfer_made_at_night_is_its_cut_off_at_once(broker: PaperBroker, clock: ManualClock) -> None:
    account_id, rel_id = open_account(broker)
    clock.set(dt.datetime(2025, 1, 13, 23, 0, tzinfo=UTC))  # Monday night: past the cut-off already
    broker.process_due()
    broker.create_transfer(account_id, rel_id, Decimal("40"), "INCOMING")
    assert broker.next_due().at == clock.now()
    broker.process_due()
    assert broker.next_due().at == TUE_OPEN_14


def test_next_due_of_orders_queued_outside_hours_is_the_next_open(
    broker: PaperBroker, clock: ManualClock
) -> None:
    account_id, _ = funded_account(broker, clock, "1000")
    clock.set(dt.datetime(2025, 1, 14, 23, 0, tzinfo=UTC))  # Tuesday night
    broker.process_due()
    order = broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    assert order.status == "accepted"
    assert broker.next_due() == NextDue(at=WED_OPEN, waiting_on_prices=False)
    clock.set(WED_OPEN)
    assert broker.process_due() == [account_id]
    assert broker.get_order(account_id, order.id).status == "filled"
    assert broker.next_due().at is None
    friday_night = dt.datetime(2025, 1, 17, 22, 0, tzinfo=UTC)
    clock.set(friday_night)
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    assert broker.next_due().at == TUE_OPEN  # past the weekend and Martin Luther King Jr. Day


def test_next_due_of_orders_resting_in_the_session_is_their_price_and_a_day_order_its_close(
    broker: PaperBroker, clock: ManualClock
) -> None:
    account_id, _ = funded_account(broker, clock, "1000")
    broker.process_due()
    gtc = broker.submit_order(
        account_id,
        OrderRequest(
            symbol="MSFT", side="buy", type="limit", qty=Decimal(1), limit_price=Decimal("41"), time_in_force="gtc"
        ),
    )
    assert gtc.status == "new"
    assert broker.next_due() == NextDue(at=None, waiting_on_prices=True)  # no moment: it waits on the price
    day = broker.submit_order(
        account_id, OrderRequest(symbol="MSFT", side="buy", type="limit", qty=Decimal(1), limit_price=Decimal("40"))
    )
    assert broker.next_due() == NextDue(at=TUE_CLOSE, waiting_on_prices=True)
    clock.set(TUE_CLOSE)
    broker.process_due()
    assert broker.get_order(account_id, day.id).status == "expired"
    assert broker.next_due() == NextDue(at=WED_OPEN, waiting_on_prices=False)  # the gtc order, at the next open


def test_next_due_of_sale_proceeds_is_their_settlement(broker: PaperBroker, clock: ManualClock) -> None:
    account_id, _ = funded_account(broker, clock, "1000")
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(5)))
    clock.set(FRI_MORNING)
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(2)))
    settles = dt.datetime(2025, 1, 21, 5, 0, tzinfo=UTC)  # Tue 21st 00:00 New York: T+1 past MLK day
    assert broker.next_due() == NextDue(at=settles, waiting_on_prices=False)
    clock.set(dt.datetime(2025, 1, 17, 22, 0, tzinfo=UTC))  # a sale queued on Friday night fills sooner
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(1)))
    assert broker.next_due().at == settles  # settlement comes before Tuesday's open
    clock.set(settles - dt.timedelta(microseconds=1))
    assert broker.get_account(account_id).cash_withdrawable == Decimal("500.00")
    clock.set(settles)
    assert broker.get_account(account_id).cash_withdrawable == Decimal("700.00")
    assert broker.next_due().at == TUE_OPEN
    clock.set(TUE_OPEN)
    broker.process_due()
    wednesday = dt.datetime(2025, 1, 22, 5, 0, tzinfo=UTC)  # the Tuesday sale settles on Wednesday
    assert broker.next_due() == NextDue(at=wednesday, waiting_on_prices=False)


# --- pattern day trading ------------------------------------------------------------------------
def _day_trade(broker: PaperBroker, account_id: str) -> None:
    broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="buy", qty=Decimal(1)))
    broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="sell", qty=Decimal(1)))


def test_the_fourth_day_trade_in_five_days_is_rejected_under_the_threshold(
    broker: PaperBroker, clock: ManualClock
) -> None:
    account_id, _ = funded_account(broker, clock, "1000")
    for _ in range(3):
        _day_trade(broker, account_id)
    assert broker.get_account(account_id).daytrade_count == 3
    broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="buy", qty=Decimal(1)))
    with pytest.raises(Rejected, match="pattern day trader") as exc:
        broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="sell", qty=Decimal(1)))
    assert exc.value.code == "pdt_rule"
    clock.set(dt.datetime(2025, 1, 15, 15, 0, tzinfo=UTC))  # selling yesterday's share is no day trade
    broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="sell", qty=Decimal(1)))
    clock.set(dt.datetime(2025, 1, 21, 15, 0, tzinfo=UTC))  # Tuesday 21st: the 5-day window still holds the 14th
    assert broker.get_account(account_id).daytrade_count == 3
    clock.set(dt.datetime(2025, 1, 22, 15, 0, tzinfo=UTC))  # MLK day is no trading day: the 14th drops out now
    assert broker.get_account(account_id).daytrade_count == 0
    _day_trade(broker, account_id)
    assert broker.get_account(account_id).daytrade_count == 1


@pytest.mark.parametrize("env", [{"CLERA_PDT_ENABLED": "false"}, {"CLERA_PDT_EQUITY_THRESHOLD": "500"}])
def test_the_pdt_rule_can_be_switched_off_or_met_by_equity(
    db_url: str, clock: ManualClock, redis_url: str, env: dict[str, str]
) -> None:
    set_price(redis_url, "MSFT", 50.0)
    broker = make_broker(db_url, clock, redis_url, **env)
    account_id, _ = funded_account(broker, clock, "1000")
    for _ in range(4):
        _day_trade(broker, account_id)
    account = broker.get_account(account_id)
    assert account.daytrade_count == 4
    assert account.pattern_day_trader is ("CLERA_PDT_ENABLED" not in env)


# --- closing ------------------------------------------------------------------------------------
def test_close_all_positions_and_close_the_account(broker: PaperBroker, clock: ManualClock, redis_url: str) -> None:
    account_id, rel_id = funded_account(broker, clock, "1000")
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal("2.5")))
    broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="buy", qty=Decimal(4)))
    resting = broker.submit_order(
        account_id, OrderRequest(symbol="MSFT", side="buy", type="limit", qty=Decimal(1), limit_price=Decimal("10"))
    )
    with pytest.raises(Rejected, match="positions are still open"):
        broker.close_account(account_id)
    redis.Redis.from_url(redis_url).delete("price:MSFT")
    results = {r.symbol: r for r in broker.close_all_positions(account_id)}
    assert results["AAPL"].status == 200 and results["AAPL"].order_id
    assert results["MSFT"].status == 422 and "no price" in (results["MSFT"].message or "")
    assert broker.get_order(account_id, resting.id).status == "canceled"
    set_price(redis_url, "MSFT", 55.0)
    assert broker.close_all_positions(account_id)[0].status == 200
    assert broker.list_positions(account_id) == []
    account = broker.get_account(account_id)
    assert account.cash == Decimal("1020.00")
    with pytest.raises(Rejected, match="cash"):
        broker.close_account(account_id)
    clock.set(dt.datetime(2025, 1, 15, 15, 0, tzinfo=UTC))  # proceeds settled
    broker.create_transfer(account_id, rel_id, Decimal("1019.50"), "OUTGOING")
    closed = broker.close_account(account_id)
    assert closed.status == "ACCOUNT_CLOSED" and closed.cash == Decimal("0.50")
    assert account_id not in broker.list_account_ids()
    with pytest.raises(Rejected, match="ACCOUNT_CLOSED"):
        broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))


# --- restart ------------------------------------------------------------------------------------
def test_a_new_broker_on_the_same_database_sees_everything(
    db_url: str, clock: ManualClock, redis_url: str
) -> None:
    set_price(redis_url, "AAPL", 100.0)
    first = make_broker(db_url, clock, redis_url)
    account_id, rel_id = funded_account(first, clock, "1000")
    first.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(2)))
    clock.set(dt.datetime(2025, 1, 14, 23, 0, tzinfo=UTC))
    queued = first.submit_order(account_id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(1)))
    deposit = first.create_transfer(account_id, rel_id, Decimal("50"), "INCOMING")
    first.db.close()
    second = make_broker(db_url, clock, redis_url)  # "after the restart"
    assert second.get_account(account_id).cash == Decimal("800.00")
    clock.set(dt.datetime(2025, 1, 15, 15, 0, tzinfo=UTC))
    assert second.get_order(account_id, queued.id).status == "filled"
    assert second.get_transfer(account_id, deposit.id).status == "COMPLETE"
    assert second.get_account(account_id).cash == Decimal("950.00")
    assert [p.qty for p in second.list_positions(account_id)] == [Decimal(1)]


# --- positions for the realtime engine -------------------------------------------------------------
def test_position_source_reports_start_qty_and_net_cost_today(
    broker: PaperBroker, clock: ManualClock, redis_url: str
) -> None:
    account_id, rel_id = funded_account(broker, clock, "2000")
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(3)))
    broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="buy", qty=Decimal(2)))
    clock.set(dt.datetime(2025, 1, 15, 15, 0, tzinfo=UTC))  # Wednesday: yesterday's buys are start-of-day holdings
    set_price(redis_url, "AAPL", 102.0, 100.0)
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="sell", qty=Decimal(2)))
    broker.create_transfer(account_id, rel_id, Decimal("10"), "OUTGOING")
    source = BrokerPositionSource(broker, clock)
    [holdings] = source.load_all()
    assert holdings_from_activities(broker, clock, account_id) == holdings  # the ledger's shortcut agrees
    assert holdings.session == "2025-01-15" and holdings.cash == broker.get_account(account_id).cash
    assert holdings.deposits_today == Decimal("-10.00")
    by_symbol = {p.symbol: p for p in holdings.positions}
    assert (by_symbol["AAPL"].qty, by_symbol["AAPL"].start_qty, by_symbol["AAPL"].net_cost_today) == (
        Decimal(4), Decimal(3), Decimal("102.00")
    )
    assert (by_symbol["MSFT"].qty, by_symbol["MSFT"].start_qty, by_symbol["MSFT"].net_cost_today) == (
        Decimal(0), Decimal(2), Decimal("-100.00")
    )
    # the valuation formula of engine.types.Position with these prices equals the account's own day change
    day_change = sum(
        (p.qty * Decimal(str(px)) - p.start_qty * Decimal(str(prev)) - p.net_cost_today)
        for p, (px, prev) in ((by_symbol["AAPL"], (102.0, 100.0)), (by_symbol["MSFT"], (50.0, 51.0)))
    )
    account = broker.get_account(account_id)
    assert account.equity - account.last_equity - holdings.deposits_today == day_change
    assert source.load(["unknown"]) == []


def test_fills_and_transfers_are_announced_on_holdings_changed(
    db_url: str, clock: ManualClock, redis_url: str
) -> None:
    set_price(redis_url, "AAPL", 100.0)
    client = redis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    pubsub.subscribe(HOLDINGS_CHANNEL)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    broker = make_broker(db_url, clock, redis_url, on_change=HoldingsNotifier(redis_url))
    account_id, _ = funded_account(broker, clock, "500")
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    seen = []
    while (message := pubsub.get_message(timeout=1)) is not None:
        seen.append(json.loads(message["data"]))
    mine = [ids for ids in seen if account_id in ids]  # the channel is server-wide: other runs announce too
    assert all(ids == [account_id] for ids in mine)
    assert len(mine) >= 2  # the deposit completing, then the fill
    pubsub.close()
    client.close()


def test_broker_from_settings_builds_the_paper_ledger(tmp_path, clock: ManualClock, redis_url: str) -> None:
    settings = load_settings({"CLERA_DATA_DIR": str(tmp_path)}, env_file=None)
    broker = broker_from_settings(settings, clock, RedisPriceReader(redis_url))
    assert isinstance(broker, PaperBroker)
    account = broker.create_account(application())
    assert (tmp_path / "clera.db").is_file()
    again = PaperBroker(Database(f"sqlite:///{tmp_path / 'clera.db'}"), clock, RedisPriceReader(redis_url))
    assert again.get_account(account.id).status == "ACTIVE"


def test_the_position_source_from_settings_reads_the_ledger_and_drops_closed_accounts(
    tmp_path, clock: ManualClock, redis_url: str
) -> None:
    settings = load_settings({"CLERA_DATA_DIR": str(tmp_path), "REDIS_URL": redis_url}, env_file=None)
    source = position_source_from_settings(settings, clock=clock)
    broker = broker_from_settings(settings, clock, RedisPriceReader(redis_url))
    account_id, rel_id = funded_account(broker, clock, "40")
    [holdings] = source.load_all()
    assert (holdings.account_id, holdings.cash, holdings.deposits_today) == (
        account_id,
        Decimal("40.00"),
        Decimal("40.00"),
    )
    broker.create_transfer(account_id, rel_id, Decimal("39.50"), "OUTGOING")
    broker.close_account(account_id)
    assert source.load_all() == [] and source.load([account_id]) == []


def test_the_paper_world_follows_a_replay_clock(tmp_path, redis_url: str) -> None:
    """On the replayed market clock a deposit lands at the next replayed open and a night order fills there."""
    set_price(redis_url, "IBM", 200.0)
    wall = [10.0]  # seconds since the replay epoch; 60 s per replayed day, open for the first 48 s
    clock = ReplayClock(dt.date(2012, 6, 1), 60.0, 0.0, 0.8, wall=lambda: wall[0])
    broker = PaperBroker(Database(sqlite_url(tmp_path)), clock, RedisPriceReader(redis_url))
    account_id, rel_id = open_account(broker)
    deposit = broker.create_transfer(account_id, rel_id, Decimal("1000"), "INCOMING")
    wall[0] = 50.0  # Friday 2012-06-01 after the close
    assert broker.get_transfer(account_id, deposit.id).status == "SENT_TO_CLEARING"
    wall[0] = 61.0  # Monday 2012-06-04, just after the open
    assert broker.get_account(account_id).cash == Decimal("1000.00")
    wall[0] = 110.0  # Monday night
    order = broker.submit_order(account_id, OrderRequest(symbol="IBM", side="buy", qty=Decimal(2)))
    assert order.status == "accepted"
    wall[0] = 121.0  # Tuesday's open
    assert broker.get_order(account_id, order.id).status == "filled"
    [fill] = [a for a in broker.list_activities(account_id) if a.activity_type == "FILL"]
    assert fill.date.date() == dt.date(2012, 6, 5)


def test_an_unreachable_or_malformed_price_store_never_corrupts_the_ledger(
    db_url: str, clock: ManualClock, redis_url: str
) -> None:
    set_price(redis_url, "AAPL", 100.0)
    broker = make_broker(db_url, clock, redis_url)
    account_id, _ = funded_account(broker, clock, "500")
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(2)))
    redis.Redis.from_url(redis_url).set("price:MSFT", b"{not json")
    with pytest.raises(Rejected, match="no price for MSFT"):
        broker.submit_order(account_id, OrderRequest(symbol="MSFT", side="buy", qty=Decimal(1)))
    offline = PaperBroker(broker.db, clock, RedisPriceReader(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(Unavailable) as exc:
        offline.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(1)))
    assert exc.value.status == 503
    account = offline.get_account(account_id)  # valued at cost while prices are unreachable
    assert (account.cash, account.equity) == (Decimal("300.00"), Decimal("500.00"))
    assert len(offline.list_orders(account_id)) == 1


def test_broker_from_settings_builds_alpaca_when_asked(clock: ManualClock, redis_url: str) -> None:
    settings = load_settings(
        {
            "CLERA_BROKER": "alpaca",
            "BROKER_API_KEY": "key",
            "BROKER_SECRET_KEY": "secret",
            "CLERA_ALPACA_BROKER_URL": f"http://127.0.0.1:{free_port()}",
        },
        env_file=None,
    )
    broker = broker_from_settings(settings, clock, RedisPriceReader(redis_url))
    assert type(broker).__name__ == "AlpacaBroker"


def test_an_unreachable_ledger_database_is_a_typed_error(tmp_path, clock: ManualClock, redis_url: str) -> None:
    with pytest.raises(Unavailable) as exc:
        make_broker(f"postgresql://postgres@127.0.0.1:{free_port()}/test", clock, redis_url)
    assert exc.value.status == 503 and exc.value.code == "ledger_unavailable"
    broker = make_broker(sqlite_url(tmp_path), clock, redis_url)
    account_id, rel_id = open_account(broker)
    broker.db.close()
    (tmp_path / "ledger.db").rename(tmp_path / "moved.db")
    (tmp_path / "ledger.db").mkdir()  # the file is gone and cannot be reopened
    with pytest.raises(Unavailable):
        broker.create_transfer(account_id, rel_id, Decimal("10"), "INCOMING")
    broker.db.close()
    (tmp_path / "ledger.db").rmdir()
    (tmp_path / "moved.db").rename(tmp_path / "ledger.db")
    assert broker.list_transfers(account_id) == []  # nothing half-written


def test_a_ledger_of_the_first_schema_upgrades_with_its_money_intact(
    db_url: str, clock: ManualClock, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger written by the first release (schema v1 only) is migrated in place; nothing is lost."""
    from brokerage import ledger_schema

    set_price(redis_url, "AAPL", 100.0)
    with monkeypatch.context() as first_release:
        first_release.setattr("brokerage.paper.STEPS", ledger_schema.STEPS[:1])
        old = make_broker(db_url, clock, redis_url)
        account_id, _ = funded_account(old, clock, "1000")
        old.submit_order(account_id, OrderRequest(symbol="AAPL", side="buy", qty=Decimal(2)))
        old.db.close()
    broker = make_broker(db_url, clock, redis_url)
    versions = broker.db.fetchall(
        "SELECT version FROM schema_migrations WHERE component = ?", (ledger_schema.COMPONENT,)
    )
    assert sorted(r["version"] for r in versions) == list(range(1, len(ledger_schema.STEPS) + 1))
    assert broker.get_account(account_id).cash == Decimal("800.00")
    assert [(p.symbol, p.qty) for p in broker.list_positions(account_id)] == [("AAPL", Decimal(2))]
    broker.submit_order(account_id, OrderRequest(symbol="AAPL", side="sell", qty=Decimal(1)))
    assert broker.get_account(account_id).cash == Decimal("900.00")
    broker.db.close()
