"""Where the user writes: the message box (Enter sends, Shift+Enter starts a new line, Esc stops a reply
or an edit) with Send and Stop."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QHBoxLayout, QPlainTextEdit, QPushButton, QWidget

from app.ui.widgets import named


class ChatInput(QPlainTextEdit):
    submitted = Signal()
    stop_requested = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
        elif event.key() == Qt.Key.Key_Escape:
            self.stop_requested.emit()
        else:
            super().keyPressEvent(event)


class Composer(QWidget):
    send_requested = Signal()
    stop_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        self.input = named(ChatInput(placeholderText="Ask something (Enter sends)"), "chatInput")
        self.input.setAccessibleName("Message")
        self.input.setMaximumHeight(100)
        self.send_button = named(QPushButton("Send"), "sendButton")
        self.send_button.setAccessibleName("Send")
        self.stop_button = named(QPushButton("Stop"), "stopButton")
        self.stop_button.setAccessibleName("Stop the reply")
        for source in (self.input.submitted, self.send_button.clicked):
            source.connect(self.send_requested)
        for source in (self.input.stop_requested, self.stop_button.clicked):
            source.connect(self.stop_requested)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.input, 1)
        layout.addWidget(self.send_button)
        layout.addWidget(self.stop_button)

    def text(self) -> str:
        return self.input.toPlainText().strip()

    def set_busy(self, busy: bool, can_send: bool) -> None:
        self.send_button.setEnabled(not busy and can_send)
        self.stop_button.setEnabled(busy)
