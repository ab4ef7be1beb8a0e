"""Where a file from the Hub may be written: under the models dir, at a path made only of plain names.

Names come from the Hub (and so from anyone who can make a repo): no `..`, no absolute or drive paths, no
backslashes, no control or bidirectional-override characters, and no symlink on the way down.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from app.errors import AppError, ErrorKind

_REPO_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def _bad(name: str, why: str) -> AppError:
    return AppError(ErrorKind.BAD_INPUT, f"Refusing the file name {name!r} from the Hub: {why}.")


def _check_component(part: str, whole: str) -> None:
    if part in ("", ".", ".."):
        raise _bad(whole, "it is not a plain relative path")
    for char in part:
        if unicodedata.category(char) in ("Cc", "Cf"):  # control and format (bidi overrides, zero-width)
            raise _bad(whole, "it holds control characters")
    if ":" in part or "\\" in part:
        raise _bad(whole, "it looks like a drive or Windows path")


def target_for(models_dir: Path, repo: str, path: str) -> Path:
    """`<models dir>/<owner>/<name>/<path>`, or AppError(BAD_INPUT) if any part of it is not safe."""
    owner, _, name = repo.partition("/")
    if not (_REPO_PART.match(owner) and _REPO_PART.match(name)) or ".." in repo:
        raise _bad(repo, "it is not an owner/name repo id")
    if path.startswith(("/", "\\")) or len(path) > 1024:
        raise _bad(path, "it is an absolute path")
    for part in path.split("/"):
        _check_component(part, path)
    root = models_dir.resolve()
    target = root / owner / name / path
    current = root
    for part in target.relative_to(root).parts:  # nothing on the way may be a symlink
        current = current / part
        if current.is_symlink():
            raise _bad(path, f"{current} is a symbolic link")
    if not target.resolve().is_relative_to(root):
        raise _bad(path, "it leads outside the models folder")
    return target
