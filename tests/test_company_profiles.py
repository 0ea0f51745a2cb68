"""Default company profiles from pytickersymbols, loaded into a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerage.company_profiles import SYMBOL_ALIASES, default_profiles, load_default_company_profiles
from brokerage.sql import Database
from brokerage.sql_store import SqlStore
from brokerage.store import CompanyProfile


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    db = Database(f"sqlite:///{tmp_path / 'store.db'}")
    store = SqlStore(db)
    store.migrate()
    yield store
    db.close()


def test_first_start_loads_the_index_constituents(store: SqlStore) -> None:
    written = load_default_company_profiles(store)
    assert written == store.count_company_profiles() == len(default_profiles())
    expected = {"AAPL": "Apple", "MSFT": "Microsoft", "IBM": "IBM", "GOOG": "Alphabet", "FB": "Meta"}
    for symbol, name in expected.items():
        profile = store.get_company_profile(symbol)
        assert profile is not None, symbol
        assert profile.symbol == symbol
        assert name in profile.company_name
        assert profile.industry and profile.facts["industries"] and profile.isin and profile.country
        assert profile.facts["wikipedia_url"].startswith("https://en.wikipedia.org/")
        assert profile.source == "pytickersymbols" and profile.updated_at is not None


def test_offline_data_says_what_it_lacks_instead_of_inventing_it(store: SqlStore) -> None:
    load_default_company_profiles(store)
    apple = store.get_company_profile("AAPL")
    assert apple is not None
    assert apple.sector is None and apple.description is None
    assert "no company description" in apple.facts["data_note"] and "GICS" in apple.facts["data_note"]


def test_aliases_resolve_to_the_same_company(store: SqlStore) -> None:
    load_default_company_profiles(store)
    for alias, target in SYMBOL_ALIASES.items():
        via_alias, direct = store.get_company_profile(alias), store.get_company_profile(target)
        assert via_alias is not None and direct is not None
        assert (via_alias.company_name, via_alias.isin, via_alias.industry) == (
            direct.company_name,
            direct.isin,
            direct.industry,
        )
        assert via_alias.facts["alias_of"] == target and "alias_of" not in direct.facts
    # share classes listed in the US resolve to one company too
    goog, googl = store.get_company_profile("GOOG"), store.get_company_profile("GOOGL")
    assert goog is not None and googl is not None and goog.isin == googl.isin


def test_unknown_ticker_is_none(store: SqlStore) -> None:
    load_default_company_profiles(store)
    assert store.get_company_profile("ZZZZNOPE") is None


def test_loading_is_idempotent_and_never_overwrites_a_filled_table(store: SqlStore, tmp_path: Path) -> None:
    assert load_default_company_profiles(store) > 0
    assert load_default_company_profiles(store) == 0

    other = SqlStore(Database(f"sqlite:///{tmp_path / 'other.db'}"))
    other.migrate()
    other.upsert_company_profiles([CompanyProfile(symbol="AAPL", company_name="Apple (from FMP)", source="fmp")])
    assert load_default_company_profiles(other) == 0
    assert other.count_company_profiles() == 1
    assert other.get_company_profile("AAPL").company_name == "Apple (from FMP)"
    other.db.close()


def test_every_ticker_is_unique_and_upper_case() -> None:
    symbols = [p.symbol for p in default_profiles()]
    assert len(symbols) == len(set(symbols))
    assert all(s == s.strip().upper() and s for s in symbols)
