"""Uncaught exceptions, on the GUI thread or any other, become a dialog (what happened, where the log is,
Copy details) instead of a silent death; the app goes on when it can. Qt's own warnings go to the log."""

from __future__ import annotations

import logging
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

from app.ui.widgets import named

log = logging.getLogger("hubside.crash")
_QT_LEVELS = {
    QtMsgType.QtDebugMsg: logging.DEBUG,
    QtMsgType.QtInfoMsg: logging.INFO,
    QtMsgType.QtWarningMsg: logging.WARNING,
    QtMsgType.QtCriticalMsg: logging.ERROR,
    QtMsgType.QtFatalMsg: logging.CRITICAL,
}


class CrashDialog(QDialog):
    def __init__(self, summary: str, details: str, log_file: Path, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("crashDialog")
        self.setWindowTitle("Hubside ran into a problem")
        text = named(QLabel(), "crashSummary")
        text.setTextFormat(Qt.TextFormat.PlainText)
        text.setWordWrap(True)
        text.setText(
            f"Something went wrong: {summary}\n\nHubside kept running; your chats and downloads are safe. "
            f"The details below are also in the log: {log_file}"
        )
        self.details = named(QPlainTextEdit(details, readOnly=True), "crashDetails")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy details", QDialogButtonBox.ButtonRole.ActionRole)
        copy.setObjectName("copyDetails")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(details))
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(text)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)
        self.resize(640, 420)


class CrashReporter(QObject):
    """Installs the hooks; shows one dialog per exception, on the GUI thread."""

    _caught = Signal(str, str)  # summary, details (from any thread)

    def __init__(self, log_file: Path, show_dialog: bool = True) -> None:
        super().__init__()
        self.log_file = log_file
        self.show_dialog = show_dialog
        self.dialogs: list[CrashDialog] = []
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
        log.error("uncaught exception: %s\n%s", error, details)
        self._caught.emit(f"{type(error).__name__}: {error}", details)

    @Slot(str, str)
    def _show(self, summary: str, details: str) -> None:
        if not self.show_dialog or QApplication.instance() is None:
            return
        dialog = CrashDialog(summary, details, self.log_file, QApplication.activeWindow())
        self.dialogs.append(dialog)
        dialog.finished.connect(lambda _: self.dialogs.remove(dialog) if dialog in self.dialogs else None)
        dialog.show()


def _qt_message(kind: QtMsgType, context: object, message: str) -> None:
    logging.getLogger("qt").log(_QT_LEVELS.get(kind, logging.WARNING), "%s", message)
