"""One error type for everything the user should be told about, and the mapping from library errors.

An `AppError` carries a short message written for the user and a detail for logs and "Show details".
`to_app_error` turns any exception into one, so the UI and the CLI have a single thing to display.
"""

from __future__ import annotations

import errno
from enum import StrEnum


class ErrorKind(StrEnum):
    BAD_INPUT = "bad_input"
    NOT_FOUND = "not_found"
    PERMISSION = "permission"
    DISK_FULL = "disk_full"
    NETWORK = "network"
    HUB = "hub"
    GATED = "gated"
    BAD_MODEL = "bad_model"
    OUT_OF_MEMORY = "out_of_memory"
    ENGINE_CRASHED = "engine_crashed"
    SETTINGS = "settings"
    INTERNAL = "internal"


class AppError(Exception):
    """An error with a message meant for the user (`user_message`) and one meant for logs (`detail`)."""

    def __init__(self, kind: ErrorKind, user_message: str, detail: str = "") -> None:
        super().__init__(user_message)
        self.kind = kind
        self.user_message = user_message
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.user_message} ({self.detail})" if self.detail else self.user_message


# Matched by class name over the MRO so that this module never imports huggingface_hub or requests.
_LIBRARY_ERRORS: dict[str, tuple[ErrorKind, str]] = {
    "GatedRepoError": (
        ErrorKind.GATED,
        "This model is gated: accept its license on the Hub, then add your access token.",
    ),
    "RepositoryNotFoundError": (
        ErrorKind.NOT_FOUND,
        "This model repository was not found on the Hub.",
    ),
    "RevisionNotFoundError": (
        ErrorKind.NOT_FOUND,
        "This revision of the model was not found on the Hub.",
    ),
    "EntryNotFoundError": (ErrorKind.NOT_FOUND, "This file was not found in the model repository."),
    "OfflineModeIsEnabled": (ErrorKind.NETWORK, "Hubside is in offline mode."),
    "LocalEntryNotFoundError": (
        ErrorKind.NETWORK,
        "The Hub could not be reached and nothing is cached for this request.",
    ),
    "HfHubHTTPError": (ErrorKind.HUB, "The Hub answered with an error."),
    "Timeout": (ErrorKind.NETWORK, "The connection timed out."),
    "TimeoutException": (ErrorKind.NETWORK, "The connection timed out."),
    "ConnectionError": (ErrorKind.NETWORK, "Could not connect. Check your network connection."),
    "ConnectError": (ErrorKind.NETWORK, "Could not connect. Check your network connection."),
}

_OS_ERRORS: dict[int, tuple[ErrorKind, str]] = {
    errno.ENOSPC: (ErrorKind.DISK_FULL, "The disk is full."),
    errno.EFBIG: (ErrorKind.DISK_FULL, "The disk is full (file too large for this disk or limit)."),
    errno.EDQUOT: (ErrorKind.DISK_FULL, "The disk quota is exceeded."),
    errno.EACCES: (ErrorKind.PERMISSION, "Permission denied."),
    errno.EPERM: (ErrorKind.PERMISSION, "Permission denied."),
    errno.ENOENT: (ErrorKind.NOT_FOUND, "File or folder not found."),
    errno.ENOTDIR: (ErrorKind.BAD_INPUT, "A file stands where a folder is needed."),
    errno.EROFS: (ErrorKind.PERMISSION, "The disk is read-only."),
}


def to_app_error(exc: BaseException) -> AppError:
    """The `AppError` to show for any exception; library errors get a message a user understands."""
    if isinstance(exc, AppError):
        return exc
    detail = f"{type(exc).__name__}: {exc}"
    for cls in type(exc).__mro__:
        if cls.__name__ in _LIBRARY_ERRORS:
            kind, message = _LIBRARY_ERRORS[cls.__name__]
            return AppError(kind, message, detail)
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        kind, message = _OS_ERRORS[exc.errno]
        if exc.filename:
            message = f"{message} ({exc.filename})"
        return AppError(kind, message, detail)
    if isinstance(exc, MemoryError):
        return AppError(ErrorKind.OUT_OF_MEMORY, "Not enough memory.", detail)
    return AppError(ErrorKind.INTERNAL, "Something went wrong.", detail)
