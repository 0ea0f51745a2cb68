"""Market-data feeds behind one `Feed` port: replay (default), simulated and Alpaca.

Only the Alpaca feed's module is imported on demand, so a replay deployment never loads alpaca-py.
"""

from __future__ import annotations

from engine.clock import Clock, ReplayClock
from engine.config import ConfigError, Settings
from engine.feeds.base import Feed, FeedStatus
from engine.feeds.replay import ReplayFeed
from engine.feeds.simulated import SimulatedFeed

__all__ = ["Feed", "FeedStatus", "feed_from_settings"]


def feed_from_settings(settings: Settings, clock: Clock) -> Feed:
    """The feed `CLERA_FEED` selects, on the market clock every process derives from the same settings."""
    if settings.feed == "replay":
        if not isinstance(clock, ReplayClock):
            raise ConfigError("CLERA_FEED='replay' needs the replay clock (engine.clock.clock_from_settings)")
        try:
            return ReplayFeed(clock, settings.replay_symbol_list, settings.tick_hz)
        except ValueError as exc:
            raise ConfigError(f"CLERA_REPLAY_SYMBOLS={settings.replay_symbols!r}: {exc}") from None
    if settings.feed == "simulated":
        return SimulatedFeed(settings.sim_symbols, settings.sim_ticks_per_s, settings.sim_seed, clock=clock)
    from engine.feeds.alpaca import AlpacaFeed  # optional and heavy (alpaca-py): only with CLERA_FEED=alpaca

    assert settings.broker_api_key and settings.broker_secret_key  # Settings rejects CLERA_FEED=alpaca without them
    return AlpacaFeed(
        settings.broker_api_key,
        settings.broker_secret_key,
        feed=settings.alpaca_data_feed,
        stream_url=settings.alpaca_stream_url,
        data_url=settings.alpaca_data_url,
        data_timeout=settings.alpaca_data_timeout_s,
        sandbox=settings.alpaca_environment == "sandbox",
        use_basic_auth=True,  # BROKER_API_KEY/SECRET are broker-partner keys: Basic auth on market data
    )
