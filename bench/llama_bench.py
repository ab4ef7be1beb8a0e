"""Build llama.cpp's `llama-bench` and `llama-server` from the very source distribution of llama-cpp-python
that pip installed.

Same llama.cpp commit, same compiler flags (the Makefile's LLAMA_FLAGS) and, like llama-cpp-python, shared
libraries: the comparison is of the Python path against the C++ one, not of two builds. Each binary and its
libraries are cached under ~/.cache/hubside-bench (HUBSIDE_BENCH_CACHE overrides it).
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
    return _ensure("llama-bench", server=False)


def ensure_llama_server() -> Path:
    """The llama-server binary (its shared libraries beside it: run it with LD_LIBRARY_PATH=its folder)."""
    return _ensure("llama-server", server=True)


def cached_binary(target: str) -> Path:
    """Where `target` ("llama-bench" or "llama-server") lives once built; it may not exist yet."""
    flags = os.environ.get("LLAMA_FLAGS", "")
    # llama-bench's key is the one it always had, so that an existing cache stays valid.
    extra = "|server" if target == "llama-server" else ""
    key = hashlib.sha256(f"{llama_cpp.__version__}|{flags}|shared{extra}".encode()).hexdigest()[:12]
    return CACHE / f"{target}-{llama_cpp.__version__}-{key}" / target


def _ensure(target: str, *, server: bool) -> Path:
    binary = cached_binary(target)
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp_name:
        tmp = Path(tmp_name)
        version = llama_cpp.__version__
        print(f"Building {target} from llama-cpp-python {version} (a few minutes)...", flush=True)
        source = _llama_cpp_source(tmp)
        staging = _cmake_build(source, tmp / "build", target, server=server)
        try:
            staging.rename(binary.parent)
        except OSError:
            if not binary.exists():  # not another process that finished the same build first
                raise
    return binary


def _llama_cpp_source(tmp: Path) -> Path:
    """llama.cpp's source as vendored in llama-cpp-python's sdist of the installed version."""
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
    return source


def _cmake_build(source: Path, build: Path, target: str, *, server: bool) -> Path:
    """Configure and build one target; a folder holding the binary and its shared libraries."""
    flags = os.environ.get("LLAMA_FLAGS", "")
    env = {**os.environ, "CFLAGS": flags, "CXXFLAGS": flags}
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
            f"-DLLAMA_BUILD_SERVER={'ON' if server else 'OFF'}",
            "-DLLAMA_BUILD_TOOLS=ON",
        ],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    jobs = str(os.cpu_count() or 2)
    subprocess.run(
        ["cmake", "--build", str(build), "--target", target, "-j", jobs],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    staging = build.parent / "bin"
    shutil.copytree(build / "bin", staging)
    return staging


if __name__ == "__main__":
    print(ensure_llama_server() if "--server" in sys.argv else ensure_llama_bench())
