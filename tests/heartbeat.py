"""A GUI heartbeat probe: how long the event loop went without turning, during an operation.

A 10 ms QTimer records when it fires; a gap much longer than 10 ms means the GUI thread was busy and the
window was frozen for that long. Responsiveness benchmarks read `max_gap_ms` and `percentile_ms(99)`.
"""

from __future__ import annotations

import time

from PySide6.QtCore import QObject, QTimer, Slot


class Heartbeat(QObject):
    def __init__(self, interval_ms: int = 10) -> None:
        super().__init__()
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._beat)
        self._last = 0.0
        self.gaps_ms: list[float] = []

    def start(self) -> Heartbeat:
        self.gaps_ms.clear()
        self._last = time.perf_counter()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.stop()
        self._beat()  # a freeze at the very end counts too

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @Slot()
    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps_ms.append((now - self._last) * 1000.0)
        self._last = now

    @property
    def max_gap_ms(self) -> float:
        return max(self.gaps_ms, default=0.0)

    def percentile_ms(self, percent: float) -> float:
        """The gap that `percent` % of the beats stayed under (nearest rank)."""
        if not self.gaps_ms:
            return 0.0
        ordered = sorted(self.gaps_ms)
        rank = max(0, min(len(ordered) - 1, round(percent / 100 * len(ordered)) - 1))
        return ordered[rank]
