"""One file from the Hub to disk: resumable, verified, never shown as a model before its hash is right.

`NAME.part` grows beside the target; a resume asks for `Range: bytes=N-` with `If-Range`, and re-hashes the
bytes already on disk. A 200 to a ranged request, or a Content-Range that does not start at N, restarts the
file (never appends); a 416 finishes only if the hash matches. Network faults are retried with capped,
jittered backoff (a Retry-After is honoured, up to a cap); no byte for `stall_s` seconds is a fault too.
A full disk stops at once and keeps the part. The token goes to the Hub's own host only: redirects are
followed by hand, without it.

One writer per part: `NAME.part.lock` is held (flock) from before the first byte until the rename, so a
second download of the file, in this process or another, is refused at once. The part is fsynced before
its rename and the folder after it: a power cut never leaves a "verified" model made of unwritten blocks.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urljoin

import requests
import urllib3

from app.downloads.jobs import RemoteFile
from app.downloads.locks import lock_of, try_lock
from app.errors import AppError, ErrorKind, to_app_error
from app.hub.client import retry_after_s, same_origin
from app.net import use_system_trust

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
CONNECT_TIMEOUT_S = 15.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0
MAX_FAILURES_WITHOUT_PROGRESS = 8  # consecutive attempts that brought no byte: give up
MAX_REDIRECTS = 5


class Stopped(Exception):
    """The job was paused or cancelled; the part stays for a resume."""


class AlreadyDownloading(AppError):
    def __init__(self, name: str) -> None:
        super().__init__(
            ErrorKind.BAD_INPUT,
            f"{name} is already being downloaded (by another Hubside process).",
            "its .part.lock is held",
        )


class ChecksumMismatch(AppError):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(
            ErrorKind.BAD_MODEL,
            f"{name}: checksum mismatch (the download was damaged); it was deleted. Retry.",
            detail,
        )


@dataclass
class Transfer:
    """How to fetch: the session, who may see the token, and how patient to be."""

    session: requests.Session
    token: str | None = None
    stall_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    live: requests.Response | None = None  # the response being read, so that a pause need not wait for it

    def __post_init__(self) -> None:
        use_system_trust(self.session)  # the Hub API's trust store (the system's), not certifi's

    def interrupt(self) -> None:
        """Unblock a read waiting on the network (from another thread): the download then sees its stop."""
        response = self.live
        if response is None:
            return
        try:
            response.raw.shutdown()  # wakes a read blocked in another thread (closing the socket would not)
        except (RuntimeError, ValueError, OSError):  # the connection went back to the pool: no read to wake
            log.debug("nothing to interrupt: the response was already released")

    def headers_for(self, url: str, hub_url: str) -> dict[str, str]:
        """The token, for a URL of the Hub's own scheme, host and port only (never after a redirect to
        plain http, another port or a CDN)."""
        if self.token and same_origin(url, hub_url):
            return {"Authorization": f"Bearer {self.token}"}
        return {}


def _new_hasher(remote: RemoteFile) -> hashlib._Hash:
    """sha256 for an LFS file; a file kept in git has its blob id: sha1 of a header and the content."""
    if remote.sha256:
        return hashlib.sha256()
    return hashlib.sha1(b"blob %d\0" % remote.size, usedforsecurity=False)


class _Part:
    """The `.part` file and the hash of what it holds (sha256, or the git blob id), kept in step."""

    def __init__(self, path: Path, remote: RemoteFile) -> None:
        self.path = path
        self.remote = remote
        self.hasher = _new_hasher(remote)
        self.offset = 0
        if path.exists() and path.stat().st_size <= remote.size:  # a resume: re-hash what is on disk
            with path.open("rb") as f:
                while block := f.read(CHUNK * 4):
                    self.hasher.update(block)
                    self.offset += len(block)
        elif path.exists():
            self.restart()

    def restart(self) -> None:
        if self.path.exists():
            with self.path.open("r+b") as f:
                f.truncate(0)
        self.hasher, self.offset = _new_hasher(self.remote), 0


def download(
    transfer: Transfer,
    remote: RemoteFile,
    target: Path,
    progress: Callable[[int], None] = lambda done: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Fetch `remote` into `target` (via `target.part`); raises Stopped, ChecksumMismatch, AlreadyDownloading
    or AppError."""
    part_path = target.with_name(target.name + ".part")
    lock = try_lock(lock_of(part_path))
    if lock is None:
        raise AlreadyDownloading(target.name)
    with lock:  # held until the part is renamed or given up
        _download(transfer, remote, target, _Part(part_path, remote), progress, should_stop)


