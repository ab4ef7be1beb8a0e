"""Memory, cores and processes come from psutil (Linux, macOS and Windows alike), never from /proc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil

import app
from app.hub.starters import cpu_name
from app.runtime.memory import free_ram, physical_cores


def test_cores_and_free_memory_are_what_psutil_says() -> None:
    assert physical_cores() == (psutil.cpu_count(logical=False) or os.cpu_count())
    assert cpu_name().startswith(f"{physical_cores()} cores")
    # Free memory moves between two calls: equal within 64 MB.
    assert abs(free_ram() - psutil.virtual_memory().available) < 64 * 1024**2


def test_the_engines_resident_memory_is_read_for_a_live_process_only() -> None:
    from app.ui.main_window import _engine_rss

    code = "import sys, time; b = bytearray(50_000_000); print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        rss = _engine_rss(child.pid)
        assert rss is not None and rss > 50_000_000
        assert abs(rss - psutil.Process(child.pid).memory_info().rss) < 4 * 1024**2
    finally:
        child.kill()
        child.wait()
    assert _engine_rss(child.pid) is None and _engine_rss(None) is None


def test_no_code_of_ours_parses_proc() -> None:
    sources = Path(app.__file__).parent.rglob("*.py")
    assert [str(p) for p in sources if "/proc" in p.read_text(encoding="utf-8")] == []
