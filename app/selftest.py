"""`hubside --self-test`: does this build work on this machine? For the packaged app, where a missing native
library or Qt plugin shows up only at run time. Each step prints a line; any failure exits 1."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SELFTEST_MODEL = "selftest.gguf"  # a tiny random-weight model the package build puts in app/resources


def _step(name: str, action: Callable[[], str]) -> bool:
    started = time.perf_counter()
    try:
        detail = action()
    except Exception as exc:
        print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        return False
    print(
        f"ok   {name} ({(time.perf_counter() - started) * 1000:.0f} ms){': ' + detail if detail else ''}",
        flush=True,
    )
    return True


def run_self_test(model: Path | None = None) -> int:
    from importlib.resources import files

    model = model or Path(str(files("app.resources") / SELFTEST_MODEL))
    with tempfile.TemporaryDirectory() as home:
        os.environ["HUBSIDE_HOME"] = home
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        from app.paths import AppPaths

        paths = AppPaths.under(Path(home)).ensure()

        def engine_import() -> str:
            import llama_cpp

            from app.runtime.engine import Engine  # noqa: F401

            return f"llama-cpp-python {llama_cpp.__version__}"

        def qt() -> str:
            from PySide6.QtWidgets import QApplication

            from app.ui.application import build_window

            app = QApplication.instance() or QApplication(sys.argv[:1])
            window, services = build_window(paths)
            window.show()
            app.processEvents()
            window.close()
            services.close()
            return f"{len(window.pages)} pages"

        def database() -> str:
            import sqlite3

            from app.chat.store import SCHEMA_VERSION, ChatStore

            old = Path(home) / "old.sqlite3"
            with sqlite3.connect(old) as db:  # a version-1 database, to migrate
                from app.chat.store import _SCHEMA_V1

                db.executescript(_SCHEMA_V1)
                db.execute("PRAGMA user_version = 1")
            store = ChatStore(old)
            version = store.db.execute("PRAGMA user_version").fetchone()[0]
            store.close()
            if version != SCHEMA_VERSION:
                raise RuntimeError(f"migrated to {version}, not {SCHEMA_VERSION}")
            return f"schema {version}"

        def generate() -> str:
            from app.runtime.engine import Engine
            from app.runtime.protocol import Finished, GenerateRequest, LoadParams, SamplingParams

            with Engine(paths) as engine:
                engine.load(LoadParams(model, n_ctx=128))
                request = GenerateRequest(
                    engine.new_request_id(), prompt="Hello", max_tokens=8, ignore_eos=True,
                    sampling=SamplingParams(temperature=0),
                )  # fmt: skip
                finished = [e for e in engine.generate(request) if isinstance(e, Finished)]
            tokens = finished[0].stats.completion_tokens
            if tokens != 8:
                raise RuntimeError(f"{tokens} tokens instead of 8")
            return f"{tokens} tokens at {finished[0].stats.tokens_per_s:.0f} tok/s"

        steps = [("engine import", engine_import), ("Qt window", qt), ("database", database),
                 (f"model {model.name}", generate)]  # fmt: skip
        results = [_step(name, action) for name, action in steps]
    print("self-test passed" if all(results) else "self-test FAILED", flush=True)
    return 0 if all(results) else 1
