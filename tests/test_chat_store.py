"""The chat database: durable writes, crash recovery, corrupt and newer files handled without loss."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.chat.store import SCHEMA_VERSION, ChatStore, DatabaseTooNew
from app.paths import AppPaths

ROOT = Path(__file__).resolve().parent.parent


def _db() -> Path:
    return AppPaths.from_env().ensure().database_file


def test_messages_round_trip_through_a_reopen() -> None:
    store = ChatStore(_db())
    conversation = store.create_conversation("Capitals", system_prompt="Be brief.")
    store.add_message(conversation, "user", "What is the capital of France?")
    reply = store.start_reply(conversation)
    store.checkpoint_reply(reply, "The capital")
    store.finish_reply(reply, "The capital of France is Paris.", "complete", {"tokens_per_s": 90.5})
    store.close()

    again = ChatStore(_db())
    assert again.interrupted_on_open == 0
    (saved,) = again.conversations()
    assert (saved.title, saved.system_prompt) == ("Capitals", "Be brief.")
    messages = again.messages(conversation)
    assert [(m.role, m.content, m.state) for m in messages] == [
        ("user", "What is the capital of France?", "complete"),
        ("assistant", "The capital of France is Paris.", "complete"),
    ]
    assert messages[1].stats == {"tokens_per_s": 90.5}
    assert again.integrity_check() == "ok"
    journal = again.db.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"


def test_a_reply_left_streaming_is_kept_and_marked_interrupted() -> None:
    store = ChatStore(_db())
    conversation = store.create_conversation()
    reply = store.start_reply(conversation)
    store.checkpoint_reply(reply, "half an ans")
    store.close()  # as if the app died here
    again = ChatStore(_db())
    assert again.interrupted_on_open == 1
    (message,) = again.messages(conversation)
    assert (message.content, message.state) == ("half an ans", "interrupted")


def test_an_unreadable_database_is_moved_aside_not_deleted() -> None:
    path = _db()
    path.write_bytes(b"this is not a database" * 100)
    store = ChatStore(path)
    assert store.moved_aside is not None
    assert store.moved_aside.read_bytes() == b"this is not a database" * 100
    assert store.conversations() == []
    store.create_conversation("fresh start")
    assert len(ChatStore(path).conversations()) == 1


def test_a_database_from_a_newer_hubside_is_refused_untouched() -> None:
    path = _db()
    ChatStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(DatabaseTooNew, match="newer Hubside"):
        ChatStore(path)
    assert path.read_bytes() == before


def test_sigkill_while_streaming_loses_nothing_committed() -> None:
    """100 kills at random moments of a process streaming a reply into the database."""
    path = _db()
    rng = random.Random(20261125)
    for _ in range(100):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.chat_crash_child", str(path)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert child.stdout is not None
        lines = []
        wanted = rng.randint(0, 40)  # 0: killed while it opens the database
        while len(lines) < wanted and (line := child.stdout.readline()):
            lines.append(line.split())
        child.send_signal(signal.SIGKILL)
        lines += [line.split() for line in child.stdout.read().splitlines() if line.strip()]
        child.wait()
        assert child.returncode == -signal.SIGKILL

        store = ChatStore(path)
        assert store.integrity_check() == "ok"
        committed = {(kind, int(message_id)): int(length) for kind, message_id, length in lines}
        for (kind, message_id), length in committed.items():
            row = store.db.execute(
                "SELECT content, state FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            assert row is not None, (kind, message_id)
            assert len(row["content"]) >= length  # at least what was reported written, maybe one more
            if kind == "reply":
                assert row["state"] == "interrupted"
        store.close()


def _sample(store: ChatStore) -> int:
    conversation = store.create_conversation("Capitals", system_prompt="Be brief.")
    store.add_message(conversation, "user", "What is the capital of France?")
    reply = store.start_reply(conversation)
    store.finish_reply(reply, "**Paris**, of course.", "complete", {"tokens_per_s": 90.5})
    return conversation


def test_rename_pin_search_delete_and_undo() -> None:
    store = ChatStore(_db())
    first = _sample(store)
    second = store.create_conversation("Cooking")
    store.add_message(second, "user", "How long do I boil an egg? 100% sure_please")
    store.rename_conversation(first, "  European capitals ")
    store.set_pinned(first, True)
    assert [c.title for c in store.conversations()] == ["European capitals", "Cooking"]
    assert [c.id for c in store.conversations(search="paris")] == [first]  # message text, any case
    assert [c.id for c in store.conversations(search="capitals")] == [first]  # title
    assert [c.id for c in store.conversations(search="100%")] == [second]  # LIKE wildcards are literal
    assert store.conversations(search="1_0") == []
    saved = store.delete_conversation(first)
    assert [c.id for c in store.conversations()] == [second]
    assert (
        store.db.execute("SELECT COUNT(*) FROM messages WHERE conversation_id = ?", (first,)).fetchone()[0]
        == 0
    )
    restored = store.restore(saved)  # Undo
    assert [m.content for m in store.messages(restored)] == [m.content for m in saved.messages]
    assert store.conversation(restored).pinned


def test_export_json_round_trips_and_markdown_reads_well() -> None:
    from app.chat.export import from_json, to_json, to_markdown

    store = ChatStore(_db())
    conversation = _sample(store)
    exported = store.export(conversation)
    imported_id = store.restore(from_json(to_json(exported)))
    again = store.export(imported_id)
    assert again.conversation.title == "Capitals" and again.conversation.system_prompt == "Be brief."
    assert [(m.role, m.content, m.state, m.stats) for m in again.messages] == [
        (m.role, m.content, m.state, m.stats) for m in exported.messages
    ]
    markdown = to_markdown(exported)
    assert markdown.startswith("# Capitals\n")
    assert "## You\n\nWhat is the capital of France?" in markdown
    assert "## Assistant\n\n**Paris**, of course." in markdown


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "format field is missing"),
        (b'{"format": "hubside-conversation", "version": 99, "messages": []}', "newer"),
        (b'{"format": "hubside-conversation", "version": 1}', "no list of messages"),
        (b'{"format": "hubside-conversation", "version": 1, "messages": [{"role": "root"}]}', "valid role"),
        (
            b'{"format": "hubside-conversation", "version": 1, "messages": [{"role": "user", "content": 5}]}',
            "content is not text",
        ),
    ],
)
def test_import_rejects_bad_files_clearly(data: bytes, problem: str) -> None:
    from app.chat.export import from_json
    from app.errors import AppError

    with pytest.raises(AppError) as raised:
        from_json(data)
    assert raised.value.user_message.startswith("This is not a Hubside conversation file: ")
    assert problem in raised.value.user_message
