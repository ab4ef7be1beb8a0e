"""Download jobs: one per variant (its shards and vision projector together), kept in SQLite so that after a
restart or a kill -9 they come back and resume from the bytes already on disk (the `.part` files).

The window and `hubside pull` share this database. The process running a job holds its claim (a lock file
beside the database), so another process sees that it runs elsewhere, and sees when that process has gone.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.downloads.locks import FileLock, is_locked, try_lock
from app.errors import AppError, ErrorKind
from app.storage import Step, open_versioned

if TYPE_CHECKING:
    from app.hub.client import ModelDetails
    from app.hub.quants import Variant

QUEUED, RUNNING, PAUSED, FAILED, DONE, CANCELLED = (
    "queued",
    "running",
    "paused",
    "failed",
    "done",
    "cancelled",
)
ACTIVE = (QUEUED, RUNNING)
log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # len(_MIGRATIONS)
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS jobs (
    id         INTEGER PRIMARY KEY,
    repo       TEXT NOT NULL,
    revision   TEXT NOT NULL,
    label      TEXT NOT NULL,
    files_json TEXT NOT NULL,
    state      TEXT NOT NULL,
    error      TEXT NOT NULL DEFAULT '',
    done_bytes INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
)
"""
# Which byte ranges of a `.part` are on disk (a download over several connections has holes), with the
# validator they came under: a resume fetches only what is missing, from the same version of the file.
_SEGMENTS_V2 = """
CREATE TABLE IF NOT EXISTS segments (
    part  TEXT NOT NULL,
    start INTEGER NOT NULL,
    end   INTEGER NOT NULL,
    done  INTEGER NOT NULL,
    etag  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (part, start)
)
"""
# user_version N -> the SQL that brings a version-N database to N+1 (0: new, or made before versions).
_MIGRATIONS: dict[int, Step] = {0: _SCHEMA_V1, 1: _SEGMENTS_V2}


class DownloadsTooNew(AppError):
    def __init__(self, path: Path, version: int) -> None:
        super().__init__(
            ErrorKind.SETTINGS,
            f"Your downloads list was saved by a newer Hubside (database version {version}); this version "
            f"understands up to {SCHEMA_VERSION}. Update Hubside to open it. Nothing was changed.",
            str(path),
        )


def _unavailable(path: Path, exc: sqlite3.DatabaseError) -> AppError:
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    kind = ErrorKind.DISK_FULL if code == sqlite3.SQLITE_FULL else ErrorKind.SETTINGS
    return AppError(
        kind,
        f"The downloads list cannot be opened now ({exc}); nothing was changed. Close other programs "
        "using it (or free disk space), then try again.",
        str(path),
    )


@dataclass(frozen=True)
class RemoteFile:
    url: str  # {endpoint}/{repo}/resolve/{commit}/{path}
    size: int
    sha256: str  # the LFS sha256; "" for a file kept in git, which its blob id verifies
    git_blob: str = ""  # sha1 of b"blob <size>\0" + content: only where there is no sha256


@dataclass(frozen=True)
class JobFile:
    path: str  # in the repo
    remote: RemoteFile


@dataclass(frozen=True)
class Job:
    id: int
    repo: str
    revision: str  # the commit the files were resolved at
    label: str  # the variant, e.g. "Q4_K_M"
    files: tuple[JobFile, ...]
    state: str
    error: str = ""
    done_bytes: int = 0
    speed: float = 0.0  # bytes per second, recent (not stored)
    elsewhere: bool = False  # run by another Hubside process (not stored: its claim says so)
    connections: int = 0  # in use now, while running (not stored)

    @property
    def total_bytes(self) -> int:
        return sum(f.remote.size for f in self.files)

    @property
    def eta_s(self) -> float | None:
        return (self.total_bytes - self.done_bytes) / self.speed if self.speed > 0 else None


