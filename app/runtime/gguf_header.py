"""A GGUF header reader with caps: every GGUF file is hostile input to C++ code.

It checks magic, version, counts, string and array lengths, value types, tensor shapes, types and data
offsets against the file's real size before llama.cpp sees the file, and never allocates more than the file
holds. Every key Hubside reads must hold the kind of value it is read as (a whole number, a string). Any
problem is one error type, `BadModelFile`, with a message a user can act on.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.errors import AppError, ErrorKind
from app.runtime.ggml_types import FILE_TYPES, TENSOR_TYPES

# A model split in n files: <prefix>-0000k-of-0000n.gguf, k from 1 (llama.cpp opens shard 1, finds the rest).
SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def shard_files(path: Path) -> tuple[Path, ...]:
    """The file, or for shard 1 of n every shard, in order."""
    shard = SHARD_NAME.match(path.name)
    if not shard or int(shard["index"]) != 1:
        return (path,)
    count = int(shard["count"])
    return tuple(
        path.with_name(f"{shard['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    )


# Bumped whenever what the reader accepts or reports changes: the library's cache then reads every header
# once more (2: the types of the keys we read are checked; 3: the block count is capped, per-layer arrays
# are kept in any key order).
READER_REVISION = 3

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1 << 16
MAX_KV = 1 << 16
MAX_STRING = 1 << 24  # 16 MiB: chat templates are large, nothing legitimate is larger
MAX_ARRAY = 1 << 24  # vocabularies and merges have at most a few hundred thousand entries
MAX_DIMS = 4
KEEP_ARRAY_VALUES = 64  # arrays longer than this are checked and skipped, only their length kept
MAX_LAYERS = 512  # llama.cpp's LLAMA_MAX_LAYERS: per-layer arrays of the file's architecture are kept whole
DEFAULT_ALIGNMENT = 32

# The keys Hubside reads, and what each must hold. Sizes alone are not enough: a string file type or an
# array block count would otherwise fail later as a ValueError or TypeError, far from the file's name.
_COUNT, _TEXT, _COUNTS = "a whole number", "a string", "a whole number or one per layer"
_GENERAL_KEYS = {
    "general.architecture": _TEXT,
    "general.name": _TEXT,
    "general.file_type": _COUNT,
    "general.alignment": _COUNT,
    "tokenizer.chat_template": _TEXT,
}
_ARCH_KEYS = {  # under "<architecture>."
    "context_length": _COUNT,
    "block_count": _COUNT,
    "embedding_length": _COUNT,
    "attention.head_count": _COUNTS,
    "attention.head_count_kv": _COUNTS,
    "attention.key_length": _COUNT,
    "attention.value_length": _COUNT,
    "attention.sliding_window": _COUNT,
}
_PER_LAYER = ("attention.head_count", "attention.head_count_kv")

# value type -> (struct format, size); 8 = string, 9 = array
_SCALARS: dict[int, tuple[str, int]] = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<?", 1),
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_STRING, _ARRAY = 8, 9


class BadModelFile(AppError):
    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            ErrorKind.BAD_MODEL, f"{path.name} is not a usable GGUF model: {problem}.", str(path)
        )
        self.problem = problem


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int  # from the start of the data section
    n_bytes: int


@dataclass(frozen=True)
class ArrayInfo:
    """A long array in the metadata, kept as its element type and length."""

    value_type: int
    length: int


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    file_size: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", "unknown"))

    def arch_value(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(f"{self.architecture}.{key}", default)

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name") or self.path.stem)

    @property
    def context_length(self) -> int:
        return int(self.arch_value("context_length", 0) or 0)

    @property
    def block_count(self) -> int:
        return int(self.arch_value("block_count", 0) or 0)

    @property
    def n_params(self) -> int:
        total = 0
        for tensor in self.tensors:
            count = 1
            for dim in tensor.shape:
                count *= dim
            total += count
        return total

    @property
    def quant(self) -> str:
        """The file type label (Q4_K_M, F16...) from `general.file_type`."""
        file_type = self.metadata.get("general.file_type")
        if file_type is None:
            return "unknown"
        return FILE_TYPES.get(int(file_type), f"type {file_type}")

    @property
    def chat_template(self) -> str | None:
        template = self.metadata.get("tokenizer.chat_template")
        return template if isinstance(template, str) else None


def read_header(path: Path) -> GGUFHeader:
    """Parse and check the header of the GGUF file at `path`; raises BadModelFile."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # opening a named pipe would wait for a writer forever
            raise BadModelFile(path, "it is not a regular file")
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise BadModelFile(path, f"the file is too short ({size} bytes) to be a GGUF file")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return _Parser(path, view, size).parse()
    except OSError as exc:
        raise BadModelFile(path, f"it cannot be read ({exc.strerror or exc})") from exc


