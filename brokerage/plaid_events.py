"""What a Plaid webhook says, once its signature has been checked (`PlaidLink.verify_webhook`): the
Item it is about and whether the user must go through Link again (`needs_relink`), which the
gateway records on the bank links that Item backs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from brokerage.errors import InvalidRequest

# Plaid error codes for which the user must go through Link again (update mode or a new link).
RELINK_CODES = frozenset({"ITEM_LOGIN_REQUIRED", "PENDING_EXPIRATION", "PENDING_DISCONNECT",
                          "USER_PERMISSION_REVOKED", "VERIFICATION_EXPIRED", "ACCESS_NOT_GRANTED"})
# Plaid's word that an Item left the login-required state without us (the user fixed it elsewhere).
REPAIRED_CODE = "LOGIN_REPAIRED"


class PlaidWebhookEvent(msgspec.Struct, kw_only=True):
    """The part of a Plaid webhook the backend acts on (or logs)."""

    webhook_type: str
    webhook_code: str
    item_id: str | None = None
    account_id: str | None = None
    environment: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    needs_relink: bool = False

    @property
    def relink_state(self) -> bool | None:
        """What the webhook says of the Item's link: broken (True), repaired (False) or nothing (None)."""
        if self.needs_relink:
            return True
        if self.webhook_type == "ITEM" and self.webhook_code == REPAIRED_CODE:
            return False
        return None

    @property
    def summary(self) -> str:
        """What a bank link records of the webhook: `TYPE/CODE`, then Plaid's error code if it sent one."""
        text = f"{self.webhook_type}/{self.webhook_code}"
        return f"{text} {self.error_code}" if self.error_code else text


def parse_webhook(payload: Mapping[str, Any]) -> PlaidWebhookEvent:
    """The event a verified webhook carries; `needs_relink` marks Items the user must fix in Link."""
    webhook_type, webhook_code = payload.get("webhook_type"), payload.get("webhook_code")
    if not isinstance(webhook_type, str) or not isinstance(webhook_code, str):
        raise InvalidRequest("webhook needs string webhook_type and webhook_code")
    raw_error = payload.get("error")
    error: Mapping[str, Any] = raw_error if isinstance(raw_error, dict) else {}
    error_code = error.get("error_code")
    relink = (
        (webhook_type == "ITEM" and (webhook_code in RELINK_CODES or error_code in RELINK_CODES))
        or (webhook_type == "AUTH" and webhook_code == "VERIFICATION_EXPIRED")
    )
    return PlaidWebhookEvent(
        webhook_type=webhook_type,
        webhook_code=webhook_code,
        item_id=_str_or_none(payload.get("item_id")),
        account_id=_str_or_none(payload.get("account_id")),
        environment=_str_or_none(payload.get("environment")),
        error_code=_str_or_none(error_code),
        error_message=_str_or_none(error.get("error_message")),
        needs_relink=relink,
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
