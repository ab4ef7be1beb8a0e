"""The model library: GGUF files Hubside downloaded, plus those already on this machine (the Hugging Face
cache, LM Studio's folders, folders the user adds), used where they are. Each file's facts come from its
header alone; a file that cannot be read is listed with the reason, never loaded.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from app.errors import AppError, ErrorKind
from app.hub.quants import is_projector, quant_label
from app.runtime.gguf_header import SHARD_NAME, read_header, shard_files

HUBSIDE, HF_CACHE, LM_STUDIO, FOLDER = "hubside", "hf-cache", "lm-studio", "folder"
_PREFIX = {HUBSIDE: "", HF_CACHE: "hf:", LM_STUDIO: "lms:", FOLDER: "dir:"}


@dataclass(frozen=True)
class LibraryEntry:
    id: str  # what `hubside run ID` takes: "owner/repo:Q4_K_M" (downloaded), "hf:..." "lms:..." "dir:..."
    path: Path  # the model file (the first shard)
    files: tuple[Path, ...]  # every file of it (shards)
    source: str
    repo: str
    quant: str
    size: int
    architecture: str = ""
    parameters: int | None = None
    context_length: int | None = None
    problem: str = ""  # why it cannot be used ("" when it can)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass(frozen=True)
class Root:
    path: Path
    source: str


def hf_cache_dir() -> Path:
    """huggingface_hub's cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    )
    return Path(home) / "hub"


def default_roots(models_dir: Path, extra: Iterable[str] = ()) -> list[Root]:
    home = Path.home()
    return [
        Root(models_dir, HUBSIDE),
        Root(hf_cache_dir(), HF_CACHE),
        Root(home / ".lmstudio" / "models", LM_STUDIO),
        Root(home / ".cache" / "lm-studio" / "models", LM_STUDIO),
        *(Root(Path(folder), FOLDER) for folder in extra),
    ]


def _repo_of(path: Path, root: Root) -> str:
    relative = path.relative_to(root.path).parts
    if root.source == HF_CACHE and relative and relative[0].startswith("models--"):
        return relative[0].removeprefix("models--").replace("--", "/", 1)
    if root.source in (HUBSIDE, LM_STUDIO) and len(relative) >= 3:
        return f"{relative[0]}/{relative[1]}"
    return root.path.name


def _model_files(root: Root) -> list[Path]:
    """The .gguf files under the root (following the HF cache's snapshot links), without projectors and
    without shards after the first; never a `.part`."""
    found = []
    for directory, _, names in os.walk(root.path, followlinks=root.source == HF_CACHE):
        for name in names:
            if not name.lower().endswith(".gguf") or is_projector(name):
                continue
            shard = SHARD_NAME.match(name)
            if shard and int(shard["index"]) != 1:
                continue
            found.append(Path(directory) / name)
    return sorted(found)


def entry_for(path: Path, root: Root) -> LibraryEntry:
    files = shard_files(path)
    size = sum(f.stat().st_size for f in files if f.exists())
    repo = _repo_of(path, root)
    quant = quant_label(path.name) or "?"
    base = LibraryEntry("", path, files, root.source, repo, quant, size)
    missing = [f.name for f in files if not f.exists()]
    if missing:
        return _with_id(base, problem=f"shard {missing[0]} is missing")
    try:
        header = read_header(path)
    except AppError as exc:
        return _with_id(base, problem=exc.user_message)
    context = header.arch_value("context_length")
    return _with_id(
        base,
        quant=header.quant if header.quant not in ("unknown", "GUESSED") else quant,
        architecture=header.architecture,
        parameters=header.n_params or None,
        context_length=int(context) if isinstance(context, int) else None,
    )


def _with_id(entry: LibraryEntry, **changes: Any) -> LibraryEntry:
    entry = replace(entry, **changes)
    label = f"{entry.repo}:{entry.quant}" if entry.source != FOLDER else entry.path.stem
    return replace(entry, id=_PREFIX[entry.source] + label)


def scan(roots: Iterable[Root], hidden: Iterable[str] = ()) -> list[LibraryEntry]:
    """Every model under the roots (a path seen twice, through two roots, counts once), minus the hidden."""
    skip = {str(Path(p)) for p in hidden}
    seen: set[Path] = set()
    entries: list[LibraryEntry] = []
    for root in roots:
        if not root.path.is_dir():
            continue
        for path in _model_files(root):
            real = path.resolve()
            if real in seen or str(path) in skip:
                continue
            seen.add(real)
            entries.append(entry_for(path, root))
    ids: dict[str, int] = {}
    unique = []
    for entry in entries:  # the same repo and quant twice (two folders): number the later ones
        ids[entry.id] = ids.get(entry.id, 0) + 1
        unique.append(entry if ids[entry.id] == 1 else _renamed(entry, f"{entry.id}#{ids[entry.id]}"))
    return unique


def _renamed(entry: LibraryEntry, new_id: str) -> LibraryEntry:
    return replace(entry, id=new_id)


def find(entries: Iterable[LibraryEntry], wanted: str) -> LibraryEntry:
    """The entry with this id (or, failing that, the only one whose id ends with it)."""
    entries = list(entries)
    exact = [e for e in entries if e.id == wanted]
    matches = exact or [e for e in entries if e.id.lower().endswith(wanted.lower())]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AppError(ErrorKind.NOT_FOUND, f"No model {wanted!r} in the library (see `hubside ls`).")
    raise AppError(
        ErrorKind.BAD_INPUT, f"{wanted!r} matches {len(matches)} models: " + ", ".join(e.id for e in matches)
    )


def delete(entry: LibraryEntry, models_dir: Path) -> None:
    """Delete a model Hubside downloaded (its files, and folders left empty). Others are never deleted."""
    if entry.source != HUBSIDE or not entry.path.resolve().is_relative_to(models_dir.resolve()):
        raise AppError(
            ErrorKind.BAD_INPUT, f"{entry.name} was not downloaded by Hubside; it can only be hidden."
        )
    for file in entry.files:
        file.unlink(missing_ok=True)
    folder = entry.path.parent
    while folder.resolve() != models_dir.resolve() and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def disk_usage(entries: Iterable[LibraryEntry]) -> int:
    return sum(e.size for e in entries)
