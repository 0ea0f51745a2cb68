"""One contract for every `Store`: SQLite file, the machine's PostgreSQL, Supabase via a PostgREST stand-in."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest
from postgrest import APIError, CountMethod
from standins.postgrest import PostgrestStandIn
from supabase import create_client
from supabase.lib.client_options import SyncClientOptions

from brokerage.clera_schema import CLERA_SCHEMA_SQL
from brokerage.clera_store import CleraSqlStore
from brokerage.clera_supabase_store import CleraSupabaseStore
from brokerage.errors import Conflict, InvalidRequest, NotFound, Unavailable
from brokerage.sql import INTEGRITY, Database
from brokerage.sql_store import SqlStore
from brokerage.store import CompanyProfile, Store
from brokerage.store_schema import schema_sql
from brokerage.supabase_store import SupabaseStore, error_from_postgrest
from engine.clock import ManualClock

UTC = dt.UTC
START = dt.datetime(2026, 3, 2, 15, 30, 0, 123456, tzinfo=UTC)
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "brokerage" / "supabase_schema.sql"
CLERA_SCHEMA_FILE = SCHEMA_FILE.with_name("clera_schema.sql")
SERVICE_KEY = "service-role-key-for-tests"

MakeStore = Callable[[], Store]


def user(name: str) -> str:
    """A Supabase-style user id (a UUID, as `user_onboarding.user_id` of an existing Clera database holds)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"clera-test:{name}"))


ALICE, BOB, CAROL, MALLORY, SHARED_USER, U1 = map(user, ("alice", "bob", "carol", "mallory", "shared-user", "u1"))
# The frontend's tables of an existing Clera database, as its migrations made them before the closure
# columns (which CleraSqlStore adds): the onboarding enum, user_onboarding, the seed's company_profiles.
CLERA_FRONTEND_DDL = """
CREATE TYPE onboarding_status AS ENUM ('not_started', 'in_progress', 'submitted', 'approved');
CREATE TABLE user_onboarding (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id UUID NOT NULL,
    status onboarding_status NOT NULL DEFAULT 'not_started',
    onboarding_data JSONB NOT NULL DEFAULT '{}',
    alpaca_account_id TEXT,
    alpaca_account_number TEXT,
    alpaca_account_status TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE company_profiles (
    id BIGSERIAL PRIMARY KEY, symbol TEXT NOT NULL UNIQUE, company_name TEXT NOT NULL, price NUMERIC, beta NUMERIC,
    vol_avg BIGINT, market_cap BIGINT, last_div NUMERIC, range TEXT, changes NUMERIC, currency TEXT, cik TEXT,
    isin TEXT, cusip TEXT, exchange TEXT, exchange_short_name TEXT, industry TEXT, website TEXT, description TEXT,
    ceo TEXT, sector TEXT, country TEXT, full_time_employees TEXT, phone TEXT, address TEXT, city TEXT, state TEXT,
    zip TEXT, dcf_diff NUMERIC, dcf NUMERIC, image TEXT, ipo_date DATE, default_image BOOLEAN DEFAULT false,
    is_etf BOOLEAN DEFAULT false, is_actively_trading BOOLEAN DEFAULT true, is_adr BOOLEAN DEFAULT false,
    is_fund BOOLEAN DEFAULT false, created_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ DEFAULT now()
);
"""


def clera_layout(store: Store) -> bool:
    return isinstance(store, (CleraSqlStore, CleraSupabaseStore))


