"""`CleraSupabaseStore`: the Clera layout (see `clera_store.py`) over Supabase's REST API.

The REST API cannot lock, and the frontend's `user_onboarding` may get no unique index, so who
attaches an account id is decided by this project's `account_claims` (its primary key): the winner
writes the onboarding row, the others read it once it is there. A status move is a compare-and-set
on the current status, as in `SupabaseStore`. `brokerage/clera_schema.sql` must have been applied
(it adds this project's tables and the seed's closure columns; `migrate()` checks).
"""

from __future__ import annotations

import uuid
from typing import Any

from supabase import Client
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_incrementing

from brokerage.clera_store import CLOSURE_COLUMNS, clera_changes, clera_status
from brokerage.errors import Conflict, InvalidRequest, NotFound, Unavailable
from brokerage.profile_rows import SEED_COLUMNS
from brokerage.store import AccountRecord, NewAccount, OnboardingStatus, check_email, check_status
from brokerage.store_rows import parse_ts
from brokerage.supabase_store import SupabaseStore, to_wire

CLERA_TABLES = (
    "user_onboarding", "app_users", "email_claims", "account_emails", "account_claims", "company_profiles",
    "bank_links",
)
_RETRIES = 20
# The winner of an account's claim writes its onboarding row in a moment: the others read until it is there.
_WINNERS_ROW = Retrying(
    stop=stop_after_attempt(_RETRIES), wait=wait_incrementing(0.01, 0.01),
    retry=retry_if_result(lambda found: found is None), retry_error_callback=lambda _: None,
)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


