"""Who is calling: service API keys and Supabase-style user JWTs, free of any web framework.

The gateway (and anything else that needs to authenticate a caller) turns these checks into HTTP
statuses; keeping them here lets the CLI mint tokens and tests verify them without a server.
"""

from __future__ import annotations

import hmac
import secrets
import time

import jwt

AUDIENCE = "authenticated"
ALGORITHM = "HS256"


class AuthError(Exception):
    """The caller could not be authenticated (HTTP 401); `message` is safe to show the caller."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def check_api_key(provided: str | None, expected: str | None) -> None:
    """Constant-time comparison so response timing says nothing about how much of a key matched."""
    if not provided:
        raise AuthError("API key missing")
    if not expected or not hmac.compare_digest(provided.encode(), expected.encode()):
        raise AuthError("invalid API key")


def verify_jwt(token: str | None, secret: str | None) -> str:
    """The user id (`sub`) of a valid token; only HS256 is accepted, so `alg: none` can never pass."""
    if not token:
        raise AuthError("bearer token missing")
    if not secret:
        raise AuthError("user tokens are not configured on this server")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.InvalidAudienceError:
        raise AuthError("token audience is not 'authenticated'") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the '{exc.claim}' claim") from None
    except jwt.InvalidTokenError:
        raise AuthError("invalid token") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("token subject is empty")
    return subject


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None when there is none."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("Authorization header must be 'Bearer <token>'")
    return token.strip()


def mint_jwt(user_id: str, secret: str, *, ttl_s: float = 7 * 24 * 3600, now: float | None = None) -> str:
    """A development token shaped like Supabase's (what `clera token` prints)."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": user_id, "aud": AUDIENCE, "role": AUDIENCE, "iat": issued, "exp": issued + int(ttl_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def generate_secret() -> str:
    """A fresh random secret for development keys and JWT signing."""
    return secrets.token_urlsafe(32)
