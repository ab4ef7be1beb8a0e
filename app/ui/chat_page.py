"""The chat page: pick and load a local model, talk to it, and keep every message in the chat store.

The user's message is saved before the request leaves; the reply is saved as it streams (at most a second
of text at risk) and finalized when it ends. Text is shown through a 10 Hz render timer, so a fast model
never floods the window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QSignalBlocker,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListView,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.chat.export import MAX_IMPORT_BYTES, from_json, to_json, to_markdown
from app.chat.markdown import code_blocks
from app.chat.reply import ReplyDraft
from app.chat.store import END, ChatStore, Conversation, ConversationExport, Message
from app.errors import AppError, to_app_error
from app.library.scan import LibraryEntry
from app.runtime.protocol import (
    ChatMessage,
    GenerateRequest,
    LoadedModel,
    LoadParams,
    ReplyStats,
    SamplingParams,
)
from app.settings import Settings, write_atomic
from app.ui.engine_bridge import EngineBridge, is_crash
from app.ui.transcript import Transcript
from app.ui.widgets import named

RENDER_INTERVAL_MS = 100  # Markdown re-render at most 10 times a second
SEARCH_DEBOUNCE_MS = 300
CHECKPOINT_INTERVAL_S = 1.0
TITLE_LENGTH = 60
PRESETS = {
    "Precise": SamplingParams(temperature=0.2, top_k=20, top_p=0.9, min_p=0.05, repeat_penalty=1.1),
    "Balanced": SamplingParams(),
    "Creative": SamplingParams(temperature=1.0, top_k=80, top_p=0.98, min_p=0.02, repeat_penalty=1.05),
}
CUSTOM = "Custom"
EMPTY_HINT = (
    "*A new chat.* Choose a model above (or **Open model…**), press **Load**, then type below: Enter sends, "
    "Shift+Enter starts a new line, Esc stops a reply."
)
EDIT_NOTICE = "Editing your message: Enter sends it as a new version (the old one stays); Esc cancels."
_FINAL_STATES = {"stop": "complete", "length": "complete", "stopped": "stopped"}

ModelIndex = QModelIndex | QPersistentModelIndex


class ConversationListModel(QAbstractListModel):
    def __init__(self, store: ChatStore) -> None:
        super().__init__()
        self.store = store
        self.items: list[Conversation] = []
        self.search = ""

    def refresh(self) -> None:
        self.beginResetModel()
        self.items = self.store.conversations(self.search)
        self.endResetModel()

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's default argument
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.items):
            return None
        item = self.items[index.row()]
        if role == Qt.ItemDataRole.DisplayRole:
            return ("📌 " if item.pinned else "") + (item.title or "New chat")
        if role == Qt.ItemDataRole.UserRole:
            return item.id
        return None

    def row_of(self, conversation_id: int) -> int:
        return next((row for row, item in enumerate(self.items) if item.id == conversation_id), -1)


class ChatInput(QPlainTextEdit):
    """Enter sends, Shift+Enter starts a new line, Esc asks to stop."""

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


class ChatPage(QWidget):
    model_changed = Signal(str)  # a line for the status bar

    def __init__(
        self,
        store: ChatStore,
        bridge: EngineBridge,
        settings: Settings,
        save_settings: Callable[[], None],
    ) -> None:
        super().__init__()
        self.store = store
        self.bridge = bridge
        self.settings = settings
        self.save_settings = save_settings
        self.model: LoadedModel | None = None
        self.conversation_id: int | None = None
        self.request_id: int | None = None
        self.reply_id: int | None = None
        self.reply = ReplyDraft()  # the streaming reply's answer and reasoning
        self.reply_preset = ""
        self.editing: Message | None = None  # the message being edited, resent as a new version
        self.closed = False
        self.loading: str | None = None  # the model file being loaded
        self.confirmed_risky: str | None = (
            None  # a model that crashed before, which the user asked for anyway
        )
        self.default_context = settings.default_context_length  # what "auto" context may reach
        self.last_checkpoint = 0.0
        self.deleted: ConversationExport | None = None  # the last deleted chat, for Undo
        self._build()
        self.render_timer = QTimer(self)
        self.render_timer.setSingleShot(True)
        self.render_timer.setInterval(RENDER_INTERVAL_MS)
        self.render_timer.timeout.connect(self._render)
        bridge.loaded.connect(self._on_loaded)
        bridge.failed.connect(self._on_failed)
        bridge.chunk.connect(self._on_chunk)
        bridge.finished.connect(self._on_finished)
        bridge.notice.connect(self._on_notice)
        self.conversations.refresh()
        self._set_busy(False)
        self._render()

    # --- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.model_picker = named(QComboBox(), "modelPicker")
        self.model_picker.setAccessibleName("Model")
        self.model_picker.setMinimumWidth(220)
        for path in self.settings.recent_models:
            self.model_picker.addItem(Path(path).name, path)
        open_button = named(QPushButton("Open model…"), "openModelButton")
        open_button.clicked.connect(self.choose_model_file)
        self.context = named(QSpinBox(minimum=0, maximum=1 << 20, singleStep=1024), "contextLength")
        self.context.setSpecialValueText("auto")
        self.context.setToolTip("Context length in tokens (auto: the model's, at most 8192)")
        self.threads = named(QSpinBox(minimum=0, maximum=256), "threads")
        self.threads.setSpecialValueText("auto")
        self.threads.setToolTip("CPU threads (auto: physical cores)")
        self.gpu_layers = named(QSpinBox(minimum=-1, maximum=999), "gpuLayers")
        self.gpu_layers.setSpecialValueText("auto")
        self.gpu_layers.setValue(0)
        self.gpu_layers.setToolTip("Layers on the GPU (auto: as many as fit; 0: CPU only)")
        self.flash_attention = named(QCheckBox("Flash attention"), "flashAttention")
        self.flash_attention.setChecked(self.settings.flash_attention)
        self.flash_attention.toggled.connect(self._remember_flash_attention)
        self._build_sampling()
        self.load_button = named(QPushButton("Load"), "loadButton")
        self.load_button.setAccessibleName("Load model")
        self.load_button.clicked.connect(self.load_selected_model)
        self.unload_button = named(QPushButton("Unload"), "unloadButton")
        self.unload_button.clicked.connect(self._unload)
        self.model_status = named(QLabel("No model loaded"), "modelStatus")
        self.model_status.setTextFormat(Qt.TextFormat.PlainText)
        # A long model name must not widen the window: the label takes the room there is.
        self.model_status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        top = QHBoxLayout()
        for widget in (self.model_picker, open_button, QLabel("Context"), self.context, QLabel("Threads"),
                       self.threads, QLabel("GPU layers"), self.gpu_layers, self.flash_attention,
                       self.load_button, self.unload_button):  # fmt: skip
            top.addWidget(widget)
        top.addWidget(self.model_status, 1)

        self.banner = named(QFrame(), "banner")
        self.banner.setFrameShape(QFrame.Shape.StyledPanel)
        self.banner_text = named(QLabel(), "bannerText")
        self.banner_text.setTextFormat(Qt.TextFormat.PlainText)
        self.banner_text.setWordWrap(True)
        self.reload_button = named(QPushButton("Reload"), "reloadButton")
        self.reload_button.clicked.connect(self.load_selected_model)
        banner_layout = QHBoxLayout(self.banner)
        banner_layout.addWidget(self.banner_text, 1)
        banner_layout.addWidget(self.reload_button)
        self.banner.hide()

        self.system_prompt = named(QLineEdit(placeholderText="System prompt (optional)"), "systemPrompt")
        self.system_prompt.setAccessibleName("System prompt")
        self.system_prompt.editingFinished.connect(self._save_system_prompt)
        self.transcript = Transcript()
        self.transcript.action_requested.connect(self._message_action)
        self.notice = named(QLabel(), "noticeLabel")
        self.notice.setTextFormat(Qt.TextFormat.PlainText)
        self.notice.setWordWrap(True)
        self.chat_input = named(ChatInput(placeholderText="Ask something (Enter sends)"), "chatInput")
        self.chat_input.setAccessibleName("Message")
        self.chat_input.setMaximumHeight(100)
        self.chat_input.submitted.connect(self.send)
        self.chat_input.stop_requested.connect(self.stop)
        self.send_button = named(QPushButton("Send"), "sendButton")
        self.send_button.setAccessibleName("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = named(QPushButton("Stop"), "stopButton")
        self.stop_button.setAccessibleName("Stop the reply")
        self.stop_button.clicked.connect(self.stop)
        self.thinking_switch = named(QCheckBox("Think"), "thinkingSwitch")
        self.thinking_switch.setAccessibleName("Let the model think before it answers")
        self.thinking_switch.setToolTip("This model's template can switch its thinking on or off, per chat")
        self.thinking_switch.setChecked(True)
        self.thinking_switch.hide()  # shown for models whose template takes the switch
        self.thinking_switch.toggled.connect(self._save_thinking)
        self.context_meter = named(QLabel(""), "contextMeter")
        self.context_meter.setToolTip("Tokens the conversation takes in the model's context")
        meter = QHBoxLayout()
        meter.addWidget(self.notice, 1)
        meter.addWidget(self.thinking_switch)
        meter.addWidget(QLabel("Preset"))
        meter.addWidget(self.preset)
        meter.addWidget(self.sampling_toggle)
        meter.addWidget(self.context_meter)
        bottom = QHBoxLayout()
        bottom.addWidget(self.chat_input, 1)
        bottom.addWidget(self.send_button)
        bottom.addWidget(self.stop_button)

        self.conversations = ConversationListModel(self.store)
        self.conversation_list = named(QListView(), "conversationList")
        self.conversation_list.setAccessibleName("Conversations")
        self.conversation_list.setModel(self.conversations)
        self.conversation_list.clicked.connect(self._conversation_clicked)
        self.conversation_list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.conversation_list.customContextMenuRequested.connect(self._conversation_menu)
        new_chat = named(QPushButton("New chat"), "newChatButton")
        new_chat.clicked.connect(self.new_chat)
        import_button = named(QPushButton("Import…"), "importButton")
        import_button.clicked.connect(self._choose_import_file)
        self.search = named(QLineEdit(placeholderText="Search chats (Ctrl+F)"), "chatSearch")
        self.search.setAccessibleName("Search chats")
        self.search_timer = QTimer(self, singleShot=True, interval=SEARCH_DEBOUNCE_MS)
        self.search.textChanged.connect(self.search_timer.start)
        self.search_timer.timeout.connect(self._apply_search)
        self.undo_bar = named(QFrame(), "undoBar")
        self.undo_text = QLabel()
        self.undo_text.setTextFormat(Qt.TextFormat.PlainText)
        self.undo_button = named(QPushButton("Undo"), "undoButton")
        self.undo_button.clicked.connect(self.undo_delete)
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(0, 0, 0, 0)
        undo_layout.addWidget(self.undo_text, 1)
        undo_layout.addWidget(self.undo_button)
        self.undo_bar.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(new_chat)
        buttons.addWidget(import_button)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addLayout(buttons)
        left_layout.addWidget(self.search)
        left_layout.addWidget(self.conversation_list)
        left_layout.addWidget(self.undo_bar)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        right_layout.addWidget(self.banner)
        right_layout.addWidget(self.system_prompt)
        right_layout.addWidget(self.transcript, 1)
        right_layout.addLayout(meter)
        right_layout.addWidget(self.sampling_panel)
        right_layout.addLayout(bottom)

        splitter = QSplitter()
        splitter.addWidget(left)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 800])
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(splitter, 1)

    def _build_sampling(self) -> None:
        """A preset picker, and the values behind it (shown on demand): changing one makes it Custom."""
        self.preset = named(QComboBox(), "samplingPreset")
        self.preset.setAccessibleName("Sampling preset")
        self.preset.addItems([*PRESETS, CUSTOM])
        self.sampling_toggle = named(QPushButton("Sampling…"), "samplingToggle")
        self.sampling_toggle.setCheckable(True)
        self.sampling_panel = named(QWidget(), "samplingPanel")
        self.temperature = named(QDoubleSpinBox(minimum=0.0, maximum=2.0, singleStep=0.05), "temperature")
        self.top_k = named(QSpinBox(minimum=0, maximum=1000), "topK")
        self.top_p = named(QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01), "topP")
        self.min_p = named(QDoubleSpinBox(minimum=0.0, maximum=1.0, singleStep=0.01), "minP")
        self.repeat_penalty = named(
            QDoubleSpinBox(minimum=1.0, maximum=2.0, singleStep=0.05), "repeatPenalty"
        )
        self.max_tokens = named(QSpinBox(minimum=0, maximum=1 << 20, singleStep=256), "maxTokens")
        self.max_tokens.setSpecialValueText("no limit")
        self.max_tokens.setValue(self.settings.max_tokens)
        self.seed = named(QSpinBox(minimum=-1, maximum=2**31 - 1), "seed")
        self.seed.setSpecialValueText("random")
        self.seed.setValue(-1)
        layout = QHBoxLayout(self.sampling_panel)
        layout.setContentsMargins(0, 0, 0, 0)
        for label, box in (("Temperature", self.temperature), ("Top-k", self.top_k), ("Top-p", self.top_p),
                           ("Min-p", self.min_p), ("Repeat penalty", self.repeat_penalty),
                           ("Max tokens", self.max_tokens), ("Seed", self.seed)):  # fmt: skip
            box.setAccessibleName(label)
            layout.addWidget(QLabel(label))
            layout.addWidget(box)
        layout.addStretch(1)
        self.sampling_panel.hide()
        self.sampling_toggle.toggled.connect(self.sampling_panel.setVisible)
        self.preset.currentTextChanged.connect(self._apply_preset)
        preset = self.settings.sampling_preset
        self.preset.setCurrentText(preset if preset in PRESETS else "Balanced")
        self._apply_preset(self.preset.currentText())
        for box in (self.temperature, self.top_k, self.top_p, self.min_p, self.repeat_penalty):
            box.valueChanged.connect(self._sampling_edited)
        self.max_tokens.valueChanged.connect(self._remember_max_tokens)

    @Slot(str)
    def _apply_preset(self, name: str) -> None:
        if name in PRESETS:
            values = PRESETS[name]
            boxes = (self.temperature, self.top_k, self.top_p, self.min_p, self.repeat_penalty)
            for box in boxes:
                box.blockSignals(True)  # filling in a preset is not a custom edit
            self.temperature.setValue(values.temperature)
            self.top_k.setValue(values.top_k)
            self.top_p.setValue(values.top_p)
            self.min_p.setValue(values.min_p)
            self.repeat_penalty.setValue(values.repeat_penalty)
            for box in boxes:
                box.blockSignals(False)
            self.settings.sampling_preset = name
            self.save_settings()

    @Slot()
    def _sampling_edited(self) -> None:
        self.preset.setCurrentText(CUSTOM)

    @Slot(int)
    def _remember_max_tokens(self, value: int) -> None:
        self.settings.max_tokens = value
        self.save_settings()

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature.value(),
            top_k=self.top_k.value(),
            top_p=self.top_p.value(),
            min_p=self.min_p.value(),
            repeat_penalty=self.repeat_penalty.value(),
            seed=None if self.seed.value() < 0 else self.seed.value(),
        )

    # --- models ------------------------------------------------------------------------------------
    def add_model_path(self, path: Path) -> None:
        """Remember a model file and select it."""
        text = str(path)
        if text not in self.settings.recent_models:
            self.settings.recent_models.insert(0, text)
            self.save_settings()
            self.model_picker.insertItem(0, path.name, text)
        self.model_picker.setCurrentIndex(self.model_picker.findData(text))

    def apply_defaults(self, settings: Settings) -> None:
        """The load settings' defaults from the settings (at start, and when they change)."""
        self.threads.setValue(settings.threads or 0)
        gpu = settings.default_gpu_layers
        self.gpu_layers.setValue(-1 if gpu is None else gpu)
        self.flash_attention.setChecked(settings.flash_attention)
        self.default_context = settings.default_context_length

    def set_library(self, entries: list[LibraryEntry]) -> None:
        """Offer the library's usable models in the picker (beside the files opened by hand)."""
        for entry in entries:
            if not entry.problem and self.model_picker.findData(str(entry.path)) < 0:
                self.model_picker.addItem(entry.id, str(entry.path))

    def chat_with(self, entry: LibraryEntry) -> None:
        """Select this model and load it (the Models page's "Chat with it")."""
        index = self.model_picker.findData(str(entry.path))
        if index < 0:
            self.model_picker.addItem(entry.id, str(entry.path))
            index = self.model_picker.count() - 1
        self.model_picker.setCurrentIndex(index)
        self.load_selected_model()

    @Slot()
    def choose_model_file(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "", "GGUF models (*.gguf)")
        if name:
            self.add_model_path(Path(name))

    @Slot()
    def load_selected_model(self) -> None:
        path = self.model_picker.currentData()
        if not path:
            self._show_banner("Choose a model file first (Open model…).", reload=False)
            return
        if path in self.settings.crashed_models and self.confirmed_risky != path:
            self.confirmed_risky = path  # Reload (or Load) again means: yes, try it
            self._show_banner(
                f"{Path(path).name} took the model engine down the last time it loaded (see Help > Show "
                "logs). Press Reload to try it anyway.",
                reload=True,
            )
            return
        self.loading = path
        self.banner.hide()
        self.model_status.setText(f"Loading {Path(path).name}…")
        self.load_button.setEnabled(False)
        self.reload_button.setEnabled(False)
        self.bridge.load(
            LoadParams(
                Path(path),
                n_ctx=self.context.value() or None,
                max_auto_ctx=self.default_context,
                n_threads=self.threads.value() or None,
                n_gpu_layers=None if self.gpu_layers.value() < 0 else self.gpu_layers.value(),
                flash_attn=self.flash_attention.isChecked(),
            )
        )

    @Slot(bool)
    def _remember_flash_attention(self, on: bool) -> None:
        self.settings.flash_attention = on
        self.save_settings()

    @Slot()
    def _unload(self) -> None:
        self.bridge.unload()
        self.model = None
        self.model_status.setText("No model loaded")
        self.model_changed.emit("no model loaded")
        self._set_busy(False)

    @Slot(object)
    def _on_loaded(self, model: LoadedModel) -> None:
        self.model = model
        if self.loading in self.settings.crashed_models:  # it loads now: no longer a risk
            self.settings.crashed_models.remove(self.loading)
            self.save_settings()
        self.loading = None
        self.banner.hide()
        self.load_button.setEnabled(True)
        self.reload_button.setEnabled(True)
        self.thinking_switch.setVisible(model.thinking_switch)
        summary = f"{model.name} · {model.quant} · context {model.n_ctx} · loaded in {model.load_ms:.0f} ms"
        self.model_status.setText(summary)
        self.model_changed.emit(summary)
        self._set_busy(False)

    @Slot(str, str)
    def _on_failed(self, kind: str, message: str) -> None:
        self.load_button.setEnabled(True)
        self.reload_button.setEnabled(True)
        if self.request_id is not None:
            self._finish_reply("interrupted" if is_crash(kind) else "error", {})
        if is_crash(kind):
            self.model = None
            self.model_changed.emit("engine stopped")
            if (
                self.loading and self.loading not in self.settings.crashed_models
            ):  # remembered: never auto-loaded
                self.settings.crashed_models.append(self.loading)
                self.save_settings()
        self.loading = None
        if self.model is None:
            self.model_status.setText("No model loaded")
        self._show_banner(message, reload=True)
        self._set_busy(False)
        QTimer.singleShot(0, self.transcript.scroll_to_end)  # after the banner took its room

    def _show_banner(self, message: str, reload: bool) -> None:
        self.banner_text.setText(message)
        self.reload_button.setVisible(reload)
        self.banner.show()

    # --- conversations ---------------------------------------------------------------------------
    @Slot()
    def new_chat(self) -> None:
        if self.request_id is not None:
            return
        self.conversation_id = None
        self.editing = None
        self.system_prompt.clear()
        self.notice.clear()
        self.conversation_list.clearSelection()
        self._render()
        self.chat_input.setFocus()

    @Slot(QModelIndex)
    def _conversation_clicked(self, index: QModelIndex) -> None:
        if self.request_id is None:
            self.open_conversation(int(index.data(Qt.ItemDataRole.UserRole)))

    @Slot()
    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    @Slot()
    def _apply_search(self) -> None:
        self.conversations.search = self.search.text()
        self.conversations.refresh()
        self._select_current()

    @Slot(QPoint)
    def _conversation_menu(self, position: QPoint) -> None:
        index = self.conversation_list.indexAt(position)
        if not index.isValid():
            return
        conversation_id = int(index.data(Qt.ItemDataRole.UserRole))
        pinned = self.store.conversation(conversation_id).pinned
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self._ask_rename(conversation_id))
        menu.addAction("Unpin" if pinned else "Pin", lambda: self.set_pinned(conversation_id, not pinned))
        menu.addAction("Export as Markdown…", lambda: self._choose_export_file(conversation_id, "md"))
        menu.addAction("Export as JSON…", lambda: self._choose_export_file(conversation_id, "json"))
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete_conversation(conversation_id))
        menu.exec(self.conversation_list.viewport().mapToGlobal(position))

    def _ask_rename(self, conversation_id: int) -> None:
        current = self.store.conversation(conversation_id).title
        title, ok = QInputDialog.getText(self, "Rename chat", "Title", text=current)
        if ok:
            self.rename_conversation(conversation_id, title)

    def rename_conversation(self, conversation_id: int, title: str) -> None:
        self.store.rename_conversation(conversation_id, title)
        self.conversations.refresh()
        self._select_current()

    def set_pinned(self, conversation_id: int, pinned: bool) -> None:
        self.store.set_pinned(conversation_id, pinned)
        self.conversations.refresh()
        self._select_current()

    def delete_conversation(self, conversation_id: int) -> None:
        if conversation_id == self.conversation_id and self.request_id is not None:
            return  # not while its reply streams
        self.deleted = self.store.delete_conversation(conversation_id)
        if conversation_id == self.conversation_id:
            self.new_chat()
        self.conversations.refresh()
        self.undo_text.setText(f"Deleted “{self.deleted.conversation.title or 'New chat'}”")
        self.undo_bar.show()

    @Slot()
    def undo_delete(self) -> None:
        if self.deleted is None:
            return
        restored = self.store.restore(self.deleted)
        self.deleted = None
        self.undo_bar.hide()
        self.conversations.refresh()
        self.open_conversation(restored)
        self._select_current()

    def _choose_export_file(self, conversation_id: int, kind: str) -> None:
        title = self.store.conversation(conversation_id).title or "conversation"
        suggested = "".join(ch if ch.isalnum() or ch in " -_" else "_" for ch in title)[:60] + f".{kind}"
        name, _ = QFileDialog.getSaveFileName(self, "Export chat", suggested, f"*.{kind}")
        if name:
            self.export_conversation(conversation_id, Path(name))

    def export_conversation(self, conversation_id: int, path: Path) -> None:
        saved = self.store.export(conversation_id)
        text = to_markdown(saved) if path.suffix.lower() == ".md" else to_json(saved)
        try:
            write_atomic(path, text.encode("utf-8"))
        except OSError as exc:
            self._show_banner(to_app_error(exc).user_message, reload=False)

    @Slot()
    def _choose_import_file(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Import a chat", "", "Hubside chats (*.json)")
        if name:
            self.import_conversation(Path(name))

    def import_conversation(self, path: Path) -> None:
        try:
            with path.open("rb") as f:
                saved = from_json(f.read(MAX_IMPORT_BYTES + 1))
        except (OSError, AppError) as exc:
            self._show_banner(to_app_error(exc).user_message, reload=False)
            return
        conversation_id = self.store.restore(saved)
        self.conversations.refresh()
        self.open_conversation(conversation_id)
        self._select_current()

    @Slot(str, int, int)
    def _message_action(self, action: str, message_id: int, number: int) -> None:
        if self.conversation_id is None or message_id == self.reply_id:
            return
        message = next((m for m in self.store.messages(self.conversation_id) if m.id == message_id), None)
        if message is None:
            return
        if action == "copy":
            QApplication.clipboard().setText(message.content)
        elif action == "thoughts":
            self.transcript.toggle_thoughts(message_id)
            self._render()
        elif action == "copycode":
            blocks = code_blocks(message.content)
            if number < len(blocks):
                QApplication.clipboard().setText(blocks[number])
        elif self.request_id is not None:
            return  # the rest changes the chat: not while a reply streams
        elif action == "delete":
            self.store.delete_message(message_id)
            self._render()
        elif action in ("previous", "next"):
            self.switch_version(message, -1 if action == "previous" else 1)
        elif action == "edit":
            self.edit_message(message)
        elif action == "regenerate":
            self.regenerate(message)
        elif action == "continue":
            self.continue_reply(message)

    def switch_version(self, message: Message, step: int) -> None:
        siblings = [
            m.id for m in self.store.all_messages(message.conversation_id) if m.parent_id == message.parent_id
        ]
        target = siblings.index(message.id) + step
        if 0 <= target < len(siblings):
            self.store.select_version(siblings[target])
            self._render()

    def edit_message(self, message: Message) -> None:
        """Put a message of yours back in the input; sending it adds a new version there."""
        self.editing = message
        self.chat_input.setPlainText(message.content)
        self.chat_input.setFocus()
        self.notice.setText(EDIT_NOTICE)

    def regenerate(self, message: Message) -> None:
        """A new version of this reply, from the same conversation before it; the old one stays."""
        if self._can_generate() and self.conversation_id is not None:
            self._start_reply(self.store.start_reply(self.conversation_id, parent_id=message.parent_id))

    def continue_reply(self, message: Message) -> None:
        """Go on with a reply that was cut (max tokens, stopped, interrupted), adding to its text."""
        if self._can_generate():
            self.store.resume_reply(message.id)
            self._start_reply(message.id)

    def _thinking(self) -> bool | None:
        """The template's thinking switch for this reply (None: the model has none, or the default)."""
        if self.model is None or not self.model.thinking_switch:
            return None
        return self.thinking_switch.isChecked()

    @Slot(bool)
    def _save_thinking(self, on: bool) -> None:
        if self.conversation_id is not None:
            self.store.set_thinking(self.conversation_id, on)

    @Slot()
    def _save_system_prompt(self) -> None:
        if self.conversation_id is not None:
            self.store.set_system_prompt(self.conversation_id, self.system_prompt.text())

    def open_conversation(self, conversation_id: int) -> None:
        self.conversation_id = conversation_id
        self.editing = None
        conversation = self.store.conversation(conversation_id)
        self.system_prompt.setText(conversation.system_prompt)
        with QSignalBlocker(self.thinking_switch):  # showing the chat's switch is not changing it
            self.thinking_switch.setChecked(conversation.thinking is not False)
        self.notice.clear()
        self._render()

    # --- sending and streaming -------------------------------------------------------------------
    @Slot()
    def send(self) -> None:
        text = self.chat_input.toPlainText().strip()
        if not text or not self._can_generate():
            return
        if self.conversation_id is None:
            title = " ".join(text.split())[:TITLE_LENGTH]
            self.conversation_id = self.store.create_conversation(
                title, self.system_prompt.text(), str(self.model.path if self.model else "")
            )
            if (thinking := self._thinking()) is not None:
                self.store.set_thinking(self.conversation_id, thinking)
        parent = self.editing.parent_id if self.editing is not None else END
        self.editing = None
        # Saved before anything is generated.
        self.store.add_message(self.conversation_id, "user", text, parent_id=parent)
        self.chat_input.clear()
        self._start_reply(self.store.start_reply(self.conversation_id))

    def _can_generate(self) -> bool:
        if self.request_id is not None:
            return False
        if self.model is None:
            self._show_banner("Load a model to chat (choose one above, then Load).", reload=False)
            return False
        return True

    def _start_reply(self, reply_id: int) -> None:
        """Stream into this (saved, 'streaming') reply from the conversation shown before it. A reply that
        has text already is continued: it goes to the model as the start of its answer."""
        assert self.conversation_id is not None
        shown = self.store.messages(self.conversation_id)
        history = [
            ChatMessage(m.role, m.content, m.reasoning)
            for m in shown
            if m.content.strip() and m.state != "error"
        ]
        system = self.system_prompt.text().strip()
        messages = ([ChatMessage("system", system)] if system else []) + history
        self.reply_id = reply_id
        self.reply = ReplyDraft.resumed(shown[-1].content, shown[-1].reasoning)
        self.last_checkpoint = time.monotonic()
        self.request_id = self.bridge.engine.new_request_id()
        self.notice.clear()
        self.reply_preset = self.preset.currentText()
        self.bridge.generate(
            GenerateRequest(
                self.request_id,
                tuple(messages),
                sampling=self.sampling(),
                max_tokens=self.max_tokens.value() or None,
                enable_thinking=self._thinking(),
            )
        )
        self.conversations.refresh()
        self._select_current()
        self._set_busy(True)
        self.transcript.begin_reply(shown[:-1])
        if self.reply.text or self.reply.reasoning_text:
            self._render()

    @Slot(int, str, bool)
    def _on_chunk(self, request_id: int, text: str, reasoning: bool) -> None:
        if request_id != self.request_id or self.reply_id is None:
            return  # a reply the user already stopped: nothing more is shown
        now = time.monotonic()
        self.reply.add(text, reasoning, now)
        if now - self.last_checkpoint >= CHECKPOINT_INTERVAL_S:
            self.store.checkpoint_reply(self.reply_id, self.reply.text, self.reply.reasoning_text)
            self.last_checkpoint = now
        if not self.render_timer.isActive():
            self.render_timer.start()

    @Slot(int, str)
    def _on_notice(self, request_id: int, text: str) -> None:
        if request_id == self.request_id:
            self.notice.setText(text)

    @Slot(int, object)
    def _on_finished(self, request_id: int, stats: ReplyStats) -> None:
        if request_id != self.request_id:
            return
        self._finish_reply(
            _FINAL_STATES.get(stats.finish_reason, "complete"),
            _stats_dict(stats, self.model, self.reply_preset),
        )
        self.notice.setText(" ".join(stats.notices))  # the numbers are under the reply itself
        if self.model is not None:
            used = stats.prompt_tokens + stats.completion_tokens
            self.context_meter.setText(f"context {used} / {self.model.n_ctx} tokens")

    @Slot()
    def stop(self) -> None:
        if self.request_id is None:
            if self.editing is not None:  # Esc while editing: leave the message as it was
                self.editing = None
                self.chat_input.clear()
                self.notice.clear()
            return
        self.bridge.stop(self.request_id)
        self._finish_reply("stopped", {})  # what is on screen is the reply; nothing more is added

    def _finish_reply(self, state: str, stats: dict[str, Any]) -> None:
        self.render_timer.stop()
        if self.reply_id is not None and self.conversation_id is not None:
            reasoning = self.reply.reasoning_text.strip()
            if reasoning and "reasoning_ms" not in stats and self.reply.thinking_since is not None:
                until = self.reply.thinking_until or time.monotonic()  # stopped while thinking
                stats = {**stats, "reasoning_ms": round((until - self.reply.thinking_since) * 1000)}
            self.store.finish_reply(self.reply_id, self.reply.text, state, stats, reasoning)
            shown = self.store.messages(self.conversation_id)
            if shown and shown[-1].id == self.reply_id:
                self.transcript.end_reply(shown[-1])
        self.request_id = None
        self.reply_id = None
        self.reply = ReplyDraft()
        self.conversations.refresh()
        self._select_current()
        self._set_busy(False)

    # --- view ------------------------------------------------------------------------------------
    def _select_current(self) -> None:
        if self.conversation_id is not None:
            row = self.conversations.row_of(self.conversation_id)
            self.conversation_list.setCurrentIndex(self.conversations.index(row, 0))

    def _set_busy(self, busy: bool) -> None:
        self.send_button.setEnabled(not busy and self.model is not None)
        self.stop_button.setEnabled(busy)
        self.unload_button.setEnabled(not busy and self.model is not None)

    @Slot()
    def _render(self) -> None:
        if self.reply_id is not None:  # only the streaming reply is redrawn
            reply = self.reply
            label = reply.label(time.monotonic())
            self.transcript.update_reply(reply.text, reply.reasoning_text, label, reply.thinking())
        elif self.conversation_id is None:
            self.transcript.show_markdown(EMPTY_HINT)
        else:
            self.transcript.show_messages(self.store.messages(self.conversation_id))

    def shutdown(self) -> None:
        """The window is closing: keep what was streamed so far, and draw nothing more."""
        if self.request_id is not None:
            self.bridge.stop(self.request_id)
            self._finish_reply("stopped", {})
        self.render_timer.stop()
        if not self.closed:  # a window can be closed twice
            self.render_timer.timeout.disconnect(self._render)
        self.closed = True


def _stats_dict(stats: ReplyStats, model: LoadedModel | None, preset: str) -> dict[str, Any]:
    return {
        "model": model.name if model else "",
        "preset": preset,
        "finish_reason": stats.finish_reason,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "ttft_ms": round(stats.ttft_ms, 1),
        "tokens_per_s": round(stats.tokens_per_s, 1),
        "prompt_tokens_per_s": round(stats.prompt_tokens_per_s, 1),
        **({"reasoning_ms": round(stats.reasoning_ms)} if stats.reasoning_ms else {}),
    }
