"""The library's header cache: what a scan took from each GGUF header, by the file's path, size and mtime,
so that a rescan reads only the files that changed (library.sqlite3 under the cache dir, its own file).

It holds nothing that cannot be read again from the files, so it never stands in the user's way: a damaged
file is moved aside and a new one started; a locked, full or failing disk, or a cache written by a newer
Hubside, means this scan reads the headers itself and nothing is moved. WAL and a busy timeout let the window
and the CLI open it at once. Rows are tagged with the Hubside version and the header reader's revision that
read them: an upgrade or a changed reader reads every header once more.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app import __version__
from app.runtime.gguf_header import READER_REVISION
from app.storage import DamagedDatabase, is_damaged, move_aside, open_database

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA_V1 = """
CREATE TABLE headers (
    path           TEXT    PRIMARY KEY,
    size           INTEGER NOT NULL,
    mtime_ns       INTEGER NOT NULL,
    reader         TEXT    NOT NULL,
    quant          TEXT    NOT NULL,
    architecture   TEXT    NOT NULL,
    parameters     INTEGER,
    context_length INTEGER,
    problem        TEXT    NOT NULL
) WITHOUT ROWID
"""
# user_version N -> the statements that bring a version-N cache to N+1 (0 is an empty file).
_MIGRATIONS: dict[int, tuple[str, ...]] = {0: (_SCHEMA_V1,)}
_COLUMNS = "path, size, mtime_ns, reader, quant, architecture, parameters, context_length, problem"
_MARKS = ", ".join("?" for _ in _COLUMNS.split(","))
_READER = f"{__version__}+reader{READER_REVISION}"  # what a row's facts were read by


@dataclass(frozen=True)
class HeaderFacts:
    """What the library takes from a file's header ("" and None where the header says nothing)."""

    quant: str = ""  # the header's file type; "" lets the file name's label stand
    architecture: str = ""
    parameters: int | None = None
    context_length: int | None = None
    problem: str = ""  # why the file cannot be used


@dataclass(frozen=True)
class CachedHeader:
    size: int
    mtime_ns: int
    facts: HeaderFacts


class _Unusable(Exception):
    """The cache cannot be used this time, but nothing is wrong with its file (newer than this code)."""


class HeaderCache:
    """The cache for one scan: open, `load`, `save`, `close`, all in the scanning thread. Any failure leaves
    `db` None: the scan goes on, reading every header itself."""

    def __init__(self, path: Path, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.moved_aside: Path | None = None  # where a damaged cache went
        self.db: sqlite3.Connection | None = None
        self.db = self._open_or_rebuild()

    def _open_or_rebuild(self) -> sqlite3.Connection | None:
        db = self._try_open()
        if db is None and self.moved_aside is not None:
            db = self._try_open()  # a new, empty cache where the damaged one was
        return db

    def _try_open(self) -> sqlite3.Connection | None:
        try:
            return self._open()
        except (sqlite3.Error, _Unusable) as exc:  # DamagedDatabase is an sqlite3.Error
            self._failed(exc)
            return None

    def _open(self) -> sqlite3.Connection:
        db = open_database(self.path)
        try:
            db.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise DamagedDatabase("quick_check failed")
            self._migrate(db)
        except BaseException:
            db.close()
            raise
        return db

    def _migrate(self, db: sqlite3.Connection) -> None:
        # No backup first, as the chat database has: everything here can be read again from the files.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        with db:
            db.execute("BEGIN IMMEDIATE")
            version = db.execute("PRAGMA user_version").fetchone()[0]  # another process may have done it
            if version > SCHEMA_VERSION:
                raise _Unusable(f"written by a newer Hubside (cache version {version})")
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    db.execute(statement)
                version += 1
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _failed(self, exc: BaseException) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
        if is_damaged(exc) and self.moved_aside is None:
            self.moved_aside = move_aside(self.path)
            log.warning("library cache %s unreadable (%s); moved to %s", self.path, exc, self.moved_aside)
        else:
            log.warning("library cache %s not used this time: %s", self.path, exc)

    def load(self) -> dict[str, CachedHeader]:
        """Every header this version of Hubside read, by path."""
        if self.db is None:
            return {}
        try:
            rows = self.db.execute(f"SELECT {_COLUMNS} FROM headers WHERE reader = ?", (_READER,)).fetchall()
        except sqlite3.Error as exc:
            self._failed(exc)
            return {}
        return {row["path"]: _cached(row) for row in rows}

    def save(self, read: Mapping[str, CachedHeader], present: Iterable[str]) -> None:
        """Keep the headers this scan read and forget the files it no longer found, in one transaction."""
        if self.db is None:
            return
        rows = [(path, c.size, c.mtime_ns, _READER, *_facts_row(c.facts)) for path, c in read.items()]
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                stored = {row[0] for row in self.db.execute("SELECT path FROM headers")}
                gone = stored.difference(present)
                self.db.executemany("DELETE FROM headers WHERE path = ?", ((path,) for path in gone))
                self.db.executemany(f"INSERT OR REPLACE INTO headers ({_COLUMNS}) VALUES ({_MARKS})", rows)
        except sqlite3.Error as exc:
            self._failed(exc)

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def __enter__(self) -> HeaderCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _facts_row(facts: HeaderFacts) -> tuple[str, str, int | None, int | None, str]:
    return facts.quant, facts.architecture, facts.parameters, facts.context_length, facts.problem


def _cached(row: sqlite3.Row) -> CachedHeader:
    facts = HeaderFacts(
        row["quant"], row["architecture"], row["parameters"], row["context_length"], row["problem"]
    )
    return CachedHeader(row["size"], row["mtime_ns"], facts)
