"""The generation loop itself, in this process, with a stop flag under the test's control."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from app.runtime.gguf_header import read_header
from app.runtime.protocol import Event, GenerateRequest, LoadParams, Piece
from app.runtime.session import LlamaSession


@pytest.fixture(scope="module")
def session(tiny_model: Path) -> LlamaSession:
    return LlamaSession(LoadParams(tiny_model, n_ctx=512, n_batch=64), read_header(tiny_model))


def _stop_on_call(n: int) -> Callable[[], bool]:
    """A stop flag that is first seen set on its n-th check."""
    calls = [0]

    def stopped() -> bool:
        calls[0] += 1
        return calls[0] >= n

    return stopped


def test_a_stop_seen_before_a_token_means_no_more_tokens(session: LlamaSession) -> None:
    pieces: list[Event] = []
    stopped = _stop_on_call(1 + 8)  # 1 check for the 1-token prompt, then 1 before each token
    request = GenerateRequest(1, prompt_tokens=(1,), max_tokens=100, ignore_eos=True, reuse_cache=False)
    stats = session.generate(request, pieces.append, stopped)
    assert stats.finish_reason == "stopped"
    assert stats.completion_tokens == 7  # the 8th check saw the stop: not one token more
    assert all(isinstance(p, Piece) for p in pieces)
    assert sum(len(p.text) for p in pieces if isinstance(p, Piece)) > 0
    assert max(p.tokens for p in pieces if isinstance(p, Piece)) == 7


def test_a_stop_during_the_prompt_ends_within_one_batch(session: LlamaSession) -> None:
    pieces: list[Event] = []
    stopped = _stop_on_call(3)
    prompt = tuple(range(1000, 1400))  # 400 tokens: 7 batches of 64
    request = GenerateRequest(2, prompt_tokens=prompt, max_tokens=10, reuse_cache=False)
    stats = session.generate(request, pieces.append, stopped)
    assert stats.finish_reason == "stopped"
    assert stats.completion_tokens == 0 and not pieces
    assert len(session.cached) == 128  # two batches were computed; the third was never started
    assert (stats.prompt_eval_tokens, stats.prompt_tokens) == (128, 400)


def test_pieces_are_batched_but_the_first_one_is_not(session: LlamaSession) -> None:
    pieces: list[Event] = []
    request = GenerateRequest(3, prompt_tokens=(1,), max_tokens=60, ignore_eos=True, reuse_cache=False)
    stats = session.generate(request, pieces.append, lambda: False)
    texts = [p for p in pieces if isinstance(p, Piece)]
    assert texts[0].tokens <= 2  # sent as soon as there was text
    assert texts[-1].tokens == stats.completion_tokens == 60
    # Cut at max tokens: the last token's logits would never be used, so it is not decoded.
    assert len(session.cached) == 1 + 59
    assert len(texts) <= 60
