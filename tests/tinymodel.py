"""Tiny random-weight llama models with a real tokenizer, and named corruptions of them.

The tokenizer (and by default the chat template) is copied from the SmolLM2 file, so prompts tokenize as in a
real model; the dimensions are shrunk so the file is a few MB and loads in milliseconds. The output is noise.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter

# Sentinel: use the chat template of the file the tokenizer comes from.
SOURCE_TEMPLATE = "<source>"

_TOKENIZER_KEYS = (
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_space_prefix",
)


@dataclass(frozen=True)
class TinySpec:
    context_length: int = 512
    n_layers: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    chat_template: str | None = SOURCE_TEMPLATE  # None: no template in the file
    seed: int = 0
    name: str = "tiny-llama"


@cache
def _tokenizer_fields(source: Path) -> tuple[tuple[str, GGUFValueType, Any], ...]:
    reader = GGUFReader(source)
    fields = []
    for key in (*_TOKENIZER_KEYS, "tokenizer.chat_template"):
        field = reader.fields.get(key)
        if field is None:
            continue
        value_type = field.types[0]
        fields.append((key, value_type, field.contents()))
    return tuple(fields)


def make_tiny_model(path: Path, tokenizer_source: Path, spec: TinySpec = TinySpec()) -> Path:
    """Write a valid tiny llama GGUF at `path` and return it."""
    rng = np.random.default_rng(spec.seed)
    writer = GGUFWriter(path, "llama")
    writer.add_name(spec.name)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layers)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(spec.n_embd // spec.n_head)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(1)  # mostly F16

    n_vocab = 0
    for key, value_type, value in _tokenizer_fields(tokenizer_source):
        if key == "tokenizer.chat_template":
            continue
        if key == "tokenizer.ggml.tokens":
            n_vocab = len(value)
        if value_type == GGUFValueType.ARRAY:
            writer.add_array(key, value)
        else:
            writer.add_key_value(key, value, value_type)
    template = spec.chat_template
    if template == SOURCE_TEMPLATE:
        source = {k: v for k, _, v in _tokenizer_fields(tokenizer_source)}
        template = source.get("tokenizer.chat_template")
    if template is not None:
        writer.add_chat_template(template)

    def weight(*shape: int, dtype: Any = np.float16) -> np.ndarray[Any, Any]:
        return (rng.standard_normal(shape) * 0.02).astype(dtype)

    head_dim = spec.n_embd // spec.n_head
    n_embd_kv = head_dim * spec.n_head_kv
    # numpy shapes are GGUF shapes reversed: (rows = output features, cols = input features).
    writer.add_tensor("token_embd.weight", weight(n_vocab, spec.n_embd))
    writer.add_tensor("output_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
    for layer in range(spec.n_layers):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.attn_q.weight", weight(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"{prefix}.attn_k.weight", weight(n_embd_kv, spec.n_embd))
        writer.add_tensor(f"{prefix}.attn_v.weight", weight(n_embd_kv, spec.n_embd))
        writer.add_tensor(f"{prefix}.attn_output.weight", weight(spec.n_embd, spec.n_embd))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(spec.n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"{prefix}.ffn_up.weight", weight(spec.n_ff, spec.n_embd))
        writer.add_tensor(f"{prefix}.ffn_down.weight", weight(spec.n_embd, spec.n_ff))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --- corruptions -----------------------------------------------------------------------------------
# Each takes the bytes of a valid file and returns the bytes of a broken one. Header layout (GGUF v3):
# magic[4] version:u32 n_tensors:u64 n_kv:u64, then n_kv entries (key_len:u64 key value_type:u32 value),
# then n_tensors infos (name_len:u64 name n_dims:u32 dims:u64[n_dims] type:u32 offset:u64).

_HEADER_VERSION, _HEADER_N_TENSORS, _HEADER_N_KV, _FIRST_KV = 4, 8, 16, 24


def _patch(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _first_kv_type_offset(data: bytes) -> int:
    (key_len,) = struct.unpack_from("<Q", data, _FIRST_KV)
    return _FIRST_KV + 8 + key_len


def _first_tensor_offset_field(path: Path) -> int:
    """Byte position of the first tensor's data offset in the header."""
    field = GGUFReader(path).tensors[0].field
    return int(field.offset + sum(part.nbytes for part in field.parts[:-1]))


def _tensor_offset_past_end(data: bytes, path: Path) -> bytes:
    return _patch(data, _first_tensor_offset_field(path), "<Q", len(data) * 4)


CORRUPTIONS: dict[str, Callable[[bytes, Path], bytes]] = {
    "bad_magic": lambda data, _: b"GGUX" + data[4:],
    "version_0": lambda data, _: _patch(data, _HEADER_VERSION, "<I", 0),
    "version_max": lambda data, _: _patch(data, _HEADER_VERSION, "<I", 2**32 - 1),
    "huge_tensor_count": lambda data, _: _patch(data, _HEADER_N_TENSORS, "<Q", 2**64 - 1),
    "huge_kv_count": lambda data, _: _patch(data, _HEADER_N_KV, "<Q", 2**64 - 1),
    "huge_string_length": lambda data, _: _patch(data, _FIRST_KV, "<Q", 2**40),
    "unknown_value_type": lambda data, _: _patch(data, _first_kv_type_offset(data), "<I", 99),
    "tensor_offset_past_end": _tensor_offset_past_end,
}


def corrupt(valid: Path, kind: str, out: Path) -> Path:
    """Write the corruption `kind` (a key of CORRUPTIONS) of the valid file `valid` to `out`."""
    out.write_bytes(CORRUPTIONS[kind](valid.read_bytes(), valid))
    return out


def truncate(valid: Path, size: int, out: Path) -> Path:
    """Write the first `size` bytes of `valid` to `out` (0 and 4 give the empty and magic-only files)."""
    with valid.open("rb") as f:
        out.write_bytes(f.read(size))
    return out


def with_uint32_key(source: Path, out: Path, key: str, value: int) -> Path:
    """A copy of the GGUF `source` with one more uint32 metadata key."""
    reader = GGUFReader(source)
    writer = GGUFWriter(out, str(reader.fields["general.architecture"].contents()))
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        value_type = field.types[0]
        if value_type == GGUFValueType.ARRAY:
            writer.add_array(name, field.contents())
        else:
            writer.add_key_value(name, field.contents(), value_type)
    writer.add_uint32(key, value)
    for tensor in reader.tensors:
        writer.add_tensor(
            tensor.name, tensor.data, raw_shape=tensor.shape[::-1], raw_dtype=tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
