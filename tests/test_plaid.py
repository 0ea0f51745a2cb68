"""Plaid bank linking through plaid-python against the local Plaid stand-in (real HTTP, real JWTs)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import plaid
import pytest
from conftest import free_port
from cryptography.hazmat.primitives.asymmetric import ec
from plaid.api import plaid_api
from plaid.model.products import Products
from plaid.model.sandbox_item_reset_login_request import SandboxItemResetLoginRequest
from plaid.model.sandbox_public_token_create_request import SandboxPublicTokenCreateRequest
from standins.plaid_api import PlaidStandin

from brokerage.errors import Conflict, InvalidRequest, NotFound, Rejected, Unavailable
from brokerage.models import AccountApplication, Agreement, Contact, Disclosures, Identity
from brokerage.paper import PaperBroker
from brokerage.plaid_events import PlaidWebhookEvent, parse_webhook
from brokerage.plaid_link import PlaidLink, WebhookUnverified
from brokerage.prices import RedisPriceReader
from brokerage.sql import Database
from engine.clock import ManualClock
from engine.config import ConfigError, load_settings

CLIENT_ID, SECRET = "clera-test-client", "clera-test-secret"


@pytest.fixture(scope="module")
def standin() -> Iterator[PlaidStandin]:
    with PlaidStandin(CLIENT_ID, SECRET) as server:
        yield server


def make_link(standin: PlaidStandin, **env: str) -> PlaidLink:
    environ = {"PLAID_CLIENT_ID": CLIENT_ID, "PLAID_SECRET": SECRET, "CLERA_PLAID_HOST": standin.url, **env}
    return PlaidLink(load_settings(environ, env_file=None))


@pytest.fixture
def link(standin: PlaidStandin) -> Iterator[PlaidLink]:
    client = make_link(standin, BACKEND_PUBLIC_URL="https://api.example.com/")
    yield client
    client.close()


def sandbox_public_token(standin: PlaidStandin) -> str:
    """What Link hands the frontend, made the way Plaid's sandbox allows (plaid-python, not the module under test)."""
    config = plaid.Configuration(host=standin.url, api_key={"clientId": standin.client_id, "secret": standin.secret})
    with plaid.ApiClient(config) as client:
        request = SandboxPublicTokenCreateRequest(institution_id="ins_109508", initial_products=[Products("auth")])
        return plaid_api.PlaidApi(client).sandbox_public_token_create(request)["public_token"]


def reset_login(standin: PlaidStandin, access_token: str) -> None:
    config = plaid.Configuration(host=standin.url, api_key={"clientId": CLIENT_ID, "secret": SECRET})
    with plaid.ApiClient(config) as client:
        plaid_api.PlaidApi(client).sandbox_item_reset_login(SandboxItemResetLoginRequest(access_token=access_token))


# --- configuration ------------------------------------------------------------------------------
def test_unconfigured_plaid_is_unavailable() -> None:
    with pytest.raises(Unavailable) as caught:
        PlaidLink(load_settings({"PLAID_CLIENT_ID": CLIENT_ID}, env_file=None))
    assert caught.value.status == 503
    assert "PLAID_SECRET" in caught.value.message


def test_development_environment_is_rejected_by_config() -> None:
    with pytest.raises(ConfigError, match="development"):
        load_settings({"PLAID_ENV": "development", "PLAID_CLIENT_ID": CLIENT_ID, "PLAID_SECRET": SECRET},
                      env_file=None)


# --- Link ---------------------------------------------------------------------------------------
def test_link_token_with_hosted_url_webhook_and_redirect(link: PlaidLink, standin: PlaidStandin) -> None:
    token, url = link.create_link_token("user-42", redirect_uri="https://app.example.com/callback")
    sent = standin.link_tokens[token]
    assert sent["user"] == {"client_user_id": "user-42"}
    assert sent["products"] == ["auth"] and sent["country_codes"] == ["US"]
    assert sent["redirect_uri"] == "https://app.example.com/callback"
    assert sent["webhook"] == "https://api.example.com/plaid/webhook"
    assert "hosted_link" in sent
    assert url.startswith("https://secure.plaid.com/hl/")


