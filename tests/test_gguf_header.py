"""The GGUF header check: real files pass, every kind of broken file is one error type, fast and small."""

from __future__ import annotations

import contextlib
import os
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.runtime.gguf_header import BadModelFile, read_header
from app.runtime.memory import kv_cache_bytes
from tests.tinymodel import CORRUPTIONS, corrupt, truncate


def _string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def _mini_gguf(
    kvs: list[tuple[str, int, bytes]] | None = None,
    tensor_offset: int = 0,
    alignment: int = 32,
    version: int = 3,
) -> bytes:
    """A small valid-by-default GGUF: a few metadata entries and one 8-float F32 tensor."""
    kvs = kvs or [
        ("general.architecture", 8, _string("llama")),
        ("llama.context_length", 4, struct.pack("<I", 128)),
        ("general.name", 8, _string("mini")),
    ]
    header = b"GGUF" + struct.pack("<IQQ", version, 1, len(kvs))
    for key, value_type, value in kvs:
        header += _string(key) + struct.pack("<I", value_type) + value
    header += (
        _string("w") + struct.pack("<I", 1) + struct.pack("<Q", 8) + struct.pack("<IQ", 0, tensor_offset)
    )
    padding = -len(header) % alignment
    return header + bytes(padding) + struct.pack("<8f", *range(8))


def _write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.real_model
def test_real_models_parse(smollm2_path: Path, gemma3_path: Path) -> None:
    smol = read_header(smollm2_path)
    assert (smol.architecture, smol.quant, smol.context_length, smol.block_count) == (
        "llama",
        "Q4_1",
        8192,
        30,
    )
    assert smol.n_params == 134_515_008
    assert smol.chat_template and "im_start" in smol.chat_template
    gemma = read_header(gemma3_path)
    assert (gemma.architecture, gemma.quant, gemma.block_count) == ("gemma3", "Q4_K_M", 18)
    assert gemma.arch_value("attention.sliding_window") == 512


def test_mini_file_parses(tmp_path: Path) -> None:
    header = read_header(_write(tmp_path, _mini_gguf()))
    assert header.architecture == "llama"
    assert header.context_length == 128
    assert header.tensors[0].n_bytes == 32


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_named_corruption_is_rejected_small(kind: str, tiny_model: Path, tmp_path: Path) -> None:
    broken = corrupt(tiny_model, kind, tmp_path / f"{kind}.gguf")
    tracemalloc.start()
    try:
        with pytest.raises(BadModelFile) as raised:
            read_header(broken)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # a claimed 2^64 count or 2^40-byte string allocates nothing big
    assert raised.value.user_message.startswith(f"{kind}.gguf is not a usable GGUF model: ")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (_mini_gguf(version=0), "version 0"),
        (_mini_gguf(version=2**32 - 1), "version 4294967295"),
        (_mini_gguf(tensor_offset=4096), "runs past the end"),
        (_mini_gguf(tensor_offset=4), "not aligned"),
        (_mini_gguf(kvs=[("a", 99, b"")]), "unknown value type 99"),
        (_mini_gguf(kvs=[("a", 4, b"\0" * 4), ("a", 4, b"\0" * 4)]), "appears twice"),
        (_mini_gguf(kvs=[("general.alignment", 4, struct.pack("<I", 3))], alignment=3), "power of two"),
        (_mini_gguf(kvs=[("a", 9, struct.pack("<IQ", 8, 2**62))]), "more than the file holds"),
        (b"", "too short"),
        (b"GGUF", "too short"),
        (b"\0" * 64, "magic"),
    ],
)
def test_bad_headers_say_what_is_wrong(data: bytes, problem: str, tmp_path: Path) -> None:
    with pytest.raises(BadModelFile) as raised:
        read_header(_write(tmp_path, data))
    assert problem in raised.value.problem


def test_unsupported_quantization_is_named(tmp_path: Path) -> None:
    data = bytearray(_mini_gguf())
    type_at = data.index(_string("w")) + len(_string("w")) + 4 + 8
    struct.pack_into("<I", data, type_at, 250)
    with pytest.raises(BadModelFile, match="unsupported quantization"):
        read_header(_write(tmp_path, bytes(data)))


def test_truncation_at_every_byte_is_rejected(tmp_path: Path) -> None:
    valid = _mini_gguf()
    source = _write(tmp_path, valid, "valid.gguf")
    read_header(source)
    for size in range(len(valid)):
        with pytest.raises(BadModelFile):
            read_header(truncate(source, size, tmp_path / "cut.gguf"))