def shown(store: Store, status: str) -> str:
    """The status a store reads back: Clera's enum has no `active` and writes it as `approved`."""
    return "approved" if clera_layout(store) and status == "active" else status


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def postgrest(pg_url: str) -> Iterator[PostgrestStandIn]:
    """The PostgREST stand-in over a fresh PostgreSQL schema holding brokerage/supabase_schema.sql."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(SCHEMA_FILE.read_text())
    with PostgrestStandIn(pg_url, SERVICE_KEY) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres", "supabase", "clera_postgres", "clera_supabase"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path, clock: ManualClock) -> Iterator[MakeStore]:
    """A factory of migrated stores over one back end: a second call is the same data after a restart."""
    opened: list[Database] = []
    if request.param == "clera_supabase":
        pg = request.getfixturevalue("pg_url")
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(CLERA_FRONTEND_DDL)
            conn.execute(CLERA_SCHEMA_FILE.read_text())
        with PostgrestStandIn(pg, SERVICE_KEY) as clera_server:

            def make_clera_supabase() -> Store:
                store = CleraSupabaseStore(clera_server.url, SERVICE_KEY, clock=clock)
                store.migrate()
                return store

            yield make_clera_supabase
        return
    if request.param == "supabase":
        server: PostgrestStandIn = request.getfixturevalue("postgrest")

        def make_supabase() -> Store:
            store = SupabaseStore(server.url, SERVICE_KEY, clock=clock)
            store.migrate()
            return store

        yield make_supabase
        return
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    if request.param == "clera_postgres":
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(CLERA_FRONTEND_DDL)
    kind = CleraSqlStore if request.param == "clera_postgres" else SqlStore

    def make() -> Store:
        db = Database(url)
        opened.append(db)
        store = kind(db, clock=clock)
        store.migrate()
        return store

    yield make
    for db in opened:
        db.close()


@pytest.fixture
def store(make_store: MakeStore) -> Store:
    return make_store()


def _aware_utc(moment: dt.datetime | None) -> bool:
    return moment is not None and moment.utcoffset() == dt.timedelta(0)


# -- users ----------------------------------------------------------------------------------------


def test_ensure_user_creates_once_and_keeps_first_creation_time(store: Store, clock: ManualClock) -> None:
    assert store.get_user(U1) is None
    first = store.ensure_user(U1)
    assert first.id == U1 and first.email is None
    assert first.created_at == START and _aware_utc(first.created_at)

    clock.advance(dt.timedelta(hours=1))
    again = store.ensure_user(U1, "Ada@Example.COM ")
    assert again.created_at == START
    assert again.email == "ada@example.com"
    # no email given: the known one stays
    assert store.ensure_user(U1).email == "ada@example.com"
    assert store.get_user(U1) == again


@pytest.mark.parametrize("bad", ["", "   ", None, 7])
def test_blank_ids_are_invalid_requests(store: Store, bad: object) -> None:
    with pytest.raises(InvalidRequest):
        store.ensure_user(bad)  # type: ignore[arg-type]  # the wrong type is the case under test
    with pytest.raises(InvalidRequest):
        store.add_account(U1, bad)  # type: ignore[arg-type]  # the wrong type is the case under test


# -- ownership ------------------------------------------------------------------------------------


def test_ownership_is_per_user(store: Store, clock: ManualClock) -> None:
    store.ensure_user(ALICE)
    a1 = store.add_account(ALICE, "acc-a1", email="alice@example.com", account_number="100")
    clock.advance(dt.timedelta(seconds=1))
    a2 = store.add_account(ALICE, "acc-a2")
    b1 = store.add_account(BOB, "acc-b1")  # bob did not exist yet: created on the way

    assert [r.account_id for r in store.accounts_of(ALICE)] == ["acc-a1", "acc-a2"]
    assert [r.account_id for r in store.accounts_of(BOB)] == ["acc-b1"]
    assert store.accounts_of(CAROL) == []
    assert store.get_user(BOB) is not None

    assert store.owner_of("acc-a2") == ALICE
    assert store.owner_of("acc-b1") == BOB
    assert store.owner_of("acc-unknown") is None

    assert store.get_account("acc-a1") == a1
    assert store.get_account("acc-b1") == b1
    assert store.get_account("acc-unknown") is None
    assert a1.status == "submitted" and a1.account_number == "100" and a1.email == "alice@example.com"
    assert a2.created_at == START + dt.timedelta(seconds=1) and _aware_utc(a2.updated_at)
    assert a1.closure_requested_at is None and a1.closed_at is None and a1.confirmation_code is None


def test_add_account_twice_is_idempotent_for_the_owner_and_a_conflict_for_another_user(
    store: Store, clock: ManualClock
) -> None:
    first = store.add_account(ALICE, "acc-1", email="a@example.com", status="approved")
    clock.advance(dt.timedelta(minutes=5))
    again = store.add_account(ALICE, "acc-1", email="a@example.com", status="approved")
    assert again == first
    assert len(store.accounts_of(ALICE)) == 1

    with pytest.raises(Conflict):
        store.add_account(MALLORY, "acc-1")
    assert store.owner_of("acc-1") == ALICE
    assert store.accounts_of(MALLORY) == []


def test_account_by_email_ignores_case_and_finds_nothing_for_strangers(store: Store) -> None:
    store.add_account(ALICE, "acc-a", email="Alice@Example.com")
    store.add_account(BOB, "acc-b", email="bob@example.com")
    found = store.account_by_email("ALICE@example.COM")
    assert found is not None and found.account_id == "acc-a" and found.user_id == ALICE
    assert store.account_by_email("nobody@example.com") is None


def test_one_account_per_email_decided_by_the_store(store: Store) -> None:
    """The email check is not check-then-act: a second account with the email fails to be written."""
    first = store.add_account(ALICE, "acc-a", email="Ada@Example.com")
    for user, account in ((BOB, "acc-b"), (ALICE, "acc-a2")):
        with pytest.raises(Conflict) as taken:
            store.add_account(user, account, email="ada@example.COM")
        assert (taken.value.code, taken.value.status) == ("email_in_use", 409)
        assert store.get_account(account) is None
    assert store.add_account(ALICE, "acc-a", email="ada@example.com") == first  # repeating is still harmless
    store.add_account(BOB, "acc-b")  # accounts without an email do not collide
    store.add_account(BOB, "acc-c")
    assert store.account_by_email("ADA@example.com") == first


def test_email_claims_hold_one_user_per_email(store: Store) -> None:
    mine = store.claim_email(ALICE, " Ada@Example.com")
    assert (mine.email, mine.user_id, mine.new) == ("ada@example.com", ALICE, True)
    assert store.claim_email(ALICE, "ada@example.com").new is False  # a retry keeps it
    theirs = store.claim_email(BOB, "ADA@example.com")
    assert (theirs.user_id, theirs.new) == (ALICE, False)

    store.release_email(BOB, "ada@example.com")  # not bob's to release
    assert store.claim_email(BOB, "ada@example.com").user_id == ALICE
    store.release_email(ALICE, "ADA@example.com")
    taken = store.claim_email(BOB, "ada@example.com")
    assert (taken.user_id, taken.new) == (BOB, True)
    for blank in ("", "  ", None):
        with pytest.raises(InvalidRequest):
            store.claim_email(ALICE, blank)  # type: ignore[arg-type]  # the wrong type is the case under test


def race(n: int, worker: Callable[[int], object]) -> None:
    """Runs worker(0) .. worker(n-1) on n threads released together (replicas racing on one
    database); a worker's exception fails the test."""
    barrier = threading.Barrier(n)

    def released(i: int) -> object:
        barrier.wait()
        return worker(i)

    with ThreadPoolExecutor(n) as pool:
        list(pool.map(released, range(n)))


