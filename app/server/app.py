"""The OpenAI-compatible HTTP API (Starlette): /v1/models, /v1/chat/completions, /v1/completions,
/v1/embeddings; safe by default (a Host check against DNS rebinding, a key, no CORS unless origins are
listed, a capped body)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import AppError
from app.runtime.protocol import Event, Finished, GenerateRequest, Notice, Piece
from app.server.errors import ApiError, bad_request, from_app_error
from app.server.models import Cancelled, ModelHost, QueueFull
from app.server.run import GenerationRun
from app.server.schema import Generation, parse_chat, parse_completion, parse_embedding, parse_json

log = logging.getLogger(__name__)
MAX_BODY = 4 << 20  # bytes: a long chat is far below this
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
FINISH_REASONS = {"stop": "stop", "length": "length", "stopped": "stop"}
T = TypeVar("T")


@dataclass(frozen=True)
class ServerOptions:
    api_key: str
    check_host: bool = True  # bound to loopback: only loopback names in Host (against DNS rebinding)
    cors_origins: tuple[str, ...] = ()
    max_body: int = MAX_BODY


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, for the log (and the window's list of requests)."""

    endpoint: str
    model: str
    status: int
    finish_reason: str = ""  # the engine's: stop, length, stopped (the client left)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float = 0.0
    tokens_per_s: float = 0.0
    duration_ms: float = 0.0
    widest_batch: int = 0  # the most replies one of this reply's decodes carried (continuous batching)


@dataclass
class RequestLog:
    """The latest requests, and listeners told of each one (from any thread)."""

    records: deque[RequestRecord] = field(default_factory=lambda: deque(maxlen=500))
    listeners: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def add(self, record: RequestRecord) -> None:
        log.info("%s", record)
        with self.changed:
            self.records.append(record)
            self.changed.notify_all()
        for listener in self.listeners:
            listener(record)


def error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


class Guard:
    """Refuses, before anything else runs: a Host that is not this machine's name (a web page's DNS
    rebinding), and a browser's Origin that is not listed (a web page calling the API)."""

    def __init__(self, app: ASGIApp, options: ServerOptions) -> None:
        self.app, self.options = app, options

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        problem = None
        if self.options.check_host and not _loopback_host(headers.get("host", ""), scope.get("server")):
            problem = ApiError(400, "The Host header must name this machine (localhost).", "invalid_host")
        elif "origin" in headers and headers["origin"] not in self.options.cors_origins:
            problem = ApiError(403, "Requests from web pages are refused (origin not allowed).", "bad_origin")
        if problem is not None:
            await error_response(problem)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class KeyCheck:
    """Every request carries `Authorization: Bearer KEY` (compared in constant time)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app, self.expected = app, f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
            if not hmac.compare_digest(given, self.expected):
                error = ApiError(
                    401, "A valid API key is required (Authorization: Bearer KEY).", "invalid_api_key"
                )
                await error_response(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _loopback_host(host: str, server: tuple[str, int] | None) -> bool:
    name, _, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name:  # no port given
        name, port = host, ""
    if name.lower() not in LOOPBACK_NAMES:
        return False
    return not port or server is None or port == str(server[1])


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to be larger than `limit` (before reading it all)."""
    declared = request.headers.get("content-length")
    too_large = ApiError(413, f"The request body is larger than {limit // (1 << 20)} MiB.", "body_too_large")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _client_gone(request: Request) -> None:
    """Returns when the client disconnects (its body has been read: the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(request: Request, work: Awaitable[T]) -> asyncio.Future[T] | None:
    """`work`, done (its result or exception inside), or None if the client disconnected first."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_client_gone(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if task.done():
        return task
    task.cancel()
    return None


def _grammar(response_format: dict[str, Any] | None) -> str | None:
    if response_format is None:
        return None
    from llama_cpp import llama_grammar  # loaded only when a request asks for JSON

    if response_format["type"] == "json_object":
        return str(llama_grammar.JSON_GBNF)
    schema = response_format["json_schema"].get("schema") or {}
    try:
        return str(llama_grammar.json_schema_to_gbnf(json.dumps(schema)))
    except Exception as exc:  # the converter raises bare errors for what it cannot express
        raise bad_request(f"This JSON schema cannot be enforced: {exc}", param="response_format") from None


