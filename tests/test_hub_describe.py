"""The Discover page's words and rules, without a window."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.hub.client import ModelDetails
from app.hub.describe import (
    CONTEXT_STEPS,
    cap_to_machine,
    estimate_note,
    max_params_that_fit,
    model_facts,
    results_status,
    short_count,
    top_context_step,
)
from app.hub.fit import Machine
from app.hub.quants import RepoFile
from app.runtime.memory import CPU_MARGIN, GIB

ROOM_FOR_8B = CPU_MARGIN + 4_500_000_000  # 8e9 parameters at 4.5 bits a weight, plus the margin


SMOL = ModelDetails(
    id="a/m-GGUF", sha="0" * 40, author="a", license="apache-2.0", gated=False, downloads=12345, likes=67,
    updated="2026-11-20T08:00:00", parameters=134_515_008, architecture="llama", context_length=8192,
    chat_template=None, files=(),
)  # fmt: skip


@pytest.mark.parametrize(
    ("n", "shown"),
    [(None, ""), (0, "0"), (999, "999"), (1500, "1.5K"), (134_515_008, "134.5M"), (7 * 10**9, "7.0B")],
)
def test_short_count(n: int | None, shown: str) -> None:
    assert short_count(n) == shown


def test_fits_this_machine_is_the_larger_memory_less_the_margin() -> None:
    assert max_params_that_fit(Machine(ROOM_FOR_8B, None)) == 8 * 10**9
    assert max_params_that_fit(Machine(GIB, ROOM_FOR_8B)) == 8 * 10**9  # the GPU's, when larger
    assert max_params_that_fit(Machine(CPU_MARGIN // 2, None)) == 0  # never negative


def test_the_users_bound_is_lowered_to_what_fits_never_raised() -> None:
    machine = Machine(ROOM_FOR_8B, None)
    assert cap_to_machine(None, machine) == 8 * 10**9
    assert cap_to_machine(3 * 10**9, machine) == 3 * 10**9
    assert cap_to_machine(70 * 10**9, machine) == 8 * 10**9


def test_the_context_slider_stops_at_the_models_own_context() -> None:
    assert CONTEXT_STEPS[top_context_step(8192)] == 8192
    assert CONTEXT_STEPS[top_context_step(10_000)] == 8192
    assert top_context_step(100) == 0  # 512 at least
    assert top_context_step(10**7) == len(CONTEXT_STEPS) - 1


def test_results_status() -> None:
    assert results_status(0, False) == "No GGUF models found."
    assert results_status(1, False) == "1 model"
    assert results_status(100, True) == "100 models (scroll for more)"
    assert results_status(0, False, capped=True) == "0 models so far; more repos to look through."


def test_model_facts_and_what_a_gated_repo_needs() -> None:
    assert model_facts(SMOL) == (
        "llama · 0.13 B parameters · trained context 8,192 · license apache-2.0 · 12,345 downloads · "
        "67 likes · updated 2026-11-20"
    )
    unknown = model_facts(replace(SMOL, parameters=None, architecture=None, context_length=None, license=""))
    assert unknown.startswith("architecture unknown · parameters unknown · context unknown · no license")
    gated = model_facts(replace(SMOL, gated=True))
    assert gated.endswith("\nGated: accept the license on the Hub, then add your token (Hub token…).")


def test_the_estimate_note_says_what_is_counted_and_against_what() -> None:
    before = estimate_note(8192, Machine(16 * GIB, None), header_read=False, projector=None)
    assert before == (
        "Estimates at 8,192 tokens of context: weights + compute margin; the context cache is added once "
        "the header is read; this machine has 16.0 GB free RAM, no GPU seen."
    )
    after = estimate_note(
        512, Machine(16 * GIB, 8 * GIB), header_read=True, projector=RepoFile("mmproj-F16.gguf", GIB)
    )
    assert "(from the model's layers and heads)" in after and ", 8.0 GB free VRAM." in after
    assert after.endswith(" Each variant comes with the vision projector mmproj-F16.gguf (1.0 GB).")