def test_concurrent_claims_and_accounts_on_one_email(make_store: MakeStore) -> None:
    """Many users race for one email: one claim wins, and of the accounts written with it only one lands."""
    stores = [make_store() for _ in range(2)]  # two "processes" on one database
    threads_n = 8
    claims: list[tuple[str, bool]] = []
    written: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        store = stores[i % 2]
        claim = store.claim_email(user(f"racer-{i}"), "contested@example.com")
        try:
            store.add_account(user(f"racer-{i}"), f"acc-{i}", email="Contested@example.com")
            outcome = written
        except Conflict as clash:
            assert clash.code == "email_in_use"  # noqa: PT017 - either outcome is fine; a refusal says why
            outcome = refused
        with lock:
            claims.append((claim.user_id, claim.new))
            outcome.append(f"acc-{i}")

    race(threads_n, worker)
    holders = {holder for holder, _ in claims}
    assert len(holders) == 1 and sum(new for _, new in claims) == 1
    assert len(written) == 1 and len(refused) == threads_n - 1
    found = make_store().account_by_email("contested@example.com")
    assert found is not None and found.account_id == written[0]


def test_list_account_ids_spans_every_user_and_leaves_out_closed_accounts(store: Store) -> None:
    """The accounts the live portfolio values with Alpaca: a new one shows at the next listing."""
    assert store.list_account_ids() == []
    store.add_account(BOB, "acc-2")
    store.add_account(ALICE, "acc-3", status="active")
    store.add_account(ALICE, "acc-1")
    assert store.list_account_ids() == ["acc-1", "acc-2", "acc-3"]

    store.set_account_status("acc-2", "pending_closure")  # still holds money until it is closed
    store.add_account(CAROL, "acc-4")
    assert store.list_account_ids() == ["acc-1", "acc-2", "acc-3", "acc-4"]
    store.set_account_status("acc-2", "closed")
    assert store.list_account_ids() == ["acc-1", "acc-3", "acc-4"]


