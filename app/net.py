"""One trust store for every HTTPS connection Hubside makes: the system's.

The Hub API goes through huggingface_hub's httpx2 client, whose default context is the system's store
(truststore on macOS and Windows; OpenSSL's system paths on Linux, which `SSL_CERT_FILE` and `SSL_CERT_DIR`
move). Downloads go through requests, which would use certifi's bundle instead: behind a TLS-inspecting
proxy whose root certificate the system trusts, the Hub API would work and every download fail. So the
downloads' session gets the very context httpx2 builds (`ssl_context`): both agree by construction.

Why httpx2's context and not a `truststore.SSLContext` of our own: on Linux truststore re-reads the
default paths at every handshake, which OpenSSL before 3.4 piles up (sethmlarson/truststore#212; a long
download session reconnects at every resume); httpx2 loads them once there and uses truststore elsewhere.

Verification is never turned off. Proxies come from `HTTPS_PROXY` / `NO_PROXY`: both libraries read the
environment, and nothing here stops them.
"""

from __future__ import annotations

import ssl
from typing import Any

import requests
from requests.adapters import HTTPAdapter


def ssl_context() -> ssl.SSLContext:
    """A client context over the system's store, as httpx2 (so huggingface_hub) makes its own."""
    import httpx2

    return httpx2.create_ssl_context()


class SystemTrustAdapter(HTTPAdapter):
    """requests over `ssl_context`, directly or through a proxy; certifi's bundle (or a REQUESTS_CA_BUNDLE)
    is never added to it, and verification cannot be turned off."""

    def __init__(self, **kwargs: Any) -> None:
        self._ssl_context = ssl_context()  # before super().__init__, which builds the pool manager
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        pool_kwargs.setdefault("ssl_context", self._ssl_context)
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        proxy_kwargs.setdefault("ssl_context", self._ssl_context)  # for the connection tunnelled through it
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        # verify=True always: not False, nor the path of a bundle (REQUESTS_CA_BUNDLE) the Hub API ignores
        return super().send(request, stream, timeout, True, cert, proxies)

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        conn.ca_certs = conn.ca_cert_dir = None  # requests names certifi's bundle here: our context decides


def use_system_trust(session: requests.Session, pool_size: int = 10) -> requests.Session:
    """`session` with its https:// connections verified against the system's store (returned), keeping up
    to `pool_size` connections to a host open for reuse (10: requests' own default)."""
    session.mount("https://", SystemTrustAdapter(pool_maxsize=pool_size))
    session.mount("http://", HTTPAdapter(pool_maxsize=pool_size))
    return session
