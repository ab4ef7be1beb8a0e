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
import types
from collections.abc import Callable, ItemsView, Iterable, KeysView, Mapping, Sequence, ValuesView
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from jinja2 import Template, TemplateError, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace
from markupsafe import EscapeFormatter, Markup

from app.runtime.protocol import ChatMessage
from app.runtime.reasoning import THINK_CLOSE, prompt_opens_thinking

MAX_OUTPUT = 1 << 20  # characters of rendered prompt, and of any one value a template builds
TIME_LIMIT_S = 1.0
MAX_JSON_INDENT = 64
# transformers copies a message's reasoning under each name that templates read (Qwen3, gpt-oss, ...).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    notice: str | None  # set when the built-in format replaced the model's template
    stop: tuple[str, ...]  # stop strings the format needs (the model's own end tokens need none)


class TemplateLimitExceeded(SecurityError):
    pass


# --- size limits ---------------------------------------------------------------------------------------
# The time limit only sees Python lines: one C call (str.replace, "".join, "%d" % x, json.dumps) can build
# gigabytes between two of them. So every operation that can make a value much larger than its inputs has
# its result's length estimated first, from the inputs, and is refused past MAX_OUTPUT. A normal template
# never comes near: its whole output is capped at MAX_OUTPUT anyway.

_PERCENT_SPEC = re.compile(r"%(?:%|(\([^)]*\))?[-+ #0]*(\d+|\*)?(?:\.(\d+|\*))?)")
_DIGITS = re.compile(r"\d+")
_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


