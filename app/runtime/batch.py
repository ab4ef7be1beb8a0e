"""Continuous batching: up to n_parallel replies decoded together in one llama_batch.

Each reply (a `Sequence`) owns a slot: a llama.cpp sequence id, the tokens its KV cells hold and its own
sampler chain. A step puts one token of every generating reply and then prompt chunks of the others (up to
n_batch tokens in all, as llama-server does) into one batch, decodes it once and samples each reply from its
own row of logits. A reply that ends frees its slot at once; waiting requests take free slots in FIFO
order, each the slot whose cached tokens share the longest prefix with its prompt (a chat keeps its cache).
Per token the Python work is constant: a few attribute writes per reply and one decode per step.
"""

from __future__ import annotations

import codecs
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.errors import AppError, ErrorKind
from app.runtime.protocol import Event, GenerateRequest, Piece, ReplyStats
from app.runtime.reasoning import HarmonySplitter, ThinkSplitter
from app.runtime.sampling import TokenSampler

if TYPE_CHECKING:
    from app.runtime.session import LlamaSession

PIECE_INTERVAL_S = 0.025


def decode_failed(code: int) -> AppError:
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


@dataclass(eq=False)
class Reply:
    """What a request asks of the scheduler, ready to run: its prompt's tokens and how its text ends."""

    request: GenerateRequest
    tokens: list[int]
    emit: Callable[[Event], None]
    stopped: Callable[[], bool]  # checked before each prompt chunk and before each token
    done: Callable[[ReplyStats], None]
    failed: Callable[[AppError], None]
    sampler: TokenSampler
    stops: tuple[str, ...] = ()
    stop_tokens: frozenset[int] = frozenset()
    special: bool = False  # control tokens reach the text (harmony's channel markers)
    splitter: ThinkSplitter | HarmonySplitter | None = None
    dropped: int = 0
    notices: tuple[str, ...] = ()
    started: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)
class Slot:
    seq_id: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV cells this sequence holds, in order
    used: int = 0  # when a reply last took this slot (a count of admissions), 0: never
    reply: Running | None = None


class Running:
    """A reply in a slot: where its prompt is, what it has generated, its text machinery."""

    def __init__(self, reply: Reply, keep: int, max_tokens: int) -> None:
        self.reply = reply
        self.keep = keep  # prompt tokens that came from the cache
        self.pos = keep  # the next position to decode
        self.max_tokens = max_tokens
        self.prepared = time.perf_counter()
        self.prompt_done = 0.0
        self.output = -1  # this reply's row of logits in the last batch, -1: none
        self.n_out = 0
        self.widest = 1  # the most replies one of this reply's decodes carried
        self.pieces = PieceBatcher(reply.request.request_id, reply.emit, PIECE_INTERVAL_S)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.matcher = StopMatcher(reply.stops)

    def emit_text(self, text: str) -> None:
        splitter = self.reply.splitter
        for reasoning, part in splitter.feed(text) if splitter else [(False, text)]:
            self.pieces.add(part, self.n_out, reasoning)

    def stats(self, finish: str) -> ReplyStats:
        reply, now = self.reply, time.perf_counter()
        prompt_done = self.prompt_done or now
        prompt_s = prompt_done - self.prepared
        gen_s = now - prompt_done
        evaluated = min(self.pos, len(reply.tokens)) - self.keep  # less than the prompt when stopped in it
        return ReplyStats(
            finish_reason=finish,
            prompt_tokens=len(reply.tokens),
            prompt_eval_tokens=evaluated,
            completion_tokens=self.n_out,
            ttft_ms=((self.pieces.first_at or now) - reply.started) * 1000,
            prompt_tokens_per_s=evaluated / prompt_s if prompt_s > 0 else 0.0,
            tokens_per_s=self.n_out / gen_s if self.n_out and gen_s > 0 else 0.0,
            trimmed_messages=reply.dropped,
            notices=reply.notices,
            reasoning_ms=self.pieces.reasoning_ms(),
            prepare_ms=(self.prepared - reply.started) * 1000,
            widest_batch=self.widest,
        )


