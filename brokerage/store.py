"""The `Store` port: users, who owns which brokerage account, onboarding/closure status, company profiles.

Implementations: `brokerage.sql_store.SqlStore` (SQLite file or PostgreSQL via `DATABASE_URL`) and
`brokerage.supabase_store.SupabaseStore` (Supabase's REST API through supabase-py). One contract
test suite runs against all three back ends. `brokerage.store_factory.store_from_settings` picks and
migrates the configured one (it lives apart so that the implementations can import this port).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal, Protocol

import msgspec

from brokerage.errors import Conflict, InvalidRequest

OnboardingStatus = Literal["submitted", "approved", "active", "rejected", "pending_closure", "closed"]
ONBOARDING_STATUSES: frozenset[str] = frozenset(OnboardingStatus.__args__)  # type: ignore[attr-defined]  # a Literal alias's values, at runtime
# What a stored account may say: ours, or the two earlier stages of Clera's `onboarding_status` enum
# (a row of an existing Clera database, CLERA_SCHEMA=clera; see brokerage/clera_store.py).
AccountStatus = OnboardingStatus | Literal["not_started", "in_progress"]


class User(msgspec.Struct, kw_only=True):
    id: str
    email: str | None = None
    created_at: dt.datetime


class AccountRecord(msgspec.Struct, kw_only=True):
    """A brokerage account as the product knows it; the broker holds the money, this holds the ownership."""

    account_id: str
    user_id: str
    status: AccountStatus = "submitted"
    email: str | None = None
    account_number: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    closure_requested_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    confirmation_code: str | None = None


class EmailClaim(msgspec.Struct, kw_only=True):
    """Who is opening an account with an email: `user_id` holds the claim, `new` if this call took it."""

    email: str
    user_id: str
    new: bool


class BankLink(msgspec.Struct, kw_only=True):
    """A bank link made through Plaid: the Plaid Item behind the broker's ACH relationship, and what
    Plaid's webhooks last said of it. `needs_relink` while the user must go through Link again."""

    relationship_id: str
    account_id: str
    item_id: str
    needs_relink: bool = False
    last_event: str | None = None  # "TYPE/CODE", then the error code if Plaid sent one
    created_at: dt.datetime
    updated_at: dt.datetime


class CompanyProfile(msgspec.Struct, kw_only=True):
    """A row of `company_profiles` in the seed's shape (its collector's column names, which the frontend
    reads for logos, names and pickers). Market figures are display data from FMP, hence floats.

    `source` and `facts` are this project's own columns: where the row came from (`fmp` or the offline
    `pytickersymbols`) and the offline data's extra facts. An existing Clera table has neither; read
    from it, a profile says `fmp`, which is what the seed's collector wrote there.
    """

    symbol: str
    company_name: str
    price: float | None = None
    beta: float | None = None
    vol_avg: float | None = None
    market_cap: float | None = None
    last_div: float | None = None
    range: str | None = None
    changes: float | None = None
    currency: str | None = None
    cik: str | None = None
    isin: str | None = None
    cusip: str | None = None
    exchange: str | None = None
    exchange_short_name: str | None = None
    industry: str | None = None
    website: str | None = None
    description: str | None = None
    ceo: str | None = None
    sector: str | None = None
    country: str | None = None
    full_time_employees: str | None = None
    phone: str | None = None
    address: str | None = None
    city: str | None = None
    state: str | None = None
    zip: str | None = None
    dcf_diff: float | None = None
    dcf: float | None = None
    image: str | None = None
    ipo_date: dt.date | None = None
    default_image: bool = False
    is_etf: bool = False
    is_actively_trading: bool = True
    is_adr: bool = False
    is_fund: bool = False
    updated_at: dt.datetime | None = None
    source: str = "fmp"
    facts: dict[str, str] = {}


class Store(Protocol):
    layout: str  # "own" (this project's tables) or "clera" (an existing Clera database's, CLERA_SCHEMA)

    def migrate(self) -> None:
        """Create or upgrade the schema; safe to call on every start, from several processes."""
        ...

    # users and ownership
    def ensure_user(self, user_id: str, email: str | None = None) -> User: ...
    def get_user(self, user_id: str) -> User | None: ...
    def add_account(
        self,
        user_id: str,
        account_id: str,
        *,
        email: str | None = None,
        account_number: str | None = None,
        status: OnboardingStatus = "submitted",
    ) -> AccountRecord:
        """Records that `user_id` owns `account_id`; repeating it is harmless, another owner is a Conflict."""
        ...
    def get_account(self, account_id: str) -> AccountRecord | None: ...
    def accounts_of(self, user_id: str) -> list[AccountRecord]: ...
    def owner_of(self, account_id: str) -> str | None: ...
    def account_by_email(self, email: str) -> AccountRecord | None: ...
    def claim_email(self, user_id: str, email: str) -> EmailClaim:
        """Reserves `email` for the account `user_id` is opening, before the broker creates it; one
        user per email, decided atomically. Kept once the account exists, so a broker account the
        store failed to record can be attached to its applicant later, and to nobody else."""
        ...
    def release_email(self, user_id: str, email: str) -> None:
        """Drops `user_id`'s claim on `email` (the broker refused the account); another user's stays."""
        ...
    def list_account_ids(self) -> list[str]:
        """Every account not closed, in id order: the accounts whose holdings the live portfolio values
        when the broker (Alpaca) cannot say which of its accounts are ours."""
        ...
    def set_account_status(
        self, account_id: str, status: OnboardingStatus, *, confirmation_code: str | None = None
    ) -> AccountRecord:
        """Moves the onboarding status; entering `pending_closure`/`closed` stamps its timestamp."""
        ...

    # bank links made through Plaid
    def record_bank_link(self, account_id: str, relationship_id: str, item_id: str) -> BankLink:
        """Notes the Plaid Item behind a new ACH relationship (recording one again starts it afresh)."""
        ...
    def record_item_event(self, item_id: str, event: str, needs_relink: bool | None) -> list[BankLink]:
        """Notes a webhook Plaid sent about `item_id` on every bank link it backs (none for an Item this
        store never linked); `needs_relink` None leaves the flag as it is."""
        ...
    def bank_links_of(self, account_id: str) -> list[BankLink]: ...

    # company profiles
    def upsert_company_profiles(self, profiles: list[CompanyProfile]) -> int: ...
    def get_company_profile(self, symbol: str) -> CompanyProfile | None: ...
    def count_company_profiles(self) -> int: ...
    def profile_update_times(self, symbols: list[str]) -> dict[str, dt.datetime]:
        """When each of `symbols` that has a stored FMP profile was last written (the collector's resume;
        offline profiles do not count)."""
        ...


