"""The window's handle on the engine: every Engine call runs in a thread of its own, results come back as
signals. Streamed text is coalesced to one chunk about every 30 ms, whatever the model's speed."""

from __future__ import annotations

import logging
import time

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.errors import AppError, ErrorKind, to_app_error
from app.runtime.engine import Engine
from app.runtime.protocol import Finished, GenerateRequest, LoadParams, Notice, Piece

log = logging.getLogger(__name__)
CHUNK_INTERVAL_S = 0.03


class _EngineWorker(QObject):
    """Lives in the engine thread; the only caller of the Engine (but for `stop`, which is thread-safe)."""

    loaded = Signal(object)  # LoadedModel
    failed = Signal(str, str)  # ErrorKind value, message for the user
    notice = Signal(int, str)
    chunk = Signal(int, str, bool)  # request id, text, is reasoning
    finished = Signal(int, object)  # request id, ReplyStats

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def _fail(self, exc: BaseException) -> None:
        error = to_app_error(exc)
        if not isinstance(exc, AppError):
            log.exception("engine call failed")
        self.failed.emit(error.kind.value, error.user_message)

    @Slot(object)
    def load(self, params: LoadParams) -> None:
        try:
            self.loaded.emit(self.engine.load(params))
        except Exception as exc:
            self._fail(exc)

    @Slot(object)
    def generate(self, request: GenerateRequest) -> None:
        pending: list[str] = []
        reasoning = False  # the channel of the pending text: a chunk never mixes reasoning and answer
        last = 0.0

        def send() -> None:
            if pending:
                self.chunk.emit(request.request_id, "".join(pending), reasoning)
                pending.clear()

        try:
            for event in self.engine.generate(request):
                if isinstance(event, Piece):
                    if event.reasoning != reasoning:
                        send()
                        reasoning = event.reasoning
                    pending.append(event.text)
                    now = time.perf_counter()
                    if now - last >= CHUNK_INTERVAL_S:
                        send()
                        last = now
                elif isinstance(event, Notice):
                    self.notice.emit(request.request_id, event.text)
                elif isinstance(event, Finished):
                    send()
                    self.finished.emit(request.request_id, event.stats)
        except Exception as exc:
            send()
            self._fail(exc)

    @Slot()
    def unload(self) -> None:
        try:
            self.engine.unload()
        except Exception as exc:
            self._fail(exc)

    @Slot()
    def shutdown(self) -> None:
        self.engine.close()


class EngineBridge(QObject):
    loaded = Signal(object)
    failed = Signal(str, str)
    notice = Signal(int, str)
    chunk = Signal(int, str, bool)
    finished = Signal(int, object)

    _load = Signal(object)
    _generate = Signal(object)
    _unload = Signal()
    _shutdown = Signal()

    def __init__(self, engine: Engine, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self._thread = QThread()
        self._thread.setObjectName("engine-bridge")
        self._worker = _EngineWorker(engine)
        self._worker.moveToThread(self._thread)
        self._load.connect(self._worker.load)
        self._generate.connect(self._worker.generate)
        self._unload.connect(self._worker.unload)
        self._shutdown.connect(self._worker.shutdown)
        for source, target in (
            (self._worker.loaded, self.loaded),
            (self._worker.failed, self.failed),
            (self._worker.notice, self.notice),
            (self._worker.chunk, self.chunk),
            (self._worker.finished, self.finished),
        ):
            source.connect(target)
        self._thread.finished.connect(self._worker.deleteLater)
        self._thread.start()

    def load(self, params: LoadParams) -> None:
        self._load.emit(params)

    def generate(self, request: GenerateRequest) -> None:
        self._generate.emit(request)

    def stop(self, request_id: int) -> None:
        self.engine.stop(request_id)  # thread-safe: goes straight to the engine process

    def unload(self) -> None:
        self._unload.emit()

    def shutdown(self) -> None:
        """Stop whatever runs, end the engine process and the thread (within a few seconds)."""
        self.engine.stop()
        self._shutdown.emit()
        self._thread.quit()
        if not self._thread.wait(10_000):
            log.error("engine thread did not stop")


def is_crash(kind: str) -> bool:
    return kind == ErrorKind.ENGINE_CRASHED.value
