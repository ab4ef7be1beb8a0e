"""A read-only view of untrusted Markdown (model cards, model output, saved chats).

Qt's Markdown parser with raw HTML switched off; no resource is ever loaded (no remote or local image);
Qt never follows a link by itself: a click on an http(s) link is reported, anything else is ignored
(`javascript:`, `file:`, `data:`...), apart from the page's own action links.
"""

from __future__ import annotations

import secrets

from PySide6.QtCore import QUrl, QUrlQuery, Signal, Slot
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QTextBrowser, QWidget

MARKDOWN = QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML
ACTION_SCHEME = "hubside"  # links a page writes itself: handled by the page, never opened
# Untrusted text can write a hubside: link too ("[ok](hubside:delete/7/0)"): the page's own links carry this
# key, which no text can know (it is made anew each run and never leaves the window's documents).
ACTION_KEY = secrets.token_hex(12)


def action_url(path: str) -> str:
    """The URL of one of the page's own action links, e.g. action_url("copy/12/0")."""
    return f"{ACTION_SCHEME}:{path}?key={ACTION_KEY}"


class SafeMarkdownView(QTextBrowser):
    web_link_clicked = Signal(QUrl)  # an http(s) link the user clicked
    action_link_clicked = Signal(QUrl)  # a hubside: link

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self._clicked)

    def show_markdown(self, markdown: str) -> None:
        self.document().setMarkdown(markdown, MARKDOWN)

    def loadResource(self, kind: int, name: QUrl | str) -> object:
        return None  # never load images or anything else the text points at

    @Slot(QUrl)
    def _clicked(self, url: QUrl) -> None:
        if url.scheme() in ("http", "https"):
            self.web_link_clicked.emit(url)
        elif url.scheme() == ACTION_SCHEME and QUrlQuery(url).queryItemValue("key") == ACTION_KEY:
            self.action_link_clicked.emit(url)
