"""Reasoning in the real window with the real engine: apart from the answer, live, collapsed, kept, moved."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.compare.runner import FAIR, CompareSettings, Comparison
from app.paths import AppPaths
from app.runtime.protocol import LoadParams, SamplingParams
from app.ui.compare_page import ColumnView
from app.ui.main_window import MainWindow
from tests.conftest import TinyModelFactory
from tests.template_corpus import CORPUS

TIMEOUT_MS = 60_000
R1 = (CORPUS / "deepseek-ai-DeepSeek-R1-Distill-Llama-8B.jinja").read_text()  # opens the thinking block
QWEN3 = (CORPUS / "Qwen-Qwen3-0.6B.jinja").read_text()  # takes enable_thinking


def _load(qtbot: QtBot, window: MainWindow, model: Path) -> None:
    chat = window.chat
    chat.add_model_path(model)
    chat.model_bar.context.setValue(512)
    qtbot.mouseClick(chat.model_bar.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: chat.model is not None, timeout=TIMEOUT_MS)


def _ask(qtbot: QtBot, window: MainWindow, text: str) -> None:
    qtbot.keyClicks(window.chat.chat_input, text)
    qtbot.keyClick(window.chat.chat_input, Qt.Key.Key_Return)


def test_thinking_is_shown_apart_live_then_collapsed_stored_exported_and_imported(
    qtbot: QtBot, window: MainWindow, tiny_model_factory: TinyModelFactory, tmp_path: Path
) -> None:
    _load(qtbot, window, tiny_model_factory(chat_template=R1))
    chat = window.chat
    chat.sampling_panel.max_tokens.setValue(300)
    _ask(qtbot, window, "Why is the sky blue?")
    qtbot.waitUntil(lambda: chat.request_id is None or bool(chat.reply.reasoning_text), timeout=TIMEOUT_MS)
    if chat.request_id is not None:  # still streaming: the thought is drawn live, apart from the answer
        chat._render_reply()
        live = chat.transcript.toPlainText()
        assert "Thinking…" in live and "thinking…" in live
        assert chat.reply.reasoning_text.split()[0] in live
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=TIMEOUT_MS)
    assert chat.conversation_id is not None
    reply = chat.store.messages(chat.conversation_id)[-1]
    assert reply.reasoning and reply.content == ""  # cut while thinking: all of it is reasoning
    assert reply.stats["reasoning_ms"] > 0
    shown = chat.transcript.toPlainText()
    assert "Thought for" in shown and "Show" in shown
    first_words = " ".join(reply.reasoning.split()[:3])
    assert first_words not in shown.replace("\n", " ")  # collapsed once finished
    chat.transcript.action_requested.emit("thoughts", reply.id, 0)  # the user clicks Show
    assert "Hide" in chat.transcript.toPlainText()
    assert reply.reasoning.split()[0] in chat.transcript.toPlainText()

    exported = tmp_path / "chat.json"
    chat.export_conversation(chat.conversation_id, exported)
    data = json.loads(exported.read_text())
    assert data["messages"][-1]["reasoning"] == reply.reasoning
    chat.import_conversation(exported)
    imported = chat.store.messages(chat.conversation_id)[-1]
    assert imported.id != reply.id and imported.reasoning == reply.reasoning
    markdown = tmp_path / "chat.md"
    chat.export_conversation(chat.conversation_id, markdown)
    assert "> *Thought for" in markdown.read_text()


def test_a_chat_can_switch_a_templates_thinking_off(
    qtbot: QtBot, window: MainWindow, tiny_model_factory: TinyModelFactory
) -> None:
    _load(qtbot, window, tiny_model_factory(chat_template=QWEN3))
    chat = window.chat
    assert chat.thinking_switch.isVisible() and chat.thinking_switch.isChecked()
    chat.thinking_switch.setChecked(False)
    chat.sampling_panel.max_tokens.setValue(16)
    _ask(qtbot, window, "Hi")
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=TIMEOUT_MS)
    assert chat.conversation_id is not None
    assert chat.store.conversation(chat.conversation_id).thinking is False  # kept with the chat
    assert chat.store.messages(chat.conversation_id)[-1].reasoning == ""
    chat.new_chat()
    chat.open_conversation(chat.store.conversations()[0].id)
    assert not chat.thinking_switch.isChecked()


def test_compare_keeps_the_thinking_apart_from_the_answer(
    qtbot: QtBot, tiny_model_factory: TinyModelFactory
) -> None:
    thinker, plain = tiny_model_factory(chat_template=R1), tiny_model_factory()
    columns = [LoadParams(thinker, n_ctx=256), LoadParams(plain, n_ctx=256)]
    sampled = SamplingParams(temperature=1.0, seed=7)  # greedy, a random tiny model writes only newlines
    settings = CompareSettings(mode=FAIR, max_tokens=12, sampling=sampled)
    comparison = Comparison(AppPaths.from_env().ensure(), columns, settings)
    first, second = comparison.turn("Hi")
    assert first.reasoning.strip() and first.text == "" and first.reasoning_ms > 0
    assert second.reasoning == "" and second.text
    assert comparison.data()["columns"][0]["turns"][0]["reasoning"] == first.reasoning
    assert comparison.columns[0].messages[-1].reasoning == first.reasoning.strip()  # "Open as chat" keeps it

    view = ColumnView(1, lambda number: None)
    qtbot.addWidget(view)
    view.show()
    view.show_column("A", first)
    assert view.thinking.isVisible() and view.thinking_label.text().startswith("Thought for")
    assert first.reasoning.split()[0] in view.thinking.toPlainText()
    assert view.text.toPlainText().strip() == ""  # the answer's view holds no thinking
    view.show_column("B", second)
    assert not view.thinking.isVisible()