class HeaderIncomplete(Exception):
    """The bytes given end inside the header: read more of the file (at least `needed` bytes)."""

    def __init__(self, needed: int) -> None:
        super().__init__(f"the header needs at least {needed} bytes")
        self.needed = needed


def parse_header_bytes(path: Path, data: bytes, file_size: int) -> GGUFHeader:
    """Parse the header of a file of `file_size` bytes from its first bytes `data` (a ranged download of a
    remote file); raises HeaderIncomplete when `data` ends inside the header, BadModelFile when it is bad."""
    return _Parser(path, data, file_size).parse()


class _Parser:
    def __init__(self, path: Path, view: mmap.mmap | bytes, size: int) -> None:
        self.path = path
        self.view = view
        self.size = size  # of the whole file
        self.available = min(len(view), size)  # of it in `view`
        self.pos = 0
        self.metadata: dict[str, Any] = {}

    def fail(self, problem: str) -> BadModelFile:
        return BadModelFile(self.path, problem)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"the file ends inside its header ({what} at byte {self.pos})")
        if self.pos + n > self.available:
            raise HeaderIncomplete(self.pos + n)

    def unpack(self, fmt: str, n: int, what: str) -> Any:
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.view, self.pos)
        self.pos += n
        return value

    def string(self, what: str) -> str:
        length = self.unpack("<Q", 8, what)
        if length > MAX_STRING:
            raise self.fail(f"a {what} claims {length} bytes (more than {MAX_STRING})")
        self.need(length, what)
        raw = self.view[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def skip_string(self, what: str) -> None:
        length = self.unpack("<Q", 8, what)
        if length > MAX_STRING:
            raise self.fail(f"a {what} claims {length} bytes (more than {MAX_STRING})")
        self.need(length, what)
        self.pos += length

    def value(self, value_type: int, key: str) -> Any:
        if value_type in _SCALARS:
            fmt, n = _SCALARS[value_type]
            return self.unpack(fmt, n, f"value of {key}")
        if value_type == _STRING:
            return self.string(f"string value of {key}")
        if value_type == _ARRAY:
            item_type = self.unpack("<I", 4, f"array type of {key}")
            length = self.unpack("<Q", 8, f"array length of {key}")
            if item_type not in _SCALARS and item_type != _STRING:
                raise self.fail(f"the array {key} has an unknown element type {item_type}")
            min_item = _SCALARS[item_type][1] if item_type in _SCALARS else 8
            if length > MAX_ARRAY or length * min_item > self.size - self.pos:
                raise self.fail(f"the array {key} claims {length} elements, more than the file holds")
            if length <= KEEP_ARRAY_VALUES or (length <= MAX_LAYERS and self.per_layer(key)):
                return [self.value(item_type, key) for _ in range(length)]
            if item_type == _STRING:
                for _ in range(length):
                    self.skip_string(f"string in {key}")
            else:
                self.pos += length * min_item
            return ArrayInfo(item_type, length)
        raise self.fail(f"the key {key} has an unknown value type {value_type}")

    def parse(self) -> GGUFHeader:
        self.need(4, "magic")
        if self.view[:4] != MAGIC:
            raise self.fail("it does not start with the GGUF magic bytes")
        self.pos = 4
        version = self.unpack("<I", 4, "version")
        if version not in SUPPORTED_VERSIONS:
            raise self.fail(f"GGUF version {version} is not supported (only versions 2 and 3)")
        n_tensors = self.unpack("<Q", 8, "tensor count")
        n_kv = self.unpack("<Q", 8, "metadata count")
        if n_tensors > MAX_TENSORS:
            raise self.fail(f"it claims {n_tensors} tensors (more than {MAX_TENSORS})")
        if n_kv > MAX_KV:
            raise self.fail(f"it claims {n_kv} metadata entries (more than {MAX_KV})")

        metadata = self.metadata
        for _ in range(n_kv):
            key = self.string("metadata key")
            if key in metadata:
                raise self.fail(f"the metadata key {key} appears twice")
            value_type = self.unpack("<I", 4, f"value type of {key}")
            metadata[key] = self.value(value_type, key)

        self.check_types(metadata)
        infos = [self.tensor_info() for _ in range(n_tensors)]
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if alignment <= 0 or alignment & (alignment - 1):
            raise self.fail(f"its alignment {alignment!r} is not a power of two")
        data_offset = -(-self.pos // alignment) * alignment
        data_size = self.size - data_offset
        tensors = []
        seen: set[str] = set()
        for name, shape, ggml_type, offset in infos:
            if name in seen:
                raise self.fail(f"the tensor {name} appears twice")
            seen.add(name)
            n_bytes = self.tensor_bytes(name, shape, ggml_type)
            if offset % alignment:
                raise self.fail(f"the tensor {name} is not aligned to {alignment} bytes")
            if offset + n_bytes > data_size:
                raise self.fail(f"the tensor {name} runs past the end of the file (truncated download?)")
            tensors.append(TensorInfo(name, shape, ggml_type, offset, n_bytes))
        return GGUFHeader(self.path, version, self.size, metadata, tuple(tensors), data_offset)

    def per_layer(self, key: str) -> bool:
        """A per-layer array (of any architecture: the file may name its architecture after it); each is
        at most MAX_LAYERS small numbers, so keeping them whole stays small."""
        return key.endswith(tuple(f".{name}" for name in _PER_LAYER))

    def check_types(self, metadata: dict[str, Any]) -> None:
        """Every key Hubside reads holds the kind of value it must (absent keys are fine)."""
        arch = metadata.get("general.architecture")
        wanted = dict(_GENERAL_KEYS)
        if isinstance(arch, str):
            wanted.update({f"{arch}.{name}": kind for name, kind in _ARCH_KEYS.items()})
        for key, kind in wanted.items():
            if key in metadata and not _holds(metadata[key], kind):
                raise self.fail(f"the key {key} holds {_described(metadata[key])}, not {kind}")
        layers = metadata.get(f"{arch}.block_count", 0)
        if layers > MAX_LAYERS:  # the memory estimate keeps a value per layer: bounded before it runs
            raise self.fail(
                f"the key {arch}.block_count says {layers:,} layers (llama.cpp allows {MAX_LAYERS})"
            )

    def tensor_info(self) -> tuple[str, tuple[int, ...], int, int]:
        name = self.string("tensor name")
        n_dims = self.unpack("<I", 4, f"dimension count of {name}")
        if not 1 <= n_dims <= MAX_DIMS:
            raise self.fail(f"the tensor {name} has {n_dims} dimensions")
        shape = tuple(self.unpack("<Q", 8, f"shape of {name}") for _ in range(n_dims))
        ggml_type = self.unpack("<I", 4, f"type of {name}")
        offset = self.unpack("<Q", 8, f"offset of {name}")
        return name, shape, ggml_type, offset

    def tensor_bytes(self, name: str, shape: tuple[int, ...], ggml_type: int) -> int:
        if ggml_type not in TENSOR_TYPES:
            raise self.fail(f"the tensor {name} uses an unsupported quantization (ggml type {ggml_type})")
        _, block, block_bytes = TENSOR_TYPES[ggml_type]
        count = 1
        for dim in shape:
            if dim < 1 or dim > self.size * 8:
                raise self.fail(f"the tensor {name} has an impossible shape {shape}")
            count *= dim
        if shape[0] % block:
            raise self.fail(f"the tensor {name} has a shape {shape} that does not fit its blocks")
        return count // block * block_bytes


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _holds(value: Any, kind: str) -> bool:
    if kind == _TEXT:
        return isinstance(value, str)
    if kind == _COUNTS and isinstance(value, list):
        return all(_is_count(v) for v in value)
    return _is_count(value)


def _described(value: Any) -> str:
    """What a value is, for a message (never the value itself when it is long)."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return f"the number {value}"
    if isinstance(value, float):
        return "a fractional number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, ArrayInfo):
        return f"an array of {value.length} values"
    if isinstance(value, list):
        counts = all(_is_count(v) for v in value)
        return f"an array of {len(value)} values" if counts else "an array not all of whole numbers"
    return type(value).__name__
