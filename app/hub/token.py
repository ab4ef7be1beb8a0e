"""The Hub token: from HF_TOKEN or huggingface_hub's own login, else the one the user gave Hubside, kept in
the OS keyring (never in our settings file, never in a log). Where there is no keyring, and only if the user
agreed, a file readable by the user alone (`token_file`) holds it."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from app.errors import AppError, ErrorKind
from app.files import write_atomic

log = logging.getLogger(__name__)
KEYRING_SERVICE = "hubside"
KEYRING_USER = "huggingface-token"


class NoKeyring(AppError):
    def __init__(self, reason: str) -> None:
        super().__init__(
            ErrorKind.SETTINGS,
            "This system has no keyring to keep the token in; set the HF_TOKEN environment variable instead.",
            reason,
        )


def hub_token(token_file: Path | None = None) -> str | None:
    from huggingface_hub import get_token

    token = get_token()  # HF_TOKEN, then huggingface_hub's stored login
    return token or kept_secret(KEYRING_USER, token_file)


def kept_secret(user: str, secret_file: Path | None = None) -> str | None:
    """A secret Hubside keeps under `user` in the OS keyring (else in `secret_file`), or None."""
    try:
        import keyring

        stored = keyring.get_password(KEYRING_SERVICE, user)
        if stored:
            return stored
    except Exception as exc:  # no keyring on this system: look for the file the user agreed to
        log.info("no keyring: %s", type(exc).__name__)
    if secret_file is not None and secret_file.is_file():
        return secret_file.read_text(encoding="utf-8").strip() or None
    return None


def save_token(token: str, token_file: Path | None = None, user: str = KEYRING_USER) -> None:
    """Keep the token (or another secret, under `user`) in the OS keyring ("" forgets it). With
    `token_file` (the user agreed to a plain file), a system without a keyring keeps it there, readable by
    this user only."""
    try:
        import keyring

        if token:
            keyring.set_password(KEYRING_SERVICE, user, token)
        else:
            with contextlib.suppress(keyring.errors.PasswordDeleteError):
                keyring.delete_password(KEYRING_SERVICE, user)
        if token_file is not None:
            token_file.unlink(missing_ok=True)
        return
    except Exception as exc:
        if token_file is None:
            raise NoKeyring(type(exc).__name__) from exc
    token_file.parent.mkdir(parents=True, exist_ok=True)
    if not token:
        token_file.unlink(missing_ok=True)
        return
    # A new file renamed into place: mkstemp creates it O_EXCL with mode 0600, so the token is never in a
    # file another user can read, nor in an older file's inode that someone may hold open.
    write_atomic(token_file, token.encode("utf-8"))