def test_truncated_real_sized_file_is_rejected(tiny_model: Path, tmp_path: Path) -> None:
    size = tiny_model.stat().st_size
    for cut in (size - 1, size // 2, 3_000_000, 1000):
        with pytest.raises(BadModelFile):
            read_header(truncate(tiny_model, cut, tmp_path / "cut.gguf"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_any_flipped_byte_parses_or_is_rejected_cleanly(position: int, value: int, tmp_path: Path) -> None:
    data = bytearray(_mini_gguf())
    data[position % len(data)] = value
    with contextlib.suppress(BadModelFile):
        read_header(_write(tmp_path, bytes(data)))


def test_our_type_tables_match_the_gguf_package() -> None:
    from gguf import GGML_QUANT_SIZES, LlamaFileType

    from app.runtime.ggml_types import FILE_TYPES, TENSOR_TYPES

    assert {int(t): (t.name, *sizes) for t, sizes in GGML_QUANT_SIZES.items()} == TENSOR_TYPES
    assert {int(f): f.name.removeprefix("MOSTLY_").removeprefix("ALL_") for f in LlamaFileType} == FILE_TYPES


def test_checking_a_model_imports_neither_gguf_nor_numpy(smollm2_path: Path) -> None:
    # An import of numpy holds the interpreter lock for tens of ms: the window would stutter on a load.
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from app.runtime.engine import Engine; "
        "from app.runtime.gguf_header import read_header; "
        f"h = read_header(Path({str(smollm2_path)!r})); print(h.quant); "
        "print(sorted(m for m in ('gguf', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:2] == ["Q4_1", "[]"]


def _gguf_with(path: Path, add: Callable[[GGUFWriter], None]) -> Path:
    """A small llama GGUF written by the gguf package, with `add` putting in the keys under test."""
    writer = GGUFWriter(path, "llama")
    add(writer)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# Keys Hubside reads, each holding the wrong kind of value: before the type checks these raised ValueError
# or TypeError where the value was used (or passed silently and broke the memory estimate).
WRONG_TYPES: dict[str, Callable[[GGUFWriter], None]] = {
    "general.file_type": lambda w: w.add_string("general.file_type", "Q4_K_M"),
    "llama.block_count": lambda w: w.add_array("llama.block_count", [2, 2]),
    "llama.context_length": lambda w: w.add_float32("llama.context_length", 4096.5),
    "general.name": lambda w: w.add_uint32("general.name", 7),
    "llama.embedding_length": lambda w: w.add_int32("llama.embedding_length", -64),
    "llama.attention.head_count_kv": lambda w: w.add_array("llama.attention.head_count_kv", ["a", "b"]),
    "llama.attention.head_count": lambda w: w.add_bool("llama.attention.head_count", True),
    "tokenizer.chat_template": lambda w: w.add_uint64("tokenizer.chat_template", 1),
    "general.alignment": lambda w: w.add_string("general.alignment", "32"),
}


@pytest.mark.parametrize("key", sorted(WRONG_TYPES))
def test_a_key_of_the_wrong_type_is_a_bad_model_file_naming_it(key: str, tmp_path: Path) -> None:
    path = _gguf_with(tmp_path / "typed.gguf", WRONG_TYPES[key])
    with pytest.raises(BadModelFile) as raised:
        header = read_header(path)
        # What used to fail late: the properties and the memory estimate every caller uses.
        facts = (header.quant, header.name, header.context_length, header.block_count, header.chat_template)
        kv_cache_bytes(header, 512)
        pytest.fail(f"read as {facts}")
    assert f"the key {key} holds " in raised.value.problem


def test_an_architecture_that_is_not_a_string_is_named(tmp_path: Path) -> None:
    data = _mini_gguf(kvs=[("general.architecture", 4, struct.pack("<I", 7))])
    with pytest.raises(BadModelFile, match=r"the key general\.architecture holds the number 7, not a string"):
        read_header(_write(tmp_path, data))


def test_per_layer_head_counts_of_a_deep_model_are_kept(tmp_path: Path) -> None:
    # 80 layers with one KV head count each (as Nemotron-51B has): more than the 64 values other arrays keep.
    layers = 80

    def add(writer: GGUFWriter) -> None:
        writer.add_block_count(layers)
        writer.add_embedding_length(64)
        writer.add_head_count(4)
        writer.add_array("llama.attention.head_count_kv", [1, 2] * (layers // 2))

    header = read_header(_gguf_with(tmp_path / "deep.gguf", add))
    assert header.arch_value("attention.head_count_kv") == [1, 2] * (layers // 2)
    assert kv_cache_bytes(header, 100) == 100 * 2 * 16 * 2 * (layers // 2) * (1 + 2)


@pytest.mark.timeout(30)
def test_a_named_pipe_is_rejected_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.gguf")
    with pytest.raises(BadModelFile, match="it is not a regular file"):
        read_header(tmp_path / "pipe.gguf")


def test_per_layer_query_head_counts_give_a_memory_estimate(tmp_path: Path) -> None:
    # head_count may be one per layer (OpenELM does this): the estimate takes the largest for head_dim.
    def add(writer: GGUFWriter) -> None:
        writer.add_block_count(2)
        writer.add_embedding_length(64)
        writer.add_array("llama.attention.head_count", [2, 4])
        writer.add_head_count_kv(1)

    header = read_header(_gguf_with(tmp_path / "openelm-like.gguf", add))
    assert kv_cache_bytes(header, 100) == 100 * 2 * (16 + 16) * 2  # 2 layers x 1 KV head, head_dim 64/4


def test_a_block_count_past_llama_cpps_layer_limit_is_refused_before_any_estimate(tmp_path: Path) -> None:
    # The memory estimate builds one entry per layer: 2^31 layers would need about 17 GB in the window.
    path = _gguf_with(tmp_path / "deep.gguf", lambda writer: writer.add_block_count(20_000_000))
    with pytest.raises(BadModelFile, match=r"llama\.block_count .*20,000,000 layers"):
        read_header(path)


def test_per_layer_head_counts_are_kept_whatever_the_key_order(tmp_path: Path) -> None:
    layers = 80
    per_layer = struct.pack("<IQ", 4, layers) + struct.pack(f"<{layers}I", *([1, 2] * (layers // 2)))
    kvs = [  # the per-layer array before general.architecture: valid GGUF, in any order
        ("llama.attention.head_count_kv", 9, per_layer),
        ("general.architecture", 8, _string("llama")),
        ("llama.block_count", 4, struct.pack("<I", layers)),
    ]
    header = read_header(_write(tmp_path, _mini_gguf(kvs=kvs)))
    assert header.arch_value("attention.head_count_kv") == [1, 2] * (layers // 2)
