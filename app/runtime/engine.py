"""The app's side of an engine process: start it, load a model, stream replies, stop, survive its death.

Checks that need no model run here, before the engine sees the file: the GGUF header check and the memory
estimate. Everything that touches llama.cpp runs in the engine process, so a crash there (abort, segfault,
OOM kill) becomes an `EngineCrashed` error here and nothing else.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType

from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.runtime.protocol import (
    Command,
    EngineStats,
    Event,
    Failed,
    Finished,
    Generate,
    GenerateRequest,
    GetStats,
    Load,
    Loaded,
    LoadedModel,
    LoadParams,
    Piece,
    Shutdown,
    StatsReply,
    Stop,
    Unload,
    Unloaded,
)

log = logging.getLogger(__name__)
SHUTDOWN_GRACE_S = 3.0
KILL_WAIT_S = 1.0  # a SIGKILL cannot be refused: the process is gone within milliseconds
POLL_S = 0.2  # how often a wait for the engine checks that its process still runs


class EngineCrashed(AppError):
    def __init__(self, exitcode: int | None) -> None:
        if exitcode is not None and exitcode < 0:
            cause = f"killed by {signal.Signals(-exitcode).name}"
        elif exitcode is None:
            cause = "it stopped answering"
        else:
            cause = f"exit code {exitcode}"
        super().__init__(
            ErrorKind.ENGINE_CRASHED,
            f"The model engine stopped unexpectedly ({cause}). Your conversation is safe; reload the model.",
            f"engine exit code {exitcode}",
        )
        self.exitcode = exitcode


class Engine:
    """One engine process; one model at a time. Not for concurrent use, except `stop()` from any thread."""

    def __init__(self, paths: AppPaths) -> None:
        self.paths = paths
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._current: int | None = None
        self.model: LoadedModel | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> Engine:
        if self._process is not None and self._process.is_alive():
            return self
        from app.runtime.worker import engine_main  # the engine's side (llama.cpp, templates) loads there

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or Qt inherited
        parent, child = context.Pipe()
        process = context.Process(
            target=engine_main, args=(child, str(self.paths.logs_dir)), name="hubside-engine", daemon=True
        )
        process.start()
        child.close()  # so that the engine's death reads as end-of-file here
        self._conn, self._process, self.model = parent, process, None
        return self

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def close(self, timeout_s: float = SHUTDOWN_GRACE_S) -> None:
        """Ask the engine to exit; if it has not within `timeout_s` (busy in a native call, or hung), kill
        it. Never leaves an orphan process."""
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        deadline = time.monotonic() + timeout_s
        if self._send_lock.acquire(timeout=timeout_s):  # a send stuck on a hung engine must not hold us
            try:
                conn.send(Shutdown())
            except OSError:
                pass
            finally:
                self._send_lock.release()
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            log.warning("engine %s did not exit within %.1f s: killing it", process.pid, timeout_s)
            process.kill()
            process.join(KILL_WAIT_S)
        conn.close()
        self._process = self._conn = None
        self.model = None

    def kill(self) -> None:
        """End the engine process at once (from any thread): a load that cannot be interrupted, an engine
        that does not answer. The call waiting on it in another thread then fails with EngineCrashed."""
        process = self._process
        if process is not None:
            process.kill()  # SIGKILL: also ends a stopped (SIGSTOP) or hung process

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- pipe --------------------------------------------------------------------------------------
    def _send(self, command: Command) -> None:
        if self._conn is None:
            self.start()
        assert self._conn is not None
        try:
            with self._send_lock:
                self._conn.send(command)
        except OSError as exc:
            raise self._crashed() from exc

    def _receive(self) -> Event:
        """The next event; an engine that was killed (or died) raises EngineCrashed, even if something
        else still holds its end of the pipe open."""
        conn, process = self._conn, self._process
        assert conn is not None and process is not None
        try:
            while not conn.poll(POLL_S):
                if not process.is_alive():
                    raise EOFError("the engine process has ended")
            event: Event = conn.recv()
        except (EOFError, OSError) as exc:
            raise self._crashed() from exc
        return event

    def _crashed(self) -> EngineCrashed:
        process = self._process
        code = None
        if process is not None:
            process.join(2.0)
            code = process.exitcode
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None
        self.model = None
        log.error("engine crashed (exit code %s)", code)
        return EngineCrashed(code)

    @staticmethod
    def _raise(failed: Failed) -> None:
        raise AppError(ErrorKind(failed.kind), failed.message, failed.detail)

    # --- commands ----------------------------------------------------------------------------------
    def load(self, params: LoadParams, *, force: bool = False) -> LoadedModel:
        # The engine process checks the file first: reading a header is tens of ms of Python that, in this
        # process, would hold the interpreter lock away from the window.
        self.start()
        self._send(Load(params, force))
        while True:
            event = self._receive()
            if isinstance(event, Loaded):
                self.model = event.model
                return event.model
            if isinstance(event, Failed):
                self._raise(event)

    def unload(self) -> None:
        if not self.alive:
            return
        self._send(Unload())
        while not isinstance(event := self._receive(), Unloaded):
            if isinstance(event, Failed):
                self._raise(event)
        self.model = None

    def stats(self) -> EngineStats:
        self._send(GetStats())
        while not isinstance(event := self._receive(), StatsReply):
            pass
        return event.stats

    def new_request_id(self) -> int:
        return next(self._ids)

    def generate(self, request: GenerateRequest) -> Iterator[Event]:
        """Stream a reply: Notice and Piece events, then the Finished event (the last one yielded)."""
        self._send(Generate(request))
        self._current = request.request_id
        sent = time.perf_counter()
        first_piece: float | None = None
        finished = False
        try:
            while True:
                event = self._receive()
                if getattr(event, "request_id", None) != request.request_id:
                    continue  # a late event of an earlier request
                if isinstance(event, Failed):
                    self._raise(event)
                if isinstance(event, Finished):
                    finished = True
                    # Time to first token as the app sees it, pipe included.
                    ttft = ((first_piece or time.perf_counter()) - sent) * 1000
                    yield replace(event, stats=replace(event.stats, ttft_ms=ttft))
                    return
                if first_piece is None and isinstance(event, Piece):
                    first_piece = time.perf_counter()
                yield event
        finally:
            if not finished:  # the caller stopped listening (or failed): do not leave the engine busy
                self.stop(request.request_id)
            self._current = None

    def stop(self, request_id: int | None = None) -> None:
        """Stop the reply being generated (from any thread); it ends with finish_reason 'stopped'."""
        target = request_id if request_id is not None else self._current
        conn = self._conn
        if target is None or conn is None:
            return
        try:
            with self._send_lock:
                conn.send(Stop(target))
        except OSError:
            pass  # the engine is gone: the generating thread reports the crash
