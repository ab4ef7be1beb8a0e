"""storage.migrate when two processes open one old file at once (the window and `hubside compare`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from app.storage import migrate, open_database

STEPS = {0: "CREATE TABLE runs (id INTEGER PRIMARY KEY)"}  # fails if run twice


def test_a_migration_another_connection_ran_meanwhile_is_not_run_twice(tmp_path: Path) -> None:
    path = tmp_path / "compare.sqlite3"
    first, second = open_database(path, shared=True), open_database(path, shared=True)
    first.execute("BEGIN IMMEDIATE")  # the first process is migrating: it holds the write lock
    errors: list[BaseException] = []

    def open_second() -> None:  # reads version 0, then waits for the write lock (busy_timeout)
        try:
            migrate(second, path, STEPS, lambda version: RuntimeError(f"too new: {version}"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=open_second)
    thread.start()
    time.sleep(0.3)
    first.execute(STEPS[0])
    first.execute("PRAGMA user_version = 1")
    first.execute("COMMIT")
    thread.join(10)
    assert errors == []
    assert second.execute("PRAGMA user_version").fetchone()[0] == 1
    first.close()
    second.close()
