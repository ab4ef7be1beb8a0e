"""Saved comparisons and blind votes, in SQLite (compare.sqlite3, its own file and owner).

A run keeps the prompt, the settings, each model with its file's sha256, the outputs and the metrics, so it
can be reopened and exported; votes are kept one per row and the leaderboard is replayed from them. A vote
names each model by its file's sha256 (two quants of one model are two entries) and keeps a label to show.
A file's sha256 is kept by path, size and mtime, so a model is read once, not again for every saved run.

`PRAGMA user_version` migrations run after a copy of the file; a file from a newer Hubside is refused. Only a
file SQLite finds is not a database or corrupt (or that fails quick_check) is moved aside; a locked one, a
full disk or an I/O error is reported, and nothing moves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.compare.elo import Vote
from app.errors import AppError, ErrorKind
from app.storage import Step, open_versioned

log = logging.getLogger(__name__)

# IF NOT EXISTS: a file from before versions were kept is version 0 and has these tables already.
_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    id         INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    prompt     TEXT NOT NULL,
    data_json  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    model_a    TEXT NOT NULL,
    model_b    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


def _v1_to_v2(db: sqlite3.Connection) -> None:
    """v2: a vote's model_a/model_b are files' sha256 (v1 had general.name) with a label each; file hashes
    are kept by path, size and mtime."""
    db.execute("ALTER TABLE votes ADD COLUMN label_a TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE votes ADD COLUMN label_b TEXT NOT NULL DEFAULT ''")
    db.execute(
        "CREATE TABLE file_hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
        " sha256 TEXT NOT NULL)"
    )
    columns = {row["id"]: _columns(row["data_json"]) for row in db.execute("SELECT id, data_json FROM runs")}
    for vote in db.execute("SELECT id, run_id, model_a, model_b FROM votes").fetchall():
        in_run = columns.get(vote["run_id"], [])
        a, b = _file_named(in_run, vote["model_a"]), _file_named(in_run, vote["model_b"])
        db.execute(
            "UPDATE votes SET model_a = ?, label_a = ?, model_b = ?, label_b = ? WHERE id = ?",
            (*a, *b, vote["id"]),
        )


# user_version N -> the step that brings a version-N database to N + 1 (0: empty, or from before versions).
_MIGRATIONS: dict[int, Step] = {0: _V1, 1: _v1_to_v2}
SCHEMA_VERSION = len(_MIGRATIONS)


@dataclass(frozen=True)
class SavedRun:
    id: int
    created_at: float
    prompt: str
    data: dict[str, Any]  # settings, and per column: model, path, sha256, turns (prompt, text, metrics)


class DatabaseTooNew(AppError):
    def __init__(self, path: Path, version: int) -> None:
        super().__init__(
            ErrorKind.SETTINGS,
            f"Your comparisons were saved by a newer Hubside (database version {version}); this version "
            f"understands up to {SCHEMA_VERSION}. Update Hubside to open them. Nothing was changed.",
            str(path),
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def label(column: dict[str, Any]) -> str:
    """What the leaderboard shows for a saved run's column: the model's name and its file's name (two
    quants of one model share the name)."""
    model, file = str(column.get("model") or ""), Path(str(column.get("path") or "")).name
    return f"{model} ({file})" if model and file and model != file else model or file


def entry(column: dict[str, Any]) -> tuple[str, str]:
    """A saved run's column as a leaderboard entry: its file's sha256 (a remote model, which has no file
    of ours: its `remote:NAME/MODEL_ID`), and its label."""
    return str(column["sha256"] or column.get("path") or ""), label(column)


def _columns(data_json: str) -> list[dict[str, Any]]:
    try:
        columns = json.loads(data_json).get("columns", [])
    except (ValueError, AttributeError):
        return []
    return [c for c in columns if isinstance(c, dict)] if isinstance(columns, list) else []


def _file_named(columns: list[dict[str, Any]], name: str) -> tuple[str, str]:
    """A v1 vote's model (its general.name) as (key, label): the file of that name in the vote's run, where
    only one file there has it; else the name stays the key, an entry of its own."""
    files = {entry(c) for c in columns if c.get("model") == name and c.get("sha256")}
    return files.pop() if len(files) == 1 else (name, name)


class CompareStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.db, self.moved_aside = open_versioned(
            path,
            _MIGRATIONS,
            lambda version: DatabaseTooNew(path, version),
            lambda exc: _unavailable(path, exc),
        )

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write under the lock. Busy, full or failing, SQLite's error becomes one the window and the CLI
        show; nothing already saved is touched."""
        with self.lock:
            try:
                yield self.db
            except sqlite3.OperationalError as exc:
                raise _unsaved(self.path, exc) from exc

    def save_run(self, prompt: str, data: dict[str, Any], run_id: int | None = None) -> int:
        """A new run, or (with `run_id`) the same run with its follow-up turns."""
        encoded = json.dumps(data)
        with self._writing():
            if run_id is not None:
                self.db.execute("UPDATE runs SET data_json = ? WHERE id = ?", (encoded, run_id))
                return run_id
            cursor = self.db.execute(
                "INSERT INTO runs (created_at, prompt, data_json) VALUES (?, ?, ?)",
                (time.time(), prompt, encoded),
            )
            return int(cursor.lastrowid or 0)

    def runs(self) -> list[SavedRun]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
        return [SavedRun(r["id"], r["created_at"], r["prompt"], json.loads(r["data_json"])) for r in rows]

    def run(self, run_id: int) -> SavedRun | None:
        with self.lock:
            r = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return SavedRun(r["id"], r["created_at"], r["prompt"], json.loads(r["data_json"])) if r else None

    def vote(self, run_id: int | None, vote: Vote) -> None:
        with self._writing():
            self.db.execute(
                "INSERT INTO votes (run_id, model_a, model_b, label_a, label_b, outcome, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, vote.model_a, vote.model_b, vote.label_a, vote.label_b, vote.outcome, time.time()),
            )

    def votes(self) -> list[Vote]:
        with self.lock:
            rows = self.db.execute(
                "SELECT model_a, model_b, outcome, label_a, label_b FROM votes ORDER BY id"
            ).fetchall()
        return [Vote(r["model_a"], r["model_b"], r["outcome"], r["label_a"], r["label_b"]) for r in rows]

    def sha256(self, path: Path) -> str:
        """The file's sha256, read once per path, size and mtime (a big model takes seconds to hash)."""
        stat = path.stat()
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        with self.lock:
            row = self.db.execute(
                "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?", key
            ).fetchone()
        if row is not None:
            return str(row[0])
        digest = file_sha256(path)  # not under the lock: the window's reads go on meanwhile
        try:
            with self._writing():
                self.db.execute(
                    "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                    (*key, digest),
                )
        except AppError as exc:  # only a cache: the next run hashes the file again
            log.warning("file hash not kept: %s", exc)
        return digest

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _unsaved(path: Path, exc: sqlite3.OperationalError) -> AppError:
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
        return AppError(ErrorKind.DISK_FULL, "The disk is full: the comparison was not saved.", str(path))
    return AppError(
        ErrorKind.SETTINGS,
        f"The comparison was not saved ({exc}); the runs saved before are kept. Close other programs using "
        "Hubside's comparisons, then try again.",
        str(path),
    )


def _unavailable(path: Path, exc: sqlite3.DatabaseError) -> AppError:
    if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL:
        return AppError(
            ErrorKind.DISK_FULL, "The disk is full: your comparisons cannot be opened until there is room."
        )
    return AppError(
        ErrorKind.SETTINGS,
        f"Your comparisons cannot be opened now ({exc}); nothing was changed. Close other programs using "
        "them, then start Hubside again.",
        str(path),
    )
