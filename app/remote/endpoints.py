"""The endpoints the user added: a small JSON file under the config folder (names, URLs, how to find the
key), never the key itself. A key is either the NAME of an environment variable (`api_key_env`) or one the
user typed, kept in the OS keyring like the Hub token.

A file of its own rather than settings.json: the window's settings writer rewrites that file whole, and
endpoints are edited by `hubside endpoints` while the window runs; one lock here keeps writers apart.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from app.errors import AppError, ErrorKind
from app.files import write_atomic
from app.hub.token import NoKeyring, kept_secret, save_token
from app.paths import AppPaths

log = logging.getLogger(__name__)
PREFIX = "remote:"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_FIRST_TOKEN_S = 120.0  # a big model on a busy cluster may think a while before its first token
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Endpoint:
    name: str
    url: str  # the OpenAI base URL, ending in /v1
    api_key_env: str | None = None  # the NAME of the variable holding the key, never its value
    first_token_timeout_s: float = DEFAULT_FIRST_TOKEN_S


@dataclass(frozen=True)
class RemoteModel:
    """One model of one endpoint, with its key resolved (never shown: not in repr, logs or exports)."""

    endpoint: Endpoint
    model_id: str
    api_key: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{PREFIX}{self.endpoint.name}/{self.model_id}"

    @property
    def where(self) -> str:
        """How messages name the endpoint: its name and URL (never the key)."""
        return f"{self.endpoint.name} ({self.endpoint.url})"

    @property
    def model_path(self) -> Path:
        """The label where a local model's path would be (lists, saved runs): never a file to open."""
        return Path(self.label)


def base_url(url: str) -> str:
    """`url` as an OpenAI base URL (…/v1); only http(s) with a host."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AppError(ErrorKind.BAD_INPUT, f"An endpoint URL starts with http:// or https://, not {url!r}.")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise AppError(ErrorKind.BAD_INPUT, "An endpoint URL carries no user, password, query or #part.")
    path = parts.path.rstrip("/")
    path = path if path.endswith("/v1") else f"{path}/v1"
    return f"{parts.scheme}://{parts.netloc}{path}"


def split_remote(spec: str) -> tuple[str, str] | None:
    """`remote:NAME/MODEL_ID` -> (NAME, MODEL_ID), split at the first slash (MODEL_ID may hold more);
    None for anything not written as a remote model."""
    if not spec.startswith(PREFIX):
        return None
    name, slash, model_id = spec[len(PREFIX) :].partition("/")
    if not name or not slash or not model_id:
        raise AppError(ErrorKind.BAD_INPUT, f"A remote model is written remote:NAME/MODEL_ID, not {spec!r}.")
    return name, model_id


def _key_user(name: str) -> str:
    return f"endpoint-key:{name}"


class EndpointStore:
    def __init__(self, file: Path) -> None:
        self.file = file

    def all(self) -> list[Endpoint]:
        return list(self._read().values())

    def get(self, name: str) -> Endpoint:
        found = self._read().get(name)
        if found is None:
            known = ", ".join(self._read()) or "none yet: hubside endpoints add NAME URL"
            raise AppError(ErrorKind.NOT_FOUND, f"No endpoint called {name!r} (endpoints: {known}).")
        return found

    def add(self, endpoint: Endpoint, api_key: str | None = None) -> Endpoint:
        """Add or replace `endpoint`; a typed `api_key` goes to the keyring (never to the file)."""
        if not NAME_PATTERN.fullmatch(endpoint.name):
            raise AppError(ErrorKind.BAD_INPUT, "An endpoint name is letters, digits, '.', '_' or '-'.")
        if endpoint.api_key_env is not None and not re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]*", endpoint.api_key_env
        ):
            raise AppError(ErrorKind.BAD_INPUT, "--api-key-env takes the NAME of an environment variable.")
        checked = Endpoint(
            endpoint.name, base_url(endpoint.url), endpoint.api_key_env, endpoint.first_token_timeout_s
        )
        if api_key:
            try:
                save_token(api_key, user=_key_user(checked.name))
            except NoKeyring as exc:  # its message is about the Hub token
                raise AppError(
                    ErrorKind.SETTINGS,
                    "This system has no keyring to keep the key in; use --api-key-env VAR instead.",
                    exc.detail,
                ) from None
        with self._locked() as endpoints:
            endpoints[checked.name] = checked
        log.info("endpoint %s added (%s)", checked.name, checked.url)
        return checked

    def remove(self, name: str) -> None:
        with self._locked() as endpoints:
            if endpoints.pop(name, None) is None:
                raise AppError(ErrorKind.NOT_FOUND, f"No endpoint called {name!r}.")
        try:
            if kept_secret(_key_user(name)):
                save_token("", user=_key_user(name))
        except AppError:
            pass  # no keyring: nothing was kept there

    def key_source(self, endpoint: Endpoint) -> str:
        """Where the key comes from, for listings: "env:VAR", "keyring" or "none" (never the key)."""
        if endpoint.api_key_env:
            return f"env:{endpoint.api_key_env}"
        return "keyring" if kept_secret(_key_user(endpoint.name)) else "none"

    def api_key(self, endpoint: Endpoint) -> str | None:
        if endpoint.api_key_env:
            value = os.environ.get(endpoint.api_key_env)
            if not value:
                raise AppError(
                    ErrorKind.SETTINGS,
                    f"Endpoint {endpoint.name} reads its key from ${endpoint.api_key_env}, which is not set.",
                )
            return value
        return kept_secret(_key_user(endpoint.name))

    def resolve(self, spec: str) -> RemoteModel:
        """`remote:NAME/MODEL_ID` -> the model, its endpoint and key."""
        split = split_remote(spec)
        if split is None:
            raise AppError(ErrorKind.BAD_INPUT, f"Not a remote model: {spec!r}.")
        endpoint = self.get(split[0])
        return RemoteModel(endpoint, split[1], self.api_key(endpoint))

    # --- the file ----------------------------------------------------------------------------------
    def _read(self) -> dict[str, Endpoint]:
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise AppError(ErrorKind.SETTINGS, f"Hubside cannot read {self.file}.", str(exc)) from exc
        rows = data.get("endpoints", []) if isinstance(data, dict) else []
        return {e.name: e for e in map(_endpoint, rows) if e is not None}

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Endpoint]]:
        """The endpoints as they are now, under a lock; written back atomically after the change."""
        self.file.parent.mkdir(parents=True, exist_ok=True)
        with self.file.with_name(self.file.name + ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            endpoints = self._read()
            yield endpoints
            body = {"schema_version": SCHEMA_VERSION, "endpoints": [asdict(e) for e in endpoints.values()]}
            write_atomic(self.file, json.dumps(body, indent=2).encode("utf-8"))


def _endpoint(row: Any) -> Endpoint | None:
    try:
        return Endpoint(
            str(row["name"]),
            str(row["url"]),
            row.get("api_key_env") or None,
            float(row.get("first_token_timeout_s", DEFAULT_FIRST_TOKEN_S)),
        )
    except (TypeError, KeyError, ValueError, AttributeError):
        log.warning("an endpoint entry Hubside cannot read was skipped")
        return None


def endpoint_store(paths: AppPaths) -> EndpointStore:
    return EndpointStore(paths.config_dir / "endpoints.json")