def _download(
    transfer: Transfer,
    remote: RemoteFile,
    target: Path,
    part: _Part,
    progress: Callable[[int], None],
    should_stop: Callable[[], bool],
) -> None:
    progress(part.offset)
    failures = 0
    etag: str | None = None
    while part.offset < remote.size:
        before = part.offset
        try:
            with _get(transfer, remote.url, part.offset, etag) as response:
                transfer.live = response
                if response.status_code == 416:  # the server has nothing past our offset: not the same file
                    part.restart()
                    raise _Retry("416 before the end")
                if response.status_code in (429, 500, 502, 503, 504):
                    raise _Retry(f"HTTP {response.status_code}", response)
                if response.status_code >= 400:
                    raise _http_error(response, target.name)
                validator = response.headers.get("ETag")  # the final host's own (a CDN's: the Xet hash)
                if response.status_code == 206 and etag and validator and validator != etag:
                    # another version than the bytes we hold, though If-Range was sent: never append
                    log.info("%s: the file changed (%s, was %s): restarting", target.name, validator, etag)
                    part.restart()
                    etag = validator
                    raise _Retry("the file changed since the last attempt")
                etag = validator or etag
                start = _start_of(response)
                if start != part.offset:  # a 200 to a ranged request, or another range: start over
                    log.info(
                        "%s: answer starts at byte %s, not %s: restarting", target.name, start, part.offset
                    )
                    part.restart()
                    if start != 0:
                        raise _Retry("a Content-Range we did not ask for")
                _write(response, part, progress, should_stop)
            if part.offset < remote.size:
                raise _Retry("the connection ended early")
        except (_Retry, requests.RequestException) as exc:
            if should_stop():  # the error came from an interrupted read
                raise Stopped() from exc
            if part.offset > before:
                failures = 0  # it moved: only attempts that bring nothing count towards giving up
            answer = exc.response if isinstance(exc, _Retry) else None
            failures = _failed(transfer, failures, str(exc), answer)
    _verify(part, target, remote)


class _Retry(Exception):
    def __init__(self, reason: str, response: requests.Response | None = None) -> None:
        super().__init__(reason)
        self.response = response


def _get(transfer: Transfer, url: str, offset: int, etag: str | None) -> requests.Response:
    """GET the file, following redirects ourselves: the token goes only where the Hub's URL points."""
    hub_url = url
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if etag:
            headers["If-Range"] = etag
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = transfer.session.get(
                url,
                headers=headers | transfer.headers_for(url, hub_url),
                stream=True,
                allow_redirects=False,
                timeout=(CONNECT_TIMEOUT_S, transfer.stall_s),
            )
        except requests.exceptions.SSLError as exc:
            error = to_app_error(exc)
            if error.kind is ErrorKind.TLS:  # a certificate does not change in a few seconds: no retry
                raise error from exc
            raise
        if response.status_code not in (301, 302, 303, 307, 308):
            return response
        url = urljoin(url, response.headers.get("Location", ""))
        response.close()
    raise requests.TooManyRedirects(f"more than {MAX_REDIRECTS} redirects")


def _start_of(response: requests.Response) -> int:
    if response.status_code != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        return int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return -1


def _write(
    response: requests.Response, part: _Part, progress: Callable[[int], None], should_stop: Callable[[], bool]
) -> None:
    part.path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if part.offset else os.O_TRUNC)
    fd = os.open(part.path, flags, 0o644)
    writer = _Writer(fd, part.offset)
    try:
        # read1: whatever has arrived, up to CHUNK; on a dropped connection the bytes before the drop are
        # kept (iter_content would throw away a partly read chunk of up to CHUNK bytes).
        while chunk := _read_some(response):
            if should_stop():
                raise Stopped()
            if writer.error:
                break  # the disk is full: stop reading (the finally says so)
            # Hashed here, while the bytes just read are in this core's cache; written on the writer's
            # thread. Both let go of the interpreter lock, so the two share the machine's cores.
            part.hasher.update(chunk)
            writer.put(chunk)
            part.offset += len(chunk)
            progress(part.offset)
    finally:
        writer.close()  # every queued chunk is on disk, or the disk refused one
        os.close(fd)
        if writer.error is not None:  # the part is shorter than what was hashed: this download() ends
            _raise_write_error(writer.error, part.path, writer.on_disk)


