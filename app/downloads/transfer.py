"""One file from the Hub to disk: over several ranged connections, resumable, verified, never shown as a
model before its hash is right.

The first request (no Range from byte 0, or `Range: bytes=N-` on a resume) follows the Hub's redirect by
hand (the token goes to the Hub's own host only) and tells whether ranges work (a 206, or a 200 with
`Accept-Ranges: bytes`), the CDN URL and the ETag. Then up to `connections` connections fetch segments of
the file (app.downloads.segments: work stealing), each with `If-Range`, reading into a large buffer and
writing it with os.pwrite from its own thread (decrypted straight into that buffer: no piece crosses a
thread, no copy). A hasher thread reads the contiguous prefix back with os.pread (from the page cache) as it
grows, so the whole file is checked against the Hub's sha256 without a second pass over it.

Faults: a drop, a stall (no byte for min(stall_s, 10 s)) or a 5xx re-queues only that connection's
segment, with capped, jittered backoff (Retry-After honoured up to a cap); a wrong Content-Range, or one
200 to a ranged request, retries only that segment; a second 200 means the server does not do ranges: one
connection from then on. A changed ETag (or a 416) means the file changed: every segment restarts. A 403
or 410 from the CDN (an expired signed URL) resolves the Hub's URL again. A full disk stops at once and
keeps the part. Segment rows go to the jobs database (`Transfer.segment_store`) at most once a second and
at the end, so a resume after a kill -9 fetches only what is missing; without a store the part is cut back
to its contiguous prefix when the download ends unfinished, so that its size is what it holds.

One writer per part: `NAME.part.lock` is held (flock) from before the first byte until the rename, so a
second download of the file, in this process or another, is refused at once. The part is fsynced before
its rename and the folder after it: a power cut never leaves a "verified" model made of unwritten blocks.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn
from urllib.parse import urljoin

import requests
import urllib3

from app.downloads.jobs import RemoteFile
from app.downloads.locks import lock_of, try_lock
from app.downloads.segments import Plan, Segment, SegmentStore
from app.downloads.throttle import Bandwidth
from app.errors import AppError, ErrorKind, to_app_error
from app.hub.client import retry_after_s, same_origin
from app.net import use_system_trust

log = logging.getLogger(__name__)

BUFFER_BYTES = 2 << 20  # one connection's read buffer: filled, then written with one pwrite
FILL_S = 0.5  # a buffer is written after this long even if not full (progress on a slow connection)
# at most this much per read: FILL_S is looked at on a slow line, and a drop loses only the slice being
# filled (fetched again; readinto keeps nothing of a read that fails)
READ_SLICE = 64 << 10
HASH_BLOCK = 4 << 20
MIN_SEGMENTED_BYTES = 16 << 20  # smaller files come over one connection
MAX_CONNECTIONS = 16
STALL_CAP_S = 10.0  # a connection silent this long is replaced, whatever stall_s says
TICK_S = 0.1  # how often the coordinating thread reports progress and looks for a stop
SAVE_INTERVAL_S = 1.0  # segment rows saved at most this often
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
    """How to fetch: the session, who may see the token, how patient to be, over how many connections."""

    session: requests.Session
    token: str | None = None
    stall_s: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    live: requests.Response | None = None  # a response being read, so that a pause need not wait for it
    connections: int = 8  # 1..16 per file
    limiter: Bandwidth | None = None  # shared by every connection; take() after each read
    segment_store: SegmentStore | None = None  # where segment rows live between runs (the jobs database)
    _responses: set[requests.Response] = field(default_factory=set, init=False, repr=False)
    _reading: int = field(default=0, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        # the Hub API's trust store (the system's), not certifi's; a connection kept for each of several
        # downloads' connections to one CDN (beyond the pool, each piece would cost a new TLS handshake)
        use_system_trust(self.session, pool_size=4 * MAX_CONNECTIONS)
        self.connections = max(1, min(MAX_CONNECTIONS, int(self.connections)))

    @property
    def active_connections(self) -> int:
        """Connections reading file bytes now (for the Downloads page)."""
        return self._reading

    def interrupt(self) -> None:
        """Unblock every read waiting on the network (from another thread): the download sees its stop."""
        with self._guard:
            responses = [*self._responses, *([self.live] if self.live is not None else [])]
        for response in responses:
            try:
                response.raw.shutdown()  # wakes a read blocked in another thread (closing would not)
            except (RuntimeError, ValueError, OSError, AttributeError):  # already back in the pool
                log.debug("nothing to interrupt: the response was already released")

    def headers_for(self, url: str, hub_url: str) -> dict[str, str]:
        """The token, for a URL of the Hub's own scheme, host and port only (never after a redirect to
        plain http, another port or a CDN)."""
        if self.token and same_origin(url, hub_url):
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def _track(self, response: requests.Response, add: bool) -> None:
        with self._guard:
            if add:
                self._responses.add(response)
                self.live = response
            else:
                self._responses.discard(response)
                if self.live is response:
                    self.live = None

    def _count_reading(self, delta: int) -> None:
        with self._guard:
            self._reading += delta


def _new_hasher(remote: RemoteFile) -> hashlib._Hash:
    """sha256 for an LFS file; a file kept in git has its blob id: sha1 of a header and the content."""
    if remote.sha256:
        return hashlib.sha256()
    return hashlib.sha1(b"blob %d\0" % remote.size, usedforsecurity=False)


def download(
    transfer: Transfer,
    remote: RemoteFile,
    target: Path,
    progress: Callable[[int], None] = lambda done: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Fetch `remote` into `target` (via `target.part`); raises Stopped, ChecksumMismatch, AlreadyDownloading
    or AppError. `progress` gets the bytes on disk (all segments), from the calling thread."""
    part_path = target.with_name(target.name + ".part")
    lock = try_lock(lock_of(part_path))
    if lock is None:
        raise AlreadyDownloading(target.name)
    with lock:  # held until the part is renamed or given up
        _Fetch(transfer, remote, target, part_path).run(progress, should_stop)


