"""The window's start-up when a database cannot be opened: a dialog, a non-zero exit, nothing moved aside."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox

from app.chat.store import ChatStore
from app.cli import main
from app.compare.store import SCHEMA_VERSION, CompareStore
from app.paths import AppPaths
from app.ui.main_window import MainWindow


def _start_the_window(qapp: QApplication) -> tuple[int, list[str]]:
    """`hubside` with no command, as from the desktop; the dialogs it showed (each closed once seen)."""
    seen: list[str] = []

    def look() -> None:
        for widget in qapp.topLevelWidgets():
            if isinstance(widget, QMessageBox) and widget.isVisible():
                seen.append(widget.text())
                widget.done(0)
            elif isinstance(widget, MainWindow) and widget.isVisible():
                seen.append("the main window opened")
                widget.close()
        if not seen:
            QTimer.singleShot(50, look)

    QTimer.singleShot(50, look)
    return main([]), seen


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Another process writing to the database for longer than the busy timeout."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def _nothing_moved(paths: AppPaths) -> None:
    assert not list(paths.data_dir.glob("*unreadable*"))


def test_a_locked_chat_database_is_a_dialog_and_an_exit_1(qapp: QApplication) -> None:
    paths = AppPaths.from_env().ensure()
    store = ChatStore(paths.database_file)
    store.create_conversation("Keep me")
    store.close()
    with _held(paths.database_file):
        code, seen = _start_the_window(qapp)
    assert code == 1
    assert len(seen) == 1 and "Your chats cannot be opened now" in seen[0]
    _nothing_moved(paths)
    assert [c.title for c in ChatStore(paths.database_file).conversations()] == ["Keep me"]


def test_a_compare_database_from_a_newer_hubside_is_a_dialog_and_an_exit_1(qapp: QApplication) -> None:
    paths = AppPaths.from_env().ensure()
    CompareStore(paths.compare_file).close()
    with sqlite3.connect(paths.compare_file) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = paths.compare_file.read_bytes()
    code, seen = _start_the_window(qapp)
    assert code == 1
    assert len(seen) == 1 and "Your comparisons were saved by a newer Hubside" in seen[0]
    assert paths.compare_file.read_bytes() == before
    _nothing_moved(paths)


def test_a_locked_compare_database_is_a_dialog_and_nothing_starts(qapp: QApplication) -> None:
    """Before: sqlite3's "database is locked" left the window on a line of stderr, after the chats, the
    download queue and the engine had been set up."""
    paths = AppPaths.from_env().ensure()
    with sqlite3.connect(paths.compare_file) as db:  # from before versions were kept: opening writes
        db.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, created_at REAL, prompt TEXT, data_json TEXT)")
    db.close()
    with _held(paths.compare_file):
        code, seen = _start_the_window(qapp)
    assert code == 1
    assert len(seen) == 1 and "Your comparisons cannot be opened now" in seen[0]
    _nothing_moved(paths)


def test_an_unexpected_start_up_error_is_a_dialog_too(qapp: QApplication) -> None:
    paths = AppPaths.from_env().ensure()
    paths.compare_file.mkdir()  # a folder where the database should be: sqlite cannot open it
    code, seen = _start_the_window(qapp)
    assert code == 1 and len(seen) == 1 and "the main window opened" not in seen


def test_after_a_failed_start_the_next_start_opens_the_window(qapp: QApplication) -> None:
    """A failed start lets go of the data dir (its instance lock and socket): the next start is the window,
    not a hand-over to the one that failed."""
    paths = AppPaths.from_env().ensure()
    CompareStore(paths.compare_file).close()
    with sqlite3.connect(paths.compare_file) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    assert _start_the_window(qapp)[0] == 1
    paths.compare_file.replace(paths.compare_file.with_name("kept-for-the-newer-hubside.sqlite3"))
    code, seen = _start_the_window(qapp)
    assert (code, seen) == (0, ["the main window opened"])


def test_a_data_folder_that_cannot_be_made_is_a_dialog(
    qapp: QApplication, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("HUBSIDE_HOME", str(blocker / "hubside"))  # under a file: ENOTDIR
    code, seen = _start_the_window(qapp)
    assert code == 1 and len(seen) == 1 and seen[0].startswith("Hubside cannot create its folders: ")
