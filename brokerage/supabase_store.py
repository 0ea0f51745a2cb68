"""`SupabaseStore`: the `Store` port over Supabase's REST API (PostgREST) with supabase-py.

For deployments that reach Supabase only over HTTPS. The REST API cannot create tables, so the
schema ships as `brokerage/supabase_schema.sql` (the same DDL as `SqlStore`'s PostgreSQL migration)
and `migrate()` only checks that it has been applied. Races are settled by the database: creating a
user, an account or an email claim is an `ON CONFLICT DO NOTHING` upsert (a second account with the
same email meets the unique index: `email_in_use`), and a status move is a compare-and-set on the
current status, retried when another writer got there first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from postgrest import APIError, CountMethod, ReturnMethod
from supabase import Client, SupabaseException, create_client
from supabase.lib.client_options import SyncClientOptions

from brokerage import store
from brokerage.errors import BrokerageError, Conflict, InvalidRequest, NotFound, Unavailable
from brokerage.profile_rows import OWN_COLUMNS, normal_symbol, profile_from_row, profile_row
from brokerage.store import check_status, status_changes
from brokerage.store_rows import account_from_row, bank_link_from_row, moment, user_from_row
from engine.clock import Clock, WallClock

UTC = dt.UTC
TABLES = ("app_users", "user_accounts", "company_profiles", "email_claims", "bank_links")
_MISSING_TABLE_CODES = {"PGRST205", "42P01"}
_STATUS_RETRIES = 20
_UPSERT_CHUNK = 500
_PAGE = 1000  # ids asked for at once when listing accounts


def error_from_postgrest(error: APIError) -> BrokerageError:
    """PostgREST's error JSON -> the typed error the gateway maps to a status."""
    code, message = error.code or "", error.message or "Supabase request failed"
    if code == "23505":
        return Conflict(message, code="duplicate", details=error.details)
    if code == "23503":
        return Conflict(message, code="missing_reference", details=error.details)
    if code in _MISSING_TABLE_CODES:
        return Unavailable(
            f"Supabase has no table for the store ({message}); apply brokerage/supabase_schema.sql",
            code="store_schema_missing",
        )
    if code.startswith(("22", "23", "42", "PGRST1")):
        return InvalidRequest(message, code="invalid_request", details=error.details)
    return Unavailable(f"Supabase answered {code or 'an error'}: {message}", code="store_unavailable")


