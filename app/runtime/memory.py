"""How much memory a model needs at a context length, and how much this machine has free.

Estimate = weights (the file sizes) + KV cache + a compute margin. The KV cache holds, for every layer,
n_head_kv x (key_length + value_length) elements per token of context. Sliding-window layers are counted at
the full context, because llama-cpp-python keeps a full-size SWA cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import psutil

from app.errors import AppError, ErrorKind
from app.runtime.gguf_header import GGUFHeader, shard_files
from app.units import GIB, gb

CPU_MARGIN = GIB // 2  # compute buffers, scratch, the engine process itself
GPU_MARGIN = GIB  # per GPU: CUDA context and compute buffers
KV_BYTES_PER_ELEMENT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    margin: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.margin

    def parts(self) -> str:
        return (
            f"weights {gb(self.weights)} + context cache {gb(self.kv_cache)} + "
            f"compute margin {gb(self.margin)}"
        )


def _per_layer(value: Any, n_layers: int) -> list[int]:
    if isinstance(value, list):
        return [int(v) for v in value][:n_layers]
    return [int(value or 0)] * n_layers


def kv_cache_bytes(header: GGUFHeader, n_ctx: int, type_k: str = "f16", type_v: str = "f16") -> int:
    n_layers = header.block_count
    n_embd = int(header.arch_value("embedding_length", 0) or 0)
    n_head = max(_per_layer(header.arch_value("attention.head_count", 0), n_layers) or [0])  # maybe per layer
    head_dim = n_embd // n_head if n_head else 0
    key_length = int(header.arch_value("attention.key_length", head_dim) or head_dim)
    value_length = int(header.arch_value("attention.value_length", head_dim) or head_dim)
    kv_heads = _per_layer(header.arch_value("attention.head_count_kv", n_head), n_layers)
    per_token = key_length * KV_BYTES_PER_ELEMENT[type_k] + value_length * KV_BYTES_PER_ELEMENT[type_v]
    # Every layer caches all n_ctx tokens, sliding-window layers too: llama-cpp-python keeps llama.cpp's
    # full-size SWA cache (swa_full), which the reuse of a chat's cached prefix needs.
    return int(sum(heads * per_token * n_ctx for heads in kv_heads))


def estimate(
    header: GGUFHeader,
    n_ctx: int,
    type_k: str = "f16",
    type_v: str = "f16",
    gpu: bool = False,
    weights: int | None = None,
) -> MemoryEstimate:
    """Weights (the files' sizes: given, for a remote model) + KV cache at `n_ctx` + a compute margin."""
    if weights is None:
        weights = sum(p.stat().st_size for p in shard_files(header.path) if p.exists())
    margin = GPU_MARGIN if gpu else CPU_MARGIN
    return MemoryEstimate(weights, kv_cache_bytes(header, n_ctx, type_k, type_v), margin)


def physical_cores() -> int:
    """Physical cores (not hyper-threads), which is what llama.cpp runs fastest on."""
    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def free_ram() -> int:
    """Memory available to a new process without swapping (MemAvailable on Linux)."""
    return int(psutil.virtual_memory().available)


def _nvidia_smi(query: str) -> str | None:
    """The first GPU's answer to an nvidia-smi query (CSV, no header), or None where it cannot say."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.strip().splitlines()
    return lines[0].strip() if lines else None


def free_vram() -> int | None:
    """Free memory of the first NVIDIA GPU, or None where nvidia-smi is not there to say."""
    answer = _nvidia_smi("memory.free")
    try:
        return int(answer) * 1024**2 if answer else None
    except ValueError:
        return None


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name, or None."""
    return _nvidia_smi("name")


def gpu_layers_that_fit(need: MemoryEstimate, n_layers: int, vram_free: int) -> int:
    """Most layers to offload that leave the GPU margin free: weights per layer ~ weights / (layers + 1)
    (the +1 is the output layer), and each offloaded layer brings its share of the KV cache."""
    if n_layers <= 0:
        return 0
    per_layer = need.weights / (n_layers + 1) + need.kv_cache / n_layers
    room = vram_free - GPU_MARGIN
    if room >= per_layer * (n_layers + 1):
        return n_layers + 1  # everything, output layer included
    return max(0, min(n_layers, int(room // per_layer)))


def check_fits(need: MemoryEstimate, available: int, where: str = "RAM") -> None:
    """Refuse a load that cannot fit, in the words the UI shows."""
    if need.total > available:
        raise AppError(
            ErrorKind.OUT_OF_MEMORY,
            f"Not enough memory: needs about {gb(need.total)}, {gb(available)} free ({where}). "
            "Choose a smaller context or model, or force the load.",
            need.parts(),
        )
