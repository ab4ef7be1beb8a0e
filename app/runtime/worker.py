"""The engine process: its main thread reads commands from the pipe, one worker thread owns the model.

The worker runs the scheduler (app.runtime.batch): between decode steps it takes the commands that
arrived, so new requests join the replies already generating. A stop is read by the main thread and kept
per request; each reply checks its own between tokens and between prompt batches.
Native output (llama.cpp's log, a GGML_ASSERT message) goes to files under the logs
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
    Embed,
    Embedded,
    EngineStats,
    Event,
    Failed,
    Finished,
    Generate,
    GetStats,
    Load,
    Loaded,
    ReplyStats,
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


_NOTHING: Any = object()  # no command arrived while replies were running


class EngineProcess:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.send_lock = threading.Lock()
        self.commands: queue.Queue[Command | None] = queue.Queue()
        self.stop_ids: set[int] = set()  # requests the user stopped (added by the main thread)
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
                self.stop_ids.add(command.request_id)
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
        """Commands between decode steps: wait for one only when no reply is running."""
        while True:
            busy = self.session is not None and self.session.scheduler.busy
            try:
                command = self.commands.get(block=not busy)
            except queue.Empty:
                command = _NOTHING
            while command is not None and command is not _NOTHING:
                self._run(command)
                try:
                    command = self.commands.get_nowait()
                except queue.Empty:
                    command = _NOTHING
            if command is None:
                break
            if self.session is not None and self.session.scheduler.busy:
                self._step()
        self._unload()

    def _run(self, command: Command) -> None:
        request_id = command.request.request_id if isinstance(command, Generate) else None
        request_id = command.request_id if isinstance(command, Embed) else request_id
        try:
            self._handle(command)
        except AppError as exc:
            self._failed(request_id, exc)
        except Exception as exc:
            log.exception("engine command failed")
            self._failed(request_id, AppError(ErrorKind.INTERNAL, "The engine could not do that.", repr(exc)))

    def _failed(self, request_id: int | None, exc: AppError) -> None:
        if request_id is not None:
            self.stop_ids.discard(request_id)
        self.send(Failed(exc.kind.value, exc.user_message, exc.detail, request_id))

    def _step(self) -> None:
        assert self.session is not None
        try:
            self.session.scheduler.step()
        except Exception:  # a bug, not llama.cpp: every reply under way ends rather than waits forever
            log.exception("engine step failed")
            self.session.scheduler.end_all()

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
            request_id = command.request.request_id

            def stopped() -> bool:
                return request_id in self.stop_ids or self.shutting_down

            def done(stats: ReplyStats) -> None:
                self.stop_ids.discard(request_id)
                self.send(Finished(request_id, stats))

            self.session.submit(
                command.request, self.send, stopped, done, lambda e: self._failed(request_id, e)
            )
        elif isinstance(command, Embed):
            if self.session is None:
                raise AppError(ErrorKind.BAD_INPUT, "No model is loaded.")
            vectors, n_tokens = self.session.embed(command.texts)
            self.send(Embedded(command.request_id, tuple(vectors), n_tokens))

    def _unload(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None