# -- onboarding status ----------------------------------------------------------------------------


def test_status_transitions_stamp_their_times(store: Store, clock: ManualClock) -> None:
    store.add_account(ALICE, "acc-1")
    clock.advance(dt.timedelta(minutes=1))
    active = store.set_account_status("acc-1", "active")
    assert active.status == shown(store, "active") and active.updated_at == START + dt.timedelta(minutes=1)
    assert active.closure_requested_at is None

    clock.advance(dt.timedelta(minutes=1))
    requested_at = clock.now()
    pending = store.set_account_status("acc-1", "pending_closure", confirmation_code="CLS-0001")
    assert pending.status == "pending_closure"
    assert pending.closure_requested_at == requested_at and _aware_utc(pending.closure_requested_at)
    assert pending.closed_at is None
    assert pending.confirmation_code == "CLS-0001"

    clock.advance(dt.timedelta(minutes=1))  # a resumed closure re-enters the state: the stamp stays
    assert store.set_account_status("acc-1", "pending_closure").closure_requested_at == requested_at

    clock.advance(dt.timedelta(days=1))
    closed = store.set_account_status("acc-1", "closed")
    assert closed.closed_at == clock.now() and _aware_utc(closed.closed_at)
    assert closed.closure_requested_at == requested_at
    assert closed.confirmation_code == "CLS-0001"  # kept when not given again
    assert store.get_account("acc-1") == closed

    with pytest.raises(Conflict):
        store.set_account_status("acc-1", "active")
    assert store.get_account("acc-1") == closed


def test_invalid_status_and_unknown_account(store: Store) -> None:
    store.add_account(ALICE, "acc-1")
    with pytest.raises(InvalidRequest):
        store.set_account_status("acc-1", "frozen")  # type: ignore[arg-type]  # the wrong type is the case under test
    with pytest.raises(InvalidRequest):
        store.add_account(ALICE, "acc-2", status="frozen")  # type: ignore[arg-type]  # the wrong type is the case under test
    assert store.get_account("acc-2") is None
    assert store.get_account("acc-1").status == "submitted"
    with pytest.raises(NotFound):
        store.set_account_status("acc-unknown", "active")


# -- lifecycle ------------------------------------------------------------------------------------


