"""The chat page: the model bar, the conversations, the transcript, the composer and the sampling controls,
wired to the engine and to the conversation on screen (app.chat.active, which saves every message).

Text is shown through a 10 Hz render timer, so a fast model never floods the window; a streaming reply
redraws only itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QSignalBlocker, Qt, QTimer, Signal, Slot
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from app.chat.active import FINAL_STATES, ActiveChat, stats_dict
from app.chat.export import MAX_IMPORT_BYTES, from_json, to_json, to_markdown
from app.chat.markdown import code_blocks
from app.chat.reply import ReplyDraft
from app.chat.store import ChatStore, ConversationExport, Message
from app.errors import AppError, to_app_error
from app.files import write_atomic
from app.library.scan import LibraryEntry
from app.runtime.protocol import GenerateRequest, LoadedModel, ReplyStats
from app.settings import Settings
from app.ui.composer import Composer
from app.ui.conversation_sidebar import ConversationSidebar
from app.ui.engine_bridge import Bridge, EngineBridge, is_crash
from app.ui.model_bar import ModelBar
from app.ui.remote_bridge import Offer, RemoteModels, is_remote, remote_label, shown_name
from app.ui.sampling_panel import SamplingPanel
from app.ui.transcript import Transcript
from app.ui.widgets import named

RENDER_INTERVAL_MS = 100  # the streaming reply is redrawn at most 10 times a second
EMPTY_HINT = (
    "*A new chat.* Choose a model above (or **Open model…**), press **Load**, then type below: Enter sends, "
    "Shift+Enter starts a new line, Esc stops a reply."
)
EDIT_NOTICE = "Editing your message: Enter sends it as a new version (the old one stays); Esc cancels."


class ChatPage(QWidget):
    model_changed = Signal(str)  # a line for the status bar

    def __init__(
        self,
        store: ChatStore,
        bridge: EngineBridge,
        settings: Settings,
        save_settings: Callable[[], None],
        remote: RemoteModels | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.local_bridge = bridge
        self.bridge: Bridge = bridge  # the local engine's, or the remote one's while a remote model is loaded
        self.remote = remote
        self.settings = settings
        self.save_settings = save_settings
        self.active = ActiveChat(store)
        self.model: LoadedModel | None = None
        self.request_id: int | None = None
        self.reply_preset = ""
        self.editing: Message | None = None  # the message being edited, resent as a new version
        self.closed = False
        self.loading: str | None = None  # the model file being loaded
        self.confirmed_risky: str | None = None  # a model that crashed before, which the user asked for
        self.deleted: ConversationExport | None = None  # the last deleted chat, for Undo
        self._build()
        self.render_timer = QTimer(self, singleShot=True, interval=RENDER_INTERVAL_MS)
        self.render_timer.timeout.connect(self._render_reply)
        for each in (bridge, remote.bridge) if remote else (bridge,):
            each.loaded.connect(self._on_loaded)
            each.failed.connect(self._on_failed)
            each.chunk.connect(self._on_chunk)  # request ids of the two never meet (FIRST_REMOTE_ID)
            each.finished.connect(self._on_finished)
            each.notice.connect(self._on_notice)
        if remote is not None:
            remote.offers_changed.connect(self._on_offers)
            remote.refresh()
        self._set_busy(False)
        self._show_chat()

    # the conversation on screen and its reply (kept by ActiveChat)
    @property
    def conversation_id(self) -> int | None:
        return self.active.conversation_id

    @property
    def reply_id(self) -> int | None:
        return self.active.reply_id

    @property
    def reply(self) -> ReplyDraft:
        return self.active.draft

    # --- layout ----------------------------------------------------------------------------------
    def _build(self) -> None:
        self.model_bar = ModelBar(self.settings, self.save_settings)
        self.model_bar.open_button.clicked.connect(self.choose_model_file)
        self.model_bar.load_button.clicked.connect(self.load_selected_model)
        self.model_bar.cancel_button.clicked.connect(self._cancel_load)
        self.model_bar.unload_button.clicked.connect(self._unload)

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
        self.composer = Composer()
        self.composer.send_requested.connect(self.send)
        self.composer.stop_requested.connect(self.stop)
        self.chat_input = self.composer.input
        self.sampling_panel = SamplingPanel(self.settings, self.save_settings)
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
        meter.addWidget(self.sampling_panel.preset)
        meter.addWidget(self.sampling_panel.toggle)
        meter.addWidget(self.context_meter)

        self.sidebar = ConversationSidebar(self.store)
        self.sidebar.chosen.connect(self._conversation_chosen)
        self.sidebar.new_chat_requested.connect(self.new_chat)
        self.sidebar.import_chosen.connect(self.import_conversation)
        self.sidebar.export_chosen.connect(self.export_conversation)
        self.sidebar.delete_requested.connect(self.delete_conversation)
        self.sidebar.undo_requested.connect(self.undo_delete)

        right = QWidget()
        right_layout = QVBoxLayout(right)
        right_layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.banner, self.system_prompt):
            right_layout.addWidget(widget)
        right_layout.addWidget(self.transcript, 1)
        right_layout.addLayout(meter)
        right_layout.addWidget(self.sampling_panel)
        right_layout.addWidget(self.composer)
        splitter = QSplitter()
        splitter.addWidget(self.sidebar)
        splitter.addWidget(right)
        splitter.setStretchFactor(1, 1)
        splitter.setSizes([220, 800])
        layout = QVBoxLayout(self)
        layout.addWidget(self.model_bar)
        layout.addWidget(splitter, 1)

    # --- models ------------------------------------------------------------------------------------
    def add_model_path(self, path: Path) -> None:
        self.model_bar.add_model_path(path)

    def apply_defaults(self, settings: Settings) -> None:
        self.model_bar.apply_defaults(settings)

    def set_library(self, entries: list[LibraryEntry]) -> None:
        self.model_bar.set_library(entries)

    def chat_with(self, entry: LibraryEntry) -> None:
        """Select this model and load it (the Models page's "Chat with it")."""
        self.model_bar.select(entry)
        self.load_selected_model()

    @Slot()
    def choose_model_file(self) -> None:
        name, _ = QFileDialog.getOpenFileName(self, "Open a GGUF model", "", "GGUF models (*.gguf)")
        if name:
            self.add_model_path(Path(name))

    @Slot()
    def load_selected_model(self) -> None:
        path = self.model_bar.selected_path()
        if not path:
            unavailable = self.model_bar.unavailable_reason()
            self._show_banner(unavailable or "Choose a model file first (Open model…).", reload=False)
            return
        self._use_bridge(self.remote.bridge if self.remote and is_remote(path) else self.local_bridge)
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
        shown = shown_name(path) if is_remote(path) else Path(path).name
        self.model_bar.status.setText(f"Asking {shown}…" if is_remote(path) else f"Loading {shown}…")
        self._set_loading(True)
        if self.remote is not None and is_remote(path):
            self.remote.load(path)
        else:
            self.bridge.load(self.model_bar.load_params(path))

    def _use_bridge(self, bridge: Bridge) -> None:
        """Switching between local and remote: the other side's model is let go (a local one frees its
        memory)."""
        if bridge is not self.bridge:
            if self.model is not None:
                self.bridge.unload()
                self.model = None
            self.bridge = bridge

    @Slot(object)
    def _on_offers(self, offers: list[Offer]) -> None:
        self.model_bar.set_remote(offers)

    def refresh_remote(self) -> None:
        """The endpoints changed: list their models again."""
        if self.remote is not None:
            self.remote.refresh()

    def _set_loading(self, loading: bool) -> None:
        self.model_bar.set_loading(loading)
        self.reload_button.setEnabled(not loading)

    @Slot()
    def _cancel_load(self) -> None:
        """The user gave up the load: its engine is killed; not a crash, so nothing is remembered."""
        self.loading = None
        self.bridge.cancel_load()
        self.model = None
        self._set_loading(False)
        self.model_bar.status.setText("No model loaded")
        self.model_changed.emit("no model loaded")
        self._set_busy(False)

    @Slot()
    def _unload(self) -> None:
        self.bridge.unload()
        self.model = None
        self.model_bar.status.setText("No model loaded")
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
        self._set_loading(False)
        self.thinking_switch.setVisible(model.thinking_switch)
        summary = f"{model.name} · {model.quant} · context {model.n_ctx} · loaded in {model.load_ms:.0f} ms"
        if is_remote(str(model.path)):
            summary = (
                f"{shown_name(remote_label(model))} · served elsewhere · answered in {model.load_ms:.0f} ms"
            )
        self.model_bar.status.setText(summary)
        self.model_changed.emit(summary)
        self._set_busy(False)

    @Slot(str, str)
    def _on_failed(self, kind: str, message: str) -> None:
        self._set_loading(False)
        if self.request_id is not None:
            self._finish_reply("interrupted" if is_crash(kind) else "error", {})
        if is_crash(kind):
            self.model = None
            self.model_changed.emit("engine stopped")
            if self.loading and self.loading not in self.settings.crashed_models:  # never auto-loaded again
                self.settings.crashed_models.append(self.loading)
                self.save_settings()
        self.loading = None
        if self.model is None:
            self.model_bar.status.setText("No model loaded")
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
        self.active.open(None)
        self.editing = None
        self.system_prompt.clear()
        self.notice.clear()
        self.sidebar.select(None)
        self._show_chat()
        self.chat_input.setFocus()

    @Slot(int)
    def _conversation_chosen(self, conversation_id: int) -> None:
        if self.request_id is None:
            self.open_conversation(conversation_id)

    @Slot()
    def focus_search(self) -> None:
        self.sidebar.focus_search()

    def open_conversation(self, conversation_id: int) -> None:
        if self.request_id is not None:  # an Undo, an import, Compare's "Open as chat" while a reply streams
            self.stop()  # it is kept as far as it came
        self.active.open(conversation_id)
        self.editing = None
        conversation = self.store.conversation(conversation_id)
        self.system_prompt.setText(conversation.system_prompt)
        with QSignalBlocker(self.thinking_switch):  # showing the chat's switch is not changing it
            self.thinking_switch.setChecked(conversation.thinking is not False)
        self.notice.clear()
        self.sidebar.select(conversation_id)
        self._show_chat()

    @Slot(int)
    def delete_conversation(self, conversation_id: int) -> None:
        if conversation_id == self.conversation_id and self.request_id is not None:
            return  # not while its reply streams
        self.deleted = self.store.delete_conversation(conversation_id)
        if conversation_id == self.conversation_id:
            self.new_chat()
        self.sidebar.refresh(self.conversation_id)
        self.sidebar.show_undo(self.deleted.conversation.title)

    @Slot()
    def undo_delete(self) -> None:
        if self.deleted is None:
            return
        restored = self.store.restore(self.deleted)
        self.deleted = None
        self.sidebar.undo_bar.hide()
        self.open_conversation(restored)

    @Slot(int, Path)
    def export_conversation(self, conversation_id: int, path: Path) -> None:
        saved = self.store.export(conversation_id)
        text = to_markdown(saved) if path.suffix.lower() == ".md" else to_json(saved)
        try:
            write_atomic(path, text.encode("utf-8"))
        except OSError as exc:
            self._show_banner(to_app_error(exc).user_message, reload=False)

    @Slot(Path)
    def import_conversation(self, path: Path) -> None:
        try:
            with path.open("rb") as f:
                saved = from_json(f.read(MAX_IMPORT_BYTES + 1))
        except (OSError, AppError) as exc:
            self._show_banner(to_app_error(exc).user_message, reload=False)
            return
        self.open_conversation(self.store.restore(saved))

    # --- messages --------------------------------------------------------------------------------
    @Slot(str, int, int)
    def _message_action(self, action: str, message_id: int, number: int) -> None:
        message = self.active.message(message_id)
        if message is None or message_id == self.reply_id:
            return
        if action == "copy":
            QApplication.clipboard().setText(message.content)
        elif action == "thoughts":
            self.transcript.toggle_thoughts(message_id)
        elif action == "copycode":
            blocks = code_blocks(message.content)
            if number < len(blocks):
                QApplication.clipboard().setText(blocks[number])
        elif self.request_id is not None:
            return  # the rest changes the chat: not while a reply streams
        elif action == "delete":
            self.store.delete_message(message_id)
            self._reload()
        elif action in ("previous", "next"):
            self.switch_version(message, -1 if action == "previous" else 1)
        elif action == "edit":
            self.edit_message(message)
        elif action == "regenerate":
            self.regenerate(message)
        elif action == "continue":
            self.continue_reply(message)

    def switch_version(self, message: Message, step: int) -> None:
        siblings = self.store.versions(message)
        target = siblings.index(message.id) + step
        if 0 <= target < len(siblings):
            self.store.select_version(siblings[target])
            self._reload()

    def edit_message(self, message: Message) -> None:
        """Put a message of yours back in the input; sending it adds a new version there."""
        self.editing = message
        self.chat_input.setPlainText(message.content)
        self.chat_input.setFocus()
        self.notice.setText(EDIT_NOTICE)

    def regenerate(self, message: Message) -> None:
        """A new version of this reply, from the same conversation before it; the old one stays."""
        if self._can_generate():
            self.active.start_reply(time.monotonic(), regenerating=message)
            self._start_reply()

    def continue_reply(self, message: Message) -> None:
        """Go on with a reply that was cut (max tokens, stopped, interrupted), adding to its text."""
        if self._can_generate():
            self.active.continue_reply(message, time.monotonic())
            self._start_reply()

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

    # --- sending and streaming -------------------------------------------------------------------
    @Slot()
    def send(self) -> None:
        text = self.composer.text()
        if not text or not self._can_generate():
            return
        model_path = str(self.model.path) if self.model else ""
        edited, self.editing = self.editing, None
        self.active.add_user_message(text, self.system_prompt.text(), model_path, self._thinking(), edited)
        self.chat_input.clear()
        self.active.start_reply(time.monotonic())
        self._start_reply()

    def _can_generate(self) -> bool:
        if self.request_id is not None:
            return False
        if self.model is None:
            self._show_banner("Load a model to chat (choose one above, then Load).", reload=False)
            return False
        return True

    def _start_reply(self) -> None:
        """Send the conversation before the (saved, 'streaming') reply, which then streams in. A reply that
        has text already is continued: it goes to the model as the start of its answer."""
        assert self.model is not None
        n_ctx = self.model.n_ctx or self.settings.default_context_length  # a remote model's is not known
        messages, omitted = self.active.turns(self.system_prompt.text(), n_ctx)
        self.request_id = self.bridge.engine.new_request_id()
        self.notice.clear()
        self.reply_preset = self.sampling_panel.preset.currentText()
        self.bridge.generate(
            GenerateRequest(
                self.request_id,
                messages,
                sampling=self.sampling_panel.sampling(),
                max_tokens=self.sampling_panel.reply_limit(),
                enable_thinking=self._thinking(),
                omitted_messages=omitted,
            )
        )
        assert self.conversation_id is not None
        self.sidebar.touch(self.conversation_id)
        self._set_busy(True)
        self.transcript.begin_reply(self.active.shown[:-1], len(self.active.unread), self.active.read_earlier)
        if self.reply.text or self.reply.reasoning_text:
            self._render_reply()

    @Slot(int, str, bool)
    def _on_chunk(self, request_id: int, text: str, reasoning: bool) -> None:
        if request_id != self.request_id or self.reply_id is None:
            return  # a reply the user already stopped: nothing more is shown
        self.active.add_piece(text, reasoning, time.monotonic())
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
            FINAL_STATES.get(stats.finish_reason, "complete"),
            stats_dict(stats, self.model, self.reply_preset),
        )
        self.notice.setText(" ".join(stats.notices))  # the numbers are under the reply itself
        if self.model is not None:
            used = stats.prompt_tokens + stats.completion_tokens
            of = f" / {self.model.n_ctx}" if self.model.n_ctx else ""
            self.context_meter.setText(f"context {used}{of} tokens")

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

    def _finish_reply(self, state: str, stats: dict[str, object]) -> None:
        self.render_timer.stop()
        saved = self.active.finish_reply(state, stats, time.monotonic())
        if saved is not None:
            self.transcript.end_reply(saved)
        self.request_id = None
        self._set_busy(False)

    # --- view ------------------------------------------------------------------------------------
    def _set_busy(self, busy: bool) -> None:
        self.composer.set_busy(busy, can_send=self.model is not None)
        self.model_bar.unload_button.setEnabled(not busy and self.model is not None)

    def _reload(self) -> None:
        """The chat changed under the path on screen (versions, a delete): read it again and redraw."""
        self.active.reload()
        self._show_chat()

    def _show_chat(self) -> None:
        if self.conversation_id is None:
            self.transcript.show_markdown(EMPTY_HINT)
        else:
            self.transcript.show_messages(
                self.active.shown, len(self.active.unread), self.active.read_earlier
            )

    @Slot()
    def _render_reply(self) -> None:
        """Redraw the streaming reply (only it)."""
        if self.reply_id is not None:
            reply = self.reply
            label = reply.label(time.monotonic())
            self.transcript.update_reply(reply.text, reply.reasoning_text, label, reply.thinking())

    def shutdown(self) -> None:
        """The window is closing: keep what was streamed so far, and draw nothing more."""
        if self.request_id is not None:
            self.bridge.stop(self.request_id)
            self._finish_reply("stopped", {})
        self.render_timer.stop()
        if self.remote is not None and not self.closed:
            self.remote.shutdown()
        if not self.closed:  # a window can be closed twice
            self.render_timer.timeout.disconnect(self._render_reply)
        self.closed = True
