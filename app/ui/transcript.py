"""The transcript: untrusted Markdown (model output, saved history) shown safely and cheaply.

Qt's own Markdown parser with HTML switched off renders it; no resource is ever loaded (so no remote or
local image), and a link opens only when clicked, only for http(s). While a reply streams, only that reply's
part of the document is redrawn; past `LIVE_MARKDOWN_LIMIT` characters it grows as plain text, so a reply of
any length costs each redraw the same.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QPalette, QTextCursor, QTextDocument, QTextDocumentFragment
from PySide6.QtWidgets import QTextBrowser, QWidget

from app.chat.export import SPEAKERS
from app.chat.store import Message
from app.ui.highlight import CodeHighlighter

_MARKDOWN = QTextDocument.MarkdownFeature.MarkdownDialectGitHub | QTextDocument.MarkdownFeature.MarkdownNoHTML
ACTION_SCHEME = "hubside"
LIVE_MARKDOWN_LIMIT = 20_000  # characters of a streaming reply still redrawn as Markdown (a few ms)
STATE_NOTES = {
    "stopped": "stopped",
    "interrupted": "interrupted: Hubside or the engine stopped during this reply",
    "error": "failed",
}
_SEPARATOR = "\n---\n\n"


def message_markdown(
    role: str,
    content: str,
    note: str = "",
    stats: dict[str, Any] | None = None,
    message_id: int | None = None,
) -> str:
    header = f"**{SPEAKERS.get(role, role)}**" + (f" · *{note}*" if note else "")
    footer = f"\n\n*{stats_line(stats)}*" if stats else ""
    if message_id is not None:  # our own links: handled by the page, never opened as URLs
        footer += (
            f"\n\n[Copy]({ACTION_SCHEME}:copy/{message_id}) · [Delete]({ACTION_SCHEME}:delete/{message_id})"
        )
    return f"{header}\n\n{content.strip() or '…'}{footer}\n"


def stats_line(stats: dict[str, Any]) -> str:
    """The numbers under a reply: speed, time to first token, token counts, model, finish reason."""
    parts = []
    if "tokens_per_s" in stats:
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if "ttft_ms" in stats:
        parts.append(f"first token {stats['ttft_ms']:.0f} ms")
    if "completion_tokens" in stats:
        parts.append(f"{stats['completion_tokens']} tokens (prompt {stats.get('prompt_tokens', '?')})")
    for key in ("model", "preset", "finish_reason"):
        if stats.get(key):
            parts.append(str(stats[key]))
    return " · ".join(parts).replace("*", "\\*").replace("_", "\\_")


def transcript_markdown(messages: list[Message]) -> str:
    return _SEPARATOR.join(
        message_markdown(m.role, m.content, STATE_NOTES.get(m.state, ""), m.stats, m.id) for m in messages
    )


class Transcript(QTextBrowser):
    action_requested = Signal(str, int)  # "copy" or "delete", message id

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setAccessibleName("Conversation")
        self.setOpenLinks(False)
        self.setOpenExternalLinks(False)
        self.anchorClicked.connect(self._open_link)
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        self.highlighter = CodeHighlighter(self.document(), dark)
        self._live_start: int | None = None  # where the streaming reply begins in the document
        self._live_plain = 0  # characters of the reply appended as plain text (past the limit)

    def show_markdown(self, markdown: str) -> None:
        with self._keeping_the_end_in_view():
            self.document().setMarkdown(markdown, _MARKDOWN)
        self._live_start = None

    def show_messages(self, messages: list[Message]) -> None:
        self.show_markdown(transcript_markdown(messages))

    def begin_reply(self, messages: list[Message]) -> None:
        """Show the conversation and an empty reply after it, which `update_reply` then fills."""
        # A placeholder paragraph after the separator (a rule at the very end would not be drawn); the
        # reply replaces it.
        self.show_markdown(transcript_markdown(messages) + (_SEPARATOR if messages else "") + "…\n")
        self._live_start = self.document().lastBlock().position()
        self._live_plain = 0
        self.update_reply("")

    def update_reply(
        self,
        text: str,
        note: str = "writing…",
        stats: dict[str, Any] | None = None,
        message_id: int | None = None,
    ) -> None:
        if self._live_start is None:
            return
        with self._keeping_the_end_in_view():
            cursor = QTextCursor(self.document())
            if len(text) <= LIVE_MARKDOWN_LIMIT or not self._live_plain:
                cursor.setPosition(self._live_start)
                cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
                if len(text) <= LIVE_MARKDOWN_LIMIT:
                    markdown = message_markdown("assistant", text, note, stats, message_id)
                    cursor.insertFragment(QTextDocumentFragment.fromMarkdown(markdown, _MARKDOWN))
                    return
                cursor.insertFragment(QTextDocumentFragment.fromMarkdown("**Assistant**\n", _MARKDOWN))
                cursor.insertBlock()
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText(text[self._live_plain :])
            self._live_plain = len(text)

    def end_reply(
        self, text: str, note: str = "", stats: dict[str, Any] | None = None, message_id: int | None = None
    ) -> None:
        """The reply is final: one last redraw of its own part (never of the whole conversation)."""
        self.update_reply(text, note, stats, message_id)
        if len(text) > LIVE_MARKDOWN_LIMIT and (note or stats):
            cursor = QTextCursor(self.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            cursor.insertText("\n" + " · ".join(filter(None, (note, stats_line(stats or {})))))
        self._live_start = None

    @Slot()
    def scroll_to_end(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _keeping_the_end_in_view(self) -> _StickToEnd:
        return _StickToEnd(self)

    def loadResource(self, kind: int, name: QUrl | str) -> object:
        return None  # never load images or anything else a model or a saved chat points at

    @Slot(QUrl)
    def _open_link(self, url: QUrl) -> None:
        if url.scheme() in ("http", "https"):
            QDesktopServices.openUrl(url)
        elif url.scheme() == ACTION_SCHEME:
            action, _, number = url.path().partition("/")
            if action in ("copy", "delete") and number.isdigit():
                self.action_requested.emit(action, int(number))


class _StickToEnd:
    """Keeps the view at the bottom across a redraw if it was there before (the user may scroll up)."""

    def __init__(self, view: QTextBrowser) -> None:
        self.bar = view.verticalScrollBar()

    def __enter__(self) -> None:
        self.at_end = self.bar.value() >= self.bar.maximum() - 4

    def __exit__(self, *exc: object) -> None:
        if self.at_end:
            self.bar.setValue(self.bar.maximum())
