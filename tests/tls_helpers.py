"""Real TLS for tests: a throw-away CA made with `openssl`, the Hub stand-in speaking https, and a loopback
CONNECT proxy that records what it is asked to tunnel."""

from __future__ import annotations

import contextlib
import select
import socket
import socketserver
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.hubstub import HubStub


@dataclass(frozen=True)
class ThrowawayCA:
    """A CA (`ca_file`, to trust) and a certificate it signed for localhost and 127.0.0.1."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_ca(folder: Path) -> ThrowawayCA:
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_file = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "server.key", folder / "server.csr", folder / "server.pem"
    extensions = folder / "server.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["req", "-x509", *ec, "-keyout", ca_key, "-out", ca_file, "-days", "2",
         "-subj", "/CN=Hubside Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["req", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", csr, "-CA", ca_file, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "2", "-extfile", extensions],
    ):  # fmt: skip
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True, timeout=60)
    return ThrowawayCA(ca_file, cert, key)


class TLSHubStub(HubStub):
    """The stand-in over https (its Hub and its CDN), with a certificate from a test CA."""

    def __init__(self, context: ssl.SSLContext, root: Path | None = None, **options: Any) -> None:
        super().__init__(root, **options)
        for server in (self._hub, self._cdn):
            # the handshake happens on the first read, in the request's own thread
            server.socket = context.wrap_socket(
                server.socket, server_side=True, do_handshake_on_connect=False
            )

    @property
    def endpoint(self) -> str:
        return "https" + super().endpoint.removeprefix("http")

    @property
    def cdn_endpoint(self) -> str:
        return "https" + super().cdn_endpoint.removeprefix("http")


class ConnectProxy(socketserver.ThreadingTCPServer):
    """An HTTP proxy that only tunnels (CONNECT), keeping each request's method and target in `lines`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self.serve_forever, name="connect-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ConnectProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class _Tunnel(socketserver.StreamRequestHandler):
    server: ConnectProxy

    def handle(self) -> None:
        method, target, _ = self.rfile.readline(65536).decode("latin-1").split(" ", 2)
        self.server.lines.append(f"{method} {target}")  # e.g. "CONNECT 127.0.0.1:8443"
        while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
            pass  # the request's headers
        if method != "CONNECT":
            self.wfile.write(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return
        host, port = target.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as upstream:
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            _pump(self.connection, upstream)


def _pump(client: socket.socket, upstream: socket.socket) -> None:
    """Copy bytes both ways until either side closes."""
    sockets = [client, upstream]
    while True:
        readable, _, _ = select.select(sockets, [], [], 30)
        if not readable:
            return
        for sock in readable:
            with contextlib.suppress(OSError):
                data = sock.recv(65536)
                if data:
                    (upstream if sock is client else client).sendall(data)
                    continue
            return
