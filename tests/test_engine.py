"""The engine process with real llama.cpp on real GGUF files: answers, stops, crashes, refusals."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.runtime.engine import Engine, EngineCrashed
from app.runtime.gguf_header import BadModelFile, read_header
from app.runtime.preflight import check_load
from app.runtime.protocol import (
    ChatMessage,
    Finished,
    GenerateRequest,
    LoadParams,
    Notice,
    Piece,
    ReplyStats,
    SamplingParams,
)
from tests.conftest import TinyModelFactory
from tests.tinymodel import CORRUPTIONS, corrupt

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)


@pytest.fixture(scope="module")
def smol_engine(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(AppPaths.under(tmp_path_factory.mktemp("engine-home")).ensure())
    engine.load(LoadParams(smollm2_path, n_ctx=4096, n_batch=64))
    yield engine
    engine.close()


def _reply(engine: Engine, request: GenerateRequest) -> tuple[str, ReplyStats, list[str]]:
    pieces, notices = [], []
    for event in engine.generate(request):
        if isinstance(event, Piece):
            pieces.append(event.text)
        elif isinstance(event, Notice):
            notices.append(event.text)
        elif isinstance(event, Finished):
            return "".join(pieces), event.stats, notices
    raise AssertionError("no Finished event")


# SmolLM2-135M answers greedily in French ("L'Étoile...") under its template's default system prompt;
# with this one it says "The capital of France is Paris."
SYSTEM = ChatMessage("system", "You are a helpful assistant.")


def _ask(engine: Engine, question: str, **options: object) -> GenerateRequest:
    messages = (SYSTEM, ChatMessage("user", question))
    return GenerateRequest(engine.new_request_id(), messages, sampling=GREEDY, **options)  # type: ignore[arg-type]


@pytest.mark.real_model
def test_capital_of_france(smol_engine: Engine) -> None:
    text, stats, notices = _reply(
        smol_engine, _ask(smol_engine, "What is the capital of France?", max_tokens=48)
    )
    assert "Paris" in text
    assert notices == []
    assert stats.finish_reason in ("stop", "length")
    assert stats.prompt_tokens > 10 and stats.completion_tokens > 0
    assert stats.ttft_ms > 0 and stats.tokens_per_s > 0 and stats.prompt_tokens_per_s > 0
    model = smol_engine.model
    assert model is not None
    assert (model.arch, model.quant, model.n_ctx, model.flash_attn) == ("llama", "Q4_1", 4096, True)
    assert model.load_ms > 0


@pytest.mark.real_model
def test_a_shared_prompt_prefix_is_not_computed_again(smol_engine: Engine) -> None:
    first = _ask(smol_engine, "Name three colours.", max_tokens=4)
    _reply(smol_engine, first)
    again = GenerateRequest(smol_engine.new_request_id(), first.messages, sampling=GREEDY, max_tokens=4)
    _, stats, _ = _reply(smol_engine, again)
    assert stats.prompt_eval_tokens == 1  # only the last prompt token, for fresh logits


@pytest.mark.real_model
def test_stop_during_generation_stops_within_a_token_and_the_engine_goes_on(smol_engine: Engine) -> None:
    request = _ask(smol_engine, "Count from one to a thousand.", max_tokens=2000)
    request = GenerateRequest(
        request.request_id, request.messages, sampling=GREEDY, max_tokens=2000, ignore_eos=True
    )
    tokens_at_stop, stats = 0, None
    for event in smol_engine.generate(request):
        if isinstance(event, Piece) and not tokens_at_stop and event.tokens >= 10:
            tokens_at_stop = event.tokens
            smol_engine.stop()
        elif isinstance(event, Finished):
            stats = event.stats
    assert stats is not None and stats.finish_reason == "stopped"
    # Pieces leave the engine at most every 25 ms (two or three tokens here); after those, at most the
    # token being computed when the stop arrived. (test_session pins "within one token" exactly.)
    assert stats.completion_tokens <= tokens_at_stop + 4
    text, after, _ = _reply(smol_engine, _ask(smol_engine, "What is the capital of France?", max_tokens=48))
    assert "Paris" in text and after.finish_reason != "stopped"


@pytest.mark.real_model
def test_stop_during_prompt_processing(smol_engine: Engine) -> None:
    long_prompt = "word " * 3000  # about 3000 tokens: 47 batches of 64
    request = GenerateRequest(
        smol_engine.new_request_id(), prompt=long_prompt, sampling=GREEDY, max_tokens=8, reuse_cache=False
    )
    events = smol_engine.generate(request)
    smol_engine.stop(request.request_id)  # sent right behind the request: seen between prompt batches
    finished = [e for e in events if isinstance(e, Finished)]
    pieces = [e for e in events if isinstance(e, Piece)]
    assert not pieces
    assert finished[0].stats.finish_reason == "stopped"
    assert finished[0].stats.completion_tokens == 0
    # Stopped inside the prompt, not after it: only some of its 64-token batches were computed.
    assert finished[0].stats.prompt_eval_tokens < finished[0].stats.prompt_tokens


@pytest.mark.real_model
def test_sigkill_mid_reply_is_engine_crashed_and_a_new_engine_works(smollm2_path: Path) -> None:
    engine = Engine(AppPaths.from_env().ensure())
    try:
        engine.load(LoadParams(smollm2_path, n_ctx=1024))
        old_pid = engine.pid
        assert old_pid is not None
        request = GenerateRequest(
            engine.new_request_id(), prompt="Once upon a time", max_tokens=500, ignore_eos=True
        )
        with pytest.raises(EngineCrashed) as crashed:
            for index, event in enumerate(engine.generate(request)):
                if isinstance(event, Piece) and index == 3:
                    os.kill(old_pid, signal.SIGKILL)
        assert "SIGKILL" in crashed.value.user_message
        assert crashed.value.kind is ErrorKind.ENGINE_CRASHED
        assert not engine.alive
        engine.load(LoadParams(smollm2_path, n_ctx=1024))  # a fresh engine process
        assert engine.pid != old_pid
        text, _, _ = _reply(engine, _ask(engine, "What is the capital of France?", max_tokens=32))
        assert "Paris" in text
    finally:
        engine.close()
    assert not engine.alive


def test_segfault_while_idle_is_named(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=128))
        assert engine.pid is not None
        os.kill(engine.pid, signal.SIGSEGV)
        with pytest.raises(EngineCrashed, match="SIGSEGV"):
            engine.stats()


def test_template_injection_runs_no_code(tiny_model_factory: TinyModelFactory, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    hostile = "{{ cycler.__init__.__globals__.os.system('touch " + str(canary) + "') }}"
    model = tiny_model_factory(chat_template=hostile)
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(model, n_ctx=256))
        request = GenerateRequest(engine.new_request_id(), (ChatMessage("user", "hi"),), max_tokens=4)
        _, stats, notices = _reply(engine, request)
    assert not canary.exists()
    assert notices and "could not be used" in notices[0]
    assert stats.notices == tuple(notices)
    assert stats.completion_tokens >= 1


def test_a_long_chat_is_trimmed_with_a_notice(tiny_model_factory: TinyModelFactory) -> None:
    model = tiny_model_factory(context_length=256)
    turns = [ChatMessage("system", "You are terse.")]
    for i in range(12):
        turns.append(ChatMessage("user", f"Question {i}: " + "tell me more " * 6))
        turns.append(ChatMessage("assistant", f"Answer {i}: " + "fine " * 6))
    turns.append(ChatMessage("user", "Last question?"))
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(model))
        request = GenerateRequest(engine.new_request_id(), tuple(turns), max_tokens=16, ignore_eos=True)
        _, stats, notices = _reply(engine, request)
    assert stats.trimmed_messages > 0
    assert stats.prompt_tokens + 16 <= 256
    assert any("oldest" in n for n in notices)
    assert stats.finish_reason == "length" and stats.completion_tokens == 16


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupted_files_never_reach_llama_cpp(kind: str, tiny_model: Path, tmp_path: Path) -> None:
    bad = corrupt(tiny_model, kind, tmp_path / "bad.gguf")
    with pytest.raises(BadModelFile) as checked:
        read_header(bad)
    with Engine(AppPaths.from_env().ensure()) as engine:
        with pytest.raises(AppError) as refused:
            engine.load(LoadParams(bad))
        # The engine's own header check refused it, word for word: llama.cpp never opened it (its errors
        # would be added to the message) and the engine is still there for the next model.
        assert (refused.value.kind, refused.value.user_message) == (
            ErrorKind.BAD_MODEL,
            checked.value.user_message,
        )
        assert engine.alive
        assert engine.load(LoadParams(tiny_model, n_ctx=128)).name


def test_a_model_that_cannot_fit_is_refused_unless_forced(tiny_model_factory: TinyModelFactory) -> None:
    huge_context = 2**27  # 134M tokens: a KV cache of about 64 GB for this tiny model
    model = tiny_model_factory(context_length=huge_context)
    with Engine(AppPaths.from_env().ensure()) as engine:
        with pytest.raises(AppError) as refused:
            engine.load(LoadParams(model, n_ctx=huge_context))
        assert refused.value.kind is ErrorKind.OUT_OF_MEMORY
        assert refused.value.user_message.startswith("Not enough memory: needs about ")
        assert " GB free (RAM)" in refused.value.user_message
        assert engine.model is None
    _, forced = check_load(LoadParams(model, n_ctx=huge_context), force=True)  # the user's override
    assert forced.n_ctx == huge_context


def test_quantized_kv_caches(tiny_model_factory: TinyModelFactory) -> None:
    model = tiny_model_factory(n_head=2, n_head_kv=1)  # head size 32: a multiple of the q8_0/q4_0 block
    with Engine(AppPaths.from_env().ensure()) as engine:
        with pytest.raises(AppError, match="A quantized V cache needs flash attention"):
            engine.load(LoadParams(model, n_ctx=128, type_v="q8_0", flash_attn=False))
        loaded = engine.load(LoadParams(model, n_ctx=128, type_k="q8_0", type_v="q4_0"))
        assert loaded.n_ctx >= 128  # llama.cpp pads the cache of quantized types
        request = GenerateRequest(engine.new_request_id(), prompt="Hello", max_tokens=4, ignore_eos=True)
        assert _reply(engine, request)[1].completion_tokens == 4


def test_llama_cpps_reason_for_refusing_a_load_reaches_the_user(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        with pytest.raises(AppError) as refused:  # head size 16 is not a multiple of q8_0's block of 32
            engine.load(LoadParams(tiny_model, n_ctx=128, type_k="q8_0"))
        assert refused.value.kind is ErrorKind.BAD_MODEL
        assert "does not divide n_embd_head_k=16" in refused.value.user_message
        assert engine.load(LoadParams(tiny_model, n_ctx=128)).n_ctx >= 128  # the engine is still usable


def test_engine_stats_report_memory(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=128))
        stats = engine.stats()
        assert stats.pid == engine.pid
        assert stats.rss_bytes > 1_000_000 and stats.peak_rss_bytes >= stats.rss_bytes // 2
        assert stats.model is not None and stats.model.arch == "llama"
        engine.unload()
        assert engine.stats().model is None
        assert engine.model is None


def test_auto_gpu_layers_follow_the_estimate() -> None:
    from app.runtime.memory import GIB, MemoryEstimate, gpu_layers_that_fit

    need = MemoryEstimate(weights=31 * GIB // 4, kv_cache=GIB, margin=GIB)  # 32 layers + output
    assert gpu_layers_that_fit(need, 32, vram_free=80 * GIB) == 33  # all of it
    partial = gpu_layers_that_fit(need, 32, vram_free=5 * GIB)
    assert 0 < partial < 32
    per_layer = need.weights / 33 + need.kv_cache / 32
    assert partial * per_layer <= 4 * GIB < (partial + 1) * per_layer
    assert gpu_layers_that_fit(need, 32, vram_free=GIB // 2) == 0


def _gpu_available() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


@pytest.mark.real_model
@pytest.mark.skipif(not _gpu_available(), reason="this llama-cpp-python build has no GPU backend")
def test_gpu_offload_generates(smollm2_path: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        model = engine.load(LoadParams(smollm2_path, n_ctx=2048, n_gpu_layers=None))
        assert model.n_gpu_layers != 0
        text, stats, _ = _reply(engine, _ask(engine, "What is the capital of France?", max_tokens=32))
        assert "Paris" in text and stats.tokens_per_s > 0


def test_unknown_architecture_is_named_and_the_engine_survives(tiny_model: Path, tmp_path: Path) -> None:
    data = tiny_model.read_bytes()
    value = (5).to_bytes(8, "little") + b"llama"  # general.architecture's value, the first string "llama"
    strange = tmp_path / "strange.gguf"
    strange.write_bytes(data.replace(value, (5).to_bytes(8, "little") + b"llamq", 1))
    with Engine(AppPaths.from_env().ensure()) as engine:
        with pytest.raises(AppError) as refused:
            engine.load(LoadParams(strange, n_ctx=128))
        assert refused.value.kind is ErrorKind.BAD_MODEL
        assert "llamq" in refused.value.user_message
        assert engine.alive
        assert engine.load(LoadParams(tiny_model, n_ctx=128)).arch == "llama"


def test_llama_cpp_log_goes_to_the_engine_log(tiny_model: Path) -> None:
    paths = AppPaths.from_env().ensure()
    with Engine(paths) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=128))
    log_text = (paths.logs_dir / "engine.log").read_text()
    assert "llama.cpp" in log_text and "n_head" in log_text  # llama.cpp's own model summary


def test_a_reply_nobody_listens_to_is_stopped(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=512))
        endless = GenerateRequest(engine.new_request_id(), prompt="Hi", max_tokens=400, ignore_eos=True)
        stream = engine.generate(endless)
        next(stream)
        stream.close()  # e.g. the window closed the chat: the engine must not go on for 400 tokens
        while not isinstance(event := engine._receive(), Finished):  # the abandoned reply's last events
            pass
        assert event.request_id == endless.request_id
        assert event.stats.finish_reason == "stopped" and event.stats.completion_tokens < 400
        request = GenerateRequest(engine.new_request_id(), prompt="Hello", max_tokens=3, ignore_eos=True)
        assert _reply(engine, request)[1].completion_tokens == 3


def test_a_normal_close_is_not_logged_as_a_crash(tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    for _ in range(3):  # the reader thread sees the pipe end at about the moment close() returns
        with Engine(AppPaths.from_env().ensure()) as engine:
            engine.load(LoadParams(tiny_model, n_ctx=256, n_batch=64))
        time.sleep(0.3)  # the reader has read the end by now
    assert not [r.message for r in caplog.records if "crashed" in r.message]
