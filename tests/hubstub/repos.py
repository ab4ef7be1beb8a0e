"""The stand-in's data: repositories with files, each at one commit, and the JSON the Hub gives for them."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from tests.hubstub.gguf_header import gguf_summary

# Files stored in LFS on the Hub (and so redirected to the CDN); everything else is a plain git blob.
LFS_SUFFIXES = (".gguf", ".bin", ".safetensors", ".pt", ".onnx", ".part00")
LFS_MIN_SIZE = 10 * 1024 * 1024
META_FILE = ".hub.json"  # per-repo metadata in a served folder; never served as a file
_EPOCH = "2025-01-01T00:00:00.000Z"
# A listing row without `expand`, as the real Hub sends it (2026).
LISTING_FIELDS = (
    "_id", "id", "likes", "trendingScore", "private", "downloads", "tags", "pipeline_tag", "library_name",
    "createdAt", "modelId",
)  # fmt: skip


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class StubFile:
    path: str
    source: Path | None = None  # on disk, read lazily
    data: bytes | None = None  # in memory
    listed_size: int | None = None  # listing only: a file of this many zero bytes (a 40 GB quant, say)
    in_git: bool = False  # kept in git even though LFS would be usual (a small GGUF): no lfs, no CDN
    lfs_listed: bool = True  # False: in LFS, but model info's sibling lacks `lfs` (its blobId: the pointer's)

    @property
    def size(self) -> int:
        if self.listed_size is not None:
            return self.listed_size
        return len(self.data) if self.data is not None else self._disk().stat().st_size

    def _disk(self) -> Path:
        assert self.source is not None
        return self.source

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file."""
        if self.listed_size is not None:
            return bytes(max(0, min(end, self.size) - start))
        if self.data is not None:
            return self.data[start:end]
        with self._disk().open("rb") as f:
            f.seek(start)
            return f.read(end - start)

    @property
    def is_lfs(self) -> bool:
        return not self.in_git and (self.path.lower().endswith(LFS_SUFFIXES) or self.size >= LFS_MIN_SIZE)

    @cached_property
    def sha256(self) -> str:
        if self.listed_size is not None:  # a stand-in value: hashing gigabytes of zeros helps no test
            return hashlib.sha256(f"{self.path}:{self.listed_size}".encode()).hexdigest()
        if self.data is not None:
            return hashlib.sha256(self.data).hexdigest()
        stat = self._disk().stat()  # one stand-in serves a whole test run: hash each file on disk once
        return _file_sha256(self._disk().resolve(), stat.st_size, stat.st_mtime_ns)

    @property
    def lfs_pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
        ).encode()

    @cached_property
    def git_oid(self) -> str:
        """The git blob id: of the LFS pointer for LFS files, of the content otherwise."""
        if self.is_lfs:
            return _git_blob_oid(self.lfs_pointer)
        return _git_blob_oid(self.read(0, self.size))

    @cached_property
    def xet_hash(self) -> str:
        """The Xet storage hash, which the CDN sends as its ETag: not the sha256 (a stand-in value)."""
        return hashlib.sha256(b"xet:" + self.sha256.encode()).hexdigest()

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "type": "file",
            "oid": self.git_oid,
            "size": self.size,
            "path": self.path,
        }
        if self.is_lfs:
            entry["lfs"] = {
                "oid": self.sha256,
                "size": self.size,
                "pointerSize": len(self.lfs_pointer),
            }
            entry["xetHash"] = self.xet_hash
        return entry

    def sibling(self, blobs: bool) -> dict[str, Any]:
        if not blobs:
            return {"rfilename": self.path}
        entry: dict[str, Any] = {"rfilename": self.path, "size": self.size, "blobId": self.git_oid}
        if self.is_lfs and self.lfs_listed:
            entry["lfs"] = {
                "sha256": self.sha256,
                "size": self.size,
                "pointerSize": len(self.lfs_pointer),
            }
        return entry


