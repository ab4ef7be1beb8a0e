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
