"""`clera config`: the settings in effect (secrets masked), or the README's configuration table."""

from __future__ import annotations

import argparse

from engine.config import load_settings
from engine.config_docs import markdown_table
from engine.config_secrets import is_secret


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(markdown_table())
        return 0
    from serve_app import settings_environ  # Ray Serve takes seconds to import; --markdown needs none of it

    for name, value in sorted(settings_environ(load_settings()).items()):
        print(f"{name}={'***' if is_secret(name, value) else value}")
    return 0
