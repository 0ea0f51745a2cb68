"""What a feed counts about itself for its `FeedStatus`: ticks sent, refusals, the last data, closed.

Every feed reports these the same way, so they live in one place a feed holds rather than in four
attributes each feed keeps and copies into its status.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.feeds.base import FeedStatus


@dataclass(slots=True)
class FeedCounts:
    ticks: int = 0  # accepted and sent
    rejected: int = 0  # unknown symbols, malformed frames, bad prices
    last_data_ts: float | None = None  # wall time of the last batch sent
    closed: bool = False

    def sent(self, ticks: int, at: float) -> None:
        self.ticks += ticks
        self.last_data_ts = at

    def status(self, source: str, subscribed: int, error: str | None = None) -> FeedStatus:
        return FeedStatus(source=source, connected=not self.closed, subscribed=subscribed, ticks=self.ticks,
                          rejected=self.rejected, last_data_ts=self.last_data_ts, error=error)
