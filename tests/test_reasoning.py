"""Reasoning is told apart from the answer however the reply's text is cut into pieces."""

from __future__ import annotations

import pytest

from app.runtime.reasoning import (
    ReasoningFormat,
    reasoning_format,
    split_reply,
    splitter_for,
)
from tests.template_corpus import CORPUS


def _stream(fmt: ReasoningFormat, prompt: str, text: str, step: int) -> tuple[str, str]:
    splitter = splitter_for(fmt, prompt)
    parts = []
    for i in range(0, len(text), step):
        parts += splitter.feed(text[i : i + step])
    parts += splitter.flush()
    reasoning = "".join(t for r, t in parts if r)
    answer = "".join(t for r, t in parts if not r)
    return reasoning, answer


@pytest.mark.parametrize("step", [1, 2, 3, 7, 1000])
def test_think_blocks_split_at_any_piece_boundary(step: int) -> None:
    text = "<think>\nThe user wants 2+2. That is 4.\n</think>\n\nIt is **4**."
    assert _stream(ReasoningFormat.THINK, "", text, step) == (
        "\nThe user wants 2+2. That is 4.\n",
        "It is **4**.",
    )
    # Templates that open the block themselves (Qwen3, QwQ, R1-0528): the reply starts inside it.
    opened = "<|im_start|>assistant\n<think>\n"
    assert _stream(ReasoningFormat.THINK, opened, "Hmm. 4.</think>\n\n4", step) == ("Hmm. 4.", "4")
    # No block: all answer, untouched, and a lone '<' is not held forever.
    assert _stream(ReasoningFormat.THINK, "", "a < b, <thinking> is not a tag", step) == (
        "",
        "a < b, <thinking> is not a tag",
    )
    # Cut off while thinking: what came is reasoning, the answer is empty.
    assert _stream(ReasoningFormat.THINK, "", "<think>still going </thi", step) == ("still going </thi", "")


@pytest.mark.parametrize("step", [1, 4, 1000])
def test_harmony_channels_split_at_any_piece_boundary(step: int) -> None:
    text = (
        "<|channel|>analysis<|message|>User asks capital. Paris.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>The capital is Paris."
    )
    assert _stream(ReasoningFormat.HARMONY, "", text, step) == (
        "User asks capital. Paris.",
        "The capital is Paris.",
    )
    plain = "A model that does not speak harmony at all. " * 8
    assert _stream(ReasoningFormat.HARMONY, "", plain, step)[1] == plain


def test_the_format_is_read_from_real_templates() -> None:
    harmony = (CORPUS / "openai-gpt-oss-120b.jinja").read_text()
    qwen3 = (CORPUS / "Qwen-Qwen3-0.6B.jinja").read_text()
    assert reasoning_format(harmony) is ReasoningFormat.HARMONY
    assert reasoning_format(qwen3) is ReasoningFormat.THINK
    assert reasoning_format(None) is ReasoningFormat.THINK


def test_split_reply_gives_reasoning_and_answer_of_a_whole_text() -> None:
    assert split_reply("<think>a</think>b") == ("a", "b")
    assert split_reply("just an answer") == ("", "just an answer")


@pytest.mark.parametrize("step", [1, 5, 1000, 10_000])
def test_a_harmony_header_that_never_ends_is_answer_text(step: int) -> None:
    # "<|" opens what looks like a header, but no "<|message|>" follows: the text is the answer.
    text = "<|start|>assistant " + "x" * 2000
    assert _stream(ReasoningFormat.HARMONY, "", text, step) == ("", text)
    # ... and a real header after it still opens a channel
    later = text + "<|end|><|start|>assistant<|channel|>final<|message|>Done."
    assert _stream(ReasoningFormat.HARMONY, "", later, step) == ("", text + "Done.")


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_a_plain_answer_with_a_foreign_marker_is_kept_by_a_harmony_splitter(step: int) -> None:
    short = "The answer is 4.<|im_end|>"
    assert _stream(ReasoningFormat.HARMONY, "", short, step) == ("", short)
    assert _stream(ReasoningFormat.HARMONY, "", "Hi", step) == ("", "Hi")
    long = "Sure.<|im_end|>\n" + "More text. " * 200
    assert _stream(ReasoningFormat.HARMONY, "", long, step) == ("", long)
    # a reply cut inside a real header shows no marker soup
    cut = "<|channel|>analysis<|message|>Think.<|end|><|start|>assistant<|channel|>fin"
    assert _stream(ReasoningFormat.HARMONY, "", cut, step) == ("Think.", "")


def test_a_harmony_splitter_keeps_little_while_it_waits_for_a_header() -> None:
    from app.runtime.reasoning import HarmonySplitter

    splitter = HarmonySplitter()
    for _ in range(5000):
        splitter.feed("<|x ")
        assert len(splitter.pending) < 300  # searched again on every piece: it must stay short