def test_link_token_without_redirect_or_public_url(standin: PlaidStandin) -> None:
    client = make_link(standin)
    token, _ = client.create_link_token("user-7")
    sent = standin.link_tokens[token]
    assert "redirect_uri" not in sent and "webhook" not in sent


def test_link_url_falls_back_to_link_cdn_without_hosted_link(link: PlaidLink, standin: PlaidStandin) -> None:
    standin.hosted_link_enabled = False
    try:
        token, url = link.create_link_token("user-42")
    finally:
        standin.hosted_link_enabled = True
    assert url == f"https://cdn.plaid.com/link/v2/stable/link.html?token={token}"


def test_insecure_redirect_uri_is_an_invalid_request(link: PlaidLink) -> None:
    with pytest.raises(InvalidRequest) as caught:
        link.create_link_token("user-42", redirect_uri="http://app.example.com/callback")
    assert caught.value.details["error_code"] == "INVALID_FIELD"


def test_empty_user_id_fails_before_calling_plaid(link: PlaidLink, standin: PlaidStandin) -> None:
    before = standin.calls["/link/token/create"]
    with pytest.raises(InvalidRequest, match="user_id"):
        link.create_link_token(" ")
    assert standin.calls["/link/token/create"] == before


# --- tokens -------------------------------------------------------------------------------------
def test_public_token_to_access_token_to_processor_token(link: PlaidLink, standin: PlaidStandin) -> None:
    item = link.exchange_public_token(sandbox_public_token(standin))
    access_token = item.access_token
    assert standin.items[access_token]["item_id"] == item.item_id  # the id Plaid's webhooks will name
    accounts = link.bank_accounts(access_token)
    assert [a.subtype for a in accounts] == ["checking", "savings"]  # the credit card has no ACH numbers
    assert all(a.routing_number and len(a.routing_number) == 9 and a.routing_number.isdigit() for a in accounts)
    checking = accounts[0]
    processor_token = link.processor_token(access_token, checking.plaid_account_id)
    item_id, account_id = standin.processor_tokens[processor_token]
    assert account_id == checking.plaid_account_id
    assert standin.items[access_token]["item_id"] == item_id


def test_public_token_is_single_use(link: PlaidLink, standin: PlaidStandin) -> None:
    public_token = sandbox_public_token(standin)
    link.exchange_public_token(public_token)
    with pytest.raises(InvalidRequest) as caught:
        link.exchange_public_token(public_token)
    assert caught.value.code == "plaid_invalid_public_token"


def test_invalid_public_token_is_an_invalid_request(link: PlaidLink) -> None:
    with pytest.raises(InvalidRequest) as caught:
        link.exchange_public_token("public-sandbox-not-a-token")
    error = caught.value
    assert error.status == 422 and error.code == "plaid_invalid_public_token"
    assert error.details["error_type"] == "INVALID_INPUT" and error.details["request_id"]


def test_processor_token_for_a_foreign_account_is_rejected(link: PlaidLink, standin: PlaidStandin) -> None:
    access_token = link.exchange_public_token(sandbox_public_token(standin)).access_token
    with pytest.raises(InvalidRequest) as caught:
        link.processor_token(access_token, "no-such-account")
    assert caught.value.details["error_code"] == "INVALID_ACCOUNT_ID"


def test_item_login_required_is_rejected(link: PlaidLink, standin: PlaidStandin) -> None:
    access_token = link.exchange_public_token(sandbox_public_token(standin)).access_token
    checking = link.bank_accounts(access_token)[0]
    reset_login(standin, access_token)
    with pytest.raises(Rejected) as caught:
        link.processor_token(access_token, checking.plaid_account_id)
    assert caught.value.code == "plaid_item_login_required"
    assert "reconnect" in caught.value.message


def test_wrong_secret_is_unavailable_not_the_users_fault(standin: PlaidStandin) -> None:
    client = make_link(standin, PLAID_SECRET="wrong-secret")
    with pytest.raises(Unavailable) as caught:
        client.create_link_token("user-42")
    assert caught.value.code == "plaid_invalid_api_keys" and caught.value.status == 503


