"""One writer per file (across threads and processes), durable renames, Retry-After dates, and the downloads
database's versions and damage, against the Hub stand-in with the real model file."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
import requests

from app.downloads.jobs import DONE, RUNNING, SCHEMA_VERSION, JobFile, JobStore
from app.downloads.manager import DownloadManager
from app.downloads.targets import target_for
from app.downloads.transfer import RemoteFile, Transfer, download
from app.errors import AppError
from app.paths import AppPaths
from tests.hubstub.faults import Fault
from tests.hubstub.server import HubStub
from tests.test_downloads import NAME, REPO, ROOT, SMOL_SHA, _until

PULL = [sys.executable, "-m", "app", "pull", f"{REPO}:Q4_1", "--connections", "1"]  # its requests in order
BUSY = f"{REPO} Q4_1 is already being downloaded (by another Hubside process)."


@pytest.fixture
def served(hub: HubStub, smollm2_path: Path) -> RemoteFile:
    repo = hub.add_repo(REPO, {NAME: smollm2_path})
    return RemoteFile(
        f"{hub.endpoint}/{REPO}/resolve/{repo.sha}/{NAME}", smollm2_path.stat().st_size, SMOL_SHA
    )


def _target() -> Path:
    target = target_for(AppPaths.from_env().ensure().models_dir, REPO, NAME)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_two_pulls_of_one_model_one_writes_the_other_is_refused(hub: HubStub, served: RemoteFile) -> None:
    part = _target().with_name(NAME + ".part")
    hub.add_fault(Fault(path=NAME, stall_after=5_000_000, stall_seconds=4, times=None))  # the first waits
    first = subprocess.Popen(PULL, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: part.exists() and part.stat().st_size >= 5_000_000)
    second = subprocess.run(PULL, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and second.stderr.splitlines() == [f"hubside: {BUSY}"]
    hub.faults.clear()
    _, errors = first.communicate(timeout=120)
    assert first.returncode == 0, errors
    assert _sha(_target()) == SMOL_SHA and not part.exists()


def test_two_pulls_started_at_the_same_moment_one_wins_one_job_listed(
    hub: HubStub, served: RemoteFile
) -> None:
    hub.add_fault(Fault(path=NAME, delay_seconds=0.5, times=None))  # the Hub answers slowly: both get going
    pulls = [subprocess.Popen(PULL, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    pulls.append(subprocess.Popen(PULL, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = []
    for pull in pulls:
        _, errors = pull.communicate(timeout=120)
        results.append((pull.returncode, errors))
    assert sorted(code for code, _ in results) == [0, 1], results
    (refusal,) = [errors for code, errors in results if code == 1]
    assert refusal.startswith("hubside: ") and len(refusal.splitlines()) == 1
    assert refusal.endswith("is already being downloaded (by another Hubside process).\n")
    assert _sha(_target()) == SMOL_SHA
    store = JobStore(_jobs_file())
    assert [j.state for j in store.all()] == [DONE]  # one job for the file, the winner's
    store.close()


def test_a_second_download_of_a_file_being_written_is_refused_at_once(
    hub: HubStub, served: RemoteFile
) -> None:
    target = _target()
    part = target.with_name(NAME + ".part")
    hub.add_fault(Fault(path=NAME, stall_after=2_000_000, stall_seconds=3, times=1))
    writer = threading.Thread(target=download, args=(Transfer(requests.Session()), served, target))
    writer.start()
    _until(lambda: part.exists() and part.stat().st_size >= 2_000_000)
    started = time.monotonic()
    with requests.Session() as session, pytest.raises(AppError) as refused:
        download(Transfer(session), served, target)
    assert refused.value.user_message == f"{NAME} is already being downloaded (by another Hubside process)."
    assert time.monotonic() - started < 1.0
    writer.join(60)
    assert _sha(target) == SMOL_SHA and not part.exists()


def test_the_part_is_fsynced_before_its_rename_and_the_folder_after(
    hub: HubStub, served: RemoteFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, int, bool]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        info = os.fstat(fd)
        events.append(("fsync", info.st_ino, stat.S_ISDIR(info.st_mode)))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("replace", Path(src).stat().st_ino, False))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = _target()
    with requests.Session() as session:
        download(Transfer(session), served, target)
    model, folder = target.stat().st_ino, target.parent.stat().st_ino
    assert [e for e in events if e[1] in (model, folder)] == [
        ("fsync", model, False),
        ("replace", model, False),
        ("fsync", folder, True),
    ]


def test_retry_after_as_an_http_date_is_honoured_and_capped(hub: HubStub, served: RemoteFile) -> None:
    now = datetime.now(UTC)
    for when in (now + timedelta(seconds=30), now + timedelta(days=1), now - timedelta(hours=1)):
        hub.add_fault(Fault(path=NAME, status=503, retry_after=format_datetime(when, usegmt=True), times=1))
    waits: list[float] = []
    with requests.Session() as session:
        download(Transfer(session, sleep=waits.append), served, _target())
    assert len(waits) == 3 and 27 <= waits[0] <= 30  # seconds from now (an HTTP date has whole seconds)
    assert waits[1:] == [120.0, 0.0]  # capped; a date gone by: at once
    assert _sha(_target()) == SMOL_SHA


def _jobs_file() -> Path:
    return AppPaths.from_env().ensure().downloads_file


def _aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.unreadable-*"))


def test_a_downloads_database_from_a_newer_hubside_is_refused(served: RemoteFile) -> None:
    path = _jobs_file()
    store = JobStore(path)
    store.add(REPO, "main", "Q4_1", (JobFile(NAME, served),))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(AppError) as refused:
        JobStore(path)
    assert refused.value.user_message == (
        "Your downloads list was saved by a newer Hubside (database version 99); this version understands "
        f"up to {SCHEMA_VERSION}. Update Hubside to open it. Nothing was changed."
    )
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 99
        assert db.execute("SELECT count(*) FROM jobs").fetchone()[0] == 1
    assert _aside(path) == []


def test_a_locked_downloads_database_is_reported_and_not_moved_aside() -> None:
    path = _jobs_file()
    holder = sqlite3.connect(path, isolation_level=None)  # another program, in rollback-journal mode
    holder.execute("CREATE TABLE other (x)")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("INSERT INTO other VALUES (1)")
    try:
        with pytest.raises(AppError) as refused:
            JobStore(path)
        assert refused.value.user_message.startswith(
            "The downloads list cannot be opened now (database is locked)"
        )
        assert "nothing was changed" in refused.value.user_message
        assert _aside(path) == []
    finally:
        holder.execute("COMMIT")
        holder.close()
    store = JobStore(path)  # once free, the same file opens, with what it held
    assert store.all() == [] and store.db.execute("SELECT x FROM other").fetchone()[0] == 1
    store.close()


def test_a_damaged_downloads_database_is_moved_aside_and_a_new_list_started() -> None:
    path = _jobs_file()
    path.write_bytes(b"this is not a database " * 200)
    store = JobStore(path)
    (aside,) = _aside(path)
    assert aside == store.moved_aside and aside.read_bytes() == b"this is not a database " * 200
    assert store.all() == []
    store.close()


def test_adding_the_same_download_twice_gives_one_job(hub: HubStub, served: RemoteFile) -> None:
    paths = AppPaths.from_env().ensure()
    hub.add_fault(Fault(path=NAME, stall_after=2_000_000, stall_seconds=2, times=1))
    store = JobStore(paths.downloads_file)
    manager = DownloadManager(paths.models_dir, store, lambda: Transfer(requests.Session()))
    files = (JobFile(NAME, served),)
    first = manager.add(REPO, "main", "Q4_1", files)
    again = manager.add(REPO, "main", "Q4_1", files)  # the window's Download clicked twice: joined
    assert again.id == first.id and [j.id for j in manager.jobs()] == [first.id]
    with pytest.raises(AppError, match="already in the downloads list"):  # the same file at another commit
        manager.add(REPO, "0" * 40, "Q4_1", files)
    _until(lambda: manager.jobs()[0].state == DONE)
    assert [j.id for j in manager.jobs()] == [first.id] and _sha(_target()) == SMOL_SHA
    manager.close()
    store.close()


def test_the_window_lists_a_cli_pull_and_takes_it_over_when_it_dies(hub: HubStub, served: RemoteFile) -> None:
    paths = AppPaths.from_env().ensure()
    part = _target().with_name(NAME + ".part")
    hub.add_fault(Fault(path=NAME, stall_after=3_000_000, stall_seconds=60, times=None))  # every try waits
    child = subprocess.Popen(PULL, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _until(lambda: part.exists() and part.stat().st_size >= 3_000_000)
        store = JobStore(paths.downloads_file)
        manager = DownloadManager(paths.models_dir, store, lambda: Transfer(requests.Session()))
        _until(lambda: [(j.repo, j.state, j.elsewhere) for j in manager.jobs()] == [(REPO, RUNNING, True)])
        (job,) = manager.jobs()
        manager.pause(job.id)  # the window does not steer another process's download
        manager.cancel(job.id)
        time.sleep(1.2)
        assert [(j.state, j.elsewhere) for j in manager.jobs()] == [(RUNNING, True)] and part.exists()
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
        hub.faults.clear()
        before_kill = len(hub.log.all())
    _until(lambda: manager.jobs()[0].state == DONE)  # its process died: the window went on from the part
    assert not manager.jobs()[0].elsewhere and _sha(_target()) == SMOL_SHA
    after = [r for r in hub.log.all()[before_kill:] if r.server == "cdn"]
    assert after and all(not r.headers.get("range", "bytes=0-").startswith("bytes=0-") for r in after)
    manager.close()
    store.close()


def test_a_downloads_database_made_before_versions_is_migrated_keeping_its_jobs(served: RemoteFile) -> None:
    path = _jobs_file()
    with sqlite3.connect(path) as db:  # as the first version left it: the table, user_version 0
        db.execute(
            "CREATE TABLE jobs (id INTEGER PRIMARY KEY, repo TEXT NOT NULL, revision TEXT NOT NULL,"
            " label TEXT NOT NULL, files_json TEXT NOT NULL, state TEXT NOT NULL,"
            " error TEXT NOT NULL DEFAULT '', done_bytes INTEGER NOT NULL DEFAULT 0,"
            " created_at REAL NOT NULL, updated_at REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO jobs VALUES (7, ?, 'main', 'Q4_1', ?, 'paused', '', 123, 0, 0)",
            (
                REPO,
                json.dumps([{"path": NAME, "url": served.url, "size": served.size, "sha256": SMOL_SHA}]),
            ),
        )
    store = JobStore(path)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert path.with_name(f"{path.name}.before-v{SCHEMA_VERSION}").exists()  # a copy first, as it was
    assert [(j.id, j.state, j.done_bytes, j.files[0].remote) for j in store.all()] == [
        (7, "paused", 123, served)
    ]
    store.close()


def test_cancelling_a_job_leaves_a_part_another_download_is_writing(hub: HubStub, served: RemoteFile) -> None:
    paths = AppPaths.from_env().ensure()
    target = _target()
    part = target.with_name(NAME + ".part")
    store = JobStore(paths.downloads_file)
    old = store.add(REPO, "0" * 40, "Q4_1", (JobFile(NAME, served),), state="paused")  # an older commit's
    hub.add_fault(Fault(path=NAME, stall_after=2_000_000, stall_seconds=3, times=1))
    writer = threading.Thread(target=download, args=(Transfer(requests.Session()), served, target))
    writer.start()  # as `hubside pull` of the current commit would
    _until(lambda: part.exists() and part.stat().st_size >= 2_000_000)
    manager = DownloadManager(paths.models_dir, store, lambda: Transfer(requests.Session()))
    manager.cancel(old.id)
    assert [j.state for j in manager.jobs()] == ["cancelled"] and part.exists()
    writer.join(60)
    assert _sha(target) == SMOL_SHA
    manager.close()
    store.close()


def test_the_downloads_table_says_when_another_process_runs_a_job(qapp: object, served: RemoteFile) -> None:
    from PySide6.QtCore import Qt

    from app.downloads.jobs import Job
    from app.ui.downloads_page import JobsModel

    model = JobsModel()
    model.refresh([Job(1, REPO, "main", "Q4_1", (JobFile(NAME, served),), RUNNING, elsewhere=True)])
    state = model.index(0, JobsModel.COLUMNS.index("State"))
    assert model.data(state, Qt.ItemDataRole.DisplayRole) == "running in another Hubside process"


def test_a_job_another_process_removed_leaves_the_list(served: RemoteFile) -> None:
    paths = AppPaths.from_env().ensure()
    other = JobStore(paths.downloads_file)  # another process's connection, as a losing `hubside pull` has
    job = other.add(REPO, "main", "Q4_1", (JobFile(NAME, served),), state=RUNNING)
    claim = other.claim(job.id)
    assert claim is not None
    store = JobStore(paths.downloads_file)
    manager = DownloadManager(paths.models_dir, store, lambda: Transfer(requests.Session()))
    assert [(j.id, j.elsewhere) for j in manager.jobs()] == [(job.id, True)]
    other.delete(job.id)
    claim.release()
    _until(lambda: manager.jobs() == [])
    manager.close()
    store.close()
    other.close()


def test_the_list_asked_for_after_close_reads_no_closed_store(served: RemoteFile) -> None:
    """The Downloads page's timer may fire once more after the services closed (the window's last tick)."""
    paths = AppPaths.from_env().ensure()
    store = JobStore(paths.downloads_file)
    manager = DownloadManager(paths.models_dir, store, lambda: Transfer(requests.Session()))
    manager.add(REPO, "main", "Q4_1", (JobFile(NAME, served),))
    manager.pause_all()
    assert manager.close()
    store.close()
    manager._synced = 0.0  # the next sync is due
    assert [job.label for job in manager.jobs()] == ["Q4_1"]


def test_interrupting_a_transfer_whose_response_went_back_to_the_pool_is_harmless(served: RemoteFile) -> None:
    transfer = Transfer(requests.Session())
    response = transfer.session.get(served.url, headers={"Range": "bytes=0-9"}, stream=True, timeout=10)
    assert len(response.content) == 10  # read whole: the connection goes back to the pool
    transfer.live = response
    transfer.interrupt()  # a pause or a quit racing the end of a read: nothing to wake, nothing raised


def test_two_variants_of_a_vision_model_share_its_projector(hub: HubStub) -> None:
    """Every variant carries the same mmproj file: the second job waits for the first to fetch it."""
    sizes = {"v-Q4_0.gguf": 1_000_000, "v-Q8_0.gguf": 1_500_000, "mmproj-F16.gguf": 3_000_000}
    files = {name: os.urandom(size) for name, size in sizes.items()}
    repo = hub.add_repo("acme/vision-GGUF", files)

    def remote(name: str) -> JobFile:
        url = f"{hub.endpoint}/acme/vision-GGUF/resolve/{repo.sha}/{name}"
        return JobFile(name, RemoteFile(url, len(files[name]), hashlib.sha256(files[name]).hexdigest()))

    # The first fetch of the projector stalls a while, so the second job reaches it while it is locked.
    hub.add_fault(Fault(path="mmproj-F16.gguf", stall_after=1_000_000, stall_seconds=2, times=1))
    paths = AppPaths.from_env().ensure()
    store = JobStore(paths.downloads_file)
    manager = DownloadManager(paths.models_dir, store, lambda: Transfer(requests.Session(), stall_s=1))
    q4 = manager.add("acme/vision-GGUF", repo.sha, "Q4_0", (remote("v-Q4_0.gguf"), remote("mmproj-F16.gguf")))
    q8 = manager.add("acme/vision-GGUF", repo.sha, "Q8_0", (remote("v-Q8_0.gguf"), remote("mmproj-F16.gguf")))
    assert q4.id != q8.id
    _until(lambda: [j.state for j in manager.jobs()] == [DONE, DONE])
    folder = target_for(paths.models_dir, "acme/vision-GGUF", "mmproj-F16.gguf").parent
    assert {p.name: _sha(p) for p in folder.glob("*.gguf")} == {
        name: hashlib.sha256(data).hexdigest() for name, data in files.items()
    }
    manager.close()
    store.close()


def test_a_pull_of_another_revision_of_a_listed_file_is_refused(served: RemoteFile) -> None:
    from app.downloads.jobs import PAUSED, Job
    from app.downloads.manager import AlreadyQueued, pull

    paths = AppPaths.from_env().ensure()
    store = JobStore(paths.downloads_file)
    store.add(REPO, "0" * 40, "Q4_1", (JobFile(NAME, served),), state=PAUSED)  # listed at an older commit
    wanted = Job(0, REPO, "main", "Q4_1", (JobFile(NAME, served),), PAUSED)
    with pytest.raises(AlreadyQueued):
        pull(store, paths.models_dir, wanted, Transfer(requests.Session()))
    assert len(store.all()) == 1 and not _target().exists()
    store.close()