class _Writer:
    """Writes chunks to the part on a thread of its own, in order; stops at the first error (a full disk)."""

    def __init__(self, fd: int, on_disk: int) -> None:
        self.fd = fd
        self.on_disk = on_disk
        self.error: OSError | None = None
        self.chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=16)  # a slow disk holds the network back
        self.thread = threading.Thread(target=self._run, name="download-write")
        self.thread.start()

    def put(self, chunk: bytes) -> None:
        self.chunks.put(chunk)

    def close(self) -> None:
        self.chunks.put(None)
        self.thread.join()

    def _run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            if self.error:
                continue  # drain, so that put() never blocks on a writer that gave up
            try:
                view = memoryview(chunk)
                while view:
                    written = os.write(self.fd, view)
                    self.on_disk += written
                    view = view[written:]
            except OSError as exc:
                self.error = exc


def _raise_write_error(exc: OSError, path: Path, on_disk: int) -> NoReturn:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        raise AppError(
            ErrorKind.DISK_FULL,
            f"Disk full: {path.name} stopped at {on_disk:,} bytes; the part is kept. "
            "Free some space, then resume.",
            str(exc),
        ) from exc
    raise exc


def _read_some(response: requests.Response) -> bytes:
    try:
        return bytes(response.raw.read1(CHUNK))
    except (urllib3.exceptions.HTTPError, OSError, ValueError, AttributeError) as exc:
        # the connection broke, or was closed by `interrupt`: like requests, a ConnectionError
        raise requests.ConnectionError(str(exc)) from exc


def _failed(transfer: Transfer, failures: int, reason: str, response: requests.Response | None) -> int:
    """Count a failed attempt and wait before the next (Retry-After if given, else capped backoff); after
    too many, AppError (the job then fails, keeping its part, and can be resumed)."""
    failures += 1
    if failures > MAX_FAILURES_WITHOUT_PROGRESS:
        raise AppError(
            ErrorKind.NETWORK,
            f"The download keeps failing ({reason}); it stopped. Resume it to try again.",
            reason,
        )
    wait = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (failures - 1)) * random.uniform(0.5, 1.0)
    asked = retry_after_s(response) if response is not None else None
    if asked is not None:
        wait = min(float(asked), RETRY_AFTER_CAP_S)
    log.info("download attempt failed (%s); retrying in %.1f s", reason, wait)
    transfer.sleep(wait)
    return failures


def _http_error(response: requests.Response, name: str) -> AppError:
    if response.status_code in (401, 403):
        return AppError(
            ErrorKind.GATED,
            f"{name}: the Hub refused the download. If the model is gated, accept its license on the Hub, "
            "then add your token.",
            f"HTTP {response.status_code}",
        )
    if response.status_code == 404:
        return AppError(ErrorKind.NOT_FOUND, f"{name} is not on the Hub (any more).", "HTTP 404")
    return AppError(ErrorKind.HUB, f"{name}: the Hub answered HTTP {response.status_code}.", "")


def _verify(part: _Part, target: Path, remote: RemoteFile) -> None:
    digest = part.hasher.hexdigest()
    expected, kind = (remote.sha256, "sha256") if remote.sha256 else (remote.git_blob, "git blob")
    on_disk = part.path.stat().st_size if part.path.exists() else -1  # the file's size, not our count
    if on_disk != remote.size or part.offset != remote.size or not expected or digest != expected:
        part.path.unlink(missing_ok=True)
        raise ChecksumMismatch(
            target.name,
            f"size {on_disk} ({part.offset} counted) vs {remote.size}, {kind} {digest} vs {expected}",
        )
    _fsync(part.path, os.O_RDONLY)  # the bytes on disk before the name says "model"
    os.replace(part.path, target)
    _fsync(target.parent, os.O_RDONLY | os.O_DIRECTORY)  # and the rename itself


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
