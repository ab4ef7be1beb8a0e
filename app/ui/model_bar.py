"""The model bar above the chat: which model file, how to load it (context, threads, GPU layers, flash
attention), Load (and Cancel while it loads) and Unload, and what is loaded now."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Slot
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QWidget,
)

from app.library.scan import LibraryEntry
from app.runtime.protocol import LoadParams
from app.settings import DEFAULT_CONTEXT, Settings
from app.ui.remote_bridge import Offer, is_remote, offer_remote, unavailable_reason
from app.ui.widgets import add_new_items, named


class ModelBar(QWidget):
    def __init__(self, settings: Settings, save_settings: Callable[[], None]) -> None:
        super().__init__()
        self.settings, self.save_settings = settings, save_settings
        self.default_context = settings.default_context_length  # what "auto" context may reach
        self.picker = named(QComboBox(), "modelPicker")
        self.picker.setAccessibleName("Model")
        self.picker.setMinimumWidth(220)
        for path in settings.recent_models:
            self.picker.addItem(Path(path).name, path)
        self.open_button = named(QPushButton("Open model…"), "openModelButton")
        self.context = named(QSpinBox(minimum=0, maximum=1 << 20, singleStep=1024), "contextLength")
        self.context.setSpecialValueText("auto")
        self.context.setToolTip(f"Context length in tokens (auto: the model's, at most {DEFAULT_CONTEXT})")
        self.threads = named(QSpinBox(minimum=0, maximum=256), "threads")
        self.threads.setSpecialValueText("auto")
        self.threads.setToolTip("CPU threads (auto: physical cores)")
        self.gpu_layers = named(QSpinBox(minimum=-1, maximum=999), "gpuLayers")
        self.gpu_layers.setSpecialValueText("auto")
        self.gpu_layers.setValue(0)
        self.gpu_layers.setToolTip("Layers on the GPU (auto: as many as fit; 0: CPU only)")
        self.flash_attention = named(QCheckBox("Flash attention"), "flashAttention")
        self.flash_attention.setChecked(settings.flash_attention)
        self.flash_attention.toggled.connect(self._remember_flash_attention)
        self.load_button = named(QPushButton("Load"), "loadButton")
        self.load_button.setAccessibleName("Load model")
        self.cancel_button = named(QPushButton("Cancel"), "cancelLoadButton")
        self.cancel_button.setAccessibleName("Cancel loading")
        self.cancel_button.hide()  # shown while a model loads
        self.unload_button = named(QPushButton("Unload"), "unloadButton")
        self.status = named(QLabel("No model loaded"), "modelStatus")
        self.status.setTextFormat(Qt.TextFormat.PlainText)
        # A long model name must not widen the window: the label takes the room there is.
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.picker, self.open_button, QLabel("Context"), self.context, QLabel("Threads"),
                       self.threads, QLabel("GPU layers"), self.gpu_layers, self.flash_attention,
                       self.load_button, self.cancel_button, self.unload_button):  # fmt: skip
            layout.addWidget(widget)
        layout.addWidget(self.status, 1)
        self.picker.currentIndexChanged.connect(self._chosen)

    @Slot(int)
    def _chosen(self, index: int) -> None:
        """How to load a file means nothing for a model served elsewhere: those controls rest."""
        local = not is_remote(self.picker.itemData(index))
        for control in (self.context, self.threads, self.gpu_layers, self.flash_attention):
            control.setEnabled(local)

    def set_loading(self, loading: bool) -> None:
        """While a model loads: Cancel instead of Load."""
        self.load_button.setEnabled(not loading)
        self.load_button.setVisible(not loading)
        self.cancel_button.setVisible(loading)

    def add_model_path(self, path: Path) -> None:
        """Remember a model file and select it."""
        text = str(path)
        if text not in self.settings.recent_models:
            self.settings.recent_models.insert(0, text)
            self.save_settings()
            self.picker.insertItem(0, path.name, text)
        self.picker.setCurrentIndex(self.picker.findData(text))

    def apply_defaults(self, settings: Settings) -> None:
        """The load settings' defaults from the settings (at start, and when they change)."""
        self.threads.setValue(settings.threads or 0)
        gpu = settings.default_gpu_layers
        self.gpu_layers.setValue(-1 if gpu is None else gpu)
        self.flash_attention.setChecked(settings.flash_attention)
        self.default_context = settings.default_context_length

    def set_library(self, entries: list[LibraryEntry]) -> None:
        """Offer the library's usable models (beside the files opened by hand)."""
        add_new_items(self.picker, [(e.id, str(e.path)) for e in entries if not e.problem])

    def set_remote(self, offers: list[Offer]) -> None:
        """Offer the endpoints' models after the local ones, marked as remote; an endpoint that cannot be
        reached is shown unavailable (not selectable, the reason in its tooltip)."""
        offer_remote(self.picker, offers)

    def select(self, entry: LibraryEntry) -> None:
        index = self.picker.findData(str(entry.path))
        if index < 0:
            self.picker.addItem(entry.id, str(entry.path))
            index = self.picker.count() - 1
        self.picker.setCurrentIndex(index)

    def unavailable_reason(self) -> str:
        """Why the chosen remote model cannot be used now ("" when it can)."""
        return unavailable_reason(self.picker)

    def selected_path(self) -> str | None:
        """The model file chosen, or remote:NAME/MODEL; None for nothing or an unavailable endpoint."""
        path = self.picker.currentData()
        return str(path) if path and not self.unavailable_reason() else None

    def load_params(self, path: str) -> LoadParams:
        return LoadParams(
            Path(path),
            n_ctx=self.context.value() or None,
            max_auto_ctx=self.default_context,
            n_threads=self.threads.value() or None,
            n_gpu_layers=None if self.gpu_layers.value() < 0 else self.gpu_layers.value(),
            flash_attn=self.flash_attention.isChecked(),
        )

    @Slot(bool)
    def _remember_flash_attention(self, on: bool) -> None:
        self.settings.flash_attention = on
        self.save_settings()
