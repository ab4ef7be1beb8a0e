"""An OpenAI-compatible client over requests: the model list and a streamed chat completion, each failure
turned into one AppError a user understands. Connects within 10 s; the first token (and every later read)
may take `first_token_timeout_s`. TLS is verified against the system's store (app.net), never turned off.

The key is sent only to the endpoint's own host: redirects are not followed, and no message built here
carries it (an answer that echoes it has it masked).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import requests

from app.errors import AppError, ErrorKind, to_app_error
from app.net import use_system_trust
from app.remote.endpoints import RemoteModel
from app.runtime.protocol import ChatMessage, SamplingParams

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 10.0
LIST_TIMEOUT_S = 30.0
MAX_LINE = 1 << 20  # an SSE line longer than this is not a chat chunk


@dataclass(frozen=True)
class Delta:
    """One chunk's worth of a streamed reply."""

    text: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: dict[str, int] | None = None
    at: float = 0.0  # when it arrived (perf_counter): the timings are taken when the bytes come in


class StreamCut(Exception):
    """The stream ended or broke before the reply finished (the text so far stays)."""


class Client:
    def __init__(self, model: RemoteModel) -> None:
        self.model = model
        self.session = use_system_trust(requests.Session())
        self.session.trust_env = True  # proxies from the environment, as for the Hub
        if model.api_key:
            self.session.headers["Authorization"] = f"Bearer {model.api_key}"
        self.response: requests.Response | None = None

    @property
    def where(self) -> str:
        return self.model.where

    def close(self) -> None:
        self.session.close()

    def models(self) -> list[str]:
        read_s = min(LIST_TIMEOUT_S, self.model.endpoint.first_token_timeout_s)  # a list is quick to make
        answer = self._request("GET", "/models", read_s)
        try:
            with answer:
                rows = answer.json()["data"]
                return [str(row["id"]) for row in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise AppError(
                ErrorKind.NETWORK, f"{self.where} is not an OpenAI-compatible API (GET /models).", str(exc)
            ) from None

    def chat(
        self,
        messages: tuple[ChatMessage, ...],
        sampling: SamplingParams,
        max_tokens: int | None,
        stop: tuple[str, ...],
    ) -> Iterator[Delta]:
        """Stream a chat completion: Deltas until the server's last chunk; StreamCut if it breaks off."""
        body: dict[str, Any] = {
            "model": self.model.model_id,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if stop:
            body["stop"] = list(stop)
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        read_s = self.model.endpoint.first_token_timeout_s
        self.response = self._request("POST", "/chat/completions", read_s, json=body)
        with self.response:
            yield from self._events(self.response)

    def interrupt(self) -> None:
        """From another thread: end a blocked read of the stream now (stop during prompt processing)."""
        response = self.response
        sock = getattr(getattr(getattr(response, "raw", None), "connection", None), "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # --- inside ------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, read_s: float, **options: Any) -> requests.Response:
        url = self.model.endpoint.url + path
        timeout = (CONNECT_TIMEOUT_S, read_s)
        try:
            answer = self.session.request(
                method, url, stream=True, allow_redirects=False, timeout=timeout, **options
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise AppError(
                ErrorKind.NETWORK,
                f"{self.where} did not accept a connection within {CONNECT_TIMEOUT_S:.0f} s.",
                self._masked(exc),
            ) from None
        except requests.exceptions.ReadTimeout as exc:
            raise self._silent(exc, read_s) from None
        except requests.exceptions.SSLError as exc:
            raise self._tls(exc) from None
        except requests.exceptions.ConnectionError as exc:
            raise AppError(
                ErrorKind.NETWORK,
                f"Can't reach {self.where}: is it running, and the URL right?",
                self._masked(exc),
            ) from None
        if answer.status_code >= 300:
            with answer:
                raise self._refusal(answer)
        return answer

    def _events(self, response: requests.Response) -> Iterator[Delta]:
        finished = begun = False
        wait = self.model.endpoint.first_token_timeout_s
        try:
            for line in response.iter_lines(chunk_size=None, decode_unicode=False):
                if not line.startswith(b"data:"):
                    continue  # comments, event names, keep-alives
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                delta = self._delta(data)
                finished = finished or delta.finish_reason is not None
                begun = begun or bool(delta.text or delta.reasoning)
                yield delta
        except requests.exceptions.ConnectionError as exc:  # urllib3's read timeout arrives as this too
            if "timed out" in str(exc).lower() or isinstance(exc, requests.exceptions.Timeout):
                if not begun:  # headers at once, then no first token (llama-server): the same message
                    raise self._silent(exc, wait) from None
                raise StreamCut(f"no data for {wait:g} s") from None
            raise StreamCut(self._masked(exc)) from None
        except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
            raise StreamCut(self._masked(exc)) from None
        except OSError as exc:
            raise StreamCut(self._masked(exc)) from None
        if not finished:
            raise StreamCut("the stream ended before the reply finished")

    def _delta(self, data: bytes) -> Delta:
        try:
            chunk = json.loads(data)
        except ValueError:
            raise StreamCut("the server sent a chunk that is not JSON") from None
        if not isinstance(chunk, dict):
            raise StreamCut("the server sent a chunk that is not a JSON object")
        if "error" in chunk:  # an error mid-stream, as OpenAI sends it
            error = chunk["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise StreamCut(self._mask(f"the server reported an error: {message}"))
        usage = chunk.get("usage") if isinstance(chunk.get("usage"), dict) else None
        choices = chunk.get("choices") or []
        choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        delta = choice.get("delta")
        delta = delta if isinstance(delta, dict) else {}
        return Delta(
            at=time.perf_counter(),
            text=str(delta.get("content") or ""),
            reasoning=str(delta.get("reasoning_content") or delta.get("reasoning") or ""),
            finish_reason=choice.get("finish_reason"),
            usage={k: int(v) for k, v in usage.items() if isinstance(v, int)} if usage else None,
        )

    def _refusal(self, answer: requests.Response) -> AppError:
        status = answer.status_code
        said = self._server_message(answer)
        detail = f"HTTP {status}: {said}"
        if status in (401, 403):
            message = f"{self.where} refused the key (HTTP {status}): check the endpoint's key."
            return AppError(ErrorKind.PERMISSION, message, detail)
        if status == 404:
            return AppError(
                ErrorKind.NOT_FOUND,
                f"{self.where} has no model {self.model.model_id!r} (HTTP 404{': ' + said if said else ''}).",
                detail,
            )
        if 300 <= status < 400:
            return AppError(
                ErrorKind.NETWORK,
                f"{self.where} redirects elsewhere (HTTP {status}); Hubside "
                "sends the key only to the URL you gave: use the final URL.",
                detail,
            )
        return AppError(
            ErrorKind.NETWORK, f"{self.where} answered HTTP {status}{': ' + said if said else ''}.", detail
        )

    def _server_message(self, answer: requests.Response) -> str:
        try:
            raw = answer.raw.read(64 << 10, decode_content=True)
            error = json.loads(raw).get("error")
            message = error.get("message") if isinstance(error, dict) else error
            text = str(message or "")[:300]
        except Exception:  # not JSON, or not OpenAI's error shape: the status says enough
            text = ""
        return self._mask(text)

    def _silent(self, exc: BaseException, wait: float) -> AppError:
        return AppError(
            ErrorKind.NETWORK,
            f"{self.where} accepted the connection but sent nothing for {wait:g} s.",
            self._masked(exc),
        )

    def _tls(self, exc: BaseException) -> AppError:
        known = to_app_error(exc)
        if known.kind is ErrorKind.TLS:
            return AppError(ErrorKind.TLS, known.user_message, self._masked(exc))
        return AppError(
            ErrorKind.TLS, f"The TLS connection to {self.where} failed (is it https?).", self._masked(exc)
        )

    def _mask(self, text: str) -> str:
        key = self.model.api_key
        return text.replace(key, "***") if key else text

    def _masked(self, exc: BaseException) -> str:
        return self._mask(f"{type(exc).__name__}: {exc}")


def offered_models(model: RemoteModel) -> list[str]:
    """The model ids `model`'s endpoint offers (GET /models): the window's "test the connection"."""
    client = Client(model)
    try:
        return client.models()
    finally:
        client.close()
