"""A reasoning model's thinking, told apart from its answer while the reply streams.

Two formats are in use: `<think>...</think>` before the answer (DeepSeek R1 and its distills, Qwen3, QwQ,
Phi-4-reasoning, SmolLM3, GLM, ...; some templates open the block themselves at the end of the prompt), and
gpt-oss's harmony channels (`<|channel|>analysis<|message|>...<|end|>` then
`<|start|>assistant<|channel|>final<|message|>...`). A splitter is fed the reply's text as it comes and
gives back (is_reasoning, text) parts, holding back only a tail that could start a marker.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import Enum

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
Part = tuple[bool, str]  # (is_reasoning, text)


class ReasoningFormat(Enum):
    THINK = "think"
    HARMONY = "harmony"


def reasoning_format(template: str | None) -> ReasoningFormat:
    """The format a model's replies use, judged by its template. A reply that opens with `<think>` is read
    as reasoning whatever the template, so THINK is also the default."""
    if template and "<|channel|>" in template and "<|message|>" in template:
        return ReasoningFormat.HARMONY
    return ReasoningFormat.THINK


def prompt_opens_thinking(prompt: str) -> bool:
    """Whether the template already opened the thinking block (Qwen3, QwQ, DeepSeek R1 0528, ...)."""
    tail = prompt.rstrip()
    return tail.endswith(THINK_OPEN)


def _held_back(text: str, markers: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could be the start of one of the markers."""
    keep = 0
    for marker in markers:
        for n in range(min(len(marker) - 1, len(text)), keep, -1):
            if text.endswith(marker[:n]):
                keep = n
                break
    return keep


class ThinkSplitter:
    def __init__(self, opened: bool) -> None:
        self.state = "reasoning" if opened else "start"
        self.pending = ""

    def feed(self, text: str) -> list[Part]:
        self.pending += text
        parts: list[Part] = []
        while True:
            if self.state == "start":
                head = self.pending.lstrip()
                if not head or (len(head) < len(THINK_OPEN) and THINK_OPEN.startswith(head)):
                    return parts
                if head.startswith(THINK_OPEN):
                    self.state, self.pending = "reasoning", head[len(THINK_OPEN) :]
                    continue
                self.state = "answer"
            if self.state == "reasoning":
                at = self.pending.find(THINK_CLOSE)
                if at >= 0:
                    parts.append((True, self.pending[:at]))
                    self.state, self.pending = "answer_start", self.pending[at + len(THINK_CLOSE) :]
                    continue
                keep = _held_back(self.pending, (THINK_CLOSE,))
                parts.append((True, self.pending[: len(self.pending) - keep]))
                self.pending = self.pending[len(self.pending) - keep :]
                return [p for p in parts if p[1]]
            if self.state == "answer_start":  # the blank lines between the block and the answer
                self.pending = self.pending.lstrip()
                if not self.pending:
                    return [p for p in parts if p[1]]
                self.state = "answer"
            parts.append((False, self.pending))
            self.pending = ""
            return [p for p in parts if p[1]]

    def flush(self) -> list[Part]:
        text, self.pending = self.pending, ""
        if not text or self.state == "answer_start":
            return []
        return [(self.state == "reasoning", text)]


_HARMONY_ENDS = ("<|end|>", "<|return|>", "<|call|>", "<|start|>", "<|channel|>")
_MESSAGE = "<|message|>"
_MAX_HEADER = 256  # a model that does not speak harmony after all: its text is the answer
# what a reply cut inside a header holds: `<|start|>assistant<|channel|>commentary to=functions.f
# <|constrain|>json`, or the start of it, with the start of a marker after it
_HEADER_ONLY = re.compile(
    r"(<\|start\|>\w*( to=[\w.]*)?)?(<\|channel\|>\w*( to=[\w.]*)?\s*(<\|constrain\|>\w*)?)?(<\|\w*\|?)?"
)


class HarmonySplitter:
    def __init__(self) -> None:
        self.in_header = True
        self.reasoning = False
        self.pending = ""

    def feed(self, text: str) -> list[Part]:
        self.pending += text
        parts: list[Part] = []
        while self.pending:
            if self.in_header:
                # Only the first _MAX_HEADER characters can hold the header, whether or not they hold a
                # "<|": past them the text is answer, and what waits here stays short.
                at = self.pending.find(_MESSAGE, 0, _MAX_HEADER + len(_MESSAGE))
                if at < 0:
                    if len(self.pending) < _MAX_HEADER + len(_MESSAGE):
                        break
                    parts.append((False, self.pending[:_MAX_HEADER]))
                    self.in_header, self.reasoning = False, False
                    self.pending = self.pending[_MAX_HEADER:]
                    continue
                header = self.pending[:at]
                channel = header.split("<|channel|>")[-1].split("<|")[0].split()
                self.reasoning = bool(channel) and channel[0] == "analysis"
                self.in_header, self.pending = False, self.pending[at + len(_MESSAGE) :]
                continue
            ends = [(self.pending.find(end), end) for end in _HARMONY_ENDS]
            found = [(at, end) for at, end in ends if at >= 0]
            if found:
                at, end = min(found)
                parts.append((self.reasoning, self.pending[:at]))
                skip = len(end) if end in ("<|end|>", "<|return|>", "<|call|>") else 0
                self.in_header, self.pending = True, self.pending[at + skip :]
                continue
            keep = _held_back(self.pending, _HARMONY_ENDS)
            parts.append((self.reasoning, self.pending[: len(self.pending) - keep]))
            self.pending = self.pending[len(self.pending) - keep :]
            break
        return [p for p in parts if p[1]]

    def flush(self) -> list[Part]:
        """What is left: a header the reply was cut in is dropped; any other text is kept (answer text
        where it never reached a channel)."""
        text, self.pending = self.pending, ""
        if not self.in_header:
            return [(self.reasoning, text)] if text else []
        return [] if _HEADER_ONLY.fullmatch(text) else [(False, text)]


def splitter_for(fmt: ReasoningFormat, prompt: str) -> ThinkSplitter | HarmonySplitter:
    if fmt is ReasoningFormat.HARMONY:
        return HarmonySplitter()
    return ThinkSplitter(opened=prompt_opens_thinking(prompt))


def split_reply(text: str, fmt: ReasoningFormat = ReasoningFormat.THINK, prompt: str = "") -> tuple[str, str]:
    """(reasoning, answer) of a whole reply: for text that did not stream through a splitter."""
    splitter = splitter_for(fmt, prompt)
    parts = splitter.feed(text) + splitter.flush()
    return _joined(parts, lambda r: r), _joined(parts, lambda r: not r)


def _joined(parts: list[Part], keep: Callable[[bool], bool]) -> str:
    return "".join(text for reasoning, text in parts if keep(reasoning)).strip()
