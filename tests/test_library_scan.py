"""A scan on real files: one hostile or unreadable file is listed as unusable with its reason, and costs
no other file its place in the library (Qt-free)."""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

import pytest

from app import __version__
from app.library.scan import FOLDER, HF_CACHE, HUBSIDE, Root, Scanner, delete
from tests.library_files import write_tiny_gguf
from tests.library_hostile import BAD, GOOD, make_hostile_folder, write_typed_gguf


def test_good_files_are_listed_and_each_bad_one_is_unusable_with_its_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_hostile_folder(tmp_path / "models", monkeypatch)
    scanner = Scanner(tmp_path / "cache" / "library.sqlite3")
    for _ in range(2):  # the first scan reads the headers, the second takes them from the cache
        entries = {e.name: e for e in scanner.scan([Root(folder, FOLDER)])}
        assert sorted(entries) == sorted([*GOOD, *BAD])
        for good in GOOD:
            assert (entries[good].problem, entries[good].quant, entries[good].context_length) == (
                "",
                "Q4_0",
                4096,
            )
        for bad, reason in BAD.items():
            assert reason in entries[bad].problem, bad
    assert scanner.headers_read == []


def test_an_unreadable_later_shard_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_tiny_gguf(folder / "big-Q4_0-00001-of-00002.gguf")
    (folder / "big-Q4_0-00002-of-00002.gguf").symlink_to("big-Q4_0-00002-of-00002.gguf")  # a loop
    (entry,) = Scanner().scan([Root(folder, FOLDER)])
    assert entry.problem == f"shard big-Q4_0-00002-of-00002.gguf cannot be read ({os.strerror(errno.ELOOP)})"


@pytest.mark.timeout(60)
def test_a_named_pipe_is_unusable_and_does_not_hang_the_scan(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_tiny_gguf(folder / "a-Q4_0.gguf")
    os.mkfifo(folder / "pipe-Q4_0.gguf")  # opening it to read waits for a writer that never comes
    entries = {e.name: e for e in Scanner().scan([Root(folder, FOLDER)])}
    assert entries["a-Q4_0.gguf"].problem == ""
    assert entries["pipe-Q4_0.gguf"].problem == "it is not a regular file"


@pytest.mark.timeout(60)
def test_folder_links_that_loop_in_the_hf_cache_are_walked_once(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snapshot = cache / "models--someone--tiny-GGUF" / "snapshots" / ("0" * 40)
    write_tiny_gguf(snapshot / "tiny-Q4_0.gguf")
    for name in ("up", "again"):  # two links to the folder above: 2^40 paths before the kernel says ELOOP
        (snapshot / name).symlink_to("..", target_is_directory=True)
    started = time.monotonic()
    (entry,) = Scanner().scan([Root(cache, HF_CACHE)])
    assert (entry.id, entry.problem) == ("hf:someone/tiny-GGUF:Q4_0", "")
    assert time.monotonic() - started < 5


def test_headers_cached_by_an_older_reader_are_read_again(tmp_path: Path) -> None:
    # A file the reader now rejects (a string file type) may sit in a cache as fine: the reader's
    # revision is part of the cache's tag, so a changed reader reads every header once more.
    folder = tmp_path / "models"
    good = write_tiny_gguf(folder / "a-Q4_0.gguf")
    typed = write_typed_gguf(folder / "typed-Q4_K_M.gguf")
    cache_file = tmp_path / "cache" / "library.sqlite3"
    Scanner(cache_file).scan([Root(folder, FOLDER)])
    with sqlite3.connect(cache_file) as db:  # as the reader before the type checks left it
        db.execute("UPDATE headers SET reader = ?, problem = ''", (__version__,))
    scanner = Scanner(cache_file)
    entries = {e.path: e for e in scanner.scan([Root(folder, FOLDER)])}
    assert sorted(scanner.headers_read) == sorted([good, typed])
    assert "general.file_type" in entries[typed].problem


def test_an_unusable_link_in_the_models_folder_can_be_deleted(tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    link = models_dir / "me" / "loop-GGUF" / "loop-Q4_0.gguf"
    link.parent.mkdir(parents=True)
    link.symlink_to(link.name)  # a link loop: resolve() raised RuntimeError, past the page's handler
    (entry,) = Scanner().scan([Root(models_dir, HUBSIDE)])
    assert entry.problem == f"it cannot be read ({os.strerror(errno.ELOOP)})"
    delete(entry, models_dir)
    assert not link.is_symlink() and not (models_dir / "me").exists()
