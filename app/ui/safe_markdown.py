"""A read-only view of untrusted Markdown (model cards, model output, saved chats).

Qt's Markdown parser with raw HTML switched off; no resource is ever loaded (no remote or local image);
Qt never follows a link by itself: a click on an http(s) link is reported, anything else is ignored
(`javascript:`, `file:`, `data:`...), apart from the page's own action links.
"""

from __future__ import annotations

from PySide6.QtCore import QUrl, Signal, Slot
from PySide6.QtGui import QTextDocument
from PySide6.QtWidgets import QTextBrowser, QWidget

MARKDOWN = QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML
ACTION_SCHEME = "hubside"  # links a page writes itself: handled by the page, never opened


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
        elif url.scheme() == ACTION_SCHEME:
            self.action_link_clicked.emit(url)
