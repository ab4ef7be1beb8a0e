"""The conversation on screen and the reply streaming into it, without Qt.

The active path of versions is read when a conversation opens (all of it as ids, its newest messages whole)
and then kept in step with every change made through here, so a send in a chat of 10,000 messages reads one
row, not 10,000. The user's message is
saved before anything is sent; the reply is saved as it streams (at most CHECKPOINT_INTERVAL_S of text at
risk) and finalized with its state and numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from app.chat.reply import ReplyDraft
from app.chat.store import ChatStore, Message, PathStep
from app.runtime.protocol import (
    TURN_OVERHEAD_CHARS,
    ChatMessage,
    LoadedModel,
    ReplyStats,
    sendable_chars,
)

CHECKPOINT_INTERVAL_S = 1.0
READ_AT_FIRST = 200  # messages of a conversation read when it opens; the rest as they are needed
READ_MORE = 200
TITLE_LENGTH = 60
REMOTE_ARCH = "remote"  # app.remote.engine's LoadedModel.arch (a sibling layer: not imported)
NETWORK_TIMING = "timed over the network"
# finish reason -> state; "cut": a remote stream broke off mid-reply (its text is kept)
FINAL_STATES = {"stop": "complete", "length": "complete", "stopped": "stopped", "cut": "interrupted"}


class ActiveChat:
    def __init__(self, store: ChatStore) -> None:
        self.store = store
        self.conversation_id: int | None = None
        self.shown: list[Message] = []  # the newest part of the active path, oldest first
        self.unread: list[PathStep] = []  # the points of the path before it, not read yet
        self.reply_id: int | None = None  # the reply streaming now
        self.draft = ReplyDraft()
        self.last_checkpoint = 0.0

    # --- which conversation ------------------------------------------------------------------------
    def open(self, conversation_id: int | None) -> None:
        self.conversation_id = conversation_id
        self.reload()

    def reload(self) -> None:
        """Read the active path again (after a change of versions, an edit, a delete): all of it as ids,
        its newest READ_AT_FIRST messages whole."""
        cid = self.conversation_id
        steps = self.store.active_steps(cid) if cid is not None else []
        self.unread, self.shown = steps, []
        self.read_earlier(READ_AT_FIRST)

    def read_earlier(self, count: int) -> list[Message]:
        """Read up to `count` more of the older messages (the user scrolled back to them); returns them."""
        if count <= 0:
            return []
        steps, self.unread = self.unread[-count:], self.unread[:-count]
        older = self.store.path_messages(steps)
        self.shown[:0] = older
        return older

    def message(self, message_id: int) -> Message | None:
        return next((m for m in reversed(self.shown) if m.id == message_id), None)

    # --- changes -----------------------------------------------------------------------------------
    def add_user_message(
        self, text: str, system_prompt: str, model_path: str, thinking: bool | None, edited: Message | None
    ) -> None:
        """Save the user's message (a new conversation for the first one; a new version of `edited`)."""
        if self.conversation_id is None:
            title = " ".join(text.split())[:TITLE_LENGTH]
            self.conversation_id = self.store.create_conversation(title, system_prompt, model_path)
            if thinking is not None:
                self.store.set_thinking(self.conversation_id, thinking)
        if edited is not None:
            self.store.add_message(self.conversation_id, "user", text, parent_id=edited.parent_id)
            self.reload()  # a new version: the path after it changes
            return
        parent = self.shown[-1].id if self.shown else None
        message_id = self.store.add_message(self.conversation_id, "user", text, parent_id=parent)
        self.shown.append(self.store.message(message_id))

    def start_reply(self, now: float, regenerating: Message | None = None) -> int:
        """A saved, empty reply after the last message (or a new version of `regenerating`)."""
        assert self.conversation_id is not None
        if regenerating is not None:
            self.reply_id = self.store.start_reply(self.conversation_id, parent_id=regenerating.parent_id)
            self.reload()
        else:
            parent = self.shown[-1].id if self.shown else None
            self.reply_id = self.store.start_reply(self.conversation_id, parent_id=parent)
            self.shown.append(self.store.message(self.reply_id))
        self._begin(now)
        return self.reply_id

    def continue_reply(self, message: Message, now: float) -> None:
        """Stream into a reply that was cut, adding to what it has. A reply stopped while it thought, before
        its answer began, starts again (its thinking goes to no template as a start: it would be thought
        twice)."""
        self.store.resume_reply(message.id)
        self.reply_id = message.id
        self._begin(now)
        if message.reasoning.strip() and not message.content.strip():
            self.draft = ReplyDraft()

    def _begin(self, now: float) -> None:
        last = self.shown[-1]
        self.draft = ReplyDraft.resumed(last.content, last.reasoning)
        self.last_checkpoint = now

    def turns(self, system_prompt: str, n_ctx: int) -> tuple[tuple[ChatMessage, ...], int]:
        """What goes to the model for the reply: the system prompt, then the newest turns before the reply
        that could fit the context by their length (the engine picks the exact window), then the reply
        itself if it has text (continued); and how many older messages were left out."""
        budget, used = sendable_chars(n_ctx), 0
        kept: list[ChatMessage] = []  # newest first
        walked = 0
        for message in self._newest_first():
            if kept and used + len(message.content) > budget:
                break
            walked += 1
            if message.content.strip() and message.state != "error":
                kept.append(ChatMessage(message.role, message.content, message.reasoning))
                used += len(message.content) + TURN_OVERHEAD_CHARS
        system = [ChatMessage("system", system_prompt.strip())] if system_prompt.strip() else []
        return tuple(system + kept[::-1]), len(self.shown) + len(self.unread) - walked

    def _newest_first(self) -> Iterator[Message]:
        """The conversation from its end: what was read, then the unread older part, READ_MORE at a time
        (read for this request only)."""
        yield from reversed(self.shown)
        end = len(self.unread)
        while end > 0:
            start = max(0, end - READ_MORE)
            yield from reversed(self.store.path_messages(self.unread[start:end]))
            end = start

    def add_piece(self, text: str, reasoning: bool, now: float) -> None:
        self.draft.add(text, reasoning, now)
        if self.reply_id is not None and now - self.last_checkpoint >= CHECKPOINT_INTERVAL_S:
            self.store.checkpoint_reply(self.reply_id, self.draft.text, self.draft.reasoning_text)
            self.last_checkpoint = now

    def finish_reply(self, state: str, stats: dict[str, Any], now: float) -> Message | None:
        """Save the reply as it ends (complete, stopped, interrupted, error); returns it as stored."""
        if self.reply_id is None:
            return None
        reasoning = self.draft.reasoning_text.strip()
        if reasoning and "reasoning_ms" not in stats and self.draft.thinking_since is not None:
            until = self.draft.thinking_until or now  # stopped while it thought
            stats = {**stats, "reasoning_ms": round((until - self.draft.thinking_since) * 1000)}
        self.store.finish_reply(self.reply_id, self.draft.text, state, stats, reasoning)
        saved: Message | None = None
        if self.shown and self.shown[-1].id == self.reply_id:
            last = self.shown[-1]  # read again, keeping the version numbers the active path gave it
            saved = replace(self.store.message(self.reply_id), version=last.version, versions=last.versions)
            self.shown[-1] = saved
        self.reply_id = None
        self.draft = ReplyDraft()
        return saved


def stats_dict(stats: ReplyStats, model: LoadedModel | None, preset: str) -> dict[str, Any]:
    """A reply's numbers as they are stored with it and shown under it."""
    return {
        "model": model.name if model else "",
        **(_remote_fields(model) if model is not None and model.arch == REMOTE_ARCH else {}),
        "preset": preset,
        "finish_reason": stats.finish_reason,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "ttft_ms": round(stats.ttft_ms, 1),
        "tokens_per_s": round(stats.tokens_per_s, 1),
        "prompt_tokens_per_s": round(stats.prompt_tokens_per_s, 1),
        **({"reasoning_ms": round(stats.reasoning_ms)} if stats.reasoning_ms else {}),
    }


def _remote_fields(model: LoadedModel) -> dict[str, Any]:
    """A reply from a model served elsewhere records which endpoint answered (its path is
    remote:NAME/MODEL_ID, a Path folding '//'), and that its timings were taken here, over the network."""
    endpoint = str(model.path).removeprefix("remote:").partition("/")[0]  # the model id: model.name
    return {"model": f"remote:{endpoint}/{model.name}", "endpoint": endpoint, "timing": NETWORK_TIMING}
