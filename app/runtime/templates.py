"""Chat templates are code from the internet: render them as Hugging Face does, in a bounded sandbox.

The environment is transformers' `apply_chat_template` one, so a prompt is byte for byte what the model was
trained on: jinja2's ImmutableSandboxedEnvironment (blocks access to Python internals) with trim_blocks and
lstrip_blocks, loop controls, the `{% generation %}` tag, transformers' `tojson`, `raise_exception`,
`strftime_now`, safe `dict` and `namespace`. On top of it, limits that no normal template reaches: a time
limit (a trace function checks the clock on every line the compiled template runs), a cap on output size,
and caps on the operators, calls and filters that could build a huge value from a short template.

A template that rejects the conversation's shape (a system message, two turns of one role) gets it in the
shape it accepts, as llama.cpp does; one that fails in any other way gives way to a plain built-in format,
with a notice.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import FrameType
from typing import Any

from jinja2 import Template, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace

from app.runtime.protocol import ChatMessage
from app.runtime.reasoning import THINK_CLOSE, prompt_opens_thinking

MAX_OUTPUT = 1 << 20  # characters of rendered prompt
TIME_LIMIT_S = 1.0
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+)")
# transformers copies a message's reasoning under each name that templates read (Qwen3, gpt-oss, ...).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    notice: str | None  # set when the built-in format replaced the model's template
    stop: tuple[str, ...]  # stop strings the format needs (the model's own end tokens need none)


class TemplateLimitExceeded(SecurityError):
    pass


def _check_size(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT:
        raise TemplateLimitExceeded(f"a number ({value}) larger than the template limits")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise TemplateLimitExceeded("an exponent larger than the template limits")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                repeated = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if repeated and len(seq) * times > MAX_OUTPUT:
                    raise TemplateLimitExceeded("a repeated value larger than the template limits")
        if operator == "%" and isinstance(left, str):
            for width in _FORMAT_WIDTH.findall(left):
                _check_size(int(width))
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        for value in (*args, *kwargs.values()):
            _check_size(value)
        return super().call(__context, __obj, *args, **kwargs)


def _bounded_filter(original: Callable[..., Any]) -> Callable[..., Any]:
    # functools.wraps keeps jinja's pass_context/pass_environment marker: without it, join, map, select,
    # tojson and the other filters that take the context or environment get the wrong first argument.
    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            _check_size(value)
        return original(*args, **kwargs)

    return bounded


class _GenerationTag(Extension):
    """transformers' `{% generation %}...{% endgeneration %}`: marks the assistant's text for training
    masks; for a prompt it renders its body unchanged."""

    tags = {"generation"}  # noqa: RUF012 (jinja's own class attribute)

    def parse(self, parser: Any) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


class _TemplateDict:
    """`dict` for templates without the type's attributes (as transformers gives it)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(Namespace):
    """jinja's namespace refusing underscore names, so a template cannot reach dunder attributes."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a template may not set the attribute {name!r}")


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: Any = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    """transformers' tojson: no HTML escaping, non-ASCII kept, keys in their order."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> Template:
    """Compiled once per template source (a chat renders its template at least once per reply)."""
    env = _BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env.from_string(source)


