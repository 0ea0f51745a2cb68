"""How a call to Alpaca through alpaca-py ends when it fails: every SDK, `requests` or pydantic exception
becomes a `brokerage.errors` type, and the caller's bad input (an id that is no UUID, an amount in
fractions of a cent, a request the SDK's models refuse) is told apart from Alpaca's bad answer."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

import requests
from alpaca.common.exceptions import APIError
from pydantic import ValidationError

from brokerage.errors import BrokerageError, Conflict, InvalidRequest, NotFound, Rejected, Unavailable

T = TypeVar("T")
CENT = Decimal("0.01")


def sdk_call(what: str, fn: Callable[..., T], *args: Any, conflict_code: str | None = None, **kwargs: Any) -> T:
    """One SDK call; `conflict_code` names what Alpaca's 409 means for this call.

    Ids are checked (`uuid_of`) and requests built (`build`) before this, so a `ValueError` raised
    in here is alpaca-py failing to read Alpaca's answer, not the caller's input.
    """
    try:
        return fn(*args, **kwargs)
    except APIError as e:
        raise api_error(e, what, conflict_code) from e
    except requests.JSONDecodeError as e:  # a RequestException too, but Alpaca did answer
        raise Unavailable(f"{what}: Alpaca answered a body that is not JSON", code="broker_protocol") from e
    except requests.RequestException as e:
        raise Unavailable(f"{what}: Alpaca is not reachable ({type(e).__name__})", code="broker_unreachable") from e
    except ValidationError as e:
        raise Unavailable(f"{what}: Alpaca answered in a shape alpaca-py cannot parse",
                          code="broker_protocol", details=problems(e)) from e
    except ValueError as e:
        raise Unavailable(f"{what}: alpaca-py cannot read Alpaca's answer ({e})", code="broker_protocol") from e


def api_error(e: APIError, what: str, conflict_code: str | None = None) -> BrokerageError:
    status = e.status_code or 0
    try:
        body = json.loads(str(e))
        message, alpaca_code = str(body.get("message", body)), body.get("code")
    except (ValueError, AttributeError):
        message, alpaca_code = str(e)[:300], None
    text = f"{what}: {message}"
    details = {"alpaca_status": status, "alpaca_code": alpaca_code}
    if status == 404:
        return NotFound(text, details=details)
    if status == 409:
        return Conflict(text, code=conflict_code, details=details)
    if status in (403, 422):
        return Rejected(text, details=details)
    if status == 400:
        return InvalidRequest(text, details=details)
    if status == 401:
        return Unavailable(f"{what}: Alpaca refused our credentials (check BROKER_API_KEY/BROKER_SECRET_KEY)",
                           code="broker_unauthorized", details=details)
    return Unavailable(f"{what}: Alpaca answered {status}: {message}", code="broker_unavailable", details=details)


def build(what: str, make: Callable[[], T]) -> T:
    """Builds an SDK request; its validation errors are the caller's bad input."""
    try:
        return make()
    except ValidationError as e:
        raise InvalidRequest(f"invalid {what}: {problems(e)[0]['message']}", details=problems(e)) from e
    except ValueError as e:
        raise InvalidRequest(f"invalid {what}: {e}") from e


def problems(e: ValidationError) -> list[dict[str, str]]:
    """Pydantic's errors as plain JSON (its `ctx` may hold exception objects the gateway cannot encode)."""
    return [{"field": ".".join(str(p) for p in err["loc"]), "message": err["msg"]} for err in e.errors()]


def uuid_of(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{what} {value!r} not found", code="not_found") from None


def check_cents(amount: Decimal, name: str) -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0 or amount != amount.quantize(CENT):
        raise InvalidRequest(f"{name} must be a positive amount in whole cents, not {amount}", code="invalid_amount")
