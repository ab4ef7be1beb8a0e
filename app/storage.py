"""How Hubside opens its SQLite files: every write on disk when it returns, rows readable by column name."""

from __future__ import annotations

import sqlite3
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
