"""How Hubside opens its SQLite files: every write on disk when it returns, rows readable by column name."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

log = logging.getLogger(__name__)


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


Step = str | Callable[[sqlite3.Connection], None]  # the SQL of one migration step, or a function doing it


def migrate(
    db: sqlite3.Connection, path: Path, steps: dict[int, Step], too_new: Callable[[int], Exception]
) -> None:
    """Bring the database to version len(steps) by `steps` (user_version N -> the step to N + 1), in one
    transaction, after a copy of the file as it was (`NAME.before-vN`) when it holds any table (a file
    from before versions were kept is version 0 with its tables). A database newer than the code raises
    `too_new(its version)` and is left untouched."""
    target = len(steps)
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > target:
        raise too_new(version)
    if version == target:
        return
    if db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:  # a failed migration loses nothing
        with closing(sqlite3.connect(path.with_name(f"{path.name}.before-v{target}"))) as copy:
            db.backup(copy)
    db.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process (the window, `hubside ...`) may have migrated
        # this file while we waited for it; its steps must not run twice.
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > target:
            raise too_new(version)
        for number in range(version, target):
            step = steps[number]
            if callable(step):
                step(db)
            else:
                for statement in step.split(";"):
                    if statement.strip():
                        db.execute(statement)
        db.execute(f"PRAGMA user_version = {target}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def open_versioned(
    path: Path,
    steps: dict[int, Step],
    too_new: Callable[[int], Exception],
    unavailable: Callable[[sqlite3.DatabaseError], Exception],
) -> tuple[sqlite3.Connection, Path | None]:
    """A shared database checked (quick_check) and migrated by `steps`, and where a file it moved aside went.
    Only a damaged file is moved aside and a new one started; locked, full or failing, `unavailable(exc)` is
    raised and nothing moves."""
    try:
        return _checked(path, steps, too_new), None
    except sqlite3.DatabaseError as exc:
        if not is_damaged(exc):  # locked, a full disk, an I/O error: the file is fine, keep it
            raise unavailable(exc) from exc
        aside = move_aside(path)
        log.error("%s unreadable (%s); moved to %s", path.name, exc, aside)
        return _checked(path, steps, too_new), aside


def _checked(path: Path, steps: dict[int, Step], too_new: Callable[[int], Exception]) -> sqlite3.Connection:
    db = open_database(path, shared=True)
    try:
        if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise DamagedDatabase("quick_check failed")
        migrate(db, path, steps, too_new)
    except BaseException:
        db.close()
        raise
    return db