def _template_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A message as transformers hands it to the template: no None values, reasoning under every name."""
    out = {key: value for key, value in message.items() if value is not None}
    reasoning = next((out[key] for key in REASONING_FIELDS if out.get(key) is not None), None)
    if reasoning is not None:
        out = {"thinking": reasoning, **out, "reasoning_content": reasoning}
    return out


def render_template(
    source: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    tools: Sequence[Mapping[str, Any]] | None = None,
    variables: Mapping[str, Any] | None = None,
    now: Callable[[], datetime] = datetime.now,
    time_limit_s: float = TIME_LIMIT_S,
) -> str:
    """Render a chat template in the sandbox; raises TemplateError (or SecurityError) on any failure.

    `variables` are the template's own switches (Qwen3's `enable_thinking`); `now` is the clock that
    `strftime_now` reads (Llama 3.x prints today's date)."""
    template = compile_template(source)
    deadline = time.monotonic() + time_limit_s

    def tracer(frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        if time.monotonic() > deadline:
            raise TemplateLimitExceeded(f"rendering took longer than {time_limit_s:g} s")
        return tracer

    chunks: list[str] = []
    size = 0
    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        for chunk in template.generate(
            **(variables or {}),
            messages=[_template_message(m) for m in messages],
            tools=list(tools) if tools is not None else None,
            documents=None,
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            strftime_now=lambda fmt: now().strftime(str(fmt)),
        ):
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateLimitExceeded(f"the prompt grew past {MAX_OUTPUT} characters")
            chunks.append(chunk)
    finally:
        sys.settrace(previous)
    return "".join(chunks)


_FALLBACK_ROLES = {"system": "System", "user": "User", "assistant": "Assistant"}
FALLBACK_STOP = ("\nUser:", "\nSystem:")


def fallback_prompt(messages: Sequence[ChatMessage]) -> str:
    """A plain format any model can continue: 'User: ...' / 'Assistant: ...' turns."""
    turns = [f"{_FALLBACK_ROLES.get(m.role, m.role.title())}: {m.content.strip()}\n\n" for m in messages]
    return "".join(turns) + "Assistant:"


def _alternating(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """Consecutive messages of one role merged, and no assistant turn before the first user turn."""
    merged: list[ChatMessage] = []
    for message in messages:
        if merged and merged[-1].role == message.role:
            merged[-1] = replace(message, content=f"{merged[-1].content}\n\n{message.content}")
        elif message.role == "assistant" and not any(m.role == "user" for m in merged):
            continue  # trimming can leave a reply first; "roles must alternate" templates refuse it
        else:
            merged.append(message)
    return merged


def _system_in_first_user(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """For templates without a system role: the system prompt opens the first user message (llama.cpp's
    rule, a newline between them)."""
    system = "\n".join(m.content for m in messages if m.role == "system")
    rest = [m for m in messages if m.role != "system"]
    for i, message in enumerate(rest):
        if message.role == "user":
            rest[i] = replace(message, content=f"{system}\n{message.content}")
            return rest
    return [ChatMessage("user", system), *rest]


def chat_shapes(messages: Sequence[ChatMessage]) -> list[list[ChatMessage]]:
    """The conversation as given, then in the shapes strict templates accept, in the order tried."""
    shapes = [list(messages)]
    alternating = _alternating(messages)
    if alternating != shapes[0]:
        shapes.append(alternating)
    if any(m.role == "system" for m in messages):
        shapes.append(_alternating(_system_in_first_user(alternating)))
    return shapes


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    return {"role": message.role, "content": message.content, "reasoning_content": message.reasoning or None}


def render_chat(
    template: str,
    messages: Sequence[ChatMessage],
    *,
    bos_token: str,
    eos_token: str,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """The model's template over the first shape of the chat it accepts; raises the first shape's error
    when it accepts none. Limits (time, size) are never retried: they fail at once."""
    first_error: Exception | None = None
    for shape in chat_shapes(messages):
        try:
            return render_template(
                template,
                [_message_dict(m) for m in shape],
                bos_token=bos_token,
                eos_token=eos_token,
                variables=variables,
            )
        except TemplateLimitExceeded:
            raise
        except Exception as exc:  # foreign template code: any error means "not this shape"
            first_error = first_error or exc
    assert first_error is not None
    raise first_error


def build_prompt(
    template: str | None,
    messages: Sequence[ChatMessage],
    *,
    bos_token: str,
    eos_token: str,
    variables: Mapping[str, Any] | None = None,
) -> RenderedPrompt:
    """The prompt for these messages: the model's template if it renders, the built-in format if not.

    When the last message is the assistant's, the prompt ends inside that reply so the model continues it
    (a reply cut at max tokens): the turns before it, the assistant's turn opened, and the reply so far.
    """
    last = messages[-1] if messages and messages[-1].role == "assistant" else None
    partial = None if last is None else last.content
    history = messages[:-1] if last is not None else messages
    if not template:
        notice = "This model has no chat template; using a plain built-in format."
        return RenderedPrompt(_continued(fallback_prompt(history), partial, " "), notice, FALLBACK_STOP)
    try:
        text = render_chat(template, history, bos_token=bos_token, eos_token=eos_token, variables=variables)
    except Exception as exc:  # any failure of foreign template code means: use the built-in format
        notice = f"The model's chat template could not be used ({exc}); using a plain built-in format."
        return RenderedPrompt(_continued(fallback_prompt(history), partial, " "), notice, FALLBACK_STOP)
    if last is not None and prompt_opens_thinking(text):  # the answer must not go on inside the block
        partial = _after_thinking(last.reasoning) + last.content
    return RenderedPrompt(_continued(text, partial, ""), None, ())


def _continued(prompt: str, partial: str | None, separator: str) -> str:
    return prompt if partial is None else prompt + separator + partial


def _after_thinking(reasoning: str) -> str:
    """A continued reply goes on after its thinking: where the template opened the thinking block, the
    reply's reasoning and the block's end come first (else the answer would continue inside it)."""
    return (f"{reasoning.strip()}\n" if reasoning.strip() else "") + f"{THINK_CLOSE}\n\n"


_USER_MARK, _REPLY_MARK = "HUBSIDE-USER-TURN", "HUBSIDE-REPLY-TURN"


def end_of_turn_text(template: str, *, bos_token: str, eos_token: str) -> str:
    """What the template writes between a reply's text and the next user's text ("" when it cannot say).

    Its start is the template's end-of-turn marker: `<|im_end|>` in ChatML, `<|eot_id|>` in Llama 3,
    `### Instruction:` in plain formats. The engine stops on it where it is not an end-of-generation token."""
    turns = [
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", _REPLY_MARK),
        ChatMessage("user", _USER_MARK),
    ]
    try:
        text = render_chat(template, turns, bos_token=bos_token, eos_token=eos_token)
    except Exception:
        return ""
    start = text.find(_REPLY_MARK)
    end = text.find(_USER_MARK, start)
    return text[start + len(_REPLY_MARK) : end] if 0 <= start < end else ""
