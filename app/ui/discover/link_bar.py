"""Asks before a model card's link opens in the browser, showing where it goes."""

from __future__ import annotations

from PySide6.QtCore import Qt, QUrl, Slot
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from app.ui.widgets import named


class LinkConfirmBar(QFrame):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("linkBar")
        self.pending_url: QUrl | None = None
        self.text = named(QLabel(), "linkText")
        self.text.setTextFormat(Qt.TextFormat.PlainText)
        open_link = named(QPushButton("Open"), "openLink")
        open_link.clicked.connect(self._open_pending_link)
        cancel_link = named(QPushButton("Cancel"), "cancelLink")
        cancel_link.clicked.connect(self.hide)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.text, 1)
        layout.addWidget(open_link)
        layout.addWidget(cancel_link)
        self.hide()

    @Slot(QUrl)
    def ask(self, url: QUrl) -> None:
        self.pending_url = url
        self.text.setText(f"Open {url.toString()} in your browser?")
        self.show()

    @Slot()
    def _open_pending_link(self) -> None:
        if self.pending_url is not None:
            QDesktopServices.openUrl(self.pending_url)
        self.pending_url = None
        self.hide()
