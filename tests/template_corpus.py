"""The chat-template corpus: real templates of widely used models and the prompts transformers makes of them.

`tests/chat_templates/*.jinja` are the templates (SOURCES.md says where each came from); `expected.json`
holds, for every template and conversation, the prompt the reference renderer (tests/template_reference.py,
a copy of transformers' apply_chat_template) makes, or the error it raises.

    python -m tests.template_corpus --write                  # regenerate expected.json from the reference
    python -m tests.template_corpus --check-transformers     # the reference against transformers itself

The second needs transformers installed (it is not a test dependency): `pip install transformers` in any
virtual environment that also has jinja2, then run this module with that environment's python.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

CORPUS = Path(__file__).with_name("chat_templates")
EXPECTED = CORPUS / "expected.json"
BOS, EOS = "<s>", "</s>"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city's name, e.g. Zürich"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "system_user": [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "turns": [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Name three colours."},
        {"role": "assistant", "content": "Red, green and blue."},
        {"role": "user", "content": "And one more?"},
    ],
    "unicode": [
        {"role": "system", "content": "Réponds en français, s'il te plaît."},
        {"role": "user", "content": 'Il a dit « bonjour » et "salut" — c\'est 日本語 ? 🎉 \\n'},
        {"role": "assistant", "content": "Oui : « bonjour » ✓"},
        {"role": "user", "content": "Merci\tbeaucoup !"},
    ],
    "tools": [
        {"role": "user", "content": "What's the weather in Zürich?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call12345",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Zürich"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call12345", "name": "get_weather", "content": '{"temp_c": 21}'},
    ],
}


def supports_tools(source: str) -> bool:
    return "tool" in source


def templates() -> list[Path]:
    return sorted(CORPUS.glob("*.jinja"))


def cases() -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(template name, conversation name, template source, render arguments) for the whole corpus."""
    for path in templates():
        source = path.read_text(encoding="utf-8")
        for name, messages in CONVERSATIONS.items():
            if name == "tools" and not supports_tools(source):
                continue
            tools = [WEATHER_TOOL] if name == "tools" else None
            yield path.stem, name, source, {"messages": messages, "tools": tools}


def outcome(render: Callable[..., str], source: str, messages: Sequence[Mapping[str, Any]], **kw: Any) -> Any:
    """What a renderer makes of one case: {"text": ...} or {"error": "<class>: <message>"}."""
    try:
        return {"text": render(source, messages, bos_token=BOS, eos_token=EOS, **kw)}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def load_expected() -> dict[str, dict[str, Any]]:
    data: dict[str, dict[str, Any]] = json.loads(EXPECTED.read_text(encoding="utf-8"))
    return data


def _write() -> None:
    from tests.template_reference import render_reference

    expected: dict[str, dict[str, Any]] = {}
    for template, case, source, kw in cases():
        expected.setdefault(template, {})[case] = outcome(
            render_reference, source, kw["messages"], tools=kw["tools"]
        )
    EXPECTED.write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"{sum(len(v) for v in expected.values())} cases from {len(expected)} templates -> {EXPECTED}")


def _check_transformers() -> int:
    import datetime as real_datetime

    import transformers
    from transformers.utils import chat_template_utils as ctu

    from tests.template_reference import FIXED_NOW

    class _FixedClock(real_datetime.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return FIXED_NOW

    ctu.datetime = _FixedClock  # type: ignore[misc]  # the reference's fixed clock, for date-printing templates

    def render(source: str, messages: Any, **kw: Any) -> str:
        rendered, _ = ctu.render_jinja_template(
            conversations=[messages], chat_template=source, add_generation_prompt=True, **kw
        )
        return str(rendered[0])

    expected = load_expected()
    checked = differ = 0
    for template, case, source, kw in cases():
        got = outcome(render, source, kw["messages"], tools=kw["tools"])
        checked += 1
        if got != expected[template][case]:
            differ += 1
            print(f"DIFFERS {template}/{case}: {str(got)[:200]!r}")
    print(f"transformers {transformers.__version__}: {checked - differ} of {checked} cases equal")
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", action="store_true")
    group.add_argument("--check-transformers", action="store_true")
    args = parser.parse_args()
    if args.write:
        _write()
        return 0
    return _check_transformers()


if __name__ == "__main__":
    sys.exit(main())
