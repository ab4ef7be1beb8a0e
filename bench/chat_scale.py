"""Long chats and many chats: a 10,000-message conversation among 5,000 others, in a fresh home, in the real
window with a real model (SmolLM2 135M).

- reply_start_overhead_ms: the time before llama.cpp starts the prompt (the send on the GUI thread, then the
  engine's rendering, tokenizing and cache work, its ReplyStats.prepare_ms) in the 10,000-message chat,
  minus the same in a 10-message chat (median of 5). Its first reply (per-message token counts not yet
  memoized) and the next ones (median of 5).
- heartbeat_max_ms: the longest gap of a 10 ms timer while that conversation opens, a message is sent and
  the reply streams.
- sidebar_search_ms: the sidebar's search over titles and message text (median of a few queries; max too).

Run with `make bench` or `python -m bench.chat_scale [--json]`; prints a table (and with --json one JSON
object as its last line) and writes JSON under bench/results.
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

from app.chat.store import ChatStore
from app.paths import AppPaths
from app.runtime.protocol import ReplyStats
from app.ui.application import build_window
from app.ui.chat_page import ChatPage
from bench import save_results
from tests import models
from tests.heartbeat import Heartbeat
from tests.long_chats import long_conversation, many_conversations

N_MESSAGES = 10_000
N_CONVERSATIONS = 5_000
CONTEXT = 2048
SEARCHES = ("llama", "café", "garden", "pyth", "Message 3", "word", "nothing-matches-this")
TARGETS = {"reply_start_overhead_ms": 30.0, "heartbeat_max_ms": 50.0, "sidebar_search_ms": 50.0}


def _wait(app: QApplication, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.001)
    if not done():
        raise TimeoutError("the window did not get there in time")


SPLITS: list[tuple[float, float]] = []  # (send on the GUI thread, the engine's preparing) of each reply


def _reply_start(app: QApplication, chat: ChatPage, finished: list[ReplyStats]) -> float:
    """Send one question in the open conversation; the ms before llama.cpp started on its prompt."""
    chat.chat_input.setPlainText("One more question, please?")
    started = time.perf_counter()
    chat.send()
    send_ms = (time.perf_counter() - started) * 1000
    _wait(app, lambda: chat.request_id is None, 300)
    SPLITS.append((send_ms, finished[-1].prepare_ms))
    return send_ms + finished[-1].prepare_ms


def measure(app: QApplication, model: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as home:
        paths = AppPaths.under(Path(home)).ensure()
        started = time.perf_counter()
        store = ChatStore(paths.database_file)
        many_conversations(store, N_CONVERSATIONS - 2)
        short = long_conversation(store, 10, words=12, title="Short chat")
        long = long_conversation(store, N_MESSAGES, words=12)
        store.close()
        build_s = time.perf_counter() - started

        window, services = build_window(paths)
        window.show()
        chat = window.chat
        finished: list[ReplyStats] = []
        chat.bridge.finished.connect(lambda _request, stats: finished.append(stats))
        chat.add_model_path(model)
        chat.model_bar.context.setValue(CONTEXT)
        chat.load_selected_model()
        _wait(app, lambda: chat.model is not None, 120)
        chat.sampling_panel.max_tokens.setValue(8)

        chat.open_conversation(short)
        _reply_start(app, chat, finished)  # the engine warm
        short_ms = statistics.median(_reply_start(app, chat, finished) for _ in range(5))
        with Heartbeat() as beat:
            opened = time.perf_counter()
            chat.open_conversation(long)
            open_ms = (time.perf_counter() - opened) * 1000
            app.processEvents()
            long_first_ms = _reply_start(app, chat, finished)
        long_first_split = SPLITS[-1]
        long_again_ms = statistics.median(_reply_start(app, chat, finished) for _ in range(5))
        trimmed = finished[-1].trimmed_messages

        sidebar = chat.sidebar
        search_ms = []
        for query in SEARCHES:
            searched = time.perf_counter()
            sidebar.search.setText(query)
            sidebar.search_timer.stop()
            sidebar._apply_search()  # what the debounce timer calls, timed without its wait
            search_ms.append((time.perf_counter() - searched) * 1000)
        hits = {query: sidebar.conversations.rowCount() for query in SEARCHES[-1:]}
        window.close()
        services.close()
    return {
        "messages": N_MESSAGES,
        "conversations": N_CONVERSATIONS,
        "model": model.name,
        "context": CONTEXT,
        "build_s": round(build_s, 1),
        "open_ms": round(open_ms, 1),
        "reply_start_short_ms": round(short_ms, 1),
        "reply_start_long_first_ms": round(long_first_ms, 1),
        "reply_start_long_again_ms": round(long_again_ms, 1),
        "reply_start_long_first_send_ms": round(long_first_split[0], 1),
        "reply_start_long_first_engine_ms": round(long_first_split[1], 1),
        "reply_start_overhead_ms": round(long_first_ms - short_ms, 1),
        "reply_start_overhead_again_ms": round(long_again_ms - short_ms, 1),
        "trimmed_messages": trimmed,
        "heartbeat_max_ms": round(beat.max_gap_ms, 1),
        "heartbeat_p99_ms": round(beat.percentile_ms(99), 1),
        "sidebar_search_ms": round(statistics.median(search_ms), 1),
        "sidebar_search_max_ms": round(max(search_ms), 1),
        "no_match_rows": hits[SEARCHES[-1]],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with the results as one JSON line")
    args = parser.parse_args()
    app = QApplication(sys.argv)
    results = measure(app, models.fetch(models.SMOLLM2))
    print("| chat scale | value | target |")
    print("|---|---:|---:|")
    for key, value in results.items():
        target = f"< {TARGETS[key]:.0f}" if key in TARGETS else ""
        print(f"| {key} | {value} | {target} |")
    save_results("chat-scale", results)
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
