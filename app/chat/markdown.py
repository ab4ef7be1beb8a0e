"""Fenced code blocks in a message's Markdown: found the way CommonMark finds them, so each can be copied."""

from __future__ import annotations

import re
from collections.abc import Callable

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _closes(candidate: str, fence: str) -> bool:
    return candidate[0] == fence[0] and len(candidate) >= len(fence)


def _fences(text: str) -> list[tuple[int, int, str]]:
    """(opening line, closing line or len(lines), fence) of each fenced block."""
    lines = text.split("\n")
    blocks: list[tuple[int, int, str]] = []
    start, fence = -1, ""
    for number, line in enumerate(lines):
        match = _FENCE.match(line)
        if start < 0:
            if match and not (match.group(1)[0] == "`" and "`" in line[match.end() :]):
                start, fence = number, match.group(1)
        elif match and _closes(match.group(1), fence) and not line[match.end() :].strip():
            blocks.append((start, number, fence))  # a closing fence has nothing after it
            start = -1
    if start >= 0:  # an unclosed block runs to the end of the message
        blocks.append((start, len(lines), fence))
    return blocks


def code_blocks(text: str) -> list[str]:
    """The text inside each fenced code block, in order."""
    lines = text.split("\n")
    return ["\n".join(lines[start + 1 : end]) for start, end, _ in _fences(text)]


def with_code_links(text: str, link: Callable[[int], str]) -> str:
    """The text with `link(n)` as a paragraph after the n-th code block (a Copy button per block)."""
    lines = text.split("\n")
    for number, (_, end, fence) in reversed(list(enumerate(_fences(text)))):
        if end == len(lines):  # close an unclosed block first, or the link would be code
            lines.append(fence)
        lines[end + 1 : end + 1] = ["", link(number), ""]
    return "\n".join(lines)
