"""For the untrusted-text tests: a loopback server that records any request (an image must never be
fetched), and a catcher for what QDesktopServices would open (Qt's own hook for URL schemes)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

from PySide6.QtCore import QObject, QUrl, Slot
from PySide6.QtGui import QDesktopServices

SCHEMES = ("http", "https", "file", "javascript")


class Canary:
    def __init__(self, server: HTTPServer, requests_seen: list[str]) -> None:
        self.image = f"http://127.0.0.1:{server.server_port}/pixel.png"
        self.requests_seen = requests_seen


@contextmanager
def canary_server() -> Iterator[Canary]:
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Canary(server, seen)
    finally:
        server.shutdown()
        server.server_close()


class LinkCatcher(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.opened: list[str] = []

    @Slot(QUrl)
    def open(self, url: QUrl) -> None:
        self.opened.append(url.toString())


@contextmanager
def catching_links() -> Iterator[LinkCatcher]:
    """While inside, every link the app asks the desktop to open lands in `.opened` instead."""
    catcher = LinkCatcher()
    for scheme in SCHEMES:
        QDesktopServices.setUrlHandler(scheme, catcher, "open")
    try:
        yield catcher
    finally:
        for scheme in SCHEMES:
            QDesktopServices.unsetUrlHandler(scheme)
