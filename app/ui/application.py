"""The composition root: builds every service once and hands each widget the ones it uses."""

from __future__ import annotations

import logging
import multiprocessing
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication, QMessageBox

from app.chat.store import ChatStore
from app.compare.store import CompareStore
from app.downloads.jobs import JobStore, job_files
from app.downloads.manager import DownloadManager
from app.downloads.throttle import Bandwidth, mbps_to_rate
from app.errors import AppError, to_app_error
from app.hub.client import HubClient, ModelDetails
from app.hub.quants import Variant
from app.hub.token import hub_token
from app.library.scan import LibraryEntry, Scanner, default_roots
from app.paths import AppPaths
from app.remote.endpoints import endpoint_store
from app.runtime.engine import Engine
from app.runtime.protocol import ChatMessage
from app.settings import Settings, SettingsStore
from app.ui.background import Background
from app.ui.chat_page import ChatPage
from app.ui.compare_page import ComparePage
from app.ui.crash import CrashReporter
from app.ui.discover_page import DiscoverPage
from app.ui.downloads_page import DownloadsPage
from app.ui.endpoints_dialog import EndpointsDialog
from app.ui.engine_bridge import EngineBridge
from app.ui.main_window import MainWindow
from app.ui.models_page import ModelsPage
from app.ui.remote_bridge import RemoteModels
from app.ui.server_page import ServerPage
from app.ui.settings_dialog import SettingsDialog, apply_theme
from app.ui.single_instance import SingleInstance, claim
from app.ui.welcome import WelcomeDialog

if TYPE_CHECKING:
    from app.downloads.transfer import Transfer
    from app.server.service import Server

log = logging.getLogger(__name__)
LIBRARY_SCAN_DELAY_MS = 300
QUIT_TIMEOUT_S = 2.5  # the whole quit, whatever runs (the bar: the window's process ends within 3 s)
ENGINE_RESERVE_S = 0.5  # of what is left after Compare: for the chat's engine to be stopped, or killed


@dataclass
class Services:
    settings_store: SettingsStore
    settings: Settings
    chat_store: ChatStore
    bridge: EngineBridge
    background: Background
    downloads: DownloadManager
    jobs: JobStore
    comparisons: CompareStore
    compare_page: ComparePage | None = None  # its comparison and the thread that runs it
    server_page: ServerPage | None = None  # the local API server, when it is on

    def close(self, timeout_s: float = QUIT_TIMEOUT_S) -> None:
        """Quit within `timeout_s` in every state: all is told to stop first, then each part is waited on
        with what is left of one deadline; an engine that has not stopped by then is killed. Running
        downloads stop where they are and go on at the next start (their parts and jobs are on disk)."""
        deadline = time.monotonic() + timeout_s

        def left(reserve_s: float = 0.0) -> float:
            return max(0.0, deadline - reserve_s - time.monotonic())

        self.downloads.close(0)  # told to stop now, waited on below
        if self.server_page is not None:
            self.server_page.stop_server(0)  # told now; its streams on the chat's engine end with it
        page = self.compare_page
        if page is not None and page.comparison is not None:
            page.comparison.close(left(ENGINE_RESERVE_S))
        self.bridge.shutdown(left())
        compare_ended = _joined(page.worker if page else None, left())
        if self.server_page is not None:
            self.server_page.stop_server(left())
        downloads_ended = self.downloads.close(left())
        self.background.close(int(left() * 1000))
        for child in multiprocessing.active_children():  # an engine started while all this stopped
            log.warning("engine %s still running at quit: killed", child.pid)
            child.kill()
        # A thread left behind (a daemon, ended with the process) may still write: its store stays open.
        if compare_ended:
            self.comparisons.close()
        if downloads_ended:
            self.jobs.close()
        self.chat_store.close()


def _joined(thread: threading.Thread | None, timeout_s: float) -> bool:
    if thread is not None:
        thread.join(timeout_s)
    return thread is None or not thread.is_alive()


def _open_stores(paths: AppPaths) -> tuple[ChatStore, JobStore, CompareStore]:
    """The databases, each of which may refuse to open (locked, a full disk, from a newer Hubside): then
    those already open are closed and nothing else has started (no engine, no download)."""
    with ExitStack() as opened:
        chat_store = ChatStore(paths.database_file)
        opened.callback(chat_store.close)
        jobs = JobStore(paths.downloads_file)
        opened.callback(jobs.close)
        comparisons = CompareStore(paths.compare_file)
        opened.pop_all()
    return chat_store, jobs, comparisons


