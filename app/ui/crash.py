"""Uncaught exceptions, on the GUI thread or any other, become a dialog (what happened, where the log is,
Copy details) instead of a silent death; the app goes on when it can. Qt's own warnings go to the log.

One dialog per distinct error (its type and where it was raised): a timer that fails four times a second
opens one dialog, which counts the repeats, and the log gets the traceback once and a line per repeat."""

from __future__ import annotations

import errno
import logging
import sqlite3
import sys
import threading
import traceback
from pathlib import Path
from types import TracebackType

from PySide6.QtCore import QObject, Qt, QtMsgType, Signal, Slot, qInstallMessageHandler
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (
    QApplication,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QVBoxLayout,
    QWidget,
)

from app.errors import AppError, ErrorKind
from app.ui.widgets import named

log = logging.getLogger("hubside.crash")
_QT_LEVELS = {
    QtMsgType.QtDebugMsg: logging.DEBUG,
    QtMsgType.QtInfoMsg: logging.INFO,
    QtMsgType.QtWarningMsg: logging.WARNING,
    QtMsgType.QtCriticalMsg: logging.ERROR,
    QtMsgType.QtFatalMsg: logging.CRITICAL,
}
SAFE_NOTE = "Hubside kept running; your chats and downloads are safe."
STORAGE_NOTE = (
    "Hubside kept running, but this went wrong while reading or writing its files or database: "
    "what was being saved may not have been."
)
_STORAGE_KINDS = (ErrorKind.DISK_FULL, ErrorKind.PERMISSION)
_DISK_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM)


def is_storage_error(error: BaseException) -> bool:
    """Whether the error (or one it came from) is about the disk or the database, so that saying the chats
    are safe could be false. Network errors are OSErrors too, but touch no file."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlite3.Error):
            return True
        if isinstance(current, AppError) and current.kind in _STORAGE_KINDS:
            return True
        if isinstance(current, OSError) and _about_a_file(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _about_a_file(error: OSError) -> bool:
    """An OSError naming a file, or a disk's errno; network errors (requests' too, which are OSErrors)
    name no file."""
    return error.filename is not None or error.errno in _DISK_ERRNOS


def error_key(error: BaseException) -> str:
    """What makes two errors the same one: the type, and the lines it was raised through (the message may
    carry a number that changes each time)."""
    frames = traceback.extract_tb(error.__traceback__)
    where = ";".join(f"{frame.filename}:{frame.lineno}" for frame in frames) or str(error)
    return f"{type(error).__module__}.{type(error).__qualname__}@{where}"


class CrashDialog(QDialog):
    def __init__(
        self,
        summary: str,
        details: str,
        log_file: Path,
        parent: QWidget | None = None,
        chats_safe: bool = True,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("crashDialog")
        self.setWindowTitle("Hubside ran into a problem")
        text = named(QLabel(), "crashSummary")
        text.setTextFormat(Qt.TextFormat.PlainText)
        text.setWordWrap(True)
        text.setText(
            f"Something went wrong: {summary}\n\n{SAFE_NOTE if chats_safe else STORAGE_NOTE} "
            f"The details below are also in the log: {log_file}"
        )
        self.summary = text
        self.count = 1
        self.repeats = named(QLabel(), "crashRepeats")  # shown once the same error comes again
        self.repeats.hide()
        self.details = named(QPlainTextEdit(details, readOnly=True), "crashDetails")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy details", QDialogButtonBox.ButtonRole.ActionRole)
        copy.setObjectName("copyDetails")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(details))
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(self.repeats)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)
        self.resize(640, 420)

    def set_count(self, count: int) -> None:
        self.count = count
        self.repeats.setText(f"This happened {count} times so far (x{count}).")
        self.repeats.show()


class CrashReporter(QObject):
    """Installs the hooks; shows one dialog per distinct error, on the GUI thread."""

    _caught = Signal(str, str, str, int, bool)  # key, summary, details, times seen, chats safe

    def __init__(self, log_file: Path, show_dialog: bool = True) -> None:
        super().__init__()
        self.log_file = log_file
        self.show_dialog = show_dialog
        self.dialogs: list[CrashDialog] = []
        self.seen: dict[str, int] = {}  # error_key -> how many times it came (from any thread)
        self._seen_lock = threading.Lock()
        self._shown: dict[str, CrashDialog] = {}  # the open dialog of each distinct error
        self._caught.connect(self._show)
        self._previous = (sys.excepthook, threading.excepthook)

    def install(self) -> CrashReporter:
        sys.excepthook = self._on_exception
        threading.excepthook = self._on_thread_exception
        qInstallMessageHandler(_qt_message)
        return self

    def uninstall(self) -> None:
        sys.excepthook, threading.excepthook = self._previous
        qInstallMessageHandler(None)

    def _on_exception(
        self, kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        if issubclass(kind, KeyboardInterrupt):
            self._previous[0](kind, error, tb)
            return
        self.report(error, "".join(traceback.format_exception(kind, error, tb)))

    def _on_thread_exception(self, args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or isinstance(args.exc_value, SystemExit):
            return
        thread = args.thread.name if args.thread else "a thread"
        details = "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback))
        self.report(args.exc_value, f"In {thread}:\n{details}")

    def report(self, error: BaseException, details: str) -> None:
        key, summary = error_key(error), f"{type(error).__name__}: {error}"
        with self._seen_lock:
            times = self.seen[key] = self.seen.get(key, 0) + 1
        if times == 1:
            log.error("uncaught exception: %s\n%s", error, details)
        else:  # the traceback is in the log already
            log.error("uncaught exception again (x%d): %s", times, summary)
        self._caught.emit(key, summary, details, times, not is_storage_error(error))

    @Slot(str, str, str, int, bool)
    def _show(self, key: str, summary: str, details: str, times: int, chats_safe: bool) -> None:
        if not self.show_dialog or QApplication.instance() is None:
            return
        if key in self._shown:  # the same error again: its open dialog counts it
            self._shown[key].set_count(max(times, self._shown[key].count))
            return
        if times > 1:
            return  # its dialog was closed: the user has seen it, the log counts the rest
        dialog = CrashDialog(summary, details, self.log_file, QApplication.activeWindow(), chats_safe)
        self._shown[key] = dialog
        self.dialogs.append(dialog)
        dialog.finished.connect(lambda _: self._closed(key, dialog))
        dialog.show()

    def _closed(self, key: str, dialog: CrashDialog) -> None:
        self._shown.pop(key, None)
        if dialog in self.dialogs:
            self.dialogs.remove(dialog)


def _qt_message(kind: QtMsgType, context: object, message: str) -> None:
    logging.getLogger("qt").log(_QT_LEVELS.get(kind, logging.WARNING), "%s", message)