@dataclass
class StubRepo:
    repo_id: str
    files: dict[str, StubFile] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # downloads, likes, gated, cardData, gguf...

    @property
    def author(self) -> str:
        return self.repo_id.split("/", 1)[0]

    @property
    def gated(self) -> str | bool:
        value = self.meta.get("gated", False)
        return value if value in ("auto", "manual") else False

    @cached_property
    def sha(self) -> str:
        listing = "\n".join(f"{path} {f.git_oid}" for path, f in sorted(self.files.items()))
        return hashlib.sha1(f"{self.repo_id}\n{listing}".encode(), usedforsecurity=False).hexdigest()

    def tags(self) -> list[str]:
        """As the Hub tags a GGUF repo: never with its architecture (that is only model info's `gguf`)."""
        tags = list(self.meta.get("tags", []))
        if any(p.endswith(".gguf") for p in self.files) and "gguf" not in tags:
            tags.insert(0, "gguf")
        return tags

    def folders(self) -> set[str]:
        found: set[str] = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                found.add("/".join(parts[:depth]))
        return found

    def folder_entry(self, path: str) -> dict[str, Any]:
        oid = hashlib.sha1(f"{self.sha}:{path}".encode(), usedforsecurity=False).hexdigest()
        return {"type": "directory", "oid": oid, "size": 0, "path": path}

    @cached_property
    def gguf(self) -> dict[str, Any] | None:
        """The `gguf` field of model info: from the metadata, else read from the first model file."""
        if "gguf" in self.meta:
            value: dict[str, Any] | None = self.meta["gguf"]
            return value
        models = [
            f for p, f in sorted(self.files.items()) if p.endswith(".gguf") and "mmproj" not in p.lower()
        ]
        source = models[0].source if models else None
        return gguf_summary(source) if source is not None else None

    def summary(self) -> dict[str, Any]:
        """A row of `/api/models` without `expand`: exactly the fields the Hub returns, no more."""
        info = self.info(blobs=False)
        return {key: info[key] for key in LISTING_FIELDS}

    def info(self, blobs: bool) -> dict[str, Any]:
        """`/api/models/{repo}` at this repo's only commit."""
        info: dict[str, Any] = {
            "_id": self.sha[:24],
            "id": self.repo_id,
            "author": self.author,
            "gated": self.gated,
            "private": False,
            "downloads": int(self.meta.get("downloads", 0)),
            "likes": int(self.meta.get("likes", 0)),
            "trendingScore": self.meta.get("trendingScore", 0),
            "lastModified": self.meta.get("lastModified", _EPOCH),
            "createdAt": self.meta.get("createdAt", _EPOCH),
            "tags": self.tags(),
            "pipeline_tag": self.meta.get("pipeline_tag", "text-generation"),
            "library_name": self.meta.get("library_name", "gguf"),
            "modelId": self.repo_id,
            "sha": self.sha,
            "disabled": False,
            "cardData": self.meta.get("cardData", {}),
            "siblings": [f.sibling(blobs) for _, f in sorted(self.files.items())],
            "spaces": [],
            "usedStorage": sum(f.size for f in self.files.values()),
        }
        if self.gguf is not None:
            info["gguf"] = self.gguf
        return info


@lru_cache(maxsize=256)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The sha256 of a file on disk, once per path, size and mtime (the same model serves many tests)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


class RepoStore:
    """Thread-safe map of repo id to repository."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._repos: dict[str, StubRepo] = {}

    def add(self, repo: StubRepo) -> StubRepo:
        with self._lock:
            self._repos[repo.repo_id] = repo
        return repo

    def clear(self) -> None:
        with self._lock:
            self._repos.clear()

    def get(self, repo_id: str) -> StubRepo | None:
        with self._lock:
            return self._repos.get(repo_id)

    def all(self) -> list[StubRepo]:
        with self._lock:
            return sorted(self._repos.values(), key=lambda r: r.repo_id)

    def load_folder(self, root: Path) -> None:
        """Serve `root/<owner>/<name>/...` as repos; `<repo>/.hub.json` holds the repo's metadata (and
        `listed_files`: {path: size} for files that are listed but not there)."""
        for owner in sorted(p for p in root.iterdir() if p.is_dir()):
            for folder in sorted(p for p in owner.iterdir() if p.is_dir()):
                meta_path = folder / META_FILE
                meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
                files = {
                    path.relative_to(folder).as_posix(): StubFile(
                        path.relative_to(folder).as_posix(), source=path
                    )
                    for path in sorted(folder.rglob("*"))
                    if path.is_file() and path.name != META_FILE
                }
                for path, size in meta.pop("listed_files", {}).items():  # listed only: made-up sizes
                    files[path] = StubFile(path, listed_size=int(size))
                self.add(StubRepo(f"{owner.name}/{folder.name}", files, meta))
