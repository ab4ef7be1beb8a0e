"""The server as one object: the catalog, the model host and the ASGI app, run by uvicorn (programmatically,
its logging routed to ours). `run()` blocks in the main thread (Ctrl-C stops it); `start()` runs it in a
thread (the window, the tests) until `stop()`."""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass

import uvicorn

from app.errors import AppError, ErrorKind
from app.paths import AppPaths
from app.server.app import LOOPBACK_NAMES, RequestLog, ServerOptions, build_app
from app.server.models import Catalog, HostOptions, ModelHost, SharedEngines
from app.settings import DEFAULT_SERVER_PORT

log = logging.getLogger(__name__)
GRACEFUL_S = 3  # a stream still open at shutdown is cut after this


@dataclass(frozen=True)
class Address:
    host: str = "127.0.0.1"
    port: int = DEFAULT_SERVER_PORT

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_NAMES or self.host == "::1" or self.host.startswith("127.")


class Server:
    def __init__(
        self, paths: AppPaths, catalog: Catalog, address: Address, host_options: HostOptions, api_key: str,
        cors_origins: tuple[str, ...] = (), shared: SharedEngines = lambda p: None,
    ) -> None:  # fmt: skip
        self.address = address
        self.host = ModelHost(paths, catalog, host_options, shared)
        self.requests = RequestLog()
        options = ServerOptions(api_key, check_host=address.loopback, cors_origins=cors_origins)
        config = uvicorn.Config(
            build_app(self.host, options, self.requests),
            log_config=None,  # uvicorn's loggers propagate to ours (the log file)
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=GRACEFUL_S,
            server_header=False,
        )
        self._uvicorn = uvicorn.Server(config)
        self._socket = _bind(address)
        self.port = self._socket.getsockname()[1]
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.address.host}]" if ":" in self.address.host else self.address.host
        return f"http://{host}:{self.port}/v1"

    def run(self) -> None:
        """Serve until Ctrl-C (uvicorn's own handler: in-flight streams get GRACEFUL_S), then close every
        engine."""
        try:
            self._uvicorn.run(sockets=[self._socket])
        finally:
            self.host.close()
            self._socket.close()

    def start(self) -> Server:
        self._thread = threading.Thread(target=self.run, name="server", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)


def _bind(address: Address) -> socket.socket:
    try:
        family = socket.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        sock.listen(128)
    except OSError as exc:
        raise AppError(
            ErrorKind.BAD_INPUT,
            f"Cannot listen on {address.host}:{address.port} ({exc.strerror or exc}); choose another --port.",
            str(exc),
        ) from exc
    sock.set_inheritable(False)
    return sock
