"""A grammar per request (llama.cpp's GBNF sampler) and OpenAI's presence/frequency penalties, on real
models in a real engine process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.runtime.engine import Engine
from app.runtime.protocol import (
    ChatMessage,
    Finished,
    GenerateRequest,
    LoadParams,
    Piece,
    ReplyStats,
    SamplingParams,
)

GREEDY = SamplingParams(temperature=0, repeat_penalty=1.0)
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


@pytest.fixture(scope="module")
def smol(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(AppPaths.under(tmp_path_factory.mktemp("grammar-home")).ensure())
    engine.load(LoadParams(smollm2_path, n_ctx=1024, n_batch=64, n_parallel=2))
    yield engine
    engine.close()


def _reply(engine: Engine, request: GenerateRequest) -> tuple[str, ReplyStats]:
    pieces = []
    for event in engine.generate(request):
        if isinstance(event, Piece):
            pieces.append(event.text)
        elif isinstance(event, Finished):
            return "".join(pieces), event.stats
    raise AssertionError("no Finished event")


def _ask(engine: Engine, question: str, **options: object) -> GenerateRequest:
    messages = (ChatMessage("system", "You are a helpful assistant."), ChatMessage("user", question))
    return GenerateRequest(engine.new_request_id(), messages, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("sampling", [GREEDY, SamplingParams(seed=3)], ids=["greedy", "sampled"])
def test_a_json_schema_grammar_gives_json_that_matches_the_schema(
    smol: Engine, sampling: SamplingParams
) -> None:
    grammar = json_schema_to_gbnf(json.dumps(SCHEMA))
    question = "Describe a person as JSON with their name and age."
    text, stats = _reply(smol, _ask(smol, question, sampling=sampling, max_tokens=200, grammar=grammar))
    value = json.loads(text)
    assert stats.finish_reason == "stop"  # the grammar was complete: only the end token was allowed
    assert isinstance(value["name"], str) and isinstance(value["age"], int)
    assert set(value) == {"name", "age"}


def test_any_json_with_the_generic_json_grammar(smol: Engine) -> None:
    text, _ = _reply(
        smol, _ask(smol, "List three fruits.", sampling=GREEDY, max_tokens=300, grammar=JSON_GBNF)
    )
    assert isinstance(json.loads(text), dict)  # JSON_GBNF's root is an object


def test_a_grammar_that_does_not_parse_is_bad_input_and_the_engine_goes_on(smol: Engine) -> None:
    with pytest.raises(AppError) as refused:
        _reply(smol, _ask(smol, "Hi", sampling=GREEDY, max_tokens=8, grammar='root ::= "unclosed'))
    assert refused.value.kind is ErrorKind.BAD_INPUT
    assert "grammar" in refused.value.user_message
    text, stats = _reply(smol, _ask(smol, "What is the capital of France?", sampling=GREEDY, max_tokens=32))
    assert "Paris" in text and stats.finish_reason in ("stop", "length")


def test_presence_and_frequency_penalties_reach_the_sampler(tiny_model: Path) -> None:
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(tiny_model, n_ctx=512, n_batch=64))

        def distinct(**penalties: float) -> int:
            sampling = SamplingParams(temperature=0, repeat_penalty=1.0, **penalties)  # type: ignore[arg-type]
            request = GenerateRequest(
                engine.new_request_id(), prompt="Hello", sampling=sampling, max_tokens=60, ignore_eos=True
            )
            return len(set(_reply(engine, request)[0].split()))

        plain = distinct()
        assert distinct(frequency_penalty=2.0) > plain  # a random model repeats itself greedily: not now
        assert distinct(presence_penalty=2.0) > plain
