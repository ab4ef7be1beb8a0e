"""The Server page: switch the local OpenAI-compatible server on and off, its address, port and key, the
models it offers and a live log of its requests. The server itself is Qt-free (app/server/); binding, the
key's keyring and stopping run on the background pool, never on the GUI thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QTimer, Slot
from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListView,
    QMessageBox,
    QPushButton,
    QSpinBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.errors import AppError
from app.settings import Settings
from app.ui.background import Background
from app.ui.server_models import ModelIdsModel, RequestFeed, RequestLogModel
from app.ui.widgets import named

if TYPE_CHECKING:
    from app.server.service import Server

log = logging.getLogger(__name__)
Started = tuple["Server", str, list[str]]  # the running server, its key, the models it offers
OpenServer = Callable[[str, int, str], "Server"]  # host, port, key -> a bound server, not yet started
LOG_INTERVAL_MS = 250  # the request log is read about 4 times a second
MODELS_EVERY = 20  # log ticks between two reads of the catalog (5 s: a download shows up)
LOOPBACK = "127.0.0.1"
HOSTS = (("This computer only (127.0.0.1)", LOOPBACK), ("Every network (0.0.0.0)", "0.0.0.0"))


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
        self.feed = RequestFeed()
        self.confirm_box: QMessageBox | None = None

        self.switch = named(QCheckBox("Serve models to other apps (OpenAI-compatible API)"), "serverSwitch")
        self.switch.setAccessibleName("Server on")
        self.switch.toggled.connect(self._switched)
        self.message = named(QLabel("The server is off."), "serverMessage")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(self.message.textInteractionFlags().TextSelectableByMouse)

        self.host = named(QComboBox(), "serverHost")
        self.host.setAccessibleName("Listen on")
        for label, host in HOSTS:
            self.host.addItem(label, host)
        self.port = named(QSpinBox(), "serverPort")
        self.port.setAccessibleName("Port")
        self.port.setRange(1, 65535)
        self.port.setValue(settings.server_port)
        self.port.setToolTip("Used at the next start")
        self.port.editingFinished.connect(self._port_changed)
        mono = QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)
        self.url = named(QLineEdit(), "serverUrl")
        self.url.setAccessibleName("Base URL")
        self.url.setReadOnly(True)
        self.url.setPlaceholderText("Shown while the server is on")
        self.key_field = named(QLineEdit(), "serverKey")
        self.key_field.setAccessibleName("API key")
        self.key_field.setReadOnly(True)
        self.key_field.setFont(mono)
        self.key_field.setPlaceholderText("Made when the server first starts")
        self.copy_url = named(QPushButton("Copy"), "copyUrl")
        self.copy_url.clicked.connect(lambda: self._copy(self.url.text()))
        self.copy_key = named(QPushButton("Copy"), "copyKey")
        self.copy_key.clicked.connect(lambda: self._copy(self.key))
        self.regenerate = named(QPushButton("New key…"), "regenerateKey")
        self.regenerate.clicked.connect(self._ask_new_key)

        form = QFormLayout()
        form.addRow("Listen on", self.host)
        form.addRow("Port", self.port)
        form.addRow("Base URL", _row(self.url, self.copy_url))
        form.addRow("API key", _row(self.key_field, self.copy_key, self.regenerate))

        self.models = ModelIdsModel()
        self.models_view = named(QListView(), "serverModels")
        self.models_view.setAccessibleName("Models offered")
        self.models_view.setModel(self.models)
        self.log_model = RequestLogModel()
        self.log_view = named(QTableView(), "serverLog")
        self.log_view.setAccessibleName("Requests")
        self.log_view.setModel(self.log_model)
        self.log_view.verticalHeader().hide()
        self.log_view.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)
        self.log_view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)

        lists = QHBoxLayout()
        lists.addLayout(_titled("Models offered", self.models_view), 1)
        lists.addLayout(_titled("Requests", self.log_view), 2)
        layout = QVBoxLayout(self)
        layout.addWidget(self.switch)
        layout.addWidget(self.message)
        layout.addLayout(form)
        layout.addLayout(lists, 1)

        self.ticks = 0
        self.timer = QTimer(self)
        self.timer.setInterval(LOG_INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self._set_busy(False)

    # --- on and off --------------------------------------------------------------------------------
    @Slot(bool)
    def _switched(self, on: bool) -> None:
        if on and self.server is None:
            host = str(self.host.currentData())
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
            server, self.server = self.server, None
            self._set_busy(True, "Stopping…")
            self.background.run(server.stop, self._stopped)

    def _start(self) -> None:
        host, port = str(self.host.currentData()), self.port.value()
        self._set_busy(True, "Starting…")
        self.background.run(lambda: self._open(host, port, self.read_key), self._started)

    def _open(self, host: str, port: int, key_source: Callable[[], str]) -> Started:
        """On a pool thread: the key (a keyring read), the bound socket, the server running, its models."""
        key = key_source()
        server = self.open_server(host, port, key)
        server.requests.listeners.append(self.feed)
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
        self.key_field.setText(self.key)
        self.url.setText(self.server.base_url)
        self.models.show(ids)
        self.timer.start()
        self._set_busy(
            False, f"Serving on {self.server.base_url}: send the key as “Authorization: Bearer KEY”."
        )

    def _stopped(self, _result: Any, error: AppError | None) -> None:
        self.timer.stop()
        self._tick()  # the last requests
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
        self.regenerate.setEnabled(not busy)
        self.host.setEnabled(not busy and self.server is None)
        self.copy_url.setEnabled(self.server is not None)
        self.copy_key.setEnabled(bool(self.key))
        if message is not None:
            self.message.setText(message)

    @Slot()
    def _port_changed(self) -> None:
        if self.settings.server_port != self.port.value():
            self.settings.server_port = self.port.value()
            self.save()

    def _copy(self, text: str) -> None:
        QGuiApplication.clipboard().setText(text)

    @Slot()
    def _tick(self) -> None:
        bar = self.log_view.verticalScrollBar()
        at_end = bar.value() == bar.maximum()
        self.log_model.append(self.feed.take())
        if at_end:
            self.log_view.scrollToBottom()
        self.ticks += 1
        server = self.server
        if server is not None and self.ticks % MODELS_EVERY == 0:
            self.background.run(server.host.catalog.ids, self._models_read)

    def _models_read(self, ids: list[str] | None, error: AppError | None) -> None:
        if ids is not None:
            self.models.show(ids)

    def stop_server(self, timeout_s: float) -> None:
        """At quit: told to stop (timeout 0), then waited on. Its own engines are closed at once, in a
        thread of their own: a reply streaming from one would otherwise hold the server's graceful
        shutdown (3 s) past the quit's deadline. The chat's engine is the bridge's to close."""
        server = self.server
        self.timer.stop()
        if server is None:
            return
        if not self.closing:
            self.closing = True
            server.stop(0)
            threading.Thread(target=server.host.close, name="server-engines", daemon=True).start()
        server.stop(timeout_s)


def _start_failed(error: AppError | None) -> str:
    text = error.user_message if error else "The server did not start."
    return "The server could not start. " + text.replace("choose another --port", "choose another port")


def _row(*widgets: QWidget) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for index, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if index == 0 else 0)
    return row


def _titled(title: str, view: QWidget) -> QVBoxLayout:
    layout = QVBoxLayout()
    layout.addWidget(QLabel(title))
    layout.addWidget(view, 1)
    return layout
