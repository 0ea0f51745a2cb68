"""`clera closure monitor`: account closures' logs and progress (the work is `brokerage.closure.monitor`'s)."""

from __future__ import annotations

import argparse

from brokerage.closure import monitor
from engine.config import load_settings


def run(args: argparse.Namespace) -> int:
    return monitor.run(args, load_settings())
