"""The bandwidth limit and the connections setting: real downloads from the Hub stand-in, real threads."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from pytestqt.qtbot import QtBot

from app.downloads.jobs import RUNNING, Job, JobFile, JobStore, RemoteFile
from app.downloads.manager import DownloadManager
from app.downloads.throttle import Bandwidth
from app.downloads.transfer import Transfer
from app.paths import AppPaths
from app.settings import Settings, SettingsStore
from tests.hubstub.server import HubStub

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_SIZE = 98_362_432
REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
NAME = "SmolLM2-135M-Instruct-Q4_1.gguf"
MB = 1_000_000


@pytest.fixture
def served(hub: HubStub, smollm2_path: Path) -> RemoteFile:
    repo = hub.add_repo(REPO, {NAME: smollm2_path})
    return RemoteFile(f"{hub.endpoint}/{REPO}/resolve/{repo.sha}/{NAME}", SMOL_SIZE, SMOL_SHA)


@pytest.fixture
def limited(served: RemoteFile) -> Iterator[tuple[DownloadManager, Bandwidth]]:
    """A manager downloading the real 98 MB file through one shared Bandwidth (no limit yet)."""
    paths = AppPaths.from_env().ensure()
    bandwidth = Bandwidth(None)
    store = JobStore(paths.downloads_file)
    manager = DownloadManager(
        paths.models_dir,
        store,
        lambda: Transfer(requests.Session(), connections=8, limiter=bandwidth),
        bandwidth=bandwidth,
    )
    yield manager, bandwidth
    manager.close()
    store.close()


def _start(manager: DownloadManager, served: RemoteFile) -> None:
    manager.add(REPO, "main", "Q4_1", (JobFile(NAME, served),))


def _bytes_at(manager: DownloadManager) -> Callable[[], int]:
    return lambda: manager.jobs()[0].done_bytes


def _bytes_between(done: Callable[[], int], start_s: float, end_s: float, t0: float) -> int:
    """Bytes downloaded from `start_s` to `end_s` after `t0` (both read at those moments)."""
    time.sleep(max(0.0, t0 + start_s - time.monotonic()))
    first = done()
    time.sleep(max(0.0, t0 + end_s - time.monotonic()))
    return done() - first


def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sixteen_threads_share_one_limit_smoothly() -> None:
    bandwidth = Bandwidth(4 * MB)
    taken = [0] * 16
    stop = time.monotonic() + 2.5

    def connection(i: int) -> None:
        while time.monotonic() < stop:
            bandwidth.take(64 * 1024)
            taken[i] += 64 * 1024

    threads = [threading.Thread(target=connection, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # past the first burst
    before, started = list(taken), time.monotonic()
    time.sleep(1.5)
    shares = [now - then for now, then in zip(taken, before, strict=True)]
    rate = sum(shares) / (time.monotonic() - started)
    for thread in threads:
        thread.join()
    print(f"16 threads at 4 MB/s: {rate / MB:.2f} MB/s, shares {min(shares)}..{max(shares)} bytes")
    assert 0.9 * 4 * MB <= rate <= 1.1 * 4 * MB
    assert min(shares) >= 0.5 * max(shares)  # every connection got its turns


def test_a_lower_rate_applies_within_a_second_without_a_stall() -> None:
    bandwidth = Bandwidth(8 * MB)
    taken: list[tuple[float, int]] = []  # (when, bytes) of every take that returned
    lock = threading.Lock()
    stop = time.monotonic() + 4.0

    def connection() -> None:
        while time.monotonic() < stop:
            bandwidth.take(MB)  # a whole read1() of a fast connection
            with lock:
                taken.append((time.monotonic(), MB))

    threads = [threading.Thread(target=connection) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    bandwidth.set_rate(2 * MB)  # with 7 connections waiting for their turns
    changed = time.monotonic()
    for thread in threads:
        thread.join()
    first_second = sum(n for when, n in taken if changed < when <= changed + 1.0)
    after = sum(n for when, n in taken if changed + 1.0 < when <= changed + 3.0)
    print(f"after 8 -> 2 MB/s: {first_second / MB} MB in the first second, {after / MB} MB in the next two")
    assert 1 * MB <= first_second <= 3 * MB  # no stall to pay for what was read before, and no burst
    assert 3 * MB <= after <= 5 * MB  # 2 MB/s, give or take one read


def test_a_waiter_sees_a_changed_rate_at_once() -> None:
    bandwidth = Bandwidth(10_000.0)  # 10 kB/s: a 1 MB read would wait 100 s
    bandwidth.take(2_500)  # the burst
    waited = threading.Thread(target=bandwidth.take, args=(1_000_000,))
    waited.start()
    time.sleep(0.3)
    bandwidth.set_rate(None)
    waited.join(1.0)
    assert not waited.is_alive()


def test_a_stopped_waiter_returns_at_once() -> None:
    bandwidth = Bandwidth(10_000.0)
    bandwidth.take(2_500)  # the burst
    stopping = threading.Event()
    waited = threading.Thread(target=bandwidth.take, args=(1_000_000, stopping.is_set))
    waited.start()
    time.sleep(0.3)
    assert waited.is_alive()
    stopping.set()
    waited.join(0.5)
    assert not waited.is_alive()


def test_a_pause_at_a_low_limit_is_quick(
    limited: tuple[DownloadManager, Bandwidth], served: RemoteFile
) -> None:
    manager, bandwidth = limited
    bandwidth.set_rate(0.2 * MB)  # 8 connections, each read up to 2 MB: 80 s of turns queued
    _start(manager, served)
    _until(lambda: manager.jobs()[0].connections > 1)
    time.sleep(2.0)
    started = time.monotonic()
    manager.pause(manager.jobs()[0].id)
    _until(lambda: manager.jobs()[0].state != RUNNING)
    took = time.monotonic() - started
    print(f"a pause at 0.2 MB/s took {took:.2f} s")
    assert took < 2.0


def test_the_limit_holds_within_ten_percent_over_ten_seconds(
    limited: tuple[DownloadManager, Bandwidth], served: RemoteFile
) -> None:
    manager, bandwidth = limited
    bandwidth.set_rate(5 * MB)
    _start(manager, served)
    _until(lambda: manager.jobs()[0].done_bytes > 0)
    t0 = time.monotonic()
    downloaded = _bytes_between(_bytes_at(manager), 0.5, 10.5, t0)
    print(f"5 MB/s for 10 s: {downloaded / MB:.2f} MB")
    assert 45 * MB <= downloaded <= 55 * MB
    assert manager.jobs()[0].state == RUNNING


def test_a_changed_limit_applies_within_a_second(
    limited: tuple[DownloadManager, Bandwidth], served: RemoteFile
) -> None:
    manager, bandwidth = limited
    bandwidth.set_rate(8 * MB)
    _start(manager, served)
    _until(lambda: manager.jobs()[0].done_bytes > 0)
    time.sleep(2.0)
    bandwidth.set_rate(2 * MB)  # down: the bytes already read are not paid for by a long stop
    t0 = time.monotonic()
    slower = _bytes_between(_bytes_at(manager), 1.0, 4.0, t0)
    bandwidth.set_rate(10 * MB)  # up
    t0 = time.monotonic()
    faster = _bytes_between(_bytes_at(manager), 1.0, 3.0, t0)
    print(f"2 MB/s: {slower / 3 / MB:.2f} MB/s; 10 MB/s: {faster / 2 / MB:.2f} MB/s")
    assert 0.9 * 6 * MB <= slower <= 1.1 * 6 * MB
    assert 0.9 * 20 * MB <= faster <= 1.1 * 20 * MB


def test_the_snapshot_shows_the_connections_in_use_and_the_speed(
    limited: tuple[DownloadManager, Bandwidth], served: RemoteFile
) -> None:
    manager, bandwidth = limited
    bandwidth.set_rate(4 * MB)
    _start(manager, served)
    _until(lambda: manager.jobs()[0].connections > 0 and manager.jobs()[0].speed > 0)
    for _ in range(14):  # 3.5 s of the page's 4 Hz reads: a full speed window
        time.sleep(0.25)
        job = manager.jobs()[0]
    print(f"{job.connections} connections, {job.speed / MB:.2f} MB/s")
    assert 1 <= job.connections <= 8
    assert 0.8 * 4 * MB <= job.speed <= 1.2 * 4 * MB
    manager.pause(job.id)
    _until(lambda: manager.jobs()[0].state != RUNNING)
    assert manager.jobs()[0].connections == 0


def test_download_settings_are_read_within_their_bounds(tmp_path: Path) -> None:
    path = tmp_path / "settings.json"
    path.write_text(
        json.dumps({"download_connections": 40, "download_limit_mbps": 5, "hub_mirror": "ftp://x"})
    )
    settings = SettingsStore(path).load()
    assert settings.download_connections == 16
    assert settings.download_limit_mbps == 5.0 and isinstance(settings.download_limit_mbps, float)
    assert settings.hub_mirror == ""  # not an https URL: the default endpoint
    path.write_text(json.dumps({"download_connections": 0, "download_limit_mbps": -3}))
    settings = SettingsStore(path).load()
    assert (settings.download_connections, settings.download_limit_mbps) == (1, 0.0)
    assert (Settings().download_connections, Settings().download_limit_mbps) == (8, 0.0)


def _dialog(qtbot: QtBot, settings: Settings, applied: list[Settings]) -> object:
    from app.ui.settings_dialog import SettingsDialog

    paths = AppPaths.from_env().ensure()
    dialog = SettingsDialog(settings, paths.models_dir, paths.token_file, applied.append)
    qtbot.addWidget(dialog)
    return dialog


def test_the_settings_dialog_edits_connections_limit_and_mirror(qtbot: QtBot) -> None:
    from app.ui.settings_dialog import SettingsDialog

    settings, applied = Settings(), []
    dialog = _dialog(qtbot, settings, applied)
    assert isinstance(dialog, SettingsDialog)
    assert (dialog.connections.value(), dialog.limit.value(), dialog.mirror.text()) == (8, 0.0, "")
    assert (dialog.connections.minimum(), dialog.connections.maximum()) == (1, 16)
    dialog.connections.setValue(4)
    dialog.limit.setValue(2.5)
    dialog.mirror.setText(" https://hf-mirror.example/ ")
    assert dialog.save()
    assert applied == [settings]
    assert (settings.download_connections, settings.download_limit_mbps) == (4, 2.5)
    assert settings.hub_mirror == "https://hf-mirror.example"

    dialog.mirror.setText("http://hf-mirror.example")  # plain http to another host: refused
    assert not dialog.save()
    assert "https" in dialog.problem.text() and settings.hub_mirror == "https://hf-mirror.example"
    assert len(applied) == 1
    dialog.mirror.setText("")
    assert dialog.save() and settings.hub_mirror == ""


def test_the_window_applies_a_changed_limit_to_running_downloads_at_once(qtbot: QtBot) -> None:
    from app.ui.application import build_window
    from app.ui.settings_dialog import SettingsDialog

    window, services = build_window(AppPaths.from_env().ensure())
    qtbot.addWidget(window)
    try:
        assert services.downloads.bandwidth.rate is None
        assert window.settings_dialog is not None
        dialog = window.settings_dialog()
        assert isinstance(dialog, SettingsDialog)
        dialog.limit.setValue(3)
        assert dialog.save()
        assert services.downloads.bandwidth.rate == 3 * MB
        dialog.limit.setValue(0)
        assert dialog.save()
        assert services.downloads.bandwidth.rate is None
        dialog.deleteLater()
    finally:
        window.close()
        services.close()


def test_the_downloads_page_shows_connections_and_speed(qtbot: QtBot, served: RemoteFile) -> None:
    from PySide6.QtCore import Qt

    from app.ui.downloads_page import JobsModel

    model = JobsModel()
    running = Job(1, REPO, "main", "Q4_1", (JobFile(NAME, served),), RUNNING, speed=4.2e6, connections=6)
    paused = Job(2, REPO, "main", "Q8_0", (JobFile("x.gguf", served),), "paused")
    model.refresh([running, paused])
    column = JobsModel.COLUMNS.index("Connections")
    speed = JobsModel.COLUMNS.index("Speed")
    shown = model.index(0, column).data(Qt.ItemDataRole.DisplayRole)
    assert shown == "6"
    assert model.index(1, column).data(Qt.ItemDataRole.DisplayRole) == ""
    assert model.index(0, speed).data(Qt.ItemDataRole.DisplayRole) == "4.2 MB/s"  # the limit's unit


def test_hubside_pull_honours_the_limit_setting_and_flags(
    hub: HubStub, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    data = random.Random(3).randbytes(2 * MB)
    hub.add_repo("someone/Tiny-GGUF", {"Tiny-Q4_0.gguf": data})
    paths = AppPaths.from_env().ensure()
    paths.settings_file.write_text(json.dumps({"schema_version": 1, "download_limit_mbps": 1}))
    started = time.monotonic()
    assert main(["pull", "someone/Tiny-GGUF:Q4_0"]) == 0
    took = time.monotonic() - started
    pulled = Path(capsys.readouterr().out.strip())
    assert pulled.read_bytes() == data
    print(f"2 MB at 1 MB/s (the setting): {took:.2f} s")
    assert took >= 1.5  # 2 MB less the 0.25 s burst

    pulled.unlink()
    started = time.monotonic()
    assert main(["pull", "someone/Tiny-GGUF:Q4_0", "--limit", "0.5", "--connections", "2"]) == 0
    took = time.monotonic() - started
    print(f"2 MB at 0.5 MB/s (--limit): {took:.2f} s")
    assert took >= 3.5
    with pytest.raises(SystemExit):
        main(["pull", "someone/Tiny-GGUF:Q4_0", "--connections", "17"])
    assert "between 1 and 16" in capsys.readouterr().err
