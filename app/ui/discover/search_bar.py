"""The row above the results: search text, sort, the filters and the Hub token button. It builds the
query; the page runs it."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

from app.hub.client import SearchQuery
from app.hub.describe import cap_to_machine
from app.hub.fit import Machine
from app.ui.widgets import named

SEARCH_DEBOUNCE_MS = 300
SORTS = [("Trending", "trending"), ("Most downloads", "downloads"), ("Most likes", "likes"),
         ("Recently updated", "updated"), ("Newest", "created")]  # fmt: skip
PARAMETER_STEPS = [("any", None), ("1B", 10**9), ("3B", 3 * 10**9), ("8B", 8 * 10**9), ("14B", 14 * 10**9),
                   ("32B", 32 * 10**9), ("70B", 70 * 10**9)]  # fmt: skip
ARCHITECTURES = ["any", "llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3", "deepseek2", "gpt-oss"]
GATED_CHOICES = [("gated or not", None), ("not gated", False), ("gated only", True)]


class SearchBar(QWidget):
    changed = Signal()  # at once for a choice; for typing, once the typing stops
    token_entered = Signal(str)

    def __init__(self) -> None:
        super().__init__()
        self.search_box = named(QLineEdit(placeholderText="Search GGUF models on the Hub"), "discoverSearch")
        self.search_box.setAccessibleName("Search the Hub")
        self.typing_timer = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self.typing_timer.timeout.connect(self.changed)
        self.search_box.textChanged.connect(self._typed)
        self.sort = named(QComboBox(), "discoverSort")
        self.sort.setAccessibleName("Sort")
        for label, key in SORTS:
            self.sort.addItem(label, key)
        self.min_params = named(QComboBox(), "minParameters")
        self.max_params = named(QComboBox(), "maxParameters")
        for box in (self.min_params, self.max_params):
            for label, value in PARAMETER_STEPS:
                box.addItem(label, value)
        self.architecture = named(QComboBox(), "architectureFilter")
        self.architecture.setEditable(True)
        self.architecture.addItems(ARCHITECTURES)
        self.fits_only = named(QCheckBox("Fits this machine"), "fitsOnly")
        self.gated = named(QComboBox(), "gatedFilter")
        for label, choice in GATED_CHOICES:
            self.gated.addItem(label, choice)
        for box in (self.sort, self.min_params, self.max_params, self.architecture, self.gated):
            box.currentIndexChanged.connect(self.changed)
        self.fits_only.toggled.connect(self.changed)
        token_button = named(QPushButton("Hub token…"), "tokenButton")
        token_button.clicked.connect(self._ask_token)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.search_box, 1)
        for label, box in (("Sort", self.sort), ("Parameters from", self.min_params), ("to", self.max_params),
                           ("Architecture", self.architecture)):  # fmt: skip
            layout.addWidget(QLabel(label))
            layout.addWidget(box)
        layout.addWidget(self.fits_only)
        layout.addWidget(self.gated)
        layout.addWidget(token_button)

    def query(self, machine: Machine) -> SearchQuery:
        """The search the controls describe; "fits this machine" is measured against `machine`."""
        architecture = self.architecture.currentText().strip()
        max_params = self.max_params.currentData()
        if self.fits_only.isChecked():
            max_params = cap_to_machine(max_params, machine)
        return SearchQuery(
            text=self.search_box.text(),
            sort=str(self.sort.currentData()),
            min_params=self.min_params.currentData(),
            max_params=max_params,
            architecture="" if architecture == "any" else architecture,
            gated=self.gated.currentData(),
        )

    def cancel_typing(self) -> None:
        """A search has started: the typing that led to it must not start another."""
        self.typing_timer.stop()

    @Slot()
    def _typed(self) -> None:
        self.typing_timer.start()

    @Slot()
    def _ask_token(self) -> None:
        token, ok = QInputDialog.getText(
            self, "Hub token", "A Hugging Face token (read access), kept in your system's keyring:",
            QLineEdit.EchoMode.Password,
        )  # fmt: skip
        if ok:
            self.token_entered.emit(token.strip())
