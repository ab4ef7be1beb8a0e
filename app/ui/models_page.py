"""The Models page: the library (downloaded models and those found in place), scanned off the GUI thread,
with Chat, Reveal, Delete (downloaded files) or Hide (found in place), added folders and the disk used."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.errors import AppError
from app.library.scan import HUBSIDE, LibraryEntry, Root, Scanner, delete, disk_usage
from app.paths import AppPaths
from app.ui.background import Background
from app.ui.table_model import RowsModel
from app.ui.widgets import named
from app.units import gb


class LibraryModel(RowsModel):
    COLUMNS = ("Model", "Repo", "Quant", "Size", "Architecture", "Parameters", "Context", "Source", "Status")
    rows: list[LibraryEntry]

    def cell(self, e: LibraryEntry, column: int, role: int) -> Any:
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{e.id}\n{e.path}" + (f"\n{e.problem}" if e.problem else "")
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        return (
            e.name,
            e.repo,
            e.quant,
            gb(e.size),
            e.architecture,
            f"{e.parameters / 1e9:.2f} B" if e.parameters else "",
            f"{e.context_length:,}" if e.context_length else "",
            e.source,
            f"⚠ {e.problem}" if e.problem else "ok",  # the reason in the row, not only in a tooltip
        )[column]


class ModelsPage(QWidget):
    chat_requested = Signal(object)  # LibraryEntry
    library_changed = Signal(object)  # list[LibraryEntry]

    def __init__(
        self,
        roots: Callable[[], list[Root]],
        hidden: Callable[[], list[str]],
        models_dir: Path,
        background: Background,
        add_folder: Callable[[str], None],
        hide: Callable[[str], None],
        cache_file: Path | None = None,
    ) -> None:
        super().__init__()
        self.roots, self.hidden, self.models_dir, self.background = roots, hidden, models_dir, background
        # A rescan reads only the headers of files that changed (the cache is in this user's cache dir).
        self.scanner = Scanner(cache_file or AppPaths.from_env().library_cache_file)
        self.add_folder_setting, self.hide_setting = add_folder, hide
        self.scans = 0  # the newest scan wins
        self.scanning = False
        self.listed = False  # a scan's result has been shown
        self.model = LibraryModel()
        self.view = named(QTableView(), "libraryTable")
        self.view.setAccessibleName("Models")
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setWordWrap(False)
        self.view.verticalHeader().hide()
        self.view.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.view.doubleClicked.connect(lambda _: self._act(self.chat_requested.emit))
        buttons = QHBoxLayout()
        for label, name, slot in (
            ("Chat with it", "chatWithButton", lambda: self._act(self.chat_requested.emit)),
            ("Show in folder", "revealButton", lambda: self._act(self.reveal)),
            ("Delete…", "deleteModelButton", lambda: self._act(self.ask_delete)),
        ):
            button = named(QPushButton(label), name)
            button.clicked.connect(slot)
            buttons.addWidget(button)
        buttons.addStretch(1)
        add = named(QPushButton("Add folder…"), "addFolderButton")
        add.clicked.connect(self._choose_folder)
        rescan = named(QPushButton("Rescan"), "rescanButton")
        rescan.clicked.connect(self.rescan)
        buttons.addWidget(add)
        buttons.addWidget(rescan)
        self.problem = named(QLabel(""), "libraryProblem")
        self.problem.setTextFormat(Qt.TextFormat.PlainText)
        self.problem.setWordWrap(True)
        self.problem.hide()
        self.summary = named(QLabel("Looking for models…"), "librarySummary")
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.problem)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)

    @Slot()
    def rescan(self) -> None:
        self.scans += 1
        number, roots, hidden = self.scans, self.roots(), self.hidden()
        self.scanning = True
        self.background.run(
            lambda: self.scanner.scan(roots, hidden), lambda found, error: self._scanned(number, found, error)
        )

    def _scanned(self, number: int, entries: list[LibraryEntry] | None, error: AppError | None) -> None:
        if number != self.scans:
            return
        self.scanning = False
        if error is not None:
            self._say(error.user_message)
            return
        entries = entries or []
        unchanged = self.listed and entries == self.model.rows
        self.listed = True
        self._summarize(entries)
        if not unchanged:  # else the selection and scroll stay, and no other page is told again
            self.model.show(entries)
            self.library_changed.emit(entries)

    def _summarize(self, entries: list[LibraryEntry]) -> None:
        bad = sum(1 for e in entries if e.problem)
        ours = [e for e in entries if e.source == HUBSIDE]
        self.summary.setText(
            f"{len(entries)} models ({bad} cannot be used) · {gb(disk_usage(entries))} in all, "
            f"{gb(disk_usage(ours))} downloaded by Hubside in {self.models_dir}"
        )

    def selected(self) -> LibraryEntry | None:
        rows = self.view.selectionModel().selectedRows()
        return self.model.rows[rows[0].row()] if rows else None

    def _act(self, action: Callable[[LibraryEntry], Any]) -> None:
        entry = self.selected()
        if entry is not None:
            action(entry)

    def reveal(self, entry: LibraryEntry) -> None:
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(entry.path.parent)))

    def ask_delete(self, entry: LibraryEntry) -> None:
        if entry.source == HUBSIDE:
            question = f"Delete {entry.name} ({gb(entry.size)})? The file is removed from your disk."
        else:
            question = (
                f"Hide {entry.name}? It was not downloaded by Hubside, so its file stays at {entry.path}."
            )
        answer = QMessageBox.question(self, "Remove model", question)
        if answer == QMessageBox.StandardButton.Yes:
            self.remove(entry)

    def remove(self, entry: LibraryEntry) -> None:
        """Delete a model Hubside downloaded; hide one found in place (its file is never touched)."""
        try:
            if entry.source == HUBSIDE:
                delete(entry, self.models_dir)
            else:
                self.hide_setting(str(entry.path))
        except (AppError, OSError) as exc:
            self._say(str(exc))
        self.rescan()

    def _say(self, problem: str) -> None:
        self.problem.setText(problem)
        self.problem.show()

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a folder of GGUF models")
        if folder:
            self.add_folder(folder)

    def add_folder(self, folder: str) -> None:
        self.add_folder_setting(folder)
        self.rescan()
