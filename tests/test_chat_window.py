"""The real window with the real engine: load, chat, stop, survive an engine crash, restart."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from PySide6.QtCore import Qt, QUrl
from pytestqt.qtbot import QtBot

from app.chat.store import ChatStore
from app.paths import AppPaths
from app.ui.application import Services, build_window
from app.ui.main_window import MainWindow
from app.ui.safe_markdown import action_url
from tests.untrusted import canary_server, catching_links

LOAD_TIMEOUT_MS = 60_000
REPLY_TIMEOUT_MS = 60_000


@pytest.fixture
def open_window(qtbot: QtBot) -> Iterator[callable]:  # type: ignore[valid-type]
    opened: list[tuple[MainWindow, Services]] = []

    def open_() -> MainWindow:
        window, services = build_window(AppPaths.from_env().ensure())
        qtbot.addWidget(window)
        window.show()
        opened.append((window, services))
        return window

    yield open_
    for window, services in opened:
        window.close()
        services.close()


def _load(qtbot: QtBot, window: MainWindow, model: Path, context: int = 0) -> None:
    chat = window.chat
    chat.add_model_path(model)
    chat.model_bar.context.setValue(context)
    qtbot.mouseClick(chat.model_bar.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.model is not None, timeout=LOAD_TIMEOUT_MS)


def _ask(qtbot: QtBot, window: MainWindow, text: str) -> None:
    chat = window.chat
    qtbot.keyClicks(chat.chat_input, text)
    qtbot.keyClick(chat.chat_input, Qt.Key.Key_Return)


def test_chat_is_saved_and_back_after_a_restart(qtbot: QtBot, open_window, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    _load(qtbot, window, tiny_model, context=512)
    chat = window.chat
    _ask(qtbot, window, "Hello there")
    assert chat.chat_input.toPlainText() == ""
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    assert chat.composer.send_button.isEnabled() and not chat.composer.stop_button.isEnabled()
    text = chat.transcript.toPlainText()
    assert "tok/s" in text and "first token" in text  # the reply's numbers, under it
    assert "You" in text and "Hello there" in text and "Assistant" in text
    conversation_id = chat.conversation_id
    assert conversation_id is not None
    user, reply = chat.store.messages(conversation_id)
    assert (user.role, user.content, reply.role, reply.state) == (
        "user",
        "Hello there",
        "assistant",
        "complete",
    )
    assert reply.content and reply.stats["completion_tokens"] > 0
    window.close()

    again = open_window()
    assert again.chat.sidebar.conversations.rowCount() == 1
    index = again.chat.sidebar.conversations.index(0, 0)
    assert index.data() == "Hello there"
    qtbot.mouseClick(
        again.chat.sidebar.conversation_list.viewport(),
        Qt.MouseButton.LeftButton,
        pos=again.chat.sidebar.conversation_list.visualRect(index).center(),
    )
    assert "Hello there" in again.chat.transcript.toPlainText()
    assert again.chat.model_bar.picker.currentData() == str(tiny_model)  # the model file is remembered


@pytest.mark.real_model
def test_stop_keeps_what_was_shown_and_nothing_more(qtbot: QtBot, open_window, smollm2_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    _load(qtbot, window, smollm2_path, context=2048)
    chat = window.chat
    _ask(qtbot, window, "Write a very long story about a dragon.")
    qtbot.waitUntil(lambda: len(chat.reply.text) > 20, timeout=REPLY_TIMEOUT_MS)
    reply_id = chat.reply_id
    qtbot.mouseClick(chat.composer.stop_button, Qt.MouseButton.LeftButton)
    shown = chat.transcript.toPlainText()
    qtbot.wait(500)  # chunks still on their way must not change anything
    assert chat.transcript.toPlainText() == shown
    row = chat.store.db.execute("SELECT content, state FROM messages WHERE id = ?", (reply_id,)).fetchone()
    assert row["state"] == "stopped"
    assert row["content"].strip() and row["content"].strip()[-10:] in shown
    _ask(qtbot, window, "Thanks!")  # the engine answers the next request
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    assert chat.store.messages(chat.conversation_id)[-1].state in ("complete", "stopped")  # type: ignore[arg-type]


def test_an_engine_crash_shows_a_banner_and_keeps_the_chat(
    qtbot: QtBot, open_window, tiny_model: Path
) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    _load(qtbot, window, tiny_model, context=512)
    chat = window.chat
    pid = chat.bridge.engine.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    _ask(qtbot, window, "Are you there?")
    qtbot.waitUntil(lambda: chat.banner.isVisible(), timeout=REPLY_TIMEOUT_MS)
    assert "SIGKILL" in chat.banner_text.text()
    assert chat.reload_button.isVisible()
    messages = ChatStore(AppPaths.from_env().database_file).messages(chat.conversation_id)  # type: ignore[arg-type]
    assert (messages[0].role, messages[0].content, messages[0].state) == (
        "user",
        "Are you there?",
        "complete",
    )
    assert messages[1].state == "interrupted"
    qtbot.mouseClick(chat.reload_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.model is not None and not chat.banner.isVisible(), timeout=LOAD_TIMEOUT_MS)
    assert chat.composer.send_button.isEnabled()


def test_a_bad_model_file_is_a_banner_not_a_crash(qtbot: QtBot, open_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 100)
    window = open_window()
    chat = window.chat
    chat.add_model_path(bad)
    qtbot.mouseClick(chat.model_bar.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.banner.isVisible(), timeout=LOAD_TIMEOUT_MS)
    assert "broken.gguf is not a usable GGUF model" in chat.banner_text.text()
    assert chat.model is None and chat.model_bar.load_button.isEnabled()


def test_model_output_loads_nothing_and_opens_only_clicked_web_links(qtbot: QtBot, open_window) -> None:  # type: ignore[no-untyped-def]
    with canary_server() as canary, catching_links() as catcher:
        window = open_window()
        transcript = window.chat.transcript
        transcript.show_markdown(
            f'<script>alert(1)</script> <img src="{canary.image}" onerror="x()">\n\n'
            f"![remote]({canary.image})\n\n"
            "[web](https://example.org/a) [local](file:///etc/passwd) [js](javascript:alert(1))"
        )
        qtbot.wait(300)
        assert canary.requests_seen == []  # no image was fetched from anywhere
        assert "<script" not in transcript.toHtml().lower()
        assert "<script>alert(1)</script>" in transcript.toPlainText()  # shown as text, never run
        for target in ("https://example.org/a", "file:///etc/passwd", "javascript:alert(1)"):
            transcript.anchorClicked.emit(QUrl(target))
        assert catcher.opened == ["https://example.org/a"]


def test_the_conversation_list_model_is_a_well_behaved_qt_model(qtmodeltester, open_window) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    _seed(window, "One", "a")
    _seed(window, "Two", "b")
    qtmodeltester.check(window.chat.sidebar.conversations)


def test_ctrl_n_starts_a_new_chat(qtbot: QtBot, open_window) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    chat = window.chat
    conversation = chat.store.create_conversation("Earlier")
    chat.store.add_message(conversation, "user", "an earlier question")
    chat.sidebar.conversations.refresh()
    chat.open_conversation(conversation)
    assert "an earlier question" in chat.transcript.toPlainText()
    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keyClick(chat.chat_input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert chat.conversation_id is None
    assert "an earlier question" not in chat.transcript.toPlainText()


def _seed(window: MainWindow, title: str, question: str) -> int:
    store = window.chat.store
    conversation = store.create_conversation(title)
    store.add_message(conversation, "user", question)
    reply = store.start_reply(conversation)
    store.finish_reply(reply, f"An answer about {title}.", "complete", {"tokens_per_s": 42.0, "ttft_ms": 120})
    window.chat.sidebar.conversations.refresh()
    return conversation


def test_manage_conversations(qtbot: QtBot, open_window, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    chat = window.chat
    eggs = _seed(window, "Eggs", "How long do I boil an egg?")
    rome = _seed(window, "Rome", "When was Rome founded?")
    chat.open_conversation(rome)
    assert "42.0 tok/s" in chat.transcript.toPlainText()

    chat.sidebar.rename(eggs, "Soft-boiled eggs")
    chat.sidebar.set_pinned(eggs, True)
    assert chat.sidebar.conversations.index(0, 0).data() == "📌 Soft-boiled eggs"

    qtbot.keyClicks(chat.sidebar.search, "founded")  # searches message text, debounced
    qtbot.waitUntil(lambda: chat.sidebar.conversations.rowCount() == 1)
    assert chat.sidebar.conversations.index(0, 0).data() == "Rome"
    chat.sidebar.search.clear()
    qtbot.waitUntil(lambda: chat.sidebar.conversations.rowCount() == 2)

    chat.delete_conversation(rome)
    assert chat.sidebar.conversations.rowCount() == 1 and chat.sidebar.undo_bar.isVisible()
    qtbot.mouseClick(chat.sidebar.undo_button, Qt.MouseButton.LeftButton)
    assert chat.sidebar.conversations.rowCount() == 2 and not chat.sidebar.undo_bar.isVisible()
    assert "When was Rome founded?" in chat.transcript.toPlainText()

    chat.export_conversation(eggs, tmp_path / "eggs.md")
    chat.export_conversation(eggs, tmp_path / "eggs.json")
    assert (tmp_path / "eggs.md").read_text().startswith("# Soft-boiled eggs")
    chat.import_conversation(tmp_path / "eggs.json")
    assert chat.sidebar.conversations.rowCount() == 3
    assert "How long do I boil an egg?" in chat.transcript.toPlainText()

    (tmp_path / "bad.json").write_text("{oops")
    chat.import_conversation(tmp_path / "bad.json")
    assert chat.banner.isVisible() and "not a Hubside conversation file" in chat.banner_text.text()


def test_the_system_prompt_belongs_to_its_conversation(qtbot: QtBot, open_window) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    chat = window.chat
    conversation = _seed(window, "Pirates", "Say hi")
    chat.open_conversation(conversation)
    chat.system_prompt.setText("Talk like a pirate.")
    chat.system_prompt.editingFinished.emit()
    chat.new_chat()
    assert chat.system_prompt.text() == ""
    chat.open_conversation(conversation)
    assert chat.system_prompt.text() == "Talk like a pirate."


def test_ctrl_f_goes_to_search(qtbot: QtBot, open_window) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    with qtbot.waitActive(window):
        window.activateWindow()
    qtbot.keyClick(window.chat.chat_input, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    assert window.chat.sidebar.search.hasFocus()


def test_copy_and_delete_a_message_from_its_links(qtbot: QtBot, open_window) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtCore import QUrl
    from PySide6.QtWidgets import QApplication

    window = open_window()
    chat = window.chat
    conversation = _seed(window, "Links", "Keep me")
    chat.open_conversation(conversation)
    question, answer = chat.store.messages(conversation)
    assert action_url(f"copy/{answer.id}/0") in chat.transcript.toMarkdown()
    chat.transcript.anchorClicked.emit(QUrl(action_url(f"copy/{answer.id}/0")))
    assert QApplication.clipboard().text() == "An answer about Links."
    chat.transcript.anchorClicked.emit(QUrl(f"hubside:delete/{answer.id}/0"))  # as a model could write it
    assert len(chat.store.messages(conversation)) == 2  # ignored: it lacks the window's key
    chat.transcript.anchorClicked.emit(QUrl(action_url(f"delete/{answer.id}/0")))
    assert [m.id for m in chat.store.messages(conversation)] == [question.id]
    assert "An answer about Links." not in chat.transcript.toPlainText()
    chat.transcript.anchorClicked.emit(QUrl(action_url("delete/notanumber")))  # ignored
    chat.transcript.anchorClicked.emit(QUrl("file:///etc/passwd"))  # never opened


def test_load_settings_presets_and_context_meter(qtbot: QtBot, open_window, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    chat = window.chat
    chat.model_bar.threads.setValue(1)
    chat.model_bar.flash_attention.setChecked(False)
    _load(qtbot, window, tiny_model, context=256)
    assert chat.model is not None
    assert (chat.model.n_threads, chat.model.flash_attn, chat.model.n_gpu_layers) == (1, False, 0)
    assert chat.settings.flash_attention is False  # remembered
    chat.sampling_panel.preset.setCurrentText("Precise")
    _ask(qtbot, window, "Hi")
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    meter = chat.context_meter.text()
    assert meter.startswith("context ") and meter.endswith(" / 256 tokens")
    reply = chat.store.messages(chat.conversation_id)[-1]  # type: ignore[arg-type]
    assert reply.stats["preset"] == "Precise"  # the preset chosen is the one the reply was sampled with
    assert "Precise" in chat.transcript.toPlainText()


def test_code_blocks_are_coloured(qtbot: QtBot, open_window) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtGui import QTextFormat

    window = open_window()
    transcript = window.chat.transcript
    transcript.show_markdown("Some code:\n\n```python\ndef answer():\n    return 42\n```\n\nAnd prose.")
    colours: dict[str, set[str]] = {"code": set(), "prose": set()}
    block = transcript.document().begin()
    while block.isValid():
        kind = "code" if block.blockFormat().hasProperty(QTextFormat.Property.BlockCodeFence) else "prose"
        for fmt_range in block.layout().formats():
            colours[kind].add(fmt_range.format.foreground().color().name())
        block = block.next()
    assert len(colours["code"]) >= 2  # keyword, name and number get colours of their own
    assert colours["prose"] == set()  # prose is left to the palette


def _click_action(window: MainWindow, action: str, message_id: int, number: int = 0) -> None:
    window.chat.transcript.anchorClicked.emit(QUrl(action_url(f"{action}/{message_id}/{number}")))


def _shown(window: MainWindow) -> list[tuple[str, str, int, int]]:
    chat = window.chat
    assert chat.conversation_id is not None
    return [(m.role, m.content, m.version, m.versions) for m in chat.store.messages(chat.conversation_id)]


@pytest.mark.real_model
def test_regenerate_edit_and_switch_versions(qtbot: QtBot, open_window, smollm2_path: Path) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    _load(qtbot, window, smollm2_path, context=1024)
    chat = window.chat
    chat.sampling_panel.max_tokens.setValue(24)
    chat.system_prompt.setText("You are a helpful assistant.")
    chat.sampling_panel.temperature.setValue(0.0)  # greedy: SmolLM2 knows this one
    _ask(qtbot, window, "What is the capital of France?")
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    assert "Paris" in chat.store.messages(chat.conversation_id)[-1].content  # type: ignore[arg-type]
    assert "Paris" in chat.transcript.toPlainText()

    chat.new_chat()
    chat.sampling_panel.preset.setCurrentText("Creative")
    _ask(qtbot, window, "Name a colour.")
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    question, first = chat.store.messages(chat.conversation_id)  # type: ignore[arg-type]
    assert action_url(f"regenerate/{first.id}/0") in chat.transcript.toMarkdown()

    _click_action(window, "regenerate", first.id)
    assert chat.request_id is not None  # a new reply streams
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    asked, regenerated = _shown(window)
    assert asked == ("user", "Name a colour.", 1, 1)
    assert regenerated[0] == "assistant" and regenerated[1].strip() and regenerated[2:] == (2, 2)
    assert "2/2" in chat.transcript.toPlainText()

    _click_action(window, "previous", chat.store.messages(chat.conversation_id)[1].id)  # type: ignore[arg-type]
    assert _shown(window)[1] == ("assistant", first.content, 1, 2)
    assert (
        "1/2" in chat.transcript.toPlainText()  # (its text is Markdown: compared above)
    )

    _click_action(window, "edit", question.id)  # Edit puts the message back in the input ...
    assert chat.chat_input.toPlainText() == "Name a colour."
    qtbot.keyClick(chat.chat_input, Qt.Key.Key_Escape)  # ... Esc leaves it as it was
    assert chat.editing is None and chat.chat_input.toPlainText() == ""
    _click_action(window, "edit", question.id)
    chat.chat_input.clear()
    _ask(qtbot, window, "Name a fruit.")
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    shown = _shown(window)
    assert shown[0] == ("user", "Name a fruit.", 2, 2) and shown[1][0] == "assistant" and len(shown) == 2
    assert len(chat.store.all_messages(chat.conversation_id)) == 5  # type: ignore[arg-type]  # nothing lost
    conversation = chat.conversation_id
    window.close()

    again = open_window()  # the versions and the one chosen are there after a restart
    again.chat.open_conversation(conversation)  # type: ignore[arg-type]
    assert _shown(again) == shown
    _click_action(again, "previous", again.chat.store.messages(conversation)[0].id)  # type: ignore[arg-type]
    assert [row[:2] for row in _shown(again)] == [("user", "Name a colour."), ("assistant", first.content)]


def test_continue_a_reply_cut_at_max_tokens(qtbot: QtBot, open_window, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    _load(qtbot, window, tiny_model, context=512)
    chat = window.chat
    chat.sampling_panel.max_tokens.setValue(8)
    chat.sampling_panel.temperature.setValue(
        0.0
    )  # greedy: the same reply every run (a sampled end token would end it early)
    _ask(qtbot, window, "Tell me everything")
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    reply = chat.store.messages(chat.conversation_id)[-1]  # type: ignore[arg-type]
    assert reply.stats["finish_reason"] == "length"
    assert action_url(f"continue/{reply.id}/0") in chat.transcript.toMarkdown()

    _click_action(window, "continue", reply.id)
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
    (_, continued) = chat.store.messages(chat.conversation_id)  # type: ignore[arg-type]
    assert continued.id == reply.id  # the same message, grown
    assert continued.content.startswith(reply.content) and len(continued.content) > len(reply.content)
    assert continued.state == "complete" and continued.stats["completion_tokens"] == 8
    assert chat.settings.max_tokens == 8  # remembered


def test_copy_a_code_block_from_its_button(qtbot: QtBot, open_window) -> None:  # type: ignore[no-untyped-def]
    from PySide6.QtWidgets import QApplication

    window = open_window()
    chat = window.chat
    store = chat.store
    conversation = store.create_conversation("Code")
    store.add_message(conversation, "user", "Two snippets please")
    reply = store.add_message(
        conversation, "assistant", "First:\n```python\nprint('one')\n```\nThen:\n~~~\nls -l\n~~~\n"
    )
    chat.open_conversation(conversation)
    markdown = chat.transcript.toMarkdown()
    assert action_url(f"copycode/{reply}/0") in markdown and action_url(f"copycode/{reply}/1") in markdown
    _click_action(window, "copycode", reply, 1)
    assert QApplication.clipboard().text() == "ls -l"
    _click_action(window, "copycode", reply, 0)
    assert QApplication.clipboard().text() == "print('one')"
    _click_action(window, "copycode", reply, 7)  # no such block: nothing happens
    assert QApplication.clipboard().text() == "print('one')"


def test_custom_sampling_values(qtbot: QtBot, open_window, tiny_model: Path) -> None:  # type: ignore[no-untyped-def]
    window = open_window()
    chat = window.chat
    chat.sampling_panel.preset.setCurrentText("Precise")
    assert (
        chat.sampling_panel.temperature.value() == pytest.approx(0.2)
        and chat.sampling_panel.top_k.value() == 20
    )
    qtbot.mouseClick(chat.sampling_panel.toggle, Qt.MouseButton.LeftButton)
    assert chat.sampling_panel.isVisible()
    chat.sampling_panel.temperature.setValue(0.0)
    chat.sampling_panel.seed.setValue(7)
    assert chat.sampling_panel.preset.currentText() == "Custom"
    sampling = chat.sampling_panel.sampling()
    assert (sampling.temperature, sampling.top_k, sampling.seed) == (0.0, 20, 7)
    _load(qtbot, window, tiny_model, context=256)
    chat.sampling_panel.max_tokens.setValue(6)
    replies = []
    for _ in range(2):  # greedy with a fixed seed: the same reply twice
        _ask(qtbot, window, "Hi")
        qtbot.waitUntil(lambda: chat.request_id is None, timeout=REPLY_TIMEOUT_MS)
        replies.append(chat.store.messages(chat.conversation_id)[-1])  # type: ignore[arg-type]
        chat.new_chat()
    assert replies[0].content == replies[1].content and replies[0].stats["preset"] == "Custom"
    assert chat.settings.sampling_preset == "Precise"  # the last preset is remembered, not "Custom"
