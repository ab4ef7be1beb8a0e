"""Starter models for the first run: well-known instruct models, with the size of their Q4_K_M file, and a
pick of those that fit this machine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.runtime.memory import CPU_MARGIN, GIB, physical_cores

KV_ALLOWANCE = GIB // 2  # a few thousand tokens of context for models of this size


@dataclass(frozen=True)
class Starter:
    repo: str
    label: str
    q4_bytes: int  # the Q4_K_M file

    def fits(self, free_bytes: int) -> bool:
        return self.q4_bytes + KV_ALLOWANCE + CPU_MARGIN <= free_bytes


STARTERS = (
    Starter(
        "bartowski/SmolLM2-1.7B-Instruct-GGUF", "SmolLM2 1.7B: small, quick, for any machine", 1_060_000_000
    ),
    Starter("bartowski/Llama-3.2-3B-Instruct-GGUF", "Llama 3.2 3B: a good all-rounder", 2_020_000_000),
    Starter("bartowski/Qwen_Qwen3-8B-GGUF", "Qwen3 8B: strong at code and languages, thinks", 5_030_000_000),
    Starter("bartowski/google_gemma-3-12b-it-GGUF", "Gemma 3 12B: careful writing", 7_300_000_000),
    Starter(
        "bartowski/mistralai_Mistral-Small-3.2-24B-Instruct-2506-GGUF",
        "Mistral Small 3.2 24B: for 24 GB and up",
        14_330_000_000,
    ),
)


def suggestions(free_bytes: int, count: int = 3) -> list[Starter]:
    """The largest starters that fit, smallest first (the first one always fits if any does)."""
    fitting = [s for s in STARTERS if s.fits(free_bytes)]
    return fitting[-count:]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({physical_cores()} cores)"
    except OSError:
        pass
    return f"{os.cpu_count() or '?'} logical cores"
