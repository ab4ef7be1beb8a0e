"""A conversation as a file: JSON (round-trips through import) and Markdown (for reading and sharing)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from app.chat.store import ROLES, STATES, Conversation, ConversationExport, Message, active_path
from app.errors import AppError, ErrorKind

FORMAT = "hubside-conversation"
# 2: messages carry "parent" (index of the message they follow) and "active" (versions)
# 3: messages carry "reasoning" (a reasoning model's thinking), the chat its "thinking" switch
VERSION = 3
MAX_IMPORT_BYTES = 64 * 1024 * 1024
SPEAKERS = {"user": "You", "assistant": "Assistant", "system": "System"}  # how roles are shown


def to_json(saved: ConversationExport) -> str:
    c = saved.conversation
    messages = sorted(saved.messages, key=lambda m: m.id)
    index = {m.id: i for i, m in enumerate(messages)}
    return json.dumps(
        {
            "format": FORMAT,
            "version": VERSION,
            "title": c.title,
            "system_prompt": c.system_prompt,
            "model_path": c.model_path,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "thinking": c.thinking,
            "messages": [
                {
                    "role": m.role,
                    "content": m.content,
                    "reasoning": m.reasoning,
                    "state": m.state,
                    "stats": m.stats,
                    "created_at": m.created_at,
                    "parent": index.get(m.parent_id) if m.parent_id is not None else None,
                    "active": m.active,
                }
                for m in messages
            ],
        },
        indent=2,
        ensure_ascii=False,
    )


def to_markdown(saved: ConversationExport) -> str:
    c = saved.conversation
    parts = [f"# {c.title or 'Conversation'}\n"]
    if c.system_prompt:
        parts.append(f"*System prompt:* {c.system_prompt}\n")
    for m in active_path(saved.messages):
        note = f" ({m.state})" if m.state not in ("complete", "streaming") else ""
        thought = _quoted_reasoning(m.reasoning, m.stats)
        parts.append(f"## {SPEAKERS.get(m.role, m.role)}{note}\n\n{thought}{m.content.strip()}\n")
    return "\n".join(parts)


def thought_label(reasoning: str, reasoning_ms: float | None) -> str:
    """'Thought for 12 s (340 words)': the time from the first reasoning text to the answer, and its
    length."""
    words = len(reasoning.split())
    length = f"{words} word{'s' if words != 1 else ''}"
    if not reasoning_ms:
        return f"Thoughts ({length})"
    seconds = reasoning_ms / 1000
    took = f"{seconds:.1f}" if seconds < 10 else f"{seconds:.0f}"
    return f"Thought for {took} s ({length})"


def quoted(text: str) -> str:
    """Markdown text as a block quote."""
    return "\n".join(f"> {line}" if line else ">" for line in text.strip().splitlines())


def _quoted_reasoning(reasoning: str, stats: dict[str, Any]) -> str:
    if not reasoning.strip():
        return ""
    label = thought_label(reasoning, _number(stats.get("reasoning_ms"), 0.0))
    return f"> *{label}*\n>\n{quoted(reasoning)}\n\n"


def _bad(problem: str) -> AppError:
    return AppError(ErrorKind.BAD_INPUT, f"This is not a Hubside conversation file: {problem}.")


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise _bad(f"{name} is not text")
    return value


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


TEXT_STATS = ("model", "preset", "finish_reason")


def _stats(value: Any) -> dict[str, Any]:
    """A reply's numbers from a file: names as text, numbers as numbers; anything else is left out (the
    transcript formats them, and a string where a number belongs must not break every later render)."""
    if not isinstance(value, dict):
        return {}
    return {
        key: item
        for key, item in value.items()
        if isinstance(key, str) and (isinstance(item, str) if key in TEXT_STATS else _is_number(item))
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def from_json(data: bytes | str) -> ConversationExport:
    """Parse an exported conversation, checking every field; raises AppError(BAD_INPUT) on anything odd."""
    if len(data) > MAX_IMPORT_BYTES:
        raise _bad(f"it is larger than {MAX_IMPORT_BYTES // 1024 // 1024} MB")
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"it is not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise _bad("the format field is missing")
    version = raw.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise _bad(f"version {version!r} is newer than this Hubside understands")
    entries = raw.get("messages")
    if not isinstance(entries, list):
        raise _bad("it has no list of messages")
    now = time.time()
    messages = []
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or entry.get("role") not in ROLES:
            raise _bad("a message has no valid role")
        state = entry.get("state", "complete")
        if state not in STATES:
            raise _bad(f"a message has an unknown state {state!r}")
        stats = _stats(entry.get("stats", {}))
        created = _number(entry.get("created_at"), now)
        parent = entry.get("parent", number - 1 if number else None)  # version 1: one after another
        if parent is not None and (not isinstance(parent, int) or not 0 <= parent < number):
            raise _bad("a message follows one that is not before it")
        messages.append(
            Message(
                id=number + 1,  # ids only link the messages of this file to each other
                conversation_id=0,
                role=entry["role"],
                content=_text(entry.get("content", ""), "a message's content"),
                reasoning=_text(entry.get("reasoning", ""), "a message's reasoning"),
                state="interrupted" if state == "streaming" else state,
                stats=stats,
                created_at=created,
                updated_at=created,
                parent_id=None if parent is None else parent + 1,
                active=entry.get("active", True) is not False,
            )
        )
    conversation = Conversation(
        id=0,
        title=_text(raw.get("title", ""), "the title"),
        system_prompt=_text(raw.get("system_prompt", ""), "the system prompt"),
        model_path=_text(raw.get("model_path", ""), "the model path"),
        pinned=False,
        created_at=_number(raw.get("created_at"), now),
        updated_at=_number(raw.get("updated_at"), now),
        thinking=thinking if isinstance(thinking := raw.get("thinking"), bool) else None,
    )
    return ConversationExport(conversation, tuple(messages))
