"""The model library: GGUF files Hubside downloaded, plus those already on this machine (the Hugging Face
cache, LM Studio's folders, folders the user adds), used where they are. Each file's facts come from its
header alone; a file that cannot be read is listed with the reason, never loaded.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from app.errors import AppError, ErrorKind
from app.hub.quants import is_projector, quant_label
from app.library.cache import CachedHeader, HeaderCache, HeaderFacts
from app.runtime.gguf_header import SHARD_NAME, GGUFHeader, read_header, shard_files

log = logging.getLogger(__name__)

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
    follow = root.source == HF_CACHE
    walked: set[tuple[int, int]] = set()
    for directory, folders, names in os.walk(root.path, followlinks=follow):
        if follow and not _first_visit(directory, walked):
            folders.clear()  # a folder link back into what was walked (os.walk does not notice loops)
            continue
        for name in names:
            if not name.lower().endswith(".gguf") or is_projector(name):
                continue
            shard = SHARD_NAME.match(name)
            if shard and int(shard["index"]) != 1:
                continue
            found.append(Path(directory) / name)
    return sorted(found)


def _first_visit(directory: str, walked: set[tuple[int, int]]) -> bool:
    try:
        stamp = Path(directory).stat()
    except OSError:
        return False
    key = (stamp.st_dev, stamp.st_ino)
    if key in walked:
        return False
    walked.add(key)
    return True


class Scanner:
    """Lists the models under the roots, reading a file's header only when the cache (if any) holds nothing
    for its size and mtime; `headers_read` names the files whose header the last scan read."""

    def __init__(self, cache_file: Path | None = None) -> None:
        self.cache_file = cache_file
        self.headers_read: list[Path] = []

    def scan(self, roots: Iterable[Root], hidden: Iterable[str] = ()) -> list[LibraryEntry]:
        """Every model under the roots (a file seen through two roots counts once), minus the hidden."""
        cache = HeaderCache(self.cache_file) if self.cache_file is not None else None
        try:
            headers = _Headers(cache.load() if cache is not None else {})
            entries = _numbered(_entries(roots, hidden, headers))
            if cache is not None:
                cache.save(headers.fresh, (str(e.path) for e in entries))
        finally:
            if cache is not None:
                cache.close()
        self.headers_read = headers.read
        return entries


def scan(roots: Iterable[Root], hidden: Iterable[str] = ()) -> list[LibraryEntry]:
    """A scan that reads every header (no cache)."""
    return Scanner().scan(roots, hidden)


class _Headers:
    """One scan's header facts: the cached ones for files whose size and mtime are unchanged, the others
    read from the file (and kept in `fresh`, for the cache)."""

    def __init__(self, known: dict[str, CachedHeader]) -> None:
        self.known = known
        self.fresh: dict[str, CachedHeader] = {}
        self.read: list[Path] = []

    def facts(self, path: Path, stamp: os.stat_result) -> HeaderFacts:
        cached = self.known.get(str(path))
        if cached is not None and (cached.size, cached.mtime_ns) == (stamp.st_size, stamp.st_mtime_ns):
            return cached.facts
        self.read.append(path)
        try:
            facts = _facts(read_header(path))
        except AppError as exc:
            facts = HeaderFacts(problem=exc.user_message)
            if isinstance(exc.__cause__, OSError):  # unreadable now (permissions, a disk gone), not bad:
                return facts  # not kept, the file is asked again next time
        except Exception as exc:  # a reader bug on one hostile file must not cost the whole library
            log.exception("reading the header of %s failed", path)
            return HeaderFacts(problem=f"its header could not be read ({type(exc).__name__})")
        self.fresh[str(path)] = CachedHeader(stamp.st_size, stamp.st_mtime_ns, facts)
        return facts


def _facts(header: GGUFHeader) -> HeaderFacts:
    context = header.arch_value("context_length")
    return HeaderFacts(
        quant=header.quant if header.quant not in ("unknown", "GUESSED") else "",
        architecture=header.architecture,
        parameters=header.n_params or None,
        context_length=int(context) if isinstance(context, int) else None,
    )


def _entries(roots: Iterable[Root], hidden: Iterable[str], headers: _Headers) -> list[LibraryEntry]:
    skip = {str(Path(p)) for p in hidden}
    seen: set[object] = set()
    entries: list[LibraryEntry] = []
    for root in roots:
        if not _is_dir(root.path):
            continue
        for path in _model_files(root):
            if str(path) in skip:
                continue
            try:
                entry = _new_entry(path, root, headers, seen)
            except Exception as exc:  # whatever one file does (a link loop, a race), it costs that file only
                log.warning("listing %s failed", path, exc_info=True)
                entry = _unusable(path, root, f"it cannot be listed ({_reason(exc)})")
            if entry is not None:
                entries.append(entry)
    return entries


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a root behind a folder this user cannot enter: nothing to list there
        return False


def _new_entry(path: Path, root: Root, headers: _Headers, seen: set[object]) -> LibraryEntry | None:
    """The entry for the file, or None when another root already listed it."""
    try:
        stamp = path.stat()  # follows links: the HF cache's snapshot link gives its blob
    except OSError as exc:
        return _unusable(path, root, _stat_problem(path, exc))
    if not stat.S_ISREG(stamp.st_mode):  # a named pipe would block the first read forever
        return _unusable(path, root, "it is not a regular file")
    identity = _identity(path, stamp)
    if identity in seen:
        return None
    seen.add(identity)
    return entry_for(path, root, stamp, headers)


def _identity(path: Path, stamp: os.stat_result) -> object:
    """The file behind the path, as its real path names it. A file with one directory entry (the usual
    case) is named by its inode alone, without resolve()'s walk over every folder of the path (30 µs a
    file, as much as the rest of a rescan); hard links are different paths to the library: resolved."""
    if stamp.st_nlink == 1:
        return (stamp.st_dev, stamp.st_ino)
    return path.resolve()


def _stat_problem(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and path.is_symlink():
        return "it is a link to a file that is not there"
    return f"it cannot be read ({_reason(exc)})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _unusable(path: Path, root: Root, problem: str) -> LibraryEntry:
    """A file listed with the reason it cannot be used, and what its path alone says."""
    repo = _repo_of(path, root)
    quant = quant_label(path.name) or "?"
    return LibraryEntry(
        _id(path, root, repo, quant), path, (path,), root.source, repo, quant, 0, problem=problem
    )


def _id(path: Path, root: Root, repo: str, quant: str) -> str:
    return _PREFIX[root.source] + (f"{repo}:{quant}" if root.source != FOLDER else path.stem)


def entry_for(path: Path, root: Root, stamp: os.stat_result, headers: _Headers) -> LibraryEntry:
    files = shard_files(path)
    stamps, problem = [stamp], ""
    for shard in files[1:]:
        try:
            stamps.append(shard.stat())
        except OSError as exc:
            unreadable = "is missing" if exc.errno == errno.ENOENT else f"cannot be read ({_reason(exc)})"
            problem = problem or f"shard {shard.name} {unreadable}"
    facts = HeaderFacts(problem=problem) if problem else headers.facts(path, stamp)
    repo = _repo_of(path, root)
    quant = facts.quant or quant_label(path.name) or "?"
    return LibraryEntry(
        _id(path, root, repo, quant),
        path,
        files,
        root.source,
        repo,
        quant,
        sum(s.st_size for s in stamps),
        facts.architecture,
        facts.parameters,
        facts.context_length,
        facts.problem,
    )


def _numbered(entries: list[LibraryEntry]) -> list[LibraryEntry]:
    """The same repo and quant twice (two folders): the later ones get #2, #3..."""
    ids: dict[str, int] = {}
    unique = []
    for entry in entries:
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
    real = Path(os.path.realpath(entry.path))  # unlike resolve(), never raises on a link loop
    if entry.source != HUBSIDE or not real.is_relative_to(models_dir.resolve()):
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