class CleraSupabaseStore(SupabaseStore):
    layout = "clera"

    def __init__(self, url: str, key: str, **kwargs: Any) -> None:
        super().__init__(url, key, **kwargs)
        self.profile_columns = SEED_COLUMNS  # the seed's table: no `source`, no `facts`
        self._has_updated_at = False

    def migrate(self) -> None:
        for table in CLERA_TABLES:
            try:
                self._run(lambda c, t=table: c.table(t).select("*").limit(1))
            except Unavailable as missing:
                raise Unavailable(
                    f"{missing.message}; for CLERA_SCHEMA=clera apply brokerage/clera_schema.sql", code=missing.code
                ) from missing
        try:
            self._run(lambda c: c.table("user_onboarding").select("closure_confirmation_code").limit(1))
        except InvalidRequest as missing:
            raise Unavailable(
                "user_onboarding has no closure columns: apply brokerage/clera_schema.sql", code="store_schema_missing"
            ) from missing
        try:
            self._run(lambda c: c.table("user_onboarding").select("updated_at").limit(1))
            self._has_updated_at = True
        except InvalidRequest:
            self._has_updated_at = False

    # -- reading ---------------------------------------------------------------------------------
    def _records(self, rows: list[dict[str, Any]]) -> list[AccountRecord]:
        ids = [r["alpaca_account_id"] for r in rows]
        emails = {
            e["account_id"]: e["email"]
            for e in (
                self._run(lambda c: c.table("account_emails").select("email,account_id").in_("account_id", ids)).data
                if ids else []
            )
        }
        return [
            AccountRecord(
                account_id=r["alpaca_account_id"],
                user_id=str(r["user_id"]),
                status=r["status"],
                email=emails.get(r["alpaca_account_id"]),
                account_number=r.get("alpaca_account_number"),
                created_at=parse_ts(r["created_at"]),  # type: ignore[arg-type]  # a NOT NULL column
                updated_at=parse_ts(r.get("updated_at") or r["created_at"]),  # type: ignore[arg-type]  # a NOT NULL column
                closure_requested_at=parse_ts(r.get(CLOSURE_COLUMNS["closure_requested_at"])),
                closed_at=parse_ts(r.get(CLOSURE_COLUMNS["closed_at"])),
                confirmation_code=r.get(CLOSURE_COLUMNS["confirmation_code"]),
            )
            for r in rows
        ]

    def _rows_of_account(self, account_id: str) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._run(
            lambda c: c.table("user_onboarding").select("*").eq("alpaca_account_id", account_id)
            .order("created_at").order("id")
        ).data
        return rows

    def get_account(self, account_id: str) -> AccountRecord | None:
        rows = self._rows_of_account(account_id)
        return self._records(rows[:1])[0] if rows else None

    def accounts_of(self, user_id: str) -> list[AccountRecord]:
        if not _is_uuid(user_id):
            return []  # user_onboarding.user_id holds Supabase user ids (UUIDs) only
        rows = self._run(
            lambda c: c.table("user_onboarding").select("*").eq("user_id", user_id)
            .not_.is_("alpaca_account_id", "null").order("created_at").order("alpaca_account_id")
        ).data
        return self._records(rows)

    def owner_of(self, account_id: str) -> str | None:
        record = self.get_account(account_id)
        return record.user_id if record else None

    def _account_by_email(self, email: str) -> AccountRecord | None:
        held = self._run(lambda c: c.table("account_emails").select("account_id").eq("email", email).limit(1)).data
        return self.get_account(held[0]["account_id"]) if held else None

    def _account_ids_after(self, after: str | None) -> list[str]:
        def build(c: Client) -> Any:
            query = (
                c.table("user_onboarding").select("alpaca_account_id").not_.is_("alpaca_account_id", "null")
                .neq("status", "closed")
            )
            if after is not None:
                query = query.gt("alpaca_account_id", after)
            return query.order("alpaca_account_id").limit(1000)

        return list(dict.fromkeys(r["alpaca_account_id"] for r in self._run(build).data))

    # -- writing ---------------------------------------------------------------------------------
    def _attach_account(self, new: NewAccount) -> AccountRecord:
        if not _is_uuid(new.user_id):
            raise InvalidRequest(f"user id {new.user_id!r} is not a Supabase user id", code="invalid_user_id")
        self._insert_user(new.user_id)
        current = self.get_account(new.account_id)
        if current is None:
            current = self._attach_claimed(new.user_id, new.account_id, new.email, new.account_number, new.status)
        return current

    def _attach_claimed(
        self, user_id: str, account_id: str, email: str | None, number: str | None, status: str
    ) -> AccountRecord:
        """The claim on the account id decides who attaches it; the others wait for the winner's row."""
        claim = {"account_id": account_id, "user_id": user_id, "created_at": to_wire(self._now())}
        won = self._run(
            lambda c: c.table("account_claims").upsert(claim, on_conflict="account_id", ignore_duplicates=True)
        ).data
        if won:
            try:
                self._claim_account_email(account_id, email)
                self._attach(user_id, account_id, number, status)
            except BaseException:
                self._run(lambda c: c.table("account_claims").delete().eq("account_id", account_id))
                raise
        attached = _WINNERS_ROW(self.get_account, account_id)
        if attached is not None:
            return attached
        raise Unavailable(f"account {account_id} is being attached by another request; retry", code="store_contention")

    def _claim_account_email(self, account_id: str, email: str | None) -> None:
        if email is None:
            return
        row = {"email": check_email(email), "account_id": account_id, "created_at": to_wire(self._now())}
        inserted = self._run(
            lambda c: c.table("account_emails").upsert(row, on_conflict="email", ignore_duplicates=True)
        ).data
        if inserted:
            return
        held = self._run(lambda c: c.table("account_emails").select("account_id").eq("email", email).limit(1)).data
        if held and held[0]["account_id"] == account_id:
            return
        raise Conflict("an account with this email address already exists", code="email_in_use")

    def _attach(self, user_id: str, account_id: str, number: str | None, status: str) -> None:
        """Puts the account on the person's onboarding row without one, or on a new row."""
        now = to_wire(self._now())
        values: dict[str, Any] = {
            "alpaca_account_id": account_id,
            "alpaca_account_number": number,
            "status": clera_status(status) or "submitted",
        }
        if self._has_updated_at:
            values["updated_at"] = now
        open_rows = self._run(
            lambda c: c.table("user_onboarding").select("id").eq("user_id", user_id).is_("alpaca_account_id", "null")
            .order("created_at").limit(1)
        ).data
        if open_rows and self._run(
            lambda c: c.table("user_onboarding").update(values).eq("id", open_rows[0]["id"])
            .is_("alpaca_account_id", "null")
        ).data:
            return
        self._run(lambda c: c.table("user_onboarding").insert({"user_id": user_id, "created_at": now, **values}))

    def set_account_status(
        self, account_id: str, status: OnboardingStatus, *, confirmation_code: str | None = None
    ) -> AccountRecord:
        check_status(status)
        for _ in range(_RETRIES):
            current = self.get_account(account_id)
            if current is None:
                raise NotFound(f"account {account_id} is not known", code="account_not_found")
            sets = clera_changes(current, status, confirmation_code, self._now(), self._has_updated_at)
            if not sets:
                return current
            changes = {k: to_wire(v) for k, v in sets.items()}
            updated = self._run(
                lambda c, changes=changes, seen=current.status: (
                    c.table("user_onboarding").update(changes).eq("alpaca_account_id", account_id).eq("status", seen)
                )
            ).data
            if updated:
                record = self.get_account(account_id)
                assert record is not None
                return record
        raise Unavailable(f"account {account_id} kept changing; status not set", code="store_contention")
