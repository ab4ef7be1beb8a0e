"""One error type for everything the user should be told about, and the mapping from library errors.

An `AppError` carries a short message written for the user and a detail for logs and "Show details".
`to_app_error` turns any exception into one, so the UI and the CLI have a single thing to display.
"""

from __future__ import annotations

import errno
import math
import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit


class ErrorKind(StrEnum):
    BAD_INPUT = "bad_input"
    NOT_FOUND = "not_found"
    PERMISSION = "permission"
    DISK_FULL = "disk_full"
    NETWORK = "network"
    TLS = "tls"  # a certificate that could not be verified
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


class RateLimited(AppError):
    """The Hub answered 429: asking it more now only prolongs the limit."""


# Exceptions are matched by class name over the MRO, so that this module never imports huggingface_hub,
# httpx2 or requests (a Hub error is also an OSError: the Hub's names are tried first).
_NETWORK_ERRORS = frozenset(
    {"TransportError", "ConnectionError", "ConnectError", "Timeout", "TimeoutException", "TimeoutError",
     "gaierror", "OfflineModeIsEnabled", "LocalEntryNotFoundError"}
)  # fmt: skip
_UNREADABLE_ANSWERS = (ValueError, TypeError, KeyError, AttributeError)  # JSON or shapes we can't read


def retry_after_s(response: Any) -> int | None:
    """Seconds to wait: Retry-After as seconds or as an HTTP date (rounded up; 0 if past), else the `t` of the
    Hub's `RateLimit: "api";r=0;t=55` (often the only one a 429 carries); None when neither says."""
    value = response.headers.get("Retry-After", "").strip()
    if value.isdigit():
        return int(value)
    if value:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            when = None
        if when is not None:
            when = when if when.tzinfo else when.replace(tzinfo=UTC)  # an HTTP date is always GMT
            return max(0, math.ceil((when - datetime.now(UTC)).total_seconds()))
    match = re.search(r"(?:^|;)\s*t=(\d+)", response.headers.get("RateLimit", ""))
    return int(match.group(1)) if match else None


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
    return _mapped(exc, repo="", at_hub=False)


def hub_error(exc: BaseException, repo: str = "") -> AppError:
    """The same, for a failure while talking to the Hub's API about `repo`: a network failure is "can't
    reach the Hub", an answer of the wrong shape is the Hub's (not a bug of ours)."""
    return _mapped(exc, repo, at_hub=True)


def _mapped(exc: BaseException, repo: str, at_hub: bool) -> AppError:
    if isinstance(exc, AppError):
        return exc
    detail = f"{type(exc).__name__}: {exc}"
    names = {cls.__name__ for cls in type(exc).__mro__}
    known = _tls_failure(exc, detail) or _hub_answer(exc, names, repo, detail)
    if known is not None:
        return known
    disk = isinstance(exc, OSError) and exc.errno in _OS_ERRORS and not names & _NETWORK_ERRORS
    if not disk and (names & _NETWORK_ERRORS or (at_hub and isinstance(exc, OSError))):
        if "OfflineModeIsEnabled" in names:
            return AppError(ErrorKind.NETWORK, "Hubside is in offline mode.", detail)
        message = "Can't reach the Hub (offline?)." if at_hub else "Could not connect. Check your network."
        return AppError(ErrorKind.NETWORK, message, detail)
    if at_hub and isinstance(exc, _UNREADABLE_ANSWERS):
        return AppError(ErrorKind.HUB, "The Hub sent an answer Hubside could not read.", detail)
    if isinstance(exc, OSError) and exc.errno in _OS_ERRORS:
        kind, message = _OS_ERRORS[exc.errno]
        if exc.filename:
            message = f"{message} ({exc.filename})"
        return AppError(kind, message, detail)
    if isinstance(exc, MemoryError):
        return AppError(ErrorKind.OUT_OF_MEMORY, "Not enough memory.", detail)
    where = " talking to the Hub" if at_hub else ""
    return AppError(ErrorKind.INTERNAL, f"Something went wrong{where}.", detail)


def _hub_answer(exc: BaseException, names: set[str], repo: str, detail: str) -> AppError | None:
    """The Hub's refusals (huggingface_hub's HfHubHTTPError and its kinds), or None for anything else."""
    if "HfHubHTTPError" not in names and "GatedRepoError" not in names:
        return None
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", 0)
    if "GatedRepoError" in names:
        return AppError(
            ErrorKind.GATED,
            f"{repo or 'This model'} is gated: accept its license on the Hub (huggingface.co/{repo}), then "
            "add your token (Hub token… on the Discover page, or HF_TOKEN).",
            detail,
        )
    if status == 401:  # the Hub answers a missing repo and a private one alike to a stranger (no error code)
        return AppError(
            ErrorKind.NOT_FOUND,
            f"{repo or 'That model'}: not found, or private: sign in (Hub token… on the Discover page, or "
            "HF_TOKEN).",
            detail,
        )
    if "RepositoryNotFoundError" in names:
        return AppError(
            ErrorKind.NOT_FOUND,
            f"There is no model called {repo or 'that'} on the Hub (or it is private: add your token).",
            detail,
        )
    if names & {"RevisionNotFoundError", "EntryNotFoundError"}:
        return AppError(ErrorKind.NOT_FOUND, "That file or version is not on the Hub (any more).", detail)
    if status == 429:
        wait = retry_after_s(response) if response is not None else None
        after = f" in {wait} s" if wait is not None else " later"
        return RateLimited(ErrorKind.HUB, f"The Hub is limiting requests; try again{after}.", detail)
    return AppError(ErrorKind.HUB, f"The Hub answered with an error (HTTP {status}).", detail)


def _tls_failure(exc: BaseException, detail: str) -> AppError | None:
    """A certificate that could not be verified, anywhere in the exception's chain (requests and httpx2 wrap
    the ssl module's error), or None."""
    causes = list(_chain(exc))
    failure = next((e for e in causes if isinstance(e, ssl.SSLCertVerificationError)), None)
    if failure is None:
        return None
    host = next((h for h in map(_host_of, causes) if h), "the server")
    return AppError(
        ErrorKind.TLS,
        f"The certificate of {host} could not be verified, so Hubside did not connect. If your network "
        "inspects HTTPS (a company proxy, an antivirus), add its root certificate to the system's "
        "certificate store: Hubside trusts the certificates the system trusts.",
        detail,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what caused it, and exceptions it carries as arguments or a `reason` (urllib3)."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo and len(seen) < 32:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        carried = [current.__cause__, current.__context__, getattr(current, "reason", None), *current.args]
        todo.extend(e for e in carried if isinstance(e, BaseException))


def _host_of(exc: BaseException) -> str | None:
    """The host a request that failed was for (requests', httpx2's or urllib3's error), if it says."""
    try:
        request = getattr(exc, "request", None)  # httpx2 raises RuntimeError when it has none
    except RuntimeError:
        request = None
    url = getattr(request, "url", None)
    if url is not None and urlsplit(str(url)).hostname:
        return urlsplit(str(url)).hostname
    host = getattr(getattr(exc, "pool", None), "host", None)
    return str(host) if host else None
