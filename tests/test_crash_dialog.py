"""The crash dialog: one per distinct error with a repeat count, and "your chats are safe" only when true."""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from pytestqt.qtbot import QtBot

from app.ui.crash import CrashReporter


@pytest.fixture
def reporter(qtbot: QtBot, tmp_path: Path) -> Iterator[CrashReporter]:
    installed = CrashReporter(tmp_path / "hubside.log").install()
    yield installed
    installed.uninstall()
    for dialog in list(installed.dialogs):
        dialog.close()


def _summary(reporter: CrashReporter, index: int) -> str:
    from PySide6.QtWidgets import QLabel

    label = reporter.dialogs[index].findChild(QLabel, "crashSummary")
    assert label is not None
    return label.text()


@pytest.mark.qt_no_exception_capture
def test_a_timer_failing_twenty_times_opens_one_dialog_that_counts(
    qtbot: QtBot, reporter: CrashReporter
) -> None:
    ticks = 0

    def failing_tick() -> None:
        nonlocal ticks
        ticks += 1
        if ticks in (20, 21):
            timer.stop()
        raise ValueError(f"tick {ticks} went wrong")  # the message changes, the error is the same

    timer = QTimer(interval=10)
    timer.timeout.connect(failing_tick)
    timer.start()
    qtbot.waitUntil(lambda: ticks == 20, timeout=10_000)
    qtbot.wait(100)  # any dialog still queued would be open by now
    assert len(reporter.dialogs) == 1
    dialog = reporter.dialogs[0]
    assert dialog.count == 20 and "x20" in dialog.repeats.text() and not dialog.repeats.isHidden()
    assert "tick 1 went wrong" in dialog.details.toPlainText()
    dialog.close()  # seen: the same error again is only logged
    timer.start()
    qtbot.waitUntil(lambda: ticks == 21, timeout=10_000)
    qtbot.wait(100)
    assert reporter.dialogs == [] and sum(reporter.seen.values()) == 21


@pytest.mark.qt_no_exception_capture
def test_two_distinct_errors_open_two_dialogs(qtbot: QtBot, reporter: CrashReporter) -> None:
    def broken_slot() -> None:
        raise ValueError("a slot went wrong")

    def broken_worker() -> None:
        raise RuntimeError("a worker went wrong")

    for _ in range(3):
        QTimer.singleShot(0, broken_slot)
    qtbot.wait(100)
    worker = threading.Thread(target=broken_worker, name="worker-7")
    worker.start()
    worker.join()
    qtbot.waitUntil(lambda: len(reporter.dialogs) == 2, timeout=10_000)
    qtbot.wait(50)
    assert len(reporter.dialogs) == 2
    assert [d.count for d in reporter.dialogs] == [3, 1]
    assert reporter.dialogs[1].repeats.isHidden()  # it came once: nothing to count
    assert "RuntimeError: a worker went wrong" in reporter.dialogs[1].details.toPlainText()


@pytest.mark.qt_no_exception_capture
def test_chats_are_said_safe_only_when_the_error_is_not_a_storage_error(
    qtbot: QtBot, reporter: CrashReporter, tmp_path: Path
) -> None:
    from app.ui.crash import SAFE_NOTE

    def broken_slot() -> None:
        raise KeyError("a dictionary went wrong")

    def broken_save() -> None:
        database = sqlite3.connect(tmp_path / "chats.db")
        try:
            database.execute("INSERT INTO nowhere VALUES (1)")  # sqlite3.OperationalError
        finally:
            database.close()

    def broken_write() -> None:
        try:
            broken_save()
        except sqlite3.Error as exc:
            raise RuntimeError("saving the reply failed") from exc  # the cause is what counts

    QTimer.singleShot(0, broken_slot)
    qtbot.waitUntil(lambda: len(reporter.dialogs) == 1, timeout=10_000)
    QTimer.singleShot(0, broken_write)
    qtbot.waitUntil(lambda: len(reporter.dialogs) == 2, timeout=10_000)
    assert SAFE_NOTE in _summary(reporter, 0)
    assert SAFE_NOTE not in _summary(reporter, 1) and "may not have been" in _summary(reporter, 1)

    def broken_fetch() -> None:  # requests' errors are OSErrors too, but touch no file
        import requests

        raise requests.ConnectionError("the Hub went away")

    def broken_disk() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    QTimer.singleShot(0, broken_fetch)
    qtbot.waitUntil(lambda: len(reporter.dialogs) == 3, timeout=10_000)
    QTimer.singleShot(0, broken_disk)
    qtbot.waitUntil(lambda: len(reporter.dialogs) == 4, timeout=10_000)
    assert SAFE_NOTE in _summary(reporter, 2)
    assert SAFE_NOTE not in _summary(reporter, 3)
