"""One file over several ranged connections, against the Hub stand-in: drops across segments, a kill -9 and a
resume that fetches no finished byte again, no range support, an expired CDN URL, a changed ETag, a wrong
Content-Range on one segment."""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.downloads.jobs import JobStore
from app.downloads.segments import Plan
from app.downloads.targets import target_for
from app.downloads.transfer import RemoteFile, Transfer, download
from app.paths import AppPaths
from tests.hubstub.faults import Fault, LoggedRequest
from tests.hubstub.server import HubStub

ROOT = Path(__file__).resolve().parent.parent
SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_SIZE = 98_362_432
REPO = "bartowski/SmolLM2-135M-Instruct-GGUF"
NAME = "SmolLM2-135M-Instruct-Q4_1.gguf"


@pytest.fixture
def served(hub: HubStub, smollm2_path: Path) -> RemoteFile:
    repo = hub.add_repo(REPO, {NAME: smollm2_path})
    return RemoteFile(f"{hub.endpoint}/{REPO}/resolve/{repo.sha}/{NAME}", SMOL_SIZE, SMOL_SHA)


def _target() -> Path:
    target = target_for(AppPaths.from_env().ensure().models_dir, REPO, NAME)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fetch(served: RemoteFile, connections: int = 8, **kw: object) -> Path:
    target = _target()
    with requests.Session() as session:
        transfer = Transfer(session, sleep=lambda s: None, connections=connections, **kw)  # type: ignore[arg-type]
        download(transfer, served, target)
    return target


def _cdn(hub: HubStub) -> list[LoggedRequest]:
    return [r for r in hub.log.all() if r.server == "cdn"]


def _span(request: LoggedRequest) -> tuple[int, int]:
    """The bytes [start, end) a CDN request asked for."""
    wanted = request.headers.get("range", "bytes=0-").removeprefix("bytes=")
    start, _, last = wanted.partition("-")
    return int(start), int(last) + 1 if last else SMOL_SIZE


def test_eight_connections_with_twenty_drops_across_segments_end_verified(
    hub: HubStub, served: RemoteFile
) -> None:
    rng = random.Random(16)
    for cut in (rng.randrange(1, 4_000_000) for _ in range(20)):
        hub.add_fault(Fault(path=NAME, drop_after=cut, times=1))
    assert _sha(_fetch(served)) == SMOL_SHA
    cdn = _cdn(hub)
    starts = {_span(r)[0] for r in cdn}
    assert len(starts) >= 8  # the file came in several segments, each resumed where its drop left it
    assert sum(1 for r in cdn if _span(r)[0] == 0) == 1  # nothing restarted from byte 0


def test_small_files_and_one_connection_use_one_connection(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path=NAME, drop_after=5_000_000, times=1))
    assert _sha(_fetch(served, connections=1)) == SMOL_SHA
    assert [_span(r)[0] for r in _cdn(hub)] == [0, 5_000_000]


def test_a_server_without_range_support_works_on_one_connection(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path=NAME, ignore_range=True, times=None))  # every answer: 200, the whole file
    assert _sha(_fetch(served)) == SMOL_SHA
    cdn = _cdn(hub)
    assert cdn[-1].status == 200 and _span(cdn[-1])[0] == 0 and cdn[-1].body_bytes == SMOL_SIZE
    assert len(cdn) <= 10  # two refusals were enough to stop asking for ranges


def test_an_expired_cdn_url_is_resolved_again(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path="/cdn-lfs/", drop_after=5_000_000, times=1))
    hub.add_fault(Fault(path="/cdn-lfs/", status=403, times=1))  # the signed URL has expired
    assert _sha(_fetch(served)) == SMOL_SHA
    assert any(r.status == 403 for r in _cdn(hub))
    resolves = [r for r in hub.log.all() if r.server == "hub" and "/resolve/" in r.path]
    assert len(resolves) == 2  # the first, and once more for a fresh URL


def test_a_changed_etag_midway_restarts_and_ends_verified(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path=NAME, drop_after=8_000_000, times=1))
    hub.add_fault(Fault(path=NAME, other_version=True, ignore_if_range=True, times=1))  # a 206, another ETag
    assert _sha(_fetch(served)) == SMOL_SHA
    cdn = _cdn(hub)
    assert sum(1 for r in cdn if _span(r)[0] == 0) == 2  # started over from byte 0, once


def test_a_wrong_content_range_retries_only_that_segment(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path=NAME, drop_after=3_000_000, times=1))
    hub.add_fault(Fault(path=NAME, wrong_content_range=True, times=1))
    assert _sha(_fetch(served)) == SMOL_SHA
    cdn = _cdn(hub)
    assert sum(1 for r in cdn if _span(r)[0] == 0) == 1  # no restart of the file
    assert len(cdn) <= 20


def test_segment_rows_survive_in_the_jobs_database(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "downloads.db")
    rows = [(0, 10, 10), (10, 20, 3)]
    store.save_segments("/x/m.gguf.part", '"etag"', rows)
    store.close()
    store = JobStore(tmp_path / "downloads.db")
    assert store.segments("/x/m.gguf.part") == ('"etag"', rows)
    assert Plan(20, rows).prefix() == 13 and Plan(20, rows).done() == 13
    assert not Plan.valid_rows(rows, 20, on_disk=12)  # a row claims bytes the file does not hold
    store.save_segments("/x/m.gguf.part", "", [])
    assert store.segments("/x/m.gguf.part") == ("", [])
    store.close()


def _done_ranges(db: Path, part: Path) -> list[tuple[int, int]]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT start, done FROM segments WHERE part = ?", (str(part),)).fetchall()
    except sqlite3.OperationalError:  # not made yet
        return []
    return [(start, start + done) for start, done in rows if done]


def test_kill_9_of_a_pull_then_a_resume_fetches_no_finished_byte_again(
    hub: HubStub, served: RemoteFile
) -> None:
    paths = AppPaths.from_env().ensure()
    part = _target().with_name(NAME + ".part")
    hub.per_connection_bps = 4_000_000  # 8 connections: about 32 MB/s, so the kill lands mid-way
    pull = [sys.executable, "-m", "app", "pull", REPO]
    child = subprocess.Popen(pull, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = _done_ranges(paths.downloads_file, part)
            if len(done) >= 4 and sum(e - s for s, e in done) >= 30_000_000:
                break
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    kept = _done_ranges(paths.downloads_file, part)
    assert len(kept) >= 4 and part.exists()
    hub.per_connection_bps = None
    hub.log.all(settle_seconds=10)  # the killed connections' answers end (and are logged) first
    hub.log.clear()
    resumed = subprocess.run(pull, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert _sha(_target()) == SMOL_SHA and not part.exists()
    fetched = [_span(r) for r in _cdn(hub)]
    assert fetched and all("range" in r.headers for r in _cdn(hub))  # never from byte 0 again
    for start, end in fetched:  # no request covers a byte the database said was on disk
        assert not any(start < kept_end and kept_start < end for kept_start, kept_end in kept)
    assert _done_ranges(paths.downloads_file, part) == []  # rows forgotten once the file is a model
