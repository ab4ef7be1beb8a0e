"""The desktop app around the pages: settings, one instance, hubside:// links, the crash dialog, welcome."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.chat.store import SCHEMA_VERSION
from app.paths import AppPaths
from app.settings import SettingsStore
from app.ui.crash import CrashDialog, CrashReporter
from app.ui.discover_page import DiscoverPage
from app.ui.main_window import MainWindow
from app.ui.settings_dialog import SettingsDialog
from app.ui.single_instance import SingleInstance, hand_over, parse_link
from app.ui.welcome import WelcomeDialog
from tests.hubstub.server import HubStub


def test_every_setting_persists_and_takes_effect(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    paths = AppPaths.from_env()
    old_models = paths.models_dir / "me" / "m-GGUF"
    old_models.mkdir(parents=True)
    (old_models / "m-Q4_0.gguf").write_bytes(b"GGUF")
    dialog = window.open_settings()
    assert isinstance(dialog, SettingsDialog)
    new_models = tmp_path / "elsewhere" / "models"
    dialog.models_dir.setText(str(new_models))
    dialog.extra_dirs.setPlainText(f"{tmp_path / 'a'}\n\n{tmp_path / 'b'}\n")
    dialog.context.setValue(4096)
    dialog.threads.setValue(1)
    dialog.gpu_policy.setCurrentIndex(2)
    dialog.gpu_layers.setValue(12)
    dialog.flash_attention.setChecked(False)
    dialog.parallel.setValue(3)
    dialog.theme.setCurrentText("dark")
    assert dialog.save(move_files=True)
    saved = json.loads(paths.settings_file.read_text())
    assert saved["models_dir"] == str(new_models) and saved["extra_model_dirs"] == [
        str(tmp_path / "a"),
        str(tmp_path / "b"),
    ]
    assert (saved["default_context_length"], saved["threads"], saved["default_gpu_layers"]) == (4096, 1, 12)
    assert (saved["flash_attention"], saved["max_parallel_downloads"], saved["theme"]) == (False, 3, "dark")
    assert (new_models / "me" / "m-GGUF" / "m-Q4_0.gguf").exists() and not old_models.exists()  # moved
    chat = window.chat  # in effect now, without a restart
    bar = chat.model_bar
    assert (bar.threads.value(), bar.gpu_layers.value(), bar.flash_attention.isChecked()) == (1, 12, False)
    assert chat.model_bar.default_context == 4096
    from app.ui.downloads_page import DownloadsPage

    downloads = window.pages["downloads"]
    assert isinstance(downloads, DownloadsPage)
    assert downloads.manager.parallel == 3 and downloads.manager.models_dir == new_models
    assert QApplication.palette().window().color().lightness() < 128  # dark
    dialog.show_values(type(window.settings)())  # Reset to defaults, then OK
    assert dialog.save(move_files=False)
    assert SettingsStore(paths.settings_file).load().theme == "system" and chat.model_bar.threads.value() == 0
    assert "hf_" not in paths.settings_file.read_text()


def test_the_token_needs_a_yes_for_a_plain_file(
    qtbot: QtBot, window: MainWindow, monkeypatch: pytest.MonkeyPatch, no_keyring: None
) -> None:
    from PySide6.QtWidgets import QMessageBox

    from app.hub.token import hub_token

    monkeypatch.delenv("HF_TOKEN", raising=False)
    paths = AppPaths.from_env()
    dialog = window.open_settings()
    assert isinstance(dialog, SettingsDialog)
    dialog.token.setText("hf_secret")
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    assert not dialog.save() and "not saved" in dialog.problem.text() and not paths.token_file.exists()
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    assert dialog.save()
    assert paths.token_file.stat().st_mode & 0o777 == 0o600 and hub_token(paths.token_file) == "hf_secret"
    assert "hf_secret" not in paths.settings_file.read_text()


def test_one_instance_per_data_dir_and_links(qtbot: QtBot, hub: HubStub, window: MainWindow) -> None:
    data_dir = AppPaths.from_env().data_dir
    assert not hand_over(data_dir, "show")  # nobody listening yet
    instance = SingleInstance(data_dir)
    received: list[str] = []
    instance.message.connect(received.append)
    instance.message.connect(window.handle_request)
    hub.add_repo("someone/tiny-GGUF", {"tiny-Q4_0.gguf": 10})
    try:
        sent: list[bool] = []
        link = "hubside://open?repo=someone/tiny-GGUF&file=tiny-Q4_0.gguf"
        threading.Thread(target=lambda: sent.append(hand_over(data_dir, link))).start()  # "a second launch"
        qtbot.waitUntil(lambda: received == [link], timeout=10_000)
        assert sent == [True]
        discover = window.pages["discover"]
        assert isinstance(discover, DiscoverPage) and window.stack.currentWidget() is discover
        qtbot.waitUntil(
            lambda: discover.details is not None and discover.details.id == "someone/tiny-GGUF",
            timeout=10_000,
        )
        window.handle_request("hubside://open?repo=../etc")  # a bad link is a message, not an action
        assert "Not a Hubside link" in window.statusBar().currentMessage()
    finally:
        instance.close()
    assert parse_link("hubside://open?repo=a/b").repo == "a/b"
    for bad in (
        "https://open?repo=a/b",
        "hubside://open?repo=a",
        "hubside://delete?repo=a/b",
        "hubside://open?repo=a/b/c",
    ):
        with pytest.raises(Exception, match="Not a Hubside link"):
            parse_link(bad)


@pytest.mark.qt_no_exception_capture
def test_exceptions_in_a_slot_and_a_thread_open_the_crash_dialog(qtbot: QtBot, window: MainWindow) -> None:
    from app.logs import setup_logging

    paths = AppPaths.from_env()
    setup_logging(paths, to_stderr=False)  # as the app does at start
    reporter = CrashReporter(paths.log_file).install()
    try:

        def broken_slot() -> None:
            raise ValueError("a slot went wrong")

        QTimer.singleShot(0, broken_slot)
        qtbot.waitUntil(lambda: len(reporter.dialogs) == 1, timeout=10_000)
        first = reporter.dialogs[0]
        assert (
            isinstance(first, CrashDialog) and "ValueError: a slot went wrong" in first.details.toPlainText()
        )
        assert window.isVisible()  # the app goes on

        def broken_worker() -> None:
            raise RuntimeError("a worker went wrong")

        worker = threading.Thread(target=broken_worker, name="worker-7")
        worker.start()
        worker.join()
        qtbot.waitUntil(lambda: len(reporter.dialogs) == 2, timeout=10_000)
        details = reporter.dialogs[1].details.toPlainText()
        assert details.startswith("In worker-7:") and "RuntimeError: a worker went wrong" in details
        from PySide6.QtWidgets import QPushButton

        button = reporter.dialogs[1].findChild(QPushButton, "copyDetails")
        assert button is not None
        button.click()
        assert "a worker went wrong" in QApplication.clipboard().text()
        log = paths.log_file.read_text()
        assert "a slot went wrong" in log and "a worker went wrong" in log
        for dialog in list(reporter.dialogs):
            dialog.close()
    finally:
        reporter.uninstall()


def test_the_welcome_suggests_models_that_fit(
    qtbot: QtBot, window: MainWindow, hub: HubStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the Hub when it answers (off the GUI thread); the built-in list when it never has; with too
    little memory, it says so (not that the Hub cannot be reached)."""
    from app.hub.client import HubClient
    from app.hub.starters import STARTERS, suggestions
    from app.ui.background import Background

    hub.add_repo(
        "bartowski/SmolLM2-135M-Instruct-GGUF",
        {"m-Q4_K_M.gguf": 10},
        tags=["gguf", "conversational"],
        gguf={"total": 135_000_000, "architecture": "llama"},
    )
    background = Background()
    cache = AppPaths.from_env().ensure().hub_cache_dir
    shown: list[str] = []
    dialog = WelcomeDialog(shown.append, lambda: None, background, lambda: HubClient(cache), window)
    qtbot.addWidget(dialog)
    qtbot.waitUntil(lambda: dialog.source != "", timeout=10_000)
    assert dialog.source == "hub" and dialog.suggested == ["bartowski/SmolLM2-135M-Instruct-GGUF"]
    assert dialog.facts.text().startswith("This machine: ")  # measured off the GUI thread, then shown
    assert "Most downloaded" in dialog.note.text()
    from PySide6.QtWidgets import QPushButton

    button = dialog.findChild(QPushButton, f"starter-{dialog.suggested[0]}")
    assert button is not None
    button.click()
    assert shown == [dialog.suggested[0]]

    offline = HubClient(cache.parent / "never-answered", endpoint="http://127.0.0.1:9")
    first_run_offline = WelcomeDialog(shown.append, lambda: None, background, lambda: offline, window)
    qtbot.addWidget(first_run_offline)
    qtbot.waitUntil(lambda: first_run_offline.source != "", timeout=10_000)
    assert first_run_offline.source == "built-in" and 1 <= len(first_run_offline.suggested) <= 3
    assert set(first_run_offline.suggested) <= {s.repo for s in STARTERS}
    assert [s.repo for s in suggestions(31 * 10**8)] == [STARTERS[0].repo, STARTERS[1].repo]
    assert suggestions(10**9) == []

    import app.ui.welcome

    monkeypatch.setattr(app.ui.welcome, "free_ram", lambda: 10**9)  # 1 GB free: no chat model worth it
    monkeypatch.setattr(app.ui.welcome, "free_vram", lambda: None)
    hub.log.clear()
    cramped = WelcomeDialog(shown.append, lambda: None, background, lambda: HubClient(cache), window)
    qtbot.addWidget(cramped)
    qtbot.waitUntil(lambda: cramped.source != "", timeout=10_000)
    assert cramped.source == "little-memory" and cramped.suggested == [] and not hub.log.all()
    assert (
        "Too little memory is free" in cramped.note.text() and "cannot be reached" not in cramped.note.text()
    )
    background.close()


