"""The transcript: untrusted Markdown (model output, saved history) shown safely and cheaply.

Qt's own Markdown parser with HTML switched off renders it; no resource is ever loaded (so no remote or
local image), and a link opens only when clicked, only for http(s). While a reply streams, only that reply's
part of the document is redrawn; past `LIVEMARKDOWN_LIMIT` characters it grows as plain text, so a reply of
any length costs each redraw the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QTimer, QUrl, Signal, Slot
from PySide6.QtGui import (
    QDesktopServices,
    QPalette,
    QTextBlockFormat,
    QTextCursor,
    QTextDocumentFragment,
    QTextFormat,
)
from PySide6.QtWidgets import QWidget

from app.chat.export import SPEAKERS, quoted, thought_label
from app.chat.markdown import with_code_links
from app.chat.store import Message
from app.ui.highlight import CodeHighlighter
from app.ui.safe_markdown import MARKDOWN, SafeMarkdownView, action_url

LIVEMARKDOWN_LIMIT = 20_000  # characters of a streaming reply still redrawn as Markdown (a few ms)
DRAWN_AT_FIRST = 40  # messages drawn when a conversation opens; older ones come as the user scrolls up
DRAWN_MORE = 40
READ_EARLIER = 200  # older messages read at once when the drawn ones run out
ReadEarlier = Callable[[int], list[Message]]  # up to n older messages of the conversation, oldest first
STATE_NOTES = {
    "stopped": "stopped",
    "interrupted": "interrupted: Hubside or the engine stopped during this reply",
    "error": "failed",
}
_SEPARATOR = "\n---\n\n"
_RULE = QTextFormat.Property.BlockTrailingHorizontalRulerWidth  # the block a separator draws


ACTIONS = ("copy", "edit", "delete", "regenerate", "continue", "previous", "next", "copycode", "thoughts")
LIVE_REASONING_CHARS = 4_000  # of a reasoning block that is still streaming, only its end is redrawn
PREVIOUS_ARROW, NEXT_ARROW = (
    "\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK}",
    "\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}",
)
_CONTINUABLE = ("stopped", "interrupted")  # and replies cut at max tokens (finish reason "length")


def message_markdown(role: str, content: str, note: str = "", footer: str = "", thinking: str = "") -> str:
    header = f"**{SPEAKERS.get(role, role)}**" + (f" · *{note}*" if note else "")
    body = content.strip() or ("" if thinking else "…")
    return f"{header}\n\n{thinking}{body}{footer}\n"


def thinking_markdown(reasoning: str, label: str, toggle: str = "", expanded: bool = True) -> str:
    """A reply's reasoning apart from its answer: a label (with Show/Hide once saved) and, when expanded,
    the reasoning as a quote."""
    if not reasoning.strip():
        return ""
    head = f"*{label}*" + (f" · {toggle}" if toggle else "")
    return f"{head}\n\n" + (f"{quoted(reasoning)}\n\n" if expanded else "")


def live_thinking_markdown(reasoning: str, label: str, thinking_now: bool) -> str:
    """While a reply streams: the reasoning as it grows (its end only), collapsed once the answer starts."""
    if not thinking_now:
        return thinking_markdown(reasoning, label, expanded=False)
    tail = reasoning if len(reasoning) <= LIVE_REASONING_CHARS else "…" + reasoning[-LIVE_REASONING_CHARS:]
    return thinking_markdown(tail, label)


def _link(label: str, action: str, message_id: int, number: int = 0) -> str:
    # Our own links: handled by the page, never opened as URLs.
    return f"[{label}]({action_url(f'{action}/{message_id}/{number}')})"


def message_footer(message: Message, last: bool) -> str:
    """The numbers and the actions under a saved message: a version switcher when there are versions,
    Copy, Edit (yours) or Regenerate (replies), Continue (the last reply, when it was cut), Delete."""
    lines = []
    if message.stats:
        lines.append(f"*{stats_line(message.stats)}*")
    links = []
    if message.versions > 1:
        previous = _link(PREVIOUS_ARROW, "previous", message.id)
        links.append(
            f"{previous} {message.version}/{message.versions} {_link(NEXT_ARROW, 'next', message.id)}"
        )
    links.append(_link("Copy", "copy", message.id))
    if message.role == "user":
        links.append(_link("Edit", "edit", message.id))
    elif message.role == "assistant":
        links.append(_link("Regenerate", "regenerate", message.id))
        cut = message.state in _CONTINUABLE or message.stats.get("finish_reason") == "length"
        if last and cut:
            links.append(_link("Continue", "continue", message.id))
    links.append(_link("Delete", "delete", message.id))
    lines.append(" · ".join(links))
    return "".join(f"\n\n{line}" for line in lines)


def saved_message_markdown(message: Message, last: bool, expanded: bool = False) -> str:
    content = with_code_links(message.content, lambda n: _link("Copy code", "copycode", message.id, n))
    thinking = ""
    if message.reasoning.strip():
        label = thought_label(message.reasoning, message.stats.get("reasoning_ms"))
        toggle = _link("Hide" if expanded else "Show", "thoughts", message.id)
        thinking = thinking_markdown(message.reasoning, label, toggle, expanded)
    return message_markdown(
        message.role, content, STATE_NOTES.get(message.state, ""), message_footer(message, last), thinking
    )


def stats_line(stats: dict[str, Any]) -> str:
    """The numbers under a reply: speed, time to first token, token counts, model, finish reason."""
    parts = []
    if "tokens_per_s" in stats:
        parts.append(f"{stats['tokens_per_s']:.1f} tok/s")
    if "ttft_ms" in stats:
        parts.append(f"first token {stats['ttft_ms']:.0f} ms")
    if "completion_tokens" in stats:
        parts.append(f"{stats['completion_tokens']} tokens (prompt {stats.get('prompt_tokens', '?')})")
    for key in ("model", "preset", "finish_reason", "timing"):
        if stats.get(key):
            parts.append(str(stats[key]))
    return " · ".join(parts).replace("*", "\\*").replace("_", "\\_")


class Transcript(SafeMarkdownView):
    """The conversation's newest messages (older ones are drawn when the user scrolls up to them). A send
    appends to the document and a streaming reply redraws only its own part: the cost of a change is the
    cost of what changed, never of the conversation's length."""

    action_requested = Signal(str, int, int)  # one of ACTIONS, message id, code block number

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("transcript")
        self.setAccessibleName("Conversation")
        self.web_link_clicked.connect(QDesktopServices.openUrl)  # model output: open on click
        self.action_link_clicked.connect(self._action)
        dark = self.palette().color(QPalette.ColorRole.Base).lightness() < 128
        self.highlighter = CodeHighlighter(self.document(), dark)
        self.messages: list[Message] = []  # the conversation as shown, as far back as it was read
        self.draw_limit = DRAWN_AT_FIRST  # how many of its newest messages are drawn
        self.unread = 0  # older messages not even read yet
        self.read_earlier: ReadEarlier | None = None  # reads the newest of them
        self._tail_start: int | None = None  # where the last drawn message (or the live reply) begins
        self._live = False  # a reply is streaming into the tail
        self._live_plain = 0  # characters of the reply appended as plain text (past the limit)
        self.expanded_thoughts: set[int] = set()  # replies whose reasoning the user opened
        self.rendered = 0  # saved messages turned into Markdown so far (what a long chat must not grow)
        self._redrawing = 0  # redraws under way (their scroll bar moves are not the user's)
        self.verticalScrollBar().valueChanged.connect(self._scrolled)

    @property
    def drawn(self) -> int:
        """How many messages the document holds (the rest wait until the user scrolls up)."""
        return min(self.draw_limit, len(self.messages))

    @property
    def total(self) -> int:
        """How many messages the conversation has, drawn or not, read or not."""
        return len(self.messages) + self.unread

    def show_markdown(self, markdown: str) -> None:
        with self._keeping_the_end_in_view():
            super().show_markdown(markdown)
        self.messages, self._tail_start, self._live = [], None, False
        self.unread, self.read_earlier = 0, None
        self.highlighter.paused_from = None

    def show_messages(
        self, messages: list[Message], unread: int = 0, read_earlier: ReadEarlier | None = None
    ) -> None:
        """Draw a conversation afresh: its newest messages, a link to the earlier ones. `messages` may be
        only its newest part: `unread` more come before them, from `read_earlier(count)` when wanted."""
        self.draw_limit = max(DRAWN_AT_FIRST, self.draw_limit if self._same_chat(messages) else 0)
        self.messages = list(messages)
        self.unread, self.read_earlier = unread, read_earlier
        self._draw_window()

    def toggle_thoughts(self, message_id: int) -> None:
        """Show or hide a saved reply's reasoning (while a reply streams, from its end on)."""
        self.expanded_thoughts ^= {message_id}
        if not self._live:
            bar = self.verticalScrollBar()
            value = bar.value()
            self._draw_window()
            bar.setValue(value)  # where the user was reading

    def show_earlier(self) -> None:
        """Draw more of the older messages, keeping in view what the user was looking at."""
        if self._live or self.drawn >= len(self.messages) + self.unread:
            return
        if self.drawn + DRAWN_MORE > len(self.messages) and self.unread and self.read_earlier is not None:
            older = self.read_earlier(max(DRAWN_MORE, READ_EARLIER))
            self.messages[:0] = older
            self.unread = max(0, self.unread - len(older)) if older else 0
        drawn = self.drawn
        more = min(drawn + DRAWN_MORE, len(self.messages)) - drawn
        if more <= 0:
            return
        older = self.messages[len(self.messages) - drawn - more : len(self.messages) - drawn]
        earlier = len(self.messages) - drawn - more + self.unread
        markdown = self._earlier_head(earlier) + "".join(
            self._saved(m, last=False) + _SEPARATOR for m in older
        )
        bar = self.verticalScrollBar()
        from_bottom = bar.maximum() - bar.value()
        self._put_before_drawn(markdown)
        self.draw_limit = drawn + more
        bar.setValue(bar.maximum() - from_bottom)

    def _put_before_drawn(self, markdown: str) -> None:
        """Draw `markdown` in place of the head ('N earlier messages'), before the drawn messages, which are
        not drawn again: a step back costs its 40 messages, however many are drawn already."""
        document = self.document()
        block = document.begin()
        while block.isValid() and not block.blockFormat().hasProperty(_RULE):
            block = block.next()  # the head is one paragraph, then its rule
        before = document.characterCount()
        with self._keeping_the_end_in_view():
            cursor = QTextCursor(document)
            cursor.setPosition(
                block.next().position() if block.isValid() else 0, QTextCursor.MoveMode.KeepAnchor
            )
            cursor.removeSelectedText()
            cursor.insertBlock()  # for the fragment's last block to end in, not the first message
            cursor.movePosition(QTextCursor.MoveOperation.PreviousBlock)
            cursor.setBlockFormat(QTextBlockFormat())
            cursor.insertFragment(QTextDocumentFragment.fromMarkdown(markdown, MARKDOWN))
        if self._tail_start is not None:
            self._tail_start += document.characterCount() - before

    @staticmethod
    def _earlier_head(earlier: int) -> str:
        if not earlier:
            return ""
        more = _link(f"Show {min(earlier, DRAWN_MORE)} earlier messages", "earlier", 0)
        return f"*{earlier} earlier messages* · {more}\n{_SEPARATOR}"  # a blank line: a rule, not a heading

    def begin_reply(
        self, messages: list[Message], unread: int = 0, read_earlier: ReadEarlier | None = None
    ) -> None:
        """Show the conversation and an empty reply after it, which `update_reply` then fills. Messages
        added since the last drawing are appended; nothing drawn before is drawn again but the last one
        (its Continue link goes)."""
        if self._tail_start is not None and not self._live and self._extends(messages):
            added = messages[len(self.messages) :]
            self.messages.extend(added)
            self.draw_limit += len(added)
            tail = [self.messages[-len(added) - 1], *added]
        else:
            self.show_messages(messages, unread, read_earlier)
            tail = self.messages[-1:]
        self._replace_tail("".join(self._saved(m, last=False) + _SEPARATOR for m in tail) + "…\n")
        self._tail_start = self.document().lastBlock().position()
        self._live, self._live_plain = True, 0
        self.highlighter.paused_from = self._tail_start
        self.update_reply("")

    def update_reply(
        self, text: str, reasoning: str = "", label: str = "", thinking_now: bool = False
    ) -> None:
        """Redraw the streaming reply (its part of the document only)."""
        thinking = live_thinking_markdown(reasoning, label, thinking_now) if reasoning else ""
        note = "thinking…" if thinking_now else "writing…"
        self._replace_reply(message_markdown("assistant", text, note, thinking=thinking), text)

    def end_reply(self, message: Message) -> None:
        """The reply is saved and final: one last redraw of its own part, now with its numbers and actions
        (never of the whole conversation); its code is coloured now, once."""
        self.highlighter.paused_from = None
        self._replace_reply(self._saved(message, last=True), message.content, message_footer(message, True))
        self._live = False
        self.messages.append(message)
        self.draw_limit += 1

    # --- drawing ---------------------------------------------------------------------------------
    def _saved(self, message: Message, last: bool) -> str:
        self.rendered += 1
        return saved_message_markdown(message, last, message.id in self.expanded_thoughts)

    def _same_chat(self, messages: list[Message]) -> bool:
        return (
            bool(messages and self.messages)
            and messages[-1].conversation_id == self.messages[-1].conversation_id
        )

    def _extends(self, messages: list[Message]) -> bool:
        """Whether `messages` are the drawn conversation with messages added at its end (both come from the
        page's one copy of the path, so its last drawn message in its place says so)."""
        old = self.messages
        return bool(old) and len(messages) >= len(old) and messages[len(old) - 1].id == old[-1].id

    def _draw_window(self) -> None:
        self.highlighter.paused_from = None  # nothing streams into a fresh drawing
        drawn = self.messages[len(self.messages) - self.drawn :]
        earlier = len(self.messages) - len(drawn) + self.unread
        body = self._earlier_head(earlier) + "".join(
            self._saved(m, last=False) + _SEPARATOR for m in drawn[:-1]
        )
        with self._keeping_the_end_in_view():
            super().show_markdown(body + "…\n")  # a placeholder: the last message replaces it
        self._tail_start, self._live = self.document().lastBlock().position(), False
        if drawn:
            self._replace_tail(self._saved(drawn[-1], last=True))

    def _replace_tail(self, markdown: str) -> None:
        """Draw `markdown` in place of the document from the last message's start to its end."""
        if self._tail_start is None:
            return
        with self._keeping_the_end_in_view():
            cursor = QTextCursor(self.document())
            cursor.setPosition(self._tail_start)
            cursor.movePosition(QTextCursor.MoveOperation.End, QTextCursor.MoveMode.KeepAnchor)
            # Removing the old tail merges its first and last blocks; the last may be a quote (thinking),
            # whose indent must not carry over to the new first line.
            cursor.removeSelectedText()
            cursor.setBlockFormat(QTextBlockFormat())
            cursor.insertFragment(QTextDocumentFragment.fromMarkdown(markdown, MARKDOWN))

    def _replace_reply(self, markdown: str, text: str, footer: str = "") -> None:
        if self._tail_start is None:
            return
        if len(text) <= LIVEMARKDOWN_LIMIT or not self._live_plain:
            if len(text) <= LIVEMARKDOWN_LIMIT:
                self._replace_tail(markdown)
                return
            self._replace_tail("**Assistant**\n")
        with self._keeping_the_end_in_view():
            cursor = QTextCursor(self.document())
            cursor.movePosition(QTextCursor.MoveOperation.End)
            if not self._live_plain:
                cursor.insertBlock()
            cursor.insertText(text[self._live_plain :])
            self._live_plain = len(text)
            if footer:  # a long reply stays plain text; its numbers and links go after it
                cursor.insertBlock()
                cursor.insertFragment(QTextDocumentFragment.fromMarkdown(footer.strip(), MARKDOWN))

    @Slot(int)
    def _scrolled(self, value: int) -> None:
        if self._redrawing or value != self.verticalScrollBar().minimum() or self.drawn >= self.total:
            return  # a redraw moves the bar too: only the user's scrolling to the top loads more
        QTimer.singleShot(0, self, self.show_earlier)  # not inside the scroll bar's own signal

    @Slot()
    def scroll_to_end(self) -> None:
        bar = self.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _keeping_the_end_in_view(self) -> _StickToEnd:
        return _StickToEnd(self)

    @Slot(QUrl)
    def _action(self, url: QUrl) -> None:
        action, message_id, number = [*url.path().split("/"), "", ""][:3]
        number = number or "0"
        if action == "earlier":
            self.show_earlier()
        elif action in ACTIONS and message_id.isdigit() and number.isdigit():
            self.action_requested.emit(action, int(message_id), int(number))


class _StickToEnd:
    """Keeps the view at the bottom across a redraw if it was there before (the user may scroll up), and
    marks the view as redrawing meanwhile."""

    def __init__(self, view: Transcript) -> None:
        self.view = view
        self.bar = view.verticalScrollBar()

    def __enter__(self) -> None:
        self.view._redrawing += 1
        self.at_end = self.bar.value() >= self.bar.maximum() - 4

    def __exit__(self, *exc: object) -> None:
        if self.at_end:
            self.bar.setValue(self.bar.maximum())
        self.view._redrawing -= 1
