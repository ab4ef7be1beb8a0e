"""The window's Server page over the real server: real HTTP, real engine processes on tiny models, the real
keyring stand-in of conftest; and the server sharing the chat's engine (one copy of the weights)."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import requests
from PySide6.QtWidgets import QMessageBox
from pytestqt.qtbot import QtBot

from app.paths import AppPaths
from app.runtime.engine import Engine
from app.runtime.protocol import LoadParams
from app.server.models import Catalog, HostOptions
from app.server.service import Address, Server
from app.ui.application import QUIT_TIMEOUT_S
from app.ui.main_window import MainWindow
from app.ui.server_page import ServerPage
from tests.test_quit import Opened, _load, _quit, app_window, long_model  # noqa: F401 - fixtures

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


# --- the window's Server page -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _in_library(model: Path) -> Path:
    """The model copied into the library (models dir/owner/repo/file), where the server's catalog finds it."""
    target = AppPaths.from_env().models_dir / "tests" / "tiny-GGUF" / "tiny.gguf"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, target)
    return target


def _page(window: MainWindow) -> ServerPage:
    page = window.pages["server"]
    assert isinstance(page, ServerPage)
    window.navigation.setCurrentRow(list(window.pages).index("server"))
    page.port.setValue(_free_port())
    return page


def _settled(page: ServerPage) -> bool:
    return page.switch.isEnabled()


def _switch(qtbot: QtBot, page: ServerPage, on: bool) -> None:
    page.switch.setChecked(on)
    qtbot.waitUntil(lambda: _settled(page) and (page.server is not None) == on, timeout=WAIT_MS)


