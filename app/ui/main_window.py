"""The main window: a left navigation over the pages, and a status bar with the model and the engine."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import psutil
from PySide6.QtCore import QByteArray, Qt, QTimer, QUrl, Signal, Slot
from PySide6.QtGui import QAction, QCloseEvent, QDesktopServices, QKeySequence
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QListWidget, QMainWindow, QStackedWidget, QWidget

from app.errors import AppError
from app.library.scan import LibraryEntry
from app.settings import Settings, SettingsStore
from app.ui.chat_page import ChatPage
from app.ui.discover_page import DiscoverPage
from app.ui.engine_bridge import EngineBridge
from app.ui.single_instance import parse_link
from app.ui.widgets import named
from app.units import gb

log = logging.getLogger(__name__)

STATUS_INTERVAL_MS = 2000


def _engine_rss(pid: int | None) -> int | None:
    """The engine's resident memory, asked of the system: no call into the engine."""
    if pid is None:
        return None
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:  # gone, or not ours to look at
        return None


class MainWindow(QMainWindow):
    closing = Signal()  # pages with work on threads of their own stop it

    def __init__(
        self,
        chat: ChatPage,
        bridge: EngineBridge,
        settings: Settings,
        store: SettingsStore,
        more_pages: dict[str, QWidget],
    ) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.setWindowTitle("Hubside")
        self.chat = chat
        self.bridge = bridge
        self.settings = settings
        self.settings_store = store

        self.pages: dict[str, QWidget] = {"chat": chat, **more_pages}
        self.navigation = named(QListWidget(), "navigation")  # a fixed list of pages, not data
        self.navigation.setAccessibleName("Pages")
        self.navigation.setFixedWidth(140)
        self.stack = QStackedWidget()
        for name, page in self.pages.items():
            self.navigation.addItem(name.title())
            self.stack.addWidget(page)
        self.navigation.currentRowChanged.connect(self._show_page)
        central = QWidget()
        layout = QHBoxLayout(central)
        layout.addWidget(self.navigation)
        layout.addWidget(self.stack, 1)
        self.setCentralWidget(central)

        self.model_label = named(QLabel("no model loaded"), "statusModel")
        self.model_label.setTextFormat(Qt.TextFormat.PlainText)
        self.engine_label = named(QLabel(), "statusEngine")
        self.statusBar().addWidget(self.model_label, 1)
        self.statusBar().addPermanentWidget(self.engine_label)
        chat.model_changed.connect(self.model_label.setText)
        self.status_timer = QTimer(self)
        self.status_timer.setInterval(STATUS_INTERVAL_MS)
        self.status_timer.timeout.connect(self._update_engine_status)
        self.status_timer.start()
        self._update_engine_status()

        # Menus: settings, quit, the logs.
        self.settings_dialog: Callable[[], QDialog] | None = None  # set by the composition root
        self.welcome: Callable[[], None] = lambda: None
        self.logs_dir: Path | None = None
        file_menu = self.menuBar().addMenu("&File")
        settings_action = QAction("&Settings…", self)
        settings_action.setShortcut(QKeySequence.StandardKey.Preferences)
        settings_action.triggered.connect(self.open_settings)
        settings_action.setObjectName("settingsAction")
        file_menu.addAction(settings_action)
        quit_action = QAction("&Quit", self)
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        quit_action.setObjectName("quitAction")
        file_menu.addAction(quit_action)
        help_menu = self.menuBar().addMenu("&Help")
        logs_action = QAction("Show &logs", self)
        logs_action.triggered.connect(self.show_logs)
        logs_action.setObjectName("showLogsAction")
        help_menu.addAction(logs_action)

        # Ctrl+N from anywhere in the window.
        new_chat = QAction("New chat", self)
        new_chat.setShortcut(QKeySequence.StandardKey.New)
        new_chat.triggered.connect(chat.new_chat)
        self.addAction(new_chat)
        search = QAction("Search chats", self)
        search.setShortcut(QKeySequence.StandardKey.Find)
        search.triggered.connect(chat.focus_search)
        self.addAction(search)
        names = list(self.pages)
        self.navigation.setCurrentRow(names.index(settings.last_page) if settings.last_page in names else 0)
        if settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(settings.window_geometry.encode()))
        else:
            self.resize(1200, 780)

    def open_settings(self) -> QDialog | None:
        if self.settings_dialog is None:
            return None
        dialog = self.settings_dialog()
        dialog.open()
        return dialog

    def show_logs(self) -> None:
        if self.logs_dir is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.logs_dir)))

    @Slot(str)
    def handle_request(self, request: str) -> None:
        """From a second launch: "show", or a hubside:// link to open in Discover."""
        self.showNormal()
        self.raise_()
        self.activateWindow()
        if request == "show":
            return
        try:
            link = parse_link(request)
        except AppError as exc:
            self.statusBar().showMessage(exc.user_message, 10_000)
            return
        self.show_in_discover(link.repo)
        if link.file:
            self.statusBar().showMessage(f"{link.repo}: {link.file}", 10_000)

    def show_in_discover(self, repo: str) -> None:
        discover = self.pages.get("discover")
        if isinstance(discover, DiscoverPage):
            self.navigation.setCurrentRow(list(self.pages).index("discover"))
            discover.open_model(repo)

    def show_conversation(self, conversation_id: int) -> None:
        self.navigation.setCurrentRow(list(self.pages).index("chat"))
        self.chat.open_conversation(conversation_id)

    def chat_with(self, entry: LibraryEntry) -> None:
        self.navigation.setCurrentRow(list(self.pages).index("chat"))
        self.chat.chat_with(entry)

    @Slot(int)
    def _show_page(self, row: int) -> None:
        self.stack.setCurrentIndex(row)
        self.settings.last_page = list(self.pages)[row]

    @Slot()
    def _update_engine_status(self) -> None:
        rss = _engine_rss(self.bridge.engine.pid) if self.bridge.engine.alive else None
        self.engine_label.setText("engine: stopped" if rss is None else f"engine: running · {gb(rss)}")

    def closeEvent(self, event: QCloseEvent) -> None:
        self.status_timer.stop()
        self.closing.emit()
        self.chat.shutdown()
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64().data()).decode()
        try:
            self.settings_store.save(self.settings)
        except AppError as exc:  # another process holds the settings: quit anyway, keeping theirs
            log.warning("settings not saved on quit: %s", exc.user_message)
        super().closeEvent(event)
