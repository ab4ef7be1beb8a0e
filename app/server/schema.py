"""Every request body is read and checked here, into plain dataclasses the endpoints use.

A field this server does not implement and that would change the answer (tools, logit_bias, logprobs, n > 1,
...) is a clear 400 rather than silently ignored; fields that change nothing here (user, metadata) pass. A
field sent with its neutral value (`"logprobs": false`, `"tools": []`, `"n": 1`) passes too: some clients
always send them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.runtime.protocol import ChatMessage, SamplingParams
from app.server.errors import bad_request

MAX_STOPS = 16
MAX_EMBED_INPUTS = 256
HARMLESS = frozenset(
    {
        "user",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
        "parallel_tool_calls",
    }
)
# Unsupported, but fine when sent with the neutral value (what a client sends when it means "not used").
NEUTRAL: dict[str, Callable[[Any], bool]] = {
    "n": lambda v: v is None or v == 1,
    "best_of": lambda v: v is None or v == 1,
    "tools": lambda v: not v,
    "functions": lambda v: not v,
    "tool_choice": lambda v: v in (None, "none"),
    "function_call": lambda v: v in (None, "none"),
    "logit_bias": lambda v: not v,
    "logprobs": lambda v: v in (None, False, 0),
    "top_logprobs": lambda v: v in (None, 0),
    "echo": lambda v: v in (None, False),
    "suffix": lambda v: not v,
    "modalities": lambda v: v in (None, ["text"]),
    "audio": lambda v: v is None,
    "prediction": lambda v: v is None,
    "web_search_options": lambda v: v is None,
    "reasoning_effort": lambda v: v is None,
    "dimensions": lambda v: v is None,
}
_SAMPLING = {"temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty"}
_GENERATION = {"model", "stream", "stream_options", "stop", "max_tokens", "response_format", *_SAMPLING}
CHAT_FIELDS = frozenset({*_GENERATION, "messages", "max_completion_tokens"})
COMPLETION_FIELDS = frozenset({*_GENERATION, "prompt"})
EMBEDDING_FIELDS = frozenset({"model", "input", "encoding_format"})
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


@dataclass(frozen=True)
class Generation:
    """A chat or completion request, checked."""

    model: str
    messages: tuple[ChatMessage, ...]  # chat
    prompt: str | None  # completions
    prompt_tokens: tuple[int, ...]  # completions given as token ids
    sampling: SamplingParams
    max_tokens: int | None
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool
    response_format: dict[str, Any] | None  # {"type": "json_object"} or {"type": "json_schema", ...}


@dataclass(frozen=True)
class Embedding:
    model: str
    texts: tuple[str, ...]
    base64: bool


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    return data


def _check_fields(data: dict[str, Any], known: frozenset[str]) -> None:
    for name, value in data.items():
        if name in known or name in HARMLESS:
            continue
        neutral = NEUTRAL.get(name)
        if neutral is not None and neutral(value):
            continue
        what = "is not supported by this server" if neutral else "is not a parameter this server knows"
        raise bad_request(f"'{name}' {what}.", param=name, code="unsupported_parameter")


def _model(data: dict[str, Any]) -> str:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required: a model id from GET /v1/models.", param="model")
    return model


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad_request(f"'{name}' must be a number.", param=name)
    if not low <= value <= high:
        raise bad_request(f"'{name}' must be between {low:g} and {high:g}, not {value}.", param=name)
    return float(value)


def _integer(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise bad_request(f"'{name}' must be a whole number from {low} to {high}.", param=name)
    return value


def _sampling(data: dict[str, Any]) -> SamplingParams:
    """The request's sampling; what it leaves out is llama-server's default (no repeat penalty: OpenAI's
    presence and frequency penalties take its place)."""
    defaults = SamplingParams(temperature=0.8, repeat_penalty=1.0)
    temperature = _number(data, "temperature", 0, 2)
    top_p = _number(data, "top_p", 0, 1)
    top_k = _integer(data, "top_k", 0, 1 << 20)
    min_p = _number(data, "min_p", 0, 1)
    presence = _number(data, "presence_penalty", -2, 2)
    frequency = _number(data, "frequency_penalty", -2, 2)
    return SamplingParams(
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=defaults.top_p if top_p is None else top_p,
        top_k=defaults.top_k if top_k is None else top_k,
        min_p=defaults.min_p if min_p is None else min_p,
        repeat_penalty=defaults.repeat_penalty,
        presence_penalty=presence or 0.0,
        frequency_penalty=frequency or 0.0,
        seed=_integer(data, "seed", -(1 << 63), (1 << 64) - 1),
    )


def _stop(data: dict[str, Any]) -> tuple[str, ...]:
    stop = data.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops) or len(stops) > MAX_STOPS:
        raise bad_request(f"'stop' must be a string or a list of at most {MAX_STOPS} strings.", param="stop")
    return tuple(s for s in stops if s)


def _response_format(data: dict[str, Any]) -> dict[str, Any] | None:
    value = data.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": kind}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise bad_request(
                "'response_format.json_schema' must be an object with a 'schema' object.",
                param="response_format",
            )
        return {"type": kind, "json_schema": spec}
    raise bad_request(
        "'response_format' must have type 'text', 'json_object' or 'json_schema'.", param="response_format"
    )


def _generation(data: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    _check_fields(data, known)
    stream = data.get("stream") or False
    options = data.get("stream_options") or {}
    if not isinstance(stream, bool) or not isinstance(options, dict):
        raise bad_request("'stream' must be true or false, 'stream_options' an object.", param="stream")
    return {
        "model": _model(data),
        "sampling": _sampling(data),
        "stop": _stop(data),
        "stream": stream,
        "include_usage": bool(stream and options.get("include_usage")),
        "response_format": _response_format(data),
    }


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise bad_request(
                    f"messages[{index}]: only text content parts are supported (no images or audio yet).",
                    param=f"messages[{index}].content",
                )
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"messages[{index}].content must be a string or a list of text parts.")


def parse_chat(data: dict[str, Any]) -> Generation:
    common = _generation(data, CHAT_FIELDS)
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list.", param="messages")
    turns = []
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ROLES:
            raise bad_request(
                f"messages[{index}].role must be system, developer, user or assistant (no tools yet).",
                param=f"messages[{index}].role",
            )
        assert isinstance(message, dict)
        if message.get("tool_calls") or message.get("function_call"):
            raise bad_request("Tool calls are not supported yet.", param=f"messages[{index}].tool_calls")
        turns.append(ChatMessage(ROLES[role], _content(message, index)))
    limit = _integer(data, "max_completion_tokens", 0, 1 << 24)
    limit = _integer(data, "max_tokens", 0, 1 << 24) if limit is None else limit
    return Generation(messages=tuple(turns), prompt=None, prompt_tokens=(), max_tokens=limit, **common)


def parse_completion(data: dict[str, Any]) -> Generation:
    common = _generation(data, COMPLETION_FIELDS)
    prompt = data.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # a batch of one
    tokens: tuple[int, ...] = ()
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
    ):
        tokens, prompt = tuple(prompt), None
    elif not isinstance(prompt, str):
        raise bad_request("'prompt' must be a string (or a list of token ids); batches are not supported.",
                          param="prompt")  # fmt: skip
    limit = _integer(data, "max_tokens", 0, 1 << 24)
    limit = 16 if limit is None else limit  # OpenAI's default for completions
    return Generation(messages=(), prompt=prompt, prompt_tokens=tokens, max_tokens=limit, **common)


def parse_embedding(data: dict[str, Any]) -> Embedding:
    _check_fields(data, EMBEDDING_FIELDS)
    texts = data.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise bad_request("'input' must be a string or a non-empty list of strings.", param="input")
    if len(texts) > MAX_EMBED_INPUTS:
        raise bad_request(f"'input' may hold at most {MAX_EMBED_INPUTS} strings.", param="input")
    encoding = data.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return Embedding(_model(data), tuple(texts), encoding == "base64")
