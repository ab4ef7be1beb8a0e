"""The bandwidth limit: one token bucket shared by every connection of every download of the process.

Each connection calls `take(n)` for the bytes it read. The bytes are reserved at once (the bucket may go
into debt), and the caller sleeps, outside the lock, until the bucket has earned back its share: the
connections then take turns in the order they asked, and none starves. The burst is small (a quarter of a
second of rate), so the speed is smooth rather than a second of full speed and a second of nothing.
`set_rate()` applies at once, to the waiters too: they wake at least every `RECHECK_S` and re-measure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

BURST_S = 0.25  # how much may pass at once after a quiet spell, in seconds of the rate
RECHECK_S = 0.1  # a waiter looks again this often, so that a changed rate applies within this


def mbps_to_rate(mbps: float) -> float | None:
    """A limit in MB/s (10^6 bytes/s) as bytes per second; 0 or less: no limit (None)."""
    return mbps * 1e6 if mbps > 0 else None


class Bandwidth:
    """A shared, thread-safe rate limit in bytes per second (None: unlimited)."""

    def __init__(
        self,
        bytes_per_s: float | None = None,
        burst_s: float = BURST_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._lock = threading.Lock()
        self._clock, self._sleep, self._burst_s = clock, sleep, burst_s
        self._rate = _positive(bytes_per_s)
        self._stamp = clock()
        self._credit = self._burst()  # bytes that may pass now; negative: owed by those waiting
        self._earned = 0.0  # all credit the clock has added: a waiter goes when this reaches its mark

    @property
    def rate(self) -> float | None:
        return self._rate

    def set_rate(self, bytes_per_s: float | None) -> None:
        """Change the limit now, for the bytes being waited for as well (None: no limit)."""
        with self._lock:
            self._refill()
            was_unlimited = self._rate is None
            self._rate = _positive(bytes_per_s)
            if was_unlimited:  # a fresh start: no debt from before
                self._credit = self._burst()
            self._credit = min(self._credit, self._burst())

    def take(self, n: int, stop: Callable[[], bool] | None = None) -> None:
        """Account for `n` bytes; returns when the limit allows them (at once without a limit), or as soon
        as `stop()` is true (a pause must not wait for a low limit's turn: 8 reads of 2 MB at 0.2 MB/s
        are 80 s)."""
        with self._lock:
            if self._rate is None:
                return
            self._refill()
            self._credit -= n
            if self._credit >= 0:
                return
            mark = self._earned - self._credit  # paid off once the clock has earned this much
        while True:
            with self._lock:
                self._refill()
                rate, short = self._rate, mark - self._earned
                if rate is None or short <= 0:  # the limit was lifted, or this one's turn has come
                    return
                wait = short / rate
            if stop is not None and stop():
                return  # its bytes stay counted: the others wait as if they had passed
            self._sleep(min(wait, RECHECK_S))  # outside the lock: the others go on taking their turns

    def _burst(self) -> float:
        return self._rate * self._burst_s if self._rate is not None else 0.0

    def _refill(self) -> None:
        """Add the credit earned since the last look (call with the lock held)."""
        now = self._clock()
        if self._rate is not None:
            added = min((now - self._stamp) * self._rate, max(0.0, self._burst() - self._credit))
            self._credit += added
            self._earned += added
        self._stamp = now


def _positive(rate: float | None) -> float | None:
    return rate if rate is not None and rate > 0 else None
