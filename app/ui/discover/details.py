"""One repo: its facts, its variants with a fit verdict each at the chosen context, its card and chat
template. It shows what the page hands it; the Download buttons ask the page through `download_wanted`."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal, Slot
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.hub.client import ModelDetails
from app.hub.describe import CONTEXT_STEPS, estimate_note, model_facts, top_context_step
from app.hub.fit import Fit, Machine, fit_variant, recommended
from app.hub.quants import Variant
from app.runtime.gguf_header import GGUFHeader
from app.settings import DEFAULT_CONTEXT
from app.ui.discover.columns import fit_columns
from app.ui.discover.link_bar import LinkConfirmBar
from app.ui.safe_markdown import SafeMarkdownView
from app.ui.table_model import RowsModel
from app.ui.widgets import named
from app.units import gb

VARIANT_WIDTHS = (0, 9, 10, 24, 9, 12)
DOWNLOAD_COLUMN = 5


class VariantsModel(RowsModel):
    COLUMNS = ("Variant", "Size", "Bits/weight", "Fit here", "Needs", "")  # the last: a Download button
    rows: list[tuple[Variant, Fit]]

    def __init__(self) -> None:
        super().__init__()
        self.parameters: int | None = None
        self.best: Variant | None = None

    def show_fits(self, rows: list[tuple[Variant, Fit]], parameters: int | None) -> bool:
        """Show these variants and verdicts; True if the rows are new (False: only the verdicts changed,
        as when the context slider moves, and the rows' widgets stay)."""
        self.parameters = parameters
        self.best = recommended([v for v, _ in rows], [f for _, f in rows])
        if rows and [v for v, _ in rows] == [v for v, _ in self.rows]:
            self.rows = rows
            self.dataChanged.emit(self.index(0, 0), self.index(len(rows) - 1, len(self.COLUMNS) - 1))
            return False
        self.show(rows)
        return True

    def cell(self, row: tuple[Variant, Fit], column: int, role: int) -> Any:
        variant, fit = row
        if role == Qt.ItemDataRole.DisplayRole:
            bits = variant.bits_per_weight(self.parameters)
            name = variant.title + (" ★ recommended" if variant is self.best else "")
            return (
                name,
                gb(variant.size),
                f"{bits:.2f}" if bits else "?",
                fit.label,
                gb(fit.need.total),
                "",
            )[column]
        if role == Qt.ItemDataRole.ToolTipRole:
            files = "\n".join(f"{f.path} ({gb(f.size)})" for f in variant.files)
            projector = f"\nvision projector: {variant.projector.path}" if variant.projector else ""
            return f"{files}{projector}\n{fit.explain()}"
        return None


class DetailsPanel(QWidget):
    download_wanted = Signal(object)  # the Variant whose Download button was clicked

    def __init__(self, machine: Machine) -> None:
        super().__init__()
        self.machine = machine
        self.details: ModelDetails | None = None
        self.header: GGUFHeader | None = None  # the first variant's; it makes the estimates count the cache
        self.title = named(QLabel("Choose a model on the left"), "modelTitle")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        font = self.title.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.title.setFont(font)
        self.facts = named(QLabel(""), "modelFacts")
        self.facts.setTextFormat(Qt.TextFormat.PlainText)
        self.facts.setWordWrap(True)
        self.context = named(QSlider(Qt.Orientation.Horizontal), "contextSlider")
        self.context.setAccessibleName("Context length for the estimates")
        self.context.setRange(0, len(CONTEXT_STEPS) - 1)
        self.context.setValue(CONTEXT_STEPS.index(DEFAULT_CONTEXT))
        self.context.valueChanged.connect(self._refit)
        self.context_label = named(QLabel(""), "contextLabel")
        context_row = QHBoxLayout()
        context_row.addWidget(QLabel("Context"))
        context_row.addWidget(self.context, 1)
        context_row.addWidget(self.context_label)
        self.variants = VariantsModel()
        self.variants_view = named(QTableView(), "variantsTable")
        self.variants_view.setAccessibleName("Variants")
        self.variants_view.setModel(self.variants)
        self.variants_view.verticalHeader().hide()
        self.variants_view.setWordWrap(False)
        fit_columns(self.variants_view, VARIANT_WIDTHS)
        self.estimate_note = named(QLabel(""), "estimateNote")
        self.estimate_note.setTextFormat(Qt.TextFormat.PlainText)
        self.estimate_note.setWordWrap(True)
        self.link_bar = LinkConfirmBar()
        self.card = named(SafeMarkdownView(), "modelCard")
        self.card.setAccessibleName("Model card")
        self.card.web_link_clicked.connect(self.link_bar.ask)  # a link opens only once the user agrees
        self.template = named(QPlainTextEdit(readOnly=True), "chatTemplate")
        self.template.setAccessibleName("Chat template")
        tabs = QTabWidget()
        tabs.addTab(self.card, "Model card")
        tabs.addTab(self.template, "Chat template")

        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.facts)
        layout.addLayout(context_row)
        layout.addWidget(self.variants_view, 1)
        layout.addWidget(self.estimate_note)
        layout.addWidget(self.link_bar)
        layout.addWidget(tabs, 2)
        self._show_context()

    def clear(self, repo: str) -> None:
        """Empty, with the repo's name, while its details load."""
        self.details, self.header = None, None
        self.title.setText(repo)
        self.facts.setText("Loading…")
        self.variants.show_fits([], None)
        self.card.show_markdown("")
        self.template.setPlainText("")
        self.estimate_note.setText("")

    def show_problem(self, message: str) -> None:
        self.facts.setText(message)

    def show_details(self, details: ModelDetails) -> None:
        self.details = details
        self.facts.setText(model_facts(details))
        self.template.setPlainText(details.chat_template or "This model has no chat template.")
        if details.context_length:  # the slider stops at the model's own context
            self.context.setMaximum(top_context_step(details.context_length))
        self._refit()
        if not details.variants:
            self.estimate_note.setText("This repo has no GGUF model files.")

    def show_header(self, header: GGUFHeader | None, problem: str | None) -> None:
        self.header = header
        self._refit()
        if problem is not None:
            self.estimate_note.setText(
                f"{self.estimate_note.text()}\n(The header could not be read: {problem})"
            )

    def show_card(self, markdown: str | None) -> None:
        self.card.show_markdown(markdown or "*This repo has no model card.*")

    def show_card_problem(self, message: str) -> None:
        self.card.show_markdown(f"*The model card could not be loaded:* {message}")

    def set_machine(self, machine: Machine) -> None:
        self.machine = machine
        self._refit()

    def context_length(self) -> int:
        return int(CONTEXT_STEPS[self.context.value()])

    def _show_context(self) -> None:
        self.context_label.setText(f"{self.context_length():,} tokens")

    @Slot()
    def _refit(self) -> None:
        self._show_context()
        details = self.details
        if details is None:
            return
        n_ctx = self.context_length()
        rows = [
            (v, fit_variant(v, self.header, n_ctx, self.machine, details.parameters))
            for v in details.variants
        ]
        new_rows = self.variants.show_fits(rows, details.parameters)
        for row, (variant, _) in enumerate(rows if new_rows else []):  # a Download button per variant
            button = named(QPushButton("Download"), f"download-{variant.title}")
            button.clicked.connect(lambda _=False, chosen=variant: self.download_wanted.emit(chosen))
            self.variants_view.setIndexWidget(self.variants.index(row, DOWNLOAD_COLUMN), button)
        if rows:
            projector = details.variants[0].projector
            self.estimate_note.setText(estimate_note(n_ctx, self.machine, self.header is not None, projector))
