"""One Hubside per data dir: a second launch hands its request (show the window, or open a hubside:// link)
to the first over a local socket and exits. Links look like the Hub's "Use this model" buttons make them:
`hubside://open?repo=OWNER/NAME&file=PATH`.

Who is first is decided by a lock file in the data dir (`QLockFile`), taken before any service is built: two
quick launches can both find no listener, but only one of them gets the lock."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from PySide6.QtCore import QLockFile, QObject, Signal, Slot
from PySide6.QtNetwork import QLocalServer, QLocalSocket

from app.errors import AppError, ErrorKind

CONNECT_TIMEOUT_MS = 500
LOCK_FILE = "hubside.lock"
LOCK_POLL_MS = 100
HAND_OVER_WAIT_S = 10.0  # the first instance listens right after taking the lock, but a busy machine is slow
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")  # an owner or a repo name on the Hub
SCHEME = "hubside"


@dataclass(frozen=True)
class DeepLink:
    repo: str
    file: str = ""


def parse_link(url: str) -> DeepLink:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    repo = (query.get("repo") or [""])[0]
    owner, _, name = repo.partition("/")
    if parts.scheme != SCHEME or parts.netloc != "open" or not (_NAME.match(owner) and _NAME.match(name)):
        raise AppError(
            ErrorKind.BAD_INPUT, f"Not a Hubside link: {url!r} (expected hubside://open?repo=OWNER/NAME)."
        )
    return DeepLink(repo, (query.get("file") or [""])[0])


def server_name(data_dir: Path) -> str:
    return "hubside-" + hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def hand_over(data_dir: Path, message: str) -> bool:
    """Give `message` to a Hubside already running on this data dir; False if there is none."""
    socket = QLocalSocket()
    socket.connectToServer(server_name(data_dir))
    if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
        return False
    socket.write(message.encode("utf-8") + b"\n")
    socket.waitForBytesWritten(CONNECT_TIMEOUT_MS)
    socket.disconnectFromServer()
    return True


def claim(data_dir: Path, message: str, wait_s: float = HAND_OVER_WAIT_S) -> QLockFile | None:
    """The data dir's lock, held, when this launch is the first (it then listens with `SingleInstance`);
    None once `message` was handed to the instance that holds the lock. An instance that is quitting lets
    go of the lock soon, so both are retried until `wait_s` has passed."""
    lock = QLockFile(str(data_dir / LOCK_FILE))
    lock.setStaleLockTime(0)  # stale only when the process that holds it is gone (killed), never by age
    deadline = time.monotonic() + wait_s
    while not lock.tryLock(LOCK_POLL_MS):
        if hand_over(data_dir, message):
            return None
        if time.monotonic() > deadline:
            raise AppError(
                ErrorKind.INTERNAL,
                "Hubside is already running for this data folder but does not answer; close it, try again.",
                f"lock {data_dir / LOCK_FILE} held, no listener",
            )
    return lock


class SingleInstance(QObject):
    """The first instance's listener: `message` carries "show" or a hubside:// link. Create it only while
    holding the lock from `claim`: it removes a socket left behind by a killed instance."""

    message = Signal(str)

    def __init__(self, data_dir: Path) -> None:
        super().__init__()
        self.server = QLocalServer(self)
        name = server_name(data_dir)
        QLocalServer.removeServer(name)  # a socket left by an instance that was killed
        self.server.listen(name)
        self.server.newConnection.connect(self._accept)

    @Slot()
    def _accept(self) -> None:
        while (socket := self.server.nextPendingConnection()) is not None:
            socket.readyRead.connect(lambda s=socket: self._read(s))
            if socket.bytesAvailable():
                self._read(socket)

    def _read(self, socket: QLocalSocket) -> None:
        while socket.canReadLine():
            self.message.emit(bytes(socket.readLine().data()).decode("utf-8", "replace").strip())

    def close(self) -> None:
        self.server.close()
