"""`hubside serve` as a real process: prints its URL (and its key, kept for the next start), offers the
library's models by id, and stops on Ctrl-C with no engine process left."""

from __future__ import annotations

import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from app.cli_models import library
from app.paths import AppPaths


def test_serve_prints_its_url_offers_the_library_and_stops_on_ctrl_c(tiny_model: Path) -> None:
    paths = AppPaths.from_env().ensure()
    folder = paths.models_dir / "someone" / "tiny-GGUF"
    folder.mkdir(parents=True)
    shutil.copy(tiny_model, folder / "tiny-F16.gguf")
    (entry,) = library(paths)  # the id `hubside ls --json` prints
    command = [sys.executable, "-m", "app", "serve", "--port", "0", "--ctx", "256", "--threads", "2"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = re.fullmatch(r"Serving on (http://127\.0\.0\.1:\d+/v1)\n", process.stdout.readline())
        key = re.fullmatch(r"API key: (hs-\S+)\n", process.stdout.readline())
        assert url and key, process.stderr.read() if process.stderr else ""
        auth = {"Authorization": f"Bearer {key[1]}"}
        models = requests.get(url[1] + "/models", headers=auth, timeout=30).json()
        assert [m["id"] for m in models["data"]] == [entry.id]
        body = {"model": entry.id, "prompt": "Hi", "max_tokens": 3}
        answer = requests.post(url[1] + "/completions", json=body, headers=auth, timeout=60).json()
        assert answer["usage"]["completion_tokens"] == 3
        engines = psutil.Process(process.pid).children(recursive=True)
        assert engines  # the model's engine process
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        process.wait(15)
        print(f"stopped {time.monotonic() - interrupted:.2f} s after SIGINT")
        assert time.monotonic() - interrupted < 5
        assert process.returncode in (0, 130)
        # The engine, and multiprocessing's resource tracker (it ends once its last writer has gone).
        _, alive = psutil.wait_procs(engines, timeout=5)
        assert not alive
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # No keyring in a child of the tests: the key went to a file only this user can read.
    key_file = paths.config_dir / "server-key"
    assert key_file.read_text().strip() == key[1]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