@pytest.mark.parametrize(
    ("status", "error_type", "error_code"),
    [(500, "API_ERROR", "INTERNAL_SERVER_ERROR"), (429, "RATE_LIMIT_EXCEEDED", "RATE_LIMIT"),
     (400, "INSTITUTION_ERROR", "INSTITUTION_DOWN")],
)
def test_plaid_outages_are_unavailable(
    link: PlaidLink, standin: PlaidStandin, status: int, error_type: str, error_code: str
) -> None:
    standin.fail_next(status, error_type, error_code)
    with pytest.raises(Unavailable) as caught:
        link.exchange_public_token("public-sandbox-anything")
    assert caught.value.details["error_code"] == error_code


def test_unreachable_plaid_is_unavailable() -> None:
    environ = {"PLAID_CLIENT_ID": CLIENT_ID, "PLAID_SECRET": SECRET,
               "CLERA_PLAID_HOST": f"http://127.0.0.1:{free_port()}"}
    with pytest.raises(Unavailable) as caught:
        PlaidLink(load_settings(environ, env_file=None)).exchange_public_token("public-sandbox-x")
    assert caught.value.code == "plaid_unreachable"


# --- the whole chain onto a real broker ---------------------------------------------------------
@pytest.fixture
def broker(tmp_path: Path, redis_url: str) -> Iterator[PaperBroker]:
    prices = RedisPriceReader(redis_url)
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield PaperBroker(db, ManualClock(dt.datetime(2025, 3, 3, 15, 0, tzinfo=dt.UTC)), prices)
    db.close()
    prices.close()


def open_account(broker: PaperBroker, email: str) -> str:
    application = AccountApplication(
        contact=Contact(email_address=email, phone_number="555-555-5555", street_address=["1 Main St"],
                        city="San Francisco", postal_code="94105", state="CA"),
        identity=Identity(given_name="Ada", family_name="Lovelace", date_of_birth=dt.date(1990, 1, 1),
                          country_of_tax_residence="USA", funding_source=["employment_income"]),
        disclosures=Disclosures(is_control_person=False, is_affiliated_exchange_or_finra=False,
                                is_politically_exposed=False, immediate_family_exposed=False),
        agreements=[Agreement(agreement="customer_agreement", signed_at=dt.datetime(2025, 3, 1, tzinfo=dt.UTC),
                              ip_address="127.0.0.1")],
    )
    account_id = broker.create_account(application).id
    assert broker.get_account(account_id).status == "ACTIVE"
    return account_id


def test_link_bank_creates_the_ach_relationship(
    link: PlaidLink, standin: PlaidStandin, broker: PaperBroker
) -> None:
    account_id = open_account(broker, "ada@example.com")
    issued_before = set(standin.processor_tokens)
    linked = link.link_bank(broker, account_id, sandbox_public_token(standin))
    relationship = linked.relationship
    assert relationship.account_id == account_id and relationship.status == "APPROVED"
    assert broker.list_ach_relationships(account_id) == [relationship]
    (issued,) = set(standin.processor_tokens) - issued_before
    item_id, plaid_account_id = standin.processor_tokens[issued]
    assert linked.item_id == item_id
    item = next(i for i in standin.items.values() if i["item_id"] == item_id)
    chosen = next(a for a in item["accounts"] if a["account_id"] == plaid_account_id)
    assert chosen["subtype"] == "checking"  # Hosted Link gave no account: the checking account is used


def test_link_bank_uses_the_account_link_chose(link: PlaidLink, standin: PlaidStandin, broker: PaperBroker) -> None:
    account_id = open_account(broker, "grace@example.com")
    public_token = sandbox_public_token(standin)
    (item,) = [i for a, i in standin.items.items() if standin.public_tokens.get(public_token) == a]
    savings = next(a["account_id"] for a in item["accounts"] if a["subtype"] == "savings")
    link.link_bank(broker, account_id, public_token, savings)
    assert any(v == (item["item_id"], savings) for v in standin.processor_tokens.values())


