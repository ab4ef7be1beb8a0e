"""One Hubside per data dir, decided by a lock file taken before any service is built: real launches of
`python -m app` racing each other, a lock left by a killed instance, a hand-over to an instance still
starting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pytestqt.qtbot import QtBot

from app.paths import AppPaths
from app.ui.single_instance import SingleInstance, claim

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_WAIT_S = 60.0  # two windows starting at once on a small, busy machine


def _launch() -> subprocess.Popen[bytes]:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    return subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stderr=subprocess.DEVNULL)


def test_two_launches_at_once_make_one_instance() -> None:
    launches = [_launch(), _launch()]
    try:
        deadline = time.monotonic() + LAUNCH_WAIT_S
        while all(p.poll() is None for p in launches) and time.monotonic() < deadline:
            time.sleep(0.1)
        ended = [p for p in launches if p.poll() is not None]
        assert len(ended) == 1, "both launches run a window (and would both resume the downloads)"
        assert ended[0].returncode == 0  # it handed its request to the other
        time.sleep(1.0)
        assert sum(p.poll() is None for p in launches) == 1  # the other one keeps running
    finally:
        for p in launches:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()


def test_a_lock_left_by_a_killed_instance_is_taken(qtbot: QtBot) -> None:
    data_dir = AppPaths.from_env().ensure().data_dir
    holder = _hold_lock(data_dir)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    lock = claim(data_dir, "show", wait_s=5.0)
    assert lock is not None and lock.isLocked()  # its process is gone: the lock is stale, taken at once
    assert time.monotonic() - started < 2.0
    lock.unlock()


def test_a_second_launch_hands_over_to_a_first_still_starting(qtbot: QtBot) -> None:
    data_dir = AppPaths.from_env().ensure().data_dir
    first = claim(data_dir, "show")
    assert first is not None
    link = "hubside://open?repo=someone/tiny-GGUF"
    second: list[object] = []
    thread = threading.Thread(target=lambda: second.append(claim(data_dir, link)))
    thread.start()  # the lock is held, nobody listens yet: it waits
    qtbot.wait(500)
    assert not second
    instance = SingleInstance(data_dir)  # the first one is up
    received: list[str] = []
    instance.message.connect(received.append)
    try:
        qtbot.waitUntil(lambda: received == [link], timeout=10_000)
        thread.join(5)
        assert second == [None]  # handed over: that launch exits
    finally:
        instance.close()
        first.unlock()


def _hold_lock(data_dir: Path) -> subprocess.Popen[str]:
    """Another process that takes the data dir's lock and then never listens (hung, or stopped)."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from app.ui.single_instance import claim; "
            "lock = claim(Path(sys.argv[1]), 'show'); print('locked', flush=True); time.sleep(60)",
            str(data_dir),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    return holder


def test_a_launch_facing_an_instance_that_does_not_answer_says_so(qtbot: QtBot) -> None:
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from app.ui.application import run_window

    paths = AppPaths.from_env().ensure()
    holder = _hold_lock(paths.data_dir)
    shown: list[str] = []

    def answer_the_dialog() -> None:
        boxes = [w for w in QApplication.topLevelWidgets() if w.objectName() == "startupError"]
        if boxes and isinstance(boxes[0], QMessageBox) and boxes[0].isVisible():
            shown.append(boxes[0].text())
            boxes[0].done(0)
        else:
            QTimer.singleShot(100, answer_the_dialog)

    QTimer.singleShot(0, answer_the_dialog)
    try:
        assert run_window(paths, []) == 1  # no second window on the same data
    finally:
        holder.kill()
        holder.wait()
    assert shown and "already running" in shown[0]