def build_window(paths: AppPaths, engine: Engine | None = None) -> tuple[MainWindow, Services]:
    """The window and its services; `engine` replaces the real one (the GUI benchmark's fast fake)."""
    settings_store = SettingsStore(paths.settings_file)
    settings = settings_store.load()
    chat_store, jobs, comparisons = _open_stores(paths)  # first: a database that cannot open starts nothing
    bridge = EngineBridge(engine or Engine(paths))
    background = Background()

    def models_dir() -> Path:  # the setting can change while the app runs
        return settings.models_folder(paths.models_dir)

    def token() -> str | None:
        return hub_token(paths.token_file)

    bandwidth = Bandwidth(mbps_to_rate(settings.download_limit_mbps))  # one for every download of the window

    def transfer() -> Transfer:
        import requests  # loaded with the first download, not at start-up

        from app.downloads.transfer import Transfer

        return Transfer(
            requests.Session(),
            token(),
            stall_s=float(settings.download_stall_seconds),
            connections=settings.download_connections,  # read at each job's start: a change applies next
            limiter=bandwidth,
        )

    downloads = DownloadManager(models_dir(), jobs, transfer, settings.max_parallel_downloads, bandwidth)
    services = Services(
        settings_store, settings, chat_store, bridge, background, downloads, jobs, comparisons
    )

    def save() -> None:  # what the window changed, onto the file as it is now (`hubside rm` may write too)
        settings_store.save(settings)

    endpoints = endpoint_store(paths)
    chat = ChatPage(chat_store, bridge, settings, save, RemoteModels(endpoints))
    chat.apply_defaults(settings)

    def download(client: HubClient, details: ModelDetails, variant: Variant) -> None:
        downloads.add(
            details.id, details.sha, variant.label, job_files(details, variant, client.api.endpoint)
        )

    def hub_client() -> HubClient:
        return HubClient(paths.hub_cache_dir, token_source=token, mirror=settings.hub_mirror)

    discover = DiscoverPage(hub_client, background, download)

    def add_folder(folder: str) -> None:
        def add(on_disk: Settings) -> None:
            if folder not in on_disk.extra_model_dirs:
                on_disk.extra_model_dirs.append(folder)

        settings_store.save(settings, add)

    def hide(path: str) -> None:
        settings_store.save(settings, lambda on_disk: on_disk.hidden_models.append(path))

    models = ModelsPage(
        lambda: default_roots(models_dir(), settings.extra_model_dirs),
        lambda: list(settings.hidden_models),
        models_dir(),
        background,
        add_folder,
        hide,
        paths.library_cache_file,
    )
    downloads_page = DownloadsPage(downloads)

    def open_as_chat(title: str, system: str, messages: list[ChatMessage]) -> None:
        conversation = chat_store.create_conversation(title, system)
        for message in messages:
            chat_store.add_message(conversation, message.role, message.content, reasoning=message.reasoning)
        window.show_conversation(conversation)

    compare = ComparePage(paths, comparisons, open_as_chat, endpoints.resolve, background)
    if chat.remote is not None:
        chat.remote.offers_changed.connect(compare.set_remote)  # one listing for both pickers
    server = _server_page(paths, settings, bridge, background, models_dir, save)
    services.server_page = server
    models.library_changed.connect(chat.set_library)
    models.library_changed.connect(compare.set_library)
    downloads_page.finished_one.connect(models.rescan)
    pages = {"discover": discover, "models": models, "downloads": downloads_page, "compare": compare}
    pages["server"] = server
    window = MainWindow(chat, bridge, settings, settings_store, pages)
    window.closing.connect(compare.stop)  # at once; Services.close waits for it, within the quit's deadline
    services.compare_page = compare
    window.closing.connect(server.window_closing)  # its timers; the server stops in Services.close
    window.closing.connect(discover.shutdown)  # a search under way asks the Hub nothing more

    def apply_settings(changed: Settings) -> None:
        """Settings take effect now: the chat's load defaults, the queue and its limit, the library, the
        theme (the mirror and the connections at the next search and download)."""
        save()
        apply_theme(changed.theme)
        chat.apply_defaults(changed)
        downloads.parallel = max(1, changed.max_parallel_downloads)
        bandwidth.set_rate(mbps_to_rate(changed.download_limit_mbps))  # running downloads too, at once
        if discover.client.mirror != changed.hub_mirror:  # the next search asks the new mirror
            discover.client = hub_client()
        downloads.models_dir = models.models_dir = models_dir()
        models.rescan()

    def open_endpoints() -> None:
        EndpointsDialog(endpoints, background, chat.refresh_remote, window).open()

    window.settings_dialog = lambda: SettingsDialog(
        settings, paths.models_dir, paths.token_file, apply_settings, window, open_endpoints
    )
    window.logs_dir = paths.logs_dir

    def welcome() -> None:
        settings.welcomed = True
        save()
        WelcomeDialog(window.show_in_discover, chat.choose_model_file, background, hub_client, window).open()

    window.welcome = welcome
    apply_theme(settings.theme)
    models.chat_requested.connect(window.chat_with)
    QTimer.singleShot(LIBRARY_SCAN_DELAY_MS, models.rescan)  # after the first paint, off the GUI thread
    if chat_store.moved_aside is not None:
        chat.banner_text.setText(
            f"Your chat database could not be read; it was kept as {chat_store.moved_aside.name} "
            "and a new one was started."
        )
        chat.reload_button.hide()
        chat.banner.show()
    if comparisons.moved_aside is not None:
        compare.message.setText(
            f"Your comparisons could not be read; they were kept as {comparisons.moved_aside.name} and a "
            "new file was started."
        )
    return window, services


