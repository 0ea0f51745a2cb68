"""engine.auth: API keys and Supabase-style JWTs, including the forgeries a caller might try."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from engine.auth import AuthError, bearer_token, check_api_key, mint_jwt, verify_jwt

SECRET = "unit-test-secret-0123456789abcdef0123456789"


def _b64(obj: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_api_key_missing_wrong_and_right() -> None:
    with pytest.raises(AuthError, match="API key missing"):
        check_api_key(None, "k1")
    with pytest.raises(AuthError, match="API key missing"):
        check_api_key("", "k1")
    with pytest.raises(AuthError, match="invalid API key"):
        check_api_key("k2", "k1")
    with pytest.raises(AuthError, match="invalid API key"):
        check_api_key("k1", None)  # a server without a key accepts none
    check_api_key("k1", "k1")


def test_minted_token_round_trips_to_its_subject() -> None:
    token = mint_jwt("user-42", SECRET, ttl_s=60)
    assert verify_jwt(token, SECRET) == "user-42"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="authenticated")
    assert claims["aud"] == "authenticated" and claims["exp"] - claims["iat"] == 60


def test_expired_token_is_refused() -> None:
    token = mint_jwt("u", SECRET, ttl_s=10, now=time.time() - 3600)
    with pytest.raises(AuthError, match="expired"):
        verify_jwt(token, SECRET)


def test_wrong_secret_is_refused() -> None:
    token = mint_jwt("u", "another-secret-0123456789abcdef0123456789")
    with pytest.raises(AuthError, match="invalid token"):
        verify_jwt(token, SECRET)


def test_wrong_audience_is_refused() -> None:
    token = jwt.encode({"sub": "u", "aud": "anon", "exp": time.time() + 60}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="audience"):
        verify_jwt(token, SECRET)


@pytest.mark.parametrize("missing", ["sub", "exp", "aud"])
def test_required_claims(missing: str) -> None:
    claims = {"sub": "u", "aud": "authenticated", "exp": time.time() + 60}
    del claims[missing]
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match=missing):
        verify_jwt(token, SECRET)


def test_alg_none_is_refused() -> None:
    header = _b64({"alg": "none", "typ": "JWT"})
    payload = _b64({"sub": "u", "aud": "authenticated", "exp": int(time.time()) + 60})
    with pytest.raises(AuthError):
        verify_jwt(f"{header}.{payload}.", SECRET)


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the forger's short HS512 key
def test_other_algorithm_with_secret_as_key_is_refused() -> None:
    token = jwt.encode({"sub": "u", "aud": "authenticated", "exp": time.time() + 60}, SECRET, algorithm="HS512")
    with pytest.raises(AuthError):
        verify_jwt(token, SECRET)


def test_tampered_payload_is_refused() -> None:
    header, _, signature = mint_jwt("alice", SECRET).split(".")
    forged = _b64({"sub": "mallory", "aud": "authenticated", "exp": int(time.time()) + 60})
    with pytest.raises(AuthError, match="invalid token"):
        verify_jwt(f"{header}.{forged}.{signature}", SECRET)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "Bearer x"])
def test_garbage_tokens(garbage: str) -> None:
    with pytest.raises(AuthError):
        verify_jwt(garbage, SECRET)


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(AuthError, match="not configured"):
        verify_jwt(mint_jwt("u", SECRET), None)


def test_bearer_header_parsing() -> None:
    assert bearer_token(None) is None
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    for bad in ("Basic abc", "Bearer", "abc"):
        with pytest.raises(AuthError):
            bearer_token(bad)
