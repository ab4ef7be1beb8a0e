"""Downloads against the Hub stand-in with the real model file: faults, resumes, verification, kills."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from app.downloads.jobs import CANCELLED, DONE, FAILED, PAUSED, QUEUED, RUNNING, JobFile, JobStore
from app.downloads.manager import DownloadManager
from app.downloads.targets import target_for
from app.downloads.transfer import ChecksumMismatch, RemoteFile, Transfer, download
from app.errors import AppError, ErrorKind
from app.library.scan import Root, scan
from app.paths import AppPaths
from tests.hubstub.faults import Fault
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


def _models() -> Path:
    return AppPaths.from_env().ensure().models_dir


def _transfer(session: requests.Session, waits: list[float] | None = None, **kw: object) -> Transfer:
    return Transfer(session, sleep=(waits.append if waits is not None else lambda s: None), **kw)  # type: ignore[arg-type]


def test_twenty_dropped_connections_resume_and_verify(hub: HubStub, served: RemoteFile) -> None:
    rng = random.Random(7)
    for cut in sorted(rng.randrange(1, 4_000_000) for _ in range(20)):
        hub.add_fault(Fault(path=NAME, drop_after=cut, times=1))
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    seen: list[int] = []
    with requests.Session() as session:
        download(_transfer(session), served, target, seen.append)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == SMOL_SHA
    assert seen == sorted(seen) and seen[-1] == SMOL_SIZE  # progress never went back
    # each drop resumed with a Range request (the first asked for its piece before any ETag was known)
    cdn = [r for r in hub.log.all() if r.server == "cdn"]
    ranged = [r for r in cdn[1:] if "range" in r.headers]
    assert len(ranged) >= 20
    # If-Range carries the CDN's own validator (its ETag is the Xet hash, not the sha256 the Hub links)
    xet_hash = hub.repos.get(REPO).files[NAME].xet_hash  # type: ignore[union-attr]
    assert all(r.headers["if-range"] == f'"{xet_hash}"' for r in ranged)
    assert not target.with_name(NAME + ".part").exists()


@pytest.mark.parametrize("fault", [Fault(ignore_range=True), Fault(wrong_content_range=True)])
def test_a_server_that_ignores_or_misstates_the_range_restarts_the_file(
    hub: HubStub, served: RemoteFile, fault: Fault
) -> None:
    hub.add_fault(Fault(path=NAME, drop_after=3_000_000, times=1))
    fault.path, fault.times = NAME, 1
    hub.add_fault(fault)
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    with requests.Session() as session:
        download(_transfer(session), served, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == SMOL_SHA  # never appended to the wrong place


def test_a_file_changed_between_attempts_or_a_flipped_byte_is_never_a_model(
    hub: HubStub, served: RemoteFile
) -> None:
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    # A file changed between attempts (another ETag) now restarts every segment and ends verified
    # (tests/test_download_segments.py); a flipped byte under the same ETag is caught by the hash.
    for faults in ([Fault(path=NAME, flip_byte=1_234_567, times=1)],):  # in the first segment
        for fault in faults:
            hub.add_fault(fault)
        with requests.Session() as session, pytest.raises(ChecksumMismatch) as mismatch:
            download(_transfer(session), served, target)
        assert "checksum mismatch" in mismatch.value.user_message and "Retry" in mismatch.value.user_message
        assert not target.exists() and not target.with_name(NAME + ".part").exists()
        assert scan([Root(_models(), "hubside")]) == []  # nothing listed as a model
    with requests.Session() as session:  # Retry
        download(_transfer(session), served, target)
    assert [e.quant for e in scan([Root(_models(), "hubside")])] == ["Q4_1"]


def test_a_changed_validator_restarts_even_where_the_server_ignores_if_range(
    hub: HubStub, served: RemoteFile
) -> None:
    hub.add_fault(Fault(path=NAME, drop_after=2_000_000, times=1))
    # the next answer: a 206 of another version (another ETag), though If-Range named the old one
    hub.add_fault(Fault(path=NAME, other_version=True, ignore_if_range=True, times=1))
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    with requests.Session() as session:  # one connection: the requests in a known order
        download(_transfer(session, connections=1), served, target)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == SMOL_SHA  # restarted, never appended
    cdn = [r for r in hub.log.all() if r.server == "cdn"]
    assert len(cdn) == 3 and "if-range" in cdn[1].headers  # the 206 of another version was dropped ...
    assert cdn[2].status == 200 and "range" not in cdn[2].headers  # ... and the file fetched from byte 0


def test_a_small_gguf_kept_in_git_comes_through_the_relative_307_verified_by_its_blob_id(
    hub: HubStub, tiny_model: Path
) -> None:
    from app.downloads.jobs import job_files
    from app.hub.client import HubClient

    hub.add_repo("acme/Tiny-GGUF", {"tiny-Q8_0.gguf": tiny_model}, in_git=("tiny-Q8_0.gguf",))
    client = HubClient(AppPaths.from_env().ensure().cache_dir / "hub")
    details = client.details("acme/Tiny-GGUF").value
    (file,) = job_files(details, details.variants[0], hub.endpoint)
    data = tiny_model.read_bytes()
    blob_id = hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
    assert (file.remote.sha256, file.remote.git_blob) == ("", blob_id)  # no lfs.sha256: its blob id
    hub.add_fault(Fault(path="tiny-Q8_0.gguf", drop_after=len(data) // 2, times=1))
    target = target_for(_models(), "acme/Tiny-GGUF", file.path)
    target.parent.mkdir(parents=True)
    with requests.Session() as session:
        download(_transfer(session), file.remote, target)
    assert target.read_bytes() == data
    resolves = hub.log.matching("/resolve/")
    cached = hub.log.matching("/api/resolve-cache/")
    assert {r.status for r in resolves} == {307} and not hub.log.matching("/cdn-lfs/")
    assert [r.status for r in cached] == [200, 206] and "range" in cached[-1].headers

    hub.add_fault(Fault(path="tiny-Q8_0.gguf", flip_byte=100, times=1))  # a damaged copy is refused
    target.unlink()
    with requests.Session() as session, pytest.raises(ChecksumMismatch):
        download(_transfer(session), file.remote, target)
    assert not target.exists()


def test_a_stall_is_detected_and_resumed(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path=NAME, stall_after=1_000_000, stall_seconds=30, times=1))
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    started = time.monotonic()
    with requests.Session() as session:
        download(_transfer(session, stall_s=1.0), served, target)
    assert time.monotonic() - started < 20  # the stall cost about a second, not 30
    assert hashlib.sha256(target.read_bytes()).hexdigest() == SMOL_SHA


def test_500_forever_gives_up_after_bounded_backed_off_retries(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path=NAME, status=500, times=None))
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    waits: list[float] = []
    with requests.Session() as session, pytest.raises(AppError) as failed:
        download(_transfer(session, waits), served, target)
    assert failed.value.kind is ErrorKind.NETWORK and "keeps failing" in failed.value.user_message
    assert len(waits) == 8 and len(hub.log.matching(NAME)) == 9  # bounded, never a busy loop
    assert waits[0] > 0 and max(waits) <= 30  # backed off, capped


def test_429_retry_after_is_honoured(hub: HubStub, served: RemoteFile) -> None:
    hub.add_fault(Fault(path=NAME, status=429, retry_after="7", times=1))
    hub.add_fault(Fault(path=NAME, status=503, retry_after="100000", times=1))
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    waits: list[float] = []
    with requests.Session() as session:
        download(_transfer(session, waits), served, target)
    assert waits == [7.0, 120.0]  # as asked, and capped
    hub.fail_with(NAME, 429, rate_limit_reset=9)  # the Hub's RateLimit header, no Retry-After
    target.unlink()
    waits.clear()
    with requests.Session() as session:
        download(_transfer(session, waits), served, target)
    assert waits == [9.0]


def test_the_token_goes_to_the_hub_only(hub: HubStub, served: RemoteFile) -> None:
    target = target_for(_models(), REPO, NAME)
    target.parent.mkdir(parents=True)
    with requests.Session() as session:
        download(_transfer(session, token="hf_secret"), served, target)
    hub_requests = [r for r in hub.log.all() if r.path.endswith(NAME)]
    assert {r.server for r in hub_requests} == {"hub", "cdn"}
    assert all(
        r.headers.get("authorization") == "Bearer hf_secret" for r in hub_requests if r.server == "hub"
    )
    assert all("authorization" not in r.headers for r in hub_requests if r.server == "cdn")


@pytest.mark.parametrize(
    "name",
    [
        "../../evil.gguf",
        "/etc/evil.gguf",
        "C:\\evil.gguf",
        "a/../../b.gguf",
        "x\x00y.gguf",
        "\u202eevil.gguf",
        "a//b.gguf",
    ],
)
def test_hostile_file_names_write_nothing_outside(tmp_path: Path, name: str) -> None:
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(AppError) as refused:
        target_for(models, "owner/repo", name)
    assert (
        refused.value.kind is ErrorKind.BAD_INPUT and "Refusing the file name" in refused.value.user_message
    )
    with pytest.raises(AppError):
        target_for(models, "../x", "a.gguf")
    (models / "owner").mkdir()
    (models / "owner" / "repo").symlink_to(tmp_path)  # a symlink on the way is refused as well
    with pytest.raises(AppError, match="symbolic link"):
        target_for(models, "owner/repo", "a.gguf")


def test_disk_full_stops_at_once_and_keeps_the_part(served: RemoteFile, tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes writes past 5 MB fail with EFBIG (SIGXFSZ ignored), in a child process.
    code = f"""
