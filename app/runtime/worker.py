"""The engine process: its main thread reads commands from the pipe, one worker thread owns the model.

A stop is read by the main thread while the worker generates, and the worker checks it between tokens and
between prompt batches. Native output (llama.cpp's log, a GGML_ASSERT message) goes to files under the logs
dir, never to the terminal or window of the app that started the engine.
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import os
import queue
import resource
import signal
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from app.errors import AppError, ErrorKind
from app.runtime.preflight import check_load
from app.runtime.protocol import (
    Command,
    EngineStats,
    Event,
    Failed,
    Finished,
    Generate,
    GetStats,
    Load,
    Loaded,
    Shutdown,
    StatsReply,
    Stop,
    Unload,
    Unloaded,
)

if TYPE_CHECKING:
    from app.runtime.session import LlamaSession

log = logging.getLogger(__name__)
_LLAMA_LOG_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


def engine_main(conn: Connection, logs_dir: str) -> None:
    """Entry point of the engine process (started with the 'spawn' method)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is for the app to handle
    _redirect_output(Path(logs_dir))
    EngineProcess(conn).run()


def _redirect_output(logs_dir: Path) -> None:
    logs_dir.mkdir(parents=True, exist_ok=True)
    native = os.open(logs_dir / "engine-native.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(native, 1)
    os.dup2(native, 2)
    os.close(native)
    handler = logging.handlers.RotatingFileHandler(
        logs_dir / "engine.log", maxBytes=2 * 1024 * 1024, backupCount=3, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s [{os.getpid()}] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


class _LogStream:
    """sys.stdout/stderr for llama-cpp-python's own prints (verbose=True): lines go to the log."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def write(self, text: str) -> int:
        if text.strip():
            self.logger.info("%s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


class EngineProcess:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.commands: queue.Queue[Command | None] = queue.Queue()
        self.stop_id = -1  # the request the user stopped (set by the main thread, read by the worker)
        self.shutting_down = False
        self.session: LlamaSession | None = None
        self._log_callback: Any = None  # kept alive as long as llama.cpp may call it
        self.llama_errors: list[str] = []  # llama.cpp's recent error lines, to explain a refused load

    def send(self, event: Event) -> None:
        with self.send_lock:
            self.conn.send(event)

    def run(self) -> None:
        import llama_cpp

        llama_log = logging.getLogger("llama.cpp")
        last_level = [logging.INFO]

        def on_log(level: int, text: bytes, _: object) -> None:
            last_level[0] = _LLAMA_LOG_LEVELS.get(level, last_level[0])  # 5 = continue the last line
            line = text.decode("utf-8", errors="replace").rstrip()
            llama_log.log(last_level[0], "%s", line)
            if last_level[0] >= logging.ERROR:
                self.llama_errors = [*self.llama_errors[-4:], line]

        self._log_callback = llama_cpp.llama_log_callback(on_log)
        llama_cpp.llama_log_set(self._log_callback, ctypes.c_void_p(0))
        sys.stdout = sys.stderr = _LogStream(logging.getLogger("llama_cpp"))

        worker = threading.Thread(target=self._work, name="engine-worker")
        worker.start()
        while True:
            try:
                command = self.conn.recv()
            except (EOFError, OSError):
                break  # the app is gone
            if isinstance(command, Stop):
                self.stop_id = command.request_id
            elif isinstance(command, GetStats):
                self.send(StatsReply(self._stats()))
            elif isinstance(command, Shutdown):
                break
            else:
                self.commands.put(command)
        self.shutting_down = True
        self.commands.put(None)
        worker.join(timeout=10)

    def _stats(self) -> EngineStats:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rss = psutil.Process().memory_info().rss
        return EngineStats(os.getpid(), rss, peak, self.session.model if self.session else None)

    def _work(self) -> None:
        while (command := self.commands.get()) is not None:
            request_id = command.request.request_id if isinstance(command, Generate) else None
            try:
                self._handle(command)
            except AppError as exc:
                self.send(Failed(exc.kind.value, exc.user_message, exc.detail, request_id))
            except Exception as exc:
                log.exception("engine command failed")
                message = "The engine could not do that."
                self.send(Failed(ErrorKind.INTERNAL.value, message, repr(exc), request_id))
        self._unload()

    def _handle(self, command: Command) -> None:
        if isinstance(command, Load):
            # Here, in the engine process: the app imports this module only to name engine_main, and
            # llama.cpp's bindings and Jinja2 would hold the interpreter lock away from its window.
            from app.runtime.session import LlamaSession

            self._unload()
            self.llama_errors = []
            try:
                header, params = check_load(command.params, force=command.force)
                self.session = LlamaSession(params, header)
            except AppError as exc:
                if exc.kind is ErrorKind.BAD_MODEL and self.llama_errors:
                    reason = self.llama_errors[0].split(": ", 1)[-1]  # the first error is the cause
                    raise AppError(
                        exc.kind, f"{exc.user_message} llama.cpp says: {reason}", exc.detail
                    ) from exc
                raise
            log.info("loaded %s in %.0f ms", command.params.model_path, self.session.model.load_ms)
            self.send(Loaded(self.session.model))
        elif isinstance(command, Unload):
            self._unload()
            self.send(Unloaded())
        elif isinstance(command, Generate):
            if self.session is None:
                raise AppError(ErrorKind.BAD_INPUT, "No model is loaded.")
            request = command.request
            stats = self.session.generate(
                request,
                self.send,
                lambda: self.stop_id == request.request_id or self.shutting_down,
            )
            self.send(Finished(request.request_id, stats))

    def _unload(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