def to_wire(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds")
    return value.isoformat() if isinstance(value, dt.date) else value


class SupabaseStore(store.CheckedStore):
    """The store on Supabase tables `app_users`, `user_accounts` and `company_profiles`."""

    layout = "own"

    def __init__(self, url: str, key: str, *, clock: Clock | None = None, timeout_s: float = 10.0) -> None:
        if not url or not key:
            raise Unavailable(
                "the Supabase store needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY", code="store_unconfigured"
            )
        try:
            http = httpx.Client(timeout=timeout_s, follow_redirects=True)
            self._client: Client = create_client(url, key, SyncClientOptions(httpx_client=http))
        except SupabaseException as error:  # supabase-py rejects a malformed URL here
            raise Unavailable(f"cannot use SUPABASE_URL {url!r}: {error}", code="store_unconfigured") from error
        self._clock = clock or WallClock()
        self.profile_columns: tuple[str, ...] = OWN_COLUMNS

    def _now(self) -> dt.datetime:
        return self._clock.now().astimezone(UTC)

    def _run(self, build: Callable[..., Any]) -> Any:
        """Executes one PostgREST request; every failure leaves as a typed brokerage error.

        `build` is called with the client; it is typed loosely because the callers' lambdas bind loop
        values as default arguments, which a `Callable[[Client], Any]` would not accept."""
        try:
            return build(self._client).execute()
        except APIError as error:
            raise error_from_postgrest(error) from error
        except httpx.HTTPError as error:
            raise Unavailable(f"Supabase is not reachable: {error}", code="store_unavailable") from error

    def has_table(self, table: str) -> bool:
        try:
            self._run(lambda c: c.table(table).select("*").limit(1))
        except Unavailable as missing:
            if missing.code == "store_schema_missing":
                return False
            raise
        return True

    def migrate(self) -> None:
        """Checks that the schema is there: tables cannot be created over the REST API."""
        for table in TABLES:
            self._run(lambda c, t=table: c.table(t).select("*").limit(1))

    # -- users and ownership -------------------------------------------------------------------
    def _ensure_user(self, user_id: str, email: str | None) -> store.User:
        self._insert_user(user_id)
        if email is not None:
            rows = self._run(lambda c: c.table("app_users").update({"email": email}).eq("id", user_id)).data
            return user_from_row(rows[0])
        user = self.get_user(user_id)
        assert user is not None  # just written; users are never deleted
        return user

    def _insert_user(self, user_id: str) -> None:
        row = {"id": user_id, "created_at": to_wire(self._now())}
        self._run(lambda c: c.table("app_users").upsert(row, on_conflict="id", ignore_duplicates=True))

    def get_user(self, user_id: str) -> store.User | None:
        rows = self._run(lambda c: c.table("app_users").select("*").eq("id", user_id).limit(1)).data
        return user_from_row(rows[0]) if rows else None

    def _attach_account(self, new: store.NewAccount) -> store.AccountRecord:
        now = to_wire(self._now())
        self._insert_user(new.user_id)
        row = {**msgspec.structs.asdict(new), "created_at": now, "updated_at": now}
        try:
            inserted = self._run(
                lambda c: c.table("user_accounts").upsert(row, on_conflict="account_id", ignore_duplicates=True)
            ).data
        except Conflict as clash:  # 23505 on the email's unique index: the email is another account's
            holder = self.account_by_email(new.email) if new.email else None
            if holder is None or holder.account_id == new.account_id:
                raise
            raise Conflict("an account with this email address already exists", code="email_in_use") from clash
        record = account_from_row(inserted[0]) if inserted else self.get_account(new.account_id)
        assert record is not None  # inserted now or before; accounts are never deleted
        return record

    def get_account(self, account_id: str) -> store.AccountRecord | None:
        rows = self._run(lambda c: c.table("user_accounts").select("*").eq("account_id", account_id).limit(1)).data
        return account_from_row(rows[0]) if rows else None

    def accounts_of(self, user_id: str) -> list[store.AccountRecord]:
        rows = self._run(
            lambda c: (
                c.table("user_accounts").select("*").eq("user_id", user_id).order("created_at").order("account_id")
            )
        ).data
        return [account_from_row(r) for r in rows]

    def owner_of(self, account_id: str) -> str | None:
        rows = self._run(
            lambda c: c.table("user_accounts").select("user_id").eq("account_id", account_id).limit(1)
        ).data
        return rows[0]["user_id"] if rows else None

    def _account_by_email(self, email: str) -> store.AccountRecord | None:
        rows = self._run(
            lambda c: (
                c.table("user_accounts")
                .select("*")
                .eq("email", email)
                .order("created_at", desc=True)
                .order("account_id", desc=True)
                .limit(1)
            )
        ).data
        return account_from_row(rows[0]) if rows else None

    def _claim_email(self, user_id: str, wanted: str) -> store.EmailClaim:
        self._insert_user(user_id)
        row = {"email": wanted, "user_id": user_id, "created_at": to_wire(self._now())}
        for _ in range(_STATUS_RETRIES):  # a claim released between our insert and our read: claim again
            inserted = self._run(
                lambda c: c.table("email_claims").upsert(row, on_conflict="email", ignore_duplicates=True)
            ).data
            if inserted:
                return store.EmailClaim(email=wanted, user_id=user_id, new=True)
            held = self._run(lambda c: c.table("email_claims").select("user_id").eq("email", wanted).limit(1)).data
            if held:
                return store.EmailClaim(email=wanted, user_id=held[0]["user_id"], new=False)
        raise Unavailable(f"the claim on {wanted} kept changing; try again", code="store_contention")

    def _release_email(self, user_id: str, email: str) -> None:
        self._run(
            lambda c: c.table("email_claims").delete(returning=ReturnMethod.minimal).eq("email", email).eq(
                "user_id", user_id
            )
        )

    def list_account_ids(self) -> list[str]:
        """Read in pages keyed on the last id seen, until an empty page: PostgREST cuts every answer
        at its `max-rows` (1000 on Supabase unless changed), so a short page does not mean the end."""
        ids: list[str] = []
        while page := self._account_ids_after(ids[-1] if ids else None):
            ids += page
        return ids

    def _account_ids_after(self, after: str | None) -> list[str]:
        def build(c: Client) -> Any:
            query = c.table("user_accounts").select("account_id").neq("status", "closed")
            if after is not None:
                query = query.gt("account_id", after)
            return query.order("account_id").limit(_PAGE)

        return [r["account_id"] for r in self._run(build).data]

    def set_account_status(
        self, account_id: str, status: store.OnboardingStatus, *, confirmation_code: str | None = None
    ) -> store.AccountRecord:
        check_status(status)
        for _ in range(_STATUS_RETRIES):
            current = self.get_account(account_id)
            if current is None:
                raise NotFound(f"account {account_id} is not known", code="account_not_found")
            changes = {
                k: to_wire(v) for k, v in status_changes(current, status, confirmation_code, self._now()).items()
            }
            updated = self._run(
                lambda c, changes=changes, seen=current.status: (
                    c.table("user_accounts").update(changes).eq("account_id", account_id).eq("status", seen)
                )
            ).data
            if updated:
                return account_from_row(updated[0])
        raise Unavailable(f"account {account_id} kept changing; status not set", code="store_contention")

    # -- bank links made through Plaid -----------------------------------------------------------
    def record_bank_link(self, account_id: str, relationship_id: str, item_id: str) -> store.BankLink:
        now = to_wire(self._now())
        row = {
            "relationship_id": relationship_id, "account_id": account_id, "item_id": item_id,
            "needs_relink": False, "last_event": None, "created_at": now, "updated_at": now,
        }
        written = self._run(lambda c: c.table("bank_links").upsert(row, on_conflict="relationship_id")).data
        return bank_link_from_row(written[0])

    def record_item_event(self, item_id: str, event: str, needs_relink: bool | None) -> list[store.BankLink]:
        changes: dict[str, Any] = {"last_event": event, "updated_at": to_wire(self._now())}
        if needs_relink is not None:
            changes["needs_relink"] = needs_relink
        rows = self._run(lambda c: c.table("bank_links").update(changes).eq("item_id", item_id)).data
        return sorted((bank_link_from_row(r) for r in rows), key=lambda link: link.relationship_id)

    def bank_links_of(self, account_id: str) -> list[store.BankLink]:
        rows = self._run(
            lambda c: c.table("bank_links").select("*").eq("account_id", account_id).order("created_at")
            .order("relationship_id")
        ).data
        return [bank_link_from_row(r) for r in rows]

    # -- company profiles ------------------------------------------------------------------------
    def upsert_company_profiles(self, profiles: list[store.CompanyProfile]) -> int:
        now = self._now()
        rows = [
            {k: to_wire(v) for k, v in profile_row(p, self.profile_columns, now).items()} for p in profiles
        ]
        for start in range(0, len(rows), _UPSERT_CHUNK):
            chunk = rows[start : start + _UPSERT_CHUNK]
            self._run(
                lambda c, chunk=chunk: c.table("company_profiles").upsert(
                    chunk, on_conflict="symbol", returning=ReturnMethod.minimal
                )
            )
        return len(rows)

    def get_company_profile(self, symbol: str) -> store.CompanyProfile | None:
        if not isinstance(symbol, str) or not symbol.strip():
            return None
        wanted = symbol.strip().upper()
        columns = ",".join(self.profile_columns)
        rows = self._run(lambda c: c.table("company_profiles").select(columns).eq("symbol", wanted).limit(1)).data
        return profile_from_row(rows[0]) if rows else None

    def count_company_profiles(self) -> int:
        response = self._run(lambda c: c.table("company_profiles").select("symbol", count=CountMethod.exact).limit(1))
        return int(response.count or 0)

    def profile_update_times(self, symbols: list[str]) -> dict[str, dt.datetime]:
        wanted = sorted({normal_symbol(s) for s in symbols})
        found: dict[str, dt.datetime] = {}
        for start in range(0, len(wanted), _PAGE):
            chunk = wanted[start : start + _PAGE]
            def build(c: Client, chunk: list[str] = chunk) -> Any:
                query = c.table("company_profiles").select("symbol,updated_at").in_("symbol", chunk)
                return query.eq("source", "fmp") if "source" in self.profile_columns else query

            rows = self._run(build).data
            found.update({r["symbol"]: moment(r["updated_at"]) for r in rows if r.get("updated_at")})
        return found
