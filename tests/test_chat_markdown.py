"""Fenced code blocks are found the way CommonMark finds them, so each gets a working Copy button."""

from __future__ import annotations

from app.chat.markdown import code_blocks, with_code_links

TEXT = "Here:\n```python\nprint(1)\n```\nan inline ``` fence\n~~~\na\n```\nb\n~~~\nand\n````\nstill open"


def test_code_blocks_follow_commonmark_fences() -> None:
    # backtick and tilde fences, a shorter or other fence inside stays code, an unclosed one runs to the end
    assert code_blocks(TEXT) == ["print(1)", "a\n```\nb", "still open"]
    assert code_blocks("``` not a fence ```\nprose") == []  # an info string with a backtick: not a fence
    assert code_blocks("no code") == []


def test_a_link_follows_each_block_outside_the_code() -> None:
    linked = with_code_links(TEXT, lambda n: f"[Copy code](x:{n})")
    assert code_blocks(linked) == code_blocks(TEXT)  # the links are not inside any block
    assert linked.count("[Copy code](x:") == 3
    assert linked.endswith("still open\n````\n\n[Copy code](x:2)\n")  # the open block is closed first