def _models(page: ServerPage, key: str) -> requests.Response:
    return requests.get(page.url.text() + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_the_switch_serves_the_library_with_the_key_and_off_refuses(
    qtbot: QtBot, window: MainWindow, tiny_model: Path, qtmodeltester: object
) -> None:
    _in_library(tiny_model)
    page = _page(window)
    _switch(qtbot, page, True)
    assert page.url.text() == f"http://127.0.0.1:{page.port.value()}/v1"
    assert page.key.startswith("hs-") and page.key_field.text() == page.key
    listed = _models(page, page.key)
    assert listed.status_code == 200, listed.text
    ids = [m["id"] for m in listed.json()["data"]]
    assert ids and page.models.ids == ids  # the page lists what the API offers
    assert _models(page, "wrong").status_code == 401
    qtmodeltester.check(page.models)  # type: ignore[attr-defined]
    url = page.url.text()
    _switch(qtbot, page, False)
    assert page.message.text() == "The server is off."
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/models", timeout=5)


def _answer_confirm(qtbot: QtBot, page: ServerPage, button: QMessageBox.StandardButton) -> None:
    qtbot.waitUntil(lambda: page.confirm_box is not None and page.confirm_box.isVisible())
    assert page.confirm_box is not None
    page.confirm_box.button(button).click()


def test_a_new_key_locks_out_the_old_one(qtbot: QtBot, window: MainWindow) -> None:
    page = _page(window)
    _switch(qtbot, page, True)
    old = page.key
    assert _models(page, old).status_code == 200
    page.regenerate.click()
    _answer_confirm(qtbot, page, QMessageBox.StandardButton.Yes)
    qtbot.waitUntil(lambda: _settled(page) and page.server is not None and page.key != old, timeout=WAIT_MS)
    assert page.switch.isChecked() and page.key_field.text() == page.key
    assert _models(page, old).status_code == 401
    assert _models(page, page.key).status_code == 200


def test_the_log_shows_a_finished_request_with_tokens_per_second(
    qtbot: QtBot, window: MainWindow, tiny_model: Path, qtmodeltester: object
) -> None:
    _in_library(tiny_model)
    page = _page(window)
    _switch(qtbot, page, True)
    model = page.models.ids[0]
    reply = _complete(page.url.text(), model, page.key)
    assert reply.status_code == 200, reply.text
    log = page.log_model
    qtbot.waitUntil(lambda: log.rowCount() == 1, timeout=2000)  # within a tick of the 4 Hz timer
    row = [log.index(0, column).data() for column in range(log.columnCount())]
    assert row[1:4] == ["/v1/completions", model, "200"]
    assert float(row[4]) > 0 and row[5].endswith(" ms")
    qtmodeltester.check(log)  # type: ignore[attr-defined]


def test_a_port_in_use_is_a_message_on_the_page(qtbot: QtBot, window: MainWindow) -> None:
    page = _page(window)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", page.port.value()))
        taken.listen()
        page.switch.setChecked(True)
        qtbot.waitUntil(lambda: _settled(page) and "could not start" in page.message.text(), timeout=WAIT_MS)
    assert not page.switch.isChecked() and page.server is None
    assert "in use" in page.message.text() and "--port" not in page.message.text()


def test_listening_on_every_network_asks_first(qtbot: QtBot, window: MainWindow) -> None:
    page = _page(window)
    page.host.setCurrentIndex(1)
    page.switch.setChecked(True)
    _answer_confirm(qtbot, page, QMessageBox.StandardButton.Cancel)
    assert not page.switch.isChecked() and page.server is None
    assert "Other machines" in (page.confirm_box.text() if page.confirm_box else "")


def test_the_server_answers_from_the_chat_s_engine(
    qtbot: QtBot, window: MainWindow, tiny_model: Path
) -> None:
    model_file = _in_library(tiny_model)
    _load(qtbot, window, model_file)
    engines = _engines()
    assert len(engines) == 1
    page = _page(window)
    _switch(qtbot, page, True)
    reply = _complete(page.url.text(), page.models.ids[0], page.key)
    assert reply.status_code == 200, reply.text
    assert [p.pid for p in _engines()] == [engines[0].pid]  # the chat's engine answered: no second one
    assert page.server is not None and page.server.host.loaded_models() == []


@pytest.mark.parametrize("engine", ["its own", "the chat's"])
def test_quit_with_the_server_streaming_a_reply(
    qtbot: QtBot,
    app_window: Callable[[], Opened],  # noqa: F811 - the fixture imported above
    long_model: Path,  # noqa: F811
    engine: str,
) -> None:
    opened = app_window()
    window = opened[0]
    model_file = _in_library(long_model)
    if engine == "the chat's":
        _load(qtbot, window, model_file)
    page = _page(window)
    _switch(qtbot, page, True)
    streamed: list[bytes] = []
    ended = threading.Event()

    def stream() -> None:
        body = {
            "model": page.models.ids[0],
            "prompt": "Tell me everything.",
            "max_tokens": 4000,
            "stream": True,
        }
        try:
            with requests.post(
                page.url.text() + "/completions", json=body, headers={"Authorization": f"Bearer {page.key}"},
                stream=True, timeout=60,
            ) as reply:  # fmt: skip
                for line in reply.iter_lines():
                    streamed.append(line)
        except requests.RequestException:
            pass  # cut by the quit
        finally:
            ended.set()

    threading.Thread(target=stream, daemon=True).start()
    qtbot.waitUntil(lambda: len(streamed) > 10, timeout=WAIT_MS)
    seconds = _quit(opened, f"with the server streaming from {engine} engine")
    assert seconds < QUIT_TIMEOUT_S  # the window's own deadline (its own engine's stream held it: 2.58 s)
    assert ended.wait(10)  # the reply ended: cut, or (the chat's engine) stopped


def test_a_server_left_on_starts_again_with_the_window(qtbot: QtBot, window: MainWindow) -> None:
    page = _page(window)
    _switch(qtbot, page, True)
    port = page.port.value()
    window.close()  # quit with the server on (the fixture closes the services after the test)
    page.stop_server(5)
    from app.ui.application import build_window

    again, services = build_window(AppPaths.from_env())
    qtbot.addWidget(again)
    try:
        page = again.pages["server"]
        assert isinstance(page, ServerPage)
        qtbot.waitUntil(lambda: page.server is not None and _settled(page), timeout=WAIT_MS)
        assert page.switch.isChecked() and page.server is not None and page.server.port == port
        assert _models(page, page.key).status_code == 200
    finally:
        again.close()
        services.close()


@pytest.mark.usefixtures("no_keyring")
def test_without_a_keyring_the_server_starts_and_keeps_its_key_in_a_file(
    qtbot: QtBot, window: MainWindow
) -> None:
    page = _page(window)
    _switch(qtbot, page, True)
    key = page.key
    assert _models(page, key).status_code == 200
    key_file = AppPaths.from_env().config_dir / "server-key"
    assert key_file.read_text().strip() == key and key_file.stat().st_mode & 0o077 == 0
    _switch(qtbot, page, False)
    _switch(qtbot, page, True)
    assert page.key == key  # the same key after a restart: clients keep working


def test_the_log_keeps_the_newest_500_requests(qtmodeltester: object) -> None:
    from app.server.app import RequestRecord
    from app.ui.server_log import RequestLogView
    from app.ui.server_models import MAX_LOG_ROWS

    view = RequestLogView()
    qtmodeltester.check(view.log_model)  # type: ignore[attr-defined]
    for batch in range(3):
        for n in range(250):
            view.feed(RequestRecord("/v1/completions", f"m{batch * 250 + n}", 200, completion_tokens=1))
        view.read()
    model = view.log_model
    assert model.rowCount() == MAX_LOG_ROWS == 500
    assert model.index(0, 2).data() == "m250" and model.index(499, 2).data() == "m749"
