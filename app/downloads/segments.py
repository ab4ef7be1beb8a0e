"""Which byte ranges of one `.part` are on disk, and which connection fetches which range next.

The file is cut into segments that tile it exactly, [start, end) each, with `done` bytes from its start on
disk. A connection takes a segment nobody holds; when none is left it steals the upper half of the largest
one still being fetched (work stealing, as aria2 does), so that fast connections never sit idle while a
slow one has most of the file. The rows go to the jobs database (at most once a second, and on stop), so
that a resume after a drop, a restart or a kill -9 fetches only the bytes that are missing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Protocol

MIN_STEAL_BYTES = 1 << 20  # a steal leaves each half at least this long: smaller is not worth a request


class SegmentStore(Protocol):
    """Where segment rows live between runs (JobStore: the jobs database)."""

    def segments(self, part: str) -> tuple[str, list[tuple[int, int, int]]]: ...

    def save_segments(self, part: str, etag: str, rows: list[tuple[int, int, int]]) -> None: ...


@dataclass
class Segment:
    start: int
    end: int  # exclusive; a steal lowers it while its owner reads
    done: int = 0
    owned: bool = False

    @property
    def pos(self) -> int:
        return self.start + self.done

    @property
    def left(self) -> int:
        return self.end - self.pos


class Plan:
    """The segments of one file, shared by its connections (every method takes the lock)."""

    def __init__(self, size: int, rows: list[tuple[int, int, int]] | None = None) -> None:
        self.size = size
        self.lock = threading.Condition()
        self.segments = [Segment(s, e, d) for s, e, d in rows] if rows else [Segment(0, size)]

    @staticmethod
    def valid_rows(rows: list[tuple[int, int, int]], size: int, on_disk: int) -> bool:
        """Rows that tile [0, size) and claim no byte past the end of the file on disk."""
        at = 0
        for start, end, done in sorted(rows):
            beyond_file = done and start + done > on_disk
            if start != at or end <= start or not 0 <= done <= end - start or beyond_file:
                return False
            at = end
        return at == size and bool(rows)

    def rows(self) -> list[tuple[int, int, int]]:
        with self.lock:
            return [(s.start, s.end, s.done) for s in sorted(self.segments, key=lambda s: s.start)]

    def done(self) -> int:
        with self.lock:
            return sum(s.done for s in self.segments)

    def prefix(self) -> int:
        """Bytes from 0 that are all on disk (what may be hashed)."""
        with self.lock:
            at = 0
            for s in sorted(self.segments, key=lambda s: s.start):
                if s.start != at:
                    break
                at = s.pos
                if s.left > 0:
                    break
            return at

    def take(self, steal: bool = True) -> Segment | None:
        """A segment for a connection: one nobody holds, else the upper half of the largest held one."""
        with self.lock:
            free = [s for s in self.segments if not s.owned and s.left > 0]
            if free:
                chosen = min(free, key=lambda s: s.pos)
            elif steal:
                held = [s for s in self.segments if s.owned and s.left >= 2 * MIN_STEAL_BYTES]
                if not held:
                    return None
                victim = max(held, key=lambda s: s.left)
                middle = victim.pos + victim.left // 2
                chosen = Segment(middle, victim.end)
                victim.end = middle
                self.segments.append(chosen)
            else:
                return None
            chosen.owned = True
            return chosen

    def release(self, segment: Segment) -> None:
        with self.lock:
            segment.owned = False

    def wrote(self, segment: Segment, count: int) -> None:
        """`count` bytes are on disk at the segment's position; those past its end (a steal moved the end
        while they were written: the same bytes, which its new owner writes again) do not count."""
        with self.lock:
            segment.done += max(0, min(count, segment.left))
            self.lock.notify_all()

    def clip(self, segment: Segment, count: int) -> int:
        """How many of `count` bytes read at the segment's position still belong to it."""
        with self.lock:
            return max(0, min(count, segment.left))

    def complete(self) -> bool:
        with self.lock:
            return all(s.left <= 0 for s in self.segments)

    def one_connection(self) -> Segment:
        """Ranges do not work (any more): the segment at byte 0 becomes the whole file, fetched by one
        connection (the others find nothing to take and end)."""
        with self.lock:
            keeper = min(self.segments, key=lambda s: s.start)
            for other in self.segments:
                other.end = other.pos  # their connections find nothing left and let go
            keeper.end = self.size
            self.segments = [keeper]
            self.lock.notify_all()
            return keeper
