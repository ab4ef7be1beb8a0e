"""One generation on a thread of its own, its events handed to the event loop.

The engine's calls block (they wait on a queue fed by the engine's reader thread), so each request's lease,
load and token stream run in a thread, and each event crosses to asyncio with `call_soon_threadsafe`: no
thread pool whose size would cap the requests in flight, and no hop through a pool per token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from app.runtime.engine import Engine
from app.runtime.protocol import Event, Finished, GenerateRequest
from app.server.models import ModelHost

_END = object()


class GenerationRun:
    def __init__(self, host: ModelHost, path: Path, build: Callable[[int], GenerateRequest]) -> None:
        self._host, self._path, self._build = host, path, build
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self.cancelled = threading.Event()
        self._engine: Engine | None = None
        self._request_id: int | None = None
        self.finished: Finished | None = None  # the engine's last word, also after a cancel
        self.done = threading.Event()

    def start(self) -> GenerationRun:
        threading.Thread(target=self._work, name="server-request", daemon=True).start()
        return self

    async def events(self) -> AsyncIterator[Event]:
        """Notice and Piece events, then Finished; raises what the thread met (QueueFull, AppError, ...)."""
        while (item := await self._queue.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    def cancel(self) -> None:
        """The client went away: stop the reply now (the engine ends it as 'stopped' within a token)."""
        self.cancelled.set()
        engine, request_id = self._engine, self._request_id
        if engine is not None and request_id is not None:
            engine.stop(request_id)

    def _put(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed (the server stopped): nobody listens
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _work(self) -> None:
        try:
            with self._host.lease(self._path, self.cancelled) as engine:
                request = self._build(engine.new_request_id())
                self._engine, self._request_id = engine, request.request_id
                if self.cancelled.is_set():  # left before this started: cancel() may not have seen it
                    return
                # After a cancel, read on to the engine's Finished ('stopped'), sending nothing more.
                for event in engine.generate(request):
                    if isinstance(event, Finished):
                        self.finished = event
                    if not self.cancelled.is_set():
                        self._put(event)
        except BaseException as exc:
            if not self.cancelled.is_set():
                self._put(exc)
        finally:
            self.done.set()
            self._put(_END)
