"""Plaid bank linking through plaid-python: Link token -> public token -> access token -> processor token
for Alpaca -> ACH relationship on the broker, plus verification of Plaid's signed webhooks.

Every Plaid or transport failure leaves this module as a `brokerage.errors` type, so the gateway
never sees a plaid-python exception. Webhook verification follows Plaid's published procedure: the
`Plaid-Verification` header is an ES256 JWT whose key is fetched by `kid`, fresh for five minutes,
carrying the SHA-256 of the exact body bytes. What a verified webhook says is `brokerage.plaid_events`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar
from urllib.parse import urlencode

import jwt
import msgspec
import plaid
import urllib3
from jwt.algorithms import ECAlgorithm
from plaid.api import plaid_api
from plaid.model.auth_get_request import AuthGetRequest
from plaid.model.country_code import CountryCode
from plaid.model.item_public_token_exchange_request import ItemPublicTokenExchangeRequest
from plaid.model.item_remove_request import ItemRemoveRequest
from plaid.model.link_token_create_hosted_link import LinkTokenCreateHostedLink
from plaid.model.link_token_create_request import LinkTokenCreateRequest
from plaid.model.link_token_create_request_user import LinkTokenCreateRequestUser
from plaid.model.processor_token_create_request import ProcessorTokenCreateRequest
from plaid.model.products import Products
from plaid.model.webhook_verification_key_get_request import WebhookVerificationKeyGetRequest

from brokerage.errors import BrokerageError, InvalidRequest, Rejected, Unavailable
from brokerage.models import AchRelationship, BrokerAccount
from brokerage.plaid_events import RELINK_CODES
from engine.config import Settings

T = TypeVar("T")

CLIENT_NAME = "Clera"
WEBHOOK_PATH = "/plaid/webhook"
LINK_CDN_URL = "https://cdn.plaid.com/link/v2/stable/link.html"
WEBHOOK_MAX_AGE_S = 300
# Plaid's clock and ours may disagree a little; a webhook "from the future" within this is accepted.
CLOCK_SKEW_S = 30
REQUEST_TIMEOUT_S = 15.0



class WebhookUnverified(BrokerageError):
    """A webhook whose signature, age or body hash does not check out; the gateway answers 401."""

    status = 401
    code = "webhook_unverified"


class BankAccount(msgspec.Struct, kw_only=True):
    """One account of a linked Item that can carry ACH (from /auth/get)."""

    plaid_account_id: str
    name: str
    mask: str | None
    subtype: str | None
    routing_number: str | None


class PlaidItem(msgspec.Struct, kw_only=True):
    """What exchanging Link's public token gives: the Item's access token and its id (webhooks name the id)."""

    access_token: str
    item_id: str


class LinkedBank(msgspec.Struct, kw_only=True):
    """A bank linked through Plaid: the broker's ACH relationship and the Plaid Item behind it."""

    relationship: AchRelationship
    item_id: str


class _CachedKey(msgspec.Struct):
    key: Any
    expired_at: int | None
    fetched_at: float


# Plaid rotates its webhook keys by setting `expired_at` on the old one: a cached key is fetched again
# after this long, so a key Plaid has expired stops verifying webhooks within the hour.
KEY_REFRESH_S = 3600.0


class BankLinkBroker(Protocol):
    """The part of the Broker port linking a bank needs (any Broker has it)."""

    def get_account(self, account_id: str) -> BrokerAccount: ...
    def create_ach_relationship_from_processor_token(
        self, account_id: str, processor_token: str
    ) -> AchRelationship: ...


