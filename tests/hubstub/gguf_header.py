"""The `gguf` field of model info, read from a GGUF file's header without its arrays.

gguf's GGUFReader builds a numpy view of every array element: a 262k-token vocabulary took it 9-26 s, on
each test run's first model info. Here arrays are skipped (strings by their lengths), except the token
list, whose BOS and EOS entries the Hub shows.
"""

from __future__ import annotations

import mmap
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

# value type -> struct format of one scalar (8: string, 9: array are read apart)
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9
_TOKENS = "tokenizer.ggml.tokens"


class _Header:
    def __init__(self, data: mmap.mmap) -> None:
        self.data = data
        self.pos = 0

    def unpack(self, fmt: str) -> Any:
        (value,) = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return value

    def string(self) -> str:
        length = self.unpack("Q")
        start, self.pos = self.pos, self.pos + length
        return self.data[start : self.pos].decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool) -> Any:
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            return self.unpack(_SCALARS[kind])
        item_kind, count = self.unpack("I"), self.unpack("Q")
        if keep and item_kind == _STRING:
            return [self.string() for _ in range(count)]
        if item_kind in _SCALARS:
            self.pos += count * struct.calcsize("<" + _SCALARS[item_kind])
            return None
        for _ in range(count):
            self.value(item_kind, keep=False)
        return None


@lru_cache(maxsize=64)
def _summary(path: Path, size: int, mtime_ns: int) -> dict[str, Any] | None:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        header = _Header(data)
        if header.unpack("4s") != b"GGUF" or header.unpack("I") < 2:
            return None
        n_tensors, n_kv = header.unpack("Q"), header.unpack("Q")
        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = header.string()
            fields[key] = header.value(header.unpack("I"), keep=key == _TOKENS)
        total = 0
        for _ in range(n_tensors):
            header.string()
            n_dims = header.unpack("I")
            elements = 1
            for dim in struct.unpack_from(f"<{n_dims}Q", data, header.pos):
                elements *= dim
            header.pos += 8 * n_dims + 4 + 8  # the dims, the type, the offset
            total += elements
    arch = fields.get("general.architecture")
    summary = {
        "total": total,
        "architecture": arch,
        "context_length": fields.get(f"{arch}.context_length"),
        "chat_template": fields.get("tokenizer.chat_template"),
    }
    tokens = fields.get(_TOKENS)
    for name in ("bos", "eos"):
        token_id = fields.get(f"tokenizer.ggml.{name}_token_id")
        if tokens is not None and token_id is not None and 0 <= token_id < len(tokens):
            summary[f"{name}_token"] = tokens[token_id]
    return {k: v for k, v in summary.items() if v is not None}


def gguf_summary(path: Path) -> dict[str, Any] | None:
    """Total parameters, architecture, context length, chat template, BOS and EOS tokens; None when the
    file is not a GGUF we can read. Cached by path, size and mtime (one stand-in serves a test run)."""
    try:
        stat = path.stat()
        return _summary(path.resolve(), stat.st_size, stat.st_mtime_ns)
    except (OSError, ValueError, KeyError, struct.error):
        return None