def _refuse_past(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise TemplateLimitExceeded(f"{what} larger than the template limits")


def _check_size(value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_OUTPUT:
        raise TemplateLimitExceeded(f"a number ({value}) larger than the template limits")


def _number(digits: str) -> int:
    """A width or precision written in a format string, without converting a thousand-digit one."""
    return int(digits) if len(digits) <= len(str(MAX_OUTPUT)) else MAX_OUTPUT + 1


def _text_size(value: Any, indent: int = 0) -> int:
    """About how long str() (repr for what a container holds) or tojson (with `indent`) makes `value`,
    counted only until it passes MAX_OUTPUT. A list can hold the same long string a thousand times at no
    cost; its text cannot."""
    if isinstance(value, str):
        return len(value)
    size = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack and size <= MAX_OUTPUT:
        item, depth = stack.pop()
        if isinstance(item, str):
            size += len(item) + 2
        elif isinstance(item, bytes):
            size += 4 * len(item) + 3
        elif isinstance(item, Namespace):
            size += 13
            stack.append((getattr(item, "_Namespace__attrs", {}), depth))
        elif isinstance(item, Mapping):
            size += 2 + len(item) * (4 + indent * depth)
            if size <= MAX_OUTPUT:
                stack.extend((part, depth + 1) for pair in item.items() for part in pair)
        elif isinstance(item, list | tuple | set | frozenset | KeysView | ValuesView | ItemsView):
            size += 2 + len(item) * (2 + indent * depth)
            if size <= MAX_OUTPUT:
                stack.extend((part, depth + 1) for part in item)
        elif isinstance(item, int) and not isinstance(item, bool):
            size += item.bit_length() * 3 // 10 + 2  # decimal digits
        else:  # None, True, a float, an undefined value, a loop, a macro: short
            size += 32
    return size


def _percent_size(fmt: str, values: Any) -> int:
    """About the length of `fmt % values`: each `%[(key)][flags][width][.precision]` spec gives its
    width and precision (from `values` where they are `*`) and the text of the value it formats."""
    positional = values if isinstance(values, tuple) else (values,)
    index = 0
    size = len(fmt)
    for match in _PERCENT_SPEC.finditer(fmt):
        if match.group() == "%%":
            continue
        key, width, precision = match.groups()
        for part in (width, precision):
            if part == "*":
                star = positional[index] if index < len(positional) else 0
                size += abs(star) if isinstance(star, int) else 0
                index += 1
            elif part:
                size += _number(part)
        if key is not None:
            value = values.get(key[1:-1]) if isinstance(values, Mapping) else None
        else:
            value = positional[index] if index < len(positional) else None
            index += 1
        size += _text_size(value)
        if size > MAX_OUTPUT:
            break
    return size


def _replace_size(s: Any, old: Any = "", new: Any = "", count: Any = None) -> int:
    length = _text_size(s)
    growth = _text_size(new) - _text_size(old)
    if growth <= 0:
        return length
    found = s.count(old) if isinstance(s, str) and isinstance(old, str) else length + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return length + found * growth


def _padded_size(s: Any, width: Any = 0, *_: Any) -> int:  # center, ljust, rjust, zfill
    return max(_text_size(s), width if isinstance(width, int) else 0)


def _expandtabs_size(s: str, tabsize: Any = 8) -> int:
    return len(s) + s.count("\t") * max(tabsize if isinstance(tabsize, int) else 0, 0)


def _translate_size(s: str, table: Any = None) -> int:
    longest = max((_text_size(v) for v in table.values()), default=1) if isinstance(table, Mapping) else 1
    return len(s) * max(longest, 1)


def _join_size(separator: Any, items: Sequence[Any]) -> int:
    size = _text_size(separator) * max(len(items) - 1, 0)
    for item in items:
        size += _text_size(item)
        if size > MAX_OUTPUT:
            break
    return size


def _lines(s: Any) -> int:
    return sum(s.count(c) for c in _LINE_BREAKS) + 1 if isinstance(s, str) else _text_size(s) + 1


def _indent_size(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    indent = _text_size(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    return _text_size(s) + _lines(s) * max(indent, 0)


def _wordwrap_size(
    s: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> int:
    # Two lines in a row hold more than `width` characters, or the words would have shared one line.
    wrap = 1 if wrapstring is None else _text_size(wrapstring)
    lines = 2 * _text_size(s) // max(width if isinstance(width, int) else 1, 1) + _lines(s) + 1
    return _text_size(s) + lines * wrap


def _format_size(value: Any, *args: Any, **kwargs: Any) -> int:
    return _percent_size(value, kwargs or args) if isinstance(value, str) else _text_size(value)


# str methods a template can call, and filters, that can make a result much longer than their inputs
_STR_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size,
    "center": _padded_size,
    "ljust": _padded_size,
    "rjust": _padded_size,
    "zfill": _padded_size,
    "expandtabs": _expandtabs_size,
    "translate": _translate_size,
}
_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size,
    "center": _padded_size,
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "format": _format_size,
}
# filters that turn their value into text first (str() of a list repeats what the list refers to)
_TEXT_FILTERS = frozenset(
    {
        "capitalize", "center", "e", "escape", "forceescape", "format", "indent", "lower", "pprint",
        "replace", "safe", "string", "striptags", "title", "trim", "truncate", "upper", "urlencode",
        "urlize", "wordcount", "wordwrap", "xmlattr",
    }
)  # fmt: skip


def _checked_output(value: Any) -> Any:
    """The environment's finalize: what `{{ ... }}` prints is measured before str() builds it."""
    _refuse_past(_text_size(value), "a printed value")
    return value


def _checked_concat(parts: Iterable[str]) -> str:
    """The environment's concat: the body of a macro, a `{% set %}` block or a `caller()`."""
    parts = list(parts)
    _refuse_past(sum(map(len, parts)), "a block")
    return "".join(parts)


class _BoundedFormatter(SandboxedFormatter):
    """str.format in the sandbox, with each field's width, precision and text counted before it is
    formatted."""

    size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self.size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        _refuse_past(_text_size(value), "a formatted value")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.size += _text_size(value) + sum(_number(d) for d in _DIGITS.findall(format_spec))
        _refuse_past(self.size, "a formatted string")
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


class _BoundedCodeGenerator(CodeGenerator):
    """jinja's code generator, but `a ~ b` has its parts measured before they are joined."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            func_name = "(markup_join if context.eval_ctx.volatile else str_join)"
        elif frame.eval_ctx.autoescape:
            func_name = "markup_join"
        else:
            func_name = "str_join"
        self.write(f"{func_name}(environment.checked_parts((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(")))")


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _BoundedCodeGenerator
    concat = staticmethod(_checked_concat)

    @staticmethod
    def checked_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        _refuse_past(sum(_text_size(part) for part in parts), "a joined string")
        return parts

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise TemplateLimitExceeded("an exponent larger than the template limits")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and right > 0:
            _refuse_past(left.bit_length() * right, "a power")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _refuse_past(len(seq) * times, "a repeated value")
            if isinstance(left, int) and isinstance(right, int):
                _refuse_past(left.bit_length() + right.bit_length(), "a product")
        if operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            _refuse_past(len(left) + len(right), "a sum")
        if operator == "%" and isinstance(left, str):
            _refuse_past(_percent_size(left, right), "a formatted string")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        for value in (*args, *kwargs.values()):
            _check_size(value)
        if isinstance(__obj, types.BuiltinMethodType | types.MethodType) and isinstance(__obj.__self__, str):
            name = __obj.__name__
            own = {key: value for key, value in kwargs.items() if key not in ("_loop_vars", "_block_vars")}
            if name == "join" and len(args) == 1 and not own:
                args = (list(args[0]),)  # an iterator is measured, then joined
                _refuse_past(_join_size(__obj.__self__, args[0]), "a joined string")
            elif name in _STR_METHOD_SIZES:
                _refuse_past(_STR_METHOD_SIZES[name](__obj.__self__, *args, **own), f"the result of {name}")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """jinja's own, with the bounded formatter."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        f_self: Any = value.__self__
        if not isinstance(f_self, str):
            return None
        str_type: type[str] = type(f_self)
        is_format_map = value.__name__ == "format_map"
        formatter: _BoundedFormatter
        if isinstance(f_self, Markup):
            formatter = _BoundedEscapeFormatter(self, escape=f_self.escape)
        else:
            formatter = _BoundedFormatter(self)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            return str_type(formatter.vformat(f_self, args, kwargs))

        return functools.update_wrapper(wrapper, value)


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    # functools.wraps keeps jinja's pass_context/pass_environment marker: without it, join, map, select,
    # tojson and the other filters that take the context or environment get the wrong first argument.
    passes_context = hasattr(original, "jinja_pass_arg")
    size_of = _FILTER_SIZES.get(name)
    converts = name in _TEXT_FILTERS

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            _check_size(value)
        own = args[1:] if passes_context else args
        if converts and own:
            _refuse_past(_text_size(own[0]), f"the value of a {name} filter")
        if size_of is not None and own:
            _refuse_past(size_of(*own, **kwargs), f"the result of {name}")
        return original(*args, **kwargs)

    return bounded


def _bounded_join(original: Callable[..., Any]) -> Callable[..., Any]:
    """The join filter, with its items (an iterator read once) measured before they are joined."""

    @functools.wraps(original)
    def join(eval_ctx: EvalContext, value: Iterable[Any], d: Any = "", attribute: Any = None) -> Any:
        items = list(value)
        if attribute is not None:
            items = list(map(make_attrgetter(eval_ctx.environment, attribute), items))
        _refuse_past(_join_size(d, items), "a joined string")
        return original(eval_ctx, items, d)

    return join


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
    width = len(indent) if isinstance(indent, str) else indent if isinstance(indent, int) else 0
    if width > MAX_JSON_INDENT:
        raise TemplateLimitExceeded(f"a JSON indent ({width}) larger than the template limits")
    if isinstance(separators, Sequence) and any(_text_size(s) > MAX_JSON_INDENT for s in separators):
        raise TemplateLimitExceeded("JSON separators longer than the template limits")
    _refuse_past(_text_size(value, indent=width), "a JSON value")
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> Template:
    """Compiled once per template source (a chat renders its template at least once per reply)."""
    env = _BoundedSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationTag, "jinja2.ext.loopcontrols"],
        finalize=_checked_output,
    )
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters["join"] = _bounded_join(env.filters["join"])
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

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Callable[..., Any]:
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
            earlier = merged[-1]
            reasoning = "\n\n".join(r for r in (earlier.reasoning, message.reasoning) if r)
            merged[-1] = replace(
                message, content=f"{earlier.content}\n\n{message.content}", reasoning=reasoning
            )
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
