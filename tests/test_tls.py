"""HTTPS end to end, on loopback with a throw-away CA: one trust store (the system's) for the Hub API and
downloads, a certificate failure named as such, proxies from the environment, no token after a downgrade."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.downloads.transfer import RemoteFile, Transfer, download
from app.errors import AppError, ErrorKind
from app.hub.client import HubClient
from app.paths import AppPaths
from tests.hubstub.faults import Fault
from tests.hubstub.server import HubStub
from tests.tls_helpers import ConnectProxy, ThrowawayCA, TLSHubStub, make_ca

REPO = "acme/tiny-GGUF"
NAME = "tiny-Q4_0.gguf"
DATA = b"GGUF" + bytes(range(256)) * 64
CARD = b"# tiny\n"
TRUST_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
PROXY_ENV = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@pytest.fixture(scope="module")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> ThrowawayCA:
    return make_ca(tmp_path_factory.mktemp("test-ca"))


@pytest.fixture
def tls_hub(test_ca: ThrowawayCA) -> Iterator[TLSHubStub]:
    with TLSHubStub(test_ca.server_context()) as stub:
        stub.add_repo(REPO, {NAME: DATA, "README.md": CARD})
        yield stub


@pytest.fixture(autouse=True)
def clean_network_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No trust or proxy settings from this machine; huggingface_hub's shared client is built afresh (it
    reads them when it is made)."""
    from huggingface_hub import close_session

    for name in (*TRUST_ENV, *PROXY_ENV, "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    close_session()
    yield
    close_session()


def _trust(monkeypatch: pytest.MonkeyPatch, ca: ThrowawayCA) -> None:
    """Trust the test CA the way a user trusts a company proxy's root on Linux: the system store's file."""
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    from huggingface_hub import close_session

    close_session()


def _client(stub: HubStub, token: str | None = None) -> HubClient:
    return HubClient(AppPaths.from_env().ensure().cache_dir / "hub", token, endpoint=stub.endpoint)


def _remote(stub: HubStub) -> RemoteFile:
    sha = stub.repos.get(REPO).sha  # type: ignore[union-attr]
    return RemoteFile(
        f"{stub.endpoint}/{REPO}/resolve/{sha}/{NAME}", len(DATA), hashlib.sha256(DATA).hexdigest()
    )


def _download(stub: HubStub, waits: list[float], token: str | None = None) -> Path:
    target = AppPaths.from_env().ensure().models_dir / NAME
    with requests.Session() as session:
        download(Transfer(session, token, sleep=waits.append), _remote(stub), target)
    return target


def test_an_untrusted_certificate_is_named_as_such_by_the_hub_api_and_downloads(tls_hub: TLSHubStub) -> None:
    with pytest.raises(AppError) as api:
        _client(tls_hub).details(REPO)
    waits: list[float] = []
    with pytest.raises(AppError) as transfer:
        _download(tls_hub, waits)
    for failure in (api.value, transfer.value):
        assert failure.kind is ErrorKind.TLS, failure
        assert failure.user_message.startswith("The certificate of 127.0.0.1 could not be verified"), failure
        assert "system's certificate store" in failure.user_message
        assert "verif" in failure.user_message and "turn off" not in failure.user_message.lower()
    assert waits == []  # a certificate is not retried: it will not change in a few seconds


def test_a_ca_the_system_trusts_works_for_the_hub_api_and_downloads(
    tls_hub: TLSHubStub, test_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust(monkeypatch, test_ca)
    client = _client(tls_hub)
    details = client.details(REPO).value
    assert details.sha == tls_hub.repos.get(REPO).sha  # type: ignore[union-attr]
    assert client.card(details).value == CARD.decode()
    target = _download(tls_hub, [])
    assert target.read_bytes() == DATA
    assert {r.server for r in tls_hub.log.matching(f"/{NAME}")} == {"hub", "cdn"}  # both over https


def test_a_redirect_from_https_to_http_on_the_same_host_gets_no_token(
    tls_hub: TLSHubStub, hub: HubStub, test_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust(monkeypatch, test_ca)
    plain = hub.add_repo(REPO, {NAME: DATA, "README.md": CARD})
    for path in ("README.md", NAME):  # the card (the Hub API's client) and a download
        downgrade = f"{hub.endpoint}/{REPO}/resolve/{plain.sha}/{path}"
        assert downgrade.startswith("http://127.0.0.1:")
        tls_hub.add_fault(Fault(path=f"/resolve/{tls_hub.repos.get(REPO).sha}/{path}", status=302,  # type: ignore[union-attr]
                                headers={"Location": downgrade}))  # fmt: skip
    client = _client(tls_hub, token="hf_secret")
    assert client.card(client.details(REPO).value).value == CARD.decode()
    assert _download(tls_hub, [], token="hf_secret").read_bytes() == DATA
    for path in ("README.md", NAME):
        asked = tls_hub.log.matching(f"/resolve/{tls_hub.repos.get(REPO).sha}/{path}")  # type: ignore[union-attr]
        assert asked and all(r.headers.get("authorization") == "Bearer hf_secret" for r in asked)
        followed = hub.log.matching(f"/{path}")
        assert followed and all("authorization" not in r.headers for r in followed), followed


def test_https_proxy_and_no_proxy_are_honoured_by_both_clients(
    tls_hub: TLSHubStub, test_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust(monkeypatch, test_ca)
    hub_port, cdn_port = (url.rsplit(":", 1)[1] for url in (tls_hub.endpoint, tls_hub.cdn_endpoint))
    with ConnectProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        from huggingface_hub import close_session

        close_session()
        _client(tls_hub).details(REPO)
        assert proxy.lines and set(proxy.lines) == {f"CONNECT 127.0.0.1:{hub_port}"}
        proxy.lines.clear()
        assert _download(tls_hub, []).read_bytes() == DATA
        assert set(proxy.lines) == {f"CONNECT 127.0.0.1:{port}" for port in (hub_port, cdn_port)}

        proxy.lines.clear()
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        close_session()
        _client(tls_hub).details(REPO)
        _download(tls_hub, []).unlink()
        assert proxy.lines == []


def test_the_last_saved_details_stand_in_with_the_certificate_message(
    tls_hub: TLSHubStub, test_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    _trust(monkeypatch, test_ca)
    assert not _client(tls_hub).details(REPO).stale
    monkeypatch.delenv("SSL_CERT_FILE")  # the proxy's root is gone from the system's store
    from huggingface_hub import close_session

    close_session()
    saved = _client(tls_hub).details(REPO)
    assert saved.stale and saved.value.id == REPO
    assert saved.problem.startswith("The certificate of 127.0.0.1 could not be verified")


def test_an_https_endpoint_never_follows_a_next_page_to_plain_http(
    tls_hub: TLSHubStub, hub: HubStub, test_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.hub.client import SearchQuery

    _trust(monkeypatch, test_ca)
    hub.add_repo("acme/other-GGUF", {NAME: DATA})
    link = f'<{hub.endpoint}/api/models?cursor=1&filter=gguf>; rel="next"'  # same host, plain http
    tls_hub.add_fault(Fault(path="/api/models", body=b'[{"id": "x/m-GGUF"}]', headers={"Link": link}))
    pages = _client(tls_hub, token="hf_secret").search(SearchQuery(text="anything"))
    assert [m.id for m in pages.next(50)] == ["x/m-GGUF"] and pages.done
    assert hub.log.all() == []  # the plain-http page was never asked


def test_a_bundle_only_requests_would_read_is_not_a_second_trust_store(
    tls_hub: TLSHubStub, test_ca: ThrowawayCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE is requests' own setting: honouring it for downloads alone would bring back two
    stores that disagree (the Hub API's details fail, the download works)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(test_ca.ca_file))
    with pytest.raises(AppError) as api:
        _client(tls_hub).details(REPO)
    with pytest.raises(AppError) as transfer:
        _download(tls_hub, [])
    assert api.value.kind is transfer.value.kind is ErrorKind.TLS
