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


def test_a_database_another_process_holds_locked_is_never_moved_aside() -> None:
    """Locked (or a full disk) is not damaged: the user's chats stay where they are, and the message says
    what to do (it once moved a busy database aside and opened an empty list)."""
    from app.errors import AppError

    path = _db()
    store = ChatStore(path)
    store.create_conversation("Keep me")
    store.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the busy timeout
    try:
        with pytest.raises(AppError, match="cannot be opened now"):
            ChatStore(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(path.parent.glob("*unreadable*"))
    assert [c.title for c in ChatStore(path).conversations()] == ["Keep me"]


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
    assert [c.id for c in store.conversations(search="100%")] == [second]  # % and _ are no wildcards
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


def _found(store: ChatStore, search: str) -> list[int]:
    return [c.id for c in store.conversations(search=search)]


def _index_in_step(store: ChatStore) -> None:
    """FTS5's own check of the index against the rows (raises if they differ); no reply may be streaming."""
    for table in ("messages_fts", "titles_fts"):
        store.db.execute(f"INSERT INTO {table} ({table}, rank) VALUES ('integrity-check', 1)")


def test_search_finds_titles_text_prefixes_and_accents_in_listing_order() -> None:
    clock = iter(range(100, 200))
    store = ChatStore(_db(), clock=lambda: next(clock))
    assert store.indexed
    llama = store.create_conversation("Llama.cpp tuning")
    store.add_message(llama, "user", "Which n_batch suits a 4090?")
    cafe = store.create_conversation("Trip")
    store.add_message(cafe, "user", "A café in ZÜRICH near the Grossmünster, and flights from Rome")
    recipe = store.create_conversation("Rome recipes")
    store.add_message(recipe, "assistant", "Cacio e pepe: PECORINO, pepper, pasta.")
    store.set_pinned(cafe, True)

    assert _found(store, "tuning") == [llama]  # the title
    assert _found(store, "n_batch") == [llama]  # message text
    assert _found(store, "llam") == [llama]  # each word a prefix
    assert _found(store, "LLAMA.CPP") == [llama]
    assert _found(store, "pecorino") == _found(store, "Pecor") == [recipe]  # any case
    assert _found(store, "cafe zurich") == _found(store, "Café Zürich") == [cafe]  # any accents
    assert _found(store, "grossmunster") == [cafe]
    assert _found(store, "rome") == [cafe, recipe]  # pinned first, then the newest: the listing's order
    assert _found(store, "rome pasta") == [recipe]  # every word, in the title or in any message
    assert _found(store, "rome  recipes ") == [recipe]
    assert _found(store, "ome") == []  # a word's start, not anywhere inside it
    assert _found(store, "tuning pasta") == []
    assert [c.id for c in store.conversations()] == [cafe, recipe, llama]
    _index_in_step(store)


@pytest.mark.parametrize(
    "typed",
    ['"', '""', "'", 'pa"ris', '"paris', "NEAR(paris", "NEAR(paris pepper, 2)", "paris AND", "OR", "NOT",
     "-paris", "paris*", "*", "^paris", "content:paris", "title:paris", "{content title}: paris", "(",
     "paris)", "+", "\\", "a;DROP TABLE messages", "%", "_", "\x00", "paris\x00", "🦙", "東京"],
)  # fmt: skip
def test_search_text_with_fts_syntax_is_only_text(typed: str) -> None:
    store = ChatStore(_db())
    paris = store.create_conversation("Trip")
    store.add_message(paris, "user", "Is Paris near the sea? content, title, and NOT 100% sure")
    found = _found(store, typed)  # never raises
    assert found in ([], [paris])
    assert store.conversations(search="paris")  # nothing was harmed
    assert _found(store, '"Paris"') == [paris]  # quotes typed by the user are text
    assert _found(store, "paris NOT") == [paris]  # NOT is a word here, not an operator


def test_deleted_messages_and_conversations_are_no_longer_found() -> None:
    store = ChatStore(_db())
    _sample(store)  # "Capitals": Paris
    cooking = store.create_conversation("Cooking")
    egg = store.add_message(cooking, "user", "How long do I boil an egg?")
    store.add_message(cooking, "assistant", "Seven minutes.")
    store.delete_message(egg)
    assert _found(store, "egg") == []
    assert _found(store, "seven") == [cooking]
    saved = store.delete_conversation(cooking)
    assert _found(store, "seven") == _found(store, "cooking") == []
    restored = store.restore(saved)  # Undo brings it back to search too
    assert _found(store, "seven") == _found(store, "cooking") == [restored]
    _index_in_step(store)


def test_edited_renamed_and_continued_text_is_found_by_its_new_words() -> None:
    store = ChatStore(_db())
    chat = store.create_conversation("Colours")
    store.add_message(chat, "user", "Name a colour.")
    reply = store.start_reply(chat)
    store.checkpoint_reply(reply, "Vermilion, or")
    assert _found(store, "vermilion") == []  # a reply enters the index when it stops streaming
    store.finish_reply(reply, "Vermilion.", "complete")
    assert _found(store, "vermilion") == [chat]

    store.add_message(chat, "user", "Name a turquoise fruit.", parent_id=None)  # Edit: a new version
    assert _found(store, "turquoise") == [chat]
    assert _found(store, "colour") == [chat]  # the old version is kept, so still found

    store.resume_reply(reply)  # Continue, then the text is replaced as it finishes
    store.finish_reply(reply, "Cerulean.", "complete")
    assert _found(store, "cerulean") == [chat]
    assert _found(store, "vermilion") == []

    store.rename_conversation(chat, "Paints")
    assert _found(store, "paints") == [chat]
    assert _found(store, "colours") == []
    store.checkpoint_reply(reply, "ignored: not streaming")
    _index_in_step(store)


def test_a_reply_left_streaming_is_found_once_interrupted() -> None:
    store = ChatStore(_db())
    chat = store.create_conversation()
    reply = store.start_reply(chat)
    store.checkpoint_reply(reply, "half an answer about marmalade")
    store.close()  # as if the app died here
    again = ChatStore(_db())
    assert again.interrupted_on_open == 1
    assert _found(again, "marmalade") == [chat]
    _index_in_step(again)


def test_a_version_3_database_upgrades_with_its_backup_and_its_old_messages_are_found() -> None:
    from app.chat.store import _MIGRATIONS

    path = _db()
    with sqlite3.connect(path) as db:  # a database as Hubside left it at schema 3: no index
        db.executescript(_MIGRATIONS[0] + _MIGRATIONS[1] + _MIGRATIONS[2])
        for title in ("Ünïcode", "other"):
            db.execute("INSERT INTO conversations (title, created_at, updated_at) VALUES (?, 0, 0)", (title,))
        for content, state in (("an old question on sourdough", "complete"), ("a reply cut", "streaming")):
            db.execute(
                "INSERT INTO messages (conversation_id, role, content, state, created_at, updated_at)"
                " VALUES (1, 'user', ?, ?, 0, 0)",
                (content, state),
            )
        db.execute("PRAGMA user_version = 3")
    db.close()

    store = ChatStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    backup = path.with_name(f"{path.name}.before-v4")
    with sqlite3.connect(backup) as old:
        assert old.execute("PRAGMA user_version").fetchone()[0] == 3
        assert old.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 2
    old.close()
    assert _found(store, "sourdough") == _found(store, "unicode") == [1]
    assert _found(store, "cut") == [1]  # the interrupted reply, too
    store.add_message(2, "user", "a new question on rye")
    assert _found(store, "rye") == [2]
    _index_in_step(store)
    store.close()
    assert _found(ChatStore(path), "sourdough") == [1]  # built once, kept


def test_without_fts5_search_falls_back_to_like_and_the_index_catches_up_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import app.chat.store

    path = _db()
    store = ChatStore(path)
    first = store.create_conversation("Indexed")
    store.add_message(first, "user", "written with the index")
    store.close()

    monkeypatch.setattr(app.chat.store, "_has_fts5", lambda db: False)  # as on a sqlite built without FTS5
    plain = ChatStore(path)
    assert not plain.indexed
    triggers = plain.db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0]
    assert triggers == 0  # so that no write needs FTS5
    second = plain.create_conversation("Plain")
    plain.add_message(second, "user", "written without it")
    plain.delete_message(plain.messages(first)[0].id)
    assert _found(plain, "ritten") == [second]  # LIKE: anywhere in the text, as typed
    assert _found(plain, "100%") == []
    plain.close()

    monkeypatch.undo()
    again = ChatStore(path)
    assert again.indexed
    assert _found(again, "written") == [second]  # rebuilt from the rows: nothing stale, nothing missing
    _index_in_step(again)
