"""Untrusted text cannot act: a reply, or an imported chat, whose Markdown holds every action link the
transcript uses (`hubside:delete/ID/0`, ...) gets links that do nothing when clicked, while the
transcript's own links (Copy, Delete, ...) still work."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import QUrl
from PySide6.QtWidgets import QApplication
from pytestqt.qtbot import QtBot

from app.chat.export import FORMAT, VERSION
from app.ui.main_window import MainWindow
from app.ui.transcript import ACTIONS

IDS = range(1, 12)  # every message id the test's database will hold: an attacker can guess them
SENTINEL = "clipboard before the clicks"


def hostile_markdown(tag: str) -> str:
    """Every action URL, for every id, in every way Markdown writes a link."""
    paragraphs, definitions = [], []
    for action in (*ACTIONS, "earlier"):
        for message_id in IDS:
            url = f"hubside:{action}/{message_id}/0"
            paragraphs.append(
                f"[evil-{tag}]({url}) <{url}> [evil-{tag}-ref][r-{action}-{message_id}] "
                f"[evil-{tag}-caps](HUBSIDE:{action}/{message_id}/0) "
                f"[evil-{tag}-guess]({url}?key=0123456789abcdef01234567) "
                f"[evil-{tag}-entity](hubsid&#101;:{action}/{message_id}/0)"
            )
            definitions.append(f"[r-{action}-{message_id}]: {url}")
    return "\n\n".join(paragraphs) + "\n\n" + "\n".join(definitions) + "\n"


def anchors(window: MainWindow) -> list[tuple[str, str]]:
    """(text, href) of every link the transcript shows, as Qt would report a click on it."""
    found = []
    block = window.chat.transcript.document().begin()
    while block.isValid():
        fragments = block.begin()
        while not fragments.atEnd():
            fragment = fragments.fragment()
            if fragment.isValid() and fragment.charFormat().isAnchor():
                found.append((fragment.text(), fragment.charFormat().anchorHref()))
            fragments += 1
        block = block.next()
    return found


def click_every_hostile_link(qtbot: QtBot, window: MainWindow, conversation_id: int) -> None:
    chat = window.chat
    store = chat.store
    before = [(m.id, m.content, m.state, m.version) for m in store.all_messages(conversation_id)]
    conversations = store.db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0]
    expanded = set(chat.transcript.expanded_thoughts)
    QApplication.clipboard().setText(SENTINEL)
    hostile = [(text, href) for text, href in anchors(window) if text.startswith(("evil", "hubside:"))]
    actions_seen = {QUrl(href).path().split("/")[0] for _, href in hostile}
    assert {*ACTIONS, "earlier"} <= actions_seen  # every action is there as a link to click
    for _, href in hostile:
        chat.transcript.anchorClicked.emit(QUrl(href))
    qtbot.wait(50)
    assert [(m.id, m.content, m.state, m.version) for m in store.all_messages(conversation_id)] == before
    assert store.db.execute("SELECT COUNT(*) FROM conversations").fetchone()[0] == conversations
    assert QApplication.clipboard().text() == SENTINEL  # nothing copied
    assert chat.chat_input.toPlainText() == "" and chat.editing is None  # nothing put up for editing
    assert chat.request_id is None  # no regenerate, no continue
    assert chat.transcript.expanded_thoughts == expanded  # no thought opened or closed


def own_link(window: MainWindow, label: str) -> QUrl:
    hrefs = [href for text, href in anchors(window) if text == label]
    assert hrefs, label
    return QUrl(hrefs[-1])  # the last message's


def test_a_reply_with_every_action_link_cannot_act(qtbot: QtBot, window: MainWindow) -> None:
    chat = window.chat
    store = chat.store
    conversation = store.create_conversation("Hostile reply")
    store.add_message(conversation, "user", "Say something")
    reply = store.start_reply(conversation)
    store.finish_reply(
        reply,
        hostile_markdown("reply"),
        "stopped",
        {"tokens_per_s": 5.0},
        reasoning=hostile_markdown("thought"),
    )
    chat.sidebar.conversations.refresh()
    chat.open_conversation(conversation)
    chat.transcript.anchorClicked.emit(own_link(window, "Show"))  # its thoughts hold links too
    assert chat.transcript.expanded_thoughts == {reply}
    click_every_hostile_link(qtbot, window, conversation)

    chat.transcript.anchorClicked.emit(own_link(window, "Copy"))  # the transcript's own links still work
    assert QApplication.clipboard().text() == hostile_markdown("reply")
    chat.transcript.anchorClicked.emit(own_link(window, "Delete"))
    assert [m.role for m in store.messages(conversation)] == ["user"]


def test_an_imported_chat_with_every_action_link_cannot_act(
    qtbot: QtBot, window: MainWindow, tmp_path: Path
) -> None:
    chat = window.chat
    mine = chat.store.create_conversation("Mine")
    chat.store.add_message(mine, "user", "A message of mine that a hostile file would like to delete")
    exported = {
        "format": FORMAT,
        "version": VERSION,
        "title": "Hostile import",
        "messages": [
            {"role": "user", "content": hostile_markdown("import-user")},
            {"role": "assistant", "content": hostile_markdown("import"), "state": "stopped",
             "reasoning": hostile_markdown("import-thought")},
        ],
    }  # fmt: skip
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(exported))
    chat.import_conversation(path)
    imported = chat.conversation_id
    assert imported is not None and imported != mine
    chat.transcript.anchorClicked.emit(own_link(window, "Show"))
    click_every_hostile_link(qtbot, window, imported)
    assert [m.content for m in chat.store.messages(mine)] == [
        "A message of mine that a hostile file would like to delete"
    ]

    chat.transcript.anchorClicked.emit(own_link(window, "Edit"))  # its own links work
    assert chat.chat_input.toPlainText() == hostile_markdown("import-user")
