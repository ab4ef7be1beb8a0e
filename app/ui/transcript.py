"""The transcript: untrusted Markdown (model output, saved history) shown safely.

Qt's own Markdown parser with HTML switched off renders it; no resource is ever loaded (so no remote or
local image), and a link opens only when clicked, only for http(s).
"""

from __future__ import annotations

from PySide6.QtCore import QUrl, Slot
from PySide6.QtGui import QDesktopServices, QTextDocument
from PySide6.QtWidgets import QTextBrowser, QWidget

from app.chat.store import Message

_MARKDOWN = QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML
_SPEAKERS = {"user": "You", "assistant": "Assistant", "system": "System"}
_STATE_NOTES = {
    "stopped": "stopped",
    "interrupted": "interrupted: Hubside or the engine stopped during this reply",
    "error": "failed",
}


def message_markdown(role: str, content: str, note: str = "") -> str:
    header = f"**{_SPEAKERS.get(role, role)}**" + (f" · *{note}*" if note else "")
    return f"{header}\n\n{content.strip() or '…'}\n"


def transcript_markdown(messages: list[Message], streaming: str | None = None) -> str:
    parts = [message_markdown(m.role, m.content, _STATE_NOTES.get(m.state, "")) for m in messages]
    if streaming is not None:
        parts.append(message_markdown("assistant", streaming, "writing…"))
    return "\n---\n\n".join(parts)


class Transcript(QTextBrowser):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setAccessibleName("Conversation")
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self._open_link)

    def show_markdown(self, markdown: str) -> None:
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 4
        self.document().setMarkdown(markdown, _MARKDOWN)
        if at_end:
            bar.setValue(bar.maximum())

    def loadResource(self, kind: int, name: QUrl | str) -> object:
        return None  # never load images or anything else a model or a saved chat points at

    @Slot(QUrl)
    def _open_link(self, url: QUrl) -> None:
        if url.scheme() in ("http", "https"):
            QDesktopServices.openUrl(url)