def check_status(status: str) -> OnboardingStatus:
    if status not in ONBOARDING_STATUSES:
        raise InvalidRequest(
            f"unknown onboarding status {status!r}; expected one of {sorted(ONBOARDING_STATUSES)}",
            code="invalid_status",
        )
    return status  # type: ignore[return-value]  # checked against the Literal's values just above


def check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{kind} must be a non-empty string", code=f"invalid_{kind}")
    return value


def normalize_email(email: str | None) -> str | None:
    """Emails compare case-insensitively, so every store keeps them trimmed and lower-cased."""
    if email is None:
        return None
    if not isinstance(email, str):
        raise InvalidRequest("email must be a string", code="invalid_email")
    return email.strip().lower() or None


def check_email(email: str | None) -> str:
    """A normalized email that must be there (a claim on "no email" would block nobody and help nobody)."""
    wanted = normalize_email(email)
    if wanted is None:
        raise InvalidRequest("email must be a non-empty string", code="invalid_email")
    return wanted


def status_changes(
    current: AccountRecord, status: str, confirmation_code: str | None, now: dt.datetime
) -> dict[str, Any]:
    """The columns a status move writes, decided once here so that every store agrees.

    Entering `pending_closure` or `closed` stamps its time (re-entering the same status keeps the
    first stamp, so a resumed closure does not move it); `closed` is final.
    """
    check_status(status)
    if current.status == "closed" and status != "closed":
        raise Conflict(f"account {current.account_id} is closed", code="account_closed")
    changes: dict[str, Any] = {"status": status, "updated_at": now}
    if status != current.status and status == "pending_closure":
        changes["closure_requested_at"] = now
    if status != current.status and status == "closed":
        changes["closed_at"] = now
    if confirmation_code is not None:
        changes["confirmation_code"] = confirmation_code
    return changes


class NewAccount(msgspec.Struct, frozen=True, kw_only=True):
    """An `add_account` call, checked and normalized (ids non-empty, status known, email lower-cased)."""

    user_id: str
    account_id: str
    email: str | None
    account_number: str | None
    status: OnboardingStatus


class CheckedStore:
    """The `Store` methods that take ids and emails from callers: each checks and normalizes them here,
    once for every store, then leaves the writing or reading to the store's own `_` method."""

    def ensure_user(self, user_id: str, email: str | None = None) -> User:
        return self._ensure_user(check_id("user_id", user_id), normalize_email(email))

    def add_account(
        self,
        user_id: str,
        account_id: str,
        *,
        email: str | None = None,
        account_number: str | None = None,
        status: OnboardingStatus = "submitted",
    ) -> AccountRecord:
        wanted = NewAccount(
            user_id=check_id("user_id", user_id),
            account_id=check_id("account_id", account_id),
            status=check_status(status),
            email=normalize_email(email),
            account_number=account_number,
        )
        record = self._attach_account(wanted)
        if record.user_id != wanted.user_id:
            raise Conflict(f"account {wanted.account_id} belongs to another user", code="account_owned_elsewhere")
        return record

    def account_by_email(self, email: str) -> AccountRecord | None:
        wanted = normalize_email(email)
        return None if wanted is None else self._account_by_email(wanted)

    def claim_email(self, user_id: str, email: str) -> EmailClaim:
        return self._claim_email(check_id("user_id", user_id), check_email(email))

    def release_email(self, user_id: str, email: str) -> None:
        wanted = normalize_email(email)
        if wanted is not None:  # "no email" was never claimed
            self._release_email(user_id, wanted)

    def _ensure_user(self, user_id: str, email: str | None) -> User:
        raise NotImplementedError

    def _attach_account(self, new: NewAccount) -> AccountRecord:
        """Writes `new` unless its account id is recorded already; answers the account as stored."""
        raise NotImplementedError

    def _account_by_email(self, email: str) -> AccountRecord | None:
        raise NotImplementedError

    def _claim_email(self, user_id: str, email: str) -> EmailClaim:
        raise NotImplementedError

    def _release_email(self, user_id: str, email: str) -> None:
        raise NotImplementedError
