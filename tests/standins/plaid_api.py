"""A local stand-in for the Plaid API endpoints the backend uses, served over real HTTP.

It speaks Plaid's JSON: credentials in the PLAID-CLIENT-ID / PLAID-SECRET headers or the body,
required fields checked, single-use public tokens, Items with a sandbox bank's accounts, and errors
in Plaid's shape (`error_type`, `error_code`, `error_message`, `display_message`, `request_id`) with
Plaid's statuses. It also holds an EC P-256 key and signs webhook bodies the way Plaid does
(ES256 JWT in `Plaid-Verification`, `iat` and the body's SHA-256), so tests can send real webhooks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from standins.served import ThreadedServer

SANDBOX_ROUTING = "011401533"
# The sandbox institution Plaid documents for Auth ("First Platypus Bank") and its accounts.
INSTITUTIONS = {"ins_109508": "First Platypus Bank", "ins_109509": "First Gingham Credit Union"}
SANDBOX_ACCOUNTS = (
    ("Plaid Checking", "0000", "depository", "checking"),
    ("Plaid Saving", "1111", "depository", "savings"),
    ("Plaid Credit Card", "3333", "credit", "credit card"),
)
Handler = Callable[[dict[str, Any]], dict[str, Any]]
PROCESSORS = frozenset({"alpaca", "dwolla", "stripe", "apex_clearing", "drivewealth"})


class PlaidError(Exception):
    def __init__(self, status: int, error_type: str, error_code: str, message: str,
                 display: str | None = None) -> None:
        super().__init__(message)
        self.status, self.error_type, self.error_code, self.display = status, error_type, error_code, display


class PlaidStandin:
    """`with PlaidStandin("client", "secret") as plaid:` then point plaid-python at `plaid.url`.

    Attributes tests may read: `link_tokens` (token -> the request body), `processor_tokens`
    (token -> (item_id, account_id)), `items` (access_token -> item state), `kid` (the signing key id),
    `calls` (path -> requests received). `hosted_link_enabled = False` answers like a Plaid team
    without Hosted Link: no `hosted_link_url`.
    """

    def __init__(self, client_id: str, secret: str) -> None:
        self.client_id, self.secret = client_id, secret
        self.link_tokens: dict[str, dict[str, Any]] = {}
        self.public_tokens: dict[str, str] = {}  # public token -> access token (deleted when used)
        self.items: dict[str, dict[str, Any]] = {}
        self.processor_tokens: dict[str, tuple[str, str]] = {}
        self.calls: Counter[str] = Counter()
        self.hosted_link_enabled = True
        self._failures: list[PlaidError] = []
        self._lock = threading.Lock()
        self._signing_key = ec.generate_private_key(ec.SECP256R1())
        self.kid = str(uuid.uuid4())
        self.key_expired_at: int | None = None  # set when the signing key is rotated out
        self._created_at = int(time.time())
        self.url = ""

    # --- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> PlaidStandin:
        self._served = ThreadedServer(self._app(), "Plaid")
        self.url = self._served.url
        return self

    def __exit__(self, *exc: object) -> None:
        self._served.stop()

    # --- test controls ------------------------------------------------------------------------
    def fail_next(self, status: int, error_type: str, error_code: str, message: str = "injected") -> None:
        """The next request (any endpoint) answers this Plaid error, e.g. a 500 API_ERROR or a 429."""
        with self._lock:
            self._failures.append(PlaidError(status, error_type, error_code, message))

    def sign_webhook(self, body: bytes, *, iat: float | None = None, kid: str | None = None) -> str:
        """The `Plaid-Verification` value Plaid would send with `body`."""
        claims = {"iat": int(time.time() if iat is None else iat),
                  "request_body_sha256": hashlib.sha256(body).hexdigest()}
        return jwt.encode(claims, self._signing_key, algorithm="ES256",
                          headers={"kid": kid or self.kid, "typ": "JWT"})

    # --- HTTP ---------------------------------------------------------------------------------
    def _app(self) -> Starlette:
        handlers: dict[str, Handler] = {
            "/link/token/create": self._link_token_create,
            "/sandbox/public_token/create": self._sandbox_public_token_create,
            "/sandbox/item/reset_login": self._sandbox_item_reset_login,
            "/item/public_token/exchange": self._item_public_token_exchange,
            "/item/remove": self._item_remove,
            "/processor/token/create": self._processor_token_create,
            "/auth/get": self._auth_get,
            "/webhook_verification_key/get": self._webhook_verification_key_get,
        }
        return Starlette(routes=[Route(path, self._endpoint(fn), methods=["POST"]) for path, fn in handlers.items()])

    def _endpoint(self, handler: Handler) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            request_id = uuid.uuid4().hex[:15]
            self.calls[request.url.path] += 1
            try:
                with self._lock:
                    if self._failures:
                        raise self._failures.pop(0)
                try:
                    body = json.loads(await request.body())
                except ValueError:
                    raise PlaidError(400, "INVALID_REQUEST", "INVALID_BODY", "body is not JSON") from None
                if not isinstance(body, dict):
                    raise PlaidError(400, "INVALID_REQUEST", "INVALID_BODY", "body must be a JSON object")
                self._authenticate(request, body)
                with self._lock:
                    answer = handler(body)
            except PlaidError as exc:
                return JSONResponse(
                    {"error_type": exc.error_type, "error_code": exc.error_code, "error_message": str(exc),
                     "display_message": exc.display, "request_id": request_id},
                    status_code=exc.status,
                )
            return JSONResponse({**answer, "request_id": request_id})

        return endpoint

    def _authenticate(self, request: Request, body: dict[str, Any]) -> None:
        client_id = request.headers.get("plaid-client-id") or body.get("client_id")
        secret = request.headers.get("plaid-secret") or body.get("secret")
        if not client_id or not secret:
            raise PlaidError(400, "INVALID_REQUEST", "MISSING_FIELDS",
                             "the following required fields are missing: client_id, secret")
        if client_id != self.client_id or secret != self.secret:
            raise PlaidError(400, "INVALID_INPUT", "INVALID_API_KEYS",
                             "invalid client_id or secret provided")

    # --- endpoints (called under the lock) ----------------------------------------------------
    def _link_token_create(self, body: dict[str, Any]) -> dict[str, Any]:
        _required(body, "client_name", "language", "country_codes", "user")
        if not isinstance(body["user"], dict) or not body["user"].get("client_user_id"):
            raise PlaidError(400, "INVALID_REQUEST", "MISSING_FIELDS",
                             "the following required fields are missing: user.client_user_id")
        if not body["country_codes"] or any(c not in ("US", "CA", "GB") for c in body["country_codes"]):
            raise PlaidError(400, "INVALID_REQUEST", "INVALID_FIELD", "country_codes must be supported codes")
        redirect_uri = body.get("redirect_uri")
        if redirect_uri is not None and not (
            redirect_uri.startswith(("https://", "http://localhost"))
        ):
            raise PlaidError(400, "INVALID_REQUEST", "INVALID_FIELD",
                             "redirect_uri must use HTTPS (or http://localhost)")
        token = f"link-sandbox-{uuid.uuid4()}"
        self.link_tokens[token] = body
        expiration = dt.datetime.now(dt.UTC) + dt.timedelta(hours=4)
        answer: dict[str, Any] = {"link_token": token, "expiration": expiration.isoformat().replace("+00:00", "Z")}
        if "hosted_link" in body and self.hosted_link_enabled:
            answer["hosted_link_url"] = f"https://secure.plaid.com/hl/{uuid.uuid4().hex}"
        return answer

    def _sandbox_public_token_create(self, body: dict[str, Any]) -> dict[str, Any]:
        _required(body, "institution_id", "initial_products")
        if body["institution_id"] not in INSTITUTIONS:
            raise PlaidError(400, "INVALID_INPUT", "INVALID_INSTITUTION", "invalid institution_id provided")
        item_id = uuid.uuid4().hex
        accounts = [
            {"account_id": uuid.uuid4().hex, "name": name, "mask": mask, "type": type_, "subtype": subtype,
             "account_number": f"1111222233{mask}"}
            for name, mask, type_, subtype in SANDBOX_ACCOUNTS
        ]
        access_token = f"access-sandbox-{uuid.uuid4()}"
        self.items[access_token] = {"item_id": item_id, "institution_id": body["institution_id"],
                                    "accounts": accounts, "error": None,
                                    "products": list(body["initial_products"])}
        public_token = f"public-sandbox-{uuid.uuid4()}"
        self.public_tokens[public_token] = access_token
        return {"public_token": public_token}

    def _sandbox_item_reset_login(self, body: dict[str, Any]) -> dict[str, Any]:
        item = self._item(body)
        item["error"] = ("ITEM_LOGIN_REQUIRED", "the login details of this item have changed")
        return {"reset_login": True}

    def _item_public_token_exchange(self, body: dict[str, Any]) -> dict[str, Any]:
        _required(body, "public_token")
        access_token = self.public_tokens.pop(body["public_token"], None)
        if access_token is None:
            raise PlaidError(400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN",
                             "provided public token is in an invalid format, expired or already used")
        return {"access_token": access_token, "item_id": self.items[access_token]["item_id"]}

    def _item_remove(self, body: dict[str, Any]) -> dict[str, Any]:
        self._item(body)
        del self.items[body["access_token"]]
        return {}

    def _processor_token_create(self, body: dict[str, Any]) -> dict[str, Any]:
        _required(body, "access_token", "account_id", "processor")
        item = self._item(body, healthy=True)
        if body["processor"] not in PROCESSORS:
            raise PlaidError(400, "INVALID_INPUT", "INVALID_PROCESSOR", "invalid processor provided")
        account = next((a for a in item["accounts"] if a["account_id"] == body["account_id"]), None)
        if account is None:
            raise PlaidError(400, "INVALID_INPUT", "INVALID_ACCOUNT_ID", "invalid account_id provided")
        if account["type"] != "depository":
            raise PlaidError(400, "INVALID_INPUT", "INVALID_ACCOUNT_ID",
                             "the account is not a depository account and cannot be used for ACH")
        token = f"processor-sandbox-{uuid.uuid4()}"
        self.processor_tokens[token] = (item["item_id"], account["account_id"])
        return {"processor_token": token}

    def _auth_get(self, body: dict[str, Any]) -> dict[str, Any]:
        _required(body, "access_token")
        item = self._item(body, healthy=True)
        accounts = [
            {"account_id": a["account_id"], "name": a["name"], "official_name": None, "mask": a["mask"],
             "type": a["type"], "subtype": a["subtype"],
             "balances": {"available": 100.0, "current": 110.0, "limit": None, "iso_currency_code": "USD",
                          "unofficial_currency_code": None}}
            for a in item["accounts"]
        ]
        ach = [
            {"account_id": a["account_id"], "account": a["account_number"], "routing": SANDBOX_ROUTING,
             "wire_routing": SANDBOX_ROUTING}
            for a in item["accounts"] if a["type"] == "depository"
        ]
        return {
            "accounts": accounts,
            "numbers": {"ach": ach, "eft": [], "international": [], "bacs": []},
            "item": {"item_id": item["item_id"], "webhook": None, "error": None,
                     "available_products": ["balance"], "billed_products": item["products"],
                     "consent_expiration_time": None, "update_type": "background",
                     "institution_id": item["institution_id"]},
        }

    def _webhook_verification_key_get(self, body: dict[str, Any]) -> dict[str, Any]:
        _required(body, "key_id")
        if body["key_id"] != self.kid:
            raise PlaidError(400, "INVALID_INPUT", "INVALID_WEBHOOK_VERIFICATION_KEY_ID",
                             "invalid key_id provided")
        jwk = ECAlgorithm.to_jwk(self._signing_key.public_key(), as_dict=True)
        return {"key": {"alg": "ES256", "crv": jwk["crv"], "kid": self.kid, "kty": "EC", "use": "sig",
                        "x": jwk["x"], "y": jwk["y"], "created_at": self._created_at,
                        "expired_at": self.key_expired_at}}

    def _item(self, body: dict[str, Any], *, healthy: bool = False) -> dict[str, Any]:
        _required(body, "access_token")
        item = self.items.get(body["access_token"])
        if item is None:
            raise PlaidError(400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN",
                             "provided access token is in an invalid format or does not exist")
        if healthy and item["error"] is not None:
            code, message = item["error"]
            raise PlaidError(400, "ITEM_ERROR", code, message,
                             display="Your bank login has changed. Please reconnect your account.")
        return item


def _required(body: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if body.get(n) in (None, "", [])]
    if missing:
        raise PlaidError(400, "INVALID_REQUEST", "MISSING_FIELDS",
                         f"the following required fields are missing: {', '.join(missing)}")
