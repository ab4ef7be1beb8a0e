"""Several replies at once: continuous batching in the engine (real llama.cpp, tiny random models and
SmolLM2), the app's Engine used from several threads, stops and crashes per request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.errors import AppError
from app.paths import AppPaths
from app.runtime.engine import Engine, EngineCrashed
from app.runtime.gguf_header import read_header
from app.runtime.protocol import (
    ChatMessage,
    Event,
    Finished,
    GenerateRequest,
    LoadParams,
    Piece,
    ReplyStats,
    SamplingParams,
)
from app.runtime.session import LlamaSession

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)
PROMPTS = ("Once upon a time", "The weather today", "In the year 2050,", "My favourite food is")


def _reply(engine: Engine, request: GenerateRequest) -> tuple[str, ReplyStats]:
    pieces = []
    for event in engine.generate(request):
        if isinstance(event, Piece):
            pieces.append(event.text)
        elif isinstance(event, Finished):
            return "".join(pieces), event.stats
    raise AssertionError("no Finished event")


def _at_once(jobs: list[Callable[[], object]], gap_s: float = 0.0) -> list[object]:
    """Run each job in a thread of its own (started in order, `gap_s` apart); their results or errors."""
    results: list[object] = [None] * len(jobs)

    def run(i: int) -> None:
        try:
            results[i] = jobs[i]()
        except Exception as exc:  # the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
        time.sleep(gap_s)
    for thread in threads:
        thread.join(120)
    return results


def _raw(engine: Engine, prompt: str, max_tokens: int) -> GenerateRequest:
    return GenerateRequest(
        engine.new_request_id(), prompt=prompt, sampling=GREEDY, max_tokens=max_tokens, ignore_eos=True
    )


def test_four_replies_at_once_share_batches_and_say_what_each_says_alone(smollm2_path: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        model = engine.load(LoadParams(smollm2_path, n_ctx=512, n_batch=64, n_parallel=4))
        assert model.n_parallel == 4 and model.n_ctx == 512
        alone = [_reply(engine, _raw(engine, prompt, 24)) for prompt in PROMPTS]
        assert all(stats.widest_batch == 1 for _, stats in alone)
        started = time.perf_counter()
        together = _at_once([lambda p=p: _reply(engine, _raw(engine, p, 24)) for p in PROMPTS])  # type: ignore[misc]
        wall = time.perf_counter() - started
    for (text, _), result in zip(alone, together, strict=True):
        assert isinstance(result, tuple), result
        assert result[0] == text  # greedy: the same words as alone
        assert result[1].completion_tokens == 24
        assert result[1].widest_batch == 4  # its steps were decoded with the three others
    alone_s = sum(24 / stats.tokens_per_s for _, stats in alone)
    print(f"4 replies of 24 tokens: {alone_s:.2f} s one after another (generation), {wall:.2f} s together")


def test_more_requests_than_slots_wait_their_turn_in_order(tiny_model: Path) -> None:
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    def run(engine: Engine, index: int) -> None:
        request = _raw(engine, PROMPTS[index % 4], 12)
        for event in engine.generate(request):
            if isinstance(event, Piece | Finished):
                with lock:
                    kind = "piece" if isinstance(event, Piece) else "finished"
                    if kind == "finished" or ("piece", index) not in events:
                        events.append((kind, index))

    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=256, n_batch=64, n_parallel=2))
        results = _at_once([lambda i=i: run(engine, i) for i in range(6)], gap_s=0.05)  # type: ignore[misc]
    assert results == [None] * 6
    firsts = [index for kind, index in events if kind == "piece"]
    assert sorted(firsts[:2]) == [0, 1] and sorted(firsts[2:4]) == [2, 3] and sorted(firsts[4:]) == [4, 5]
    for index in range(2, 6):  # a waiting request starts only when a slot is free
        started = events.index(("piece", index))
        assert sum(kind == "finished" for kind, _ in events[:started]) >= index - 1


def _session(model: Path, n_parallel: int) -> LlamaSession:
    return LlamaSession(LoadParams(model, n_ctx=256, n_batch=64, n_parallel=n_parallel), read_header(model))


def test_a_stop_ends_exactly_that_reply_within_one_token(tiny_model: Path) -> None:
    session = _session(tiny_model, 3)
    outcomes: dict[int, ReplyStats | AppError] = {}
    pieces: list[Event] = []
    checks = [0]

    def stopped_on_ninth_check() -> bool:
        checks[0] += 1
        return checks[0] >= 9  # 1 check for the prompt, then 1 before each token: 7 tokens

    def record(request_id: int) -> Callable[[ReplyStats | AppError], None]:
        return lambda outcome: outcomes.__setitem__(request_id, outcome)

    try:
        for request_id in (1, 2, 3):
            request = GenerateRequest(
                request_id, prompt_tokens=(1, 2 + request_id), max_tokens=40, ignore_eos=True
            )
            stopped = stopped_on_ninth_check if request_id == 2 else (lambda: False)
            session.submit(request, pieces.append, stopped, record(request_id), record(request_id))
        while session.scheduler.busy:
            session.scheduler.step()
    finally:
        session.close()
    stats = {
        request_id: outcome for request_id, outcome in outcomes.items() if isinstance(outcome, ReplyStats)
    }
    assert len(stats) == 3, outcomes
    assert (stats[2].finish_reason, stats[2].completion_tokens) == ("stopped", 7)  # not one token more
    assert max(p.tokens for p in pieces if isinstance(p, Piece) and p.request_id == 2) == 7
    for request_id in (1, 3):
        assert (stats[request_id].finish_reason, stats[request_id].completion_tokens) == ("length", 40)
        assert stats[request_id].widest_batch == 3


def _sent(engine: Engine, n: int) -> None:
    """Wait until `n` requests are under way (their routes open; each sends right after)."""
    while len(engine._routes) < n:
        time.sleep(0.005)
    time.sleep(0.05)


def test_kill_while_three_wait_wakes_all_three(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=512, n_batch=64, n_parallel=1))
        requests = [_raw(engine, "Hi", 100_000) for _ in range(3)]

        def listen(request: GenerateRequest) -> object:
            return list(engine.generate(request))

        def kill() -> None:
            _sent(engine, 3)  # one running, two waiting for its slot
            engine.kill()

        results = _at_once([*(lambda r=r: listen(r) for r in requests), kill])  # type: ignore[misc]
    assert all(isinstance(result, EngineCrashed) for result in results[:3]), results


def test_two_chats_taking_turns_keep_their_caches(smollm2_path: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(smollm2_path, n_ctx=1024, n_batch=64, n_parallel=2))
        chats = {
            "colours": [ChatMessage("user", "Name three colours. " * 10)],
            "numbers": [ChatMessage("user", "Count from one to five, in words, please. " * 10)],
        }
        evaluated = {}
        for turn in range(2):
            for name, messages in chats.items():
                request = GenerateRequest(
                    engine.new_request_id(), tuple(messages), sampling=GREEDY, max_tokens=8
                )
                text, stats = _reply(engine, request)
                evaluated[name, turn] = (stats.prompt_eval_tokens, stats.prompt_tokens)
                messages += [ChatMessage("assistant", text), ChatMessage("user", "And again?")]
    for name in chats:
        computed, total = evaluated[name, 1]
        assert computed < total / 3, evaluated  # the second turn found the first one's tokens in its slot


@pytest.mark.parametrize("n_parallel", [1, 4])
def test_tokens_per_second_of_one_and_of_four_sequences(smollm2_path: Path, n_parallel: int) -> None:
    """Not a timed check: prints the aggregate generation speed with one and with four replies at once."""
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(smollm2_path, n_ctx=512, n_batch=64, n_parallel=n_parallel))
        _reply(engine, _raw(engine, "Warm up", 4))
        started = time.perf_counter()
        results = _at_once([lambda p=p: _reply(engine, _raw(engine, p, 64)) for p in PROMPTS[:n_parallel]])  # type: ignore[misc]
        wall = time.perf_counter() - started
    tokens = sum(result[1].completion_tokens for result in results)  # type: ignore[index]
    print(
        f"{n_parallel} sequence(s): {tokens / wall:.1f} tokens/s aggregate ({tokens} tokens in {wall:.2f} s)"
    )


def test_the_memory_check_counts_the_kv_cells_of_every_sequence(tiny_model: Path) -> None:
    from app.runtime.memory import estimate, free_ram
    from app.runtime.preflight import check_load

    header = read_header(tiny_model)
    per_token = estimate(header, 2, "f16", "f16").kv_cache - estimate(header, 1, "f16", "f16").kv_cache
    n_ctx = free_ram() // (3 * per_token)  # a third of the free memory for one sequence's cache
    check_load(LoadParams(tiny_model, n_ctx=n_ctx))  # fits
    with pytest.raises(AppError) as refused:
        check_load(LoadParams(tiny_model, n_ctx=n_ctx, n_parallel=4))  # four of them do not
    assert "GB" in refused.value.user_message


def test_stopping_or_leaving_one_reply_leaves_the_others_running(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=512, n_batch=64, n_parallel=3))
        stopped, left, kept = (_raw(engine, prompt, 300) for prompt in PROMPTS[:3])
        tokens_at_stop = [0]

        def stop_at_ten() -> object:
            for event in engine.generate(stopped):
                if isinstance(event, Piece) and not tokens_at_stop[0] and event.tokens >= 10:
                    tokens_at_stop[0] = event.tokens
                    engine.stop(stopped.request_id)
                elif isinstance(event, Finished):
                    return event.stats
            return None

        def leave_after_a_piece() -> object:
            stream = engine.generate(left)
            next(event for event in stream if isinstance(event, Piece))
            stream.close()  # the caller stopped listening: its reply stops, no other
            return "left"

        results = _at_once([stop_at_ten, leave_after_a_piece, lambda: _reply(engine, kept)])
    stats, gone, finished = results
    assert isinstance(stats, ReplyStats) and stats.finish_reason == "stopped"
    assert stats.completion_tokens <= tokens_at_stop[0] + 4  # pieces leave every 25 ms: a few tokens each
    assert gone == "left"
    assert isinstance(finished, tuple) and finished[1].finish_reason == "length"
    assert finished[1].completion_tokens == 300


def test_a_request_stopped_while_it_waits_ends_at_once(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=512, n_batch=64, n_parallel=1))
        running, waiting = _raw(engine, "Hi", 400), _raw(engine, "Hello", 400)
        ended: dict[str, float] = {}

        def listen(request: GenerateRequest, name: str) -> ReplyStats:
            stats = _reply(engine, request)[1]
            ended[name] = time.perf_counter()
            return stats

        def stop_the_waiting_one() -> None:
            _sent(engine, 2)  # the first has the one slot, the second waits for it
            ended["asked"] = time.perf_counter()
            engine.stop(waiting.request_id)

        results = _at_once(
            [lambda: listen(running, "running"), lambda: listen(waiting, "waiting"), stop_the_waiting_one],
            gap_s=0.05,
        )
    first, second, _ = results
    assert isinstance(first, ReplyStats) and isinstance(second, ReplyStats)
    assert (second.finish_reason, second.completion_tokens, second.prompt_eval_tokens) == ("stopped", 0, 0)
    assert ended["waiting"] - ended["asked"] < 0.5  # not when the slot frees, 400 tokens later
    assert ended["waiting"] < ended["running"] and first.completion_tokens == 400
