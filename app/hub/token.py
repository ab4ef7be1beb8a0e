"""The Hub token: from HF_TOKEN or huggingface_hub's own login, else the one the user gave Hubside, which
lives in the OS keyring (never in our settings file, never in a log)."""

from __future__ import annotations

import logging

from huggingface_hub import get_token

from app.errors import AppError, ErrorKind

log = logging.getLogger(__name__)
KEYRING_SERVICE = "hubside"
KEYRING_USER = "huggingface-token"


def hub_token() -> str | None:
    token = get_token()  # HF_TOKEN, then huggingface_hub's stored login
    if token:
        return token
    try:
        import keyring

        return keyring.get_password(KEYRING_SERVICE, KEYRING_USER) or None
    except Exception as exc:  # no keyring on this system: the same as no token
        log.info("no keyring: %s", type(exc).__name__)
        return None


def save_token(token: str) -> None:
    """Keep the token in the OS keyring ("" forgets it)."""
    try:
        import keyring

        if token:
            keyring.set_password(KEYRING_SERVICE, KEYRING_USER, token)
        else:
            keyring.delete_password(KEYRING_SERVICE, KEYRING_USER)
    except Exception as exc:
        raise AppError(
            ErrorKind.SETTINGS,
            "This system has no keyring to keep the token in; set the HF_TOKEN environment variable instead.",
            type(exc).__name__,
        ) from exc
