"""A conversation of 10,000 messages in the real window: it opens on its newest messages, loads older ones
as the user scrolls up, and a send or a streaming reply draws only what changed (counted, not timed)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from pytestqt.qtbot import QtBot

from app.chat.active import READ_AT_FIRST
from app.ui.chat_page import ChatPage
from app.ui.main_window import MainWindow
from app.ui.transcript import DRAWN_AT_FIRST, DRAWN_MORE
from tests.long_chats import long_conversation

WAIT_MS = 60_000


def _load(qtbot: QtBot, chat: ChatPage, model: Path) -> None:
    chat.add_model_path(model)
    chat.model_bar.context.setValue(512)
    chat.load_selected_model()
    qtbot.waitUntil(lambda: chat.model is not None, timeout=WAIT_MS)


def test_a_long_chat_opens_on_its_newest_messages_and_loads_older_ones_on_scroll(
    qtbot: QtBot, window: MainWindow
) -> None:
    chat = window.chat
    conversation = long_conversation(chat.store, 10_000)
    rendered = chat.transcript.rendered
    chat.open_conversation(conversation)
    text = chat.transcript.toPlainText()
    assert chat.transcript.drawn == DRAWN_AT_FIRST and chat.transcript.total == 10_000
    assert len(chat.active.shown) == READ_AT_FIRST  # the rest is read as the user scrolls back to it
    assert chat.transcript.rendered - rendered == DRAWN_AT_FIRST  # not 10,000
    assert "Message 9999 word" in text and f"Message {10_000 - DRAWN_AT_FIRST} " in text
    assert f"Message {10_000 - DRAWN_AT_FIRST - 1} " not in text
    assert f"{10_000 - DRAWN_AT_FIRST} earlier messages" in text
    bar = chat.transcript.verticalScrollBar()
    bar.setValue(bar.minimum())  # the user scrolls to the top
    qtbot.waitUntil(lambda: chat.transcript.drawn == DRAWN_AT_FIRST + DRAWN_MORE, timeout=WAIT_MS)
    assert f"Message {10_000 - DRAWN_AT_FIRST - DRAWN_MORE} " in chat.transcript.toPlainText()
    assert bar.value() > bar.minimum()  # what they were reading stays in view, not the new top
    for _ in range(5):  # on past the messages read when it opened: more are read
        chat.transcript.show_earlier()
    assert chat.transcript.drawn == DRAWN_AT_FIRST + 6 * DRAWN_MORE > READ_AT_FIRST
    assert len(chat.active.shown) == 2 * READ_AT_FIRST == len(chat.transcript.messages)
    assert chat.active.shown == chat.store.messages(conversation)[-2 * READ_AT_FIRST :]


def test_sending_and_streaming_in_a_long_chat_draw_only_the_new_messages(
    qtbot: QtBot, window: MainWindow, tiny_model: Path
) -> None:
    chat = window.chat
    conversation = long_conversation(chat.store, 10_000)
    _load(qtbot, chat, tiny_model)
    chat.open_conversation(conversation)
    reads: list[str] = []  # the reads of a whole conversation (every message, or every id)
    for name in ("messages", "all_messages", "active_steps"):
        original = getattr(chat.store, name)
        spy = lambda cid, name=name, original=original: reads.append(name) or original(cid)  # noqa: E731
        setattr(chat.store, name, spy)
    rendered = chat.transcript.rendered
    chat.sampling_panel.max_tokens.setValue(24)
    qtbot.keyClicks(chat.chat_input, "One more question")
    qtbot.keyClick(chat.chat_input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=WAIT_MS)
    # the last message again without its links, the question, the finished reply: three, of 10,002
    assert chat.transcript.rendered - rendered <= 3
    assert reads == []  # the conversation is never read again whole, not even as ids
    assert [m.role for m in chat.active.shown[-2:]] == ["user", "assistant"]
    assert chat.transcript.total == 10_002 == len(chat.store.messages(conversation))
    assert chat.active.shown == chat.store.messages(conversation)[-len(chat.active.shown) :]
    reply = chat.active.shown[-1]
    assert (
        reply.state == "complete" and reply.content and "One more question" in chat.transcript.toPlainText()
    )
    # the chat is far longer than the 512-token context: the model's own format, older turns left out
    assert "left out" in chat.notice.text() and "plain" not in chat.notice.text().lower()
    assert reply.stats["prompt_tokens"] <= 512


def test_switching_versions_deep_in_a_long_chat_redraws_only_what_is_drawn(
    qtbot: QtBot, window: MainWindow
) -> None:
    chat = window.chat
    conversation = long_conversation(chat.store, 2_000)
    chat.open_conversation(conversation)
    last_user = chat.active.shown[-2]
    chat.store.add_message(conversation, "user", "Another version", parent_id=last_user.parent_id)
    chat.open_conversation(conversation)
    edited = chat.active.shown[-1]
    assert edited.content == "Another version" and edited.versions == 2
    rendered = chat.transcript.rendered
    chat.switch_version(edited, -1)
    assert chat.active.shown[-2].id == last_user.id and chat.transcript.total == 2_000
    assert chat.transcript.rendered - rendered <= DRAWN_AT_FIRST + 1


def test_an_imported_chat_with_odd_numbers_opens(qtbot: QtBot, window: MainWindow, tmp_path: Path) -> None:
    """A file's stats are untrusted: a string where a number belongs is left out, never a crash per render."""
    import json

    odd = {
        "reasoning_ms": "12",
        "tokens_per_s": "fast",
        "ttft_ms": float("nan"),
        "model": 7,
        "preset": "Precise",
    }
    saved = {
        "format": "hubside-conversation",
        "version": 3,
        "title": "Odd",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello", "reasoning": "hmm", "stats": odd},
        ],
    }
    path = tmp_path / "odd.json"
    path.write_text(json.dumps(saved))
    window.chat.import_conversation(path)
    reply = window.chat.active.shown[-1]
    assert reply.stats == {"preset": "Precise"} and "Hello" in window.chat.transcript.toPlainText()
    assert "Thoughts (1 word)" in window.chat.transcript.toPlainText()


