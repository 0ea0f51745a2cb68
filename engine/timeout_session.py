"""A requests session with a default timeout: alpaca-py's REST clients send none, and a hung data host
must hang neither a feed's subscribe nor an agent's turn."""

from __future__ import annotations

from typing import Any

import requests


class TimeoutSession(requests.Session):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, method: str, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)