class Api:
    def __init__(self, host: ModelHost, options: ServerOptions, requests: RequestLog) -> None:
        self.host, self.options, self.requests = host, options, requests

    def _path(self, name: str) -> Path:
        path = self.host.catalog.path_of(name)
        if path is None:
            raise ApiError(404, f"The model {name!r} does not exist (see GET /v1/models).", "model_not_found",
                           "model")  # fmt: skip
        return path

    async def models(self, request: Request) -> Response:
        ids = await asyncio.to_thread(self.host.catalog.ids)
        rows = [{"id": i, "object": "model", "created": 0, "owned_by": "hubside"} for i in ids]
        return JSONResponse({"object": "list", "data": rows})

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "chat", parse_chat)

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "text", parse_completion)

    async def _generate(
        self, request: Request, kind: str, parse: Callable[[dict[str, Any]], Generation]
    ) -> Response:
        started = time.perf_counter()
        asked = parse(parse_json(await read_body(request, self.options.max_body)))
        path = await asyncio.to_thread(self._path, asked.model)
        grammar = _grammar(asked.response_format)

        def build(request_id: int) -> GenerateRequest:
            return GenerateRequest(
                request_id,
                messages=asked.messages,
                prompt=asked.prompt,
                prompt_tokens=asked.prompt_tokens,
                sampling=asked.sampling,
                max_tokens=asked.max_tokens,
                stop=asked.stop,
                grammar=grammar,
            )

        run = GenerationRun(self.host, path, build).start()
        reply = _Reply(kind, asked.model, asked.include_usage)
        endpoint = request.url.path
        events = run.events()
        # Streamed, the first event decides the status (an error before any text is a plain error answer);
        # not streamed, the whole reply. Either way a client that leaves meanwhile stops its reply.
        work = await _unless_gone(request, anext(events) if asked.stream else self._collect(events, reply))
        if work is None:
            run.cancel()
            await asyncio.to_thread(run.done.wait, 10)
            self._record(endpoint, asked.model, 499, run.finished, started)
            return Response(status_code=499)
        try:
            result = work.result()
        except BaseException as exc:
            run.cancel()
            raise self._api_error(exc, endpoint, asked.model, started) from None
        if asked.stream:
            body = self._stream(run, reply, result, events, endpoint, started)
            return StreamingResponse(
                body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
            )
        assert isinstance(result, Finished)
        self._record(endpoint, asked.model, 200, result, started)
        return JSONResponse(reply.whole(result))

    async def _collect(self, events: AsyncIterator[Event], reply: _Reply) -> Finished:
        async for event in events:
            if isinstance(event, Piece):
                reply.add(event)
            elif isinstance(event, Finished):
                return event
            elif isinstance(event, Notice):
                log.info("notice: %s", event.text)
        raise ApiError(500, "The engine ended the reply without finishing it.", "internal")

    async def _stream(
        self,
        run: GenerationRun,
        reply: _Reply,
        first: Event,
        events: AsyncIterator[Event],
        endpoint: str,
        started: float,
    ) -> AsyncIterator[bytes]:
        status: int | None = 200  # None: already recorded (an error)
        try:
            if reply.kind == "chat":
                yield reply.sse(reply.chunk({"role": "assistant", "content": ""}))
            event: Event = first
            while True:
                if isinstance(event, Piece):
                    yield reply.sse(reply.piece_chunk(event))
                elif isinstance(event, Finished):
                    yield reply.sse(reply.final_chunk(event))
                    if reply.include_usage:
                        yield reply.sse(reply.usage_chunk(event))
                    yield b"data: [DONE]\n\n"
                    return
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                except BaseException as exc:
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    error = self._api_error(exc, endpoint, reply.model, started)
                    status = None
                    yield reply.sse(error.body())  # mid-stream, as OpenAI does: an error event, then the end
                    return
        except BaseException:  # the client went away (the response task is cancelled)
            status = 499
            run.cancel()
            raise
        finally:
            if status is not None:  # the engine's Finished may still be on its way after a cancel
                record = (run, endpoint, reply.model, status, started)
                threading.Thread(target=self._record_when_done, args=record, daemon=True).start()

    def _record_when_done(
        self, run: GenerationRun, endpoint: str, model: str, status: int, started: float
    ) -> None:
        run.done.wait(10)
        self._record(endpoint, model, status, run.finished, started)

    def _api_error(self, exc: BaseException, endpoint: str, model: str, started: float) -> ApiError:
        if isinstance(exc, ApiError):
            error = exc
        elif isinstance(exc, QueueFull):
            error = ApiError(
                429, "Too many requests are waiting for this model; try again shortly.", "queue_full"
            )
        elif isinstance(exc, Cancelled):
            error = ApiError(499, "The client went away.", "cancelled")
        elif isinstance(exc, AppError):
            error = from_app_error(exc)
            log.warning("%s: %s", model, exc)
        else:
            log.error("unexpected error", exc_info=exc)
            error = ApiError(500, "Something went wrong in the server.", "internal")
        self._record(endpoint, model, error.status, None, started)
        return error

    def _record(
        self, endpoint: str, model: str, status: int, finished: Finished | None, started: float
    ) -> None:
        stats = finished.stats if finished is not None else None
        self.requests.add(
            RequestRecord(
                endpoint,
                model,
                status,
                stats.finish_reason if stats else "",
                stats.prompt_tokens if stats else 0,
                stats.completion_tokens if stats else 0,
                round(stats.ttft_ms, 2) if stats else 0.0,
                round(stats.tokens_per_s, 2) if stats else 0.0,
                round((time.perf_counter() - started) * 1000, 2),
                stats.widest_batch if stats else 0,
            )
        )

    async def embeddings(self, request: Request) -> Response:
        started = time.perf_counter()
        asked = parse_embedding(parse_json(await read_body(request, self.options.max_body)))
        path = await asyncio.to_thread(self._path, asked.model)

        def embed() -> tuple[tuple[tuple[float, ...], ...], int]:
            with self.host.lease(path, threading.Event()) as engine:
                done = engine.embed(asked.texts)
                return done.vectors, done.prompt_tokens

        try:
            vectors, tokens = await asyncio.to_thread(embed)
        except BaseException as exc:
            raise self._api_error(exc, request.url.path, asked.model, started) from None
        rows = [
            {"object": "embedding", "index": i, "embedding": _encoded(v) if asked.base64 else list(v)}
            for i, v in enumerate(vectors)
        ]
        self.requests.add(RequestRecord(request.url.path, asked.model, 200, prompt_tokens=tokens))
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": rows, "model": asked.model, "usage": usage})


