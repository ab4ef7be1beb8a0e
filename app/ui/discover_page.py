"""The Discover page: search the Hub's GGUF repos, see a repo's variants with fit verdicts, its card and
chat template. Every Hub call runs off the GUI thread; the newest request wins; failures are a banner
over the last results saved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, QTimer, QUrl, Slot
from PySide6.QtGui import QDesktopServices, QShowEvent
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSlider,
    QSplitter,
    QTableView,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from app.errors import AppError
from app.hub.client import HubClient, ModelDetails, ModelSummary, SearchPages, SearchQuery
from app.hub.fit import Fit, Machine, fit_variant, recommended
from app.hub.quants import Variant
from app.hub.token import save_token
from app.runtime.gguf_header import GGUFHeader
from app.runtime.memory import CPU_MARGIN, free_ram, gb
from app.ui.background import Background
from app.ui.safe_markdown import SafeMarkdownView
from app.ui.table_model import ModelIndex, RowsModel
from app.ui.widgets import named

SEARCH_DEBOUNCE_MS = 300
ROWS_PER_FETCH = 100
PARAMETER_STEPS = [("any", None), ("1B", 10**9), ("3B", 3 * 10**9), ("8B", 8 * 10**9), ("14B", 14 * 10**9),
                   ("32B", 32 * 10**9), ("70B", 70 * 10**9)]  # fmt: skip
ARCHITECTURES = ["any", "llama", "qwen2", "qwen3", "gemma3", "mistral", "phi3", "deepseek2", "gpt-oss"]
CONTEXT_STEPS = [512 * 2**i for i in range(10)]  # 512 ... 262144
DEFAULT_CONTEXT = 8192
FIT_BITS = 4.5  # "fits this machine": a Q4_K_M of the model would
# Column widths in average characters; the first column takes the rest. Fixed, so that 10,000 rows are
# never measured.
RESULT_WIDTHS = (0, 12, 11, 7, 11, 11, 13)
VARIANT_WIDTHS = (0, 9, 10, 24, 9, 12)
DOWNLOAD_COLUMN = 5


def _count(n: int | None) -> str:
    if n is None:
        return ""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def _fit_columns(view: QTableView, widths: tuple[int, ...]) -> None:
    header = view.horizontalHeader()
    char = view.fontMetrics().averageCharWidth()
    for column, width in enumerate(widths):
        if width:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width * char + 12)
        else:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 8)


class ResultsModel(RowsModel):
    """Search results, fetched a page at a time as the view scrolls to the end (Qt's fetchMore)."""

    COLUMNS = ("Model", "Author", "Downloads", "Likes", "Updated", "Parameters", "Architecture")
    rows: list[ModelSummary]

    def __init__(self, request_more: Callable[[], None]) -> None:
        super().__init__()
        self.more_wanted = False  # the search has more pages
        self.loading = False
        self.request_more = request_more

    def reset(self, rows: list[ModelSummary], more: bool) -> None:
        self.more_wanted, self.loading = more, False
        self.show(rows)

    def append(self, rows: list[ModelSummary], more: bool) -> None:
        self.loading, self.more_wanted = False, more
        if rows:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(rows) - 1)
            self.rows.extend(rows)
            self.endInsertRows()

    def learn(self, details: ModelDetails) -> None:
        """Fill in what the listing did not say (parameters, architecture) once a repo's details are in."""
        for number, row in enumerate(self.rows):
            if row.id == details.id:
                self.rows[number] = replace(
                    row, parameters=details.parameters, architecture=details.architecture
                )
                self.dataChanged.emit(self.index(number, 5), self.index(number, 6))

    def cell(self, row: ModelSummary, column: int, role: int) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                row.id,
                row.author,
                f"{row.downloads:,}",
                f"{row.likes:,}",
                row.updated[:10],
                _count(row.parameters),
                row.architecture or "",
            )[column]
        if role == Qt.ItemDataRole.UserRole:
            return row.id
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.id} (gated: accept its license on the Hub)" if row.gated else row.id
        return None

    def canFetchMore(self, parent: ModelIndex) -> bool:
        return not parent.isValid() and self.more_wanted and not self.loading

    def fetchMore(self, parent: ModelIndex) -> None:
        if self.canFetchMore(parent):
            self.loading = True
            self.request_more()


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


