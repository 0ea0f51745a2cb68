"""Typed brokerage errors; the gateway maps each to one HTTP status and the documented error shape."""

from __future__ import annotations

from typing import Any


class BrokerageError(Exception):
    """Base: `code` is a stable machine-readable string, `status` the HTTP status it maps to."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details


class InvalidRequest(BrokerageError):
    """The request itself is wrong (a field missing or malformed, a bad routing number)."""

    status = 422
    code = "invalid_request"


class NotFound(BrokerageError):
    status = 404
    code = "not_found"


class Conflict(BrokerageError):
    """The request clashes with current state (a second active ACH relationship, an email in use)."""

    status = 409
    code = "conflict"


class Rejected(BrokerageError):
    """Well-formed but refused by the rules (insufficient funds, PDT, no price, daily ACH limit)."""

    status = 422
    code = "rejected"


class Forbidden(BrokerageError):
    status = 403
    code = "forbidden"


class Unavailable(BrokerageError):
    """A dependency is not configured or not reachable (Plaid unset, Alpaca down)."""

    status = 503
    code = "unavailable"