class _Retry(Exception):
    """This attempt of one segment failed; the segment is retried (by this or another connection)."""

    def __init__(self, reason: str, response: requests.Response | None = None) -> None:
        super().__init__(reason)
        self.response = response


class _Restart(Exception):
    """The file on the server changed: every segment starts over."""


class _Hasher(threading.Thread):
    """Hashes the part's contiguous prefix as it grows, reading it back with pread (the page cache)."""

    def __init__(self, path: Path, remote: RemoteFile, plan: Plan) -> None:
        super().__init__(name="download-hash", daemon=True)
        self.path, self.plan, self.size = path, plan, remote.size
        self.hasher = _new_hasher(remote)
        self.hashed = 0
        self.error: OSError | None = None
        self.quit = threading.Event()

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            self.error = exc
            return
        try:
            while self.hashed < self.size and not self.quit.is_set():
                with self.plan.lock:
                    self.plan.lock.wait_for(
                        lambda: self.quit.is_set() or self.plan.prefix() > self.hashed, timeout=0.2
                    )
                ready = self.plan.prefix()
                while self.hashed < ready and not self.quit.is_set():
                    block = os.pread(fd, min(HASH_BLOCK, ready - self.hashed), self.hashed)
                    if not block:
                        raise OSError(errno.EIO, "the part is shorter than its segments say")
                    self.hasher.update(block)
                    self.hashed += len(block)
        except OSError as exc:
            self.error = exc
        finally:
            os.close(fd)

    def stop(self) -> None:
        self.quit.set()
        with self.plan.lock:
            self.plan.lock.notify_all()
        self.join()