def test_second_link_conflicts_and_its_item_is_removed(
    link: PlaidLink, standin: PlaidStandin, broker: PaperBroker
) -> None:
    account_id = open_account(broker, "alan@example.com")
    first = link.link_bank(broker, account_id, sandbox_public_token(standin)).relationship
    public_token = sandbox_public_token(standin)
    access_token = standin.public_tokens[public_token]
    with pytest.raises(Conflict):
        link.link_bank(broker, account_id, public_token)
    assert access_token not in standin.items  # no orphaned Item left at Plaid
    assert broker.list_ach_relationships(account_id) == [first]


def test_unknown_account_leaves_the_public_token_unused(
    link: PlaidLink, standin: PlaidStandin, broker: PaperBroker
) -> None:
    public_token = sandbox_public_token(standin)
    with pytest.raises(NotFound):
        link.link_bank(broker, "no-such-account", public_token)
    assert link.exchange_public_token(public_token).access_token.startswith("access-")


def test_link_bank_with_a_bad_public_token_changes_nothing(
    link: PlaidLink, broker: PaperBroker
) -> None:
    account_id = open_account(broker, "edsger@example.com")
    with pytest.raises(InvalidRequest):
        link.link_bank(broker, account_id, "public-sandbox-forged")
    assert broker.list_ach_relationships(account_id) == []


# --- webhooks -----------------------------------------------------------------------------------
ITEM_ERROR = json.dumps(
    {"webhook_type": "ITEM", "webhook_code": "ERROR", "item_id": "item-1", "environment": "sandbox",
     "error": {"error_type": "ITEM_ERROR", "error_code": "ITEM_LOGIN_REQUIRED",
               "error_message": "the login details of this item have changed"}},
    indent=2,
).encode()


def test_signed_webhook_is_accepted_and_parsed(link: PlaidLink, standin: PlaidStandin) -> None:
    payload = link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": standin.sign_webhook(ITEM_ERROR)})
    assert payload == json.loads(ITEM_ERROR)
    assert parse_webhook(payload) == PlaidWebhookEvent(
        webhook_type="ITEM", webhook_code="ERROR", item_id="item-1", environment="sandbox",
        error_code="ITEM_LOGIN_REQUIRED", error_message="the login details of this item have changed",
        needs_relink=True,
    )


def test_verification_keys_are_cached_by_kid(link: PlaidLink, standin: PlaidStandin) -> None:
    before = standin.calls["/webhook_verification_key/get"]
    for _ in range(3):
        link.verify_webhook(ITEM_ERROR, {"plaid-verification": standin.sign_webhook(ITEM_ERROR)})
    assert standin.calls["/webhook_verification_key/get"] == before + 1


def test_a_key_plaid_expires_later_stops_verifying_after_the_refresh(standin: PlaidStandin) -> None:
    settings = load_settings({"PLAID_CLIENT_ID": CLIENT_ID, "PLAID_SECRET": SECRET, "CLERA_PLAID_HOST": standin.url},
                             env_file=None)
    client = PlaidLink(settings, key_refresh_s=0.0)  # every webhook fetches its key again
    try:
        client.verify_webhook(ITEM_ERROR, {"plaid-verification": standin.sign_webhook(ITEM_ERROR)})
        standin.key_expired_at = int(time.time()) - 1  # Plaid rotated the key out
        with pytest.raises(WebhookUnverified, match="expired") as caught:
            client.verify_webhook(ITEM_ERROR, {"plaid-verification": standin.sign_webhook(ITEM_ERROR)})
        assert caught.value.status == 401
    finally:
        standin.key_expired_at = None
        client.close()


def test_tampered_body_is_rejected(link: PlaidLink, standin: PlaidStandin) -> None:
    token = standin.sign_webhook(ITEM_ERROR)
    tampered = ITEM_ERROR.replace(b"item-1", b"item-2")
    with pytest.raises(WebhookUnverified, match="SHA-256") as caught:
        link.verify_webhook(tampered, {"Plaid-Verification": token})
    assert caught.value.status == 401


