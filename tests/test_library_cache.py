"""The library's header cache, on real files: a rescan reads only what changed, forgets what is gone, and a
cache that cannot be used never stands in the way of the list (Qt-free)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from app.library.cache import HeaderCache
from app.library.scan import FOLDER, Root, Scanner
from tests.library_files import make_library, write_tiny_gguf

N_FILES = 30


@pytest.fixture
def library(tmp_path: Path) -> list[Path]:
    return make_library(tmp_path / "models", N_FILES)


@pytest.fixture
def roots(tmp_path: Path) -> list[Root]:
    return [Root(tmp_path / "models", FOLDER)]


@pytest.fixture
def cache_file(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "library.sqlite3"


def _touch(path: Path) -> None:
    """A new mtime, whatever the file system's clock granularity."""
    stamp = path.stat()
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 2_000_000_000))


def test_a_rescan_reads_only_the_header_of_the_file_that_changed(
    library: list[Path], roots: list[Root], cache_file: Path
) -> None:
    scanner = Scanner(cache_file)
    first = scanner.scan(roots)
    assert len(first) == N_FILES and scanner.headers_read == library
    assert {(e.architecture, e.quant, e.context_length, e.parameters, e.problem) for e in first} == {
        ("llama", "Q4_0", 4096, 128, "")
    }
    assert scanner.scan(roots) == first and scanner.headers_read == []
    _touch(library[7])
    assert scanner.scan(roots) == first and scanner.headers_read == [library[7]]
    assert Scanner(cache_file).scan(roots) == first  # a new scanner (the next start) finds the same cache


def test_a_changed_file_is_read_again_and_a_deleted_one_disappears(
    library: list[Path], roots: list[Root], cache_file: Path
) -> None:
    scanner = Scanner(cache_file)
    scanner.scan(roots)
    write_tiny_gguf(library[3], context_length=32768)
    _touch(library[3])
    library[5].unlink()
    entries = {e.path: e for e in scanner.scan(roots)}
    assert scanner.headers_read == [library[3]]
    assert entries[library[3]].context_length == 32768
    assert library[5] not in entries and len(entries) == N_FILES - 1
    with HeaderCache(cache_file) as cache:
        assert str(library[5]) not in cache.load() and len(cache.load()) == N_FILES - 1


def test_a_file_that_became_bad_is_flagged_and_a_bad_one_is_not_read_again(
    library: list[Path], roots: list[Root], cache_file: Path
) -> None:
    scanner = Scanner(cache_file)
    scanner.scan(roots)
    library[0].write_bytes(b"GGUF" + b"\xff" * 100)
    bad = next(e for e in scanner.scan(roots) if e.path == library[0])
    assert scanner.headers_read == [library[0]] and "not a usable GGUF" in bad.problem
    again = next(e for e in scanner.scan(roots) if e.path == library[0])
    assert scanner.headers_read == [] and again == bad


def test_partial_downloads_and_later_shards_are_neither_listed_nor_read(
    library: list[Path], roots: list[Root], cache_file: Path
) -> None:
    folder = library[0].parent
    write_tiny_gguf(folder / "big-Q4_0.gguf.part")
    first, second = folder / "split-Q4_0-00001-of-00002.gguf", folder / "split-Q4_0-00002-of-00002.gguf"
    write_tiny_gguf(first)
    write_tiny_gguf(second)
    scanner = Scanner(cache_file)
    entries = scanner.scan(roots)
    assert len(entries) == N_FILES + 1 and not any(e.path.name.endswith(".part") for e in entries)
    split = next(e for e in entries if e.path == first)
    assert split.files == (first, second) and split.size == 2 * first.stat().st_size
    assert first in scanner.headers_read and second not in scanner.headers_read
    second.unlink()  # the header is the same; the missing shard is found by its stat alone
    split = next(e for e in scanner.scan(roots) if e.path == first)
    assert split.problem == f"shard {second.name} is missing" and scanner.headers_read == []