class Scheduler:
    """The slots of one llama context and the requests waiting for one."""

    def __init__(self, session: LlamaSession, n_parallel: int) -> None:
        self.session = session
        self.slots = [Slot(seq_id) for seq_id in range(n_parallel)]
        self.waiting: deque[Reply] = deque()
        self.widths: Counter[int] = Counter()  # decodes by how many replies they carried
        self.uses = 0  # admissions so far

    @property
    def busy(self) -> bool:
        return bool(self.waiting) or any(slot.reply for slot in self.slots)

    def submit(self, reply: Reply) -> None:
        self.waiting.append(reply)

    def end_all(self) -> None:
        """Every reply, running or waiting, ends now as stopped (a new load, an unload, a shutdown)."""
        while self.waiting:
            reply = self.waiting.popleft()
            reply.sampler.close()
            reply.done(Running(reply, 0, 0).stats("stopped"))  # never started: nothing evaluated
        for slot in self.slots:
            if slot.reply is not None:
                self._finish(slot, "stopped")

    # --- admission ---------------------------------------------------------------------------------
    def _admit(self) -> None:
        """The oldest waiting requests take the free slots: each the one whose cache holds most of its
        prompt, or, where none holds half of it, the one used longest ago (as llama-server's
        slot_prompt_similarity), so that two chats take turns without evicting each other's cache."""
        free = [slot for slot in self.slots if slot.reply is None]
        while self.waiting and free:
            reply = self.waiting.popleft()
            reuse = reply.request.reuse_cache
            shared = [_shared_prefix(slot.cached, reply.tokens) if reuse else 0 for slot in free]
            best = max(range(len(free)), key=shared.__getitem__)  # the first of the longest
            if shared[best] * 2 < len(reply.tokens):
                best = min(range(len(free)), key=lambda i: free[i].used)
            self.uses += 1
            free[best].used = self.uses
            self._start(free.pop(best), reply, shared[best])

    def _start(self, slot: Slot, reply: Reply, keep: int) -> None:
        """Keep the slot's cached prefix; at least the last prompt token is evaluated for fresh logits."""
        session, ll = self.session, self.session.ll
        keep = min(keep, len(reply.tokens) - 1)
        if keep == 0 or not ll.llama_memory_seq_rm(session.memory, slot.seq_id, keep, -1):
            ll.llama_memory_seq_rm(session.memory, slot.seq_id, -1, -1)  # a sliding window cannot be cut
            keep = 0
        del slot.cached[keep:]
        request = reply.request
        max_tokens = request.max_tokens if request.max_tokens is not None else session.n_ctx
        slot.reply = Running(reply, keep, max_tokens)

    # --- one step ----------------------------------------------------------------------------------
    def step(self) -> None:
        """Admit what fits, then one decode for every running reply: a token each for those generating,
        prompt chunks for the others in what room the batch has left."""
        self._admit()
        if self.waiting:
            self._end_stopped_waiting()
        session = self.session
        batch, n_batch, n_ctx = session.batch, session.n_batch, session.n_ctx
        carried: list[tuple[Slot, int, int]] = []  # (slot, first index in the batch, tokens)
        n = 0
        for slot in self.slots:  # generating replies first: one token each
            running = slot.reply
            if running is None or running.pos < len(running.reply.tokens):
                continue
            token = self._next_token(slot, running, n_ctx)
            if token is not None:
                _put(batch, n, token, running.pos, slot.seq_id, 1)
                carried.append((slot, n, 1))
                n += 1
        for slot in self.slots:  # then prompts, in what room is left
            running = slot.reply
            if running is None or running.pos >= len(running.reply.tokens) or n >= n_batch:
                continue
            if running.reply.stopped():
                self._finish(slot, "stopped")
                continue
            tokens = running.reply.tokens
            chunk = tokens[running.pos : running.pos + n_batch - n]
            for i, token in enumerate(chunk):
                _put(batch, n + i, token, running.pos + i, slot.seq_id, 0)
            if running.pos + len(chunk) == len(tokens):  # the last prompt token gives the first logits
                batch.logits[n + len(chunk) - 1] = 1
            carried.append((slot, n, len(chunk)))
            n += len(chunk)
        if not carried:
            return
        batch.n_tokens = n
        if code := session.ll.llama_decode(session.ctx, batch):
            self._fail([slot for slot, _, _ in carried], decode_failed(code))
            return
        self.widths[len(carried)] += 1
        now = time.perf_counter()
        for slot, first, count in carried:
            running = slot.reply
            assert running is not None
            slot.cached.extend(batch.token[first : first + count])
            running.pos += count
            running.widest = max(running.widest, len(carried))
            running.output = first + count - 1 if running.pos >= len(running.reply.tokens) else -1
            if running.output >= 0 and not running.prompt_done:
                running.prompt_done = now

    def _end_stopped_waiting(self) -> None:
        """A request stopped while it waits for a slot ends now, not when a slot frees."""
        for reply in [reply for reply in self.waiting if reply.stopped()]:
            self.waiting.remove(reply)
            reply.sampler.close()
            reply.done(Running(reply, 0, 0).stats("stopped"))

    def _next_token(self, slot: Slot, running: Running, n_ctx: int) -> int | None:
        """Sample this reply's next token from its logits, show its text; the token to decode next, or
        None when the reply ended (its slot is then free)."""
        reply = running.reply
        if running.n_out >= running.max_tokens:
            self._finish(slot, "length")
            return None
        if reply.stopped():
            self._finish(slot, "stopped")
            return None
        if running.pos >= n_ctx:
            self._finish(slot, "length")  # the context is full
            return None
        token = reply.sampler.sample(running.output)
        session = self.session
        if not reply.request.ignore_eos and (
            session.ll.llama_vocab_is_eog(session.vocab, token) or token in reply.stop_tokens
        ):
            self._finish(slot, "stop")
            return None
        running.n_out += 1
        text, hit_stop = running.matcher.feed(running.decoder.decode(session.piece(token, reply.special)))
        if text:
            running.emit_text(text)
        if hit_stop:
            self._finish(slot, "stop")
            return None
        if running.n_out >= running.max_tokens:  # the last token's logits would go unused: not decoded
            self._finish(slot, "length")
            return None
        return token

    def _finish(self, slot: Slot, finish: str) -> None:
        running = slot.reply
        assert running is not None
        slot.reply = None
        if finish != "stopped":  # a stopped reply generates nothing more, not even the held-back tail
            tail = running.matcher.feed(running.decoder.decode(b"", final=True))[0] + running.matcher.flush()
            if tail:
                running.emit_text(tail)
            splitter = running.reply.splitter
            for reasoning, part in splitter.flush() if splitter else []:
                running.pieces.add(part, running.n_out, reasoning)
        running.pieces.flush(running.n_out)  # text of tokens generated before the stop was seen
        running.reply.sampler.close()
        running.reply.done(running.stats(finish))

    def _fail(self, slots: list[Slot], error: AppError) -> None:
        for slot in slots:
            running = slot.reply
            if running is not None:
                slot.reply = None
                running.reply.sampler.close()
                self.session.ll.llama_memory_seq_rm(self.session.memory, slot.seq_id, -1, -1)
                slot.cached.clear()
                running.reply.failed(error)


def _put(batch: Any, i: int, token: int, pos: int, seq_id: int, logits: int) -> None:
    batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, logits
    batch.seq_id[i][0] = seq_id


def _shared_prefix(cached: list[int], tokens: list[int]) -> int:
    limit = min(len(cached), len(tokens))
    n = 0
    while n < limit and cached[n] == tokens[n]:
        n += 1
    return n
