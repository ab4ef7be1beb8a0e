"""The generation loop itself, in this process, with a stop flag under the test's control."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.errors import AppError
from app.paths import AppPaths
from app.runtime import session as session_module
from app.runtime.engine import Engine
from app.runtime.gguf_header import read_header
from app.runtime.protocol import ChatMessage, Event, Finished, GenerateRequest, LoadParams, Piece, ReplyStats
from app.runtime.session import LlamaSession, StopMatcher
from tests.conftest import TinyModelFactory
from tests.tinymodel import SOURCE_TEMPLATE


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


CORPUS = Path(__file__).with_name("chat_templates")


def _template(name: str) -> str:
    return (CORPUS / f"{name}.jinja").read_text(encoding="utf-8")


def _session_with(tiny_model_factory: TinyModelFactory, template: str, n_ctx: int = 512) -> LlamaSession:
    model = tiny_model_factory(chat_template=template, context_length=n_ctx)
    return LlamaSession(LoadParams(model, n_ctx=n_ctx, n_batch=64), read_header(model))


def test_a_tiny_model_with_mistral_nemos_template_chats_in_that_format(
    tiny_model_factory: TinyModelFactory,
) -> None:
    model = tiny_model_factory(chat_template=_template("mistralai-Mistral-Nemo-Instruct-2407"))
    chat = (ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"))
    local = LlamaSession(LoadParams(model, n_ctx=512, n_batch=64), read_header(model))
    tokens, prompt, _, notices = local.chat_prompt(chat, 64, None)
    assert prompt.text == f"{local.bos_text}[INST]Be brief.\n\nHi[/INST]" and not notices
    with Engine(AppPaths.from_env().ensure()) as engine:  # the same through the engine process
        engine.load(LoadParams(model, n_ctx=512))
        request = GenerateRequest(engine.new_request_id(), chat, max_tokens=4, ignore_eos=True)
        finished = [e for e in engine.generate(request) if isinstance(e, Finished)]
    assert finished[0].stats.notices == () and finished[0].stats.prompt_tokens == len(tokens)


def test_a_long_chat_keeps_the_models_format_and_renders_a_few_times(
    tiny_model_factory: TinyModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _session_with(tiny_model_factory, SOURCE_TEMPLATE)
    chat = [ChatMessage("system", "Be brief.")]
    for i in range(2500):  # 5,000 messages, far past the render cap if rendered whole
        chat += [ChatMessage("user", f"Question {i} " + "x" * 200), ChatMessage("assistant", f"Answer {i}")]
    chat.append(ChatMessage("user", "Last?"))
    renders = []
    original = session_module.build_prompt

    def counted(*args: Any, **kwargs: Any) -> Any:
        renders.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(session_module, "build_prompt", counted)  # counts renders; renders for real
    tokens, prompt, dropped, notices = local.chat_prompt(chat, 64, None)
    assert prompt.notice is None and prompt.text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert prompt.text.endswith("<|im_start|>user\nLast?<|im_end|>\n<|im_start|>assistant\n")
    assert len(tokens) + 64 <= 512 and dropped > 4900
    assert len(tokens) + 64 > 512 - 120  # the window is full (these turns are near 16 characters a token)
    assert len(renders) <= 3  # counted turns checked by a render, and the window one turn larger
    renders.clear()
    local.chat_prompt([*chat, ChatMessage("assistant", "Sure."), ChatMessage("user", "More?")], 64, None)
    assert len(renders) <= 2  # the next reply, with the template's overhead measured
    assert any("oldest" in n for n in notices)


def test_the_window_drops_no_more_turns_than_it_must(
    tiny_model_factory: TinyModelFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a short chat the template's fixed part looks like a big per-turn overhead: the window is still
    the largest that fits."""
    local = _session_with(tiny_model_factory, SOURCE_TEMPLATE)
    local.chat_prompt([ChatMessage("user", "Hi")], 64, None)
    chat = [
        ChatMessage("user" if i % 2 == 0 else "assistant", f"Turn {i} about the weather") for i in range(301)
    ]
    renders = []
    original = session_module.build_prompt
    monkeypatch.setattr(
        session_module, "build_prompt", lambda *a, **k: renders.append(1) or original(*a, **k)
    )
    tokens, _, dropped, _ = local.chat_prompt(chat, 64, None)
    assert dropped > 0 and len(tokens) + 64 <= 512
    assert local.chat_prompt(chat[dropped - 1 :], 64, None)[2] == 1  # with one turn more it must drop one
    # this reply's: up to two per estimated step while the template's cost is learned anew; the check's two
    assert len(renders) <= 2 * session_module.ESTIMATED_STEPS + 2


def test_a_last_message_too_long_for_the_context_is_said_so(tiny_model_factory: TinyModelFactory) -> None:
    local = _session_with(tiny_model_factory, SOURCE_TEMPLATE)
    huge = ChatMessage("user", " ".join(f"word{i}" for i in range(600)))
    for chat in ([ChatMessage("system", "Be brief."), ChatMessage("user", "Hi"), huge], [huge]):
        with pytest.raises(AppError, match="too long for the context"):
            local.chat_prompt(chat, 64, None)