def test_migrate_again_and_reopen_keep_the_data(make_store: MakeStore) -> None:
    store = make_store()
    store.add_account(ALICE, "acc-1", email="a@example.com")
    store.upsert_company_profiles([CompanyProfile(symbol="AAPL", company_name="Apple Inc.")])
    store.migrate()
    store.migrate()
    reopened = make_store()  # a restart: a new connection, migrate() on start
    assert reopened.owner_of("acc-1") == ALICE
    assert reopened.get_account("acc-1") == store.get_account("acc-1")
    assert reopened.count_company_profiles() == 1


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_upgrade_from_version_1_keeps_the_accounts_and_adds_the_email_rules(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'v1.db'}" if engine == "sqlite" else request.getfixturevalue("pg_url"))
    try:
        db.migrate("store", schema_sql(db.dialect)[:1])  # a database a release before this one left
        old = SqlStore(db)
        old.add_account(ALICE, "acc-a", email="a@example.com")
        old.add_account(BOB, "acc-b", email="b@example.com")
        upgraded = SqlStore(db)
        upgraded.migrate()
        assert upgraded.owner_of("acc-a") == ALICE and upgraded.account_by_email("b@example.com") is not None
        with pytest.raises(Conflict):
            upgraded.add_account(CAROL, "acc-c", email="a@example.com")
        assert upgraded.claim_email(CAROL, "c@example.com").new is True
    finally:
        db.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_upgrade_brings_the_old_profile_table_to_the_seed_shape(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'v2.db'}" if engine == "sqlite" else request.getfixturevalue("pg_url"))
    try:
        db.migrate("store", schema_sql(db.dialect)[:2])  # this project's table before the seed's shape
        db.execute(
            "INSERT INTO company_profiles (symbol, name, sector, industries, description, isin, country, facts,"
            " source, updated_at) VALUES (?, ?, NULL, ?, NULL, ?, ?, ?, ?, ?)",
            ("AAPL", "Apple Inc.", '["Consumer Electronics", "Computer Hardware"]', "US0378331005", "US",
             '{"founded": "1976"}', "pytickersymbols", START if engine == "postgres" else START.isoformat()),
        )
        upgraded = SqlStore(db)
        upgraded.migrate()
        upgraded.migrate()
        assert upgraded.get_company_profile("AAPL") == CompanyProfile(
            symbol="AAPL", company_name="Apple Inc.", industry="Consumer Electronics", isin="US0378331005",
            country="US", facts={"founded": "1976"}, source="pytickersymbols", updated_at=START,
        )
    finally:
        db.close()