class _Fetch:
    """One download of one file: rounds of connections until it is complete (a round ends early when the
    file changed on the server), then the check and the rename."""

    def __init__(self, transfer: Transfer, remote: RemoteFile, target: Path, part: Path) -> None:
        self.transfer, self.remote, self.target, self.part = transfer, remote, target, part
        self.key = str(part)
        self.url = remote.url  # where file bytes come from: the CDN URL once resolved
        self.ranges: bool | None = None  # whether the server honours Range (None: not known yet)
        self.refusals = 0  # 200s to ranged requests
        self.lock = threading.Lock()
        self.etag, self.plan = self._load()

    # --- state on disk -----------------------------------------------------------------------------
    def _load(self) -> tuple[str | None, Plan]:
        on_disk = os.lstat(self.part).st_size if self.part.exists() else 0
        store = self.transfer.segment_store
        if store is not None:
            etag, rows = store.segments(self.key)
            if rows and Plan.valid_rows(rows, self.remote.size, on_disk):
                return etag or None, Plan(self.remote.size, rows)
        if on_disk > self.remote.size:
            _truncate(self.part, 0)
            on_disk = 0
        # No rows: a part written from byte 0 on (one connection, or cut back to its prefix).
        return None, Plan(self.remote.size, [(0, self.remote.size, on_disk)] if on_disk else None)

    def _save(self) -> None:
        if self.transfer.segment_store is not None:
            self.transfer.segment_store.save_segments(self.key, self.etag or "", self.plan.rows())

    def _forget(self) -> None:
        if self.transfer.segment_store is not None:
            self.transfer.segment_store.save_segments(self.key, "", [])

    # --- the whole download ------------------------------------------------------------------------
    def run(self, progress: Callable[[int], None], should_stop: Callable[[], bool]) -> None:
        restarts = 0
        try:
            while True:
                hasher = self._round(progress, should_stop)
                if hasher is not None:
                    break
                reason = self.restart_reason or "the file changed"
                log.info("%s: %s: every segment starts over", self.target.name, reason)
                restarts = _failed(self.transfer, restarts, reason, None, self._sleep)
                self.etag, self.plan = None, Plan(self.remote.size)
                _truncate(self.part, 0)
                self._save()
        except ChecksumMismatch:
            raise
        except BaseException as exc:
            self._save()
            kept = self.plan.done()
            if self.transfer.segment_store is None and self.part.exists():
                kept = self.plan.prefix()
                _truncate(self.part, kept)  # its size is then what a resume may trust
            if isinstance(exc, AppError) and exc.kind is ErrorKind.DISK_FULL:
                raise _disk_full(self.part, kept, exc.detail) from exc  # with the bytes kept, now known
            raise
        self._verify(hasher)

    def _round(self, progress: Callable[[int], None], should_stop: Callable[[], bool]) -> _Hasher | None:
        """Fetch until complete; the hasher then (all hashed), or None when the file changed."""
        self.over = threading.Event()  # set: every connection of this round ends
        self.restart_reason: str | None = None
        self.fatal: BaseException | None = None
        self.workers: list[threading.Thread] = []
        self.helpers_started = False
        self.part.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        hasher = _Hasher(self.part, self.remote, self.plan)
        hasher.start()
        try:
            self._start_worker()
            last_save = time.monotonic()
            while True:
                progress(self.plan.done())
                if should_stop():
                    raise Stopped()
                if self.fatal is not None:
                    raise self.fatal
                if self._file_changed():
                    return None
                with self.lock:
                    running = any(w.is_alive() for w in self.workers)
                if not running:
                    break
                if time.monotonic() - last_save >= SAVE_INTERVAL_S:
                    last_save = time.monotonic()
                    self._save()
                self.over.wait(TICK_S)
            if not self.plan.complete() or self.plan.prefix() != self.remote.size:  # should not happen
                raise AppError(ErrorKind.NETWORK, f"{self.target.name}: the download stopped early.")
            hasher.join()  # the last bytes written: the prefix is the whole file
            if hasher.error is not None:
                raise hasher.error
            progress(self.plan.done())
            return hasher
        finally:
            self._end_round(hasher)

    def _file_changed(self) -> bool:
        return self.restart_reason is not None  # set by a connection's thread

    def _end_round(self, hasher: _Hasher) -> None:
        self.over.set()
        self.transfer.interrupt()
        with self.lock:
            workers = list(self.workers)
        for worker in workers:
            worker.join()  # none writes after this: the part may be cut or renamed
        hasher.stop()
        os.close(self.fd)

    def _sleep(self, seconds: float) -> None:
        """A backoff that a stop cuts short (a test's own sleep is called as given)."""
        if self.transfer.sleep is time.sleep and hasattr(self, "over"):
            self.over.wait(seconds)
        else:
            self.transfer.sleep(seconds)

    # --- connections ---------------------------------------------------------------------------------
    def _start_worker(self) -> None:
        worker = threading.Thread(target=self._work, name="download-connection", daemon=True)
        with self.lock:
            self.workers.append(worker)
        worker.start()

    def _start_helpers(self) -> None:
        """Once ranges are known to work, the other connections (a small file keeps one)."""
        with self.lock:
            if self.helpers_started:
                return
            self.helpers_started = True
        if self.remote.size < MIN_SEGMENTED_BYTES:
            return
        for _ in range(self.transfer.connections - 1):
            self._start_worker()

    def _work(self) -> None:
        segment: Segment | None = None
        failures = 0
        try:
            while not self.over.is_set():
                if segment is None:
                    segment = self.plan.take(steal=bool(self.ranges))
                    if segment is None:
                        return  # nothing left to fetch, or to steal
                current, before = segment, segment.pos
                try:
                    self._fetch(current)
                    if current.left > 0:
                        raise _Retry("the connection ended early")
                    self.plan.release(current)
                    segment, failures = None, 0
                except (_Retry, requests.RequestException) as exc:
                    if self.over.is_set():
                        return
                    if current.pos > before:
                        failures = 0  # it moved: only attempts that bring nothing count towards giving up
                    self.plan.release(current)  # another connection may take it up meanwhile
                    segment = None
                    answer = exc.response if isinstance(exc, _Retry) else None
                    failures = _failed(self.transfer, failures, str(exc), answer, self._sleep)
        except _Restart as exc:
            self.restart_reason = self.restart_reason or str(exc)
            self.over.set()
        except BaseException as exc:  # AppError (refused, disk full, too many failures) or a bug
            self.fatal = self.fatal or exc
            self.over.set()
        finally:
            if segment is not None:
                self.plan.release(segment)

    def _fetch(self, segment: Segment) -> None:
        response = self._open(segment)
        self.transfer._track(response, True)
        try:
            with response:
                self._accept(response, segment)
                self._pump(response, segment)
        finally:
            self.transfer._track(response, False)

    def _open(self, segment: Segment) -> requests.Response:
        headers = {"Accept-Encoding": "identity"}
        if segment.pos or segment.end < self.remote.size:
            last = "" if segment.end == self.remote.size else str(segment.end - 1)
            headers["Range"] = f"bytes={segment.pos}-{last}"
            if self.etag:
                headers["If-Range"] = self.etag
        url = self.url
        response = _get(self.transfer, url, headers, self.remote.url)
        if response.status_code in (403, 410) and url != self.remote.url:
            # A signed CDN URL that expired: ask the Hub again (it signs a fresh one).
            response.close()
            log.info("%s: CDN URL refused (HTTP %s): resolving again", self.target.name, response.status_code)
            response = _get(self.transfer, self.remote.url, headers, self.remote.url)
        if response.status_code < 300:
            self.url = response.url  # the final host, for the next requests (no redirect each time)
        return response

    def _accept(self, response: requests.Response, segment: Segment) -> None:
        """Check the answer before any of its bytes is written; raises _Retry, _Restart or AppError."""
        status = response.status_code
        if status == 416:  # nothing where our segment is: the file is not the one we hold
            raise _Restart("416 before the end")
        if status in (429, 500, 502, 503, 504):
            raise _Retry(f"HTTP {status}", response)
        if status >= 400:
            raise _http_error(response, self.target.name)
        validator = response.headers.get("ETag")  # the final host's own (a CDN's: the Xet hash)
        if self.etag and validator and validator != self.etag:
            raise _Restart(f"the file changed ({validator}, was {self.etag})")
        if status == 200 and segment.pos > 0:  # the whole file, though we asked for a range
            self.refusals += 1
            if self.refusals < 2:
                raise _Retry("a 200 to a ranged request")
            self.ranges = False  # twice: the server does not do ranges
            raise _Restart("the server ignores Range: one connection, from byte 0")
        if status == 200 and "Range" in response.request.headers:  # from byte 0 as asked, but all of it
            self.ranges = False
            self.plan.one_connection()
        if status == 206 and _content_range(response) != (segment.pos, self.remote.size):
            raise _Retry("a Content-Range we did not ask for")
        self.etag = self.etag or validator
        if self.ranges is None:
            self.ranges = status == 206 or response.headers.get("Accept-Ranges", "") == "bytes"

    def _pump(self, response: requests.Response, segment: Segment) -> None:
        """Read into a large buffer, write it where it belongs; until the segment's end (a steal may move
        it), the answer's end, or the round's."""
        buffer = memoryview(bytearray(BUFFER_BYTES))
        limiter = self.transfer.limiter
        self.transfer._count_reading(1)
        try:
            while not self.over.is_set():
                # the first read small: the other connections start once it is on disk
                want = self.plan.clip(
                    segment, BUFFER_BYTES if self.helpers_started or not self.ranges else READ_SLICE
                )
                if want == 0:
                    return
                got, ended, error = _fill(response, buffer[:want])
                if got and limiter is not None:
                    limiter.take(got, self.over.is_set)  # outside every lock; a pause ends the wait
                count = self.plan.clip(segment, got)
                if count:  # even when the round ends: bytes read are kept (the round waits for this)
                    self._write(buffer[:count], segment.pos)
                    self.plan.wrote(segment, count)
                    if self.ranges:
                        self._start_helpers()  # after a first buffer is on disk: the part is usable
                if error is not None:
                    raise error
                if ended:
                    return
        finally:
            self.transfer._count_reading(-1)

    def _write(self, data: memoryview, offset: int) -> None:
        try:
            while data:
                written = os.pwrite(self.fd, data, offset)
                data, offset = data[written:], offset + written
        except OSError as exc:
            _raise_write_error(exc, self.part, self.plan.done())

    # --- the end -----------------------------------------------------------------------------------
    def _verify(self, hasher: _Hasher) -> None:
        digest = hasher.hasher.hexdigest()
        remote = self.remote
        expected, kind = (remote.sha256, "sha256") if remote.sha256 else (remote.git_blob, "git blob")
        on_disk = self.part.stat().st_size if self.part.exists() else -1  # the file's size, not our count
        if on_disk != remote.size or hasher.hashed != remote.size or not expected or digest != expected:
            self.part.unlink(missing_ok=True)
            self._forget()
            raise ChecksumMismatch(
                self.target.name,
                f"size {on_disk} ({hasher.hashed} hashed) vs {remote.size}, {kind} {digest} vs {expected}",
            )
        _fsync(self.part, os.O_RDONLY)  # the bytes on disk before the name says "model"
        os.replace(self.part, self.target)
        _fsync(self.target.parent, os.O_RDONLY | os.O_DIRECTORY)  # and the rename itself
        self._forget()


