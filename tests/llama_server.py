"""llama.cpp's own `llama-server`, as a reference to hold ours against: built once from llama-cpp-python's
sdist (bench/llama_bench.py, cached under ~/.cache/hubside-bench), started on a free loopback port for one
model and ready once `/health` answers 200.

    with llama_server(model, parallel=4) as server:   # in a test: skipped when the binary is not built
        requests.post(f"{server.base_url}/v1/completions", ...)

`start()` is the same without pytest (the benchmark uses it); `build()` builds the binary (minutes).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp

# Imported here, when the test module is collected: its cache folder comes from HOME, which each test's
# own fixture later points at an empty folder.
from bench import llama_bench

BUILD_HINT = "python -c 'from tests.llama_server import build; build()'  (a few minutes), or `make bench`"


def find_binary() -> Path | None:
    """The built llama-server of the installed llama-cpp-python, if there is one. The build for this
    LLAMA_FLAGS first, else one built with other flags (`make bench` sets the Makefile's)."""
    exact = llama_bench.cached_binary("llama-server")
    if exact.exists():
        return exact
    pattern = f"llama-server-{llama_cpp.__version__}-*/llama-server"
    return next(iter(sorted(llama_bench.CACHE.glob(pattern))), None)


def build() -> Path:
    """Build llama-server now (a few minutes on two cores) unless it is cached; its path."""
    return find_binary() or llama_bench.ensure_llama_server()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LlamaServer:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    api_key: str | None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def log_tail(self, size: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-size:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.unlink(missing_ok=True)


def start(
    model: Path,
    *,
    ctx: int = 2048,
    parallel: int = 1,
    threads: int = 2,
    api_key: str | None = None,
    extra: Sequence[str] = (),
    binary: Path | None = None,
    ready_timeout_s: float = 120.0,
) -> LlamaServer:
    """llama-server for `model` on a free loopback port, once /health says it is ready.

    `ctx` is each sequence's context: llama-server splits `-c` among its `parallel` slots, so it gets
    ctx x parallel. Batch 512 and flash attention on, as Hubside's engine loads a model."""
    binary = binary or find_binary()
    if binary is None:
        raise FileNotFoundError(f"llama-server is not built: {BUILD_HINT}")
    port = free_port()
    command = [str(binary), "--model", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--ctx-size", str(ctx * parallel), "--parallel", str(parallel), "--no-webui"]
    command += ["--threads", str(threads), "--threads-batch", str(threads), "--batch-size", "512"]
    command += ["--ubatch-size", "512", "--flash-attn", "on", *(["--api-key", api_key] if api_key else [])]
    log = Path(tempfile.mkstemp(prefix="llama-server-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, *extra],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "LD_LIBRARY_PATH": str(binary.parent)},
        )
    server = LlamaServer(process, port, log, api_key)
    try:
        _wait_ready(server, ready_timeout_s)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: LlamaServer, timeout_s: float) -> None:
    """Poll /health (503 while the model loads, 200 once ready); fail at once if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"llama-server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(f"{server.base_url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet, or 503 while loading
        time.sleep(0.05)
    raise TimeoutError(f"llama-server not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


@contextmanager
def llama_server(model: Path, **options: Any) -> Iterator[LlamaServer]:
    """`start()` for a test: skips it (with how to build) when llama-server is not built; stops after."""
    import pytest  # only tests use this function; the benchmark imports this module too

    if find_binary() is None:
        pytest.skip(f"llama-server not built yet: {BUILD_HINT}")
    server = start(model, **options)
    try:
        yield server
    finally:
        server.stop()
