"""The settings dialog. OK writes the settings file and hands the new settings to `apply`, which puts them
into effect at once (no restart): the chat's load defaults, the download queue, the library, the theme."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QEventLoop
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.errors import AppError, to_app_error
from app.hub.token import save_token
from app.settings import MAX_CONNECTIONS, Settings, mirror_endpoint
from app.ui.widgets import named

THEMES = ("system", "light", "dark")
_SYSTEM_STYLE: list[str] = []  # the style Qt chose at start, for "system"


def apply_theme(theme: str) -> None:
    """Light or dark Fusion palettes, or back to what the system gave."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return
    if not _SYSTEM_STYLE:
        _SYSTEM_STYLE.append(app.style().name())
    if theme == "system":
        app.setStyle(_SYSTEM_STYLE[0])
        app.setPalette(app.style().standardPalette())
        return
    app.setStyle("Fusion")
    palette = app.style().standardPalette()
    if theme == "dark":
        for role, colour in (
            (QPalette.ColorRole.Window, "#2b2b2b"), (QPalette.ColorRole.WindowText, "#e6e6e6"),
            (QPalette.ColorRole.Base, "#1f1f1f"), (QPalette.ColorRole.AlternateBase, "#2b2b2b"),
            (QPalette.ColorRole.Text, "#e6e6e6"), (QPalette.ColorRole.Button, "#353535"),
            (QPalette.ColorRole.ButtonText, "#e6e6e6"), (QPalette.ColorRole.Highlight, "#3d7bd9"),
            (QPalette.ColorRole.HighlightedText, "#ffffff"), (QPalette.ColorRole.Link, "#7fb0ff"),
            (QPalette.ColorRole.ToolTipBase, "#353535"), (QPalette.ColorRole.ToolTipText, "#e6e6e6"),
            (QPalette.ColorRole.PlaceholderText, "#8a8a8a"),
        ):  # fmt: skip
            palette.setColor(role, QColor(colour))
    app.setPalette(palette)


