"""Before llama.cpp sees a file: the header check and the memory estimate (runs in the engine process)."""

from __future__ import annotations

from dataclasses import replace

from app.runtime.gguf_header import GGUFHeader, read_header
from app.runtime.memory import check_fits, estimate, free_ram, free_vram, gpu_layers_that_fit
from app.runtime.protocol import LoadParams


def check_load(params: LoadParams, *, force: bool = False) -> tuple[GGUFHeader, LoadParams]:
    """Read and check the header, and refuse a load that cannot fit (unless forced). Returns the header and
    the parameters with the context length and the GPU layers decided."""
    header = read_header(params.model_path)
    n_ctx = params.context_for(header)
    gpu = params.n_gpu_layers != 0
    vram = free_vram() if gpu else None
    # every sequence has n_ctx cells of its own
    need = estimate(
        header, n_ctx * params.n_parallel, params.type_k, params.type_v, gpu=gpu and vram is not None
    )
    n_gpu_layers = params.n_gpu_layers
    if n_gpu_layers is None and vram is not None:  # auto, where the GPU's free memory is known
        n_gpu_layers = gpu_layers_that_fit(need, header.block_count, vram)
    if not force:
        if vram is not None and n_gpu_layers is not None and n_gpu_layers > header.block_count:
            check_fits(need, vram, "VRAM")
        else:
            check_fits(need, free_ram(), "RAM")  # CPU or partial offload: RAM holds the weights (mmap)
    return header, replace(params, n_ctx=n_ctx, n_gpu_layers=n_gpu_layers)