@pytest.mark.parametrize("damage", ["garbage", "header_zeroed", "cut_in_half"])
def test_a_damaged_cache_is_moved_aside_and_rebuilt(
    library: list[Path], roots: list[Root], cache_file: Path, damage: str
) -> None:
    expected = Scanner(cache_file).scan(roots)
    data = cache_file.read_bytes()
    broken = {
        "garbage": os.urandom(len(data)),
        "header_zeroed": bytes(100) + data[100:],
        "cut_in_half": data[: len(data) // 2],
    }[damage]
    cache_file.write_bytes(broken)
    scanner = Scanner(cache_file)
    assert scanner.scan(roots) == expected and scanner.headers_read == library  # no error, all listed
    aside = [p for p in cache_file.parent.iterdir() if ".unreadable-" in p.name]
    assert [p.read_bytes() for p in aside] == [broken]  # kept, not deleted
    assert scanner.scan(roots) == expected and scanner.headers_read == []  # the new cache works


def test_a_locked_cache_is_skipped_and_kept(library: list[Path], roots: list[Root], cache_file: Path) -> None:
    Scanner(cache_file).scan(roots)
    library[0].unlink()
    other = sqlite3.connect(cache_file, isolation_level=None)  # another process writing to it
    other.execute("BEGIN IMMEDIATE")
    try:
        cache = HeaderCache(cache_file, busy_timeout_ms=10)
        assert len(cache.load()) == N_FILES  # WAL: reading goes on beside a writer
        cache.save({}, [str(p) for p in library[1:]])  # cannot write: this scan's news is not kept
        assert cache.moved_aside is None and cache.db is None
    finally:
        other.execute("ROLLBACK")
        other.close()
    with HeaderCache(cache_file) as cache:
        assert len(cache.load()) == N_FILES  # nothing moved, nothing lost


def test_a_cache_from_a_newer_hubside_is_left_alone(
    library: list[Path], roots: list[Root], cache_file: Path
) -> None:
    expected = Scanner(cache_file).scan(roots)
    with sqlite3.connect(cache_file) as db:
        db.execute("PRAGMA user_version = 99")
    scanner = Scanner(cache_file)
    assert scanner.scan(roots) == expected and len(scanner.headers_read) == N_FILES
    with sqlite3.connect(cache_file) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99
    assert not [p for p in cache_file.parent.iterdir() if ".unreadable-" in p.name]


def test_another_process_uses_the_same_cache(
    library: list[Path], roots: list[Root], cache_file: Path, tmp_path: Path
) -> None:
    Scanner(cache_file).scan(roots)
    _touch(library[2])
    holder = HeaderCache(cache_file)  # this process keeps it open meanwhile
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(cache_file), str(roots[0].path)],
            capture_output=True,
            text=True,
            check=True,
        )
        assert child.stdout.split() == [str(N_FILES), str(library[2])]
        assert holder.load()[str(library[2])].mtime_ns == library[2].stat().st_mtime_ns
    finally:
        holder.close()


_CHILD = """
import sys
from pathlib import Path
from app.library.scan import FOLDER, Root, Scanner
scanner = Scanner(Path(sys.argv[1]))
print(len(scanner.scan([Root(Path(sys.argv[2]), FOLDER)])), *scanner.headers_read)
"""


def test_the_library_that_hubside_serve_and_ls_read_keeps_the_header_cache() -> None:
    # `hubside serve` reads the library again every few seconds: the second read must not open every file
    from app.cli_models import library
    from app.library.scan import default_roots
    from app.paths import AppPaths

    paths = AppPaths.from_env().ensure()
    make_library(paths.models_dir / "acme", 3)
    assert len(library(paths)) == 3
    scanner = Scanner(paths.library_cache_file)
    assert len(scanner.scan(default_roots(paths.models_dir, []))) == 3
    assert scanner.headers_read == []  # all three came from the cache library() filled (before: 3 read)
