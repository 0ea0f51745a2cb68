"""Development secrets and tokens: what lets `clera serve` run, and `clera watch`/`chat` connect, with
nothing configured."""

from __future__ import annotations

import argparse
import json
import os

from engine.auth import generate_secret, mint_jwt
from engine.config import Settings

SECRETS_FILE = "dev-secrets.json"


def ensure_dev_secrets(settings: Settings) -> dict[str, str]:
    """BACKEND_API_KEY / SUPABASE_JWT_SECRET when unset: generated once and kept in CLERA_DATA_DIR, so a
    restart keeps earlier tokens valid. Returns the values to put into every process's environment."""
    wanted = {"BACKEND_API_KEY": settings.backend_api_key, "SUPABASE_JWT_SECRET": settings.jwt_secret}
    if all(wanted.values()):
        return {k: v for k, v in wanted.items() if v}
    path = settings.data_path / SECRETS_FILE
    stored: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    changed = False
    for name in wanted:
        if not stored.get(name):
            stored[name] = generate_secret()
            changed = True
    if changed:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(stored, indent=1))
    return {name: value or stored[name] for name, value in wanted.items()}


def user_token(args: argparse.Namespace, settings: Settings) -> str | None:
    """--token, else CLERA_TOKEN, else a development token minted for --user; None if none of them."""
    token = args.token or os.environ.get("CLERA_TOKEN")
    if token or not args.user:
        return token
    return mint_jwt(args.user, ensure_dev_secrets(settings)["SUPABASE_JWT_SECRET"])
