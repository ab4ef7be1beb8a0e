"""A reply while it streams: its answer and its reasoning apart, and how long the model thought."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.chat.export import thought_label


@dataclass
class ReplyDraft:
    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    thinking_since: float | None = None  # when the first reasoning text came
    thinking_until: float | None = None  # when the first answer text came after it
    _thought: str | None = field(default=None, repr=False)  # the label once thinking ended

    @classmethod
    def resumed(cls, text: str, reasoning: str) -> ReplyDraft:
        """A reply continued (Continue): it goes on from what it had."""
        return cls([text] if text else [], [reasoning] if reasoning else [])

    def add(self, text: str, is_reasoning: bool, now: float) -> None:
        if is_reasoning:
            self.reasoning.append(text)
            self._thought = None
            if self.thinking_since is None:
                self.thinking_since = now
        else:
            self.answer.append(text)
            if self.thinking_since is not None and self.thinking_until is None:
                self.thinking_until = now

    @property
    def text(self) -> str:
        return "".join(self.answer)

    @property
    def reasoning_text(self) -> str:
        return "".join(self.reasoning)

    def thinking(self) -> bool:
        """The model is thinking now: reasoning came and no answer yet."""
        return self.thinking_since is not None and self.thinking_until is None

    def label(self, now: float) -> str:
        """'Thinking… 4 s' while it thinks, then 'Thought for 12 s (340 words)'."""
        if self.thinking_since is None:
            return ""
        if self.thinking_until is None:
            return f"Thinking… {now - self.thinking_since:.0f} s"
        if self._thought is None:  # once: it is redrawn ten times a second while the answer streams
            self._thought = thought_label(
                self.reasoning_text, (self.thinking_until - self.thinking_since) * 1000
            )
        return self._thought
