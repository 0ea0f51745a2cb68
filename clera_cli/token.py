"""`clera token --user ID`: a development JWT signed with the configured (or generated) secret."""

from __future__ import annotations

import argparse

from clera_cli.dev_secrets import ensure_dev_secrets
from engine.auth import mint_jwt
from engine.config import load_settings


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    secret = ensure_dev_secrets(settings)["SUPABASE_JWT_SECRET"]
    print(mint_jwt(args.user, secret, ttl_s=args.ttl))
    return 0
