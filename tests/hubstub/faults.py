"""Faults the stand-in serves on request, and its log of requests."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Fault:
    """One misbehaviour for requests whose URL path contains `path`.

    Rules are tried in the order they were added; the first one that matches and has uses left applies, so
    a sequence of statuses is a sequence of faults with `times=1`. Transfer faults (drop, stall, range and
    content tricks) apply only to responses that carry file bytes, never to a redirect or an API answer.
    """

    path: str = ""  # substring of the decoded URL path; "" matches every request
    method: str | None = None  # "GET", "HEAD", "POST"; None: any
    times: int | None = 1  # how many requests it affects; None: every one
    # Answer instead of the real response:
    status: int | None = None  # e.g. 500, 503, 429
    retry_after: str | None = None  # Retry-After header value sent with `status`
    body: bytes | None = None  # a body of our choosing (odd JSON, an HTML page...)
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # extra headers (e.g. a Link loop)
    # Transfer faults:
    drop_after: int | None = None  # close the connection after this many body bytes
    stall_after: int | None = None  # send this many body bytes, then send nothing
    stall_seconds: float = 120.0
    ignore_range: bool = False  # answer 200 with the whole file to a ranged request
    ignore_if_range: bool = False  # answer the Range even when If-Range names another version
    wrong_content_range: bool = False  # a 206 whose Content-Range starts one byte late
    flip_byte: int | None = None  # XOR this file offset with 0xFF
    other_version: bool = False  # serve changed content under another ETag
    delay_seconds: float = 0.0  # answer (normally, or with the fault) only after this long: a slow Hub

    @property
    def replaces_response(self) -> bool:
        return self.status is not None or self.body is not None or bool(self.headers)

    @property
    def changes_body(self) -> bool:
        """Whether the bytes sent differ from the file's (cut, stalled or altered)."""
        return (
            self.drop_after is not None
            or self.stall_after is not None
            or self.flip_byte is not None
            or self.other_version
        )

    @property
    def is_transfer_fault(self) -> bool:
        return (
            self.drop_after is not None
            or self.stall_after is not None
            or self.ignore_range
            or self.ignore_if_range
            or self.wrong_content_range
            or self.flip_byte is not None
            or self.other_version
        )


class FaultList:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, path: str, method: str, serving_bytes: bool) -> Fault | None:
        """The fault for this request, counting one use of it."""
        with self._lock:
            for fault in self._faults:
                if fault.times == 0 or fault.path not in path:
                    continue
                if fault.method is not None and fault.method != method:
                    continue
                if not fault.replaces_response and not serving_bytes and not fault.delay_seconds:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                return fault
        return None


@dataclass(frozen=True)
class LoggedRequest:
    server: str  # "hub" or "cdn"
    method: str
    path: str  # decoded URL path
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case
    status: int
    body_bytes: int  # body bytes sent before the response ended (or was cut)


class RequestLog:
    """Every request served, in order. Reading waits (briefly) for responses still being written, so a
    test that saw its client fail on a cut connection also sees the server's record of that cut."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._entries: list[LoggedRequest] = []
        self._in_flight = 0

    def begin(self) -> None:
        with self._changed:
            self._in_flight += 1

    def end_unlogged(self) -> None:
        """A request that ended without an entry (begun before a reset)."""
        with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    def append(self, entry: LoggedRequest) -> None:
        with self._changed:
            self._entries.append(entry)
            self._in_flight -= 1
            self._changed.notify_all()

    def all(self, settle_seconds: float = 5.0) -> list[LoggedRequest]:
        with self._changed:
            self._changed.wait_for(lambda: self._in_flight == 0, timeout=settle_seconds)
            return list(self._entries)

    def matching(self, path: str = "", method: str | None = None) -> list[LoggedRequest]:
        return [r for r in self.all() if path in r.path and (method is None or r.method == method)]

    def clear(self) -> None:
        with self._changed:
            self._entries.clear()