def test_stale_webhook_is_rejected(link: PlaidLink, standin: PlaidStandin) -> None:
    token = standin.sign_webhook(ITEM_ERROR, iat=time.time() - 6 * 60)
    with pytest.raises(WebhookUnverified, match="older"):
        link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": token})


def test_unknown_kid_is_rejected(link: PlaidLink, standin: PlaidStandin) -> None:
    token = standin.sign_webhook(ITEM_ERROR, kid="0d6c1f7e-unknown")
    with pytest.raises(WebhookUnverified, match="unknown webhook key"):
        link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": token})


def test_forged_signature_and_wrong_alg_are_rejected(link: PlaidLink, standin: PlaidStandin) -> None:
    claims = {"iat": int(time.time()), "request_body_sha256": hashlib.sha256(ITEM_ERROR).hexdigest()}
    hs256 = jwt.encode(claims, "a-guessed-shared-secret-of-32-bytes!", algorithm="HS256", headers={"kid": standin.kid})
    with pytest.raises(WebhookUnverified, match="ES256"):
        link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": hs256})
    other_key = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(claims, other_key, algorithm="ES256", headers={"kid": standin.kid})
    with pytest.raises(WebhookUnverified, match="signature"):
        link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": forged})


def test_missing_or_garbage_header_is_rejected(link: PlaidLink) -> None:
    with pytest.raises(WebhookUnverified, match="missing"):
        link.verify_webhook(ITEM_ERROR, {})
    with pytest.raises(WebhookUnverified, match="not a JWT"):
        link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": "not.a.jwt"})


def test_key_fetch_outage_is_unavailable_so_plaid_retries(link: PlaidLink, standin: PlaidStandin) -> None:
    standin.fail_next(500, "API_ERROR", "INTERNAL_SERVER_ERROR")
    with pytest.raises(Unavailable):
        link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": standin.sign_webhook(ITEM_ERROR)})
    assert link.verify_webhook(ITEM_ERROR, {"Plaid-Verification": standin.sign_webhook(ITEM_ERROR)})


def test_signed_body_that_is_not_json_is_an_invalid_request(link: PlaidLink, standin: PlaidStandin) -> None:
    body = b"webhook_type=ITEM"
    with pytest.raises(InvalidRequest, match="not JSON"):
        link.verify_webhook(body, {"Plaid-Verification": standin.sign_webhook(body)})


def test_verification_can_be_switched_off(standin: PlaidStandin) -> None:
    client = make_link(standin, CLERA_PLAID_WEBHOOK_VERIFY="false")
    assert client.verify_webhook(ITEM_ERROR, {})["item_id"] == "item-1"


def test_parse_webhook_kinds() -> None:
    verified = parse_webhook({"webhook_type": "AUTH", "webhook_code": "AUTOMATICALLY_VERIFIED",
                              "item_id": "i", "account_id": "a"})
    assert verified.account_id == "a" and not verified.needs_relink
    assert parse_webhook({"webhook_type": "AUTH", "webhook_code": "VERIFICATION_EXPIRED"}).needs_relink
    assert parse_webhook({"webhook_type": "ITEM", "webhook_code": "PENDING_EXPIRATION"}).needs_relink
    with pytest.raises(InvalidRequest):
        parse_webhook({"webhook_code": "ERROR"})


def test_what_a_bank_link_records_of_a_webhook() -> None:
    login = parse_webhook(json.loads(ITEM_ERROR))
    assert (login.summary, login.relink_state) == ("ITEM/ERROR ITEM_LOGIN_REQUIRED", True)
    repaired = parse_webhook({"webhook_type": "ITEM", "webhook_code": "LOGIN_REPAIRED", "item_id": "item-1"})
    assert (repaired.summary, repaired.relink_state) == ("ITEM/LOGIN_REPAIRED", False)
    other = parse_webhook({"webhook_type": "ITEM", "webhook_code": "NEW_ACCOUNTS_AVAILABLE", "item_id": "item-1"})
    assert (other.summary, other.relink_state) == ("ITEM/NEW_ACCOUNTS_AVAILABLE", None)
    assert parse_webhook({"webhook_type": "TRANSACTIONS", "webhook_code": "LOGIN_REPAIRED"}).relink_state is None
