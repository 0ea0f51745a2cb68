"""The Redis contract: every key and channel name the processes share, built in this one place.

The engine writes, the gateway, the brokers and the agent tools read; a name spelled twice is a
name that can drift (they once disagreed on upper-casing `price:`). docs/architecture.md lists who
writes and who reads each one.
"""

from __future__ import annotations

HOLDINGS_CHANNEL = "holdings:changed"  # account ids whose cash or positions changed (JSON list)
PORTFOLIO_PREFIX = "portfolio:"
PORTFOLIO_PATTERN = PORTFOLIO_PREFIX + "*"  # matches `portfolio:last:*` keys too, but those are never published


def portfolio_channel(account_id: str) -> str:
    """Where one account's snapshots are published."""
    return PORTFOLIO_PREFIX + account_id


def account_of_channel(channel: str | bytes) -> str:
    """The account a `portfolio:{account}` message was published for."""
    name = channel.decode() if isinstance(channel, bytes) else channel
    return name.removeprefix(PORTFOLIO_PREFIX)


def last_key(account_id: str) -> str:
    """One account's latest snapshot."""
    return f"{PORTFOLIO_PREFIX}last:{account_id}"


def price_key(symbol: str) -> str:
    """The latest price of a symbol; symbols are upper case whoever asks."""
    return f"price:{symbol.upper()}"


def interest_key(account_id: str) -> str:
    """Present while someone watches the account (refreshed with a TTL)."""
    return f"interest:{account_id}"
