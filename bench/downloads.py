"""Download throughput on loopback: Hubside's transfer (hashing as it writes, then the size and sha256
check and the rename) beside `curl -L` fetching the same file from the same Hub stand-in, which runs in a
process of its own. Target (issue 6): Hubside >= 0.9 x curl, verification included.

Run with `make bench` (or `python -m bench.downloads`); prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from app.downloads.transfer import RemoteFile, Transfer, download
from bench import save_results
from tests import models

ROUNDS = 5
TARGET = 0.9
BIG = 1 << 30


def _serve(root: Path) -> tuple[subprocess.Popen[str], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stub = subprocess.Popen(
        [sys.executable, "-m", "tests.hubstub", "--port", str(port), str(root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert stub.stdout is not None
    while "HF_ENDPOINT=" not in stub.stdout.readline():
        pass
    return stub, f"http://127.0.0.1:{port}"


def big_file() -> tuple[Path, str]:
    """A 1 GiB file of random bytes (made once, cached): long enough that set-up costs do not decide."""
    path = Path.home() / ".cache" / "hubside-bench" / "random-1GiB.gguf"
    if not path.exists() or path.stat().st_size != BIG:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            for _ in range(BIG // (1 << 24)):
                f.write(os.urandom(1 << 24))
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return path, digest.hexdigest()


def measure(path: Path, sha256: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        root = Path(work) / "hub"
        (root / "bench" / "model-GGUF").mkdir(parents=True)
        (root / "bench" / "model-GGUF" / path.name).symlink_to(path)
        stub, endpoint = _serve(root)
        try:
            url = f"{endpoint}/bench/model-GGUF/resolve/main/{path.name}"
            remote = RemoteFile(url, path.stat().st_size, sha256)
            out = Path(work) / "out"
            requests.head(url)  # the stand-in hashes the file for its ETag on the first request
            curl_s, ours_s = [], []

            def fresh_folder() -> None:  # and no write-back of the previous run's file still going on
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                out.mkdir()

            for _ in range(ROUNDS):  # alternated, so that a drift of the machine hits both
                target = out / path.name
                fresh_folder()
                started = time.perf_counter()
                subprocess.run(["curl", "-sSfL", "-o", str(target), url], check=True)
                curl_s.append(time.perf_counter() - started)
                fresh_folder()
                started = time.perf_counter()
                with requests.Session() as session:
                    download(Transfer(session), remote, target)
                ours_s.append(time.perf_counter() - started)
        finally:
            stub.terminate()
            stub.wait()
    size = path.stat().st_size
    curl_rate, ours_rate = size / statistics.median(curl_s), size / statistics.median(ours_s)
    return {
        "model": path.name,
        "bytes": size,
        "curl_mb_s": round(curl_rate / 1e6, 1),
        "hubside_mb_s": round(ours_rate / 1e6, 1),
        "ratio": round(ours_rate / curl_rate, 3),
        "target": TARGET,
        "met": ours_rate / curl_rate >= TARGET,
    }


def main() -> int:
    smol, gemma = models.fetch(models.SMOLLM2), models.fetch(models.GEMMA3)
    rows = [measure(smol, models.SMOLLM2.sha256), measure(gemma, models.GEMMA3.sha256), measure(*big_file())]
    print("| file | curl MB/s | hubside MB/s (verified) | ratio | target | met |")
    print("|---|---:|---:|---:|---|---|")
    for row in rows:
        met = "yes" if row["met"] else "NO"
        rates = f"{row['curl_mb_s']} | {row['hubside_mb_s']} | {row['ratio']}"
        print(f"| {row['model']} | {rates} | >= {TARGET} | {met} |")
    save_results("downloads", {"rounds": ROUNDS, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