def _encoded(vector: tuple[float, ...]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


class _Reply:
    """One answer in OpenAI's shapes: chat.completion(.chunk) or text_completion."""

    def __init__(self, kind: str, model: str, include_usage: bool) -> None:
        self.kind, self.model, self.include_usage = kind, model, include_usage
        self.id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.text: list[str] = []
        self.reasoning: list[str] = []

    def add(self, piece: Piece) -> None:
        (self.reasoning if piece.reasoning else self.text).append(piece.text)

    @staticmethod
    def sse(data: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

    def _envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        if self.kind == "chat":
            kind = "chat.completion.chunk" if chunk else "chat.completion"
        else:
            kind = "text_completion"
        body = {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if chunk and self.include_usage:
            body["usage"] = None
        return body

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        if self.kind == "chat":
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {
                "index": 0,
                "text": delta.get("content", ""),
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        return self._envelope([choice], chunk=True)

    def piece_chunk(self, piece: Piece) -> dict[str, Any]:
        return self.chunk({"reasoning_content" if piece.reasoning else "content": piece.text})

    def final_chunk(self, finished: Finished) -> dict[str, Any]:
        return self.chunk({}, FINISH_REASONS.get(finished.stats.finish_reason, "stop"))

    def usage_chunk(self, finished: Finished) -> dict[str, Any]:
        body = self._envelope([], chunk=True)
        body["usage"] = _usage(finished)
        return body

    def whole(self, finished: Finished) -> dict[str, Any]:
        reason = FINISH_REASONS.get(finished.stats.finish_reason, "stop")
        text = "".join(self.text)
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.reasoning:
                message["reasoning_content"] = "".join(self.reasoning)
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": reason}
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": reason}
        body = self._envelope([choice], chunk=False)
        body["usage"] = _usage(finished)
        return body


def _usage(finished: Finished) -> dict[str, int]:
    stats = finished.stats
    total = stats.prompt_tokens + stats.completion_tokens
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": total,
    }


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(ApiError(exc.status_code, str(exc.detail), code))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unexpected error in %s", request.url.path, exc_info=exc)
    return error_response(ApiError(500, "Something went wrong in the server.", "internal"))


def build_app(host: ModelHost, options: ServerOptions, requests: RequestLog) -> ASGIApp:
    api = Api(host, options, requests)
    routes = [
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/v1/chat/completions", api.chat, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/embeddings", api.embeddings, methods=["POST"]),
    ]
    handlers = {ApiError: _api_error, HTTPException: _http_error, Exception: _unexpected}
    app: ASGIApp = KeyCheck(Starlette(routes=routes, exception_handlers=handlers), options.api_key)
    if options.cors_origins:
        app = CORSMiddleware(
            app,
            allow_origins=list(options.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return Guard(app, options)