def test_a_model_that_crashed_the_engine_is_not_loaded_again_without_asking(
    qtbot: QtBot, window: MainWindow, tiny_model: Path
) -> None:
    import os
    import signal

    chat = window.chat
    chat.add_model_path(tiny_model)
    chat.load_selected_model()
    qtbot.waitUntil(lambda: chat.bridge.engine.pid is not None, timeout=10_000)
    os.kill(chat.bridge.engine.pid, signal.SIGKILL)  # type: ignore[arg-type]  # the load takes the engine down
    qtbot.waitUntil(lambda: chat.banner.isVisible(), timeout=30_000)
    assert (
        chat.model is None
        and str(tiny_model) in SettingsStore(AppPaths.from_env().settings_file).load().crashed_models
    )
    chat.load_selected_model()  # next time: a warning first, nothing is loaded
    assert "took the model engine down" in chat.banner_text.text() and chat.loading is None
    chat.reload_button.click()  # "try it anyway"
    qtbot.waitUntil(lambda: chat.model is not None, timeout=30_000)
    assert str(tiny_model) not in chat.settings.crashed_models  # it loads now


def test_the_self_test_passes_here(tiny_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.selftest import run_self_test

    assert run_self_test(tiny_model) == 0
    out = capsys.readouterr().out
    assert (
        out.strip().endswith("self-test passed") and "8 tokens" in out and f"schema {SCHEMA_VERSION}" in out
    )


def test_desktop_integration_installs_for_the_user(tmp_path: Path) -> None:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    subprocess.run(
        ["sh", str(root / "packaging" / "install-desktop.sh")], env=env, check=True, capture_output=True
    )
    share = tmp_path / ".local" / "share"
    desktop = (share / "applications" / "hubside.desktop").read_text()
    assert "Exec=hubside %u" in desktop and "MimeType=x-scheme-handler/hubside;" in desktop
    assert (share / "metainfo" / "io.github.hubside.Hubside.metainfo.xml").exists()
    assert (
        (share / "icons" / "hicolor" / "256x256" / "apps" / "hubside.png").read_bytes().startswith(b"\x89PNG")
    )


def test_the_window_process_loads_no_heavy_module_it_does_not_need_yet() -> None:
    # Each of these held the interpreter lock for tens of ms at start-up or on the first model load.
    import subprocess
    import sys

    heavy = (
        "jinja2",
        "llama_cpp",
        "requests",
        "huggingface_hub.hf_api",
        "pygments.lexers",
        "PySide6.QtCharts",
    )
    code = (
        "import sys; import app.ui.application, app.runtime.worker; "
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
