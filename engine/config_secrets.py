"""Which settings are secrets: never written to a log, a Ray argument or an answer.

`engine.config` withholds them when a Settings crosses a process boundary, and `clera config`
masks them; both ask this module.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SECRETS: frozenset[str] = frozenset({
    "BACKEND_API_KEY", "SUPABASE_JWT_SECRET", "SUPABASE_SERVICE_ROLE_KEY", "BROKER_API_KEY", "BROKER_SECRET_KEY",
    "PLAID_SECRET", "OPENAI_API_KEY", "CLERA_SMTP_PASSWORD", "FINANCIAL_MODELING_PREP_API_KEY",
})
"""Never written to a log, a Ray argument or an answer: each process reads them from its own environment."""
CREDENTIAL_URLS: tuple[str, ...] = ("DATABASE_URL", "REDIS_URL")  # secrets when they carry a password


def is_secret(name: str, value: object) -> bool:
    """A key or password, or a URL that carries one (`postgresql://user:password@host/db`)."""
    if name in SECRETS:
        return True
    return name in CREDENTIAL_URLS and isinstance(value, str) and urlsplit(value).password is not None
