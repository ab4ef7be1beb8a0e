"""The composition root: builds every service once and hands each widget the ones it uses."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import as_file, files

from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from app.chat.store import ChatStore, DatabaseTooNew
from app.hub.client import HubClient
from app.hub.token import hub_token
from app.paths import AppPaths
from app.runtime.engine import Engine
from app.settings import Settings, SettingsStore
from app.ui.background import Background
from app.ui.chat_page import ChatPage
from app.ui.discover_page import DiscoverPage
from app.ui.engine_bridge import EngineBridge
from app.ui.main_window import MainWindow


@dataclass
class Services:
    settings_store: SettingsStore
    settings: Settings
    chat_store: ChatStore
    bridge: EngineBridge
    background: Background

    def close(self) -> None:
        self.background.close()
        self.bridge.shutdown()
        self.chat_store.close()


def build_window(paths: AppPaths, engine: Engine | None = None) -> tuple[MainWindow, Services]:
    """The window and its services; `engine` replaces the real one (the GUI benchmark's fast fake)."""
    settings_store = SettingsStore(paths.settings_file)
    settings = settings_store.load()
    chat_store = ChatStore(paths.database_file)
    bridge = EngineBridge(engine or Engine(paths))
    background = Background()
    services = Services(settings_store, settings, chat_store, bridge, background)
    chat = ChatPage(chat_store, bridge, settings, lambda: settings_store.save(settings))
    hub_cache = paths.cache_dir / "hub"
    discover = DiscoverPage(lambda: HubClient(hub_cache, hub_token()), background)
    window = MainWindow(chat, bridge, settings, settings_store, {"discover": discover})
    if chat_store.moved_aside is not None:
        chat.banner_text.setText(
            f"Your chat database could not be read; it was kept as {chat_store.moved_aside.name} "
            "and a new one was started."
        )
        chat.reload_button.hide()
        chat.banner.show()
    return window, services


def run_window(paths: AppPaths, argv: list[str]) -> int:
    """Open the main window and run the event loop until it closes; returns the exit code."""
    app = QApplication.instance() or QApplication(argv)
    assert isinstance(app, QApplication)
    app.setApplicationName("Hubside")
    app.setDesktopFileName("hubside")
    with as_file(files("app.resources") / "hubside.svg") as icon_path:
        app.setWindowIcon(QIcon(str(icon_path)))
    try:
        window, services = build_window(paths)
    except DatabaseTooNew as exc:
        QMessageBox.critical(None, "Hubside", exc.user_message)
        return 1
    window.show()
    try:
        return app.exec()
    finally:
        services.close()
