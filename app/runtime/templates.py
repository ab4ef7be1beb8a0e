"""Chat templates are code from the internet: render them only in a bounded Jinja2 sandbox.

The sandbox (jinja2's ImmutableSandboxedEnvironment, as Hugging Face and llama-cpp-python use) blocks
access to Python internals. On top of it: a time limit (a trace function checks the clock on every line
the compiled template runs), a cap on output size, and caps on the operators and filters that could build
a huge value from a short template. A template that fails in any way gives way to a plain built-in
format, with a notice.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

from jinja2 import TemplateError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.runtime.protocol import ChatMessage

MAX_OUTPUT = 1 << 20  # characters of rendered prompt
TIME_LIMIT_S = 1.0
_FORMAT_WIDTH = re.compile(r"%[-+ #0]*(\d+)")


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
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            _check_size(value)
        return original(*args, **kwargs)

    return bounded


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _environment() -> _BoundedSandbox:
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters = {name: _bounded_filter(f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(str(fmt))
    return env


def render_template(
    source: str,
    messages: Sequence[ChatMessage],
    *,
    bos_token: str = "",
    eos_token: str = "",
    add_generation_prompt: bool = True,
    time_limit_s: float = TIME_LIMIT_S,
) -> str:
    """Render a chat template in the sandbox; raises TemplateError (or SecurityError) on any failure."""
    template = _environment().from_string(source)
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
            messages=[{"role": m.role, "content": m.content} for m in messages],
            add_generation_prompt=add_generation_prompt,
            bos_token=bos_token,
            eos_token=eos_token,
            tools=None,
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


def build_prompt(
    template: str | None, messages: Sequence[ChatMessage], *, bos_token: str, eos_token: str
) -> RenderedPrompt:
    """The prompt for these messages: the model's template if it renders, the built-in format if not.

    When the last message is the assistant's, the prompt ends inside that reply so the model continues it
    (a reply cut at max tokens): the turns before it, the assistant's turn opened, and the reply so far.
    """
    partial = messages[-1].content if messages and messages[-1].role == "assistant" else None
    history = messages[:-1] if partial is not None else messages
    if not template:
        notice = "This model has no chat template; using a plain built-in format."
        return RenderedPrompt(_continued(fallback_prompt(history), partial, " "), notice, FALLBACK_STOP)
    try:
        text = render_template(template, history, bos_token=bos_token, eos_token=eos_token)
    except Exception as exc:  # any failure of foreign template code means: use the built-in format
        notice = f"The model's chat template could not be used ({exc}); using a plain built-in format."
        return RenderedPrompt(_continued(fallback_prompt(history), partial, " "), notice, FALLBACK_STOP)
    return RenderedPrompt(_continued(text, partial, ""), None, ())


def _continued(prompt: str, partial: str | None, separator: str) -> str:
    return prompt if partial is None else prompt + separator + partial
