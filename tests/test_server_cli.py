"""`hubside serve` as a real process: prints its URL (and its key, kept for the next start), offers the
library's models by id, and stops on Ctrl-C with no engine process left."""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from app.cli_models import library
from app.cli_serve import _api_key
from app.errors import AppError
from app.paths import AppPaths
from app.server.keys import server_key
from tests.conftest import InMemoryKeyring


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


def test_the_key_is_made_once_and_kept_in_the_keyring(memory_keyring: InMemoryKeyring) -> None:
    key_file = AppPaths.from_env().ensure().config_dir / "server-key"
    key, made = server_key(key_file)
    assert made and key.startswith("hs-") and len(key) > 40
    assert memory_keyring.passwords == {("hubside", "server-api-key"): key}  # not the Hub token's entry
    assert not key_file.exists()  # a keyring is there: no file
    assert server_key(key_file) == (key, False)


def test_the_key_from_the_command_line_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    paths = AppPaths.from_env().ensure()
    assert _api_key(argparse.Namespace(api_key="given", api_key_env=None), paths) == ("given", False)
    monkeypatch.setenv("MY_KEY", "from-env")
    assert _api_key(argparse.Namespace(api_key=None, api_key_env="MY_KEY"), paths) == ("from-env", False)
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(AppError, match="MY_KEY"):
        _api_key(argparse.Namespace(api_key=None, api_key_env="MY_KEY"), paths)