def test_the_templates_end_of_turn_marker_ends_a_reply(tiny_model_factory: TinyModelFactory) -> None:
    plain = (
        "{% for m in messages %}### {{ m.role }}:\n{{ m.content }}\n\n{% endfor %}"
        "{% if add_generation_prompt %}### assistant:\n{% endif %}"
    )
    assert _session_with(tiny_model_factory, plain).turn_end_stops == ("\n### user:",)
    # a control token that llama.cpp does not count as end of generation ends the reply too
    control = (
        "{% for m in messages %}{{ m.role }}: {{ m.content }}<|im_start|>{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    local = _session_with(tiny_model_factory, control)
    assert local.turn_end_tokens == frozenset(local.tokenize("<|im_start|>", add_bos=False))
    # ChatML's <|im_end|> is already an end-of-generation token: nothing more is needed
    chatml = _session_with(tiny_model_factory, SOURCE_TEMPLATE)
    assert (chatml.turn_end_tokens, chatml.turn_end_stops) == (frozenset(), ())


@pytest.mark.parametrize(
    ("name", "stop", "inside", "at_a_line_start"),
    [
        ("llama-cpp-rwkv-world", "\nUser:", "Ask the User: they know.", "Done.\n\nUser: next"),
        (
            "yandex-YandexGPT-5-Lite-8B-instruct",
            "\n Пользователь:",
            "Спросите, что хочет Пользователь: он знает.",
            "Готово.\n\n Пользователь: дальше",
        ),
    ],
)
def test_a_plain_text_end_of_turn_marker_stops_a_reply_only_at_a_line_start(
    tiny_model_factory: TinyModelFactory, name: str, stop: str, inside: str, at_a_line_start: str
) -> None:
    local = _session_with(tiny_model_factory, _template(name))
    assert (local.turn_end_tokens, local.turn_end_stops) == (frozenset(), (stop,))
    assert StopMatcher(local.turn_end_stops).feed(inside) == (inside, False)
    assert StopMatcher(local.turn_end_stops).feed(at_a_line_start)[1]


def _pieces(local: LlamaSession, request: GenerateRequest) -> tuple[list[Piece], ReplyStats]:
    events: list[Event] = []
    stats = local.generate(request, events.append, lambda: False)
    return [e for e in events if isinstance(e, Piece)], stats


def test_a_reply_inside_a_thinking_block_the_template_opened_is_reasoning(
    tiny_model_factory: TinyModelFactory,
) -> None:
    local = _session_with(tiny_model_factory, _template("Qwen-Qwen3-0.6B"))
    chat = (ChatMessage("user", "Hi"),)
    r1 = _session_with(tiny_model_factory, _template("deepseek-ai-DeepSeek-R1-Distill-Llama-8B"))
    pieces, stats = _pieces(r1, GenerateRequest(2, chat, max_tokens=12, ignore_eos=True, reuse_cache=False))
    assert pieces and all(p.reasoning for p in pieces)  # the R1 distills' prompt ends in "<think>\n"
    assert stats.reasoning_ms > 0
    # Qwen3 with thinking switched off: its template writes an empty block; the reply is the answer
    off = GenerateRequest(3, chat, max_tokens=12, ignore_eos=True, reuse_cache=False, enable_thinking=False)
    prompt = local.chat_prompt(chat, 64, False)[1]
    assert prompt.text.endswith("<think>\n\n</think>\n\n")
    pieces, stats = _pieces(local, off)
    assert pieces and not any(p.reasoning for p in pieces) and stats.reasoning_ms == 0


def test_earlier_reasoning_goes_back_only_where_the_template_keeps_it(
    tiny_model_factory: TinyModelFactory,
) -> None:
    chat = (
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", "Hello!", reasoning="The user greets me."),
        ChatMessage("user", "Again"),
    )
    qwen3 = _session_with(tiny_model_factory, _template("Qwen-Qwen3-0.6B")).chat_prompt(chat, 64, None)[1]
    assert "The user greets me." not in qwen3.text  # Qwen3 drops the thinking of earlier turns
    seed = _session_with(tiny_model_factory, _template("ByteDance-Seed-OSS")).chat_prompt(chat, 64, None)[1]
    assert "The user greets me." in seed.text  # Seed-OSS keeps it


def test_a_follow_up_evaluates_only_its_new_tokens_and_a_sliding_window_rebuilds_once(
    tiny_model_factory: TinyModelFactory,
) -> None:
    local = _session_with(tiny_model_factory, SOURCE_TEMPLATE)
    chat = [ChatMessage("system", "Be brief."), ChatMessage("user", "Hello there")]
    pieces, first = _pieces(local, GenerateRequest(1, tuple(chat), max_tokens=8, ignore_eos=True))
    assert first.prompt_eval_tokens == first.prompt_tokens  # nothing cached yet
    chat += [ChatMessage("assistant", "".join(p.text for p in pieces)), ChatMessage("user", "And then?")]
    _, follow_up = _pieces(local, GenerateRequest(2, tuple(chat), max_tokens=8, ignore_eos=True))
    new = follow_up.prompt_tokens - first.prompt_tokens
    assert 0 < follow_up.prompt_eval_tokens <= new + 8  # the shared prefix came from the KV cache
    long = [chat[0]] + [
        ChatMessage("user" if i % 2 else "assistant", f"Turn {i} " + "y" * 120) for i in range(1, 60)
    ]
    _, slid = _pieces(local, GenerateRequest(3, tuple(long), max_tokens=8, ignore_eos=True))
    assert slid.trimmed_messages > 0 and slid.notices  # the user is told older turns were left out
    _, again = _pieces(local, GenerateRequest(4, tuple(long), max_tokens=8, ignore_eos=True))
    assert again.prompt_eval_tokens < again.prompt_tokens  # the same window: its prefix is reused