class DiscoverPage(QWidget):
    def __init__(
        self,
        client_factory: Callable[[], HubClient],
        background: Background,
        download: Callable[[HubClient, ModelDetails, Variant], None],
    ) -> None:
        super().__init__()
        self.download = download
        self.client_factory = client_factory
        self.client = client_factory()
        self.background = background
        # Free RAM now (a file read); the GPU's memory (nvidia-smi, a process) is asked for off this thread.
        self.machine = Machine(free_ram(), None)
        self.pages: SearchPages | None = None
        self.search_serial = 0  # the newest search; answers to older ones are dropped
        self.details_serial = 0
        self.details: ModelDetails | None = None
        self.header: GGUFHeader | None = None
        self.pending_url: QUrl | None = None
        self._build()
        self.search_timer = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self.search_timer.timeout.connect(self.search)

    # --- layout ------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.search_box = named(QLineEdit(placeholderText="Search GGUF models on the Hub"), "discoverSearch")
        self.search_box.setAccessibleName("Search the Hub")
        self.search_box.textChanged.connect(lambda _: self.search_timer.start())
        self.sort = named(QComboBox(), "discoverSort")
        self.sort.setAccessibleName("Sort")
        for label, key in (("Trending", "trending"), ("Most downloads", "downloads"), ("Most likes", "likes"),
                           ("Recently updated", "updated"), ("Newest", "created")):  # fmt: skip
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
        for label, value in (("gated or not", None), ("not gated", False), ("gated only", True)):
            self.gated.addItem(label, value)
        for choice in (self.sort, self.min_params, self.max_params, self.architecture, self.gated):
            choice.currentIndexChanged.connect(self.search)
        self.fits_only.toggled.connect(self.search)
        token_button = named(QPushButton("Hub token…"), "tokenButton")
        token_button.clicked.connect(self._ask_token)
        top = QHBoxLayout()
        top.addWidget(self.search_box, 1)
        for label, box in (("Sort", self.sort), ("Parameters from", self.min_params), ("to", self.max_params),
                           ("Architecture", self.architecture)):  # fmt: skip
            top.addWidget(QLabel(label))
            top.addWidget(box)
        top.addWidget(self.fits_only)
        top.addWidget(self.gated)
        top.addWidget(token_button)

        self.banner = named(QFrame(), "discoverBanner")
        self.banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.banner_text = named(QLabel(), "discoverBannerText")
        self.banner_text.setTextFormat(Qt.TextFormat.PlainText)
        self.banner_text.setWordWrap(True)
        retry = named(QPushButton("Retry"), "discoverRetry")
        retry.clicked.connect(self.search)
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.addWidget(self.banner_text, 1)
        banner_layout.addWidget(retry)
        self.banner.hide()

        self.results = ResultsModel(self._fetch_more)
        self.results_view = named(QTableView(), "discoverResults")
        self.results_view.setAccessibleName("Search results")
        self.results_view.setModel(self.results)
        self.results_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.results_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.results_view.verticalHeader().hide()
        self.results_view.setWordWrap(False)
        _fit_columns(self.results_view, RESULT_WIDTHS)
        self.results_view.selectionModel().currentRowChanged.connect(self._row_chosen)
        self.status = named(QLabel(""), "discoverStatus")

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
        _fit_columns(self.variants_view, VARIANT_WIDTHS)
        self.estimate_note = named(QLabel(""), "estimateNote")
        self.estimate_note.setTextFormat(Qt.TextFormat.PlainText)
        self.estimate_note.setWordWrap(True)
        self.card = named(SafeMarkdownView(), "modelCard")
        self.card.setAccessibleName("Model card")
        self.card.web_link_clicked.connect(self._confirm_link)
        self.link_bar = named(QFrame(), "linkBar")
        self.link_text = named(QLabel(), "linkText")
        self.link_text.setTextFormat(Qt.TextFormat.PlainText)
        open_link = named(QPushButton("Open"), "openLink")
        open_link.clicked.connect(self._open_pending_link)
        cancel_link = named(QPushButton("Cancel"), "cancelLink")
        cancel_link.clicked.connect(self.link_bar.hide)
        link_layout = QHBoxLayout(self.link_bar)
        link_layout.setContentsMargins(0, 0, 0, 0)
        link_layout.addWidget(self.link_text, 1)
        link_layout.addWidget(open_link)
        link_layout.addWidget(cancel_link)
        self.link_bar.hide()
        self.template = named(QPlainTextEdit(readOnly=True), "chatTemplate")
        self.template.setAccessibleName("Chat template")
        tabs = QTabWidget()
        tabs.addTab(self.card, "Model card")
        tabs.addTab(self.template, "Chat template")

        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self.results_view, 1)
        left_layout.addWidget(self.status)
        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.title)
        right_layout.addWidget(self.facts)
        right_layout.addLayout(context_row)
        right_layout.addWidget(self.variants_view, 1)
        right_layout.addWidget(self.estimate_note)
        right_layout.addWidget(self.link_bar)
        right_layout.addWidget(tabs, 2)
        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setSizes([700, 600])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)
        self._show_context()

    # --- search ------------------------------------------------------------------------------------
    def query(self) -> SearchQuery:
        architecture = self.architecture.currentText().strip()
        max_params = self.max_params.currentData()
        if self.fits_only.isChecked():  # the largest model whose Q4_K_M would fit here
            room = max(self.machine.free_vram or 0, self.machine.free_ram) - CPU_MARGIN
            fitting = max(0, int(room * 8 / FIT_BITS))
            max_params = min(max_params or fitting, fitting)
        return SearchQuery(
            text=self.search_box.text(),
            sort=str(self.sort.currentData()),
            min_params=self.min_params.currentData(),
            max_params=max_params,
            architecture="" if architecture == "any" else architecture,
            gated=self.gated.currentData(),
        )

    @Slot()
    def search(self) -> None:
        self.search_timer.stop()
        self.search_serial += 1
        serial = self.search_serial
        pages = self.client.search(self.query())
        self.pages = pages
        self.results.loading = True
        self.status.setText("Searching…")
        self.background.run(
            lambda: pages.next(ROWS_PER_FETCH), lambda rows, error: self._found(serial, rows, error)
        )

    def _found(self, serial: int, rows: list[ModelSummary] | None, error: AppError | None) -> None:
        if serial != self.search_serial or self.pages is None:
            return  # an older search: the newest wins
        if error is not None:
            self.results.loading = False
            self._show_banner(error.user_message)
            self.status.setText("")
            return
        rows = rows or []
        if self.pages.stale:
            self._show_banner("Can't reach the Hub (offline?). These are the results saved the last time.")
        else:
            self.banner.hide()
        self.results.reset(rows, not self.pages.done)
        self._count_status()

    @Slot()
    def _fetch_more(self) -> None:
        pages, serial = self.pages, self.search_serial
        if pages is None:
            return
        self.status.setText("Loading more…")
        self.background.run(
            lambda: pages.next(ROWS_PER_FETCH), lambda rows, error: self._more(serial, rows, error)
        )

    def _more(self, serial: int, rows: list[ModelSummary] | None, error: AppError | None) -> None:
        if serial != self.search_serial or self.pages is None:
            return
        if error is not None:
            self.results.loading = False
            self._show_banner(error.user_message)
            return
        self.results.append(rows or [], not self.pages.done)
        self._count_status()

    def _count_status(self) -> None:
        shown = len(self.results.rows)
        more = " (scroll for more)" if self.results.more_wanted else ""
        count = f"{shown} model" + ("" if shown == 1 else "s")
        self.status.setText(f"{count}{more}" if shown else "No GGUF models found.")

    def _show_banner(self, message: str) -> None:
        self.banner_text.setText(message)
        self.banner.show()

    # --- details -----------------------------------------------------------------------------------
    @Slot(QModelIndex, QModelIndex)
    def _row_chosen(self, current: QModelIndex, previous: QModelIndex) -> None:
        repo = current.data(Qt.ItemDataRole.UserRole)
        if repo:
            self.open_model(str(repo))

    def open_model(self, repo: str) -> None:
        self.details_serial += 1
        serial = self.details_serial
        self.details, self.header = None, None
        self.title.setText(repo)
        self.facts.setText("Loading…")
        self.variants.show_fits([], None)
        self.card.show_markdown("")
        self.template.setPlainText("")
        self.estimate_note.setText("")
        client = self.client
        self.background.run(
            lambda: client.details(repo), lambda got, error: self._got_details(serial, got, error)
        )

    def _got_details(self, serial: int, fetched: Any, error: AppError | None) -> None:
        if serial != self.details_serial:
            return
        if error is not None:
            self.facts.setText(error.user_message)
            return
        details: ModelDetails = fetched.value
        self.details = details
        self.results.learn(details)
        if fetched.stale:
            self._show_banner(f"{fetched.problem} Showing what was saved the last time.")
        params = (
            f"{details.parameters / 1e9:.2f} B parameters" if details.parameters else "parameters unknown"
        )
        facts = [
            details.architecture or "architecture unknown",
            params,
            f"trained context {details.context_length:,}" if details.context_length else "context unknown",
            f"license {details.license}" if details.license else "no license given",
            f"{details.downloads:,} downloads",
            f"{details.likes:,} likes",
            f"updated {details.updated[:10]}",
        ]
        gated = (
            "\nGated: accept the license on the Hub, then add your token (Hub token…)."
            if details.gated
            else ""
        )
        self.facts.setText(" · ".join(facts) + gated)
        self.template.setPlainText(details.chat_template or "This model has no chat template.")
        if details.context_length:  # the slider stops at the model's own context
            top = max(i for i, n in enumerate(CONTEXT_STEPS) if n <= max(details.context_length, 512))
            self.context.setMaximum(top)
        self._refit()
        client = self.client
        if details.variants:
            first = details.variants[0].files[0]
            self.background.run(
                lambda: client.header(details, first), lambda got, err: self._got_header(serial, got, err)
            )
        else:
            self.estimate_note.setText("This repo has no GGUF model files.")
        self.background.run(lambda: client.card(details), lambda got, err: self._got_card(serial, got, err))

    def _got_header(self, serial: int, header: GGUFHeader | None, error: AppError | None) -> None:
        if serial != self.details_serial:
            return
        self.header = header
        self._refit()
        if error is not None:
            self.estimate_note.setText(
                f"{self.estimate_note.text()}\n(The header could not be read: {error.user_message})"
            )

    def _got_card(self, serial: int, fetched: Any, error: AppError | None) -> None:
        if serial != self.details_serial:
            return
        if error is not None:
            self.card.show_markdown(f"*The model card could not be loaded:* {error.user_message}")
        else:
            self.card.show_markdown(fetched.value or "*This repo has no model card.*")

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
            button.clicked.connect(lambda _=False, chosen=variant: self._download(chosen))
            self.variants_view.setIndexWidget(self.variants.index(row, DOWNLOAD_COLUMN), button)
        vram = (
            f", {gb(self.machine.free_vram)} free VRAM"
            if self.machine.free_vram is not None
            else ", no GPU seen"
        )
        what = (
            "weights + context cache (from the model's layers and heads) + compute margin"
            if self.header is not None
            else "weights + compute margin; the context cache is added once the header is read"
        )
        projector = details.variants[0].projector if details.variants else None
        vision = (
            f" Each variant comes with the vision projector {projector.path} ({gb(projector.size)})."
            if projector
            else ""
        )
        if rows:
            self.estimate_note.setText(
                f"Estimates at {n_ctx:,} tokens of context: {what}; this machine has "
                f"{gb(self.machine.free_ram)} free RAM{vram}.{vision}"
            )

    def _download(self, variant: Variant) -> None:
        if self.details is None:
            return
        try:
            self.download(self.client, self.details, variant)
        except AppError as exc:
            self._show_banner(exc.user_message)
            return
        self.status.setText(f"{variant.title} of {self.details.id} is downloading (see Downloads).")

    # --- links and token ---------------------------------------------------------------------------
    @Slot(QUrl)
    def _confirm_link(self, url: QUrl) -> None:
        """A card's link opens only after the user has seen where it goes."""
        self.pending_url = url
        self.link_text.setText(f"Open {url.toString()} in your browser?")
        self.link_bar.show()

    @Slot()
    def _open_pending_link(self) -> None:
        if self.pending_url is not None:
            QDesktopServices.openUrl(self.pending_url)
        self.pending_url = None
        self.link_bar.hide()

    @Slot()
    def _ask_token(self) -> None:
        token, ok = QInputDialog.getText(
            self, "Hub token", "A Hugging Face token (read access), kept in your system's keyring:",
            QLineEdit.EchoMode.Password,
        )  # fmt: skip
        if ok:
            self.set_token(token.strip())

    def set_token(self, token: str) -> None:
        try:
            save_token(token)
        except AppError as exc:
            self._show_banner(exc.user_message)
            return
        self.client = self.client_factory()
        self.banner.hide()

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if self.search_serial == 0:  # the first visit shows what is trending
            self.background.run(Machine.now, self._measured)
            self.search()

    def _measured(self, machine: Machine | None, error: AppError | None) -> None:
        if machine is not None:
            self.machine = machine
            self._refit()
