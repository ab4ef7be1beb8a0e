"""Who may write a file: an advisory `flock` on a sibling `.lock` file, taken without waiting.

The kernel drops a process's locks when it exits (even by kill -9), so a lock never outlives its holder.
Locks are per open file, so two threads of one process exclude each other as two processes do.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

PROBE_GRACE_S = 0.05


class FileLock:
    """An exclusive lock held on `path` (a `.lock` file) until `release()`, which also removes the file."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        # Removed while still held: a process that opened this file meanwhile finds it gone and retries.
        self.path.unlink(missing_ok=True)
        os.close(self.fd)

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_of(path: Path) -> Path:
    """The lock file that guards writing `path` (`NAME.part` -> `NAME.part.lock`)."""
    return path.with_name(path.name + ".lock")


def try_lock(path: Path) -> FileLock | None:
    """The lock on `path`, or None if another holder keeps it past a short grace (an `is_locked` probe of
    another process holds it for microseconds: that must not read as "already being downloaded")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + PROBE_GRACE_S
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                return None
            time.sleep(PROBE_GRACE_S / 10)
            continue
        if _is_current(fd, path):
            return FileLock(path, fd)
        os.close(fd)  # the last holder removed this file as we opened it: lock the one there now


def is_locked(path: Path) -> bool:
    """Whether someone holds the lock on `path` (a lock held by this process counts too)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here; the file is left for its next holder
    return False


def _is_current(fd: int, path: Path) -> bool:
    try:
        on_disk = path.stat()
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)
