"""The Compare page: 2 to 4 local models, one prompt, columns that stream side by side, numbers and charts,
blind votes into a local Elo leaderboard, saved runs that reopen and export, and any column as a chat.

The comparison runs on a thread of its own; its updates reach the window through a queued signal and are
drawn at most 10 times a second.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.chat.export import thought_label
from app.compare.elo import Vote, leaderboard
from app.compare.report import to_html, to_json
from app.compare.runner import (
    FAIR,
    MAX_MODELS,
    MIN_MODELS,
    PARALLEL,
    Column,
    CompareSettings,
    Comparison,
    ModelSpec,
)
from app.compare.store import CompareStore, SavedRun, entry
from app.errors import AppError, to_app_error
from app.files import write_atomic
from app.library.scan import LibraryEntry
from app.paths import AppPaths
from app.remote.endpoints import RemoteModel
from app.runtime.protocol import ChatMessage, LoadParams, SamplingParams
from app.ui.background import Background
from app.ui.charts import ChartPanel
from app.ui.remote_bridge import Offer, is_remote, offer_remote, unavailable_reason
from app.ui.safe_markdown import SafeMarkdownView
from app.ui.transcript import LIVE_REASONING_CHARS
from app.ui.widgets import add_new_items, named
from app.units import gb

REDRAW_MS = 100
VOTES = (("A is better", "a"), ("B is better", "b"), ("Tie", "tie"), ("Both are bad", "both_bad"))
OpenAsChat = Callable[[str, str, list[ChatMessage]], None]  # title, system prompt, messages


class ColumnView(QFrame):
    def __init__(self, number: int, open_as_chat: Callable[[int], None]) -> None:
        super().__init__()
        self._drawn: dict[int, str] = {}  # what each text view shows now
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName(f"compareColumn{number}")
        self.title = named(QLabel(""), f"columnTitle{number}")
        self.title.setTextFormat(Qt.TextFormat.PlainText)
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.numbers = named(QLabel(""), f"columnNumbers{number}")
        self.numbers.setTextFormat(Qt.TextFormat.PlainText)
        self.numbers.setWordWrap(True)
        self.thinking_label = named(QLabel(""), f"columnThinkingLabel{number}")
        self.thinking = named(SafeMarkdownView(), f"columnThinking{number}")  # apart from the answer
        self.thinking.setMaximumHeight(120)
        self.text = named(SafeMarkdownView(), f"columnText{number}")
        self.chat_button = named(QPushButton("Open as chat"), f"openAsChat{number}")
        self.chat_button.clicked.connect(lambda: open_as_chat(number))
        layout = QVBoxLayout(self)
        layout.addWidget(self.title)
        layout.addWidget(self.numbers)
        layout.addWidget(self.thinking_label)
        layout.addWidget(self.thinking)
        layout.addWidget(self.text, 1)
        layout.addWidget(self.chat_button)

    def show_column(self, label: str, column: Column) -> None:
        self.title.setText(label)
        if column.error:
            self.numbers.setText(f"failed: {column.error}")
        elif column.state == "done":
            c = column
            speeds = f"{c.tokens_per_s:.1f} tok/s · prompt {c.prompt_tokens_per_s:.0f} tok/s"
            times = f"first token {c.ttft_ms:.0f} ms · {c.completion_tokens} tokens · load {c.load_ms:.0f} ms"
            self.numbers.setText(f"{speeds} · {times} · peak {gb(c.peak_memory_bytes)} · {c.finish_reason}")
        elif column.tokens_over_time:  # live: tokens so far and the speed since the first one
            (first_ms, first), (ms, tokens) = column.tokens_over_time[0], column.tokens_over_time[-1]
            speed = (tokens - first) / ((ms - first_ms) / 1000) if ms > first_ms else 0.0
            self.numbers.setText(
                f"answering… {tokens} tokens · {speed:.1f} tok/s · first token {first_ms:.0f} ms"
            )
        else:
            self.numbers.setText(column.state + "…")
        reasoning = column.reasoning.strip()
        self.thinking_label.setVisible(bool(reasoning))
        self.thinking.setVisible(bool(reasoning))
        if reasoning:
            thinking_now = column.state == "answering" and not column.text
            label = "Thinking…" if thinking_now else thought_label(reasoning, column.reasoning_ms)
            self.thinking_label.setText(label)
            live = thinking_now and len(reasoning) > LIVE_REASONING_CHARS  # its end, while it grows
            self._show(self.thinking, "…" + reasoning[-LIVE_REASONING_CHARS:] if live else reasoning)
        self._show(self.text, column.text or "")
        self.chat_button.setEnabled(column.state == "done")

    def _show(self, view: SafeMarkdownView, markdown: str) -> None:
        """Redraw a view only when its text changed (the thinking stops changing once the answer starts)."""
        if self._drawn.get(id(view)) != markdown:
            self._drawn[id(view)] = markdown
            view.show_markdown(markdown)


class ComparePage(QWidget):
    _changed = Signal(int, object)  # column index, a copy of the column (from the comparison's thread)
    _finished = Signal(object, object)  # AppError or None, the run's data to save (or None)

    def __init__(
        self,
        paths: AppPaths,
        store: CompareStore,
        open_as_chat: OpenAsChat,
        resolve_remote: Callable[[str], RemoteModel] | None = None,
        background: Background | None = None,
    ) -> None:
        super().__init__()
        self.paths, self.store, self.open_as_chat = paths, store, open_as_chat
        self.resolve_remote = resolve_remote  # remote:NAME/MODEL_ID -> the model and its key
        self.background = background  # where a remote model's key is read (a keyring may be slow)
        self.resolving = False  # a Run waits for remote models' keys
        self.comparison: Comparison | None = None
        self.worker: threading.Thread | None = None
        self.run_id: int | None = None
        self.order: list[int] = []  # display position -> column index (shuffled in blind mode)
        self.blind_revealed = True
        self.blind_chosen = False  # whether the comparison on screen was started blind
        self.snapshots: dict[int, Column] = {}
        self._build()
        self.redraw = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self.redraw.timeout.connect(self._draw_columns)
        self._changed.connect(self._on_changed)
        self._finished.connect(self._on_finished)
        self._show_leaderboard()
        self._list_runs()

    # --- layout ------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.pickers: list[QComboBox] = []
        self.contexts: list[QSpinBox] = []
        models = QGridLayout()
        for number in range(MAX_MODELS):
            picker = named(QComboBox(), f"compareModel{number}")
            picker.setAccessibleName(f"Model {number + 1}")
            picker.addItem("(none)" if number >= MIN_MODELS else "Choose a model", None)
            picker.setMinimumWidth(260)
            context = named(
                QSpinBox(minimum=256, maximum=1 << 20, singleStep=1024, value=2048), f"compareCtx{number}"
            )
            context.setToolTip("Context length for this model")
            models.addWidget(QLabel(f"Model {number + 1}"), number // 2, (number % 2) * 4)
            models.addWidget(picker, number // 2, (number % 2) * 4 + 1)
            models.addWidget(QLabel("context"), number // 2, (number % 2) * 4 + 2)
            models.addWidget(context, number // 2, (number % 2) * 4 + 3)
            self.pickers.append(picker)
            self.contexts.append(context)
        self.prompt = named(QPlainTextEdit(placeholderText="One prompt for every model"), "comparePrompt")
        self.prompt.setMaximumHeight(70)
        self.system = named(QLineEdit(placeholderText="System prompt (optional)"), "compareSystem")
        self.temperature = named(
            QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.1, value=0.0), "compareTemp"
        )
        self.seed = named(QSpinBox(minimum=0, maximum=2**31 - 1, value=42), "compareSeed")
        self.max_tokens = named(QSpinBox(minimum=1, maximum=32768, value=256), "compareMaxTokens")
        self.mode = named(QComboBox(), "compareMode")
        self.mode.addItem("Fair: one model at a time", FAIR)
        self.mode.addItem("Parallel: all at once", PARALLEL)
        self.blind = named(QCheckBox("Blind (hide the names until I vote)"), "compareBlind")
        self.run_button = named(QPushButton("Run"), "compareRun")
        self.run_button.clicked.connect(self.run)
        self.stop_button = named(QPushButton("Stop"), "compareStop")
        self.stop_button.clicked.connect(self.stop)
        self.stop_button.setEnabled(False)
        settings = QHBoxLayout()
        for label, widget in (
            ("Temperature", self.temperature),
            ("Seed", self.seed),
            ("Max tokens", self.max_tokens),
        ):
            settings.addWidget(QLabel(label))
            settings.addWidget(widget)
        settings.addWidget(self.mode)
        settings.addWidget(self.blind)
        settings.addStretch(1)
        settings.addWidget(self.run_button)
        settings.addWidget(self.stop_button)
        self.message = named(QLabel(""), "compareMessage")
        self.message.setTextFormat(Qt.TextFormat.PlainText)
        self.message.setWordWrap(True)

        self.column_views = [ColumnView(n, self._open_column_as_chat) for n in range(MAX_MODELS)]
        columns = QHBoxLayout()
        for view in self.column_views:
            columns.addWidget(view)
            view.hide()
        self.vote_bar = named(QWidget(), "voteBar")
        votes = QHBoxLayout(self.vote_bar)
        votes.setContentsMargins(0, 0, 0, 0)
        votes.addWidget(QLabel("Your verdict:"))
        self.vote_buttons: dict[str, QPushButton] = {}
        for label, outcome in VOTES:
            button = named(QPushButton(label), f"vote_{outcome}")
            button.clicked.connect(lambda _=False, chosen=outcome: self.vote(chosen))
            votes.addWidget(button)
            self.vote_buttons[outcome] = button
        votes.addStretch(1)
        self.vote_bar.hide()
        self.charts = ChartPanel()
        self.charts.hide()
        self.board = named(QTableWidget(0, 4), "leaderboard")
        self.board.setHorizontalHeaderLabels(["Model", "Elo", "± (95 %)", "Votes"])
        self.board.verticalHeader().hide()
        self.board.setMaximumHeight(140)
        self.board.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.runs = named(QComboBox(), "savedRuns")
        self.runs.setMinimumWidth(320)
        reopen = named(QPushButton("Reopen"), "reopenRun")
        reopen.clicked.connect(lambda: self.reopen(self.runs.currentData()))
        export_html = named(QPushButton("Export HTML…"), "exportHtml")
        export_html.clicked.connect(lambda: self._choose_export("html"))
        export_json = named(QPushButton("Export JSON…"), "exportJson")
        export_json.clicked.connect(lambda: self._choose_export("json"))
        saved = QHBoxLayout()
        saved.addWidget(QLabel("Saved runs"))
        saved.addWidget(self.runs)
        saved.addWidget(reopen)
        saved.addStretch(1)
        saved.addWidget(export_html)
        saved.addWidget(export_json)

        content = QWidget()
        layout = QVBoxLayout(content)
        layout.addLayout(models)
        layout.addWidget(self.prompt)
        layout.addWidget(self.system)
        layout.addLayout(settings)
        layout.addWidget(self.message)
        layout.addLayout(columns, 3)
        layout.addWidget(self.vote_bar)
        layout.addWidget(self.charts, 2)
        layout.addWidget(QLabel("Leaderboard (blind votes)"))
        layout.addWidget(self.board)
        layout.addLayout(saved)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(content)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)

    def set_library(self, entries: list[LibraryEntry]) -> None:
        usable = [(e.id, str(e.path)) for e in entries if not e.problem]
        for picker in self.pickers:
            add_new_items(picker, usable)

    def set_remote(self, offers: list[Offer]) -> None:
        """The endpoints' models beside the local ones (the chat's listing), unavailable ones greyed."""
        for picker in self.pickers:
            offer_remote(picker, offers)

    # --- running -----------------------------------------------------------------------------------
    def chosen(self) -> list[ModelSpec]:
        return self._specs(self._picks())

    def _picks(self) -> list[tuple[str, int]]:
        """What the pickers name, and each one's context (read on the GUI thread)."""
        return [
            (str(picker.currentData()), context.value())
            for picker, context in zip(self.pickers, self.contexts, strict=True)
            if picker.currentData() and not unavailable_reason(picker)
        ]

    def _specs(self, picks: list[tuple[str, int]]) -> list[ModelSpec]:
        return [self._spec(data, n_ctx) for data, n_ctx in picks]

    def _spec(self, data: str, n_ctx: int) -> ModelSpec:
        if is_remote(data) and self.resolve_remote is not None:
            return self.resolve_remote(data)  # the key from the keyring or the environment
        return LoadParams(Path(data), n_ctx=n_ctx)

    @Slot()
    def run(self) -> None:
        """Start a new comparison, or (same models, a run on screen) a follow-up turn."""
        prompt = self.prompt.toPlainText().strip()
        if self.worker is not None or self.resolving or not prompt:
            return
        picks = self._picks()
        if self.background is not None and any(is_remote(data) for data, _ in picks):
            self.resolving = True  # the keys come from the keyring: off the GUI thread
            self.message.setText("Reading the endpoints' keys…")
            self.background.run(lambda: self._specs(picks), self._resolved)
            return
        try:
            models = self._specs(picks)
        except AppError as exc:  # an endpoint removed meanwhile, its key's variable unset
            self.message.setText(exc.user_message)
            return
        self._start(prompt, models)

    def _resolved(self, models: Any, error: AppError | None) -> None:
        self.resolving = False
        if error is not None:  # an endpoint removed meanwhile, its key's variable unset
            self.message.setText(error.user_message)
            return
        self._start(self.prompt.toPlainText().strip(), models)

    def _start(self, prompt: str, models: list[ModelSpec]) -> None:
        if not prompt or self.worker is not None:
            return
        settings = CompareSettings(
            system=self.system.text(),
            sampling=SamplingParams(temperature=self.temperature.value(), seed=self.seed.value()),
            max_tokens=self.max_tokens.value(),
            mode=str(self.mode.currentData()),
        )
        # The same models, settings and blindness: the next turn of this comparison; anything else: a new one.
        previous = self.comparison
        follow_up = (
            previous is not None
            and [c.params for c in previous.columns] == models
            and previous.settings == settings
            and self.blind_chosen == self.blind.isChecked()
        )
        try:
            if not follow_up:
                self.comparison = Comparison(self.paths, models, settings, self.store.sha256)
                self.blind_chosen = self.blind.isChecked()
                self.run_id = None
                self.order = list(range(len(models)))
                self.blind_revealed = not self.blind.isChecked()
                if not self.blind_revealed:
                    random.shuffle(self.order)
            assert self.comparison is not None  # Parallel's memory check reads headers: the worker does it
        except AppError as exc:
            self.message.setText(exc.user_message)
            return
        self.message.setText(
            "Running" + (" (a follow-up: each model keeps its own conversation)" if follow_up else "")
        )
        self.snapshots = {}
        self.vote_bar.hide()
        self.charts.hide()
        for position, view in enumerate(self.column_views):
            view.setVisible(position < len(models))
        comparison = self.comparison
        self.worker = threading.Thread(
            target=self._work, args=(comparison, prompt), name="compare", daemon=True
        )
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.worker.start()

    def _work(self, comparison: Comparison, prompt: str) -> None:
        last: dict[int, tuple[float, str]] = {}

        def changed(index: int, column: Column) -> None:
            # Called for every piece of text: a copy goes to the window only when it will be drawn.
            now = time.monotonic()
            sent, state = last.get(index, (0.0, ""))
            if state == column.state and now - sent < REDRAW_MS / 1000:
                return
            last[index] = (now, column.state)
            self._changed.emit(index, replace(column, tokens_over_time=list(column.tokens_over_time)))

        try:
            comparison.turn(prompt, changed)
            data = comparison.data()  # here: it hashes the model files (seconds for big ones)
        except (AppError, OSError) as exc:
            self._finished.emit(to_app_error(exc), None)
            return
        self._finished.emit(None, data)

    @Slot()
    def stop(self) -> None:
        if self.comparison is not None:
            self.comparison.stop()

    @Slot(int, object)
    def _on_changed(self, index: int, column: Column) -> None:
        self.snapshots[index] = column
        if not self.redraw.isActive():
            self.redraw.start()

    def label(self, index: int) -> str:
        position = self.order.index(index) if index in self.order else index
        if not self.blind_revealed:
            return "ABCD"[position]
        column = self.comparison.columns[index] if self.comparison else None
        name = (column.name or column.params.model_path.name) if column else "?"
        return f"{'ABCD'[position]}: {name}" if self.blind.isChecked() else name

    @Slot()
    def _draw_columns(self) -> None:
        for index, column in self.snapshots.items():
            self.column_views[self.order.index(index)].show_column(self.label(index), column)

    @Slot(object, object)
    def _on_finished(self, error: AppError | None, data: dict[str, Any] | None) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)
        comparison = self.comparison
        if comparison is None:
            return
        self.snapshots = dict(enumerate(comparison.columns))
        self._draw_columns()
        if error is not None or data is None:
            self.message.setText(error.user_message if error else "The comparison did not run.")
            return
        try:
            self.run_id = self.store.save_run(comparison.turns[0][0]["prompt"], data, self.run_id)
        except AppError as exc:  # a busy or full database: said here, the comparison stays on screen
            self.message.setText(exc.user_message)
            return
        failed = sum(1 for c in comparison.columns if c.error)
        self.message.setText(f"Done ({failed} failed)." if failed else "Done.")
        self._show_charts()
        self.vote_bar.setVisible(not self.blind_revealed and len(comparison.columns) == 2)
        self._list_runs()

    def _show_charts(self) -> None:
        if self.comparison is None:
            return
        ordered = [self.comparison.columns[i] for i in self.order]
        self.charts.show_columns([self.label(i) for i in self.order], ordered)
        self.charts.show()

    # --- votes, runs, export -----------------------------------------------------------------------
    def vote(self, outcome: str) -> None:
        """A blind verdict on A versus B; then the names are shown."""
        if self.comparison is None or self.blind_revealed or len(self.comparison.columns) != 2:
            return
        saved = self.store.run(self.run_id) if self.run_id is not None else None
        if saved is None:
            return
        # Each model is its file (two quants of one model are two entries), labelled by name and file name.
        (key_a, label_a), (key_b, label_b) = (entry(saved.data["columns"][i]) for i in self.order)
        try:
            self.store.vote(self.run_id, Vote(key_a, key_b, outcome, label_a, label_b))
        except AppError as exc:
            self.message.setText(exc.user_message)
            return
        self.blind_revealed = True
        self.vote_bar.hide()
        self.snapshots = dict(enumerate(self.comparison.columns))
        self._draw_columns()
        self._show_charts()
        self._show_leaderboard()
        self.message.setText(
            f"Thank you: A was {self.label(self.order[0])}, B was {self.label(self.order[1])}."
        )

    def _show_leaderboard(self) -> None:
        standings = leaderboard(self.store.votes())
        self.board.setRowCount(len(standings))
        for row, standing in enumerate(standings):
            for column, value in enumerate(
                (standing.label, f"{standing.rating:.0f}", f"{standing.interval:.0f}", str(standing.votes))
            ):
                item = QTableWidgetItem(value)
                item.setToolTip(standing.model)  # the file's sha256
                self.board.setItem(row, column, item)

    def _list_runs(self) -> None:
        self.runs.clear()
        for saved in self.store.runs():
            models = " vs ".join(c.get("model", "?") for c in saved.data.get("columns", []))
            self.runs.addItem(f"#{saved.id} {saved.prompt[:40]} ({models})", saved.id)

    def reopen(self, run_id: Any) -> None:
        saved = self.store.run(int(run_id)) if run_id is not None else None
        if saved is None:
            return
        columns = []
        for data in saved.data.get("columns", []):
            last = data["turns"][-1]
            metrics = last["metrics"]
            column = Column(
                LoadParams(Path(data["path"])), name=data["model"], text=last["text"], error=last["error"]
            )
            for key in ("load_ms", "ttft_ms", "prompt_tokens_per_s", "tokens_per_s", "prompt_tokens",
                        "completion_tokens", "peak_memory_bytes", "finish_reason"):  # fmt: skip
                setattr(column, key, metrics.get(key, getattr(column, key)))
            column.state = "failed" if last["error"] else "done"
            columns.append(column)
        self.comparison = None  # a saved run is read-only: Run starts a new one
        self.run_id = saved.id
        self.order = list(range(len(columns)))
        self.blind_revealed = True
        self.prompt.setPlainText(saved.prompt)
        for position, view in enumerate(self.column_views):
            view.setVisible(position < len(columns))
            if position < len(columns):
                view.show_column(columns[position].name, columns[position])
        self.charts.show_columns([c.name for c in columns], columns)
        self.charts.show()
        self.message.setText(f"Run #{saved.id} (saved).")

    def _choose_export(self, kind: str) -> None:
        if self.run_id is None:
            return
        name, _ = QFileDialog.getSaveFileName(self, "Export comparison", f"comparison-{self.run_id}.{kind}")
        if name:
            self.export(Path(name), kind)

    def export(self, path: Path, kind: str) -> None:
        saved: SavedRun | None = self.store.run(self.run_id) if self.run_id is not None else None
        if saved is None:
            return
        text = to_html(saved, self.charts.images()) if kind == "html" else to_json(saved)
        try:
            write_atomic(path, text.encode("utf-8"))
        except OSError as exc:
            self.message.setText(str(exc))

    def _open_column_as_chat(self, position: int) -> None:
        if self.comparison is None or position >= len(self.order):
            return
        column = self.comparison.columns[self.order[position]]
        title = f"{column.name}: {column.messages[0].content[:40]}" if column.messages else column.name
        self.open_as_chat(title, self.comparison.settings.system, list(column.messages))
