"""The window's Server page over the real server: real HTTP, real engine processes on tiny models, the real
keyring stand-in of conftest; and the server sharing the chat's engine (one copy of the weights)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from app.paths import AppPaths
from app.runtime.engine import Engine
from app.runtime.protocol import LoadParams
from app.server.models import Catalog, HostOptions
from app.server.service import Address, Server

KEY = "test-key-0123456789"
WAIT_MS = 60_000


def _engines() -> list[psutil.Process]:
    """This test process's engine processes (multiprocessing's resource tracker is not one)."""
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline())
    ]


def _complete(base_url: str, model: str, key: str = KEY, **body: object) -> requests.Response:
    payload = {"model": model, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, **body}
    headers = {"Authorization": f"Bearer {key}"}
    return requests.post(base_url + "/completions", json=payload, headers=headers, timeout=120)


@pytest.fixture
def chat_engine(tiny_model: Path) -> Iterator[Engine]:
    engine = Engine(AppPaths.from_env().ensure())
    engine.load(LoadParams(tiny_model, n_ctx=512, n_threads=2))
    yield engine
    engine.close()


def test_a_request_for_a_model_someone_has_loaded_uses_that_engine(
    chat_engine: Engine, tiny_model: Path
) -> None:
    paths = AppPaths.from_env()
    asked: list[Path] = []

    def shared(path: Path) -> Engine | None:
        asked.append(path)
        return chat_engine if path == tiny_model.absolute() else None

    catalog = Catalog(lambda: [], [tiny_model])
    server = Server(paths, catalog, Address("127.0.0.1", 0), HostOptions(n_threads=2), KEY, shared=shared)
    server.start()
    try:
        assert len(_engines()) == 1
        reply = _complete(server.base_url, str(tiny_model.absolute()))
        assert reply.status_code == 200, reply.text
        assert reply.json()["usage"]["completion_tokens"] > 0
        assert asked and len(_engines()) == 1  # no second engine process, no second copy of the weights
        assert server.host.loaded_models() == []
    finally:
        server.stop()
    assert chat_engine.alive and chat_engine.model is not None  # not the server's to close
