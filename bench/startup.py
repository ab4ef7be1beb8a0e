"""Start-up: from launching the process to the first paint of the window, and the memory then, for Hubside
(no model loaded, a fresh data dir) beside a bare PySide6 window. Targets (issue 8): <= 3 x the bare window's
time and <= +80 MiB.

Run with `make bench` (or `python -m bench.startup`); prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import save_results

ROUNDS = 5
_CHILD = r"""
import os, sys, time
from PySide6.QtCore import QEvent, QObject
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow
started = float(os.environ["STARTED"])
app = QApplication(sys.argv)
if sys.argv[1] == "bare":
    window = QMainWindow()
    window.setCentralWidget(QLabel("bare"))
else:
    from app.paths import AppPaths
    from app.ui.application import build_window
    window, services = build_window(AppPaths.from_env().ensure())
class FirstPaint(QObject):
    def eventFilter(self, watched, event):
        if event.type() == QEvent.Type.Paint:
            rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            print(time.time() - started, rss, flush=True)
            os._exit(0)
        return False
paint = FirstPaint()
window.installEventFilter(paint)
window.resize(1200, 780)
window.show()
app.exec()
"""


def launch(kind: str, home: Path) -> tuple[float, int]:
    env = dict(os.environ, STARTED=repr(time.time()), HUBSIDE_HOME=str(home), QT_QPA_PLATFORM="offscreen")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, kind], capture_output=True, text=True, env=env, check=True
    )
    seconds, rss = out.stdout.split()[:2]
    return float(seconds), int(rss)


def main() -> int:
    times: dict[str, list[float]] = {"bare": [], "hubside": []}
    memory: dict[str, list[int]] = {"bare": [], "hubside": []}
    with tempfile.TemporaryDirectory() as work:
        for round_number in range(ROUNDS + 1):  # the first round warms the disk cache and is not counted
            for kind in ("bare", "hubside"):
                seconds, rss = launch(kind, Path(work) / f"home-{round_number}")
                if round_number:
                    times[kind].append(seconds)
                    memory[kind].append(rss)
    bare_s, app_s = statistics.median(times["bare"]), statistics.median(times["hubside"])
    bare_m, app_m = statistics.median(memory["bare"]), statistics.median(memory["hubside"])
    result = {
        "rounds": ROUNDS,
        "bare_s": round(bare_s, 3),
        "hubside_s": round(app_s, 3),
        "time_ratio": round(app_s / bare_s, 2),
        "bare_mib": round(bare_m / 2**20, 1),
        "hubside_mib": round(app_m / 2**20, 1),
        "extra_mib": round((app_m - bare_m) / 2**20, 1),
    }
    result["met"] = result["time_ratio"] <= 3 and result["extra_mib"] <= 80
    print("| window | to first paint | memory |")
    print("|---|---:|---:|")
    print(f"| bare PySide6 | {bare_s:.3f} s | {result['bare_mib']} MiB |")
    print(f"| Hubside, no model | {app_s:.3f} s ({result['time_ratio']} x) | {result['hubside_mib']} MiB "
          f"(+{result['extra_mib']} MiB) |")  # fmt: skip
    print(f"targets <= 3 x and <= +80 MiB: {'met' if result['met'] else 'NOT met'}")
    save_results("startup", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
