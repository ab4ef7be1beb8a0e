"""The strip over the results that says what went wrong (offline, an HTTP error) and offers a retry."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton

from app.ui.widgets import named


class Banner(QFrame):
    retry_clicked = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("discoverBanner")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.text = named(QLabel(), "discoverBannerText")
        self.text.setTextFormat(Qt.TextFormat.PlainText)  # Hub error messages are untrusted text
        self.text.setWordWrap(True)
        retry = named(QPushButton("Retry"), "discoverRetry")
        retry.clicked.connect(self.retry_clicked)
        layout = QHBoxLayout(self)
        layout.addWidget(self.text, 1)
        layout.addWidget(retry)
        self.hide()

    def show_message(self, message: str) -> None:
        self.text.setText(message)
        self.show()
