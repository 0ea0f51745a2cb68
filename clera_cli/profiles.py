"""`clera profiles collect`: company profiles from FMP into the store (the work is `brokerage.profile_command`'s)."""

from __future__ import annotations

import argparse

from brokerage import profile_command
from clera_cli import console
from engine.config import load_settings


def run(args: argparse.Namespace) -> int:
    return profile_command.run(args, load_settings(), console)
