"""The whole app (run_window, as `python -m app` runs it) quit while its engine hangs mid-reply.

Usage: python -m tests.quit_child MODEL. Loads MODEL, asks for a long reply, sends the engine SIGSTOP once
text streams, then closes the window as a window manager would, printing `closing ENGINE_PID` just before;
the test measures from that line to this process's exit.
"""

import os
import signal
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from app.paths import AppPaths
from app.settings import SettingsStore
from app.ui.application import run_window
from app.ui.main_window import MainWindow

POLL_MS = 50


def _drive(app: QApplication, model: Path) -> None:
    window = next(w for w in app.topLevelWidgets() if isinstance(w, MainWindow))
    chat = window.chat

    def when(ready: object, then: object) -> None:
        def check() -> None:
            if ready():  # type: ignore[operator]
                then()  # type: ignore[operator]
            else:
                QTimer.singleShot(POLL_MS, check)

        check()

    def ask() -> None:
        chat.sampling_panel.max_tokens.setValue(0)  # no limit: it streams until stopped
        chat.chat_input.setPlainText("Tell me everything.")
        chat.send()
        when(lambda: len(chat.reply.text) > 20, hang_and_close)

    def hang_and_close() -> None:
        pid = chat.bridge.engine.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        print(f"closing {pid}", flush=True)
        window.close()

    chat.add_model_path(model)
    chat.load_selected_model()
    when(lambda: chat.model is not None, ask)


def main() -> int:
    paths = AppPaths.from_env().ensure()
    store = SettingsStore(paths.settings_file)
    settings = store.load()
    settings.welcomed = True  # no first-run dialog
    store.save(settings)
    app = QApplication(sys.argv[:1])
    QTimer.singleShot(0, lambda: _drive(app, Path(sys.argv[1])))
    return run_window(paths, sys.argv[:1])


if __name__ == "__main__":
    sys.exit(main())
