"""Many small valid GGUF files for library tests and the library benchmark.

Each is a real header (architecture, context length, file type and one small tensor) of a few hundred
bytes, written by the gguf package once and copied: 2,000 of them take well under a second to make.
"""

from __future__ import annotations

import tempfile
from functools import cache
from pathlib import Path

import numpy as np
from gguf import GGUFWriter

PER_FOLDER = 100  # files per sub-folder, as a library spread over several repos would be
Q4_0 = 2  # general.file_type


@cache
def tiny_gguf_bytes(context_length: int = 4096) -> bytes:
    """The bytes of a valid llama GGUF with 128 parameters (one F32 tensor) and this context length."""
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "tiny.gguf"
        writer = GGUFWriter(path, "llama")
        writer.add_name("tiny")
        writer.add_context_length(context_length)
        writer.add_file_type(Q4_0)
        writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def write_tiny_gguf(path: Path, context_length: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tiny_gguf_bytes(context_length))
    return path


def make_library(folder: Path, count: int) -> list[Path]:
    """`count` tiny models under `folder`, PER_FOLDER to a sub-folder, in the order a scan lists them."""
    return [
        write_tiny_gguf(folder / f"repo-{i // PER_FOLDER:03d}" / f"model-{i:05d}-Q4_0.gguf")
        for i in range(count)
    ]
