"""Downloads and the Models page in the real window: Discover's Download button to a model in the chat."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt
from PySide6.QtWidgets import QPushButton
from pytestqt.qtbot import QtBot

from app.downloads.jobs import DONE, PAUSED, RUNNING
from app.library.scan import FOLDER, HUBSIDE
from app.paths import AppPaths
from app.ui.discover_page import DiscoverPage
from app.ui.downloads_page import DownloadsPage
from app.ui.main_window import MainWindow
from app.ui.models_page import ModelsPage
from tests.hubstub.faults import Fault
from tests.hubstub.server import HubStub
from tests.library_files import make_library
from tests.library_hostile import BAD, GOOD, make_hostile_folder

WAIT_MS = 60_000
REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
NAME = "SmolLM2-135M-Instruct-Q4_1.gguf"


def _pages(window: MainWindow) -> tuple[DiscoverPage, ModelsPage, DownloadsPage]:
    discover, models, downloads = (window.pages[name] for name in ("discover", "models", "downloads"))
    assert isinstance(discover, DiscoverPage) and isinstance(models, ModelsPage)
    assert isinstance(downloads, DownloadsPage)
    return discover, models, downloads


def test_download_from_discover_to_library_to_chat(
    qtbot: QtBot, hub: HubStub, window: MainWindow, smollm2_path: Path
) -> None:
    hub.add_repo(REPO, {NAME: smollm2_path})
    hub.add_fault(Fault(path=NAME, drop_after=30_000_000, times=1))  # one drop on the way, resumed
    discover, models, downloads = _pages(window)
    qtbot.waitUntil(lambda: not models.scanning, timeout=WAIT_MS)
    assert models.model.rowCount() == 0
    discover.open_model(REPO)
    qtbot.waitUntil(lambda: discover.variants.rowCount() == 1, timeout=WAIT_MS)
    button = discover.variants_view.findChild(QPushButton, "download-Q4_1")
    assert isinstance(button, QPushButton)
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)
    assert downloads.manager.jobs()[0].label == "Q4_1"
    qtbot.waitUntil(lambda: downloads.manager.jobs()[0].state == DONE, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: models.model.rowCount() == 1, timeout=WAIT_MS)  # the library rescans itself
    entry = models.model.rows[0]
    assert (entry.id, entry.source, entry.architecture, entry.quant) == (
        f"{REPO}:Q4_1",
        HUBSIDE,
        "llama",
        "Q4_1",
    )
    assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == hub.repos.get(REPO).files[NAME].sha256  # type: ignore[union-attr]
    assert window.chat.model_bar.picker.findData(str(entry.path)) >= 0  # the chat's picker offers it
    models.view.selectRow(0)
    qtbot.mouseClick(models.findChild(QObject, "chatWithButton"), Qt.MouseButton.LeftButton)  # type: ignore[arg-type]
    assert window.stack.currentWidget() is window.chat
    qtbot.waitUntil(lambda: window.chat.model is not None, timeout=WAIT_MS)
    assert window.chat.model.path == entry.path  # type: ignore[union-attr]


def test_pause_and_resume_from_the_downloads_page(
    qtbot: QtBot, hub: HubStub, window: MainWindow, smollm2_path: Path
) -> None:
    repo = hub.add_repo(REPO, {NAME: smollm2_path})
    hub.add_fault(Fault(path=NAME, stall_after=10_000_000, stall_seconds=60, times=None))
    from app.downloads.jobs import JobFile
    from app.downloads.transfer import RemoteFile

    _, _, downloads = _pages(window)
    remote = RemoteFile(
        f"{hub.endpoint}/{REPO}/resolve/{repo.sha}/{NAME}",
        smollm2_path.stat().st_size,
        repo.files[NAME].sha256,
    )
    downloads.manager.add(REPO, repo.sha, "Q4_1", (JobFile(NAME, remote),))
    qtbot.waitUntil(
        lambda: downloads.model.rowCount() == 1 and downloads.model.rows[0].done_bytes > 0, timeout=WAIT_MS
    )
    assert downloads.model.index(0, 2).data().endswith(" of 94 MB")
    downloads.view.selectRow(0)
    qtbot.mouseClick(downloads.findChild(QObject, "pauseButton"), Qt.MouseButton.LeftButton)  # type: ignore[arg-type]
    qtbot.waitUntil(lambda: downloads.model.rows[0].state == PAUSED, timeout=WAIT_MS)
    hub.faults.clear()
    qtbot.mouseClick(downloads.findChild(QObject, "resumeButton"), Qt.MouseButton.LeftButton)  # type: ignore[arg-type]
    qtbot.waitUntil(lambda: downloads.model.rows[0].state in (RUNNING, DONE), timeout=WAIT_MS)
    qtbot.waitUntil(lambda: downloads.model.rows[0].state == DONE, timeout=WAIT_MS)
    assert downloads.summary.text().startswith("0 downloading")


def test_models_found_in_place_are_hidden_never_deleted(
    qtbot: QtBot, window: MainWindow, tiny_model: Path, tmp_path: Path
) -> None:
    _, models, _ = _pages(window)
    mine = AppPaths.from_env().models_dir / "me" / "mine-GGUF" / "mine-Q4_0.gguf"
    mine.parent.mkdir(parents=True)
    shutil.copy(tiny_model, mine)
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    theirs = folder / "theirs-Q4_0.gguf"
    shutil.copy(tiny_model, theirs)
    (folder / "broken-Q4_0.gguf").write_bytes(b"GGUF" + b"\xff" * 100)
    models.add_folder(str(folder))
    qtbot.waitUntil(lambda: models.model.rowCount() == 3, timeout=WAIT_MS)
    by_name = {e.name: e for e in models.model.rows}
    assert (
        by_name["broken-Q4_0.gguf"].problem
        and models.model.index(models.model.rows.index(by_name["broken-Q4_0.gguf"]), 8).data()
        == f"⚠ {by_name['broken-Q4_0.gguf'].problem}"
    )
    assert by_name["theirs-Q4_0.gguf"].source == FOLDER
    assert "in all" in models.summary.text() and "(1 cannot be used)" in models.summary.text()
    models.remove(by_name["theirs-Q4_0.gguf"])  # found in place: hidden, the file stays
    qtbot.waitUntil(lambda: models.model.rowCount() == 2, timeout=WAIT_MS)
    assert theirs.exists()
    models.remove(by_name["mine-Q4_0.gguf"])  # downloaded by Hubside: deleted, empty folders too
    qtbot.waitUntil(lambda: models.model.rowCount() == 1, timeout=WAIT_MS)
    assert not mine.exists() and not mine.parent.exists()


def test_the_page_lists_2000_models_and_a_rescan_reads_no_header(
    qtbot: QtBot, window: MainWindow, tmp_path: Path
) -> None:
    _, models, _ = _pages(window)
    files = make_library(tmp_path / "library", 2000)
    qtbot.waitUntil(lambda: not models.scanning, timeout=WAIT_MS)  # the start-up scan (of nothing)
    told: list[int] = []
    models.library_changed.connect(lambda entries: told.append(len(entries)))
    models.add_folder(str(tmp_path / "library"))
    qtbot.waitUntil(lambda: models.model.rowCount() == 2000, timeout=WAIT_MS)
    assert [e.path for e in models.model.rows] == files and models.scanner.headers_read == files
    assert models.model.index(1999, 0).data() == files[-1].name
    assert models.summary.text().startswith("2000 models (0 cannot be used)")
    models.rescan()  # nothing changed: no header read, the other pages are not told again
    qtbot.waitUntil(lambda: not models.scanning, timeout=WAIT_MS)
    assert models.scanner.headers_read == [] and told == [2000]
    files[0].unlink()
    models.rescan()
    qtbot.waitUntil(lambda: models.model.rowCount() == 1999, timeout=WAIT_MS)
    assert models.scanner.headers_read == [] and told == [2000, 1999]


def test_the_page_lists_good_files_and_shows_each_bad_one_with_its_reason(
    qtbot: QtBot, window: MainWindow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, models, _ = _pages(window)
    folder = make_hostile_folder(tmp_path / "hostile", monkeypatch)
    qtbot.waitUntil(lambda: not models.scanning, timeout=WAIT_MS)
    models.add_folder(str(folder))
    qtbot.waitUntil(lambda: models.model.rowCount() == len(GOOD) + len(BAD), timeout=WAIT_MS)
    status = models.model.COLUMNS.index("Status")
    shown = {models.model.index(row, 0).data(): models.model.index(row, status).data() for row in range(7)}
    assert {name: shown[name] for name in GOOD} == dict.fromkeys(GOOD, "ok")
    for name, reason in BAD.items():
        assert shown[name].startswith("⚠ ") and reason in shown[name], name
    assert models.summary.text().startswith(f"7 models ({len(BAD)} cannot be used)")
    assert not models.problem.isVisible()  # no scan failure: the bad files cost only their own rows
