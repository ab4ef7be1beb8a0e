"""Saved comparisons and blind votes, in SQLite (compare.sqlite3, its own file and owner).

A run keeps the prompt, the settings, each model with its file's sha256, the outputs and the metrics, so it
can be reopened and exported; votes are kept one per row and the leaderboard is replayed from them.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.compare.elo import Vote
from app.storage import open_database

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id         INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    prompt     TEXT NOT NULL,
    data_json  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS votes (
    id         INTEGER PRIMARY KEY,
    run_id     INTEGER REFERENCES runs(id) ON DELETE SET NULL,
    model_a    TEXT NOT NULL,
    model_b    TEXT NOT NULL,
    outcome    TEXT NOT NULL,
    created_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class SavedRun:
    id: int
    created_at: float
    prompt: str
    data: dict[str, Any]  # settings, and per column: model, path, sha256, turns (prompt, text, metrics)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class CompareStore:
    def __init__(self, path: Path) -> None:
        self.db = open_database(path, shared=True)
        self.lock = threading.Lock()
        with self.lock:
            self.db.executescript(_SCHEMA)

    def save_run(self, prompt: str, data: dict[str, Any], run_id: int | None = None) -> int:
        """A new run, or (with `run_id`) the same run with its follow-up turns."""
        encoded = json.dumps(data)
        with self.lock:
            if run_id is not None:
                self.db.execute("UPDATE runs SET data_json = ? WHERE id = ?", (encoded, run_id))
                return run_id
            cursor = self.db.execute(
                "INSERT INTO runs (created_at, prompt, data_json) VALUES (?, ?, ?)",
                (time.time(), prompt, encoded),
            )
            return int(cursor.lastrowid or 0)

    def runs(self) -> list[SavedRun]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
        return [SavedRun(r["id"], r["created_at"], r["prompt"], json.loads(r["data_json"])) for r in rows]

    def run(self, run_id: int) -> SavedRun | None:
        return next((r for r in self.runs() if r.id == run_id), None)

    def vote(self, run_id: int | None, model_a: str, model_b: str, outcome: str) -> None:
        with self.lock:
            self.db.execute(
                "INSERT INTO votes (run_id, model_a, model_b, outcome, created_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, model_a, model_b, outcome, time.time()),
            )

    def votes(self) -> list[Vote]:
        with self.lock:
            rows = self.db.execute("SELECT model_a, model_b, outcome FROM votes ORDER BY id").fetchall()
        return [Vote(r["model_a"], r["model_b"], r["outcome"]) for r in rows]

    def close(self) -> None:
        with self.lock:
            self.db.close()
