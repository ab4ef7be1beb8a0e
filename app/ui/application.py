"""The composition root: builds the services once and hands them to the window."""

from __future__ import annotations

from importlib.resources import as_file, files

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from app.paths import AppPaths
from app.ui.main_window import MainWindow


def run_window(paths: AppPaths, argv: list[str]) -> int:
    """Open the main window and run the event loop until it closes; returns the exit code."""
    app = QApplication.instance() or QApplication(argv)
    assert isinstance(app, QApplication)
    app.setApplicationName("Hubside")
    app.setDesktopFileName("hubside")
    with as_file(files("app.resources") / "hubside.svg") as icon_path:
        app.setWindowIcon(QIcon(str(icon_path)))

    window = MainWindow(paths)
    window.show()
    return app.exec()
