"""Typed user settings, stored as JSON with a schema version and saved atomically.

One writer path, for the window and the CLI alike: `update()` takes a lock on a sibling file, reads the file
as it is now, applies a change and writes it atomically, so that no writer undoes another's change (the
window once rewrote its whole copy on quit, bringing back a model `hubside rm` had just hidden).

A settings file Hubside cannot read is moved aside (never deleted) and defaults are used. A file written by a
newer Hubside is read for the fields this version knows and is never overwritten by it.
"""

from __future__ import annotations

import copy
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import time
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.errors import AppError, ErrorKind
from app.files import write_atomic

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
LOCK_WAIT_S = 2.0  # how long a writer waits for another process's change of the settings
DEFAULT_CONTEXT = 8192  # tokens: the setting's default and the cap on an automatic context
# The server's port. Not 1234 (LM Studio), 11434 (Ollama), 1337 (Jan), 8080 (llama-server, LocalAI,
# llamafile), 5001 (koboldcpp), 8000 (vLLM), 5000/7860 (text-generation-webui), 4891 (GPT4All), 4000
# (LiteLLM), 8188 (ComfyUI), 8888 (Jupyter), 8765 (AnkiConnect); 8420 is in no list of theirs, nor in
# /etc/services.
DEFAULT_SERVER_PORT = 8420
MAX_CONNECTIONS = 16  # per file: more gains nothing on a home line and burdens the CDN

# schema_version N -> function turning a version-N dict into a version-(N+1) dict.
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


@dataclass
class Settings:
    schema_version: int = SCHEMA_VERSION
    models_dir: str | None = None  # None: AppPaths.models_dir
    extra_model_dirs: list[str] = field(default_factory=list)
    max_parallel_downloads: int = 2
    download_stall_seconds: int = 30
    download_connections: int = 8  # per file, 1..16
    download_limit_mbps: float = 0.0  # MB/s (10^6 bytes/s) for all downloads together; 0: no limit
    hub_mirror: str = ""  # the Hub's endpoint instead of huggingface.co (HF_ENDPOINT still wins); "": none
    default_context_length: int = DEFAULT_CONTEXT
    default_gpu_layers: int | None = None  # None: decide from the memory estimate
    threads: int | None = None  # None: physical cores
    flash_attention: bool = True
    theme: str = "system"  # system, light, dark
    welcomed: bool = False  # the first-run welcome was shown
    crashed_models: list[str] = field(default_factory=list)  # loads that took the engine down
    last_page: str = "chat"
    recent_models: list[str] = field(default_factory=list)
    hidden_models: list[str] = field(default_factory=list)  # found-in-place files the user removed
    sampling_preset: str = "Balanced"
    max_tokens: int = 1024  # per reply; 0: until the context is full
    window_geometry: str = ""  # Qt's saveGeometry(), base64
    server_idle_unload_minutes: float = 10.0  # `hubside serve` unloads a model nobody asked for this long
    server_cors_origins: list[str] = field(default_factory=list)  # web origins the server answers (CORS)
    server_port: int = DEFAULT_SERVER_PORT  # the window's server, used at its next start
    server_parallel: int = 1  # requests the window's server decodes together per model
    server_on_at_start: bool = False  # the window's server was on at quit: it starts with the next window

    def __post_init__(self) -> None:
        """Keep the download fields within their bounds, whatever the file said."""
        self.download_connections = min(MAX_CONNECTIONS, max(1, self.download_connections))
        self.download_limit_mbps = max(0.0, float(self.download_limit_mbps))
        try:
            self.hub_mirror = mirror_endpoint(self.hub_mirror)
        except ValueError as exc:
            log.warning("settings: ignoring hub_mirror (%s)", exc)
            self.hub_mirror = ""

    def models_folder(self, default: Path) -> Path:
        """Where models are downloaded: the setting, else `default` (AppPaths.models_dir)."""
        return Path(self.models_dir) if self.models_dir else default


