"""The loaded model inside the engine process: one `Llama`, owned by the engine's worker thread.

The generation loop keeps Python work per token constant: llama.cpp's sampler chain picks the token
(app.runtime.sampling), one `llama_token_to_piece` call and an incremental UTF-8 decoder turn it into text,
and a batch of one decodes it. Prompts are evaluated in `n_batch` chunks so a stop is seen between chunks;
a prompt that shares its start with the previous one reuses that part of the KV cache.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from app.errors import AppError, ErrorKind
from app.runtime.gguf_header import GGUFHeader
from app.runtime.memory import physical_cores
from app.runtime.protocol import (
    TURN_OVERHEAD_CHARS,
    ChatMessage,
    Event,
    GenerateRequest,
    LoadedModel,
    LoadParams,
    Notice,
    Piece,
    ReplyStats,
    sendable_chars,
)
from app.runtime.reasoning import (
    HarmonySplitter,
    ReasoningFormat,
    ThinkSplitter,
    reasoning_format,
    splitter_for,
)
from app.runtime.sampling import TokenSampler
from app.runtime.templates import RenderedPrompt, build_prompt, end_of_turn_text

log = logging.getLogger(__name__)

_GGML_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}
MIN_REPLY_ROOM = 64  # tokens kept free for the reply when a long chat is trimmed
PIECE_INTERVAL_S = 0.025
CONTENT_TOKENS_KEPT = 50_000  # messages whose token counts are remembered
ESTIMATED_STEPS = 3  # renders guided by the estimate before a binary search takes over
INITIAL_TURN_OVERHEAD = 8.0  # a role marker, an end-of-turn marker and newlines, until a render measures it


def _decode_failed(code: int) -> AppError:
    return AppError(ErrorKind.INTERNAL, "llama.cpp could not process the text.", f"llama_decode={code}")


class StopMatcher:
    """Finds stop strings in streamed text, holding back only a tail that could start one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self.pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to show now, and whether a stop string was reached (text after it is dropped)."""
        if not self.stops:
            return text, False
        self.pending += text
        for stop in self.stops:
            at = self.pending.find(stop)
            if at >= 0:
                out, self.pending = self.pending[:at], ""
                return out, True
        keep = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), keep, -1):
                if self.pending.endswith(stop[:n]):
                    keep = n
                    break
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(out) :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


class PieceBatcher:
    """Sends the first piece at once, then at most one piece per interval. Every send wakes the app's
    reading thread, which on a small machine takes CPU from llama.cpp's own threads; the window redraws
    every ~30 ms anyway."""

    def __init__(self, request_id: int, emit: Callable[[Event], None], interval_s: float) -> None:
        self.request_id = request_id
        self.emit = emit
        self.interval_s = interval_s
        self.pending: list[str] = []
        self.reasoning = False  # the channel of the pending text
        self.last_sent = 0.0
        self.first_at: float | None = None
        self.reasoning_at: float | None = None  # first reasoning text
        self.answer_at: float | None = None  # first answer text

    def add(self, text: str, tokens: int, reasoning: bool = False) -> None:
        now = time.perf_counter()
        if reasoning != self.reasoning:
            self.flush(tokens, now)
            self.reasoning = reasoning
        self.pending.append(text)
        if self.first_at is None:
            self.first_at = now
        if reasoning and self.reasoning_at is None:
            self.reasoning_at = now
        if not reasoning and self.answer_at is None:
            self.answer_at = now
        if now - self.last_sent >= self.interval_s:
            self.flush(tokens, now)

    def flush(self, tokens: int, now: float | None = None) -> None:
        if self.pending:
            self.emit(Piece(self.request_id, "".join(self.pending), tokens, self.reasoning))
            self.pending.clear()
            self.last_sent = now or time.perf_counter()

    def reasoning_ms(self) -> float:
        if self.reasoning_at is None:
            return 0.0
        return ((self.answer_at or time.perf_counter()) - self.reasoning_at) * 1000


class LlamaSession:
    def __init__(self, params: LoadParams, header: GGUFHeader) -> None:
        import llama_cpp

        if params.type_v != "f16" and not params.flash_attn:
            raise AppError(ErrorKind.BAD_INPUT, "A quantized V cache needs flash attention.")
        self.ll: Any = llama_cpp
        self.header = header
        n_ctx = params.context_for(header)
        n_threads = params.n_threads or physical_cores()
        n_gpu_layers = params.n_gpu_layers
        if n_gpu_layers is None:  # auto: all layers where a GPU backend exists (the app checked VRAM)
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        started = time.perf_counter()
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(params.model_path),
                n_ctx=n_ctx,
                n_batch=params.n_batch,
                n_ubatch=params.n_batch,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=n_gpu_layers,
                flash_attn=params.flash_attn,
                type_k=_GGML_TYPES[params.type_k],
                type_v=_GGML_TYPES[params.type_v],
                use_mmap=params.use_mmap,
                use_mlock=params.use_mlock,
                seed=params.seed,
                logits_all=False,
                verbose=True,  # our llama_log_set callback routes it; False would hijack stdout/stderr
            )
        except ValueError as exc:  # llama-cpp-python's words for "llama.cpp refused the file"
            raise AppError(
                ErrorKind.BAD_MODEL,
                f"llama.cpp could not load {params.model_path.name}.",
                str(exc),
            ) from exc
        load_ms = (time.perf_counter() - started) * 1000
        self.ctx = self.llm.ctx
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(self.ctx))
        self.n_batch = params.n_batch
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.piece_buffer = ctypes.create_string_buffer(256)
        self.cached: list[int] = []  # tokens whose KV entries are in the cache, in order
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self.bos_text = self._token_text(llama_cpp.llama_vocab_bos(self.vocab))
        self.eos_text = self._token_text(llama_cpp.llama_vocab_eos(self.vocab))
        self.reasoning_format = reasoning_format(header.chat_template)
        self.turn_end_tokens, self.turn_end_stops = self._turn_end()
        # (length, hash) of a message's text -> its token count; a collision only misjudges the estimate,
        # which a render checks
        self.content_tokens: dict[tuple[int, int], int] = {}
        # tokens the template adds (fixed, per message), learned from renders: (messages, added) of the last
        self.template_overhead = (0.0, INITIAL_TURN_OVERHEAD)
        self.overhead_sample: tuple[int, int] | None = None
        self.model = LoadedModel(
            path=params.model_path,
            name=header.name,
            arch=header.architecture,
            quant=header.quant,
            n_params=header.n_params,
            n_ctx=self.n_ctx,
            n_ctx_train=header.context_length,
            n_vocab=self.n_vocab,
            n_threads=n_threads,
            n_gpu_layers=n_gpu_layers,
            flash_attn=params.flash_attn,
            has_chat_template=header.chat_template is not None,
            load_ms=load_ms,
            thinking_switch="enable_thinking" in (header.chat_template or ""),
        )

    def close(self) -> None:
        if self.batch is not None:
            self.ll.llama_batch_free(self.batch)
            self.batch = None
        self.llm.close()

    # --- tokens ------------------------------------------------------------------------------------
    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._piece(token, special=True).decode("utf-8", errors="replace")

    def _piece(self, token: int, special: bool = False) -> bytes:
        n = self.ll.llama_token_to_piece(self.vocab, token, self.piece_buffer, 256, 0, special)
        if n < 0:  # a piece longer than the buffer: grow it once
            self.piece_buffer = ctypes.create_string_buffer(-n)
            n = self.ll.llama_token_to_piece(self.vocab, token, self.piece_buffer, -n, 0, special)
        return self.piece_buffer.raw[:n]

    def _learn_overhead(self, kept: int, extra: int) -> None:
        """What the template adds to the messages' own tokens, as a fixed part and a part per message: from
        the last two renders of different lengths (one render alone cannot tell the two apart)."""
        previous, self.overhead_sample = self.overhead_sample, (kept, extra)
        if previous is not None and previous[0] != kept:
            per_turn = max(0.5, (extra - previous[1]) / (kept - previous[0]))
            self.template_overhead = (max(0.0, extra - per_turn * kept), per_turn)
        else:
            self.template_overhead = (0.0, max(1.0, extra / kept))

    def _content_tokens(self, text: str) -> int:
        """How many tokens a message's text takes on its own (memoized: a chat's old turns are counted
        once, not once per reply)."""
        key = (len(text), hash(text))  # not the text: 50,000 long messages kept would be a lot of memory
        count = self.content_tokens.get(key)
        if count is None:
            if len(self.content_tokens) >= CONTENT_TOKENS_KEPT:
                self.content_tokens.clear()
            count = self.content_tokens[key] = len(self.tokenize(text, add_bos=False))
        return count

    def tokenize(self, text: str, add_bos: bool) -> list[int]:
        tokens: list[int] = self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)
        return tokens

    def _decode(self, tokens: Sequence[int], start: int) -> None:
        batch = self.batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = 0
        batch.logits[len(tokens) - 1] = 1
        if code := self.ll.llama_decode(self.ctx, batch):
            raise _decode_failed(code)

    # --- prompts -----------------------------------------------------------------------------------
    def _turn_end(self) -> tuple[frozenset[int], tuple[str, ...]]:
        """What ends a reply besides the vocabulary's end-of-generation tokens: the template's end-of-turn
        marker, as a token where it is a control token that llama.cpp does not count as end of
        generation, or as text where it is plain text (`### Instruction:`). A text marker that the template
        writes on a line of its own keeps one newline before it ("\nUser:", as the built-in format's), so a
        reply stops on it at a line start, not where the word comes up in a sentence."""
        template = self.header.chat_template
        if not template:
            return frozenset(), ()
        between = end_of_turn_text(template, bos_token=self.bos_text, eos_token=self.eos_text)
        text = between.lstrip()
        if not text:
            return frozenset(), ()
        first = self.tokenize(text, add_bos=False)[0]
        if self.ll.llama_vocab_is_eog(self.vocab, first):
            return frozenset(), ()
        if self.ll.llama_vocab_is_control(self.vocab, first):
            return frozenset({first}), ()
        lead = between[: len(between) - len(text)]  # the blanks before the marker
        line = text.split("\n")[0].rstrip()
        if "\n" in lead:
            line = "\n" + lead.rsplit("\n", 1)[1].replace("\r", "") + line  # with the line's own indent
        return frozenset(), (line,)

    def chat_prompt(
        self, messages: Sequence[ChatMessage], room: int, enable_thinking: bool | None, omitted: int = 0
    ) -> tuple[list[int], RenderedPrompt, int, list[str]]:
        """Tokens for the chat, without the oldest turns (never the system prompt or the last message) that
        do not fit the context with `room` tokens left for the reply; `omitted`: turns the app left out.

        Turns too long to fit by their length alone are never rendered. The window is estimated from each
        turn's own token count (memoized) plus what the template adds (learned from the renders), and
        checked by rendering it and the window one turn larger: two renders once the template's cost is
        known. A binary search over rendered suffixes finishes what the estimate's steps leave open."""
        system = [m for m in messages[:1] if m.role == "system"]
        turns = list(messages[len(system) :])
        variables = {"enable_thinking": enable_thinking} if enable_thinking is not None else None
        budget = sendable_chars(self.n_ctx)
        first = len(turns) - 1
        used = sum(len(m.content) + TURN_OVERHEAD_CHARS for m in system + turns[first:])
        while first > 0 and used + len(turns[first - 1].content) + TURN_OVERHEAD_CHARS <= budget:
            first -= 1
            used += len(turns[first].content) + TURN_OVERHEAD_CHARS
        system_tokens = sum(self._content_tokens(m.content) for m in system)

        def turn_tokens(index: int) -> int:
            """Counted as the window reaches back: the turns it never reaches are never tokenized."""
            return self._content_tokens(turns[index].content)

        rendered: dict[int, tuple[RenderedPrompt, list[int]]] = {}

        def attempt(drop: int) -> tuple[RenderedPrompt, list[int]]:
            if drop not in rendered:
                prompt = build_prompt(
                    self.header.chat_template,
                    system + turns[drop:],
                    bos_token=self.bos_text,
                    eos_token=self.eos_text,
                    variables=variables,
                )
                has_bos = bool(self.bos_text) and prompt.text.startswith(self.bos_text)
                tokens = self.tokenize(prompt.text, add_bos=self.add_bos and not has_bos)
                rendered[drop] = prompt, tokens
                kept = len(system) + len(turns) - drop
                if prompt.notice is None and kept:  # learn what this template adds
                    self._learn_overhead(
                        kept, len(tokens) - system_tokens - sum(map(turn_tokens, range(drop, len(turns))))
                    )
            return rendered[drop]

        def fits(drop: int) -> bool:
            return len(attempt(drop)[1]) + room <= self.n_ctx

        def estimate() -> int:
            """The fewest turns to drop, by counts: the template's overhead per turn on each."""
            fixed, per_turn = self.template_overhead
            limit = self.n_ctx - room - system_tokens - fixed - per_turn * len(system)
            drop, total = len(turns), 0.0
            while drop > max(first, 0) and total + turn_tokens(drop - 1) + per_turn <= limit:
                drop -= 1
                total += turn_tokens(drop) + per_turn
            return min(drop, len(turns) - 1)

        def fewest(low: int, high: int) -> int:
            """The fewest drops in [low, high] that fit (high when none does: the last turn always goes)."""
            while low < high:
                middle = (low + high) // 2
                if fits(middle):
                    high = middle
                else:
                    low = middle + 1
            return high

        # The answer is in [low, high] (high: the last turn alone, which always goes). A few steps guided by
        # the estimate, each render teaching it the template's cost, then halving what is left.
        low, high = first, max(len(turns) - 1, first)
        for _ in range(ESTIMATED_STEPS):
            guess = min(max(estimate(), low), high)
            if not fits(guess):
                low = guess + 1
            elif guess == low or not fits(guess - 1):
                low = high = guess
            else:
                high = guess - 1
            if low >= high:
                break
        low = fewest(min(low, high), high)
        prompt, tokens = attempt(low)
        dropped = low + omitted
        notices = [prompt.notice] if prompt.notice else []
        if len(tokens) + 1 > self.n_ctx:
            raise AppError(
                ErrorKind.BAD_INPUT,
                f"The message is too long for the context ({len(tokens)} tokens, context {self.n_ctx}).",
            )
        if dropped:
            notices.append(
                f"The conversation was longer than the context: the oldest {dropped} "
                f"message(s) were left out of this reply."
            )
        return tokens, prompt, dropped, notices

    # --- one reply ---------------------------------------------------------------------------------
    def generate(
        self, request: GenerateRequest, emit: Callable[[Event], None], stopped: Callable[[], bool]
    ) -> ReplyStats:
        ll = self.ll
        started = time.perf_counter()
        max_tokens = request.max_tokens if request.max_tokens is not None else self.n_ctx
        stops, dropped, notices = request.stop, 0, list[str]()
        stop_tokens: frozenset[int] = frozenset()
        splitter: ThinkSplitter | HarmonySplitter | None = None  # chats only: raw prompts are plain text
        if request.prompt_tokens:
            tokens = list(request.prompt_tokens)
        elif request.prompt is not None:
            tokens = self.tokenize(request.prompt, add_bos=self.add_bos)
        else:
            room = max(MIN_REPLY_ROOM, min(max_tokens, self.n_ctx // 4))
            chat = self.chat_prompt(request.messages, room, request.enable_thinking, request.omitted_messages)
            tokens, prompt, dropped, notices = chat
            stops = stops + prompt.stop
            if prompt.notice is None:  # the model's own format: its end-of-turn marker ends the reply
                stops, stop_tokens = stops + self.turn_end_stops, self.turn_end_tokens
            splitter = splitter_for(self.reasoning_format, prompt.text)
        # harmony's channel markers are control tokens: they must reach the splitter as text
        special = splitter is not None and self.reasoning_format is ReasoningFormat.HARMONY
        for notice in notices:
            emit(Notice(request.request_id, notice))
        if not tokens:
            tokens = [ll.llama_vocab_bos(self.vocab)]
        if len(tokens) >= self.n_ctx:
            raise AppError(
                ErrorKind.BAD_INPUT,
                f"The prompt is too long for the context ({len(tokens)} tokens, context {self.n_ctx}).",
            )

        # Reuse the cached prefix; at least the last prompt token is evaluated to get fresh logits.
        keep = 0
        if request.reuse_cache:
            limit = min(len(self.cached), len(tokens) - 1)
            while keep < limit and self.cached[keep] == tokens[keep]:
                keep += 1
        if keep == 0 or not ll.llama_memory_seq_rm(self.memory, 0, keep, -1):
            ll.llama_memory_clear(self.memory, True)  # e.g. sliding-window caches cannot cut the middle
            keep = 0
        del self.cached[keep:]
        prepared = time.perf_counter()  # the prompt is ready: rendered, tokenized, its cached prefix kept

        pos = keep
        pieces = PieceBatcher(request.request_id, emit, PIECE_INTERVAL_S)

        def emit_text(text: str, n_out: int) -> None:
            for reasoning, part in splitter.feed(text) if splitter else [(False, text)]:
                pieces.add(part, n_out, reasoning)

        def stats(finish: str, n_out: int, prompt_done: float, first: float | None = None) -> ReplyStats:
            now = time.perf_counter()
            prompt_s = prompt_done - prepared
            gen_s = now - prompt_done
            evaluated = min(pos, len(tokens)) - keep  # less than the prompt when stopped inside it
            return ReplyStats(
                finish_reason=finish,
                prompt_tokens=len(tokens),
                prompt_eval_tokens=evaluated,
                completion_tokens=n_out,
                ttft_ms=((first or now) - started) * 1000,
                prompt_tokens_per_s=evaluated / prompt_s if prompt_s > 0 else 0.0,
                tokens_per_s=n_out / gen_s if n_out and gen_s > 0 else 0.0,
                trimmed_messages=dropped,
                notices=tuple(notices),
                reasoning_ms=pieces.reasoning_ms(),
                prepare_ms=(prepared - started) * 1000,
            )

        while pos < len(tokens):
            if stopped():
                return stats("stopped", 0, time.perf_counter())
            chunk = tokens[pos : pos + self.n_batch]
            self._decode(chunk, pos)
            self.cached.extend(chunk)
            pos += len(chunk)
        prompt_done = time.perf_counter()

        sampler = TokenSampler(ll, self.ctx, self.n_vocab, request.sampling)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        matcher = StopMatcher(stops)
        vocab, is_eog, sample = self.vocab, ll.llama_vocab_is_eog, sampler.sample
        # One token at a time from here: only its id and position change between decodes.
        ctx, batch, decode = self.ctx, self.batch, ll.llama_decode
        batch.n_tokens, batch.n_seq_id[0], batch.seq_id[0][0], batch.logits[0] = 1, 1, 0, 1
        n_out, finish = 0, "length"
        try:
            while n_out < max_tokens:
                if stopped():
                    finish = "stopped"
                    break
                if pos >= self.n_ctx:
                    break  # the context is full: "length"
                token = sample()
                if not request.ignore_eos and (is_eog(vocab, token) or token in stop_tokens):
                    finish = "stop"
                    break
                n_out += 1
                text, hit_stop = matcher.feed(decoder.decode(self._piece(token, special)))
                if text:
                    emit_text(text, n_out)
                if hit_stop:
                    finish = "stop"
                    break
                if n_out < max_tokens:  # the last token's logits would go unused: it stays out of the cache
                    batch.token[0], batch.pos[0] = token, pos
                    if code := decode(ctx, batch):
                        raise _decode_failed(code)
                    self.cached.append(token)
                    pos += 1
        finally:
            sampler.close()
        if finish != "stopped":  # a stopped reply generates nothing more, not even the held-back tail
            tail = matcher.feed(decoder.decode(b"", final=True))[0] + matcher.flush()
            if tail:
                emit_text(tail, n_out)
            for reasoning, part in splitter.flush() if splitter else []:
                pieces.add(part, n_out, reasoning)
        pieces.flush(n_out)  # text of tokens generated before the stop was seen
        return stats(finish, n_out, prompt_done, pieces.first_at)