import resource, signal, sys, requests
from pathlib import Path
from app.downloads.transfer import RemoteFile, Transfer, download
from app.errors import AppError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (5_000_000, 5_000_000))
try:
    download(Transfer(requests.Session()), RemoteFile({served.url!r}, {served.size}, {served.sha256!r}),
             Path({str(tmp_path / "m.gguf")!r}))
except AppError as exc:
    print(exc.kind.value, exc.user_message)
    sys.exit(3)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("disk_full Disk full: m.gguf.part stopped at ")
    part = tmp_path / "m.gguf.part"
    stopped_at = int(result.stdout.split("stopped at ")[1].split()[0].replace(",", ""))
    assert 0 < part.stat().st_size == stopped_at <= 5_000_000 and not (tmp_path / "m.gguf").exists()
    # With room again, the download goes on from the part (re-hashing it) and ends right.
    download(Transfer(requests.Session()), served, tmp_path / "m.gguf")
    assert hashlib.sha256((tmp_path / "m.gguf").read_bytes()).hexdigest() == served.sha256


def test_pull_killed_five_times_resumes_to_the_right_hash(hub: HubStub, served: RemoteFile) -> None:
    env = dict(os.environ)
    rng = random.Random(5)
    part = target_for(_models(), REPO, NAME).with_name(NAME + ".part")
    sizes = []
    for _ in range(5):
        offset = sizes[-1] if sizes else 0  # each run stalls (then is killed) somewhere before the end
        hub.add_fault(
            Fault(path=NAME, stall_after=rng.randrange(1, (SMOL_SIZE - offset) // 2), stall_seconds=60)
        )
        child = subprocess.Popen(
            [sys.executable, "-m", "app", "pull", REPO, "--connections", "1"],  # the part grows from 0
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            part.exists() and part.stat().st_size > (sizes[-1] if sizes else 0)
        ):
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        child.send_signal(signal.SIGKILL)
        child.wait()
        sizes.append(part.stat().st_size)
        hub.faults.clear()
    assert sizes == sorted(sizes) and sizes[0] > 0  # every run went on from where the last one was killed
    done = subprocess.run(
        [sys.executable, "-m", "app", "pull", REPO, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    path = Path(result["path"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SMOL_SHA and not part.exists()
    assert 0 < result["download_s"] < 120  # what bench/downloads reports as the transfer


def test_the_queue_pauses_resumes_cancels_and_survives_a_restart(hub: HubStub, served: RemoteFile) -> None:
    paths = AppPaths.from_env().ensure()
    hub.add_fault(
        Fault(path=NAME, stall_after=20_000_000, stall_seconds=60, times=None)
    )  # slow enough to pause
    store = JobStore(paths.downloads_file)
    manager = DownloadManager(
        paths.models_dir, store, lambda: Transfer(requests.Session(), stall_s=60), parallel=1
    )
    files = (JobFile(NAME, served),)
    first = manager.add(REPO, "main", "Q4_1", files)
    second = manager.add("other/copy-GGUF", "main", "Q4_1", (JobFile("copy-Q4_1.gguf", served),))

    def state(job_id: int) -> str:
        return next(j.state for j in manager.jobs() if j.id == job_id)

    _until(lambda: manager.jobs()[0].done_bytes > 1_000_000)
    assert (state(first.id), state(second.id)) == (RUNNING, QUEUED)  # the parallel limit
    manager.pause(first.id)
    _until(lambda: state(first.id) == PAUSED)
    _until(lambda: state(second.id) == RUNNING)
    manager.cancel(second.id)
    _until(lambda: state(second.id) == CANCELLED)
    assert (
        not target_for(paths.models_dir, "other/copy-GGUF", "copy-Q4_1.gguf")
        .with_name("copy-Q4_1.gguf.part")
        .exists()
    )
    hub.faults.clear()
    manager.resume(first.id)
    _until(lambda: manager.jobs()[0].done_bytes > 0 and state(first.id) == RUNNING)
    manager.close()  # as if the app quit mid-download
    store.close()

    again = DownloadManager(
        paths.models_dir, JobStore(paths.downloads_file), lambda: Transfer(requests.Session())
    )
    _until(lambda: again.jobs()[0].state == DONE)
    target = target_for(paths.models_dir, REPO, NAME)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == SMOL_SHA
    assert [j.state for j in again.jobs()] == [DONE, CANCELLED]
    again.close()


def test_free_space_is_checked_before_starting(hub: HubStub, served: RemoteFile) -> None:
    paths = AppPaths.from_env().ensure()
    huge = RemoteFile(served.url, 10**15, served.sha256)  # a petabyte
    manager = DownloadManager(
        paths.models_dir, JobStore(paths.downloads_file), lambda: Transfer(requests.Session())
    )
    job = manager.add(REPO, "main", "Q4_1", (JobFile(NAME, huge),))
    _until(lambda: manager.jobs()[0].state == FAILED)
    assert manager.jobs()[0].error.startswith("Not enough disk space: needs ")
    assert hub.log.matching(NAME) == [] and job.id
    manager.close()


def test_a_library_of_200_files_with_5_corrupt(tiny_model: Path, tmp_path: Path) -> None:
    from tests.tinymodel import corrupt

    folder = tmp_path / "lots"
    for n in range(195):
        (folder / f"org{n % 5}" / f"repo{n}").mkdir(parents=True)
        os.link(tiny_model, folder / f"org{n % 5}" / f"repo{n}" / f"model-{n}-Q4_0.gguf")
    bad = folder / "bad" / "ones"
    bad.mkdir(parents=True)
    for n, kind in enumerate(
        [
            "bad_magic",
            "huge_string_length",
            "tensor_offset_past_end",
            "unknown_value_type",
            "huge_tensor_count",
        ]
    ):
        corrupt(tiny_model, kind, bad / f"broken-{n}-Q4_0.gguf")
    (bad / "half.gguf.part").write_bytes(b"GGUF")  # a partial download is never listed
    entries = scan([Root(folder, "lm-studio")])
    assert len(entries) == 200 and len({e.id for e in entries}) == 200
    broken = [e for e in entries if e.problem]
    assert sorted(e.name for e in broken) == [f"broken-{n}-Q4_0.gguf" for n in range(5)]
    assert all("is not a usable GGUF model" in e.problem for e in broken)
    good = [e for e in entries if not e.problem]
    assert all(e.architecture == "llama" and e.context_length and e.parameters for e in good)


def _until(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_cli_ls_rm_and_run_by_library_id(
    hub: HubStub, served: RemoteFile, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    assert main(["pull", f"{REPO}:Q4_1"]) == 0
    pulled = Path(capsys.readouterr().out.strip())
    assert pulled == target_for(_models(), REPO, NAME)
    assert main(["pull", f"{REPO}:Q8_0"]) == 1
    assert "has no variant Q8_0 (it has: Q4_1)" in capsys.readouterr().err
    folder = tmp_path / "mine"
    folder.mkdir()
    os.link(tiny_model, folder / "tiny-Q4_0.gguf")
    settings = AppPaths.from_env().settings_file
    settings.write_text(json.dumps({"schema_version": 1, "extra_model_dirs": [str(folder)]}))
    assert main(["ls", "--json"]) == 0
    listed = {e["id"]: e for e in json.loads(capsys.readouterr().out)}
    assert set(listed) >= {f"{REPO}:Q4_1", "dir:tiny-Q4_0"}
    assert listed[f"{REPO}:Q4_1"]["source"] == "hubside" and listed[f"{REPO}:Q4_1"]["architecture"] == "llama"
    assert main(["run", "dir:tiny-Q4_0", "--prompt", "Hi", "--max-tokens", "4", "--ctx", "128"]) == 0
    capsys.readouterr()
    assert main(["run", "nothing:like-this", "--prompt", "Hi"]) == 1
    assert "No model 'nothing:like-this' in the library" in capsys.readouterr().err
    assert main(["rm", "dir:tiny-Q4_0"]) == 0  # found in place: hidden, never deleted
    assert "hidden" in capsys.readouterr().out and (folder / "tiny-Q4_0.gguf").exists()
    assert main(["rm", f"{REPO}:Q4_1"]) == 0
    assert "deleted" in capsys.readouterr().out and not pulled.exists()
    assert main(["ls"]) == 0
    assert capsys.readouterr().out.startswith("No models yet")


def test_a_large_file_without_its_lfs_sha256_is_refused_before_any_byte(hub: HubStub) -> None:
    """A sibling without `lfs` has a blobId, but for a file in LFS that is its pointer's sha1: verifying the
    download by it always fails. Only a file small enough for git (10 MiB) is checked by its blob id."""
    from dataclasses import replace

    from app.downloads.jobs import job_files
    from app.hub.client import GIT_FILE_MAX_BYTES, HubClient
    from app.hub.quants import RepoFile, Variant

    big = "odd-Q8_0.gguf"
    hub.add_repo("acme/Odd-GGUF", {big: 64 * 1024 * 1024}, lfs_unlisted=(big,))
    client = HubClient(AppPaths.from_env().ensure().cache_dir / "hub")
    details = client.details("acme/Odd-GGUF").value
    (variant,) = details.variants
    assert variant.files[0].sha256 is None and variant.files[0].blob_id is None  # the pointer's: not kept
    with pytest.raises(AppError) as refused:
        job_files(details, variant, hub.endpoint)
    assert refused.value.kind is ErrorKind.HUB
    assert refused.value.user_message == (
        f"The Hub gave no sha256 for {big}, a file kept in LFS, so it could not be checked once downloaded; "
        "Hubside will not download it. Try again later."
    )
    # details saved by an earlier version kept the blob id: the size alone refuses it
    saved = Variant("Q8_0", (RepoFile(big, GIT_FILE_MAX_BYTES + 1, None, "ab" * 20),))
    with pytest.raises(AppError, match=f"no sha256 for {big}, a file kept in LFS"):
        job_files(details, saved, hub.endpoint)
    small = replace(saved, files=(RepoFile("small-Q8_0.gguf", GIT_FILE_MAX_BYTES, None, "ab" * 20),))
    assert job_files(details, small, hub.endpoint)[0].remote.git_blob == "ab" * 20
    assert not hub.log.matching("/resolve/")  # nothing was downloaded


def test_the_token_goes_only_to_the_hubs_own_scheme_host_and_port() -> None:
    hub_url = "https://huggingface.co/acme/m/resolve/0123/m.gguf"
    with requests.Session() as session:
        transfer = Transfer(session, token="hf_secret")
        for same in ("https://huggingface.co/api/resolve-cache/x", "https://HuggingFace.co:443/x"):
            assert transfer.headers_for(same, hub_url) == {"Authorization": "Bearer hf_secret"}
        for elsewhere in (
            "http://huggingface.co/api/resolve-cache/x",  # a redirect to plain http: the token in clear
            "https://huggingface.co:8443/x",
            "https://cas-bridge.xethub.hf.co/x",
            "https://huggingface.co.example.org/x",
            "https://huggingface.co:notaport/x",
        ):
            assert transfer.headers_for(elsewhere, hub_url) == {}, elsewhere
