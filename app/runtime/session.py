"""The loaded model inside the engine process: one llama.cpp model and context, owned by the engine's
worker thread.

Here a request becomes a reply ready to run (its prompt rendered and tokenized, its sampler chain built);
app.runtime.batch runs the replies, up to n_parallel at once in one batch. Python work per token stays
constant: llama.cpp's sampler chain picks the token (app.runtime.sampling), one `llama_token_to_piece` call
and an incremental UTF-8 decoder turn it into text. Prompts are evaluated in `n_batch` chunks so a stop is
seen between chunks; a prompt that shares its start with a slot's cached tokens reuses that part of the
KV cache. Embeddings come from a second small context, made on the first request for them.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from app.errors import AppError, ErrorKind
from app.runtime.batch import PieceBatcher, Reply, Scheduler, StopMatcher, decode_failed
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

__all__ = ["LlamaSession", "PieceBatcher", "StopMatcher"]
log = logging.getLogger(__name__)

_GGML_TYPES = {"f16": 1, "q4_0": 2, "q8_0": 8}
MIN_REPLY_ROOM = 64  # tokens kept free for the reply when a long chat is trimmed
EMBED_CTX_MAX = 2048  # the longest text an embedding takes; its context costs this many KV cells
CONTENT_TOKENS_KEPT = 50_000  # messages whose token counts are remembered
ESTIMATED_STEPS = 3  # renders guided by the estimate before a binary search takes over
INITIAL_TURN_OVERHEAD = 8.0  # a role marker, an end-of-turn marker and newlines, until a render measures it


class LlamaSession:
    def __init__(self, params: LoadParams, header: GGUFHeader) -> None:
        import llama_cpp
        from llama_cpp import _internals

        if params.type_v != "f16" and not params.flash_attn:
            raise AppError(ErrorKind.BAD_INPUT, "A quantized V cache needs flash attention.")
        if not 1 <= params.n_parallel <= min(params.n_batch, llama_cpp.llama_max_parallel_sequences()):
            raise AppError(ErrorKind.BAD_INPUT, f"{params.n_parallel} parallel sequences are not possible.")
        self.ll: Any = llama_cpp
        self.header = header
        self.params = params
        n_ctx = params.context_for(header)
        n_threads = params.n_threads or physical_cores()
        n_gpu_layers = params.n_gpu_layers
        if n_gpu_layers is None:  # auto: all layers where a GPU backend exists (the app checked VRAM)
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        started = time.perf_counter()
        # The model and context are made here, not by `Llama`: it cannot set n_seq_max (sequences per
        # context), and it would make a context of its own besides.
        llama_cpp.llama_backend_init()
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if n_gpu_layers == -1 else n_gpu_layers
        model_params.use_mmap, model_params.use_mlock = params.use_mmap, params.use_mlock
        self.n_threads = n_threads
        try:
            self.llama_model = _internals.LlamaModel(
                path_model=str(params.model_path), params=model_params, verbose=True
            )  # verbose: our llama_log_set callback routes it; False would hijack stdout/stderr
            context = self._context_params(n_ctx * params.n_parallel, params.n_batch, params.n_parallel)
            self.llama_context = _internals.LlamaContext(model=self.llama_model, params=context, verbose=True)
        except ValueError as exc:  # llama-cpp-python's words for "llama.cpp refused the file"
            raise AppError(
                ErrorKind.BAD_MODEL,
                f"llama.cpp could not load {params.model_path.name}.",
                str(exc),
            ) from exc
        load_ms = (time.perf_counter() - started) * 1000
        self.ctx = self.llama_context.ctx
        self.vocab = llama_cpp.llama_model_get_vocab(self.llama_model.model)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx_seq(self.ctx))  # each sequence's
        self.n_batch = params.n_batch
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.batch = llama_cpp.llama_batch_init(self.n_batch, 0, 1)
        self.piece_buffer = ctypes.create_string_buffer(256)
        self.scheduler = Scheduler(self, params.n_parallel)
        self.embedder: Any = None  # a second, small context with embeddings on, made on the first Embed
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
            n_parallel=params.n_parallel,
        )

    def _context_params(self, n_cells: int, n_batch: int, n_seq: int, pooling: int | None = None) -> Any:
        """Every context setting explicit. Each sequence has KV cells of its own (kv_unified off, as
        llama-server with -np N): it gets all of its n_ctx, and its attention sees only its own cells, so a
        reply computes exactly what it computes alone (in one shared cache the cells of other sequences
        change flash attention's order of sums, and greedy replies drift from their single-run text)."""
        ll, params = self.ll, self.params
        context = ll.llama_context_default_params()
        context.n_ctx, context.n_batch, context.n_ubatch = n_cells, n_batch, n_batch
        context.n_seq_max, context.kv_unified = n_seq, False
        context.n_threads = context.n_threads_batch = self.n_threads
        context.flash_attn_type = (
            ll.LLAMA_FLASH_ATTN_TYPE_ENABLED if params.flash_attn else ll.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        context.type_k, context.type_v = _GGML_TYPES[params.type_k], _GGML_TYPES[params.type_v]
        if pooling is not None:
            context.embeddings, context.pooling_type = True, pooling
        return context

    def close(self) -> None:
        self.scheduler.end_all()
        if self.batch is not None:
            self.ll.llama_batch_free(self.batch)
            self.batch = None
        self.llama_model.close()  # type: ignore[no-untyped-call]  # frees its contexts first

    @property
    def cached(self) -> list[int]:
        """The first sequence's cached tokens (all of them with one sequence)."""
        return self.scheduler.slots[0].cached

    # --- tokens ------------------------------------------------------------------------------------
    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self.piece(token, special=True).decode("utf-8", errors="replace")

    def piece(self, token: int, special: bool = False) -> bytes:
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
        tokens: list[int] = self.llama_model.tokenize(text.encode("utf-8"), add_bos, True)
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
            raise decode_failed(code)

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
    def submit(
        self,
        request: GenerateRequest,
        emit: Callable[[Event], None],
        stopped: Callable[[], bool],
        done: Callable[[ReplyStats], None],
        failed: Callable[[AppError], None],
    ) -> None:
        """Ready a reply (render, tokenize, its sampler) and queue it for a slot; `done` or `failed` is
        called once it ends. A request that cannot run (a prompt too long, a grammar that does not
        parse) raises AppError here."""
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
        if not tokens:
            tokens = [self.ll.llama_vocab_bos(self.vocab)]
        if len(tokens) >= self.n_ctx:
            raise AppError(
                ErrorKind.BAD_INPUT,
                f"The prompt is too long for the context ({len(tokens)} tokens, context {self.n_ctx}).",
            )
        sampler = TokenSampler(self.ll, self.ctx, self.n_vocab, request.sampling, request.grammar, self.vocab)
        for notice in notices:
            emit(Notice(request.request_id, notice))
        self.scheduler.submit(
            Reply(
                request,
                tokens,
                emit,
                stopped,
                done,
                failed,
                sampler,
                stops=stops,
                stop_tokens=stop_tokens,
                # harmony's channel markers are control tokens: they must reach the splitter as text
                special=splitter is not None and self.reasoning_format is ReasoningFormat.HARMONY,
                splitter=splitter,
                dropped=dropped,
                notices=tuple(notices),
                started=started,
            )
        )

    def generate(
        self, request: GenerateRequest, emit: Callable[[Event], None], stopped: Callable[[], bool]
    ) -> ReplyStats:
        """One reply, start to end (with the other slots' replies, if any are running)."""
        outcome: list[ReplyStats | AppError] = []
        self.submit(request, emit, stopped, outcome.append, outcome.append)
        while not outcome:
            self.scheduler.step()
        if isinstance(outcome[0], AppError):
            raise outcome[0]
        return outcome[0]

    # --- embeddings --------------------------------------------------------------------------------
    def embed(self, texts: Sequence[str]) -> tuple[list[tuple[float, ...]], int]:
        """One normalised vector per text and the tokens they took: the model's own pooling where its
        GGUF declares one, else the mean over the text's tokens (llama-server's --pooling mean)."""
        ll = self.ll
        context = self._embedding_context()
        ctx = context.ctx
        n_embd = int(ll.llama_model_n_embd(self.llama_model.model))
        memory = ll.llama_get_memory(ctx)
        batch = ll.llama_batch_init(EMBED_CTX_MAX, 0, 1)
        vectors, n_tokens = [], 0
        try:
            for text in texts:
                tokens = self.tokenize(text, add_bos=self.add_bos) or [ll.llama_vocab_bos(self.vocab)]
                if len(tokens) > EMBED_CTX_MAX:
                    raise AppError(
                        ErrorKind.BAD_INPUT,
                        f"A text is too long to embed ({len(tokens)} tokens, at most {EMBED_CTX_MAX}).",
                    )
                ll.llama_memory_clear(memory, True)
                batch.n_tokens = len(tokens)
                for i, token in enumerate(tokens):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                    batch.seq_id[i][0], batch.logits[i] = 0, 1  # pooling reads every token's output
                if code := ll.llama_decode(ctx, batch):
                    raise decode_failed(code)
                pointer = ll.llama_get_embeddings_seq(ctx, 0)
                if not pointer:
                    raise self._cannot_embed()
                vector = np.ctypeslib.as_array(pointer, shape=(n_embd,)).astype(np.float64)
                norm = float(np.linalg.norm(vector))
                vectors.append(tuple((vector / norm if norm > 0 else vector).tolist()))
                n_tokens += len(tokens)
        finally:
            ll.llama_batch_free(batch)
        return vectors, n_tokens

    def _embedding_context(self) -> Any:
        """Made once: a one-sequence context of EMBED_CTX_MAX cells with embeddings on. A reranker (rank
        pooling: its output is a score, not a vector) or an encoder-decoder model cannot embed."""
        if self.embedder is not None:
            return self.embedder
        from llama_cpp import _internals

        ll = self.ll
        declared = self.header.arch_value("pooling_type")
        pooling = int(declared) if isinstance(declared, int) and declared > 0 else ll.LLAMA_POOLING_TYPE_MEAN
        if pooling == ll.LLAMA_POOLING_TYPE_RANK or ll.llama_model_has_encoder(self.llama_model.model):
            raise self._cannot_embed()
        n_cells = min(self.n_ctx, EMBED_CTX_MAX)
        params = self._context_params(n_cells, n_cells, 1, pooling)
        try:
            self.embedder = _internals.LlamaContext(model=self.llama_model, params=params, verbose=True)
        except ValueError as exc:
            raise self._cannot_embed() from exc
        return self.embedder

    def _cannot_embed(self) -> AppError:
        return AppError(ErrorKind.BAD_INPUT, f"{self.header.name} cannot make embeddings.")
