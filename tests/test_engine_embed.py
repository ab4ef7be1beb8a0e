"""Embeddings from the engine (OpenAI's /v1/embeddings): real llama.cpp on SmolLM2, mean pooling."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.runtime.engine import Engine
from app.runtime.protocol import Finished, GenerateRequest, LoadParams, SamplingParams
from tests.tinymodel import with_uint32_key

TEXTS = ("The cat sat on the mat.", "Quarterly revenue grew by four percent.", "The cat sat on the mat.")


@pytest.fixture(scope="module")
def smol(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(AppPaths.under(tmp_path_factory.mktemp("embed-home")).ensure())
    engine.load(LoadParams(smollm2_path, n_ctx=1024, n_batch=64))
    yield engine
    engine.close()


def _cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # both have length 1


def test_one_normalised_vector_per_text(smol: Engine) -> None:
    before = smol.stats().rss_bytes
    embedded = smol.embed(TEXTS)
    grown = smol.stats().rss_bytes - before
    print(f"the embeddings context added {grown / 2**20:.1f} MiB to the engine")
    same, other, again = embedded.vectors
    assert len(same) == 576  # SmolLM2-135M's n_embd
    assert all(math.isclose(math.fsum(x * x for x in v), 1.0, rel_tol=1e-6) for v in embedded.vectors)
    assert same == again  # the same text, the same vector
    assert math.isclose(_cosine(same, same), 1.0, rel_tol=1e-6)
    assert _cosine(same, other) < 0.99  # different texts differ
    assert smol.embed(TEXTS[:1]).vectors[0] == same  # and again in a later call
    tokens = sum(smol.embed((text,)).prompt_tokens for text in TEXTS)
    assert embedded.prompt_tokens == tokens and 15 < tokens < 40


def test_similar_texts_are_nearer_than_unrelated_ones(smol: Engine) -> None:
    cat, kitten, money = smol.embed(
        ("A cat sleeps on the sofa.", "A kitten naps on the couch.", "Interest rates rose sharply.")
    ).vectors
    assert _cosine(cat, kitten) > _cosine(cat, money)


def test_embeddings_and_replies_share_the_engine(smol: Engine) -> None:
    request = GenerateRequest(
        smol.new_request_id(), prompt="Hello", sampling=SamplingParams(temperature=0), max_tokens=4
    )
    events = list(smol.generate(request))
    assert isinstance(events[-1], Finished)
    assert len(smol.embed(("after a reply",)).vectors) == 1


def test_a_reranker_cannot_make_embeddings(tiny_model: Path, tmp_path: Path) -> None:
    rank_pooling = 4
    reranker = with_uint32_key(tiny_model, tmp_path / "reranker.gguf", "llama.pooling_type", rank_pooling)
    with Engine(AppPaths.from_env().ensure()) as engine:
        engine.load(LoadParams(reranker, n_ctx=256, n_batch=64))
        with pytest.raises(AppError) as refused:
            engine.embed(("hello",))
        assert refused.value.kind is ErrorKind.BAD_INPUT
        assert refused.value.user_message == "tiny-llama cannot make embeddings."
        request = GenerateRequest(engine.new_request_id(), prompt="Hi", max_tokens=3, ignore_eos=True)
        assert isinstance(list(engine.generate(request))[-1], Finished)  # the engine goes on
