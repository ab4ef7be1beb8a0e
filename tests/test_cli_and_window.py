"""The entry points and the window: `hubside`, `python -m app`, and a real (offscreen) main window."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QLabel, QWidget
from pytestqt.qtbot import QtBot

from app import __version__
from app.cli import main
from app.paths import AppPaths
from app.ui.application import build_window
from app.ui.main_window import MainWindow

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_version_from_the_console_script_and_python_m_app() -> None:
    script = Path(sys.executable).parent / "hubside"
    for command in ([str(script)], [sys.executable, "-m", "app"]):
        result = _run(*command, "--version")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"hubside {__version__}"


def test_paths_command_honours_hubside_home(hubside_home: Path) -> None:
    result = _run(sys.executable, "-m", "app", "paths")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(maxsplit=1) for line in result.stdout.splitlines())
    assert Path(lines["models_dir"]) == (hubside_home / "models").resolve()
    assert (hubside_home / "logs").is_dir()


def test_bad_arguments_exit_non_zero_with_a_message() -> None:
    result = _run(sys.executable, "-m", "app", "no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_a_folder_that_cannot_be_created_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = subprocess.run(
        [sys.executable, "-m", "app", "paths"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"HUBSIDE_HOME": str(blocker / "home"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("hubside: ")
    assert "Traceback" not in result.stderr


def test_main_window(qtbot: QtBot) -> None:
    window, services = build_window(AppPaths.from_env().ensure())
    qtbot.addWidget(window)
    window.show()
    qtbot.waitExposed(window)
    try:
        assert window.windowTitle() == "Hubside"
        for name in ("chatInput", "sendButton", "stopButton", "transcript", "conversationList",
                     "modelPicker", "loadButton", "systemPrompt"):  # fmt: skip
            assert window.findChild(QWidget, name) is not None, name
        assert window.findChild(QLabel, "statusModel").text() == "no model loaded"  # type: ignore[union-attr]
    finally:
        window.close()
        services.close()


def test_hubside_without_arguments_opens_the_window(qapp: QApplication) -> None:
    seen: list[str] = []

    def look_and_close() -> None:
        for widget in qapp.topLevelWidgets():
            if isinstance(widget, MainWindow) and widget.isVisible():
                seen.append(widget.windowTitle())
                widget.close()

    QTimer.singleShot(200, look_and_close)
    assert main([]) == 0
    assert seen == ["Hubside"]


def test_desktop_file_launches_the_hubside_command() -> None:
    entry = configparser.ConfigParser(interpolation=None)
    entry.read(ROOT / "packaging" / "hubside.desktop")
    assert entry["Desktop Entry"]["Exec"] == "hubside %u"  # %u: a hubside:// link, when there is one
    assert entry["Desktop Entry"]["Name"] == "Hubside"
