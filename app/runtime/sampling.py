"""Picking the next token: llama.cpp's sampler chain, handed only the candidates it could keep.

`llama_sampler_sample` copies every logit into a candidate list before the chain runs: right after a
decode that is 0.7 ms a token for Gemma 3's 262k-token vocabulary, 3 % of a token's time on two cores.
Where the chain's first stage keeps at most k tokens, NumPy finds them first: greedy's argmax (0.07-0.13
ms), or for top-k a few more than the k largest logits (0.2-0.3 ms, so only for vocabularies of 64k tokens
and more). The chain then runs on those: the same stages in the same order see the same k tokens, so the
choice and the random draws are the same (a test compares the two token by token)."""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from app.errors import AppError, ErrorKind
from app.runtime.protocol import SamplingParams

# llama_token_data: {int32 id; float logit; float p;}
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
_ROWS = 32
# Measured right after a decode (caches cold), llama.cpp's copy of the vocabulary costs about 0.05 ms plus
# 2.5 ns a token, the NumPy candidate search about 0.2 ms: the search pays from vocabularies this large.
_SEARCH_FROM_VOCAB = 65536


def build_chain(
    ll: Any, params: SamplingParams, n_vocab: int, grammar: str | None = None, vocab: Any = None
) -> tuple[Any, int]:
    """llama.cpp's sampler chain for these settings, and how many tokens its first stage keeps at most
    (0: the chain gets the whole vocabulary). Top-k runs first so that the repetition penalty and the rest
    work on k candidates (llama.h advises it); plain greedy is an argmax. A grammar (GBNF, needs `vocab`)
    runs first of all, on the whole vocabulary: no shortcut can know which tokens it allows."""
    stages = []
    if grammar is not None:
        stage = ll.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not stage:
            raise AppError(
                ErrorKind.BAD_INPUT,
                "The grammar could not be parsed (llama.cpp's GBNF, with a 'root' rule).",
                grammar[:200],
            )
        stages.append(stage)
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    greedy = params.temperature <= 0
    penalties = (params.repeat_penalty, params.frequency_penalty, params.presence_penalty)
    penalised = penalties != (1.0, 0.0, 0.0)
    keep = 1 if greedy and not penalised and grammar is None else 0
    if params.top_k > 0 and (penalised or not greedy):
        stages.append(ll.llama_sampler_init_top_k(params.top_k))
        keep = params.top_k if grammar is None else 0
    if penalised:
        stages.append(ll.llama_sampler_init_penalties(n_vocab, params.repeat_last_n, *penalties))
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
    if keep > 1 and (n_vocab < _SEARCH_FROM_VOCAB or keep > n_vocab // (4 * _ROWS)):
        keep = 0
    return chain, keep


class TokenSampler:
    """One reply's sampler: owns the chain and the candidate buffer; `sample()` after each decode.

    Right after a decode the caches hold the model's weights, not Python's or NumPy's code: each NumPy call
    then costs 5-10 microseconds however small its array, so the candidate search makes few of them.
    """

    def __init__(
        self,
        ll: Any,
        ctx: Any,
        n_vocab: int,
        params: SamplingParams,
        grammar: str | None = None,
        vocab: Any = None,
    ) -> None:
        self.ll, self.ctx, self.n_vocab = ll, ctx, n_vocab
        self.chain, self.keep = build_chain(ll, params, n_vocab, grammar, vocab)
        # The vocabulary seen as _ROWS rows: the largest logit of each column is one token's logit, so
        # if k columns reach a value t, at least k tokens do, and the k largest logits are all >= t.
        self.columns = n_vocab // _ROWS
        self.row_starts = np.arange(_ROWS)[:, None] * self.columns
        self.column_max = np.empty(self.columns, dtype=np.float32)
        self.logits_at = 0  # where llama.cpp's logits were last time, and NumPy views of them
        self.logits_view = np.empty(0, dtype=np.float32)
        self.rows_view = np.empty((_ROWS, 0), dtype=np.float32)
        self.buffer = np.zeros(n_vocab if self.keep > 1 else 0, dtype=_TOKEN_DATA)  # top-k's candidates
        data = self.buffer.ctypes.data_as(ctypes.POINTER(ll.llama_token_data))
        self.array = ll.llama_token_data_array(data, 0, -1, False)
        self.array_ref = ctypes.byref(self.array)

    def close(self) -> None:
        if self.chain is not None:
            self.ll.llama_sampler_free(self.chain)
            self.chain = None

    def logits(self, index: int = -1) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The logits of the batch's output `index`, in place (the views are made again only if they
        moved)."""
        pointer = self.ll.llama_get_logits_ith(self.ctx, index)
        address = ctypes.cast(pointer, ctypes.c_void_p).value or 0
        if address != self.logits_at:
            self.logits_view = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
            self.rows_view = self.logits_view[: _ROWS * self.columns].reshape(_ROWS, self.columns)
            self.logits_at = address
        return self.logits_view

    def candidates(self) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Token ids, ascending, that include the `keep` largest logits (and few others), and their logits
        (call `logits()` first)."""
        column_max = self.rows_view.max(axis=0, out=self.column_max)
        floor = np.partition(column_max, -self.keep)[-self.keep]
        columns = np.flatnonzero(column_max >= floor)
        values = self.rows_view[:, columns]
        reached = values >= floor
        ids, values = (self.row_starts + columns)[reached], values[reached]
        whole = _ROWS * self.columns
        if whole < self.n_vocab:  # the last few tokens, outside the rows
            tail = whole + np.flatnonzero(self.logits_view[whole:] >= floor)
            ids, values = np.concatenate([ids, tail]), np.concatenate([values, self.logits_view[tail]])
        return ids, values

    def sample(self, index: int = -1) -> int:
        """The next token from the logits of the batch's output `index` (the last by default); the chain
        records it."""
        ll = self.ll
        if not self.keep:
            return int(ll.llama_sampler_sample(self.chain, self.ctx, index))
        logits = self.logits(index)
        if self.keep == 1:  # greedy or top-1: whatever follows, the chain can only pick the first largest
            return int(logits.argmax())
        ids, values = self.candidates()
        n = len(ids)
        chosen = self.buffer[:n]
        chosen["id"] = ids
        chosen["logit"] = values  # p is left as it is: every stage that reads it computes it first
        array = self.array
        array.size, array.selected, array.sorted = n, -1, False
        ll.llama_sampler_apply(self.chain, self.array_ref)
        token = int(array.data[array.selected].id)
        ll.llama_sampler_accept(self.chain, token)
        return token
