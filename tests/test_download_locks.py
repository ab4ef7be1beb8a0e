"""The part lock: a second writer is kept out, a probe of who holds it is not taken for a writer."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from app.downloads.locks import is_locked, lock_of, try_lock


def test_a_held_lock_keeps_a_second_writer_out(tmp_path: Path) -> None:
    path = lock_of(tmp_path / "m.gguf.part")
    first = try_lock(path)
    assert first is not None and is_locked(path)
    assert try_lock(path) is None
    first.release()
    assert not is_locked(path)
    second = try_lock(path)
    assert second is not None
    second.release()


def test_a_probe_holding_the_lock_for_an_instant_does_not_refuse_a_writer(tmp_path: Path) -> None:
    # is_locked() takes the lock for a moment (the window probes each job about once a second): a writer
    # starting in that moment must get it, not "already being downloaded".
    path = lock_of(tmp_path / "m.gguf.part")
    path.write_bytes(b"")
    taken, go = threading.Event(), threading.Event()

    def probe() -> None:
        fd = os.open(path, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        taken.set()
        go.wait(5)
        os.close(fd)

    thread = threading.Thread(target=probe)
    thread.start()
    assert taken.wait(5)
    threading.Timer(0.005, go.set).start()  # the probe lets go 5 ms later
    lock = try_lock(path)
    thread.join()
    assert lock is not None
    lock.release()
