"""One writer path for the settings file: reload, change, save, under a lock, from the window and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PySide6.QtCore import QCoreApplication, QEvent
from pytestqt.qtbot import QtBot

from app.paths import AppPaths
from app.settings import Settings, SettingsStore, update
from app.ui.main_window import MainWindow
from app.ui.settings_dialog import SettingsDialog
from tests.library_files import write_tiny_gguf

ROOT = Path(__file__).resolve().parent.parent
WRITERS, CHANGES = 4, 25


def _hubside(*args: str) -> subprocess.CompletedProcess[str]:
    """The real `hubside` command, on this test's HUBSIDE_HOME."""
    return subprocess.run(
        [sys.executable, "-m", "app", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_the_window_quitting_keeps_a_model_hidden_by_hubside_rm_meanwhile(
    qtbot: QtBot, tmp_path: Path
) -> None:
    """The window used to write its whole in-memory copy on quit, undoing a `hubside rm` made while it ran."""
    from app.ui.application import build_window

    paths = AppPaths.from_env().ensure()
    folder = tmp_path / "elsewhere"
    model = write_tiny_gguf(folder / "kept-by-another-app.gguf")
    SettingsStore(paths.settings_file).save(Settings(extra_model_dirs=[str(folder)]))
    window, services = build_window(paths)
    window.show()
    second_page = list(window.pages)[1]
    try:
        removed = subprocess.Popen(  # the window goes on running meanwhile
            [sys.executable, "-m", "app", "rm", "dir:kept-by-another-app"], stdout=subprocess.PIPE, cwd=ROOT
        )
        qtbot.waitUntil(lambda: removed.poll() is not None, timeout=120_000)
        assert removed.returncode == 0
        assert removed.stdout is not None and "hidden" in removed.stdout.read().decode()
        window.navigation.setCurrentRow(1)  # the window changes a setting of its own meanwhile
    finally:
        window.close()  # quitting saves the window's settings
        window.deleteLater()  # and its pages' timers, before the services they read are closed
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        services.close()
    saved = SettingsStore(paths.settings_file).load()
    assert saved.hidden_models == [str(model)]
    assert saved.extra_model_dirs == [str(folder)] and saved.last_page == second_page


def test_save_writes_only_what_this_copy_changed() -> None:
    """Two copies (the window's and a dialog's, or another process's): each keeps the other's changes."""
    path = AppPaths.from_env().ensure().settings_file
    window_store = SettingsStore(path)
    window = window_store.load()
    update(path, lambda s: setattr(s, "theme", "dark"))  # another writer, after the window read the file
    update(path, lambda s: s.hidden_models.append("/m/x.gguf"))
    window.max_tokens = 77
    window_store.save(window)
    on_disk = SettingsStore(path).load()
    assert (on_disk.theme, on_disk.hidden_models, on_disk.max_tokens) == ("dark", ["/m/x.gguf"], 77)
    assert (window.theme, window.hidden_models) == ("dark", ["/m/x.gguf"])  # the copy sees them too
    window.theme = "light"  # a field another writer had changed, changed again here: the newest wins
    window_store.save(window)
    assert SettingsStore(path).load().theme == "light"


def test_a_change_passed_to_save_applies_to_the_file_as_it_is_now() -> None:
    path = AppPaths.from_env().ensure().settings_file
    store = SettingsStore(path)
    window = store.load()
    update(path, lambda s: s.hidden_models.append("/m/a.gguf"))
    store.save(window, lambda s: s.hidden_models.append("/m/b.gguf"))
    assert SettingsStore(path).load().hidden_models == ["/m/a.gguf", "/m/b.gguf"] == window.hidden_models


def test_writers_in_several_processes_lose_no_change() -> None:
    """4 processes x 25 appends at once: all 100 are in the file (load-change-save without the lock loses
    most of them)."""
    path = AppPaths.from_env().ensure().settings_file
    script = (
        "import sys; from pathlib import Path; from app.settings import update\n"
        f"for i in range({CHANGES}):\n"
        "    update(Path(sys.argv[1]), lambda s: s.hidden_models.append(f'{sys.argv[2]}-{i}'))\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), f"w{n}"], cwd=ROOT) for n in range(WRITERS)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0] * WRITERS
    hidden = SettingsStore(path).load().hidden_models
    assert sorted(hidden) == sorted(f"w{n}-{i}" for n in range(WRITERS) for i in range(CHANGES))
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_update_never_writes_a_file_from_a_newer_hubside() -> None:
    path = AppPaths.from_env().ensure().settings_file
    newer = {"schema_version": 99, "theme": "dark", "new": 1}
    path.write_text(json.dumps(newer))
    result = update(path, lambda s: setattr(s, "theme", "light"))
    assert result.theme == "light"  # in effect for this run only
    assert json.loads(path.read_text()) == newer


def test_cli_rm_goes_through_update(tmp_path: Path) -> None:
    """`hubside rm` appends to the file as it is now, under the lock (a stale copy would drop others)."""
    paths = AppPaths.from_env().ensure()
    folder = tmp_path / "other"
    write_tiny_gguf(folder / "a.gguf")
    update(paths.settings_file, lambda s: s.extra_model_dirs.append(str(folder)))
    lock = paths.settings_file.with_name(paths.settings_file.name + ".lock")
    assert _hubside("rm", "dir:a").returncode == 0
    assert lock.exists() and lock.stat().st_size == 0
    assert SettingsStore(paths.settings_file).load().hidden_models == [str(folder / "a.gguf")]
    assert Settings().hidden_models == []


def test_the_settings_dialog_keeps_what_another_process_changed(
    qtbot: QtBot, window: MainWindow, tmp_path: Path
) -> None:
    """OK in the dialog writes the fields it shows onto the file as it is now, not the window's old copy."""
    paths = AppPaths.from_env()
    dialog = window.open_settings()
    assert isinstance(dialog, SettingsDialog)
    update(paths.settings_file, lambda s: s.hidden_models.append("/elsewhere/x.gguf"))  # `hubside rm`
    dialog.theme.setCurrentText("dark")
    assert dialog.save(move_files=False)
    saved = SettingsStore(paths.settings_file).load()
    assert (saved.theme, saved.hidden_models) == ("dark", ["/elsewhere/x.gguf"])
    assert window.settings.hidden_models == ["/elsewhere/x.gguf"]  # the window's copy is up to date


def test_cli_rm_says_so_when_the_settings_belong_to_a_newer_hubside(tmp_path: Path) -> None:
    paths = AppPaths.from_env().ensure()
    folder = tmp_path / "other"
    write_tiny_gguf(folder / "a.gguf")
    newer = {"schema_version": 99, "extra_model_dirs": [str(folder)]}
    paths.settings_file.write_text(json.dumps(newer))
    result = _hubside("rm", "dir:a")
    assert result.returncode == 1
    assert "newer Hubside" in result.stderr and "hidden" not in result.stdout
    assert json.loads(paths.settings_file.read_text()) == newer


@pytest.mark.timeout(20)
def test_a_writer_that_never_lets_go_makes_a_clear_error_not_a_hang(tmp_path: Path) -> None:
    # `hubside rm` stopped with Ctrl-Z inside update() holds the lock: the window's quit must still end.
    import fcntl

    from app.errors import AppError

    path = tmp_path / "settings.json"
    SettingsStore(path).update(lambda settings: None)
    with path.with_name("settings.json.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        with pytest.raises(AppError, match="another Hubside process is changing them"):
            SettingsStore(path).update(lambda settings: settings.hidden_models.append("x"))
        assert time.monotonic() - started < 5
