"""Will this variant run here? Weights + KV cache at the chosen context + a compute margin, against free RAM
and VRAM, with the numbers behind the verdict.

With the header read (its layer, head and KV-head counts) the KV cache is computed; before that, the
estimate is the weights alone (file sizes, or parameters x bits per weight) plus the margin, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.hub.quants import Variant
from app.runtime.gguf_header import GGUFHeader
from app.runtime.memory import (
    CPU_MARGIN,
    GPU_MARGIN,
    MemoryEstimate,
    estimate,
    free_ram,
    free_vram,
    gpu_layers_that_fit,
)
from app.units import gb

FULL_GPU, PARTIAL_GPU, CPU_ONLY, WONT_FIT = "full GPU", "partial GPU", "CPU only", "won't fit"
USUAL_DEFAULT = "Q4_K_M"


@dataclass(frozen=True)
class Machine:
    free_ram: int
    free_vram: int | None  # None: no GPU that we can see

    @classmethod
    def now(cls) -> Machine:
        return cls(free_ram(), free_vram())


@dataclass(frozen=True)
class Fit:
    verdict: str  # FULL_GPU, PARTIAL_GPU, CPU_ONLY or WONT_FIT
    need: MemoryEstimate
    gpu_layers: int = 0
    with_header: bool = True  # False: the KV cache is not counted yet

    @property
    def fits_fully(self) -> bool:
        return self.verdict in (FULL_GPU, CPU_ONLY)

    @property
    def label(self) -> str:
        return f"{PARTIAL_GPU} ({self.gpu_layers} layers)" if self.verdict == PARTIAL_GPU else self.verdict

    def explain(self) -> str:
        """What the estimate includes, in numbers."""
        if self.with_header:
            return f"needs about {gb(self.need.total)}: {self.need.parts()}"
        return (
            f"needs at least {gb(self.need.total)}: weights {gb(self.need.weights)} + compute margin "
            f"{gb(self.need.margin)}; the context cache is added once the model's header is read"
        )


def weights_bytes(variant: Variant, parameters: int | None) -> int:
    """The files' sizes; where the Hub gave none, parameters x bits per weight."""
    if variant.size:
        return variant.size
    bits = variant.bits_per_weight(None)
    return int(parameters * bits / 8) if parameters and bits else 0


def fit_variant(
    variant: Variant, header: GGUFHeader | None, n_ctx: int, machine: Machine, parameters: int | None = None
) -> Fit:
    weights = weights_bytes(variant, parameters)
    gpu = machine.free_vram is not None
    if header is not None:
        need = estimate(header, n_ctx, gpu=gpu, weights=weights)
        n_layers = header.block_count
    else:
        need = MemoryEstimate(weights, 0, GPU_MARGIN if gpu else CPU_MARGIN)
        n_layers = 0
    known = header is not None
    if machine.free_vram is not None:
        if need.total <= machine.free_vram:
            return Fit(FULL_GPU, need, n_layers + 1, known)
        layers = gpu_layers_that_fit(need, n_layers, machine.free_vram) if n_layers else 0
        on_cpu = need.weights * (1 - layers / (n_layers + 1)) + CPU_MARGIN if n_layers else need.total
        if layers > 0 and on_cpu <= machine.free_ram:
            return Fit(PARTIAL_GPU, need, layers, known)
    cpu_need = MemoryEstimate(need.weights, need.kv_cache, CPU_MARGIN)
    if cpu_need.total <= machine.free_ram:
        return Fit(CPU_ONLY, cpu_need, 0, known)
    return Fit(WONT_FIT, cpu_need, 0, known)


def recommended(variants: list[Variant], fits: list[Fit]) -> Variant | None:
    """The largest quantized variant that fits fully (unquantized F16/BF16/F32 only when nothing else does);
    Q4_K_M, the usual default, when several are the same size."""
    fitting = [v for v, f in zip(variants, fits, strict=True) if f.fits_fully]
    quantized = [v for v in fitting if not v.base_quant.startswith(("F16", "BF16", "F32"))]
    choices = quantized or fitting
    if not choices:
        return None
    return max(choices, key=lambda v: (v.size, v.base_quant == USUAL_DEFAULT))