def test_a_streaming_replys_code_is_coloured_once_when_it_ends(qtbot: QtBot, window: MainWindow) -> None:
    from app.ui.transcript import Transcript

    transcript = Transcript()
    qtbot.addWidget(transcript)
    conversation = long_conversation(window.chat.store, 3)
    shown = window.chat.store.messages(conversation)
    transcript.show_messages(shown[:-1])
    transcript.begin_reply(shown[:-1])
    code = "Here:\n\n```python\nx = 1\ny = 2\n"
    for end in range(len("Here:\n\n```python\n"), len(code) + 1):  # ten redraws a second, as it streams
        transcript.update_reply(code[:end], "", "", False)
    assert transcript.highlighter.lines == 0
    from dataclasses import replace

    finished = replace(shown[-1], content=code + "```\n")
    transcript.end_reply(finished)
    fresh = Transcript()  # the same reply drawn once, finished
    qtbot.addWidget(fresh)
    fresh.show_messages([finished])
    # once at the end, not once per redraw (Qt may colour one line of an inserted fragment twice)
    assert 0 < fresh.highlighter.lines <= transcript.highlighter.lines <= fresh.highlighter.lines + 1


def test_regenerating_in_a_long_chat_keeps_its_earlier_messages_reachable(
    qtbot: QtBot, window: MainWindow, tiny_model: Path
) -> None:
    chat = window.chat
    conversation = long_conversation(chat.store, 2_000)
    _load(qtbot, chat, tiny_model)
    chat.open_conversation(conversation)
    chat.sampling_panel.max_tokens.setValue(4)
    chat.regenerate(chat.active.shown[-1])
    qtbot.waitUntil(lambda: chat.request_id is None, timeout=WAIT_MS)
    assert chat.transcript.total == 2_000 and chat.active.shown[-1].versions == 2
    assert chat.transcript.read_earlier is not None  # scrolling back still reads the older ones
    rendered, drawn = chat.transcript.rendered, chat.transcript.drawn
    for _ in range(25):  # 1,000 messages back, as a user scrolling up would
        chat.transcript.show_earlier()
    assert chat.transcript.drawn == drawn + 25 * DRAWN_MORE
    assert chat.transcript.rendered - rendered == 25 * DRAWN_MORE  # each step its own 40, none again
    text = chat.transcript.toPlainText()
    oldest = 2_000 - chat.transcript.drawn
    assert f"{oldest} earlier messages" in text and text.count("earlier messages") == 2  # head and its link
    positions = [text.index(f"Message {n} word") for n in (oldest, oldest + 1, 1_000, 1_998)]
    assert positions == sorted(positions) and f"Message {oldest - 1} " not in text  # in order, none twice


def test_opening_another_chat_while_a_reply_streams_keeps_the_reply(
    qtbot: QtBot, window: MainWindow, tiny_model: Path
) -> None:
    chat = window.chat
    other = long_conversation(chat.store, 4, title="Other")
    _load(qtbot, chat, tiny_model)
    chat.sampling_panel.max_tokens.setValue(200)
    qtbot.keyClicks(chat.chat_input, "Tell me a long story")
    qtbot.keyClick(chat.chat_input, Qt.Key.Key_Return)
    reply_id = chat.reply_id
    window.show_conversation(other)  # as Compare's "Open as chat" does
    assert chat.request_id is None and chat.conversation_id == other
    saved = chat.store.message(reply_id)  # type: ignore[arg-type]
    assert saved.state in ("stopped", "complete") and chat.transcript.highlighter.paused_from is None
    assert "Message 3 word" in chat.transcript.toPlainText()
