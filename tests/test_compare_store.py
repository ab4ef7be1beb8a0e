"""The compare database: versions and migrations, damaged against busy files, votes keyed by model file, and
file hashes read once per file version."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.compare.elo import Vote, leaderboard
from app.compare.runner import CompareSettings, Comparison
from app.compare.store import SCHEMA_VERSION, CompareStore, DatabaseTooNew, entry, file_sha256
from app.errors import AppError
from app.paths import AppPaths
from app.runtime.protocol import LoadParams
from tests.library_files import write_tiny_gguf

# The compare database as Hubside wrote it before it kept versions (user_version 0).
_V0 = """
CREATE TABLE runs (id INTEGER PRIMARY KEY, created_at REAL NOT NULL, prompt TEXT NOT NULL,
                   data_json TEXT NOT NULL);
CREATE TABLE votes (id INTEGER PRIMARY KEY, run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL,
                    model_a TEXT NOT NULL, model_b TEXT NOT NULL, outcome TEXT NOT NULL,
                    created_at REAL NOT NULL);
"""
SHA_Q4, SHA_Q8, SHA_OTHER = "a" * 64, "b" * 64, "c" * 64


def _file() -> Path:
    return AppPaths.from_env().ensure().compare_file


def _column(model: str, path: str, sha256: str) -> dict[str, object]:
    return {"model": model, "path": path, "sha256": sha256, "turns": []}


def _old_database(path: Path) -> None:
    """Two runs and three votes keyed by general.name, as the first version kept them."""
    with sqlite3.connect(path) as db:
        db.executescript(_V0)
        runs = [
            [_column("Qwen", "/m/qwen-Q4_K_M.gguf", SHA_Q4), _column("Llama", "/m/llama.gguf", SHA_OTHER)],
            [_column("Qwen", "/m/qwen-Q4_K_M.gguf", SHA_Q4), _column("Qwen", "/m/qwen-Q8_0.gguf", SHA_Q8)],
        ]
        for number, columns in enumerate(runs, 1):
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?)", (number, 1.0, "hi", json.dumps({"columns": columns}))
            )
        db.executemany(
            "INSERT INTO votes (run_id, model_a, model_b, outcome, created_at) VALUES (?, ?, ?, ?, 1.0)",
            [(1, "Qwen", "Llama", "a"), (2, "Qwen", "Qwen", "tie"), (None, "Llama", "Mistral", "b")],
        )
    db.close()


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Another process writing to the database for longer than the busy timeout."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_a_database_from_a_newer_hubside_is_refused_untouched() -> None:
    path = _file()
    CompareStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    with pytest.raises(DatabaseTooNew, match="newer Hubside"):
        CompareStore(path)
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*unreadable*"))


def test_an_old_database_is_migrated_after_a_copy_and_its_votes_are_keyed_by_file() -> None:
    """A vote's name becomes its file's sha256 where its run shows the one file of that name; where it
    cannot (two quants of one model voted against each other, a vote without a run) the name stays."""
    path = _file()
    _old_database(path)
    store = CompareStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    backup = path.with_name(f"{path.name}.before-v{SCHEMA_VERSION}")
    with sqlite3.connect(backup) as copy:
        assert copy.execute("SELECT count(*) FROM votes").fetchone()[0] == 3  # as it was
    copy.close()
    assert store.votes() == [
        Vote(SHA_Q4, SHA_OTHER, "a", "Qwen (qwen-Q4_K_M.gguf)", "Llama (llama.gguf)"),
        Vote("Qwen", "Qwen", "tie", "Qwen", "Qwen"),
        Vote("Llama", "Mistral", "b", "Llama", "Mistral"),
    ]
    labels = {s.label for s in leaderboard(store.votes())}
    assert labels == {"Qwen (qwen-Q4_K_M.gguf)", "Llama (llama.gguf)", "Qwen", "Llama", "Mistral"}
    assert len(store.runs()) == 2  # the runs are kept as they were
    store.close()
    CompareStore(path).close()  # opening again: nothing more to migrate


def test_two_quants_of_one_model_are_two_entries_with_readable_labels() -> None:
    store = CompareStore(_file())
    q4 = _column("Qwen2.5 7B Instruct", "/m/Qwen2.5-7B-Instruct-Q4_K_M.gguf", SHA_Q4)
    q8 = _column("Qwen2.5 7B Instruct", "/m/Qwen2.5-7B-Instruct-Q8_0.gguf", SHA_Q8)
    run_id = store.save_run("hi", {"columns": [q4, q8]})
    (key_a, label_a), (key_b, label_b) = entry(q4), entry(q8)
    store.vote(run_id, Vote(key_a, key_b, "b", label_a, label_b))
    board = leaderboard(store.votes())
    assert [(s.model, s.label) for s in board] == [
        (SHA_Q8, "Qwen2.5 7B Instruct (Qwen2.5-7B-Instruct-Q8_0.gguf)"),
        (SHA_Q4, "Qwen2.5 7B Instruct (Qwen2.5-7B-Instruct-Q4_K_M.gguf)"),
    ]
    assert [round(s.rating) for s in board] == [1016, 984]


def test_a_damaged_database_is_moved_aside_and_a_busy_one_is_not() -> None:
    path = _file()
    path.write_bytes(b"not a database at all" * 200)
    store = CompareStore(path)
    assert store.moved_aside is not None and store.moved_aside.read_bytes() == b"not a database at all" * 200
    assert store.runs() == []
    store.close()

    path = path.with_name("old-compare.sqlite3")
    _old_database(path)  # it needs a migration: a write at open
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the busy timeout
    try:
        with pytest.raises(AppError, match="cannot be opened now"):
            CompareStore(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not list(path.parent.glob("old-compare*unreadable*"))
    assert len(CompareStore(path).votes()) == 3


def test_a_file_is_hashed_once_per_path_size_and_mtime(tmp_path: Path) -> None:
    """The hash is kept in the database: a new comparison of the same files (or a new start) reads no byte
    of them; a file whose size or mtime changed is hashed again."""
    model = tmp_path / "model.gguf"
    model.write_bytes(os.urandom(32 << 20))
    store = CompareStore(_file())
    started = time.perf_counter()
    first = store.sha256(model)
    hashed_s = time.perf_counter() - started
    assert first == file_sha256(model)
    stat = model.stat()
    with model.open("r+b") as f:  # the same size and mtime, other bytes: only a re-read would see them
        f.write(b"\x00" * 16)
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    started = time.perf_counter()
    assert store.sha256(model) == first
    cached_s = time.perf_counter() - started
    store.close()
    assert CompareStore(_file()).sha256(model) == first  # kept across starts
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert CompareStore(_file()).sha256(model) == file_sha256(model) != first
    print(f"hash of 32 MB: {hashed_s * 1000:.1f} ms, from the cache: {cached_s * 1000:.2f} ms")
    assert cached_s < hashed_s


def test_a_comparison_saves_with_the_stores_hashes(tmp_path: Path) -> None:
    model_a = write_tiny_gguf(tmp_path / "a.gguf")
    model_b = write_tiny_gguf(tmp_path / "b.gguf", context_length=2048)
    store = CompareStore(_file())
    paths = AppPaths.from_env()
    params = [LoadParams(model_a), LoadParams(model_b)]
    data = Comparison(paths, params, CompareSettings(), store.sha256).data()
    assert [c["sha256"] for c in data["columns"]] == [file_sha256(model_a), file_sha256(model_b)]
    rows = store.db.execute("SELECT path FROM file_hashes ORDER BY path").fetchall()
    assert [r[0] for r in rows] == [str(model_a.resolve()), str(model_b.resolve())]


def test_cli_compare_with_a_newer_database_says_so_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    path = _file()
    CompareStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    before = path.read_bytes()
    models = [str(write_tiny_gguf(tmp_path / n)) for n in ("a.gguf", "b.gguf")]
    assert main(["compare", *models, "--prompt", "hi"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hubside: Your comparisons were saved by a newer Hubside") and "[1/2]" not in err
    assert path.read_bytes() == before


def test_a_corrupt_database_is_moved_aside_with_its_runs_kept_in_the_copy() -> None:
    """SQLite's "database disk image is malformed" (SQLITE_CORRUPT): the file moves aside, never deleted."""
    path = _file()
    store = CompareStore(path)
    for _ in range(50):
        store.save_run("a prompt", {"columns": [], "text": "x" * 2000})
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    damaged = bytearray(path.read_bytes())
    page = 4096  # the second page: its b-tree header made nonsense
    damaged[page : page + 12] = b"\x0d" + b"\xff" * 11
    path.write_bytes(bytes(damaged))
    store = CompareStore(path)
    assert store.moved_aside is not None and store.moved_aside.read_bytes() == bytes(damaged)
    assert store.runs() == [] and store.votes() == []


def test_a_save_to_a_busy_database_is_a_clear_error_and_loses_nothing() -> None:
    """Another process writing for longer than the busy timeout: the save says so (an AppError the window
    and the CLI show), the runs saved before stay, and the next save works."""
    path = _file()
    store = CompareStore(path)
    store.save_run("first", {"columns": []})
    with pytest.raises(AppError, match="not saved") as failed, _held(path):
        store.save_run("second", {"columns": []})
    assert "database is locked" in failed.value.user_message
    store.save_run("third", {"columns": []})
    assert [r.prompt for r in store.runs()] == ["third", "first"]


def test_remote_models_are_entries_of_their_own() -> None:
    # A remote column has no file of ours, so no sha256: its remote:NAME/MODEL_ID keys it (all remote models
    # were one leaderboard entry, "")
    one = {"model": "m", "path": "remote:box/a.gguf", "sha256": ""}
    other = {"model": "m", "path": "remote:box/b.gguf", "sha256": ""}
    local = {"model": "m", "path": "/models/a.gguf", "sha256": "ab12"}
    assert [entry(c)[0] for c in (one, other, local)] == ["remote:box/a.gguf", "remote:box/b.gguf", "ab12"]
