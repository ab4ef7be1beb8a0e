"""The models a server offers, and the one seam between requests and engines.

`Catalog` names the models: the library's (by library id, or by the exact path the library lists) and the
files given on the command line (by their absolute path). A request's model name is only ever compared with
these names: no request makes the server open, stat or write a path of its choosing.

`ModelHost` owns one engine per model: it loads on the first request, admits requests fairly (FIFO, at most
`parallel` in flight, then a bounded queue: 429 past it) and unloads a model idle for `idle_s`. Requests
call `lease()` from threads of their own; the engine decodes the leased requests together.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from app.errors import AppError, ErrorKind
from app.library.scan import LibraryEntry
from app.paths import AppPaths
from app.runtime.engine import Engine
from app.runtime.protocol import LoadParams

log = logging.getLogger(__name__)
RESCAN_S = 5.0  # the library is read again at most this often (a download shows up within it)
JANITOR_S = 1.0  # how often idle models are looked for
QUEUE_WAIT_POLL_S = 0.2  # how often a queued request checks that its client is still there


class QueueFull(Exception):
    """More requests wait for this model than the queue holds."""


class Cancelled(Exception):
    """The client went away while its request waited."""


class Catalog:
    """Model names -> files: the library (read again when older than RESCAN_S) and the given files."""

    def __init__(self, scan: Callable[[], list[LibraryEntry]], files: Iterable[Path] = ()) -> None:
        self._scan = scan
        self._files = {str(f.absolute()): f.absolute() for f in files}
        self._lock = threading.Lock()
        self._names: dict[str, Path] = {}
        self._ids: list[str] = []
        self._read_at = -RESCAN_S

    def ids(self) -> list[str]:
        """What GET /v1/models lists: library ids, then the given files' paths."""
        self._refresh()
        return list(self._ids)

    def path_of(self, name: str) -> Path | None:
        self._refresh()
        return self._names.get(name)

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._read_at < RESCAN_S:
                return
            entries = [e for e in self._scan() if not e.problem]
            names = {e.id: e.path for e in entries} | {str(e.path): e.path for e in entries} | self._files
            self._names, self._ids = names, [e.id for e in entries] + list(self._files)
            self._read_at = time.monotonic()


@dataclass(frozen=True)
class HostOptions:
    parallel: int = 1  # requests in flight per model (the engine's n_parallel)
    queue: int = 64  # requests waiting per model beyond those; more get a 429
    n_ctx: int | None = None  # per sequence; None: the model's, capped
    n_threads: int | None = None
    idle_s: float = 600.0  # a model nobody asked for this long is unloaded


class _Slot:
    """One model: its engine, and the FIFO of requests waiting for a place."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()  # in_flight and waiters
        self.in_flight = 0
        self.waiters: deque[threading.Event] = deque()
        self.load_lock = threading.Lock()  # the engine: loaded, unloaded
        self.engine: Engine | None = None
        self.used_at = time.monotonic()


SharedEngines = Callable[[Path], Engine | None]


class ModelHost:
    """`shared(path)` gives an engine someone else (the window's chat) has loaded with that model: requests
    for it use that engine (queued FIFO inside it with the chat's) instead of a second copy of the weights;
    the host never closes or unloads it."""

    def __init__(
        self, paths: AppPaths, catalog: Catalog, options: HostOptions, shared: SharedEngines = lambda p: None
    ) -> None:
        self.paths, self.catalog, self.options, self.shared = paths, catalog, options, shared
        self._slots: dict[Path, _Slot] = {}
        self._slots_lock = threading.Lock()
        self._closed = threading.Event()
        self._janitor = threading.Thread(target=self._unload_idle, name="model-janitor", daemon=True)
        self._janitor.start()

    @contextmanager
    def lease(self, path: Path, cancelled: threading.Event) -> Iterator[Engine]:
        """A loaded engine for `path`, once this request's turn comes. QueueFull when too many wait,
        Cancelled when the client left while waiting, AppError when the model cannot load."""
        slot = self._slot(path)
        self._enter(slot, cancelled)
        try:
            yield self._loaded(slot)
        finally:
            self._leave(slot)

    def loaded_models(self) -> list[Path]:
        with self._slots_lock:
            return [s.path for s in self._slots.values() if s.engine is not None]

    def close(self) -> None:
        """Close every engine (their processes end; none is left behind)."""
        self._closed.set()
        with self._slots_lock:
            slots = list(self._slots.values())
        for slot in slots:
            engine, slot.engine = slot.engine, None
            if engine is not None:
                engine.close()

    def _slot(self, path: Path) -> _Slot:
        with self._slots_lock:
            return self._slots.setdefault(path, _Slot(path))

    def _enter(self, slot: _Slot, cancelled: threading.Event) -> None:
        with slot.lock:
            if slot.in_flight < self.options.parallel and not slot.waiters:
                slot.in_flight += 1
                return
            if len(slot.waiters) >= self.options.queue:
                raise QueueFull()
            ticket = threading.Event()
            slot.waiters.append(ticket)
        while not ticket.wait(QUEUE_WAIT_POLL_S):  # a leaving request hands its place to the first ticket
            if cancelled.is_set():
                with slot.lock:
                    if ticket in slot.waiters:
                        slot.waiters.remove(ticket)
                        raise Cancelled()
                return  # the place came at the same instant: the caller leaves it again

    def _leave(self, slot: _Slot) -> None:
        with slot.lock:
            slot.used_at = time.monotonic()
            if slot.waiters:
                slot.waiters.popleft().set()  # the place passes on; in_flight stays
            else:
                slot.in_flight -= 1

    def _loaded(self, slot: _Slot) -> Engine:
        shared = self.shared(slot.path)
        if shared is not None:
            return shared
        with slot.load_lock:
            if slot.engine is not None and slot.engine.alive and slot.engine.model is not None:
                return slot.engine
            if slot.engine is not None:  # crashed since: a fresh process
                slot.engine.close()
                slot.engine = None
            engine = Engine(self.paths).start()
            options = self.options
            params = LoadParams(
                slot.path, n_ctx=options.n_ctx, n_threads=options.n_threads, n_parallel=options.parallel
            )
            try:
                model = engine.load(params)
                if self._closed.is_set():  # closed while this loaded: close() did not see this engine
                    raise AppError(ErrorKind.INTERNAL, "The server is stopping.")
            except BaseException:
                engine.close()
                raise
            log.info("loaded %s (%s, context %d x %d)", slot.path, model.quant, model.n_ctx, model.n_parallel)
            slot.engine = engine
            return engine

    def _unload_idle(self) -> None:
        while not self._closed.wait(JANITOR_S):
            with self._slots_lock:
                slots = list(self._slots.values())
            for slot in slots:
                with slot.load_lock:  # a request entering now waits for this, then loads again
                    with slot.lock:
                        idle = not slot.in_flight and time.monotonic() - slot.used_at >= self.options.idle_s
                    if idle and slot.engine is not None:
                        log.info("unloading %s (idle %.0f s)", slot.path, self.options.idle_s)
                        slot.engine.close()
                        slot.engine = None
