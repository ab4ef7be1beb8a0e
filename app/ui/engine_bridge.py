"""The window's handle on the engine: every Engine call runs in a thread of its own, results come back as
signals. Streamed text is coalesced to one chunk about every 30 ms, whatever the model's speed."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Protocol

from PySide6.QtCore import QObject, QThread, Signal, Slot

from app.errors import AppError, ErrorKind, to_app_error
from app.runtime.engine import Engine
from app.runtime.protocol import Event, Finished, GenerateRequest, LoadedModel, LoadParams, Notice, Piece

log = logging.getLogger(__name__)
CHUNK_INTERVAL_S = 0.03
SHUTDOWN_TIMEOUT_S = 2.5
KILL_RESERVE_S = 0.5  # of a shutdown's time: what is kept for killing an engine that has not stopped


class EngineCalls(Protocol):
    """What a bridge calls: the engine process (Engine), or a model served elsewhere (remote_bridge)."""

    model: LoadedModel | None

    @property
    def alive(self) -> bool: ...

    def load(self, params: LoadParams) -> LoadedModel: ...
    def generate(self, request: GenerateRequest) -> Iterator[Event]: ...
    def new_request_id(self) -> int: ...
    def stop(self, request_id: int | None = None) -> None: ...
    def unload(self) -> None: ...
    def kill(self) -> None: ...
    def close(self, timeout_s: float = ...) -> None: ...


class _EngineWorker(QObject):
    """Lives in the engine thread; the only caller of the Engine (but for `stop`, which is thread-safe)."""

    loaded = Signal(int, object)  # load number, LoadedModel
    load_failed = Signal(int, str, str)  # load number, ErrorKind value, message for the user
    failed = Signal(str, str)  # ErrorKind value, message for the user
    notice = Signal(int, str)
    chunk = Signal(int, str, bool)  # request id, text, is reasoning
    finished = Signal(int, object)  # request id, ReplyStats

    def __init__(self, engine: EngineCalls) -> None:
        super().__init__()
        self.engine = engine

    def _fail(self, exc: BaseException) -> tuple[str, str]:
        error = to_app_error(exc)
        if not isinstance(exc, AppError):
            log.exception("engine call failed")
        return error.kind.value, error.user_message

    @Slot(int, object)
    def load(self, number: int, params: LoadParams) -> None:
        try:
            self.loaded.emit(number, self.engine.load(params))
        except Exception as exc:
            self.load_failed.emit(number, *self._fail(exc))

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
            self.failed.emit(*self._fail(exc))

    @Slot()
    def unload(self) -> None:
        try:
            self.engine.unload()
        except Exception as exc:
            self.failed.emit(*self._fail(exc))

    @Slot()
    def shutdown(self) -> None:
        self.engine.close()


class Bridge(QObject):
    """A thread calling one engine (EngineCalls) and its results as signals."""

    loaded = Signal(object)
    failed = Signal(str, str)
    notice = Signal(int, str)
    chunk = Signal(int, str, bool)
    finished = Signal(int, object)
    cancelled = Signal()  # instead of `loaded` or `failed`, for a load the user cancelled

    _load = Signal(int, object)
    _generate = Signal(object)
    _unload = Signal()
    _shutdown = Signal()

    def __init__(self, engine: EngineCalls, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.engine = engine
        self._loads = 0  # numbers the loads, so that the end of a cancelled one is known as such
        self._cancelled_load = 0
        self._thread = QThread()
        self._thread.setObjectName("engine-bridge")
        self._worker = _EngineWorker(engine)
        self._worker.moveToThread(self._thread)
        self._load.connect(self._worker.load)
        self._generate.connect(self._worker.generate)
        self._unload.connect(self._worker.unload)
        self._shutdown.connect(self._worker.shutdown)
        self._worker.loaded.connect(self._loaded)
        self._worker.load_failed.connect(self._load_failed)
        for source, target in (
            (self._worker.failed, self.failed),
            (self._worker.notice, self.notice),
            (self._worker.chunk, self.chunk),
            (self._worker.finished, self.finished),
        ):
            source.connect(target)
        self._thread.finished.connect(self._worker.deleteLater)
        self._thread.start()

    def load(self, params: LoadParams) -> None:
        self._loads += 1
        self._load.emit(self._loads, params)

    @Slot(int, object)
    def _loaded(self, number: int, model: LoadedModel) -> None:
        if number == self._cancelled_load:
            self.cancelled.emit()  # it finished before the kill reached it: that engine is gone now
        else:
            self.loaded.emit(model)

    @Slot(int, str, str)
    def _load_failed(self, number: int, kind: str, message: str) -> None:
        if number == self._cancelled_load:
            self.cancelled.emit()  # failed because it was killed: what the user asked for
        else:
            self.failed.emit(kind, message)

    def generate(self, request: GenerateRequest) -> None:
        self._generate.emit(request)

    def stop(self, request_id: int) -> None:
        self.engine.stop(request_id)  # thread-safe: goes straight to the engine process

    def unload(self) -> None:
        self._unload.emit()

    def cancel_load(self) -> None:
        """Give up the load under way: its engine process is killed (a load cannot be interrupted inside
        llama.cpp); `cancelled` follows instead of `loaded` or `failed`."""
        self._cancelled_load = self._loads
        self.engine.kill()

    def shutdown(self, timeout_s: float = SHUTDOWN_TIMEOUT_S) -> None:
        """Stop whatever runs, end the engine process and the thread within `timeout_s`: an engine still
        busy (a load) or hung by then is killed, which also ends the call waiting on it."""
        deadline = time.monotonic() + timeout_s

        def left_ms(reserve_s: float = 0.0) -> int:
            return max(0, int((deadline - reserve_s - time.monotonic()) * 1000))

        self.engine.stop()
        self._shutdown.emit()  # run by the thread once its current call returns
        self._thread.quit()
        if not self._thread.wait(left_ms(KILL_RESERVE_S)):
            log.warning("the engine did not stop in time: killing it")
            self.engine.kill()
            if not self._thread.wait(left_ms()):
                log.error("engine thread did not stop")
                return
        if self.engine.alive:  # the thread has ended without reaching its shutdown (its loop quit first)
            self.engine.close(left_ms() / 1000)


class EngineBridge(Bridge):
    """The bridge to the engine process, which the window's other parts (memory, the server) read too."""

    engine: Engine

    def __init__(self, engine: Engine, parent: QObject | None = None) -> None:
        super().__init__(engine, parent)


def is_crash(kind: str) -> bool:
    return kind == ErrorKind.ENGINE_CRASHED.value
