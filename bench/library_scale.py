"""The library at scale: 2,000 GGUF files (tiny real headers, tests/library_files.py) in 20 folders.

Times a scan that reads every header (as every scan did before the header cache), the first scan with an
empty cache, a rescan with nothing changed and one with 10 files changed (medians of ROUNDS), then the
longest GUI heartbeat gap (a 10 ms QTimer) while the Models page fills with the 2,000 entries: the page
alone, and in the whole window, where the other pages are handed the new library too.

Run with `python -m bench.library_scale [--json]`; prints a table and writes JSON to bench/results/ (with
--json, also as the last line of the output). The files are tiny and in the page cache: the times are the
scanner's own cost; a real header (a 150k-token vocabulary) takes far longer to read than these.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication

from app.library.scan import FOLDER, Root, Scanner
from app.paths import AppPaths
from bench import save_results
from tests.heartbeat import Heartbeat
from tests.library_files import make_library

N_FILES = 2000
N_CHANGED = 10
ROUNDS = 5


def _ms(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def _touch(paths: list[Path]) -> None:
    for path in paths:
        stamp = path.stat()
        os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))


def measure_scans(files: list[Path], roots: list[Root], cache_file: Path) -> dict[str, Any]:
    """Each scan ROUNDS times: the median in ms, and how many headers the last one read."""
    rows: dict[str, dict[str, Any]] = {}

    def row(name: str, prepare: Callable[[], object], scanner: Scanner) -> None:
        times = []
        for _ in range(ROUNDS):
            prepare()
            times.append(_ms(lambda: scanner.scan(roots)))
        rows[name] = {"ms": statistics.median(times), "headers_read": len(scanner.headers_read)}

    row("no cache (every header read)", lambda: None, Scanner())
    cached = Scanner(cache_file)
    row("first scan, empty cache", lambda: cache_file.unlink(missing_ok=True), cached)
    row("rescan, nothing changed", lambda: None, cached)
    changed = files[:: N_FILES // N_CHANGED][:N_CHANGED]
    row(f"rescan, {N_CHANGED} changed", lambda: _touch(changed), cached)
    return rows


def _wait(app: QApplication, done: Callable[[], bool], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.001)
    if not done():
        raise TimeoutError("the Models page did not fill in time")


def _gaps(beat: Heartbeat) -> dict[str, float]:
    return {"p99_ms": beat.percentile_ms(99), "max_ms": beat.max_gap_ms}


def measure_page(app: QApplication, folder: Path, files: list[Path]) -> dict[str, Any]:
    """The Models page on its own, with an empty cache, then after 10 files changed."""
    from app.ui.background import Background
    from app.ui.models_page import ModelsPage

    background = Background()
    page = ModelsPage(
        lambda: [Root(folder, FOLDER)], list, folder, background, lambda _: None, lambda _: None
    )
    page.resize(1200, 780)
    page.show()
    results = {}
    with Heartbeat() as beat:
        page.rescan()
        _wait(app, lambda: page.model.rowCount() == N_FILES and not page.scanning)
    results["page alone, empty cache"] = _gaps(beat)
    _touch(files[:N_CHANGED])
    with Heartbeat() as beat:
        page.rescan()
        _wait(app, lambda: not page.scanning)
    results[f"page alone, {N_CHANGED} changed"] = _gaps(beat)
    page.close()
    background.close()
    return results


def measure_window(app: QApplication, folder: Path) -> dict[str, Any]:
    """The whole window: the folder added on the Models page (its list goes to the chat and compare pages).
    Models found elsewhere on this machine (LM Studio's folders) may add rows: at least N_FILES, then."""
    from app.ui.application import build_window
    from app.ui.models_page import ModelsPage

    window, services = build_window(AppPaths.from_env().ensure())
    window.resize(1200, 780)
    window.show()
    page = window.pages["models"]
    assert isinstance(page, ModelsPage)
    _wait(app, lambda: page.listed and not page.scanning)  # the start-up scan, of an empty library
    results = {}
    with Heartbeat() as beat:
        page.add_folder(str(folder))
        _wait(app, lambda: page.model.rowCount() >= N_FILES and not page.scanning)
    results["whole window, empty cache"] = _gaps(beat)
    with Heartbeat() as beat:
        page.rescan()
        _wait(app, lambda: not page.scanning)
    results["whole window, rescan, nothing changed"] = _gaps(beat)
    window.close()
    services.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.library_scale")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on the last line")
    args = parser.parse_args(argv)
    app = QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as work:
        os.environ["HF_HUB_CACHE"] = str(Path(work) / "no-hf-cache")  # this machine's models stay out
        folder = Path(work) / "library"
        files = make_library(folder, N_FILES)
        scans = measure_scans(files, [Root(folder, FOLDER)], Path(work) / "scan-cache.sqlite3")
        os.environ["HUBSIDE_HOME"] = str(Path(work) / "page-home")  # the page's cache: a new, empty one
        gui = measure_page(app, folder, files)
        os.environ["HUBSIDE_HOME"] = str(Path(work) / "window-home")  # settings and cache: new again
        gui |= measure_window(app, folder)
    results = {"files": N_FILES, "rounds": ROUNDS, "scans": scans, "gui_heartbeat": gui}
    print(f"| {N_FILES} files: scan | median of {ROUNDS} | headers read |")
    print("|---|---:|---:|")
    for name, row in scans.items():
        print(f"| {name} | {row['ms']:.1f} ms | {row['headers_read']} |")
    print("\n| while the Models page fills | p99 gap | max gap |")
    print("|---|---:|---:|")
    for name, gaps in gui.items():
        print(f"| {name} | {gaps['p99_ms']:.1f} ms | {gaps['max_ms']:.1f} ms |")
    save_results("library-scale", results)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
