"""The first-run welcome: this machine's memory, CPU and GPU, and two or three starter models that fit
(shown in Discover), or a GGUF file already on disk."""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.hub.starters import cpu_name, suggestions
from app.runtime.memory import free_ram, free_vram, gb, gpu_name
from app.ui.widgets import named


class WelcomeDialog(QDialog):
    def __init__(
        self, show_model: Callable[[str], None], open_file: Callable[[], None], parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("welcomeDialog")
        self.setWindowTitle("Welcome to Hubside")
        ram, vram = free_ram(), free_vram()
        title = QLabel("<h2>Welcome to Hubside</h2>")
        facts = named(QLabel(), "welcomeMachine")
        facts.setTextFormat(Qt.TextFormat.PlainText)
        facts.setText(
            f"This machine: {gb(ram)} of memory free · CPU {cpu_name()} · "
            f"GPU {gpu_name() or 'none found (models run on the CPU)'}"
            + (f" ({gb(vram)} free)" if vram is not None else "")
        )
        facts.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.addWidget(title)
        layout.addWidget(facts)
        layout.addWidget(QLabel("Models that fit it, to download from the Hugging Face Hub:"))
        picks = suggestions(max(ram, vram or 0))
        self.suggested = [p.repo for p in picks]
        for pick in picks:
            row = QHBoxLayout()
            label = QLabel(f"{pick.label} (about {gb(pick.q4_bytes)})")
            label.setTextFormat(Qt.TextFormat.PlainText)
            button = named(QPushButton("Show in Discover"), f"starter-{pick.repo}")
            button.clicked.connect(lambda _=False, repo=pick.repo: self._choose(lambda: show_model(repo)))
            row.addWidget(label, 1)
            row.addWidget(button)
            layout.addLayout(row)
        if not picks:
            layout.addWidget(
                QLabel("This machine has little free memory: try the smallest models in Discover.")
            )
        buttons = QHBoxLayout()
        open_button = named(QPushButton("Open a GGUF file I have…"), "welcomeOpenFile")
        open_button.clicked.connect(lambda: self._choose(open_file))
        close = named(QPushButton("Start"), "welcomeStart")
        close.clicked.connect(self.accept)
        buttons.addWidget(open_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout.addLayout(buttons)

    def _choose(self, then: Callable[[], None]) -> None:
        self.accept()
        then()
