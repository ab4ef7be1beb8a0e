"""The window with models served elsewhere, against a real `hubside serve` on loopback (a real engine
process and llama.cpp behind it): Settings > Endpoints (add, test, edit, remove), a remote chat in the
chat's picker (stream, stop, regenerate, continue, the endpoint recorded), and endpoints that cannot be
reached (shown unavailable, one clear message, the window responsive)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.paths import AppPaths
from app.remote.endpoints import Endpoint, EndpointStore, endpoint_store
from app.server.service import Server
from app.ui.application import Services, build_window
from app.ui.background import Background
from app.ui.endpoints_dialog import EndpointsDialog
from app.ui.main_window import MainWindow
from app.ui.remote_bridge import remote_label, shown_name
from tests.conftest import InMemoryKeyring
from tests.heartbeat import Heartbeat
from tests.test_remote import KEY, serving

WAIT_MS = 60_000


@pytest.fixture
def hubside(tiny_model: Path) -> Iterator[Server]:
    with serving(tiny_model) as server:
        yield server


@pytest.fixture
def store() -> EndpointStore:
    return endpoint_store(AppPaths.from_env().ensure())


def _free_port() -> int:
    with socket.socket() as s:  # bound and closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _click(qtbot: QtBot, widget: object) -> None:
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)  # type: ignore[arg-type]


# --- the dialog -----------------------------------------------------------------------------------
def test_the_dialog_adds_tests_edits_and_removes_an_endpoint(
    qtbot: QtBot, hubside: Server, tiny_model: Path, store: EndpointStore, memory_keyring: InMemoryKeyring
) -> None:
    background = Background()
    changes: list[int] = []
    dialog = EndpointsDialog(store, background, lambda: changes.append(1))
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.keyClicks(dialog.name, "box")
    qtbot.keyClicks(dialog.url, hubside.base_url)
    qtbot.keyClicks(dialog.key, "wrong-key-0123456789")
    _click(qtbot, dialog.test_button)
    qtbot.waitUntil(lambda: "refused the key" in dialog.message.text(), timeout=WAIT_MS)
    assert "wrong-key-0123456789" not in dialog.message.text()

    dialog.key.setText(KEY)
    _click(qtbot, dialog.save_button)
    qtbot.waitUntil(lambda: dialog.names.stringList() == ["box"], timeout=WAIT_MS)
    assert changes and dialog.key.text() == ""  # the key typed is not kept on screen
    saved = (store.file).read_text(encoding="utf-8")
    assert KEY not in saved and json.loads(saved)["endpoints"][0]["url"] == hubside.base_url
    assert store.api_key(store.get("box")) == KEY  # in the keyring

    _click(qtbot, dialog.test_button)  # the key field empty: the kept key is used
    qtbot.waitUntil(lambda: dialog.models.stringList() == [str(tiny_model)], timeout=WAIT_MS)
    assert "1 model" in dialog.message.text()

    dialog.first_token.setValue(30)  # an edit: the same name saved again
    _click(qtbot, dialog.save_button)
    qtbot.waitUntil(lambda: store.get("box").first_token_timeout_s == 30, timeout=WAIT_MS)
    assert store.api_key(store.get("box")) == KEY  # an edit without a key keeps the kept one

    dialog.select("box")
    _click(qtbot, dialog.remove_button)
    qtbot.waitUntil(lambda: dialog.names.stringList() == [], timeout=WAIT_MS)
    assert store.all() == [] and not any(v == KEY for v in memory_keyring.passwords.values())
    background.close()


def test_the_settings_dialog_opens_the_endpoints(qtbot: QtBot, window: MainWindow) -> None:
    settings = window.settings_dialog()
    qtbot.addWidget(settings)
    button = settings.findChild(object, "settingsEndpoints")
    assert button is not None
    _click(qtbot, button)
    qtbot.waitUntil(lambda: window.findChild(EndpointsDialog) is not None, timeout=5000)


# --- the chat -------------------------------------------------------------------------------------
@pytest.fixture
def open_window(qtbot: QtBot) -> Iterator[callable]:  # type: ignore[valid-type]
    opened: list[tuple[MainWindow, Services]] = []

    def open_() -> MainWindow:
        window, services = build_window(AppPaths.from_env().ensure())
        qtbot.addWidget(window)
        window.resize(1280, 800)
        window.show()
        opened.append((window, services))
        return window

    yield open_
    for window, services in opened:
        window.close()
        services.close()


def _pick(qtbot: QtBot, window: MainWindow, text: str) -> int:
    picker = window.chat.model_bar.picker
    qtbot.waitUntil(lambda: picker.findText(text) >= 0, timeout=WAIT_MS)
    index = picker.findText(text)
    picker.setCurrentIndex(index)
    return index


def _ask(qtbot: QtBot, window: MainWindow, text: str) -> None:
    qtbot.keyClicks(window.chat.chat_input, text)
    qtbot.keyClick(window.chat.chat_input, Qt.Key.Key_Return)


def test_a_remote_chat_streams_stops_regenerates_continues_and_records_the_endpoint(
    qtbot: QtBot,
    open_window,
    hubside: Server,
    tiny_model: Path,
    store: EndpointStore,  # type: ignore[no-untyped-def]
) -> None:
    store.add(Endpoint("box", hubside.base_url), KEY)
    window = open_window()
    chat = window.chat
    spec = f"remote:box/{tiny_model}"
    _pick(qtbot, window, shown_name(spec))
    assert not chat.model_bar.context.isEnabled()  # a file's load settings mean nothing there
    _click(qtbot, chat.model_bar.load_button)
    qtbot.waitUntil(lambda: chat.model is not None or chat.banner.isVisible(), timeout=WAIT_MS)
    assert not chat.banner.isVisible(), chat.banner_text.text()
    assert chat.model is not None and remote_label(chat.model) == spec
    assert "remote: box/" in chat.model_bar.status.text()

    chat.sampling_panel.max_tokens.setValue(16)
    _ask(qtbot, window, "Hello there")
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=WAIT_MS)
    assert chat.conversation_id is not None
    _, answer = chat.store.messages(chat.conversation_id)
    assert answer.content and answer.state == "complete", answer
    assert answer.stats["endpoint"] == "box" and answer.stats["model"] == spec
    assert answer.stats["timing"] == "timed over the network" and answer.stats["completion_tokens"] > 0
    assert "timed over the network" in chat.transcript.toPlainText()
    assert KEY not in chat.transcript.toPlainText()
    print(f"remote reply: ttft {answer.stats['ttft_ms']} ms, {answer.stats['tokens_per_s']} tok/s")

    chat.regenerate(answer)  # a second version of the reply, from the same endpoint
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=WAIT_MS)
    assert len(chat.store.versions(chat.active.shown[-1])) == 2

    # Stop at the first chunk: the reply is saved as stopped and nothing more is added.
    stopped: list[str] = []

    def stop_at_first(request_id: int, text: str, reasoning: bool) -> None:
        if not stopped and request_id == chat.request_id:
            chat.stop()
            stopped.append(chat.active.shown[-1].content)

    chat.sampling_panel.max_tokens.setValue(600)
    chat.remote.bridge.chunk.connect(stop_at_first)  # type: ignore[union-attr]
    _ask(qtbot, window, "Tell me a long story")
    qtbot.waitUntil(lambda: bool(stopped), timeout=WAIT_MS)
    qtbot.wait(300)
    last = chat.store.message(chat.active.shown[-1].id)
    assert last.state == "stopped" and chat.request_id is None
    chat.remote.bridge.chunk.disconnect(stop_at_first)  # type: ignore[union-attr]

    before = last.content
    chat.sampling_panel.max_tokens.setValue(16)
    chat.continue_reply(last)  # goes on from the stopped text
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=WAIT_MS)
    continued = chat.store.message(last.id)
    assert continued.content.startswith(before) and len(continued.content) > len(before)


def test_an_unreachable_endpoint_is_unavailable_and_the_window_stays_responsive(
    qtbot: QtBot,
    open_window,
    store: EndpointStore,
    hubside: Server,
    tiny_model: Path,  # type: ignore[no-untyped-def]
) -> None:
    store.add(Endpoint("gone", f"http://127.0.0.1:{_free_port()}"), "gone-key-0123456789")
    store.add(Endpoint("box", hubside.base_url), KEY)
    window = open_window()
    chat = window.chat
    index = _pick(qtbot, window, "remote: gone (unavailable)")
    picker_items = chat.model_bar.picker.model()
    assert not picker_items.item(index).isEnabled()  # type: ignore[attr-defined]
    assert "Can't reach gone" in picker_items.item(index).toolTip()  # type: ignore[attr-defined]
    _click(qtbot, chat.model_bar.load_button)
    assert chat.banner.isVisible() and "Can't reach gone" in chat.banner_text.text()

    # The endpoint goes away after the listing: the load fails with one message, the window turning.
    _pick(qtbot, window, shown_name(f"remote:box/{tiny_model}"))
    store.add(Endpoint("box", f"http://127.0.0.1:{_free_port()}"), KEY)
    with Heartbeat() as beat:
        _click(qtbot, chat.model_bar.load_button)
        qtbot.waitUntil(lambda: chat.banner.isVisible(), timeout=WAIT_MS)
    assert chat.model is None and "Can't reach box" in chat.banner_text.text()
    assert KEY not in chat.banner_text.text()
    print(f"unreachable load: heartbeat max gap {beat.max_gap_ms:.0f} ms")
    assert beat.max_gap_ms < 100


def test_a_silent_endpoint_never_holds_the_window_and_cancel_gives_up(
    qtbot: QtBot,
    open_window,
    store: EndpointStore,  # type: ignore[no-untyped-def]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (the kernel does) and never answers
        store.add(Endpoint("mute", f"http://127.0.0.1:{silent.getsockname()[1]}"), KEY)
        window = open_window()
        chat = window.chat
        chat.model_bar.add_model_path(Path("remote:mute/m"))  # as if it had been listed
        with Heartbeat() as beat:
            _click(qtbot, chat.model_bar.load_button)
            qtbot.wait(1000)
            assert chat.model_bar.cancel_button.isVisible()
            _click(qtbot, chat.model_bar.cancel_button)
            qtbot.wait(200)
        assert chat.model is None and chat.model_bar.load_button.isVisible()
        print(f"silent endpoint: heartbeat max gap {beat.max_gap_ms:.0f} ms")
        assert beat.max_gap_ms < 100


def test_a_remote_reply_cut_mid_stream_is_kept_as_interrupted_with_its_endpoint() -> None:
    from app.chat.active import FINAL_STATES, stats_dict
    from app.remote.engine import CUT
    from app.runtime.protocol import LoadedModel, ReplyStats

    # A model id with a leading slash (hubside serve names models by path): its Path folds the '//'.
    model = LoadedModel(
        Path("remote:box//srv/m.gguf"), "/srv/m.gguf", "remote", "", 0, 0, 0, 0, 0, 0, False, True, 1
    )
    stats = stats_dict(ReplyStats(CUT, 5, 5, 3, 10.0, 1.0, 1.0), model, "")
    assert FINAL_STATES[CUT] == "interrupted"
    assert stats["model"] == "remote:box//srv/m.gguf" and stats["endpoint"] == "box"


def test_compare_offers_remote_models_and_runs_one_beside_a_local_one(
    qtbot: QtBot,
    open_window,
    hubside: Server,
    tiny_model: Path,
    store: EndpointStore,  # type: ignore[no-untyped-def]
) -> None:
    from app.remote.endpoints import RemoteModel
    from app.ui.compare_page import ComparePage

    store.add(Endpoint("box", hubside.base_url), KEY)
    store.add(Endpoint("gone", f"http://127.0.0.1:{_free_port()}"))
    window = open_window()
    page = window.pages["compare"]
    assert isinstance(page, ComparePage)
    remote_text = shown_name(f"remote:box/{tiny_model}")
    qtbot.waitUntil(lambda: page.pickers[0].findText(remote_text) >= 0, timeout=WAIT_MS)
    page.pickers[0].setCurrentIndex(page.pickers[0].findText("remote: gone (unavailable)"))
    assert page.chosen() == []  # an unavailable endpoint is never run
    page.pickers[0].setCurrentIndex(page.pickers[0].findText(remote_text))
    page.pickers[1].addItem(tiny_model.name, str(tiny_model))
    page.pickers[1].setCurrentIndex(page.pickers[1].count() - 1)
    remote, local = page.chosen()
    assert local.model_path == tiny_model
    assert (
        isinstance(remote, RemoteModel)
        and remote.label == f"remote:box/{tiny_model}"
        and remote.api_key == KEY
    )
    page.max_tokens.setValue(12)
    page.prompt.setPlainText("Hello")
    page.run()
    qtbot.waitUntil(lambda: page.comparison is not None and page.worker is None, timeout=WAIT_MS)
    assert page.comparison is not None
    texts = [column.text for column in page.comparison.columns]
    assert all(texts), (texts, page.message.text())


def test_run_reads_the_remote_key_off_the_gui_thread(
    qtbot: QtBot,
    open_window,
    hubside: Server,
    tiny_model: Path,
    store: EndpointStore,  # type: ignore[no-untyped-def]
) -> None:
    import time

    import keyring
    from keyring.backend import KeyringBackend

    from app.ui.compare_page import ComparePage

    store.add(Endpoint("box", hubside.base_url), KEY)
    window = open_window()
    page = window.pages["compare"]
    assert isinstance(page, ComparePage)
    remote_text = shown_name(f"remote:box/{tiny_model}")
    qtbot.waitUntil(lambda: page.pickers[0].findText(remote_text) >= 0, timeout=WAIT_MS)
    page.pickers[0].setCurrentIndex(page.pickers[0].findText(remote_text))
    page.pickers[1].addItem(tiny_model.name, str(tiny_model))
    page.pickers[1].setCurrentIndex(page.pickers[1].count() - 1)
    page.max_tokens.setValue(4)
    page.prompt.setPlainText("Hello")
    kept = keyring.get_keyring()

    class Slow(KeyringBackend):  # an OS keyring waiting on its daemon or an unlock
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> str | None:
            time.sleep(2)
            return kept.get_password(service, username)

        def set_password(self, service: str, username: str, password: str) -> None:
            kept.set_password(service, username, password)

        def delete_password(self, service: str, username: str) -> None:
            kept.delete_password(service, username)

    keyring.set_keyring(Slow())
    try:
        with Heartbeat() as heartbeat:
            page.run()
            qtbot.waitUntil(lambda: page.comparison is not None and page.worker is None, timeout=WAIT_MS)
    finally:
        keyring.set_keyring(kept)
    assert heartbeat.max_gap_ms < 200, heartbeat.max_gap_ms  # it held the window 2 s before
    assert page.comparison is not None and all(c.text for c in page.comparison.columns)