def mirror_endpoint(url: str) -> str:
    """A Hub mirror's endpoint as given by the user, tidied ("" for none); ValueError says what is wrong.
    https only (the token goes to it), plain http only for this machine (a local proxy or test server)."""
    url = url.strip().rstrip("/")
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"The Hub mirror must be a web address such as https://hf-mirror.com, not {url!r}.")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValueError(f"The Hub mirror must use https (plain http only for this machine): {url!r}.")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"The Hub mirror is an address without a query or a user name: {url!r}.")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a field's type hint (int, bool, str, None, list[...] and unions)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:  # JSON writes 5.0 as 5 too
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _coerce(raw: dict[str, Any]) -> Settings:
    """Keep each known field whose value fits its type; log and drop the rest."""
    hints = typing.get_type_hints(Settings)
    values: dict[str, Any] = {}
    for name, hint in hints.items():
        if name not in raw:
            continue
        if _matches(raw[name], hint):
            values[name] = raw[name]
        else:
            log.warning("settings: ignoring %s=%r (expected %s)", name, raw[name], hint)
    return Settings(**values)


Change = Callable[[Settings], None]


class SettingsStore:
    """Reads `Settings` at one path, and writes them only through `update()` (the one writer path)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read_only = False  # set when the file comes from a newer Hubside
        self._known: Settings | None = None  # what this store last read or wrote (None: not yet)

    def load(self) -> Settings:
        settings = self._read()
        self._known = copy.deepcopy(settings)
        return settings

    def update(self, change: Change) -> Settings:
        """Under the lock: read the file as it is now, apply `change`, write it; the settings written."""
        with _locked(self.path):
            settings = self._read()
            change(settings)
            if self.read_only:
                log.warning("settings: not saved, the file belongs to a newer Hubside")
            else:
                data = json.dumps(dataclasses.asdict(settings), indent=2, sort_keys=True) + "\n"
                write_atomic(self.path, data.encode("utf-8"))
        self._known = copy.deepcopy(settings)
        return settings

    def save(self, settings: Settings, change: Change | None = None) -> None:
        """Write the fields `settings` changed since this store last read or wrote them (every field if it
        has not yet), then `change` (for what must apply to the file as it is now, such as adding to a
        list), onto the file as another process may have left it; then `settings` takes what it holds now."""
        known = self._known
        changed = {
            name: copy.deepcopy(value)
            for name, value in vars(settings).items()
            if known is None or value != getattr(known, name)
        }

        def apply(on_disk: Settings) -> None:
            vars(on_disk).update(changed)
            if change is not None:
                change(on_disk)

        vars(settings).update(vars(self.update(apply)))

    def _read(self) -> Settings:
        self.read_only = False
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Settings()
        try:
            raw = json.loads(text)
            if not isinstance(raw, dict):
                raise ValueError("settings file is not a JSON object")
            version = raw.get("schema_version", 1)
            if not isinstance(version, int) or version < 1:
                raise ValueError(f"bad schema_version {version!r}")
        except ValueError as exc:
            self._move_aside(exc)
            return Settings()
        if version > SCHEMA_VERSION:
            log.warning("settings: written by a newer Hubside (schema %d); not saving", version)
            self.read_only = True
        while version < SCHEMA_VERSION:
            raw = _MIGRATIONS[version](raw)
            version += 1
        settings = _coerce(raw)
        settings.schema_version = SCHEMA_VERSION
        return settings

    def _move_aside(self, reason: Exception) -> None:
        aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(self.path, aside)
        log.warning("settings: unreadable (%s); moved to %s, using defaults", reason, aside)


def update(path: Path, change: Change) -> Settings:
    """Change the settings file at `path` as it is now, under its lock (see `SettingsStore.update`)."""
    return SettingsStore(path).update(change)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`'s sibling lock file (every Hubside process takes the same one). The
    settings file itself is replaced by each write, so it cannot carry the lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_WAIT_S  # a holder stopped (Ctrl-Z) must not hang the window's quit
    with path.with_name(f"{path.name}.lock").open("a") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when the file closes
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise AppError(
                        ErrorKind.SETTINGS,
                        "The settings were not saved: another Hubside process is changing them and does "
                        "not finish. Close it, then try again.",
                        str(path),
                    ) from None
                time.sleep(0.02)
        yield
