"""Conversations and messages in SQLite: nothing a user wrote or a model answered is ever lost.

WAL with synchronous=FULL and one transaction per write: a message is on disk when the call returns. The
user's message is stored before generation starts; a reply is created as 'streaming', checkpointed while it
streams and finalized when it ends. Regenerating a reply or editing a message adds a new version beside the
old one (a message's `parent_id` is the message it follows; one child per branch point is `active`), so no
earlier text is lost and the user can switch back. Opening the database marks any reply still 'streaming'
(the app died mid-reply) as 'interrupted', keeping its text. A database that cannot be read is moved
aside, never deleted; one written by a newer Hubside is refused rather than downgraded. Search over titles
and message text uses an FTS5 index kept in step by triggers, or LIKE where this sqlite has no FTS5.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.errors import AppError, ErrorKind
from app.storage import DamagedDatabase, is_damaged, move_aside, open_database

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
ROLES = ("system", "user", "assistant")
STATES = ("complete", "streaming", "stopped", "interrupted", "error")

_SCHEMA_V1 = """
CREATE TABLE conversations (
    id            INTEGER PRIMARY KEY,
    title         TEXT    NOT NULL DEFAULT '',
    system_prompt TEXT    NOT NULL DEFAULT '',
    model_path    TEXT    NOT NULL DEFAULT '',
    pinned        INTEGER NOT NULL DEFAULT 0,
    created_at    REAL    NOT NULL,
    updated_at    REAL    NOT NULL
);
CREATE TABLE messages (
    id              INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    role            TEXT    NOT NULL CHECK (role IN ('system', 'user', 'assistant')),
    content         TEXT    NOT NULL DEFAULT '',
    state           TEXT    NOT NULL DEFAULT 'complete'
                    CHECK (state IN ('complete', 'streaming', 'stopped', 'interrupted', 'error')),
    stats_json      TEXT    NOT NULL DEFAULT '{}',
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL
);
CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
"""

# Versions: each message follows its parent; among messages with the same parent the active one is shown.
# Existing chats become a straight line, each message following the one before it.
_V1_TO_V2 = """
ALTER TABLE messages ADD COLUMN parent_id INTEGER REFERENCES messages(id) ON DELETE SET NULL;
ALTER TABLE messages ADD COLUMN active INTEGER NOT NULL DEFAULT 1;
UPDATE messages SET parent_id = (
    SELECT MAX(p.id) FROM messages p WHERE p.conversation_id = messages.conversation_id AND p.id < messages.id
);
CREATE INDEX messages_by_parent ON messages(parent_id);
"""

# A reasoning model's thinking is kept apart from its answer; a chat may switch a template's thinking on or
# off (NULL: the template's default).
_V2_TO_V3 = """
ALTER TABLE messages ADD COLUMN reasoning TEXT NOT NULL DEFAULT '';
ALTER TABLE conversations ADD COLUMN thinking INTEGER;
"""

# v4: full-text search over titles and message text (not the thinking). External-content FTS5 tables hold
# only the index, not a second copy of the text; triggers keep them in step; words are indexed without case
# or accents. The index is derived data, built on open rather than by a migration step (_sync_search_index):
# from the rows where this sqlite has FTS5 and the triggers are missing (an upgrade from v3, or a file last
# opened without FTS5); where it has no FTS5 its triggers are dropped, so that no write ever needs FTS5.
_TOKENIZE = "tokenize = 'unicode61 remove_diacritics 2'"
_SEARCH_INDEX = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS messages_fts USING fts5("
    f"content, content = 'messages', content_rowid = 'id', {_TOKENIZE})",
    f"CREATE VIRTUAL TABLE IF NOT EXISTS titles_fts USING fts5("
    f"title, content = 'conversations', content_rowid = 'id', {_TOKENIZE})",
    # A reply enters the index when it stops streaming: a checkpoint (the whole text so far, every second)
    # costs no index work, and a long reply is indexed once, not once a second. So the index holds exactly
    # the messages not 'streaming'; opening the database ends any such reply as 'interrupted', indexing it.
    "CREATE TRIGGER IF NOT EXISTS messages_fts_insert AFTER INSERT ON messages WHEN new.state != 'streaming'"
    " BEGIN INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content); END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_delete AFTER DELETE ON messages WHEN old.state != 'streaming'"
    " BEGIN INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);"
    " END",
    "CREATE TRIGGER IF NOT EXISTS messages_fts_update AFTER UPDATE OF content, state ON messages"
    " WHEN old.state != 'streaming' OR new.state != 'streaming' BEGIN"
    " INSERT INTO messages_fts (messages_fts, rowid, content)"
    " SELECT 'delete', old.id, old.content WHERE old.state != 'streaming';"
    " INSERT INTO messages_fts (rowid, content) SELECT new.id, new.content WHERE new.state != 'streaming';"
    " END",
    "CREATE TRIGGER IF NOT EXISTS titles_fts_insert AFTER INSERT ON conversations BEGIN"
    " INSERT INTO titles_fts (rowid, title) VALUES (new.id, new.title); END",
    "CREATE TRIGGER IF NOT EXISTS titles_fts_delete AFTER DELETE ON conversations BEGIN"
    " INSERT INTO titles_fts (titles_fts, rowid, title) VALUES ('delete', old.id, old.title); END",
    "CREATE TRIGGER IF NOT EXISTS titles_fts_update AFTER UPDATE OF title ON conversations"
    " WHEN old.title IS NOT new.title BEGIN"
    " INSERT INTO titles_fts (titles_fts, rowid, title) VALUES ('delete', old.id, old.title);"
    " INSERT INTO titles_fts (rowid, title) VALUES (new.id, new.title); END",
    "INSERT INTO messages_fts (messages_fts) VALUES ('delete-all')",
    "INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages WHERE state != 'streaming'",
    "INSERT INTO titles_fts (titles_fts) VALUES ('rebuild')",
)
_SEARCH_TRIGGERS = tuple(f"{table}_fts_{event}" for table in ("messages", "titles") for event in
                         ("insert", "delete", "update"))  # fmt: skip
_MAX_SEARCH_WORDS = 16  # a pasted paragraph still answers at once; its first words narrow it enough
# A conversation has a word (an FTS5 query) where its title or one of its messages, any version, has it.
_HAS_WORD = (
    "(id IN (SELECT rowid FROM titles_fts WHERE titles_fts MATCH ?)"
    " OR id IN (SELECT conversation_id FROM messages"
    " WHERE id IN (SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?)))"
)

# user_version N -> the SQL that brings a version-N database to N+1 (0 is an empty file).
_MIGRATIONS: dict[int, str] = {0: _SCHEMA_V1, 1: _V1_TO_V2, 2: _V2_TO_V3, 3: ""}  # v4: see _SEARCH_INDEX
_IDS_PER_QUERY = 500  # SQLite allows at least 999 bound values a statement
END = -1  # add_message's default parent: the last message of the conversation as shown


def _unavailable(path: Path, exc: sqlite3.DatabaseError) -> AppError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_FULL:
        return AppError(
            ErrorKind.DISK_FULL, "The disk is full: your chats cannot be opened until there is room."
        )
    return AppError(
        ErrorKind.SETTINGS,
        f"Your chats cannot be opened now ({exc}); nothing was changed. Close other programs using them, "
        "then start Hubside again.",
        str(path),
    )


class DatabaseTooNew(AppError):
    def __init__(self, path: Path, version: int) -> None:
        super().__init__(
            ErrorKind.SETTINGS,
            f"Your chats were saved by a newer Hubside (database version {version}); this version "
            f"understands up to {SCHEMA_VERSION}. Update Hubside to open them. Nothing was changed.",
            str(path),
        )


@dataclass(frozen=True)
class Conversation:
    id: int
    title: str
    system_prompt: str
    model_path: str
    pinned: bool
    created_at: float
    updated_at: float
    thinking: bool | None = None  # the template's thinking switch for this chat (None: its default)


@dataclass(frozen=True)
class Message:
    id: int
    conversation_id: int
    role: str
    content: str
    state: str
    stats: dict[str, Any]
    created_at: float
    updated_at: float
    parent_id: int | None = None
    active: bool = True
    version: int = 1  # 1-based place among the versions at this point of the chat (set by active_path)
    versions: int = 1
    reasoning: str = ""  # a reasoning model's thinking before this reply


@dataclass(frozen=True)
class ConversationExport:
    conversation: Conversation
    messages: tuple[Message, ...]  # every version, in id order; `active_path` gives the chat as shown


@dataclass(frozen=True)
class PathStep:
    """One point of the conversation as shown: the message there and its place among the versions."""

    id: int
    version: int = 1
    versions: int = 1


def path_steps(rows: Iterable[tuple[int, int | None, Any]]) -> list[PathStep]:
    """The conversation as shown, from (id, parent id, active) of every message: from the first message,
    follow the active version at each point (the newest if none is marked)."""
    children: dict[int | None, list[tuple[int, bool]]] = {}
    count = 0
    for message_id, parent_id, active in sorted(rows):
        children.setdefault(parent_id, []).append((message_id, bool(active)))
        count += 1
    path: list[PathStep] = []
    parent: int | None = None
    while siblings := children.get(parent):
        if len(siblings) == 1:  # most points of a chat
            path.append(PathStep(siblings[0][0]))
        else:
            index = next((i for i in reversed(range(len(siblings))) if siblings[i][1]), len(siblings) - 1)
            path.append(PathStep(siblings[index][0], index + 1, len(siblings)))
        parent = path[-1].id
        if len(path) > count:  # a cycle could only come from a damaged file; stop, do not hang
            break
    return path


def _numbered(message: Message, step: PathStep) -> Message:
    return message if step.versions == 1 else replace(message, version=step.version, versions=step.versions)


def active_path(messages: Sequence[Message]) -> list[Message]:
    """The conversation as shown, of these messages (every version), each numbered among its siblings."""
    by_id = {m.id: m for m in messages}
    return [
        _numbered(by_id[step.id], step)
        for step in path_steps((m.id, m.parent_id, m.active) for m in messages)
    ]


class ChatStore:
    """The one owner of the chat database. Use it from one thread."""

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self.moved_aside: Path | None = None  # set when an unreadable database was moved out of the way
        self.interrupted_on_open = 0  # replies found 'streaming' (the app died mid-reply)
        self.indexed = False  # search uses the FTS5 index (False: this sqlite has no FTS5; LIKE instead)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):  # locked, a full disk, an I/O error: the chats are fine, keep them
                raise _unavailable(path, exc) from exc
            self.moved_aside = self._move_aside(exc)  # not a database, or damaged beyond reading
            self.db = self._open()

    # --- opening ---------------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        db = open_database(self.path)
        try:
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise DamagedDatabase("quick_check failed")
            self._migrate(db)
            with db:
                db.execute("BEGIN IMMEDIATE")
                self.indexed = _sync_search_index(db)
                cursor = db.execute("UPDATE messages SET state = 'interrupted' WHERE state = 'streaming'")
                self.interrupted_on_open = cursor.rowcount
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise DatabaseTooNew(self.path, version)
        if version == SCHEMA_VERSION:
            return
        if version > 0:  # a copy of the old database first, so a failed migration loses nothing
            backup = self.path.with_name(f"{self.path.name}.before-v{SCHEMA_VERSION}")
            with sqlite3.connect(backup) as copy:
                db.backup(copy)
        db.execute("BEGIN IMMEDIATE")
        try:
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
                version += 1
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _move_aside(self, reason: Exception) -> Path:
        aside = move_aside(self.path)
        log.error("chat database unreadable (%s); moved to %s", reason, aside)
        return aside

    def close(self) -> None:
        self.db.close()

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])

    # --- writes (each one transaction, on disk when the call returns) ----------------------------
    def _write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db.execute(sql, params)

    def create_conversation(self, title: str = "", system_prompt: str = "", model_path: str = "") -> int:
        now = self.clock()
        cursor = self._write(
            "INSERT INTO conversations (title, system_prompt, model_path, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (title, system_prompt, model_path, now, now),
        )
        return int(cursor.lastrowid or 0)

    def add_message(
        self,
        conversation_id: int,
        role: str,
        content: str,
        state: str = "complete",
        parent_id: int | None = END,
        reasoning: str = "",
    ) -> int:
        """Add a message after `parent_id` (None: as a first message; END: after the last one shown). It
        becomes the active version there; the versions beside it stay, inactive."""
        now = self.clock()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if parent_id == END:
                path = self.active_steps(conversation_id)  # ids only, not every message whole
                parent_id = path[-1].id if path else None
            self.db.execute(
                "UPDATE messages SET active = 0 WHERE conversation_id = ? AND parent_id IS ?",
                (conversation_id, parent_id),
            )
            cursor = self.db.execute(
                "INSERT INTO messages (conversation_id, role, content, state, parent_id, active, created_at,"
                " updated_at, reasoning) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)",
                (conversation_id, role, content, state, parent_id, now, now, reasoning),
            )
            self.db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, conversation_id))
        return int(cursor.lastrowid or 0)

    def start_reply(self, conversation_id: int, parent_id: int | None = END) -> int:
        """An empty assistant message in state 'streaming', to be checkpointed and finished. With the
        parent of an earlier reply it is a regenerated version of that reply."""
        return self.add_message(conversation_id, "assistant", "", "streaming", parent_id)

    def resume_reply(self, message_id: int) -> None:
        """Stream into a finished reply again (Continue): it keeps its text, checkpointed as it grows."""
        self._write(
            "UPDATE messages SET state = 'streaming', updated_at = ? WHERE id = ?", (self.clock(), message_id)
        )

    def select_version(self, message_id: int) -> None:
        """Show this version at its point of the chat (and what follows it) instead of its siblings."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(
                "SELECT conversation_id, parent_id FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return
            self.db.execute(
                "UPDATE messages SET active = (id = ?) WHERE conversation_id = ? AND parent_id IS ?",
                (message_id, row["conversation_id"], row["parent_id"]),
            )

    def checkpoint_reply(self, message_id: int, content: str, reasoning: str = "") -> None:
        self._write(
            "UPDATE messages SET content = ?, reasoning = ?, updated_at = ?"
            " WHERE id = ? AND state = 'streaming'",
            (content, reasoning, self.clock(), message_id),
        )

    def finish_reply(
        self,
        message_id: int,
        content: str,
        state: str,
        stats: dict[str, Any] | None = None,
        reasoning: str = "",
    ) -> None:
        if state not in STATES or state == "streaming":
            raise ValueError(f"not a final state: {state}")
        self._write(
            "UPDATE messages SET content = ?, reasoning = ?, state = ?, stats_json = ?, updated_at = ?"
            " WHERE id = ?",
            (content, reasoning, state, json.dumps(stats or {}), self.clock(), message_id),
        )

    def set_thinking(self, conversation_id: int, thinking: bool | None) -> None:
        value = None if thinking is None else int(thinking)
        self._write("UPDATE conversations SET thinking = ? WHERE id = ?", (value, conversation_id))

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self._write("UPDATE conversations SET title = ? WHERE id = ?", (title.strip(), conversation_id))

    def set_pinned(self, conversation_id: int, pinned: bool) -> None:
        self._write("UPDATE conversations SET pinned = ? WHERE id = ?", (int(pinned), conversation_id))

    def delete_message(self, message_id: int) -> None:
        """Remove one message; what followed it moves up to follow its parent, so nothing else is lost."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute(
                "SELECT parent_id, active FROM messages WHERE id = ?", (message_id,)
            ).fetchone()
            if row is None:
                return
            if not row["active"]:  # its followers join versions that are not shown: they must not show
                self.db.execute("UPDATE messages SET active = 0 WHERE parent_id = ?", (message_id,))
            self.db.execute(
                "UPDATE messages SET parent_id = ? WHERE parent_id = ?", (row["parent_id"], message_id)
            )
            self.db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def set_system_prompt(self, conversation_id: int, system_prompt: str) -> None:
        self._write(
            "UPDATE conversations SET system_prompt = ? WHERE id = ?", (system_prompt, conversation_id)
        )

    def delete_conversation(self, conversation_id: int) -> ConversationExport:
        """Delete a conversation with its messages; returns them so that an Undo can put them back."""
        saved = self.export(conversation_id)
        self._write("DELETE FROM conversations WHERE id = ?", (conversation_id,))
        return saved

    def export(self, conversation_id: int) -> ConversationExport:
        return ConversationExport(
            self.conversation(conversation_id), tuple(self.all_messages(conversation_id))
        )

    def restore(self, saved: ConversationExport) -> int:
        """Insert an exported conversation (an Undo, or an import) as a new conversation; returns its id."""
        c = saved.conversation
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cursor = self.db.execute(
                "INSERT INTO conversations (title, system_prompt, model_path, pinned, created_at,"
                " updated_at, thinking) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    c.title,
                    c.system_prompt,
                    c.model_path,
                    int(c.pinned),
                    c.created_at,
                    c.updated_at,
                    None if c.thinking is None else int(c.thinking),
                ),
            )
            new_id = int(cursor.lastrowid or 0)
            new_ids: dict[int, int] = {}
            for m in sorted(saved.messages, key=lambda m: m.id):
                cursor = self.db.execute(
                    "INSERT INTO messages (conversation_id, role, content, state, stats_json, parent_id,"
                    " active, created_at, updated_at, reasoning) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (new_id, m.role, m.content, m.state, json.dumps(m.stats),
                     None if m.parent_id is None else new_ids.get(m.parent_id), int(m.active),
                     m.created_at, m.updated_at, m.reasoning),
                )  # fmt: skip
                new_ids[m.id] = int(cursor.lastrowid or 0)
        return new_id

    # --- reads -----------------------------------------------------------------------------------
    def conversations(self, search: str = "") -> list[Conversation]:
        """Pinned first, then the most recent. `search` keeps those where each of its words starts a word of
        the title or of a message (any case, any accents); without FTS5, where it is in one as typed."""
        order = " ORDER BY pinned DESC, updated_at DESC, id DESC"
        words = search.replace("\0", " ").split()  # FTS5 would read a NUL as the end of the query
        words = [word for word in words if any(c.isalnum() for c in word)][:_MAX_SEARCH_WORDS]
        if not search.strip():
            rows = self.db.execute("SELECT * FROM conversations" + order).fetchall()
        elif self.indexed and words:
            # each word a quoted prefix: quotes and FTS syntax typed by the user are only text
            terms = ['"' + word.replace('"', '""') + '"*' for word in words]
            rows = self.db.execute(
                "SELECT * FROM conversations WHERE " + " AND ".join([_HAS_WORD] * len(terms)) + order,
                [term for term in terms for _ in range(2)],
            ).fetchall()
        else:  # no FTS5, or only punctuation (which the index does not hold): the text as typed
            pattern = "%" + search.strip().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            rows = self.db.execute(
                "SELECT * FROM conversations c WHERE c.title LIKE ?1 ESCAPE '\\' OR EXISTS ("
                "  SELECT 1 FROM messages m WHERE m.conversation_id = c.id AND m.content LIKE ?1 ESCAPE '\\')"
                + order,
                (pattern,),
            ).fetchall()
        return [_conversation(row) for row in rows]

    def conversation(self, conversation_id: int) -> Conversation:
        row = self.db.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        if row is None:
            raise AppError(ErrorKind.NOT_FOUND, "This conversation no longer exists.")
        return _conversation(row)

    def message(self, message_id: int) -> Message:
        """One message as stored (a page that keeps the conversation in memory adds it without reading
        the whole conversation again)."""
        row = self.db.execute("SELECT * FROM messages WHERE id = ?", (message_id,)).fetchone()
        if row is None:
            raise AppError(ErrorKind.NOT_FOUND, "This message no longer exists.")
        return _message(row)

    def messages(self, conversation_id: int) -> list[Message]:
        """The conversation as shown: the active version at each point."""
        return active_path(self.all_messages(conversation_id))

    def active_steps(self, conversation_id: int) -> list[PathStep]:
        """The conversation as shown, as ids only: cheap for any length (three numbers a message)."""
        cursor = self.db.cursor()
        cursor.row_factory = None  # plain tuples
        rows = cursor.execute(
            "SELECT id, parent_id, active FROM messages WHERE conversation_id = ?", (conversation_id,)
        ).fetchall()
        return path_steps(rows)

    def versions(self, message: Message) -> list[int]:
        """The ids of the versions at this message's point of the chat, oldest first."""
        rows = self.db.execute(
            "SELECT id FROM messages WHERE conversation_id = ? AND parent_id IS ? ORDER BY id",
            (message.conversation_id, message.parent_id),
        )
        return [row["id"] for row in rows]

    def path_messages(self, steps: Sequence[PathStep]) -> list[Message]:
        """The messages at these points of the path, in order (a part of a long chat, read when shown)."""
        found: dict[int, Message] = {}
        for start in range(0, len(steps), _IDS_PER_QUERY):
            ids = [step.id for step in steps[start : start + _IDS_PER_QUERY]]
            marks = ",".join("?" * len(ids))
            for row in self.db.execute(f"SELECT * FROM messages WHERE id IN ({marks})", ids):
                found[row["id"]] = _message(row)
        return [_numbered(found[step.id], step) for step in steps if step.id in found]

    def all_messages(self, conversation_id: int) -> list[Message]:
        """Every message with every version, in the order they were written."""
        rows = self.db.execute(
            "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
        ).fetchall()
        return [_message(row) for row in rows]


