"""Syntax colours for fenced code blocks in the transcript, from Pygments, one line at a time.

Qt's Markdown reader marks each line of a fenced block with its language; this highlighter colours those
lines (and nothing else) with the Pygments lexer for that language, in a style that suits the palette.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from PySide6.QtGui import QColor, QSyntaxHighlighter, QTextCharFormat, QTextDocument, QTextFormat

if TYPE_CHECKING:
    from pygments.lexer import Lexer


@cache
def _lexer(language: str) -> Lexer:
    # Pygments is loaded with the first code block, not at start-up.
    from pygments.lexers import TextLexer, get_lexer_by_name
    from pygments.util import ClassNotFound

    try:
        return get_lexer_by_name(language, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return TextLexer(stripnl=False, ensurenl=False)


@cache
def _formats(style_name: str) -> dict[Any, QTextCharFormat]:
    from pygments.styles import get_style_by_name

    formats = {}
    for token, style in get_style_by_name(style_name):
        fmt = QTextCharFormat()
        if style["color"]:
            fmt.setForeground(QColor(f"#{style['color']}"))
        if style["bold"]:
            fmt.setFontWeight(700)
        if style["italic"]:
            fmt.setFontItalic(True)
        formats[token] = fmt
    return formats


class CodeHighlighter(QSyntaxHighlighter):
    def __init__(self, document: QTextDocument, dark: bool) -> None:
        self.style_name = "monokai" if dark else "friendly"
        self.paused_from: int | None = None  # a streaming reply starts here: its code waits until it ends
        self.lines = 0  # code lines coloured so far
        super().__init__(document)

    def highlightBlock(self, text: str) -> None:
        block = self.currentBlock()
        block_format = block.blockFormat()
        if not block_format.hasProperty(QTextFormat.Property.BlockCodeFence):
            return
        if self.paused_from is not None and block.position() >= self.paused_from:
            return  # redrawn ten times a second while it streams: coloured once, when it is finished
        self.lines += 1
        language = block_format.stringProperty(QTextFormat.Property.BlockCodeLanguage) or "text"
        formats = _formats(self.style_name)
        position = 0
        for token, value in _lexer(language.lower()).get_tokens(text):
            while token not in formats and token.parent is not None:
                token = token.parent
            if token in formats and value:
                self.setFormat(position, len(value), formats[token])
            position += len(value)
