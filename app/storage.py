"""How Hubside opens its SQLite files: every write on disk when it returns, rows readable by column name."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def open_database(path: Path, *, shared: bool = False) -> sqlite3.Connection:
    """WAL with synchronous=FULL, foreign keys on, transactions written by the caller (BEGIN/COMMIT).
    `shared`: used from several threads, each call under the owner's lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=not shared)
    try:
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
    except BaseException:
        db.close()
        raise
    return db


class DamagedDatabase(sqlite3.DatabaseError):
    """The file opened as a database but failed its quick_check."""


_DAMAGED_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


def is_damaged(exc: BaseException) -> bool:
    """Whether the file itself is bad (not a database, or corrupt): only then may it be moved aside. A
    locked database, a full disk or an I/O error is not the file's fault, and moving it would lose it."""
    if isinstance(exc, DamagedDatabase):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _DAMAGED_CODES


def move_aside(path: Path) -> Path:
    """Rename a damaged database (with its -wal and -shm) out of the way, never deleting it; the new name."""
    aside = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    for suffix in ("", "-wal", "-shm"):
        part = Path(f"{path}{suffix}")
        if part.exists():
            part.replace(Path(f"{aside}{suffix}"))
    return aside
