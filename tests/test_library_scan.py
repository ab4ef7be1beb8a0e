"""A scan on real files: one hostile or unreadable file is listed as unusable with its reason, and costs
no other file its place in the library (Qt-free)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from app.library.scan import FOLDER, Root, Scanner
from tests.library_files import write_tiny_gguf
from tests.library_hostile import BAD, GOOD, make_hostile_folder


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