class JobStore:
    """The downloads database of this process (the window or the CLI); safe to use from several threads.
    A damaged file is moved aside and a new list started; a locked or unreadable one is an AppError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.db, self.moved_aside = open_versioned(
            path,
            _MIGRATIONS,
            lambda version: DownloadsTooNew(path, version),
            lambda exc: _unavailable(path, exc),
        )

    # --- who runs a job ----------------------------------------------------------------------------
    def _claim_file(self, job_id: int) -> Path:
        return self.path.with_name(f"{self.path.name}.job-{job_id}.lock")

    def claim(self, job_id: int) -> FileLock | None:
        """The right to run the job, held until released (or this process ends); None if another has it."""
        return try_lock(self._claim_file(job_id))

    def claimed(self, job_id: int) -> bool:
        """Whether some process (this one included) runs the job now."""
        return is_locked(self._claim_file(job_id))

    def add(
        self, repo: str, revision: str, label: str, files: tuple[JobFile, ...], state: str = QUEUED
    ) -> Job:
        now = time.time()
        encoded = json.dumps([{"path": f.path, **vars(f.remote)} for f in files])
        with self.lock:
            cursor = self.db.execute(
                "INSERT INTO jobs (repo, revision, label, files_json, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (repo, revision, label, encoded, state, now, now),
            )
        return Job(int(cursor.lastrowid or 0), repo, revision, label, files, state)

    def save(self, job: Job) -> None:
        with self.lock:
            self.db.execute(
                "UPDATE jobs SET state = ?, error = ?, done_bytes = ?, updated_at = ? WHERE id = ?",
                (job.state, job.error, job.done_bytes, time.time(), job.id),
            )

    def delete(self, job_id: int) -> None:
        with self.lock:
            self.db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def all(self) -> list[Job]:
        with self.lock:
            rows = self.db.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        return [_job(row) for row in rows]

    # --- segments of a part being downloaded (app.downloads.segments.SegmentStore) ------------------
    def segments(self, part: str) -> tuple[str, list[tuple[int, int, int]]]:
        """The validator and (start, end, done) rows last saved for the part at this path."""
        with self.lock:
            rows = self.db.execute(
                "SELECT start, end, done, etag FROM segments WHERE part = ? ORDER BY start", (part,)
            ).fetchall()
        etag = rows[0]["etag"] if rows else ""
        return etag, [(row["start"], row["end"], row["done"]) for row in rows]

    def save_segments(self, part: str, etag: str, rows: list[tuple[int, int, int]]) -> None:
        """Replace the part's rows (none: forget it) in one transaction."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")  # autocommit connection: the delete and inserts as one
            try:
                self.db.execute("DELETE FROM segments WHERE part = ?", (part,))
                self.db.executemany(
                    "INSERT INTO segments (part, start, end, done, etag) VALUES (?, ?, ?, ?, ?)",
                    [(part, start, end, done, etag) for start, end, done in rows],
                )
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def close(self) -> None:
        with self.lock:
            self.db.close()


def _job(row: sqlite3.Row) -> Job:
    files: list[dict[str, Any]] = json.loads(row["files_json"])
    return Job(
        id=row["id"],
        repo=row["repo"],
        revision=row["revision"],
        label=row["label"],
        files=tuple(
            JobFile(f["path"], RemoteFile(f["url"], f["size"], f["sha256"], f.get("git_blob", "")))
            for f in files
        ),
        state=row["state"],
        error=row["error"],
        done_bytes=row["done_bytes"],
    )


def with_state(job: Job, state: str, error: str = "") -> Job:
    return replace(job, state=state, error=error, speed=0.0 if state != RUNNING else job.speed)


def job_files(details: ModelDetails, variant: Variant, endpoint: str) -> tuple[JobFile, ...]:
    """The variant's files (and its vision projector) at the details' commit, each with its size and its
    sha256 (LFS) or, for a small file kept in git (10 MiB at most), its git blob id; raises AppError for a
    file that neither verifies."""
    from huggingface_hub import hf_hub_url

    from app.hub.client import GIT_FILE_MAX_BYTES

    files = [*variant.files, *([variant.projector] if variant.projector else [])]
    for f in files:
        if f.sha256:
            continue
        if f.size > GIT_FILE_MAX_BYTES:  # kept in LFS: a blob id would be the pointer's, never the file's
            raise AppError(
                ErrorKind.HUB,
                f"The Hub gave no sha256 for {f.path}, a file kept in LFS, so it could not be checked once "
                "downloaded; Hubside will not download it. Try again later.",
                f"size {f.size} over {GIT_FILE_MAX_BYTES} without lfs.sha256",
            )
        if not f.blob_id:
            raise AppError(
                ErrorKind.HUB, f"The Hub gave no checksum for {f.path}; Hubside will not download it."
            )
    return tuple(
        JobFile(
            f.path,
            RemoteFile(
                hf_hub_url(details.id, f.path, revision=details.sha, endpoint=endpoint),
                f.size,
                f.sha256 or "",
                "" if f.sha256 else f.blob_id or "",
            ),
        )
        for f in files
    )