class PlaidLink:
    """The Plaid side of bank linking; thread-safe (the gateway calls it from worker threads)."""

    def __init__(self, settings: Settings, *, key_refresh_s: float = KEY_REFRESH_S) -> None:
        self._key_refresh_s = key_refresh_s
        if not (settings.plaid_client_id and settings.plaid_secret):
            raise Unavailable(
                "Plaid is not configured: set PLAID_CLIENT_ID and PLAID_SECRET to link banks "
                "(manual ACH relationships work without it)",
                code="plaid_not_configured",
            )
        host = settings.plaid_host or (
            plaid.Environment.Production if settings.plaid_env == "production" else plaid.Environment.Sandbox
        )
        configuration = plaid.Configuration(
            host=host, api_key={"clientId": settings.plaid_client_id, "secret": settings.plaid_secret}
        )
        self._api_client = plaid.ApiClient(configuration)
        self._api = plaid_api.PlaidApi(self._api_client)
        self._webhook_url = (
            settings.backend_public_url.rstrip("/") + WEBHOOK_PATH if settings.backend_public_url else None
        )
        self._verify_webhooks = settings.plaid_webhook_verify
        self._keys: dict[str, _CachedKey] = {}
        self._keys_lock = threading.Lock()

    def close(self) -> None:
        self._api_client.close()

    # --- linking ------------------------------------------------------------------------------
    def create_link_token(self, user_id: str, redirect_uri: str | None = None) -> tuple[str, str]:
        """A Link token and the URL that opens Link for it (Plaid's hosted Link when it returns one)."""
        _require(user_id=user_id)
        fields: dict[str, Any] = {
            "client_name": CLIENT_NAME,
            "language": "en",
            "country_codes": [CountryCode("US")],
            "user": LinkTokenCreateRequestUser(client_user_id=user_id),
            "products": [Products("auth")],
            "hosted_link": LinkTokenCreateHostedLink(),
        }
        if self._webhook_url:
            fields["webhook"] = self._webhook_url
        if redirect_uri:
            fields["redirect_uri"] = redirect_uri
        response = self._call(self._api.link_token_create, LinkTokenCreateRequest(**fields))
        link_token: str = response["link_token"]
        url = response.get("hosted_link_url") or f"{LINK_CDN_URL}?{urlencode({'token': link_token})}"
        return link_token, url

    def exchange_public_token(self, public_token: str) -> PlaidItem:
        _require(public_token=public_token)
        request = ItemPublicTokenExchangeRequest(public_token=public_token)
        response = self._call(self._api.item_public_token_exchange, request)
        return PlaidItem(access_token=response["access_token"], item_id=response["item_id"])

    def bank_accounts(self, access_token: str) -> list[BankAccount]:
        """The Item's accounts that have ACH numbers, for picking one when Link did not say which."""
        _require(access_token=access_token)
        response = self._call(self._api.auth_get, AuthGetRequest(access_token=access_token))
        routing = {n["account_id"]: n["routing"] for n in response["numbers"]["ach"]}
        return [
            BankAccount(
                plaid_account_id=a["account_id"],
                name=a["name"],
                mask=a.get("mask"),
                subtype=str(a["subtype"]) if a.get("subtype") is not None else None,
                routing_number=routing[a["account_id"]],
            )
            for a in response["accounts"]
            if a["account_id"] in routing
        ]

    def processor_token(self, access_token: str, plaid_account_id: str) -> str:
        _require(access_token=access_token, plaid_account_id=plaid_account_id)
        request = ProcessorTokenCreateRequest(
            access_token=access_token, account_id=plaid_account_id, processor="alpaca"
        )
        processor_token: str = self._call(self._api.processor_token_create, request)["processor_token"]
        return processor_token

    def remove_item(self, access_token: str) -> None:
        self._call(self._api.item_remove, ItemRemoveRequest(access_token=access_token))

    def link_bank(
        self, broker: BankLinkBroker, account_id: str, public_token: str, plaid_account_id: str | None = None
    ) -> LinkedBank:
        """The whole chain after Link; the account is checked first because a public token is single-use.

        Without `plaid_account_id` (Hosted Link gives the frontend no account metadata) the Item's
        checking account is used, else its first account with ACH numbers. If anything after the
        exchange fails (e.g. the broker already has an active relationship) the Item is removed again
        so no orphaned, billed Item stays behind, and the original error is raised.
        """
        _require(account_id=account_id, public_token=public_token)
        if plaid_account_id is not None:
            _require(plaid_account_id=plaid_account_id)
        broker.get_account(account_id)
        item = self.exchange_public_token(public_token)
        try:
            chosen = plaid_account_id or self._default_account(item.access_token)
            processor_token = self.processor_token(item.access_token, chosen)
            relationship = broker.create_ach_relationship_from_processor_token(account_id, processor_token)
        except BrokerageError:
            with contextlib.suppress(BrokerageError):  # best effort: the original failure is what the caller needs
                self.remove_item(item.access_token)
            raise
        return LinkedBank(relationship=relationship, item_id=item.item_id)

    def _default_account(self, access_token: str) -> str:
        accounts = self.bank_accounts(access_token)
        if not accounts:
            raise Rejected(
                "the linked bank has no account that supports ACH transfers", code="plaid_no_ach_account"
            )
        return next((a for a in accounts if a.subtype == "checking"), accounts[0]).plaid_account_id

    # --- webhooks -----------------------------------------------------------------------------
    def verify_webhook(self, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """The webhook's JSON once its `Plaid-Verification` JWT proves it came from Plaid unaltered.

        With CLERA_PLAID_WEBHOOK_VERIFY off the body is only parsed (local development).
        """
        if self._verify_webhooks:
            self._check_signature(body, _header(headers, "plaid-verification"))
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise InvalidRequest(f"webhook body is not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise InvalidRequest("webhook body must be a JSON object")
        return payload

    def _check_signature(self, body: bytes, token: str | None) -> None:
        if not token:
            raise WebhookUnverified("missing Plaid-Verification header")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise WebhookUnverified(f"Plaid-Verification is not a JWT: {exc}") from None
        if header.get("alg") != "ES256":
            raise WebhookUnverified(f"webhook JWT alg {header.get('alg')!r} is not ES256")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise WebhookUnverified("webhook JWT has no key id")
        key = self._verification_key(kid)
        try:
            claims = jwt.decode(
                token, key=key, algorithms=["ES256"], leeway=CLOCK_SKEW_S, options={"require": ["iat"]}
            )
        except jwt.PyJWTError as exc:
            raise WebhookUnverified(f"webhook signature invalid: {exc}") from None
        iat = claims["iat"]
        if not isinstance(iat, int | float) or time.time() - iat > WEBHOOK_MAX_AGE_S:
            raise WebhookUnverified(f"webhook is older than {WEBHOOK_MAX_AGE_S} s (replayed or delayed)")
        claimed = claims.get("request_body_sha256")
        actual = hashlib.sha256(body).hexdigest()
        if not isinstance(claimed, str) or not hmac.compare_digest(claimed.encode(), actual.encode()):
            raise WebhookUnverified("webhook body does not match its signed SHA-256")

    def _verification_key(self, kid: str) -> Any:
        """The public key for `kid`; current keys are cached (and fetched again after
        `key_refresh_s`), an expired key is refused."""
        with self._keys_lock:
            cached = self._keys.get(kid)
        if cached is None or time.time() - cached.fetched_at >= self._key_refresh_s:
            try:
                response = self._call(
                    self._api.webhook_verification_key_get, WebhookVerificationKeyGetRequest(key_id=kid)
                )
            except (InvalidRequest, Rejected) as exc:
                raise WebhookUnverified(f"unknown webhook key id {kid!r}: {exc.message}") from None
            jwk = response["key"].to_dict()
            try:
                key = ECAlgorithm.from_jwk(json.dumps(jwk))
            except jwt.PyJWTError as exc:
                raise WebhookUnverified(f"webhook key {kid!r} is unusable: {exc}") from None
            cached = _CachedKey(key=key, expired_at=jwk.get("expired_at"), fetched_at=time.time())
            with self._keys_lock:
                self._keys[kid] = cached
        if cached.expired_at is not None and cached.expired_at <= time.time():
            raise WebhookUnverified(f"webhook key {kid!r} has expired")
        return cached.key

    # --- error mapping ------------------------------------------------------------------------
    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(request, _request_timeout=REQUEST_TIMEOUT_S)
        except plaid.ApiException as exc:
            raise _map_api_error(exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise Unavailable(f"Plaid is unreachable: {exc}", code="plaid_unreachable") from None
        except plaid.OpenApiException as exc:  # client-side validation of our request or its answer
            raise InvalidRequest(f"Plaid request rejected by the client library: {exc}") from None


def _map_api_error(exc: plaid.ApiException) -> BrokerageError:
    """Plaid's error object -> our typed error; `details` keeps Plaid's fields for the logs and the user."""
    status = exc.status or 0
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (ValueError, TypeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    error_type = str(body.get("error_type") or "")
    error_code = str(body.get("error_code") or "")
    message = body.get("display_message") or body.get("error_message") or exc.reason or "Plaid error"
    details = {k: body.get(k) for k in ("error_type", "error_code", "error_message", "display_message",
                                        "request_id")}
    details["status"] = status
    text = f"Plaid {error_code or status}: {message}"
    code = f"plaid_{error_code.lower()}" if error_code else None
    if status == 0 or status == 429 or status >= 500 or error_type in (
        "RATE_LIMIT_EXCEEDED", "API_ERROR", "INSTITUTION_ERROR"
    ):
        return Unavailable(text, code=code or "plaid_unavailable", details=details)
    if error_code == "INVALID_API_KEYS" or status in (401, 403):
        # Our credentials, not the user's input: the feature is down until the operator fixes them.
        return Unavailable(f"Plaid rejected this backend's credentials: {message}",
                           code=code or "plaid_credentials", details=details)
    if error_type == "ITEM_ERROR" or error_code in RELINK_CODES:
        return Rejected(text, code=code, details=details)
    return InvalidRequest(text, code=code, details=details)


def _require(**values: str) -> None:
    for name, value in values.items():
        if not isinstance(value, str) or not value.strip():
            raise InvalidRequest(f"{name} must be a non-empty string")


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value
