"""The test models: real files from PyPI and tiny generated ones, run through the real llama.cpp."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from gguf import GGUFReader

from tests import models
from tests.conftest import TinyModelFactory
from tests.tinymodel import CORRUPTIONS, corrupt, truncate


def _generate(path: Path, n_ctx: int, prompt: str, max_tokens: int = 8) -> tuple[str, int]:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_threads=2,
        n_batch=64,
        seed=7,
        verbose=False,
    )
    try:
        out = llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0)
        return out["choices"][0]["text"], out["usage"]["completion_tokens"]
    finally:
        llm.close()


@pytest.mark.real_model
def test_real_smollm2_generates_tokens(smollm2_path: Path) -> None:
    assert models.sha256_of(smollm2_path) == models.SMOLLM2.sha256
    text, n_tokens = _generate(smollm2_path, 512, "The capital of France is")
    assert n_tokens > 0
    assert text.strip()


@pytest.mark.real_model
def test_real_gemma3_is_verified_and_generates(gemma3_path: Path) -> None:
    reader = GGUFReader(gemma3_path)
    assert reader.fields["general.architecture"].contents() == "gemma3"
    assert models.sha256_of(gemma3_path) == models.GEMMA3.sha256
    _, n_tokens = _generate(gemma3_path, 256, "Once upon a time")
    assert n_tokens > 0


def test_fetch_reuses_the_verified_cache(smollm2_path: Path) -> None:
    mtime = smollm2_path.stat().st_mtime_ns
    assert models.fetch(models.SMOLLM2) == smollm2_path
    assert smollm2_path.stat().st_mtime_ns == mtime


def test_tiny_model_is_small_and_generates(tiny_model: Path) -> None:
    assert tiny_model.stat().st_size < 16 * 1024 * 1024
    _, n_tokens = _generate(tiny_model, 128, "Hello")
    assert n_tokens == 8  # random weights rarely pick the end token in 8 steps; none is stopped early


def test_tiny_model_options_are_in_the_header(tiny_model_factory: TinyModelFactory) -> None:
    custom = "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    path = tiny_model_factory(context_length=2048, n_layers=3, chat_template=custom)
    reader = GGUFReader(path)
    assert reader.fields["llama.context_length"].contents() == 2048
    assert reader.fields["llama.block_count"].contents() == 3
    assert reader.fields["tokenizer.chat_template"].contents() == custom
    assert len(reader.fields["tokenizer.ggml.tokens"].contents()) == 49152
    without = GGUFReader(tiny_model_factory(chat_template=None))
    assert "tokenizer.chat_template" not in without.fields

    import llama_cpp

    llm = llama_cpp.Llama(str(path), n_ctx=0, n_threads=2, verbose=False)
    try:
        assert llm.n_ctx() == 2048  # n_ctx=0 means "the model's trained context"
        assert llm.metadata["tokenizer.chat_template"] == custom
        assert llm.tokenize(b"Hello world") == llm.tokenize(b"Hello world")
        assert llm.detokenize(llm.tokenize(b"Hello world", add_bos=False)) == b"Hello world"
    finally:
        llm.close()


def _header(data: bytes) -> tuple[bytes, int, int, int]:
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data)
    return magic, version, n_tensors, n_kv


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruptions_break_exactly_what_they_name(kind: str, tiny_model: Path, tmp_path: Path) -> None:
    valid = tiny_model.read_bytes()
    broken = corrupt(tiny_model, kind, tmp_path / f"{kind}.gguf").read_bytes()
    assert len(broken) == len(valid)
    assert broken != valid
    magic, version, n_tensors, n_kv = _header(broken)
    expected = {
        "bad_magic": magic == b"GGUX",
        "version_0": version == 0,
        "version_max": version == 2**32 - 1,
        "huge_tensor_count": n_tensors == 2**64 - 1,
        "huge_kv_count": n_kv == 2**64 - 1,
        "huge_string_length": struct.unpack_from("<Q", broken, 24)[0] == 2**40,
    }
    if kind in expected:
        assert expected[kind]
    if kind == "unknown_value_type":
        (key_len,) = struct.unpack_from("<Q", broken, 24)
        assert struct.unpack_from("<I", broken, 32 + key_len)[0] == 99
    if kind == "tensor_offset_past_end":
        # gguf's own reader notices the tensor data runs past the end of the file.
        with pytest.raises((ValueError, IndexError)):
            reader = GGUFReader(tmp_path / f"{kind}.gguf")
            _ = [t.data.shape for t in reader.tensors]
    if kind == "bad_magic":
        with pytest.raises(ValueError):
            GGUFReader(tmp_path / f"{kind}.gguf")


@pytest.mark.parametrize("size", [0, 4, 24, 1000])
def test_truncations_keep_only_the_first_bytes(size: int, tiny_model: Path, tmp_path: Path) -> None:
    cut = truncate(tiny_model, size, tmp_path / "cut.gguf")
    assert cut.read_bytes() == tiny_model.read_bytes()[:size]
