"""The main window. Pages arrive with the issues that build them."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMainWindow, QVBoxLayout, QWidget

from app import __version__
from app.paths import AppPaths


class MainWindow(QMainWindow):
    def __init__(self, paths: AppPaths) -> None:
        super().__init__()
        self.setObjectName("mainWindow")
        self.setWindowTitle("Hubside")
        self.resize(1100, 720)

        welcome = QLabel("<h1>Hubside</h1><p>Open models on your own machine.</p>")
        welcome.setObjectName("welcomeLabel")
        welcome.setTextFormat(Qt.TextFormat.RichText)  # our own fixed text, never model output
        welcome.setAlignment(Qt.AlignmentFlag.AlignCenter)
        models = QLabel(f"Models folder: {paths.models_dir}")
        models.setObjectName("modelsDirLabel")
        models.setTextFormat(Qt.TextFormat.PlainText)
        models.setAlignment(Qt.AlignmentFlag.AlignCenter)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addStretch(1)
        layout.addWidget(welcome)
        layout.addWidget(models)
        layout.addStretch(1)
        self.setCentralWidget(central)
        self.statusBar().showMessage(f"Hubside {__version__} · no model loaded")
