"""The app's side of an engine process: start it, load a model, stream replies, stop, survive its death.

Checks that need no model run here, before the engine sees the file: the GGUF header check and the memory
estimate. Everything that touches llama.cpp runs in the engine process, so a crash there (abort, segfault,
OOM kill) becomes an `EngineCrashed` error here and nothing else.

Several threads may generate at once (the server's requests, the window's chat): one reader thread takes
every event off the pipe and routes it by request id to the queue of the call waiting for it; the replies
of load, unload and stats (one at a time, under a lock) go to a control queue. When the engine dies, the
reader wakes every waiting call with EngineCrashed.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType

from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.runtime.protocol import (
    Command,
    Embed,
    Embedded,
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


class _Crash:
    """Put into every waiting queue when the engine process `process` ends."""

    def __init__(self, error: EngineCrashed, process: BaseProcess) -> None:
        self.error, self.process = error, process


Item = Event | _Crash


class Engine:
    """One engine process; one model at a time. `generate`, `embed` and `stop` may be called from several
    threads at once; load, unload and stats wait for each other."""

    def __init__(self, paths: AppPaths) -> None:
        self.paths = paths
        self._ids = itertools.count(1)
        self._send_lock = threading.Lock()
        self._control_lock = threading.Lock()  # load, unload, stats: one at a time
        self._routes_lock = threading.Lock()
        self._routes: dict[int, queue.Queue[Item]] = {}  # request id -> the queue of the call waiting
        self._control: queue.Queue[Item] = queue.Queue()  # everything else
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._closing: BaseProcess | None = None  # the process close() asked to exit: its end is no crash
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
        reader = threading.Thread(
            target=self._read, args=(parent, process), name="engine-reader", daemon=True
        )
        reader.start()
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
        self._closing = process
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
        self._process = self._conn = None  # the reader thread closes the pipe once it reads its end
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
            raise self._crashed(self._process) from exc

    def _read(self, conn: Connection, process: BaseProcess) -> None:
        """The reader thread of one engine process: route each event until the pipe or the process ends
        (a killed engine is noticed within POLL_S, even if something else holds its pipe open)."""
        try:
            while True:
                while not conn.poll(POLL_S):
                    if not process.is_alive():
                        raise EOFError("the engine process has ended")
                self._route(conn.recv())
        except (EOFError, OSError):
            conn.close()
            crash = _Crash(self._crashed(process), process)
            with self._routes_lock:
                waiting = list(self._routes.values())
            for route in [*waiting, self._control]:
                route.put(crash)

    def _route(self, event: Event) -> None:
        request_id = getattr(event, "request_id", None)
        with self._routes_lock:
            route = self._routes.get(request_id) if request_id is not None else None
        (route or self._control).put(event)  # an abandoned reply's late events: the control queue skips them

    def _receive(self, route: queue.Queue[Item] | None = None) -> Event:
        """The next event of `route` (the control queue by default); EngineCrashed if the engine died.
        On the control queue, the crash of an earlier process (that nobody waited for) is skipped."""
        process = self._process
        while True:
            item = (route or self._control).get()
            if not isinstance(item, _Crash):
                return item
            if route is not None or item.process is process or process is None:
                raise item.error

    def _crashed(self, process: BaseProcess | None) -> EngineCrashed:
        code = None
        if process is not None:
            process.join(2.0)
            code = process.exitcode
        # not an earlier process, replaced or closed since, nor one close() is ending (the reader can see
        # its end before close() has let go of it)
        if process is self._process and process is not self._closing:
            self._process = self._conn = None
            self.model = None
            log.error("engine crashed (exit code %s)", code)
        return EngineCrashed(code)

    def _open_route(self, request_id: int) -> queue.Queue[Item]:
        if not self.alive:
            self.start()
        route: queue.Queue[Item] = queue.Queue()
        with self._routes_lock:
            self._routes[request_id] = route
        return route

    def _close_route(self, request_id: int) -> None:
        with self._routes_lock:
            self._routes.pop(request_id, None)

    @staticmethod
    def _raise(failed: Failed) -> None:
        raise AppError(ErrorKind(failed.kind), failed.message, failed.detail)

    # --- commands ----------------------------------------------------------------------------------
    def load(self, params: LoadParams, *, force: bool = False) -> LoadedModel:
        # The engine process checks the file first: reading a header is tens of ms of Python that, in this
        # process, would hold the interpreter lock away from the window.
        with self._control_lock:
            self.start()
            self._send(Load(params, force))
            while True:
                event = self._receive()
                if isinstance(event, Loaded):
                    self.model = event.model
                    return event.model
                if isinstance(event, Failed) and event.request_id is None:
                    self._raise(event)

    def unload(self) -> None:
        with self._control_lock:
            if not self.alive:
                return
            self._send(Unload())
            while not isinstance(event := self._receive(), Unloaded):
                if isinstance(event, Failed) and event.request_id is None:
                    self._raise(event)
            self.model = None

    def stats(self) -> EngineStats:
        with self._control_lock:
            self._send(GetStats())
            while not isinstance(event := self._receive(), StatsReply):
                pass
            return event.stats

    def new_request_id(self) -> int:
        return next(self._ids)

    def generate(self, request: GenerateRequest) -> Iterator[Event]:
        """Stream a reply: Notice and Piece events, then the Finished event (the last one yielded)."""
        route = self._open_route(request.request_id)
        self._current = request.request_id
        finished = False
        try:
            self._send(Generate(request))
            sent = time.perf_counter()
            first_piece: float | None = None
            while True:
                event = self._receive(route)
                if isinstance(event, Failed):
                    finished = True
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
        except EngineCrashed:
            finished = True
            raise
        finally:
            self._close_route(request.request_id)
            if not finished:  # the caller stopped listening (or failed): do not leave the engine busy
                self.stop(request.request_id)
            if self._current == request.request_id:
                self._current = None

    def embed(self, texts: Sequence[str]) -> Embedded:
        """One normalised vector per text (AppError BAD_INPUT for a model that cannot embed)."""
        request_id = self.new_request_id()
        route = self._open_route(request_id)
        try:
            self._send(Embed(request_id, tuple(texts)))
            while True:
                event = self._receive(route)
                if isinstance(event, Failed):
                    self._raise(event)
                if isinstance(event, Embedded):
                    return event
        finally:
            self._close_route(request_id)

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
