"""Guards against Qt binding versions that would crash a long session."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal, Slot


class _Emitter(QObject):
    fired = Signal(int, str)

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    @Slot(int, str)
    def receive(self, number: int, text: str) -> None:
        self.count += 1


def test_emitting_signals_keeps_reference_counts() -> None:
    """PySide6 6.12.0's Signal.emit() dropped a reference to True/False on every call: a long streamed
    reply (one signal per chunk) then aborted Python. pyproject.toml pins below it; this catches a relapse."""
    emitter = _Emitter()
    emitter.fired.connect(emitter.receive)
    before = sys.getrefcount(True), sys.getrefcount(False)
    for _ in range(10_000):
        emitter.fired.emit(1, "chunk")
    after = sys.getrefcount(True), sys.getrefcount(False)
    assert emitter.count == 10_000
    assert after[0] - before[0] >= -10 and after[1] - before[1] >= -10, (before, after)
