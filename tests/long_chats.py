"""Big chat databases for window tests and benchmarks: a conversation of many messages, many conversations."""

from __future__ import annotations

import time

from app.chat.store import ChatStore, Conversation, ConversationExport, Message


def long_conversation(store: ChatStore, count: int, words: int = 3, title: str = "Long chat") -> int:
    """A saved chat of `count` messages, user and assistant in turn (one transaction)."""
    now = time.time()
    messages = tuple(
        Message(
            id=n + 1,
            conversation_id=0,
            role="user" if n % 2 == 0 else "assistant",
            content=f"Message {n} " + " ".join(["word"] * words),
            state="complete",
            stats={},
            created_at=now,
            updated_at=now,
            parent_id=n or None,
        )
        for n in range(count)
    )
    return store.restore(ConversationExport(Conversation(0, title, "", "", False, now, now), messages))


TOPICS = ("llama", "gemma", "qwen", "mistral", "phi", "python", "rust", "garden", "café", "travel")


def many_conversations(store: ChatStore, count: int, messages_each: int = 6) -> None:
    """`count` short chats with titles and texts on a few topics (so that a search finds some)."""
    for n in range(count):
        topic = TOPICS[n % len(TOPICS)]
        long_conversation(store, messages_each, words=8, title=f"Chat {n} about {topic}")
