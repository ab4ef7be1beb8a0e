"""The Server page: switch the local OpenAI-compatible server on and off, its address, port and key, the
models it offers and a live log of its requests. The server itself is Qt-free (app/server/); binding, the
key's keyring and stopping run on the background pool, never on the GUI thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import Qt, QTimer, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QListView,
    QMessageBox,
    QVBoxLayout,
    QWidget,
)

from app.errors import AppError
from app.settings import Settings
from app.ui.background import Background
from app.ui.server_address import LOOPBACK, ServerAddress
from app.ui.server_log import RequestLogView
from app.ui.server_models import ModelIdsModel
from app.ui.widgets import named

if TYPE_CHECKING:
    from app.server.service import Server

log = logging.getLogger(__name__)
Started = tuple["Server", str, list[str]]  # the running server, its key, the models it offers
OpenServer = Callable[[str, int, str], "Server"]  # host, port, key -> a bound server, not yet started
MODELS_INTERVAL_MS = 5000  # the catalog is read again this often while serving (a download shows up)


class ServerPage(QWidget):
    def __init__(
        self,
        open_server: OpenServer,
        read_key: Callable[[], str],
        new_key: Callable[[], str],
        background: Background,
        settings: Settings,
        save: Callable[[], None],
    ) -> None:
        super().__init__()
        self.setObjectName("serverPage")
        self.open_server, self.read_key, self.new_key = open_server, read_key, new_key
        self.background, self.settings, self.save = background, settings, save
        self.server: Server | None = None
        self.key = ""
        self.closing = False
        self.confirm_box: QMessageBox | None = None

        self.switch = named(QCheckBox("Serve models to other apps (OpenAI-compatible API)"), "serverSwitch")
        self.switch.setAccessibleName("Server on")
        self.switch.toggled.connect(self._switched)
        self.message = named(QLabel("The server is off."), "serverMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(self.message.textInteractionFlags().TextSelectableByMouse)

        self.address = ServerAddress(settings.server_port)
        self.address.port.editingFinished.connect(self._port_changed)
        self.address.regenerate.clicked.connect(self._ask_new_key)
        self.host, self.port, self.url = self.address.host, self.address.port, self.address.url
        self.key_field, self.regenerate = self.address.key_field, self.address.regenerate

        self.models = ModelIdsModel()
        self.models_view = named(QListView(), "serverModels")
        self.models_view.setAccessibleName("Models offered")
        self.models_view.setModel(self.models)
        self.models_view.setTextElideMode(Qt.TextElideMode.ElideMiddle)  # owner and file stay readable
        self.models_view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.log_view = RequestLogView()
        self.log_model = self.log_view.log_model

        lists = QHBoxLayout()
        lists.addLayout(_titled("Models offered", self.models_view), 2)
        lists.addLayout(_titled("Requests", self.log_view), 5)
        layout = QVBoxLayout(self)
        layout.addWidget(self.switch)
        layout.addWidget(self.message)
        layout.addWidget(self.address)
        layout.addLayout(lists, 1)

        self.models_timer = QTimer(self)
        self.models_timer.setInterval(MODELS_INTERVAL_MS)
        self.models_timer.timeout.connect(self._read_models)
        self._set_busy(False)
        if settings.server_on_at_start:  # on at the last quit (on this machine only: the host is not kept)
            QTimer.singleShot(0, self._resume)

    @Slot()
    def _resume(self) -> None:
        self.switch.setChecked(True)

    # --- on and off --------------------------------------------------------------------------------
    @Slot(bool)
    def _switched(self, on: bool) -> None:
        if on and self.server is None:
            host = self.address.chosen_host
            if host == LOOPBACK:
                self._start()
            else:
                self._confirm(
                    "Listen on every network",
                    f"Other machines on your networks will be able to reach the server at {host}:"
                    f"{self.port.value()} (they still need the key). Start it?",
                    self._start,
                    self._switch_back,
                )
        elif not on and self.server is not None:
            self._remember(on_at_start=False)
            server, self.server = self.server, None
            self._set_busy(True, "Stopping…")
            self.background.run(server.stop, self._stopped)

    def _start(self) -> None:
        host, port = self.address.chosen_host, self.port.value()
        self._set_busy(True, "Starting…")
        self.background.run(lambda: self._open(host, port, self.read_key), self._started)

    def _open(self, host: str, port: int, key_source: Callable[[], str]) -> Started:
        """On a pool thread: the key (a keyring read), the bound socket, the server running, its models."""
        key = key_source()
        server = self.open_server(host, port, key)
        server.requests.listeners.append(self.log_view.feed)
        server.start()
        if self.closing:  # the window quit while this bound: nobody will stop it later
            server.stop(0)
        return server, key, server.host.catalog.ids()

    def _started(self, result: Started | None, error: AppError | None) -> None:
        if error is not None or result is None:
            self._switch_back()
            self._set_busy(False, _start_failed(error))
            return
        self.server, self.key, ids = result
        self._remember(on_at_start=True)
        self.key_field.setText(self.key)
        self.url.setText(self.server.base_url)
        self.models.show(ids)
        self.log_view.timer.start()
        self.models_timer.start()
        self._set_busy(
            False, f"Serving on {self.server.base_url}: send the key as “Authorization: Bearer KEY”."
        )

    def _stopped(self, _result: Any, error: AppError | None) -> None:
        self._stop_timers()
        self.log_view.read()  # the last requests
        self.url.clear()
        self._set_busy(False, error.user_message if error else "The server is off.")

    def _switch_back(self) -> None:
        self.switch.blockSignals(True)
        self.switch.setChecked(self.server is not None)
        self.switch.blockSignals(False)

    # --- the key -----------------------------------------------------------------------------------
    def _ask_new_key(self) -> None:
        self._confirm(
            "New API key",
            "Apps using the current key will stop working until they are given the new one. Make a new key?",
            self._make_new_key,
        )

    def _make_new_key(self) -> None:
        server, self.server = self.server, None
        host, port = (server.address.host, server.port) if server else ("", 0)
        self._set_busy(True, "Making a new key…")

        def work() -> Started | str:
            if server is None:
                return self.new_key()
            server.stop()  # the running server takes the new key by starting again, on the same port
            return self._open(host, port, self.new_key)

        self.background.run(work, self._new_key_made)

    def _new_key_made(self, result: Started | str | None, error: AppError | None) -> None:
        if isinstance(result, str):
            self.key = result
            self.key_field.setText(result)
            self._set_busy(False, "A new key was made; the server uses it when it starts.")
        elif result is None:
            self._stopped(None, None)
            self._switch_back()
            self._set_busy(False, _start_failed(error))
        else:
            self._started(result, None)

    # --- the rest ----------------------------------------------------------------------------------
    def _confirm(
        self, title: str, text: str, yes: Callable[[], None], no: Callable[[], None] = lambda: None
    ) -> None:
        """A window-modal question (opened, not exec'd: the event loop keeps running)."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, text, parent=self)
        box.setObjectName("serverConfirm")
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.finished.connect(lambda answer: yes() if answer == QMessageBox.StandardButton.Yes else no())
        self.confirm_box = box
        box.open()

    def _set_busy(self, busy: bool, message: str | None = None) -> None:
        self.switch.setEnabled(not busy)
        self.address.set_state(self.server is not None, busy)
        if message is not None:
            self.message.setText(message)

    @Slot()
    def _port_changed(self) -> None:
        self._remember(self.settings.server_on_at_start)

    def _remember(self, on_at_start: bool) -> None:
        """The port and whether the server runs, for the next window (saved only when they change)."""
        settings, port = self.settings, self.port.value()
        if (settings.server_port, settings.server_on_at_start) != (port, on_at_start):
            settings.server_port, settings.server_on_at_start = port, on_at_start
            self.save()

    @Slot()
    def _read_models(self) -> None:
        if self.server is not None:
            self.background.run(self.server.host.catalog.ids, self._models_read)

    @Slot()
    def window_closing(self) -> None:
        self._stop_timers()

    def _stop_timers(self) -> None:
        self.log_view.timer.stop()
        self.models_timer.stop()

    def _models_read(self, ids: list[str] | None, error: AppError | None) -> None:
        if ids is not None:
            self.models.show(ids)

    def stop_server(self, timeout_s: float) -> None:
        """At quit: told to stop (timeout 0), then waited on. Its own engines are closed at once, in a
        thread of their own: a reply streaming from one would otherwise hold the server's graceful
        shutdown (3 s) past the quit's deadline. The chat's engine is the bridge's to close."""
        server = self.server  # Python state only: the window (and this page's C++ side) may be gone
        first, self.closing = not self.closing, True  # a start still binding stops itself (see _open)
        if server is None:
            return
        if first:
            server.stop(0)
            threading.Thread(target=server.host.close, name="server-engines", daemon=True).start()
        server.stop(timeout_s)


def _start_failed(error: AppError | None) -> str:
    text = error.user_message if error else "The server did not start."
    return "The server could not start. " + text.replace("choose another --port", "choose another port")


def _titled(title: str, view: QWidget) -> QVBoxLayout:
    layout = QVBoxLayout()
    layout.addWidget(QLabel(title))
    layout.addWidget(view, 1)
    return layout
