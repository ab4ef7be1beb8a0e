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
            b'{"format": "hubside-conversation", "version": 2, "messages": [{"role": "user", "parent": 0}]}',
            "not before it",
        ),
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


def _shown(store: ChatStore, conversation: int) -> list[tuple[str, int, int]]:
    return [(m.content, m.version, m.versions) for m in store.messages(conversation)]


def test_regenerate_and_edit_keep_every_version_and_switch_between_them() -> None:
    store = ChatStore(_db())
    conversation = store.create_conversation()
    question = store.add_message(conversation, "user", "Name a colour.")
    first = store.start_reply(conversation)
    store.finish_reply(first, "Red.", "complete")
    second = store.start_reply(conversation, parent_id=question)  # Regenerate
    store.finish_reply(second, "Blue.", "complete")
    assert _shown(store, conversation) == [("Name a colour.", 1, 1), ("Blue.", 2, 2)]
    store.add_message(conversation, "user", "Another?")
    store.finish_reply(store.start_reply(conversation), "Green.", "complete")

    store.select_version(first)  # back to the first reply: what followed the second one is not shown
    assert _shown(store, conversation) == [("Name a colour.", 1, 1), ("Red.", 1, 2)]
    store.select_version(second)
    assert [m.content for m in store.messages(conversation)] == [
        "Name a colour.",
        "Blue.",
        "Another?",
        "Green.",
    ]

    edited = store.add_message(conversation, "user", "Name a fruit.", parent_id=None)  # Edit the first
    store.finish_reply(store.start_reply(conversation), "Apple.", "complete")
    assert _shown(store, conversation) == [("Name a fruit.", 2, 2), ("Apple.", 1, 1)]
    store.close()

    again = ChatStore(_db())  # versions and the choice between them survive a restart
    assert _shown(again, conversation) == [("Name a fruit.", 2, 2), ("Apple.", 1, 1)]
    again.select_version(question)
    assert [m.content for m in again.messages(conversation)] == [
        "Name a colour.",
        "Blue.",
        "Another?",
        "Green.",
    ]
    assert len(again.all_messages(conversation)) == 7
    assert edited in {m.id for m in again.all_messages(conversation)}


def test_deleting_a_message_keeps_what_followed_it() -> None:
    store = ChatStore(_db())
    conversation = store.create_conversation()
    store.add_message(conversation, "user", "one")
    middle = store.add_message(conversation, "assistant", "two")
    store.add_message(conversation, "user", "three")
    store.delete_message(middle)
    assert [m.content for m in store.messages(conversation)] == ["one", "three"]
    # a version that is not shown: deleting it must not bring its followers into view
    question = store.messages(conversation)[0].id
    hidden = store.add_message(conversation, "assistant", "old reply", parent_id=question)
    store.add_message(conversation, "user", "old follow-up")
    store.select_version(hidden)
    store.add_message(conversation, "assistant", "new reply", parent_id=question)
    store.delete_message(hidden)
    assert [m.content for m in store.messages(conversation)] == ["one", "new reply"]
    assert "old follow-up" in [m.content for m in store.all_messages(conversation)]


def test_a_version_1_database_is_backed_up_and_migrated() -> None:
    path = _db()
    with sqlite3.connect(path) as db:  # a database as Hubside 0.1 with schema 1 left it
        from app.chat.store import _SCHEMA_V1

        db.executescript(_SCHEMA_V1)
        db.execute("INSERT INTO conversations (id, title, created_at, updated_at) VALUES (1, 'old', 0, 0)")
        for number, (role, text) in enumerate([("user", "hi"), ("assistant", "hello"), ("user", "bye")]):
            db.execute(
                "INSERT INTO messages (conversation_id, role, content, created_at, updated_at)"
                " VALUES (1, ?, ?, ?, ?)",
                (role, text, number, number),
            )
        db.execute("PRAGMA user_version = 1")
    db.close()
    store = ChatStore(path)
    assert [m.content for m in store.messages(1)] == ["hi", "hello", "bye"]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    backup = path.with_name(f"{path.name}.before-v{SCHEMA_VERSION}")
    with sqlite3.connect(backup) as old:
        assert old.execute("PRAGMA user_version").fetchone()[0] == 1
        assert old.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 3
    store.add_message(1, "assistant", "see you")  # and it goes on as a normal chat
    assert [m.content for m in store.messages(1)][-1] == "see you"


def test_versions_round_trip_through_json_and_version_1_files_still_import() -> None:
    from app.chat.export import from_json, to_json, to_markdown

    store = ChatStore(_db())
    conversation = _sample(store)
    question = store.messages(conversation)[0].id
    store.finish_reply(store.start_reply(conversation, parent_id=question), "Paris.", "complete")
    store.select_version(store.all_messages(conversation)[1].id)  # the first reply is the one shown
    restored = store.restore(from_json(to_json(store.export(conversation))))
    assert _shown(store, restored) == _shown(store, conversation)
    assert [m.content for m in store.all_messages(restored)] == [
        m.content for m in store.all_messages(conversation)
    ]
    markdown = to_markdown(store.export(conversation))
    assert "**Paris**, of course." in markdown and "Paris.\n" not in markdown  # only what is shown

    old = from_json(
        b'{"format": "hubside-conversation", "version": 1, "messages": ['
        b'{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}'
    )
    assert [m.content for m in store.messages(store.restore(old))] == ["a", "b"]


def test_reasoning_is_stored_apart_migrated_into_old_databases_exported_and_imported() -> None:
    from app.chat.export import from_json, to_json, to_markdown
    from app.chat.store import _MIGRATIONS

    path = _db()
    with sqlite3.connect(path) as db:  # a version 2 database (before reasoning)
        db.executescript(_MIGRATIONS[0] + _MIGRATIONS[1])
        db.execute("INSERT INTO conversations (id, title, created_at, updated_at) VALUES (1, 'v2', 0, 0)")
        db.execute(
            "INSERT INTO messages (conversation_id, role, content, created_at, updated_at)"
            " VALUES (1, 'user', 'hi', 0, 0)"
        )
        db.execute("PRAGMA user_version = 2")
    db.close()
    store = ChatStore(path)
    assert [(m.content, m.reasoning) for m in store.messages(1)] == [("hi", "")]
    assert store.conversation(1).thinking is None
    reply = store.start_reply(1)
    store.checkpoint_reply(reply, "", "Let me think")
    assert store.messages(1)[-1].reasoning == "Let me think"  # a crash mid-thought keeps the thought
    store.finish_reply(
        reply, "Hello!", "complete", {"reasoning_ms": 12_300}, reasoning="Let me think. Greet."
    )
    store.set_thinking(1, False)
    store.close()

    again = ChatStore(path)
    assert (again.messages(1)[-1].reasoning, again.messages(1)[-1].content) == (
        "Let me think. Greet.",
        "Hello!",
    )
    saved = again.export(1)
    restored = again.restore(from_json(to_json(saved)))
    assert again.messages(restored)[-1].reasoning == "Let me think. Greet."
    assert again.conversation(restored).thinking is False
    markdown = to_markdown(saved)
    assert "> *Thought for 12 s (4 words)*\n>\n> Let me think. Greet.\n\nHello!" in markdown