class SettingsDialog(QDialog):
    def __init__(
        self,
        settings: Settings,
        default_models_dir: Path,
        token_file: Path,
        apply: Callable[[Settings], None],
        parent: QWidget | None = None,
        open_endpoints: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Settings")
        self.setMinimumWidth(620)
        self.settings, self.apply = settings, apply
        self.default_models_dir, self.token_file = default_models_dir, token_file
        self.models_dir = named(QLineEdit(), "settingsModelsDir")
        browse = named(QPushButton("Choose…"), "settingsBrowse")
        browse.clicked.connect(self._choose_models_dir)
        models_row = QHBoxLayout()
        models_row.addWidget(self.models_dir, 1)
        models_row.addWidget(browse)
        self.extra_dirs = named(QPlainTextEdit(), "settingsExtraDirs")
        self.extra_dirs.setPlaceholderText(
            "One folder per line (LM Studio's and the HF cache are found anyway)"
        )
        self.extra_dirs.setMaximumHeight(70)
        self.context = named(QSpinBox(minimum=256, maximum=1 << 20, singleStep=1024), "settingsContext")
        self.threads = named(QSpinBox(minimum=0, maximum=256), "settingsThreads")
        self.threads.setSpecialValueText("auto (physical cores)")
        self.gpu_policy = named(QComboBox(), "settingsGpuPolicy")
        for label, value in (("CPU only", 0), ("As many layers as fit (auto)", -1), ("A fixed number", 1)):
            self.gpu_policy.addItem(label, value)
        self.gpu_layers = named(QSpinBox(minimum=1, maximum=999), "settingsGpuLayers")
        self.gpu_policy.currentIndexChanged.connect(self._policy_changed)
        gpu_row = QHBoxLayout()
        gpu_row.addWidget(self.gpu_policy, 1)
        gpu_row.addWidget(self.gpu_layers)
        self.flash_attention = named(QCheckBox("Use flash attention"), "settingsFlashAttention")
        self.parallel = named(QSpinBox(minimum=1, maximum=8), "settingsParallel")
        self.connections = named(QSpinBox(minimum=1, maximum=MAX_CONNECTIONS), "settingsConnections")
        self.connections.setToolTip("Connections per file: more can be faster where one is held back")
        self.limit = named(QDoubleSpinBox(minimum=0.0, maximum=10_000.0, decimals=1), "settingsLimit")
        self.limit.setSuffix(" MB/s")
        self.limit.setSpecialValueText("no limit")
        self.limit.setToolTip("For all downloads together; a change applies to running downloads at once")
        self.mirror = named(QLineEdit(), "settingsMirror")
        self.mirror.setPlaceholderText("https://huggingface.co (HF_ENDPOINT, when set, wins)")
        self.mirror.setToolTip("Where the Hub is slow or blocked: a mirror's address (your token goes to it)")
        self.token = named(QLineEdit(), "settingsToken")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("Leave empty to keep the current one")
        self.forget_token = named(QCheckBox("Forget the saved token"), "settingsForgetToken")
        self.theme = named(QComboBox(), "settingsTheme")
        self.theme.addItems(THEMES)
        form = QFormLayout()
        form.addRow("Models folder", models_row)
        form.addRow("Other model folders", self.extra_dirs)
        form.addRow("Default context length", self.context)
        form.addRow("CPU threads", self.threads)
        form.addRow("GPU layers", gpu_row)
        form.addRow("", self.flash_attention)
        form.addRow("Downloads at once", self.parallel)
        form.addRow("Connections per download", self.connections)
        form.addRow("Bandwidth limit", self.limit)
        form.addRow("Hub mirror", self.mirror)
        form.addRow("Hugging Face token", self.token)
        form.addRow("", self.forget_token)
        form.addRow("Theme", self.theme)
        if open_endpoints is not None:
            endpoints = named(QPushButton("Endpoints…"), "settingsEndpoints")
            endpoints.setToolTip("Models served elsewhere: llama-server, vLLM, Ollama, another Hubside")
            endpoints.clicked.connect(open_endpoints)
            form.addRow("Models served elsewhere", endpoints)
        self.problem = named(QLabel(""), "settingsProblem")
        self.problem.setWordWrap(True)
        form.addRow(self.problem)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        reset = buttons.addButton("Reset to defaults", QDialogButtonBox.ButtonRole.ResetRole)
        reset.setObjectName("settingsReset")
        reset.clicked.connect(lambda: self.show_values(Settings()))
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.setLayout(form)
        self.show_values(settings)

    def _policy_changed(self) -> None:
        self.gpu_layers.setEnabled(self.gpu_policy.currentData() == 1)

    def show_values(self, values: Settings) -> None:
        self.models_dir.setText(values.models_dir or str(self.default_models_dir))
        self.extra_dirs.setPlainText("\n".join(values.extra_model_dirs))
        self.context.setValue(values.default_context_length)
        self.threads.setValue(values.threads or 0)
        layers = values.default_gpu_layers
        self.gpu_policy.setCurrentIndex(0 if layers == 0 else 1 if layers is None else 2)
        self.gpu_layers.setValue(layers if layers else 1)
        self.gpu_layers.setEnabled(layers not in (0, None))
        self.flash_attention.setChecked(values.flash_attention)
        self.parallel.setValue(values.max_parallel_downloads)
        self.connections.setValue(values.download_connections)
        self.limit.setValue(values.download_limit_mbps)
        self.mirror.setText(values.hub_mirror)
        self.theme.setCurrentText(values.theme if values.theme in THEMES else "system")

    def _choose_models_dir(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Models folder", self.models_dir.text())
        if folder:
            self.models_dir.setText(folder)

    def accept(self) -> None:
        if self.save():
            super().accept()

    def save(self, move_files: bool | None = None) -> bool:
        """Write the values into the settings and apply them; False (with a message) if something is wrong.
        `move_files` answers "move the models to the new folder?" (None: ask)."""
        try:  # checked before anything is saved
            mirror = mirror_endpoint(self.mirror.text())
        except ValueError as exc:
            self.problem.setText(str(exc))
            return False
        token = self.token.text().strip()
        if (token or self.forget_token.isChecked()) and not self._save_token(token):
            return False
        old_dir = self.settings.models_folder(self.default_models_dir)
        new_dir = Path(self.models_dir.text().strip() or self.default_models_dir).expanduser()
        if new_dir != old_dir and old_dir.is_dir() and any(old_dir.iterdir()):
            if move_files is None:
                question = f"Move the models in {old_dir} to {new_dir}?"
                answer = QMessageBox.question(self, "Models folder", question)
                move_files = answer == QMessageBox.StandardButton.Yes
            if move_files and (problem := self._move_models(old_dir, new_dir)):
                self.problem.setText(f"The models could not be moved: {problem}")
                return False
        s = self.settings
        s.models_dir = None if new_dir == self.default_models_dir else str(new_dir)
        s.extra_model_dirs = [
            line.strip() for line in self.extra_dirs.toPlainText().splitlines() if line.strip()
        ]
        s.default_context_length = self.context.value()
        s.threads = self.threads.value() or None
        policy = self.gpu_policy.currentData()
        s.default_gpu_layers = 0 if policy == 0 else None if policy == -1 else self.gpu_layers.value()
        s.flash_attention = self.flash_attention.isChecked()
        s.max_parallel_downloads = self.parallel.value()
        s.download_connections = self.connections.value()
        s.download_limit_mbps = self.limit.value()
        s.hub_mirror = mirror
        s.theme = self.theme.currentText()
        self.apply(s)
        return True

    def _move_models(self, old: Path, new: Path) -> str:
        """Move the models (across disks that copies gigabytes); returns the problem, or ""."""
        problem = self._off_the_gui_thread(lambda: _move_contents(old, new), f"Moving the models to {new}…")
        return str(problem) if problem is not None else ""

    def _save_token(self, token: str) -> bool:
        if self._keep_token(lambda: save_token(token)) is None:
            return True
        answer = QMessageBox.question(
            self,
            "Hugging Face token",
            "This system has no keyring. Keep the token in a file that only you can read "
            f"({self.token_file})?",
        )
        if answer != QMessageBox.StandardButton.Yes:
            self.problem.setText("The token was not saved (no keyring); you can set HF_TOKEN instead.")
            return False
        if (problem := self._keep_token(lambda: save_token(token, self.token_file))) is not None:
            self.problem.setText(f"The token was not saved: {problem.user_message}")
            return False
        return True

    def _keep_token(self, save: Callable[[], None]) -> AppError | None:
        """A keyring call (an OS keyring can take seconds: its daemon, an unlock prompt); what went wrong."""
        problem = self._off_the_gui_thread(save, "Saving the token…")
        return to_app_error(problem) if problem is not None else None

    def _off_the_gui_thread(self, work: Callable[[], None], doing: str) -> Exception | None:
        """Run `work` on a thread of its own while the window goes on drawing, the dialog disabled (so no
        click re-enters it); returns what it raised, or None."""
        problems: list[Exception] = []

        def run() -> None:
            try:
                work()
            except Exception as exc:  # reported in the dialog
                problems.append(exc)

        worker = threading.Thread(target=run, name="settings-work", daemon=True)
        worker.start()
        self.problem.setText(doing)
        self.setEnabled(False)
        while worker.is_alive():
            QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
            worker.join(0.02)
        self.setEnabled(True)
        self.problem.setText("")
        return problems[0] if problems else None


def _move_contents(old: Path, new: Path) -> None:
    new.mkdir(parents=True, exist_ok=True)
    for item in old.iterdir():
        shutil.move(str(item), str(new / item.name))
