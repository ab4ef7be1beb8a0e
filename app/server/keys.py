"""The server's API key: generated on first start with `secrets`, kept like the Hub token (the OS keyring;
where there is none, a file readable by this user alone, since a server on a headless machine must start)."""

from __future__ import annotations

import secrets
from pathlib import Path

from app.hub.token import kept_secret, save_token

KEY_USER = "server-api-key"
KEY_PREFIX = "hs-"


def server_key(key_file: Path) -> tuple[str, bool]:
    """The kept key, else a new one kept now; and whether it was made now."""
    key = kept_secret(KEY_USER, key_file)
    if key:
        return key, False
    key = new_key()
    save_token(key, key_file, user=KEY_USER)
    return key, True


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def regenerate_key(key_file: Path) -> str:
    key = new_key()
    save_token(key, key_file, user=KEY_USER)
    return key
