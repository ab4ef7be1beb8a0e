"""The first-run welcome: this machine's memory, CPU and GPU, and the three most downloaded chat models that
fit it, as the Hub says (shown in Discover), or a GGUF file already on disk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app.errors import AppError
from app.hub.client import HubClient
from app.hub.starters import Suggestions, built_in_suggestions, cpu_name, hub_suggestions
from app.runtime.memory import free_ram, free_vram, gpu_name
from app.ui.background import Background
from app.ui.widgets import named
from app.units import gb

SOURCE_NOTES = {
    "hub": "Most downloaded this month on the Hugging Face Hub, among those that fit:",
    "saved": "The Hub cannot be reached; its suggestions from last time, among those that fit:",
    "built-in": "The Hub cannot be reached; well-known models that fit, to download when it can:",
    "well-known": "Well-known chat models that fit, to download from the Hugging Face Hub:",
    "little-memory": "Too little memory is free for the chat models Hubside suggests. Close some programs "
    "and open Hubside again, or look for the smallest models in Discover.",
}


class WelcomeDialog(QDialog):
    def __init__(
        self,
        show_model: Callable[[str], None],
        open_file: Callable[[], None],
        background: Background,
        hub: Callable[[], HubClient] | None,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("welcomeDialog")
        self.setWindowTitle("Welcome to Hubside")
        self.show_model = show_model
        # nvidia-smi answers in tenths of a second (5 s at worst): measured off the GUI thread, with the Hub
        self.facts = named(QLabel("Looking at this machine…"), "welcomeMachine")
        self.facts.setTextFormat(Qt.TextFormat.PlainText)
        self.facts.setWordWrap(True)
        self.note = named(QLabel("Asking the Hugging Face Hub which models are popular…"), "welcomeSource")
        self.note.setWordWrap(True)
        self.picks = QVBoxLayout()
        self.suggested: list[str] = []
        self.source = ""  # where the suggestions came from, once they are shown
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("<h2>Welcome to Hubside</h2>"))
        layout.addWidget(self.facts)
        layout.addWidget(self.note)
        layout.addLayout(self.picks)
        buttons = QHBoxLayout()
        open_button = named(QPushButton("Open a GGUF file I have…"), "welcomeOpenFile")
        open_button.clicked.connect(lambda: self._choose(open_file))
        close = named(QPushButton("Start"), "welcomeStart")
        close.clicked.connect(self.accept)
        buttons.addWidget(open_button)
        buttons.addStretch(1)
        buttons.addWidget(close)
        layout.addLayout(buttons)
        background.run(lambda: _look(hub), self._show)

    def _show(self, looked: Any, error: AppError | None) -> None:
        if not isinstance(looked, _Looked) or error is not None:  # a failure that made no sense
            looked = _Looked("This machine: its memory could not be read.", built_in_suggestions(0))
        self.facts.setText(looked.facts)
        found = looked.suggestions
        self.source = found.source
        self.note.setText(SOURCE_NOTES[found.source])
        self.suggested = [p.repo for p in found.starters]
        for pick in found.starters:
            row = QHBoxLayout()
            label = QLabel(f"{pick.label}, about {gb(pick.q4_bytes)} (Q4_K_M)")
            label.setTextFormat(Qt.TextFormat.PlainText)
            button = named(QPushButton("Show in Discover"), f"starter-{pick.repo}")
            button.clicked.connect(
                lambda _=False, repo=pick.repo: self._choose(lambda: self.show_model(repo))
            )
            row.addWidget(label, 1)
            row.addWidget(button)
            self.picks.addLayout(row)
        if not found.starters and found.source != "little-memory":  # the note says it already
            self.picks.addWidget(
                QLabel("This machine has little free memory: try the smallest models in Discover.")
            )

    def _choose(self, then: Callable[[], None]) -> None:
        self.accept()
        then()


@dataclass(frozen=True)
class _Looked:
    facts: str  # this machine, in a line
    suggestions: Suggestions


def _look(hub: Callable[[], HubClient] | None) -> _Looked:
    """This machine's free memory, CPU and GPU, and what fits it: blocking, off the GUI thread."""
    ram, vram = free_ram(), free_vram()
    facts = (
        f"This machine: {gb(ram)} of memory free · CPU {cpu_name()} · "
        f"GPU {gpu_name() or 'none found (models run on the CPU)'}"
        + (f" ({gb(vram)} free)" if vram is not None else "")
    )
    free = max(ram, vram or 0)
    return _Looked(facts, hub_suggestions(hub(), free) if hub is not None else built_in_suggestions(free))
