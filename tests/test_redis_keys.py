"""The Redis contract's names: one spelling whoever builds them."""

from __future__ import annotations

from engine import redis_keys


def test_a_price_key_is_upper_case_whoever_asks() -> None:
    assert redis_keys.price_key("aapl") == redis_keys.price_key("AAPL") == "price:AAPL"


def test_a_portfolio_channel_names_its_account_back() -> None:
    channel = redis_keys.portfolio_channel("acct-1")
    assert channel == "portfolio:acct-1"
    assert redis_keys.account_of_channel(channel) == "acct-1" == redis_keys.account_of_channel(channel.encode())
    assert redis_keys.last_key("acct-1") == "portfolio:last:acct-1" != channel
    assert redis_keys.interest_key("acct-1") == "interest:acct-1"
