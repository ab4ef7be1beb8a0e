"""The GUI thread never waits on the keyring or on nvidia-smi: a 10 ms heartbeat keeps ticking while a
keyring that takes 2 s saves the token, and while an nvidia-smi that takes a second per question answers."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.hub.token import KEYRING_SERVICE, KEYRING_USER
from app.paths import AppPaths
from app.ui.background import Background
from tests.heartbeat import Heartbeat

SLOW_S = 2.0
MAX_GAP_MS = 200


@pytest.fixture
def slow_keyring() -> Iterator[dict[tuple[str, str], str]]:
    """A real keyring backend whose writes take 2 s (an OS keyring waiting on its daemon or an unlock)."""
    import keyring
    from keyring.backend import KeyringBackend

    passwords: dict[tuple[str, str], str] = {}

    class Slow(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> str | None:
            return passwords.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            time.sleep(SLOW_S)
            passwords[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            time.sleep(SLOW_S)
            passwords.pop((service, username), None)

    previous = keyring.get_keyring()
    keyring.set_keyring(Slow())
    try:
        yield passwords
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def slow_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An `nvidia-smi` first on PATH that takes a second per question, then answers as one GPU would."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(
        '#!/bin/sh\nsleep 1\ncase "$1" in *name*) echo "Slow Test GPU";; *memory.free*) echo 8000;; esac\n'
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return script


def test_saving_the_token_from_discover_keeps_the_gui_ticking(
    qtbot: QtBot, slow_keyring: dict[tuple[str, str], str]
) -> None:
    from app.hub.client import HubClient
    from app.ui.discover_page import DiscoverPage

    background = Background()
    cache = AppPaths.from_env().ensure().hub_cache_dir
    made: list[HubClient] = []

    def client() -> HubClient:
        made.append(HubClient(cache))
        return made[-1]

    page = DiscoverPage(client, background, lambda *_: None)
    qtbot.addWidget(page)
    with Heartbeat() as heartbeat:
        page.search_bar.token_entered.emit("hf_first")
        page.search_bar.token_entered.emit("hf_second")  # entered again while the first is being saved
        qtbot.waitUntil(lambda: len(made) > 1, timeout=10_000)  # a new client once the token is kept
    background.close()
    assert heartbeat.max_gap_ms < MAX_GAP_MS, heartbeat.max_gap_ms
    assert slow_keyring == {(KEYRING_SERVICE, KEYRING_USER): "hf_second"}  # the newest token wins
    assert len(made) == 2 and page.client is made[-1]


def test_saving_the_token_from_settings_keeps_the_gui_ticking(
    qtbot: QtBot, slow_keyring: dict[tuple[str, str], str], tmp_path: Path
) -> None:
    from app.settings import Settings
    from app.ui.settings_dialog import SettingsDialog

    applied: list[Settings] = []
    dialog = SettingsDialog(Settings(), tmp_path / "models", tmp_path / "token", applied.append)
    qtbot.addWidget(dialog)
    dialog.token.setText("hf_from_settings")
    with Heartbeat() as heartbeat:
        started = time.perf_counter()
        assert dialog.save(move_files=False)
        took = time.perf_counter() - started
    assert heartbeat.max_gap_ms < MAX_GAP_MS, heartbeat.max_gap_ms
    assert took >= SLOW_S and applied  # it waited for the keyring, drawing meanwhile
    assert slow_keyring == {(KEYRING_SERVICE, KEYRING_USER): "hf_from_settings"}
    assert not (tmp_path / "token").exists()


def test_the_welcome_asks_nvidia_smi_off_the_gui_thread(qtbot: QtBot, slow_nvidia_smi: Path) -> None:
    from app.ui.welcome import WelcomeDialog

    background = Background()
    with Heartbeat() as heartbeat:
        dialog = WelcomeDialog(lambda _: None, lambda: None, background, None)
        qtbot.addWidget(dialog)
        dialog.show()
        qtbot.waitUntil(lambda: dialog.source != "", timeout=10_000)
    background.close()
    assert heartbeat.max_gap_ms < MAX_GAP_MS, heartbeat.max_gap_ms
    assert "Slow Test GPU" in dialog.facts.text() and "7.8 GB free" in dialog.facts.text()


def test_discover_asks_nvidia_smi_off_the_gui_thread(qtbot: QtBot, slow_nvidia_smi: Path) -> None:
    from app.hub.client import HubClient
    from app.ui.discover_page import DiscoverPage

    background = Background()
    cache = AppPaths.from_env().ensure().hub_cache_dir
    with Heartbeat() as heartbeat:
        page = DiscoverPage(lambda: HubClient(cache), background, lambda *_: None)
        qtbot.addWidget(page)
        page.show()
        qtbot.waitUntil(lambda: page.machine.free_vram is not None, timeout=10_000)
    background.close()
    assert heartbeat.max_gap_ms < MAX_GAP_MS, heartbeat.max_gap_ms
    assert page.machine.free_vram == 8000 * 1024**2
