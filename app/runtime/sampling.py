"""Picking the next token: llama.cpp's sampler chain, handed only the candidates it could keep.

`llama_sampler_sample` copies every logit into a candidate list before the chain runs: 0.4 ms a token for
Gemma 3's 262k-token vocabulary, 2 % of a token's time on two cores. Where the chain's first stage keeps at
most k tokens (top-k, or greedy's one), NumPy finds a few more than those k in about 0.1 ms (0.03 ms for
SmolLM2's 49k) and the chain runs on them: the same stages in the same order see the same k tokens, so the
choice and the random draws are the same (a test compares the two token by token).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from app.runtime.protocol import SamplingParams

# llama_token_data: {int32 id; float logit; float p;}
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
_ROWS = 32


def build_chain(ll: Any, params: SamplingParams, n_vocab: int) -> tuple[Any, int]:
    """llama.cpp's sampler chain for these settings, and how many tokens its first stage keeps at most
    (0: the chain needs the whole vocabulary). Top-k runs first so that the repetition penalty and the rest
    work on k candidates (llama.h advises it); plain greedy is an argmax."""
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    greedy = params.temperature <= 0
    penalised = params.repeat_penalty != 1.0
    stages = []
    keep = 1 if greedy and not penalised else 0
    if params.top_k > 0 and (penalised or not greedy):
        stages.append(ll.llama_sampler_init_top_k(params.top_k))
        keep = params.top_k
    if penalised:
        stages.append(
            ll.llama_sampler_init_penalties(n_vocab, params.repeat_last_n, params.repeat_penalty, 0.0, 0.0)
        )
    if greedy:
        stages.append(ll.llama_sampler_init_greedy())
    else:
        seed = params.seed if params.seed is not None else ll.LLAMA_DEFAULT_SEED
        stages += [
            ll.llama_sampler_init_top_p(params.top_p, 1),
            ll.llama_sampler_init_min_p(params.min_p, 1),
            ll.llama_sampler_init_temp(params.temperature),
            ll.llama_sampler_init_dist(seed),
        ]
    for stage in stages:
        ll.llama_sampler_chain_add(chain, stage)
    return chain, keep if keep <= n_vocab // (4 * _ROWS) else 0


class TokenSampler:
    """One reply's sampler: owns the chain and the candidate buffer; `sample()` after each decode."""

    def __init__(self, ll: Any, ctx: Any, n_vocab: int, params: SamplingParams) -> None:
        self.ll, self.ctx, self.n_vocab = ll, ctx, n_vocab
        self.chain, self.keep = build_chain(ll, params, n_vocab)
        # The vocabulary seen as _ROWS rows: the largest logit of each column is one token's logit, so
        # if k columns reach a value t, at least k tokens do, and the k largest logits are all >= t.
        self.columns = n_vocab // _ROWS
        self.row_starts = np.arange(_ROWS)[:, None] * self.columns
        self.buffer = np.zeros(n_vocab, dtype=_TOKEN_DATA)
        data = self.buffer.ctypes.data_as(ctypes.POINTER(ll.llama_token_data))
        self.array = ll.llama_token_data_array(data, 0, -1, False)
        self.array_ref = ctypes.byref(self.array)

    def close(self) -> None:
        if self.chain is not None:
            self.ll.llama_sampler_free(self.chain)
            self.chain = None

    def candidates(self, logits: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, Any]:
        """Token ids, ascending, that include the `keep` largest logits (and few others)."""
        if self.keep == 1:
            return np.array([logits.argmax()])
        whole = _ROWS * self.columns
        column_max = logits[:whole].reshape(_ROWS, self.columns).max(axis=0)
        floor = np.partition(column_max, -self.keep)[-self.keep]
        ids = (self.row_starts + np.flatnonzero(column_max >= floor)).ravel()
        ids = ids[logits[ids] >= floor]
        if whole < self.n_vocab:  # the last few tokens, outside the rows
            ids = np.concatenate([ids, whole + np.flatnonzero(logits[whole:] >= floor)])
        return ids

    def sample(self) -> int:
        """The next token from the logits of the last decoded position (the chain records it)."""
        ll = self.ll
        if not self.keep:
            return int(ll.llama_sampler_sample(self.chain, self.ctx, -1))
        logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))
        ids = self.candidates(logits)
        n = len(ids)
        chosen = self.buffer[:n]
        chosen["id"] = ids
        chosen["logit"] = logits[ids]
        chosen["p"] = 0.0
        array = self.array
        array.size, array.selected, array.sorted = n, -1, False
        ll.llama_sampler_apply(self.chain, self.array_ref)
        token = int(array.data[array.selected].id)
        ll.llama_sampler_accept(self.chain, token)
        return token
