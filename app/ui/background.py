"""Work off the GUI thread: run a function on a pool thread, get its result (or AppError) back on the GUI
thread. The page that asked decides whether the answer is still wanted (newest request wins)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from app.errors import AppError, to_app_error

Done = Callable[[Any, AppError | None], None]
MAX_THREADS = 4
SHUTDOWN_WAIT_MS = 2000


class _Job(QRunnable):
    def __init__(self, work: Callable[[], Any], done: Done, relay: Background) -> None:
        super().__init__()
        self.work, self.done, self.relay = work, done, relay

    def run(self) -> None:
        try:
            result, error = self.work(), None
        except Exception as exc:  # any failure reaches the page as an AppError, never kills the thread
            result, error = None, to_app_error(exc)
        self.relay.finished.emit(self.done, result, error)


class Background(QObject):
    finished = Signal(object, object, object)  # done callback, result, error

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.pool = QThreadPool(self)
        self.pool.setMaxThreadCount(MAX_THREADS)
        self.closed = False
        self.finished.connect(self._deliver)

    def run(self, work: Callable[[], Any], done: Done) -> None:
        if not self.closed:
            self.pool.start(_Job(work, done, self))

    @Slot(object, object, object)
    def _deliver(self, done: Done, result: Any, error: AppError | None) -> None:
        if not self.closed:
            done(result, error)

    def close(self, wait_ms: int = SHUTDOWN_WAIT_MS) -> None:
        """Deliver nothing more; wait a little for running jobs (network calls time out on their own)."""
        self.closed = True
        self.pool.clear()
        self.pool.waitForDone(wait_ms)