@pytest.mark.parametrize("engine", ["sqlite", "postgres"])
def test_upgrade_to_version_4_adds_bank_links_beside_the_accounts(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db = Database(f"sqlite:///{tmp_path / 'v3.db'}" if engine == "sqlite" else request.getfixturevalue("pg_url"))
    try:
        db.migrate("store", schema_sql(db.dialect)[:3])  # a database from before bank links were recorded
        SqlStore(db).add_account(ALICE, "acc-a")
        upgraded = SqlStore(db)
        upgraded.migrate()
        assert db.fetchone("SELECT MAX(version) AS v FROM schema_migrations WHERE component = 'store'") == {"v": 4}
        assert upgraded.owner_of("acc-a") == ALICE
        assert upgraded.record_bank_link("acc-a", "rel-1", "item-1").item_id == "item-1"
        with pytest.raises(INTEGRITY):  # this layout's bank links belong to its accounts
            upgraded.record_bank_link("acc-nobody", "rel-2", "item-2")
    finally:
        db.close()


def test_migrate_from_several_processes_at_once(make_store: MakeStore) -> None:
    """Every replica migrates on start; on a fresh database they race, and all of them must succeed."""
    race(4, lambda _: make_store().ensure_user(U1))
    assert make_store().get_user(U1) is not None


def test_concurrent_ensure_user_and_add_account(make_store: MakeStore) -> None:
    stores = [make_store() for _ in range(2)]  # two "processes" on one database
    threads_n = 8
    outcomes: list[tuple[str, str]] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        store = stores[i % 2]
        store.ensure_user(SHARED_USER)
        store.add_account(SHARED_USER, "shared-acc")
        store.add_account(SHARED_USER, f"own-acc-{i}")
        try:  # every thread races a different user for one contested account
            store.add_account(user(f"racer-{i}"), "contested")
            result = ("won", user(f"racer-{i}"))
        except Conflict:
            result = ("lost", user(f"racer-{i}"))
        with lock:
            outcomes.append(result)

    race(threads_n, worker)
    store = make_store()
    assert sorted(r.account_id for r in store.accounts_of(SHARED_USER)) == sorted(
        ["shared-acc", *(f"own-acc-{i}" for i in range(threads_n))]
    )
    winners = [who for result, who in outcomes if result == "won"]
    assert len(outcomes) == threads_n and len(winners) == 1
    assert store.owner_of("contested") == winners[0]


# -- company profiles -----------------------------------------------------------------------------


def test_company_profile_round_trip_and_update(store: Store, clock: ManualClock) -> None:
    assert store.count_company_profiles() == 0
    assert store.get_company_profile("AAPL") is None
    apple = CompanyProfile(
        symbol="aapl",
        company_name="Apple Inc.",
        price=189.25,
        market_cap=2_900_000_000_000.0,
        beta=1.24,
        vol_avg=55_000_000.0,
        last_div=0.96,
        range="164.08-199.62",
        changes=-1.5,
        currency="USD",
        exchange="NASDAQ Global Select",
        exchange_short_name="NASDAQ",
        industry="Consumer Electronics",
        sector="Technology",
        isin="US0378331005",
        country="US",
        ceo="Tim Cook",
        full_time_employees="164000",
        image="https://images.financialmodelingprep.com/symbol/AAPL.png",
        ipo_date=dt.date(1980, 12, 12),
        is_actively_trading=True,
        is_etf=False,
        facts={"founded": "1976"},
        source="pytickersymbols",
    )
    etf = CompanyProfile(symbol="SPY", company_name="SPDR S&P 500 ETF Trust", is_etf=True, is_fund=True, source="fmp")
    assert store.upsert_company_profiles([apple, etf]) == 2
    assert store.upsert_company_profiles([]) == 0
    assert store.count_company_profiles() == 2

    got = store.get_company_profile("AAPL")
    assert got is not None
    assert got.symbol == "AAPL"  # symbols are kept upper-case
    expected = msgspec.structs.replace(apple, symbol="AAPL", updated_at=START)
    if clera_layout(store):  # the seed's table has no place for this project's `source` and `facts`
        expected = msgspec.structs.replace(expected, source="fmp", facts={})
    assert got == expected
    assert store.get_company_profile(" aapl ") == got
    spy = store.get_company_profile("SPY")
    assert spy is not None and (spy.is_etf, spy.is_fund, spy.is_adr, spy.ipo_date, spy.price) == (
        True,
        True,
        False,
        None,
        None,
    )

    clock.advance(dt.timedelta(days=1))
    store.upsert_company_profiles([CompanyProfile(symbol="SPY", company_name="SPDR S&P 500", sector="Funds")])
    updated = store.get_company_profile("SPY")
    assert updated is not None
    assert (updated.company_name, updated.sector, updated.is_etf, updated.updated_at) == (
        "SPDR S&P 500", "Funds", False, clock.now()
    )
    assert store.count_company_profiles() == 2
    assert store.get_company_profile("NOPE") is None
    assert store.get_company_profile("") is None


def test_profile_update_times_count_fmp_profiles_only(store: Store, clock: ManualClock) -> None:
    store.upsert_company_profiles([CompanyProfile(symbol="AAPL", company_name="Apple", source="pytickersymbols")])
    clock.advance(dt.timedelta(hours=2))
    store.upsert_company_profiles([CompanyProfile(symbol="MSFT", company_name="Microsoft", source="fmp")])
    expected = {"MSFT": START + dt.timedelta(hours=2)}
    if clera_layout(store):  # every row of the seed's table is its collector's (FMP)
        expected["AAPL"] = START
    assert store.profile_update_times(["aapl", "MSFT", "NOPE"]) == expected
    assert store.profile_update_times([]) == {}


# -- bank links made through Plaid ------------------------------------------------------------------


def test_bank_links_record_what_plaid_says_of_their_item(make_store: MakeStore, clock: ManualClock) -> None:
    store = make_store()
    store.add_account(ALICE, "acc-a1")
    store.add_account(BOB, "acc-b1")
    linked = store.record_bank_link("acc-a1", "rel-1", "item-1")
    assert (linked.account_id, linked.item_id, linked.needs_relink, linked.last_event) == (
        "acc-a1",
        "item-1",
        False,
        None,
    )
    assert linked.created_at == linked.updated_at == START and _aware_utc(linked.created_at)
    other = store.record_bank_link("acc-b1", "rel-2", "item-2")

    clock.advance(dt.timedelta(minutes=5))
    [marked] = store.record_item_event("item-1", "ITEM/ERROR ITEM_LOGIN_REQUIRED", True)
    assert (marked.relationship_id, marked.needs_relink, marked.last_event) == (
        "rel-1",
        True,
        "ITEM/ERROR ITEM_LOGIN_REQUIRED",
    )
    assert marked.updated_at == START + dt.timedelta(minutes=5) and marked.created_at == START
    assert store.bank_links_of("acc-a1") == [marked]
    assert make_store().bank_links_of("acc-b1") == [other]  # another Item's link is left alone, after a restart too

    [noted] = store.record_item_event("item-1", "ITEM/WEBHOOK_UPDATE_ACKNOWLEDGED", None)
    assert (noted.needs_relink, noted.last_event) == (True, "ITEM/WEBHOOK_UPDATE_ACKNOWLEDGED")  # the flag stays
    [repaired] = store.record_item_event("item-1", "ITEM/LOGIN_REPAIRED", False)
    assert not repaired.needs_relink
    assert store.record_item_event("item-unknown", "ITEM/ERROR ITEM_LOGIN_REQUIRED", True) == []
    assert store.bank_links_of("acc-nobody") == []

    store.record_item_event("item-1", "ITEM/PENDING_DISCONNECT", True)
    clock.advance(dt.timedelta(minutes=5))
    again = store.record_bank_link("acc-a1", "rel-1", "item-3")  # recorded again: starts afresh
    assert (again.item_id, again.needs_relink, again.last_event) == ("item-3", False, None)
    assert make_store().bank_links_of("acc-a1") == [again]


# -- Supabase specifics ---------------------------------------------------------------------------


def test_supabase_schema_file_is_the_postgres_migration() -> None:
    shipped = "".join(line for line in SCHEMA_FILE.read_text().splitlines(keepends=True) if not line.startswith("--"))
    assert shipped == "".join(schema_sql("postgres"))


def test_clera_schema_file_is_the_clera_migration() -> None:
    shipped = "".join(
        line for line in CLERA_SCHEMA_FILE.read_text().splitlines(keepends=True) if not line.startswith("--")
    )
    assert shipped == "".join(CLERA_SCHEMA_SQL)


def test_supabase_store_says_when_the_schema_was_not_applied(pg_url: str) -> None:
    with PostgrestStandIn(pg_url, SERVICE_KEY) as server:  # an empty schema: nobody ran the SQL file
        store = SupabaseStore(server.url, SERVICE_KEY)
        with pytest.raises(Unavailable, match=r"supabase_schema\.sql"):
            store.migrate()


def test_supabase_store_with_a_wrong_key_is_unavailable(postgrest: PostgrestStandIn) -> None:
    with pytest.raises(Unavailable):
        SupabaseStore(postgrest.url, "not-the-key").get_user(U1)
    with pytest.raises(Unavailable):
        SupabaseStore("", "")
    with pytest.raises(Unavailable):
        SupabaseStore("ftp://example.invalid", SERVICE_KEY)


def test_supabase_store_without_a_server_is_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(Unavailable, match="not reachable"):
        SupabaseStore(url, SERVICE_KEY).add_account(ALICE, "acc-1")


def test_supabase_store_lists_accounts_past_postgrest_max_rows(pg_url: str) -> None:
    """A PostgREST that answers at most 2 rows a request (Supabase caps at 1000) still lists every account."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(SCHEMA_FILE.read_text())
    with PostgrestStandIn(pg_url, SERVICE_KEY, max_rows=2) as server:
        store = SupabaseStore(server.url, SERVICE_KEY)
        ids = [f"acc-{i}" for i in range(7)]
        for account_id in ids:
            store.add_account(ALICE, account_id)
        store.set_account_status("acc-3", "closed")
        assert store.list_account_ids() == [a for a in ids if a != "acc-3"]
        reads = [path for method, path, _ in server.requests if method == "GET" and "select=account_id" in path]
        assert len(reads) == 4  # three capped pages, then the empty one that ends the listing


def test_supabase_store_speaks_postgrest(postgrest: PostgrestStandIn) -> None:
    store = SupabaseStore(postgrest.url, SERVICE_KEY)
    store.add_account(ALICE, "acc-1")
    paths = [path for _, path, _ in postgrest.requests]
    assert any(p.startswith("/rest/v1/user_accounts?") and "on_conflict=account_id" in p for p in paths)
    assert all(p.startswith("/rest/v1/") for p in paths)


def test_postgrest_stand_in_speaks_the_wire_protocol(postgrest: PostgrestStandIn) -> None:
    """The stand-in through supabase-py itself: filters, ordering, upserts and PostgREST's error JSON."""
    client = create_client(postgrest.url, SERVICE_KEY, SyncClientOptions(httpx_client=httpx.Client()))
    users = client.table("app_users")
    stamp = START.isoformat()
    inserted = users.insert([{"id": f"u{i}", "email": f"u{i}@x.org", "created_at": stamp} for i in range(4)]).execute()
    assert [r["id"] for r in inserted.data] == ["u0", "u1", "u2", "u3"]

    with pytest.raises(APIError) as duplicate:
        users.insert({"id": "u1", "created_at": stamp}).execute()
    assert duplicate.value.code == "23505" and "already exists" in (duplicate.value.details or "")
    assert postgrest.requests[-1][0::2] == ("POST", 409)
    assert isinstance(error_from_postgrest(duplicate.value), Conflict)

    picked = users.select("id").in_("id", ["u3", "u1", "a,b"]).order("id", desc=True).limit(5).execute()
    assert picked.data == [{"id": "u3"}, {"id": "u1"}]
    assert users.select("id").neq("id", "u0").order("id").limit(1).execute().data == [{"id": "u1"}]

    merged = users.upsert({"id": "u2", "email": "new@x.org", "created_at": stamp}, on_conflict="id").execute()
    assert merged.data[0]["email"] == "new@x.org"
    ignored = users.upsert({"id": "u2", "created_at": stamp}, on_conflict="id", ignore_duplicates=True).execute()
    assert ignored.data == []

    patched = users.update({"email": None}).eq("id", "u3").execute()
    assert patched.data[0]["email"] is None
    assert users.delete().eq("id", "u0").execute().data[0]["id"] == "u0"
    counted = users.select("id", count=CountMethod.exact).limit(1).execute()
    assert counted.count == 3 and len(counted.data) == 1

    with pytest.raises(APIError) as unknown_column:
        users.select("id").eq("nope", "1").execute()
    assert unknown_column.value.code == "42703"
    assert isinstance(error_from_postgrest(unknown_column.value), InvalidRequest)
    with pytest.raises(APIError) as unknown_table:
        client.table("nope").select("*").execute()
    assert isinstance(error_from_postgrest(unknown_table.value), Unavailable)
