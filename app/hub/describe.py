"""What the Discover page says about search results and a repo, and the rules behind its choices, kept
Qt-free so that they are tested without a window and the CLI can reuse them.
"""

from __future__ import annotations

from app.hub.client import ModelDetails
from app.hub.fit import Machine
from app.hub.quants import RepoFile
from app.runtime.memory import CPU_MARGIN
from app.units import gb

CONTEXT_STEPS = [512 * 2**i for i in range(10)]  # 512 ... 262144: the context slider's stops
FIT_BITS = 4.5  # "fits this machine": a Q4_K_M of the model would


def short_count(n: int | None) -> str:
    """1234567 -> '1.2M'; None (not known) -> ''."""
    if n is None:
        return ""
    for size, suffix in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= size:
            return f"{n / size:.1f}{suffix}"
    return str(n)


def max_params_that_fit(machine: Machine) -> int:
    """The most parameters a model can have for its Q4_K_M to fit in this machine's larger free memory."""
    room = max(machine.free_vram or 0, machine.free_ram) - CPU_MARGIN
    return max(0, int(room * 8 / FIT_BITS))


def cap_to_machine(max_params: int | None, machine: Machine) -> int:
    """The user's upper bound on parameters (None: any), lowered to what fits this machine."""
    fitting = max_params_that_fit(machine)
    return min(max_params or fitting, fitting)


def top_context_step(context_length: int) -> int:
    """The index of the largest context step within a model's trained context: the slider stops there."""
    return max(i for i, n in enumerate(CONTEXT_STEPS) if n <= max(context_length, 512))


def results_status(shown: int, more: bool, capped: bool = False) -> str:
    """The line under the results; `capped`: the search stopped at its budget with repos left to look at."""
    count = f"{shown} model" + ("" if shown == 1 else "s")
    if capped:
        return f"{count} so far; more repos to look through."
    return f"{count}{' (scroll for more)' if more else ''}" if shown else "No GGUF models found."


def model_facts(details: ModelDetails) -> str:
    """One line of a repo's facts, and what to do if it is gated."""
    params = f"{details.parameters / 1e9:.2f} B parameters" if details.parameters else "parameters unknown"
    facts = [
        details.architecture or "architecture unknown",
        params,
        f"trained context {details.context_length:,}" if details.context_length else "context unknown",
        f"license {details.license}" if details.license else "no license given",
        f"{details.downloads:,} downloads",
        f"{details.likes:,} likes",
        f"updated {details.updated[:10]}",
    ]
    gated = (
        "\nGated: accept the license on the Hub, then add your token (Hub token…)." if details.gated else ""
    )
    return " · ".join(facts) + gated


def estimate_note(n_ctx: int, machine: Machine, header_read: bool, projector: RepoFile | None) -> str:
    """What the fit estimates count, and the free memory they are measured against."""
    vram = f", {gb(machine.free_vram)} free VRAM" if machine.free_vram is not None else ", no GPU seen"
    what = (
        "weights + context cache (from the model's layers and heads) + compute margin"
        if header_read
        else "weights + compute margin; the context cache is added once the header is read"
    )
    vision = (
        f" Each variant comes with the vision projector {projector.path} ({gb(projector.size)})."
        if projector
        else ""
    )
    return (
        f"Estimates at {n_ctx:,} tokens of context: {what}; this machine has "
        f"{gb(machine.free_ram)} free RAM{vram}.{vision}"
    )