def _server_page(
    paths: AppPaths, settings: Settings, bridge: EngineBridge, background: Background,
    models_dir: Callable[[], Path], save: Callable[[], None],
) -> ServerPage:  # fmt: skip
    """The Server page and what it starts: the server over the library, sharing the chat's engine."""
    key_file = paths.config_dir / "server-key"

    def shared_engine(path: Path) -> Engine | None:
        """The chat's engine when it has this model loaded (it serves the chat and the server's requests,
        FIFO): one copy of the weights."""
        engine = bridge.engine
        model = engine.model
        if engine.alive and model is not None and model.path.resolve() == path.resolve():
            return engine
        return None

    def open_server(host: str, port: int, key: str) -> Server:
        from app.server.models import Catalog, HostOptions  # Starlette and uvicorn: at the first start
        from app.server.service import Address, Server

        scanner = Scanner(paths.library_cache_file)  # what the Models page reads too: changed files only

        def library() -> list[LibraryEntry]:
            roots = default_roots(models_dir(), settings.extra_model_dirs)
            return scanner.scan(roots, settings.hidden_models)

        options = HostOptions(
            parallel=max(1, settings.server_parallel),
            n_threads=settings.threads,
            idle_s=settings.server_idle_unload_minutes * 60,
        )
        cors = tuple(settings.server_cors_origins)
        return Server(paths, Catalog(library), Address(host, port), options, key, cors, shared_engine)

    def read_key() -> str:
        from app.server.keys import server_key

        return server_key(key_file)[0]

    def new_key() -> str:
        from app.server.keys import regenerate_key

        return regenerate_key(key_file)

    return ServerPage(open_server, read_key, new_key, background, settings, save)


def show_startup_error(exc: Exception) -> None:
    """A window that cannot start says why in a dialog (started from a menu, it has no terminal to read)."""
    error = to_app_error(exc)
    logging.getLogger(__name__).error("start-up failed: %s", error, exc_info=not isinstance(exc, AppError))
    if QApplication.instance() is None:  # failed before the window's application was made
        QApplication(sys.argv[:1])
    box = QMessageBox(QMessageBox.Icon.Critical, "Hubside", error.user_message)
    box.setObjectName("startupError")
    if error.detail:
        box.setDetailedText(error.detail)
    box.exec()


def run_window(paths: AppPaths, argv: list[str], link: str | None = None) -> int:
    """Open the main window and run the event loop until it closes; returns the exit code. A second launch
    on the same data dir hands its request (and `link`, a hubside:// link) to the first and returns 0."""
    app = QApplication.instance() or QApplication(argv)
    assert isinstance(app, QApplication)
    app.setApplicationName("Hubside")
    app.setDesktopFileName("hubside")
    try:
        lock = claim(paths.data_dir, link or "show")  # before any service is built: one resumes the jobs
    except AppError as exc:  # another instance holds the lock and does not answer
        show_startup_error(exc)
        return 1
    if lock is None:
        return 0
    instance = SingleInstance(paths.data_dir)  # listening at once: a launch racing ours hands over to it
    with as_file(files("app.resources") / "hubside.svg") as icon_path:
        app.setWindowIcon(QIcon(str(icon_path)))
    reporter = CrashReporter(paths.log_file).install()
    try:
        window, services = build_window(paths)
    except Exception as exc:  # a database locked, on a full disk or from a newer Hubside, a folder denied
        show_startup_error(exc)
        instance.close()  # the next start is a window of its own, not a hand-over to this one
        reporter.uninstall()
        lock.unlock()
        return 1
    instance.message.connect(window.handle_request)
    window.show()
    if link:
        window.handle_request(link)
    elif not services.settings.welcomed:
        window.welcome()
    try:
        return app.exec()
    finally:
        instance.close()
        services.close()
        reporter.uninstall()
        lock.unlock()