def _fill(response: requests.Response, view: memoryview) -> tuple[int, bool, requests.ConnectionError | None]:
    """Read into `view` until it is full, the answer ends, or FILL_S has passed: (bytes read, whether the
    answer ended, the error that cut it). What was read before a drop is kept, but for the slice then
    being filled."""
    # http.client's readinto decrypts straight into our buffer. urllib3's read1 would allocate a bytes
    # object of the size asked for at each call (a 2 MiB mmap for each 16 KB TLS record): twice the system
    # time and 0.4 s more for a 253 MB file over TLS.
    body = response.raw._fp
    if not isinstance(body, http.client.HTTPResponse):  # closed by `interrupt`
        return 0, True, requests.ConnectionError("the connection was closed")
    got = 0
    began = time.monotonic()
    while got < len(view):
        try:
            count = body.readinto(view[got : got + READ_SLICE])
        except (
            http.client.HTTPException,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
            AttributeError,
        ) as exc:
            # the connection broke, or was closed by `interrupt`: like requests, a ConnectionError
            return got, True, requests.ConnectionError(str(exc))
        if not count:
            return got, True, None
        got += count
        if time.monotonic() - began >= FILL_S:
            break
    return got, False, None


def _get(transfer: Transfer, url: str, headers: dict[str, str], hub_url: str) -> requests.Response:
    """GET the file, following redirects ourselves: the token goes only where the Hub's URL points."""
    for _ in range(MAX_REDIRECTS + 1):
        try:
            response = transfer.session.get(
                url,
                headers=headers | transfer.headers_for(url, hub_url),
                stream=True,
                allow_redirects=False,
                timeout=(CONNECT_TIMEOUT_S, min(transfer.stall_s, STALL_CAP_S)),
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


def _content_range(response: requests.Response) -> tuple[int, int] | None:
    """(start, total) of "bytes START-END/TOTAL"; None if it says something else."""
    content_range = response.headers.get("Content-Range", "")
    try:
        span, total = content_range.split()[1].split("/")
        return int(span.split("-")[0]), int(total)
    except (IndexError, ValueError):
        return None


def _truncate(path: Path, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _disk_full(path: Path, on_disk: int, detail: str) -> AppError:
    return AppError(
        ErrorKind.DISK_FULL,
        f"Disk full: {path.name} stopped at {on_disk:,} bytes; the part is kept. "
        "Free some space, then resume.",
        detail,
    )


def _raise_write_error(exc: OSError, path: Path, on_disk: int) -> NoReturn:
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        raise _disk_full(path, on_disk, str(exc)) from exc
    raise exc


def _failed(
    transfer: Transfer,
    failures: int,
    reason: str,
    response: requests.Response | None,
    sleep: Callable[[float], None] | None = None,
) -> int:
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
    (sleep or transfer.sleep)(wait)
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


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
