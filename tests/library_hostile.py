"""A library folder of good models and files that are bad in every way a scan meets: a key of the wrong
type, a link loop, a dangling link and a file whose stat fails."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFWriter

from tests.library_files import write_tiny_gguf

GOOD = ("a-Q4_0.gguf", "c-Q4_0.gguf", "z-Q4_0.gguf")
# file name -> the reason the library gives
BAD = {
    "typed-Q4_K_M.gguf": "the key general.file_type holds a string, not a whole number",
    "loop-Q4_0.gguf": f"it cannot be read ({os.strerror(errno.ELOOP)})",
    "gone-Q4_0.gguf": "it is a link to a file that is not there",
    "locked-Q4_0.gguf": f"it cannot be read ({os.strerror(errno.EACCES)})",
}


def write_typed_gguf(path: Path) -> Path:
    """A GGUF whose general.file_type is a string: every size is right, one type is not."""
    writer = GGUFWriter(path, "llama")
    writer.add_string("general.file_type", "Q4_K_M")
    writer.add_context_length(4096)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_hostile_folder(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """GOOD and BAD under `folder`. Root reads any file whatever its mode, so the failing stat is raised
    for that one path (the link loop fails for root too, from the file system itself)."""
    for name in GOOD:
        write_tiny_gguf(folder / name)
    write_typed_gguf(folder / "typed-Q4_K_M.gguf")
    (folder / "loop-Q4_0.gguf").symlink_to("loop-Q4_0.gguf")
    (folder / "gone-Q4_0.gguf").symlink_to("deleted-Q4_0.gguf")
    locked = write_tiny_gguf(folder / "locked-Q4_0.gguf")
    real_stat = Path.stat

    def stat(self: Path, *, follow_symlinks: bool = True) -> os.stat_result:
        if self == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_stat(self, follow_symlinks=follow_symlinks)

    monkeypatch.setattr(Path, "stat", stat)
    return folder
