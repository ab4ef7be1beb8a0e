"""How other apps reach the window's server: where it listens (host, port), its base URL and its key, each
copyable; the key can be replaced (the page asks first)."""

from __future__ import annotations

from PySide6.QtGui import QFontDatabase, QGuiApplication
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from app.ui.widgets import named

LOOPBACK = "127.0.0.1"
HOSTS = (("This computer only (127.0.0.1)", LOOPBACK), ("Every network (0.0.0.0)", "0.0.0.0"))


class ServerAddress(QWidget):
    def __init__(self, port: int) -> None:
        super().__init__()
        self.host = named(QComboBox(), "serverHost")
        self.host.setAccessibleName("Listen on")
        for label, host in HOSTS:
            self.host.addItem(label, host)
        self.port = named(QSpinBox(), "serverPort")
        self.port.setAccessibleName("Port")
        self.port.setRange(1, 65535)
        self.port.setValue(port)
        self.port.setToolTip("Used at the next start")
        for compact in (self.host, self.port):
            compact.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
        self.url = _read_only("serverUrl", "Base URL", "Shown while the server is on")
        self.key_field = _read_only("serverKey", "API key", "Made when the server first starts")
        self.key_field.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.copy_url = named(QPushButton("Copy"), "copyUrl")
        self.copy_url.clicked.connect(lambda: _copy(self.url.text()))
        self.copy_key = named(QPushButton("Copy"), "copyKey")
        self.copy_key.clicked.connect(lambda: _copy(self.key_field.text()))
        self.regenerate = named(QPushButton("New key…"), "regenerateKey")

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.addRow("Listen on", self.host)
        form.addRow("Port", self.port)
        form.addRow("Base URL", _row(self.url, self.copy_url))
        form.addRow("API key", _row(self.key_field, self.copy_key, self.regenerate))

    def set_state(self, running: bool, busy: bool) -> None:
        self.host.setEnabled(not busy and not running)
        self.regenerate.setEnabled(not busy)
        self.copy_url.setEnabled(running)
        self.copy_key.setEnabled(bool(self.key_field.text()))

    @property
    def chosen_host(self) -> str:
        return str(self.host.currentData())


def _read_only(object_name: str, accessible_name: str, placeholder: str) -> QLineEdit:
    field = named(QLineEdit(), object_name)  # selectable, not editable
    field.setAccessibleName(accessible_name)
    field.setReadOnly(True)
    field.setPlaceholderText(placeholder)
    return field


def _copy(text: str) -> None:
    QGuiApplication.clipboard().setText(text)


def _row(*widgets: QWidget) -> QWidget:
    row = QWidget()
    layout = QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    for index, widget in enumerate(widgets):
        layout.addWidget(widget, 1 if index == 0 else 0)
    return row
