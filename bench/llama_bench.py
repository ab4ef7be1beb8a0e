"""Build llama.cpp's `llama-bench` from the very source distribution of llama-cpp-python that pip installed.

Same llama.cpp commit, same compiler flags (the Makefile's LLAMA_FLAGS) and, like llama-cpp-python, shared
libraries: the comparison is of the Python path against the C++ one, not of two builds. The binary and its
libraries are cached under ~/.cache/hubside-bench.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import llama_cpp

CACHE = Path(os.environ.get("HUBSIDE_BENCH_CACHE", Path.home() / ".cache" / "hubside-bench"))


def ensure_llama_bench() -> Path:
    """The llama-bench binary (its shared libraries beside it: run it with LD_LIBRARY_PATH=its folder)."""
    flags = os.environ.get("LLAMA_FLAGS", "")
    key = hashlib.sha256(f"{llama_cpp.__version__}|{flags}|shared".encode()).hexdigest()[:12]
    folder = CACHE / f"llama-bench-{llama_cpp.__version__}-{key}"
    binary = folder / "llama-bench"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp_name:
        tmp = Path(tmp_name)
        print(
            f"Building llama-bench from llama-cpp-python {llama_cpp.__version__} (a few minutes)...",
            flush=True,
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                str(tmp),
                f"llama-cpp-python=={llama_cpp.__version__}",
            ],
            check=True,
        )
        (sdist,) = tmp.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        (source,) = tmp.glob("llama_cpp_python-*/vendor/llama.cpp")
        env = {**os.environ, "CFLAGS": flags, "CXXFLAGS": flags}
        build = tmp / "build"
        subprocess.run(
            [
                "cmake",
                "-S",
                str(source),
                "-B",
                str(build),
                "-DCMAKE_BUILD_TYPE=Release",
                "-DBUILD_SHARED_LIBS=ON",
                "-DLLAMA_CURL=OFF",
                "-DLLAMA_OPENSSL=OFF",
                "-DLLAMA_BUILD_TESTS=OFF",
                "-DLLAMA_BUILD_EXAMPLES=OFF",
                "-DLLAMA_BUILD_SERVER=OFF",
                "-DLLAMA_BUILD_TOOLS=ON",
            ],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        jobs = str(os.cpu_count() or 2)
        subprocess.run(
            ["cmake", "--build", str(build), "--target", "llama-bench", "-j", jobs],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        staging = tmp / "bin"
        shutil.copytree(build / "bin", staging)
        staging.rename(folder)
    return binary


if __name__ == "__main__":
    print(ensure_llama_bench())
