"""The download queue: at most `parallel` jobs at once, each on a thread of its own; pause, resume and cancel
per job or all; progress with speed and ETA. The UI reads `jobs()` (a snapshot) on a timer; the CLI runs one
job in the foreground with `fetch_job`, recorded in the same job store: the manager lists it as running
elsewhere, and takes it over (queued) if that process dies.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from app.downloads.jobs import (
    ACTIVE,
    CANCELLED,
    DONE,
    FAILED,
    PAUSED,
    QUEUED,
    RUNNING,
    Job,
    JobFile,
    JobStore,
    RemoteFile,
    with_state,
)
from app.downloads.locks import FileLock, lock_of, try_lock
from app.downloads.targets import target_for
from app.downloads.throttle import Bandwidth
from app.errors import AppError, ErrorKind, to_app_error
from app.hub.quants import is_projector
from app.units import gb

if TYPE_CHECKING:
    from app.downloads.transfer import Transfer

log = logging.getLogger(__name__)
SAVE_INTERVAL_S = 1.0  # progress written to the database at most this often (the part files are the truth)
SPEED_WINDOW_S = 3.0
SYNC_INTERVAL_S = 1.0  # how often `jobs()` reads what other processes (`hubside pull`) did
SHARED_WAIT_S = 0.5  # how often a job waiting for a shared file (a projector) looks whether it is there


def _files_of(job: Job) -> set[tuple[str, str]]:
    """The files only this job may write: every variant of a vision model carries the same projector, which
    two jobs share (whoever comes second waits for it: `_fetch_shared`)."""
    return {(job.repo, f.path) for f in job.files if not is_projector(f.path)}


class AlreadyQueued(AppError):
    def __init__(self, job: Job) -> None:
        super().__init__(
            ErrorKind.BAD_INPUT,
            f"A file of this download is already in the downloads list ({job.repo} {job.label}, "
            f"{job.state}); wait for it to finish, or cancel it first.",
        )


def check_free_space(models_dir: Path, job: Job, already: int) -> None:
    needed = job.total_bytes - already
    free = shutil.disk_usage(models_dir).free
    if needed > free:
        raise AppError(
            ErrorKind.DISK_FULL,
            f"Not enough disk space: needs {gb(needed)}, {gb(free)} free in {models_dir}.",
        )


def part_bytes(models_dir: Path, job: Job) -> int:
    """Bytes of the job already on disk (finished files and parts)."""
    total = 0
    for f in job.files:
        target = target_for(models_dir, job.repo, f.path)
        for candidate in (target, target.with_name(target.name + ".part")):
            if candidate.exists():
                total += min(candidate.stat().st_size, f.remote.size)
                break
    return total


def fetch_job(
    models_dir: Path,
    job: Job,
    transfer: Transfer,
    progress: Callable[[int], None] = lambda done: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> list[Path]:
    """Download every file of the job that is not there yet; returns the final paths (the model first).
    Raises Stopped, or AppError (disk full, checksum mismatch, refused, network)."""
    from app.downloads.transfer import download  # requests is loaded when a download starts, not before

    targets = [target_for(models_dir, job.repo, f.path) for f in job.files]  # all checked before a byte
    check_free_space(models_dir, job, part_bytes(models_dir, job))
    finished = 0

    def file_progress(done: int) -> None:
        progress(finished + done)

    for file, target in zip(job.files, targets, strict=True):
        if is_projector(file.path):
            _fetch_shared(transfer, file.remote, target, file_progress, should_stop)
        elif not _there(target, file.remote):
            target.parent.mkdir(parents=True, exist_ok=True)
            download(transfer, file.remote, target, file_progress, should_stop)
        finished += file.remote.size
        progress(finished)
    return targets


def _there(target: Path, remote: RemoteFile) -> bool:
    return target.exists() and target.stat().st_size == remote.size  # a target exists only once verified


def _fetch_shared(
    transfer: Transfer,
    remote: RemoteFile,
    target: Path,
    progress: Callable[[int], None],
    should_stop: Callable[[], bool],
) -> None:
    """Fetch a file another job may be fetching too (a vision projector): while its part is locked by the
    other, wait for that one to finish it (or to let go, then fetch it here)."""
    from app.downloads.transfer import AlreadyDownloading, Stopped, download

    while not _there(target, remote):
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            download(transfer, remote, target, progress, should_stop)
        except AlreadyDownloading:
            if should_stop():
                raise Stopped() from None
            time.sleep(SHARED_WAIT_S)


def pull(
    store: JobStore,
    models_dir: Path,
    wanted: Job,
    transfer: Transfer,
    progress: Callable[[int], None] = lambda done: None,
) -> list[Path]:
    """Run one download in this process (`hubside pull`), recorded in the shared job store so the window
    lists it: the job already listed for the same files is taken over, else `wanted` is added. Raises
    AlreadyDownloading while another process runs one of its files, or what `fetch_job` raises."""
    from app.downloads.transfer import AlreadyDownloading

    files = _files_of(wanted)
    listed = [j for j in store.all() if j.state not in (DONE, CANCELLED) and _files_of(j) & files]
    busy = next((j for j in listed if j.state == RUNNING and store.claimed(j.id)), None)
    if busy is not None:
        raise AlreadyDownloading(f"{busy.repo} {busy.label}")
    same = [
        j for j in listed if (j.repo, j.revision, j.files) == (wanted.repo, wanted.revision, wanted.files)
    ]
    other = next((j for j in listed if j not in same), None)
    if other is not None:  # as `add` does: one job per file (the second would take the first's bytes)
        raise AlreadyQueued(other)
    # added as paused, so that a window never takes it for one of its own queued jobs before the claim
    job = same[0] if same else store.add(wanted.repo, wanted.revision, wanted.label, wanted.files, PAUSED)
    claim = store.claim(job.id)
    if claim is None:
        raise AlreadyDownloading(f"{job.repo} {job.label}")
    last_save = 0.0

    def saving_progress(done: int) -> None:
        nonlocal last_save
        progress(done)
        if time.monotonic() - last_save >= SAVE_INTERVAL_S:
            last_save = time.monotonic()
            store.save(replace(job, state=RUNNING, done_bytes=done))

    transfer.segment_store = store  # segment rows live with the job: a resume fetches only what is missing
    with claim:
        job = with_state(job, RUNNING)
        store.save(job)
        try:
            targets = fetch_job(models_dir, job, transfer, saving_progress)
        except BaseException as exc:  # Ctrl-C pauses; an error fails, with its message for the window
            if isinstance(exc, AlreadyDownloading) and not same:  # another pull, started with this one, won
                store.delete(job.id)  # the job it added is the one listed
                raise
            error = exc.user_message if isinstance(exc, AppError) else to_app_error(exc).user_message
            stopped = isinstance(exc, KeyboardInterrupt)
            store.save(with_state(job, PAUSED if stopped else FAILED, "" if stopped else error))
            raise
        store.save(replace(with_state(job, DONE), done_bytes=job.total_bytes))
    return targets


class DownloadManager:
    def __init__(
        self,
        models_dir: Path,
        store: JobStore,
        transfer_factory: Callable[[], Transfer],
        parallel: int = 2,
        bandwidth: Bandwidth | None = None,
    ) -> None:
        self.models_dir = models_dir
        self.store = store
        self.transfer_factory = transfer_factory  # its transfers share `bandwidth` (the factory passes it)
        self.parallel = max(1, parallel)
        self.bandwidth = bandwidth or Bandwidth()  # the limit for all downloads together; set_rate() is live
        self.lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._stop: dict[int, str] = {}  # job id -> the state it stops into (paused, cancelled)
        self._threads: dict[int, threading.Thread] = {}
        self._transfers: dict[int, Transfer] = {}
        self._samples: dict[int, list[tuple[float, int]]] = {}
        self._done: dict[int, int] = {}  # bytes so far of each running job, written by its thread
        self._claims: dict[int, FileLock] = {}  # the jobs this process runs, held until each ends
        self._synced = 0.0
        self.closed = False
        with self.lock:
            self._sync()  # after a restart or a kill: running jobs go on from their parts
        self._schedule()

    # --- what the UI and CLI call ----------------------------------------------------------------
    def add(self, repo: str, revision: str, label: str, files: tuple[JobFile, ...]) -> Job:
        """Queue a download; the same download already listed is joined (resumed if stopped), one that
        shares a file with it is refused (AlreadyQueued): one job per file."""
        for f in files:  # refuse unsafe names before anything is queued
            target_for(self.models_dir, repo, f.path)
        wanted = {(repo, f.path) for f in files}
        with self.lock:
            self._sync()  # jobs `hubside pull` started count too
            same = [
                j for j in self._jobs.values() if j.state not in (DONE, CANCELLED) and _files_of(j) & wanted
            ]
        for job in same:
            if (job.revision, job.files) != (revision, files):
                raise AlreadyQueued(job)
        if same:
            self.resume(same[0].id)  # nothing if it is queued or running already
            with self.lock:
                return self._jobs[same[0].id]
        job = self.store.add(repo, revision, label, files)
        with self.lock:
            self._jobs[job.id] = job
        self._schedule()
        return job

    def jobs(self) -> list[Job]:
        """A snapshot: every job, the running ones with their bytes so far and speed (over a few seconds of
        the calls to this, which the UI makes 4 times a second)."""
        now = time.monotonic()
        if not self.closed and now - self._synced >= SYNC_INTERVAL_S:  # closed: the store may be too
            with self.lock:
                self._sync()
            self._schedule()  # a job taken over, or queued by another process (an app that closed)
        with self.lock:
            for job_id, done in list(self._done.items()):
                samples = self._samples.setdefault(job_id, [])
                samples.append((now, done))
                while len(samples) > 1 and now - samples[0][0] > SPEED_WINDOW_S:
                    samples.pop(0)
                elapsed = now - samples[0][0]
                speed = (done - samples[0][1]) / elapsed if elapsed > 0.2 else self._jobs[job_id].speed
                transfer = self._transfers.get(job_id)
                connections = transfer.active_connections if transfer is not None else 0
                self._jobs[job_id] = replace(
                    self._jobs[job_id], done_bytes=done, speed=max(0.0, speed), connections=connections
                )
            return sorted(self._jobs.values(), key=lambda j: j.id)

    def pause(self, job_id: int) -> None:
        self._halt(job_id, PAUSED)

    def cancel(self, job_id: int) -> None:
        """Stop the job and delete its partial files (finished files of the job stay only if complete)."""
        self._halt(job_id, CANCELLED)

    def resume(self, job_id: int) -> None:
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None or job.elsewhere or job.state not in (PAUSED, FAILED):
                return
            self._set(with_state(job, QUEUED))
        self._schedule()

    def pause_all(self) -> None:
        for job in self.jobs():
            if job.state in ACTIVE:
                self.pause(job.id)

    def cancel_all(self) -> None:
        for job in self.jobs():
            if job.state in (*ACTIVE, PAUSED, FAILED):
                self.cancel(job.id)

    def remove(self, job_id: int) -> None:
        """Forget a finished, failed or cancelled job (its files stay)."""
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None or job.elsewhere or job.state in ACTIVE:
                return
            del self._jobs[job_id]
            self.store.delete(job_id)  # under the lock: a sync in between would bring it back

    def close(self, timeout_s: float = 10.0) -> bool:
        """Stop the running jobs where they are and wait up to `timeout_s` in all for their threads; True if
        they have ended. A thread still waiting on the network then is a daemon left behind: its part file
        and its job (queued, or running with no process behind it) go on at the next start."""
        deadline = time.monotonic() + timeout_s
        self.closed = True
        with self.lock:
            threads = list(self._threads.values())
            for job_id in self._threads:
                if job_id in self._stop:  # told already (a pause, a cancel, an earlier close): that stands
                    continue
                self._stop[job_id] = QUEUED
                if job_id in self._transfers:
                    self._transfers[job_id].interrupt()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    # --- inside ----------------------------------------------------------------------------------
    def _sync(self) -> None:
        """Read the jobs this process does not run from the store (call with the lock held): one that another
        process runs (holds its claim) is shown as running elsewhere; one left running by a process that
        has gone (a kill, a crash, the last session) is queued again, to go on from its parts."""
        self._synced = time.monotonic()
        stored = self.store.all()
        for gone in self._jobs.keys() - {job.id for job in stored} - self._threads.keys():
            del self._jobs[gone]  # removed by another process (a pull that lost a race to start)
        for job in stored:
            if job.id in self._threads:
                continue
            if job.state == RUNNING:
                job = replace(job, elsewhere=True) if self.store.claimed(job.id) else with_state(job, QUEUED)
            self._jobs[job.id] = job

    def _set(self, job: Job) -> None:
        """Record a job's new state (call with the lock held)."""
        self._jobs[job.id] = job
        self.store.save(job)

    def _halt(self, job_id: int, state: str) -> None:
        with self.lock:
            job = self._jobs.get(job_id)
            if job is None or job.elsewhere or job.state in (DONE, CANCELLED):
                return
            if job_id in self._threads:
                self._stop[job_id] = state  # the thread stops within one chunk and records it
                if job_id in self._transfers:
                    self._transfers[job_id].interrupt()  # even if the network has gone quiet
            else:
                self._set(with_state(job, state))
                if state == CANCELLED:
                    self._delete_parts(job)
        self._schedule()

    def _schedule(self) -> None:
        with self.lock:
            if self.closed:
                return
            for job in sorted(self._jobs.values(), key=lambda j: j.id):
                if len(self._threads) >= self.parallel:
                    break
                if job.state == QUEUED and job.id not in self._threads:
                    claim = self.store.claim(job.id)
                    if claim is None:  # `hubside pull` took it meanwhile
                        self._jobs[job.id] = replace(job, state=RUNNING, elsewhere=True)
                        continue
                    self._claims[job.id] = claim
                    self._set(with_state(job, RUNNING))
                    thread = threading.Thread(
                        target=self._run, args=(job.id,), name=f"download-{job.id}", daemon=True
                    )
                    self._threads[job.id] = thread
                    thread.start()

    def _run(self, job_id: int) -> None:
        job = self._jobs[job_id]
        last_save = 0.0

        def progress(done: int) -> None:
            # Called for every network read: only a dict entry here; `jobs()` makes the snapshot.
            nonlocal last_save
            self._done[job_id] = done
            now = time.monotonic()
            if now - last_save >= SAVE_INTERVAL_S:
                last_save = now
                self.store.save(replace(self._jobs[job_id], done_bytes=done))

        import requests

        from app.downloads.transfer import Stopped

        outcome, error = DONE, ""
        transfer = self.transfer_factory()
        transfer.segment_store = self.store
        with self.lock:
            self._transfers[job_id] = transfer
        try:
            fetch_job(self.models_dir, job, transfer, progress, lambda: job_id in self._stop)
        except Stopped:
            outcome = self._stop.get(job_id, PAUSED)
        except AppError as exc:
            outcome, error = FAILED, exc.user_message
        except (OSError, requests.RequestException) as exc:
            outcome, error = FAILED, to_app_error(exc).user_message
        except Exception as exc:  # a bug must not leave the job "running" forever
            log.exception("download %s failed", job_id)
            outcome, error = FAILED, to_app_error(exc).user_message
        with self.lock:
            requested = self._stop.pop(job_id, "")
            if requested and outcome != DONE:  # paused, cancelled, or closing (queued for the next start)
                outcome = requested
            latest = replace(
                self._jobs[job_id],
                done_bytes=self._done.get(job_id, self._jobs[job_id].done_bytes),
                connections=0,
            )
            final = with_state(latest, outcome, error)
            if outcome == DONE:
                final = replace(final, done_bytes=final.total_bytes)
            self._set(final)
            self._claims.pop(job_id).release()
            self._threads.pop(job_id, None)
            self._transfers.pop(job_id, None)
            self._samples.pop(job_id, None)
            self._done.pop(job_id, None)
        if outcome == CANCELLED:
            self._delete_parts(final)
        log.info("download %s (%s %s): %s %s", job_id, job.repo, job.label, outcome, error)
        self._schedule()

    def _delete_parts(self, job: Job) -> None:
        for f in job.files:
            target = target_for(self.models_dir, job.repo, f.path)
            part = target.with_name(target.name + ".part")
            lock = try_lock(lock_of(part))
            if lock is None:  # another download (`hubside pull`) writes this file now: its part, not ours
                continue
            with lock:
                part.unlink(missing_ok=True)
