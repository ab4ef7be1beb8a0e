"""GUI responsiveness: the heartbeat probe's longest event-loop gap while a model loads (the real engine),
while 100k tokens stream from a fast fake engine (10,000 tokens a second), and while the Discover page
scrolls through a 10,000-repo listing from the Hub stand-in (in a process of its own, as the Hub would
be), fetched 100 at a time as the view reaches the end.

Run with `make bench` (or `python -m bench.gui_heartbeat`); prints p99 and max gaps and writes JSON.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtWidgets import QApplication

from app.paths import AppPaths
from app.runtime.protocol import Event, Finished, GenerateRequest, LoadedModel, LoadParams, Piece, ReplyStats
from app.ui.application import build_window
from bench import save_results
from tests import models
from tests.heartbeat import Heartbeat

N_TOKENS = 100_000
N_REPOS = 10_000
FAKE_TOKENS_PER_S = 10_000  # ten times a fast GPU: the window must not care how fast text comes


class FastFakeEngine:
    """The Engine's interface with no model behind it: replies stream at FAKE_TOKENS_PER_S."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.pid = None
        self.alive = True
        self.stopped = False

    def new_request_id(self) -> int:
        return next(self._ids)

    def load(self, params: LoadParams) -> LoadedModel:
        return LoadedModel(
            params.model_path, "fake", "fake", "F16", 1, 4096, 4096, 100, 1, 0, True, True, 0.0
        )

    def generate(self, request: GenerateRequest) -> Iterator[Event]:
        started = time.perf_counter()
        for i in range(N_TOKENS):
            if self.stopped:
                break
            if i % 100 == 0:  # pace the stream: token i is due at i / FAKE_TOKENS_PER_S
                time.sleep(max(0.0, started + i / FAKE_TOKENS_PER_S - time.perf_counter()))
            yield Piece(request.request_id, "word " if i % 12 else "word\n\n", i + 1)
        seconds = time.perf_counter() - started
        yield Finished(request.request_id, ReplyStats("length", 1, 1, N_TOKENS, 0.0, 0.0, N_TOKENS / seconds))

    def stop(self, request_id: int | None = None) -> None:
        self.stopped = True

    def unload(self) -> None:
        pass

    def close(self) -> None:
        self.alive = False


def _wait(app: QApplication, done: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.001)


def measure(app: QApplication, model: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as home:
        paths = AppPaths.under(Path(home)).ensure()
        window, services = build_window(paths)
        window.show()
        chat = window.chat
        chat.add_model_path(model)
        with Heartbeat() as beat:
            chat.load_selected_model()
            _wait(app, lambda: chat.model is not None, 120)
        results["load_real_engine"] = {
            "model": model.name,
            "p99_ms": beat.percentile_ms(99),
            "max_ms": beat.max_gap_ms,
        }
        window.close()
        services.close()

        window, services = build_window(paths, FastFakeEngine())  # type: ignore[arg-type]
        window.show()
        chat = window.chat
        chat.load_selected_model()
        _wait(app, lambda: chat.model is not None, 10)
        chat.chat_input.setPlainText("Stream a lot, please.")
        started = time.perf_counter()
        with Heartbeat() as beat:
            chat.send()
            _wait(app, lambda: chat.request_id is None, 600)
        results["stream_100k_tokens_fake_engine"] = {
            "seconds": time.perf_counter() - started,
            "p99_ms": beat.percentile_ms(99),
            "max_ms": beat.max_gap_ms,
            "beats": len(beat.gaps_ms),
        }
        window.close()
        services.close()
        results["discover_scroll_10k_repos"] = _scroll_discover(app, paths)
    return results


def _scroll_discover(app: QApplication, paths: AppPaths) -> dict[str, Any]:
    from app.hub.client import HubClient
    from app.ui.discover_page import DiscoverPage

    port = _free_port()
    with tempfile.TemporaryDirectory() as empty:
        stub = subprocess.Popen(
            [sys.executable, "-m", "tests.hubstub", "--port", str(port), "--listing", str(N_REPOS), empty],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert stub.stdout is not None
            while "HF_ENDPOINT=" not in stub.stdout.readline():  # serving
                pass
            window, services = build_window(paths)
            window.show()
            page = window.pages["discover"]
            assert isinstance(page, DiscoverPage)
            page.client = HubClient(paths.cache_dir / "hub-bench", endpoint=f"http://127.0.0.1:{port}")
            started = time.perf_counter()
            with Heartbeat() as beat:
                page.search()
                _wait(app, lambda: not page.results.loading, 60)
                while page.results.more_wanted:
                    page.results_view.scrollToBottom()
                    _wait(app, lambda: not page.results.loading, 60)
            rows = page.results.rowCount()
            window.close()
            services.close()
        finally:
            stub.terminate()
            stub.wait()
    return {
        "rows": rows,
        "seconds": time.perf_counter() - started,
        "p99_ms": beat.percentile_ms(99),
        "max_ms": beat.max_gap_ms,
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def main() -> int:
    app = QApplication(sys.argv)
    results = measure(app, models.fetch(models.SMOLLM2))
    print("| GUI heartbeat (10 ms timer) | p99 gap | max gap |")
    print("|---|---:|---:|")
    for name, row in results.items():
        print(f"| {name} | {row['p99_ms']:.1f} ms | {row['max_ms']:.1f} ms |")
    save_results("gui-heartbeat", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
