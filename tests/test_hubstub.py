"""The Hub stand-in, proved by driving huggingface_hub itself (and plain HTTP for the fault switches)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.hubstub import Fault, HubStub

README = b"---\nlicense: apache-2.0\n---\n# Tiny\nA tiny test model.\n"


@pytest.fixture
def tiny_repo(hub: HubStub, tiny_model: Path) -> HubStub:
    """A GGUF repo with a model at the top, another quant in a sub-folder, and a README."""
    hub.add_repo(
        "acme/Tiny-GGUF",
        {
            "README.md": README,
            "tiny-Q8_0.gguf": tiny_model,
            "quants/tiny-F16.gguf": tiny_model,
        },
        downloads=1200,
        likes=7,
        cardData={"license": "apache-2.0"},
        lastModified="2026-10-01T00:00:00.000Z",
    )
    return hub


def _api():  # type: ignore[no-untyped-def]
    from huggingface_hub import HfApi

    return HfApi()  # endpoint from HF_ENDPOINT


def test_hf_endpoint_points_at_the_stand_in(hub: HubStub) -> None:
    from huggingface_hub import constants

    assert os.environ["HF_ENDPOINT"] == hub.endpoint
    assert hub.endpoint == constants.ENDPOINT


def test_list_models_search_filter_sort(hub: HubStub) -> None:
    for i in range(5):
        hub.add_repo(f"org{i}/Model{i}-GGUF", {"m.gguf": b"GGUF" + bytes(10)}, downloads=i * 10)
    hub.add_repo("other/NotGGUF", {"model.safetensors": b"x"}, downloads=999)

    models = list(_api().list_models(filter="gguf", sort="downloads", limit=3))
    assert [m.id for m in models] == ["org4/Model4-GGUF", "org3/Model3-GGUF", "org2/Model2-GGUF"]
    assert models[0].downloads == 40
    found = list(_api().list_models(search="model1", filter="gguf"))
    assert [m.id for m in found] == ["org1/Model1-GGUF"]
    assert hub.log.matching("/api/models")[-1].query["filter"] == ["gguf"]


def test_list_models_pages_through_link_next(hub: HubStub) -> None:
    hub.page_size = 7
    for i in range(30):
        hub.add_repo(f"bulk/m{i:03d}", {"m.gguf": b"GGUF"}, likes=i)
    ids = [m.id for m in _api().list_models(filter="gguf", sort="likes")]
    assert ids == [f"bulk/m{i:03d}" for i in reversed(range(30))]
    assert len(hub.log.matching("/api/models", "GET")) == 5  # ceil(30 / 7) pages


def test_model_info_with_files_metadata(tiny_repo: HubStub, tiny_model: Path) -> None:
    info = _api().model_info("acme/Tiny-GGUF", files_metadata=True)
    assert info.sha is not None and len(info.sha) == 40
    assert info.downloads == 1200 and info.likes == 7
    assert info.card_data is not None and info.card_data["license"] == "apache-2.0"
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == {"README.md", "tiny-Q8_0.gguf", "quants/tiny-F16.gguf"}
    model = siblings["tiny-Q8_0.gguf"]
    assert model.size == tiny_model.stat().st_size
    assert model.lfs is not None
    assert model.lfs.sha256 == hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    assert siblings["README.md"].lfs is None
    assert info.gguf is not None
    assert info.gguf["architecture"] == "llama"
    assert info.gguf["context_length"] == 512
    assert info.gguf["total"] > 0
    assert "im_start" in info.gguf["chat_template"]
    # The same commit is reachable by revision.
    pinned = _api().model_info("acme/Tiny-GGUF", revision=info.sha)
    assert pinned.sha == info.sha


def test_list_repo_tree_recursive_and_paths_info(tiny_repo: HubStub, tiny_model: Path) -> None:
    from huggingface_hub import RepoFile, RepoFolder

    top = list(_api().list_repo_tree("acme/Tiny-GGUF"))
    assert {e.path for e in top} == {"README.md", "tiny-Q8_0.gguf", "quants"}
    assert any(isinstance(e, RepoFolder) and e.path == "quants" for e in top)
    everything = list(_api().list_repo_tree("acme/Tiny-GGUF", recursive=True))
    files = {e.path: e for e in everything if isinstance(e, RepoFile)}
    assert set(files) == {"README.md", "tiny-Q8_0.gguf", "quants/tiny-F16.gguf"}
    sha = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    nested = files["quants/tiny-F16.gguf"]
    assert nested.lfs is not None and nested.lfs.sha256 == sha
    assert nested.size == tiny_model.stat().st_size

    info = _api().get_paths_info("acme/Tiny-GGUF", ["quants/tiny-F16.gguf", "quants", "nope"])
    assert [(type(e).__name__, e.path) for e in info] == [
        ("RepoFile", "quants/tiny-F16.gguf"),
        ("RepoFolder", "quants"),
    ]


def _plain_http_for_lfs(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub takes the Xet protocol where the redirect names it; the stand-in serves the CDN's
    plain HTTP only (what Hubside's own downloader uses)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def test_hf_hub_download_of_a_real_model_through_the_cdn_redirect(
    hub: HubStub, smollm2_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import hf_hub_download

    _plain_http_for_lfs(monkeypatch)

    repo = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    hub.add_repo(repo, {smollm2_path.name: smollm2_path})
    # Cut the transfer once past huggingface_hub's first 10 MiB chunk: it resumes with a Range request.
    hub.add_fault(Fault(path="/cdn-lfs/", drop_after=25_000_000))
    local = hf_hub_download(repo, smollm2_path.name, cache_dir=tmp_path)
    assert hashlib.sha256(Path(local).read_bytes()).hexdigest() == (
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    )
    resolve = hub.log.matching("/resolve/", "HEAD")[0]
    assert resolve.status == 302
    first, second = hub.log.matching("/cdn-lfs/", "GET")
    assert (first.server, first.status, first.body_bytes) == ("cdn", 200, 25_000_000)
    assert second.status == 206
    resumed_at = int(second.headers["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < resumed_at <= 25_000_000
    assert second.body_bytes == smollm2_path.stat().st_size - resumed_at


def test_small_files_are_served_by_the_hub_itself(tiny_repo: HubStub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download

    local = hf_hub_download("acme/Tiny-GGUF", "README.md", cache_dir=tmp_path)
    assert Path(local).read_bytes() == README
    assert not tiny_repo.log.matching("/cdn-lfs/")


def test_typed_errors(tiny_repo: HubStub, tmp_path: Path) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    # As the Hub: a stranger can't tell a missing repo from a private one (401, no error code) ...
    stranger = requests.get(f"{tiny_repo.endpoint}/api/models/nobody/nothing")
    assert stranger.status_code == 401 and "X-Error-Code" not in stranger.headers
    # ... a signed-in user can
    with pytest.raises(RepositoryNotFoundError):
        from huggingface_hub import HfApi

        HfApi(endpoint=tiny_repo.endpoint, token="hf_any").model_info("nobody/nothing")
    with pytest.raises(RevisionNotFoundError):
        _api().model_info("acme/Tiny-GGUF", revision="0" * 40)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("acme/Tiny-GGUF", "missing.gguf", cache_dir=tmp_path)


def test_gated_repo_needs_a_token_and_the_token_never_reaches_the_cdn(
    hub: HubStub, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    from app.errors import ErrorKind, to_app_error

    _plain_http_for_lfs(monkeypatch)

    hub.add_repo("meta/Gated-GGUF", {"g.gguf": tiny_model}, gated="manual")
    with pytest.raises(GatedRepoError) as raised:
        hf_hub_download("meta/Gated-GGUF", "g.gguf", cache_dir=tmp_path)
    assert to_app_error(raised.value).kind is ErrorKind.GATED

    hub.tokens.add("hf_secret")
    local = hf_hub_download("meta/Gated-GGUF", "g.gguf", cache_dir=tmp_path, token="hf_secret")
    assert Path(local).read_bytes() == tiny_model.read_bytes()
    assert hub.log.matching("/resolve/")[-1].headers["authorization"] == "Bearer hf_secret"
    assert all("authorization" not in r.headers for r in hub.log.matching("/cdn-lfs/"))


# --- the fault switches and HTTP details, checked with plain requests --------------------------------


def _resolve_cdn_url(hub: HubStub, repo: str, path: str) -> str:
    head = requests.head(f"{hub.endpoint}/{repo}/resolve/main/{path}", allow_redirects=False)
    assert head.status_code == 302
    assert head.headers["X-Linked-Size"] and head.headers["X-Linked-Etag"]
    assert len(head.headers["X-Repo-Commit"]) == 40
    return head.headers["Location"]


@pytest.fixture(params=["in memory", "on disk"])
def blob(hub: HubStub, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[HubStub, bytes, str]:
    """A file served from memory (Python writes it) or from disk (the kernel sends it, unless a fault
    changes the bytes)."""
    data = bytes(range(256)) * 400  # 102400 bytes
    content: bytes | Path = data
    if request.param == "on disk":
        content = tmp_path / "blob.gguf"
        content.write_bytes(data)
    hub.add_repo("acme/Blob", {"blob.gguf": content})
    return hub, data, _resolve_cdn_url(hub, "acme/Blob", "blob.gguf")


def test_range_if_range_and_416(blob: tuple[HubStub, bytes, str]) -> None:
    _hub, data, url = blob
    full = requests.get(url)
    etag = full.headers["ETag"]
    assert full.content == data
    assert etag != f'"{hashlib.sha256(data).hexdigest()}"'  # the CDN's own validator (the Xet hash)
    part = requests.get(url, headers={"Range": "bytes=100-", "If-Range": etag})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert part.content == data[100:]
    stale = requests.get(url, headers={"Range": "bytes=100-", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == data
    past = requests.get(url, headers={"Range": f"bytes={len(data)}-"})
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(data)}"


def test_transfer_faults(blob: tuple[HubStub, bytes, str]) -> None:
    hub, data, url = blob
    hub.add_fault(Fault(path="blob.gguf", ignore_range=True))
    ignored = requests.get(url, headers={"Range": "bytes=10-"})
    assert ignored.status_code == 200 and ignored.content == data

    hub.add_fault(Fault(path="blob.gguf", wrong_content_range=True))
    wrong = requests.get(url, headers={"Range": "bytes=10-"})
    assert wrong.status_code == 206
    assert wrong.headers["Content-Range"].startswith("bytes 11-")

    hub.add_fault(Fault(path="blob.gguf", flip_byte=5000))
    flipped = requests.get(url).content
    assert flipped[5000] == data[5000] ^ 0xFF and flipped[:5000] == data[:5000]

    etag = requests.head(url).headers["ETag"]
    hub.add_fault(Fault(path="blob.gguf", other_version=True, times=None))
    changed = requests.get(url, headers={"Range": "bytes=10-", "If-Range": etag})
    assert changed.status_code == 200  # the version changed, so the whole new file comes back
    assert changed.headers["ETag"] != etag and changed.content != data
    hub.faults.clear()

    hub.add_fault(Fault(path="blob.gguf", drop_after=1234))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(url)
    assert hub.log.all()[-1].body_bytes == 1234


def test_stall_sends_nothing_more(blob: tuple[HubStub, bytes, str]) -> None:
    hub, _, url = blob
    hub.add_fault(Fault(path="blob.gguf", stall_after=100, stall_seconds=30))
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url, timeout=(5, 0.5))  # read timeout: no byte for 0.5 s
    assert time.monotonic() - started < 10


def test_status_sequences_and_odd_api_answers(tiny_repo: HubStub) -> None:
    hub = tiny_repo
    hub.fail_with("/api/models/acme/Tiny-GGUF", 503, 429, retry_after="2")
    url = f"{hub.endpoint}/api/models/acme/Tiny-GGUF"
    first, second, third = (requests.get(url) for _ in range(3))
    assert (first.status_code, first.headers["Retry-After"]) == (503, "2")
    assert (second.status_code, second.headers["Retry-After"]) == (429, "2")
    assert third.status_code == 200 and third.json()["id"] == "acme/Tiny-GGUF"

    hub.add_fault(Fault(path="/api/models/acme", body=b"<html>Hi</html>", content_type="text/html"))
    html = requests.get(url)
    assert html.status_code == 200 and html.text == "<html>Hi</html>"

    loop = f'<{hub.endpoint}/api/models?cursor=0>; rel="next"'
    hub.add_fault(Fault(path="/api/models", body=b"[]", headers={"Link": loop}, times=None))
    assert requests.get(f"{hub.endpoint}/api/models").links["next"]["url"].endswith("cursor=0")


def test_expired_or_forged_cdn_urls_are_refused(blob: tuple[HubStub, bytes, str]) -> None:
    hub, _, url = blob
    assert requests.get(url.replace("Signature=", "Signature=0")).status_code == 403
    assert requests.get(url, headers={"Authorization": "Bearer x"}).status_code == 400
    hub.cdn_url_ttl = -1
    expired = _resolve_cdn_url(hub, "acme/Blob", "blob.gguf")
    assert requests.get(expired).status_code == 403


def test_runnable_by_hand(tmp_path: Path, tiny_model: Path) -> None:
    repo = tmp_path / "served" / "someone" / "Tiny-GGUF"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / "tiny-Q4_K_M.gguf").write_bytes(tiny_model.read_bytes())
    (repo / ".hub.json").write_text(json.dumps({"downloads": 5, "gated": False}))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.hubstub", "--port", "0", str(tmp_path / "served")],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith("Serving 1 repos")
        endpoint = process.stdout.readline().split()[0].removeprefix("HF_ENDPOINT=")
        info = requests.get(f"{endpoint}/api/models/someone/Tiny-GGUF?blobs=true").json()
        assert info["downloads"] == 5
        assert [s["rfilename"] for s in info["siblings"]] == ["sub/tiny-Q4_K_M.gguf"]
    finally:
        process.terminate()
        process.wait(timeout=10)


# --- strict to the real Hub (HUB_NOTES.md): a client that relies on more fails here as it would there ------


def test_listing_rows_carry_only_the_hubs_fields_unless_expanded(tiny_repo: HubStub) -> None:
    from tests.hubstub.repos import LISTING_FIELDS

    url = f"{tiny_repo.endpoint}/api/models"
    plain = requests.get(url, params={"filter": "gguf"}).json()
    assert set(plain[0]) == set(LISTING_FIELDS)  # no lastModified, gated, author, gguf, siblings
    expanded = requests.get(url, params={"filter": "gguf", "expand[]": ["lastModified", "gated"]}).json()
    assert expanded == [
        {
            "_id": plain[0]["_id"],
            "id": "acme/Tiny-GGUF",
            "lastModified": "2026-10-01T00:00:00.000Z",
            "gated": False,
        }
    ]
    for bad in ({"expand[]": "lastmodified"}, {"expand[]": "gated", "full": "true"}, {"sort": "name"}):
        assert requests.get(url, params=bad).status_code == 400, bad
    info = requests.get(f"{url}/acme/Tiny-GGUF", params={"expand[]": "gguf"}).json()  # model info too
    assert set(info) == {"_id", "id", "gguf"} and info["gguf"]["architecture"]
    assert requests.get(f"{url}/acme/Tiny-GGUF", params={"expand[]": "ggufs"}).status_code == 400


def test_no_architecture_tags_the_architecture_is_in_model_info(hub: HubStub, tiny_model: Path) -> None:
    hub.add_repo("acme/Tiny-GGUF", {"tiny-Q8_0.gguf": tiny_model})
    url = f"{hub.endpoint}/api/models"
    architecture = requests.get(f"{url}/acme/Tiny-GGUF").json()["gguf"]["architecture"]
    assert architecture and architecture not in requests.get(url).json()[0]["tags"]
    assert requests.get(url, params={"filter": ["gguf", architecture]}).json() == []


def test_gated_is_401_without_a_token_and_403_with_one_that_lacks_access(hub: HubStub) -> None:
    hub.add_repo("meta/Gated-GGUF", {"README.md": b"card"}, gated="manual")
    url = f"{hub.endpoint}/meta/Gated-GGUF/resolve/main/README.md"
    stranger = requests.get(url, allow_redirects=False)
    signed_in = requests.get(url, headers={"Authorization": "Bearer hf_other"}, allow_redirects=False)
    assert (stranger.status_code, stranger.headers["X-Error-Code"]) == (401, "GatedRepo")
    assert (signed_in.status_code, signed_in.headers["X-Error-Code"]) == (403, "GatedRepo")


def test_small_files_redirect_relatively_and_lfs_files_to_the_cdn_with_xet_headers(
    tiny_repo: HubStub, tiny_model: Path
) -> None:
    small = requests.get(f"{tiny_repo.endpoint}/acme/Tiny-GGUF/resolve/main/README.md", allow_redirects=False)
    assert small.status_code == 307 and small.headers["Location"].startswith("/api/resolve-cache/models/")
    assert requests.get(tiny_repo.endpoint + small.headers["Location"]).content == README
    lfs = requests.head(f"{tiny_repo.endpoint}/acme/Tiny-GGUF/resolve/main/tiny-Q8_0.gguf")
    assert lfs.status_code == 302 and lfs.headers["Location"].startswith(tiny_repo.cdn_endpoint)
    assert lfs.headers["X-Xet-Hash"] and 'rel="xet-auth"' in lfs.headers["Link"]
    cdn = requests.head(lfs.headers["Location"])
    assert cdn.headers["ETag"] == f'"{lfs.headers["X-Xet-Hash"]}"'
    assert cdn.headers["ETag"] != lfs.headers["X-Linked-Etag"]  # not the sha256


def test_rate_limit_header_without_retry_after_and_agent_harnesses(hub: HubStub) -> None:
    hub.fail_with("/api/models", 429, rate_limit_reset=55)
    limited = requests.get(f"{hub.endpoint}/api/models")
    assert limited.status_code == 429 and "Retry-After" not in limited.headers
    assert limited.headers["RateLimit"] == '"api";r=0;t=55'
    harnesses = requests.get(f"{hub.endpoint}/api/agent-harnesses").json()
    assert harnesses == {"standardEnvVars": [], "harnesses": {}}
