"""The sampler that hands llama.cpp's chain only the candidates it could keep picks exactly what the chain
picks over the whole vocabulary: same tokens, same random draws, on the real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.runtime.gguf_header import read_header
from app.runtime.protocol import LoadParams, SamplingParams
from app.runtime.sampling import TokenSampler, build_chain
from app.runtime.session import LlamaSession

SETTINGS = {
    "default": SamplingParams(seed=7),
    "greedy": SamplingParams(temperature=0, repeat_penalty=1.0),
    "greedy with penalty": SamplingParams(temperature=0, repeat_penalty=1.3, seed=7),
    "hot and wide": SamplingParams(temperature=1.8, top_k=200, top_p=1.0, min_p=0.0, seed=11),
    "top-k 1": SamplingParams(top_k=1, seed=3),
    "no top-k": SamplingParams(top_k=0, seed=5),
}


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def session(request: pytest.FixtureRequest) -> LlamaSession:
    path: Path = request.getfixturevalue(f"{request.param}_path")
    return LlamaSession(LoadParams(path, n_ctx=512, n_threads=2), read_header(path))


@pytest.mark.parametrize("name", SETTINGS)
def test_the_same_tokens_as_the_chain_over_the_whole_vocabulary(session: LlamaSession, name: str) -> None:
    ll, settings = session.ll, SETTINGS[name]
    fast = TokenSampler(ll, session.ctx, session.n_vocab, settings)
    reference, _ = build_chain(ll, settings, session.n_vocab)
    prompt = session.tokenize("Once upon a time, in a village by the sea,", add_bos=session.add_bos)
    ll.llama_memory_clear(session.memory, True)
    session._decode(prompt, 0)
    picked = []
    try:
        for pos in range(len(prompt), len(prompt) + 150):
            if fast.keep > 1:
                _check_candidates(fast, session)
            token = fast.sample()  # reads the logits and leaves them as they are
            if fast.keep > 1:  # the chain ran on the candidates, and its top-k cut them to k
                assert 0 < fast.array.size <= fast.keep
            assert token == ll.llama_sampler_sample(reference, session.ctx, -1), f"token {len(picked)}"
            picked.append(token)
            session._decode((token,), pos)
    finally:
        fast.close()
        ll.llama_sampler_free(reference)
    assert len(set(picked)) > 10  # a real reply, not one token over and over
    searched = settings.top_k > 0 and session.n_vocab >= 65536  # below, llama.cpp's own copy is cheaper
    expected_keep = 1 if name in ("greedy", "top-k 1") else settings.top_k if searched else 0
    assert fast.keep == expected_keep


def test_candidates_of_a_vocabulary_that_does_not_fill_the_rows(smollm2_path: Path) -> None:
    session = LlamaSession(LoadParams(smollm2_path, n_ctx=512, n_threads=2), read_header(smollm2_path))
    ll = session.ll
    session._decode(session.tokenize("The weather today is", add_bos=session.add_bos), 0)
    n_vocab = session.n_vocab - 7  # 31 tokens past the last full column
    fast = TokenSampler(ll, session.ctx, n_vocab, SamplingParams())
    fast.keep = 40
    logits = fast.logits()
    logits[n_vocab - 3] = logits.max() + 1  # the best token lies in the tail
    _check_candidates(fast, session, n_vocab)
    assert n_vocab - 3 in fast.candidates()[0]
    fast.close()


def _check_candidates(fast: TokenSampler, session: LlamaSession, n_vocab: int | None = None) -> None:
    """The candidates hold every token whose logit reaches the k-th largest, and not many more."""
    ll = session.ll
    n_vocab = n_vocab or session.n_vocab
    logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(session.ctx, -1), shape=(n_vocab,))
    assert np.shares_memory(fast.logits(), logits)  # read in place, never copied
    ids, values = fast.candidates()
    assert list(values) == list(logits[ids])
    kth = np.sort(logits)[-fast.keep]
    assert set(np.flatnonzero(logits >= kth).tolist()) <= set(ids.tolist())
    assert list(ids) == sorted(ids)  # the vocabulary's order, as the chain would see it
    assert len(ids) <= 2 * fast.keep + 32