def _sync_search_index(db: sqlite3.Connection) -> bool:
    """Build the search index where this sqlite has FTS5 and it is missing (or was left stale while its
    triggers were off); drop its triggers where FTS5 is missing. Runs in the caller's transaction."""
    names = ", ".join(f"'{name}'" for name in _SEARCH_TRIGGERS)
    (present,) = db.execute(
        f"SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name IN ({names})"
    ).fetchone()
    if not _has_fts5(db):
        for name in _SEARCH_TRIGGERS:
            db.execute(f"DROP TRIGGER IF EXISTS {name}")
        if present:
            log.warning("this sqlite has no FTS5: chat search falls back to LIKE")
        return False
    if present < len(_SEARCH_TRIGGERS):
        started = time.perf_counter()
        for statement in _SEARCH_INDEX:
            db.execute(statement)
        log.info("chat search index built in %.0f ms", (time.perf_counter() - started) * 1000)
    return True


def _has_fts5(db: sqlite3.Connection) -> bool:
    try:  # a probe, as compile options can be compiled out and FTS5 can come as an extension
        db.execute("CREATE VIRTUAL TABLE temp.fts5_probe USING fts5(x)")
        db.execute("DROP TABLE temp.fts5_probe")
    except sqlite3.OperationalError:
        return False
    return True


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        system_prompt=row["system_prompt"],
        model_path=row["model_path"],
        pinned=bool(row["pinned"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        thinking=None if row["thinking"] is None else bool(row["thinking"]),
    )


def _message(row: sqlite3.Row) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        state=row["state"],
        stats=json.loads(row["stats_json"]) if row["stats_json"] != "{}" else {},
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        parent_id=row["parent_id"],
        active=bool(row["active"]),
        reasoning=row["reasoning"],
    )
