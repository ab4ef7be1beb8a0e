"""A model served elsewhere, behind the same calls and events as app.runtime.engine.Engine: `load` checks
that the endpoint offers the model, `generate` streams Piece events and one Finished (with ReplyStats
measured on our side, over the network), `stop` ends the stream from any thread.

Prompt formatting is the server's job (chat completions); which turns to send is the caller's.
A stream that breaks after some text ends as Finished(finish_reason="cut") with that text delivered and a
notice saying so; one that breaks before any text, or never answers, is an AppError.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from app.errors import AppError, ErrorKind
from app.remote.client import Client, Delta, StreamCut, offered_models
from app.remote.endpoints import RemoteModel
from app.runtime.protocol import (
    ChatMessage,
    EngineStats,
    Event,
    Finished,
    GenerateRequest,
    LoadedModel,
    Notice,
    Piece,
    ReplyStats,
)

log = logging.getLogger(__name__)
CUT = "cut"  # finish_reason of a reply whose stream broke off: the text so far is kept
_END, _STOPPED = object(), object()  # the stream ended; the reply was stopped
Item = Delta | Exception | object
MEASURED_NOTE = "timings measured here, over the network"


class RemoteEngine:
    def __init__(self, model: RemoteModel) -> None:
        self.remote = model
        self.model: LoadedModel | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}  # request id -> its stream

    # --- the calls Engine has ----------------------------------------------------------------------
    def start(self) -> RemoteEngine:
        return self

    def __enter__(self) -> RemoteEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def load(self) -> LoadedModel:
        """Check that the endpoint answers and offers the model (NOT_FOUND with the ones it has)."""
        started = time.perf_counter()
        offered = offered_models(self.remote)
        if self.remote.model_id not in offered:
            some = ", ".join(offered[:10]) + (", ..." if len(offered) > 10 else "")
            raise AppError(
                ErrorKind.NOT_FOUND,
                f"{self.remote.where} has no model {self.remote.model_id!r} (it offers: {some or 'none'}).",
            )
        self.model = LoadedModel(
            path=Path(self.remote.label),
            name=self.remote.model_id,
            arch="remote",
            quant="",
            n_params=0,
            n_ctx=0,
            n_ctx_train=0,
            n_vocab=0,
            n_threads=0,
            n_gpu_layers=0,
            flash_attn=False,
            has_chat_template=True,
            load_ms=(time.perf_counter() - started) * 1000,
        )
        return self.model

    def new_request_id(self) -> int:
        return next(self._ids)

    def stats(self) -> EngineStats:
        return EngineStats(pid=0, rss_bytes=0, peak_rss_bytes=0, model=self.model)  # nothing runs here

    def stop(self, request_id: int | None = None) -> None:
        """End the reply (every reply, without an id) now, even while it waits for its first token: it
        ends as 'stopped' and its stream is closed."""
        with self._lock:
            streams = [self._streams.get(request_id)] if request_id is not None else [*self._streams.values()]
        for stream in streams:
            if stream is not None:
                stream.stop()

    def kill(self) -> None:
        self.stop()

    def close(self, timeout_s: float = 0.0) -> None:
        self.stop()

    def unload(self) -> None:
        self.model = None

    # --- a reply -----------------------------------------------------------------------------------
    def generate(self, request: GenerateRequest) -> Iterator[Event]:
        """Stream a reply: Piece and Notice events, then Finished. The HTTP reads run in a thread of their
        own, so that a stop never waits for a server that is slow to send its first byte."""
        if request.prompt is not None or request.prompt_tokens:
            raise AppError(ErrorKind.BAD_INPUT, "A remote model answers chats only (no raw prompts).")
        stream = _Stream(Client(self.remote))
        with self._lock:
            self._streams[request.request_id] = stream
        reader = threading.Thread(target=self._read, args=(stream, request), name="remote-reply", daemon=True)
        reader.start()
        reply = _Reply(request.request_id, time.perf_counter())
        try:
            yield from self._events(stream, request.request_id, reply)
        finally:  # finished, failed, or the caller stopped listening: the reader closes its stream
            with self._lock:
                self._streams.pop(request.request_id, None)
            stream.stop()

    @staticmethod
    def _read(stream: _Stream, request: GenerateRequest) -> None:
        messages = tuple(ChatMessage(m.role, m.content) for m in request.messages)
        client = stream.client
        try:
            for delta in client.chat(messages, request.sampling, request.max_tokens, request.stop):
                if stream.stopped.is_set():
                    break  # leaving the loop closes the response, so the server stops generating
                stream.items.put(delta)
            stream.items.put(_END)
        except Exception as exc:  # AppError, StreamCut: the reply's own thread decides
            stream.items.put(exc)
        finally:
            client.close()

    def _events(self, stream: _Stream, request_id: int, reply: _Reply) -> Iterator[Event]:
        client = stream.client
        while True:
            item = stream.items.get()
            if item is _STOPPED or stream.stopped.is_set():
                reply.finish_reason = "stopped"
                break
            if item is _END:
                break
            if isinstance(item, StreamCut):
                if not reply.pieces:
                    raise AppError(
                        ErrorKind.NETWORK,
                        f"{client.where} broke off before the reply began ({item}).",
                        str(item),
                    )
                log.warning("%s: stream cut after %d pieces: %s", self.remote.label, reply.pieces, item)
                reply.finish_reason = CUT
                yield Notice(
                    request_id,
                    f"The connection to {client.where} broke off mid-reply ({item}); "
                    "the reply so far is kept.",
                )
                break
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, Delta)
            for text, reasoning in ((item.reasoning, True), (item.text, False)):
                if text:
                    yield reply.piece(text, reasoning, item.at)
            reply.usage = item.usage or reply.usage
            if item.finish_reason:
                reply.finish_reason, reply.last = item.finish_reason, item.at
        yield reply.finished()


@dataclass
class _Stream:
    """One reply's HTTP stream: read in a thread of its own into `items`."""

    client: Client
    items: queue.Queue[Item] = field(default_factory=queue.Queue)
    stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stopped.set()
        self.items.put(_STOPPED)
        self.client.interrupt()


class _Reply:
    """A reply's numbers as they arrive; time to first token and tokens/s measured here."""

    def __init__(self, request_id: int, sent: float) -> None:
        self.request_id, self.sent = request_id, sent
        self.first: float | None = None
        self.last = sent
        self.pieces = 0
        self.usage: dict[str, int] | None = None
        self.finish_reason = "stop"

    def piece(self, text: str, reasoning: bool, at: float) -> Piece:
        self.first = self.first or at
        self.last = at
        self.pieces += 1  # servers send about one token per chunk; the usage chunk corrects it at the end
        return Piece(self.request_id, text, self.pieces, reasoning)

    def finished(self) -> Finished:
        usage = self.usage or {}
        completion = usage.get("completion_tokens", self.pieces)
        prompt = usage.get("prompt_tokens", 0)
        ttft_s = (self.first or time.perf_counter()) - self.sent
        decode_s = self.last - (self.first or self.last)
        stats = ReplyStats(
            finish_reason=self.finish_reason,
            prompt_tokens=prompt,
            prompt_eval_tokens=prompt,
            completion_tokens=completion,
            ttft_ms=ttft_s * 1000,
            prompt_tokens_per_s=prompt / ttft_s if prompt and ttft_s > 0 else 0.0,
            tokens_per_s=(completion - 1) / decode_s if completion > 1 and decode_s > 0 else 0.0,
            notices=(MEASURED_NOTE,),
        )
        return Finished(self.request_id, stats)
