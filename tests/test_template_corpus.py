"""Every template of the corpus renders byte for byte what transformers renders (tests/template_corpus.py)."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from app.runtime.templates import render_template
from tests.template_corpus import cases, load_expected, outcome
from tests.template_reference import FIXED_NOW, render_reference

CASES = list(cases())
EXPECTED = load_expected()
ours = functools.partial(render_template, now=lambda: FIXED_NOW)


def test_the_corpus_covers_at_least_forty_families_and_every_kind_of_conversation() -> None:
    assert len(EXPECTED) >= 40
    kinds = {case for _, case, _, _ in CASES}
    assert kinds == {"system_user", "turns", "unicode", "tools"}
    assert sum(1 for _, case, _, _ in CASES if case == "tools") >= 30
    rendered = sum(1 for t, c, _, _ in CASES if "text" in EXPECTED[t][c])
    assert rendered >= 0.9 * len(CASES)


@pytest.mark.parametrize(
    ("template", "case", "source", "kw"), CASES, ids=[f"{t}/{c}" for t, c, _, _ in CASES]
)
def test_the_sandbox_renders_what_transformers_renders(
    template: str, case: str, source: str, kw: Any
) -> None:
    expected = EXPECTED[template][case]
    assert outcome(render_reference, source, kw["messages"], tools=kw["tools"]) == expected
    assert outcome(ours, source, kw["messages"], tools=kw["tools"]) == expected
