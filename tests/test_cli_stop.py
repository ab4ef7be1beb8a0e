"""`hubside run` as a chat: a stop during prompt processing (nothing said yet) adds no empty reply."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from app.paths import AppPaths
from app.runtime.engine import Engine
from app.runtime.protocol import ChatMessage, LoadParams, SamplingParams


class _Typing(io.StringIO):
    """What the user types; on the first line the engine is told to stop the reply it is about to get,
    so the stop lands before the prompt's first batch (what Ctrl-C during prompt processing does)."""

    def __init__(self, text: str, engine: Engine) -> None:
        super().__init__(text)
        self.engine = engine
        self.lines = 0

    def readline(self, size: int | None = -1) -> str:
        self.lines += 1
        if self.lines == 1:
            self.engine.stop(self.engine.new_request_id() + 1)  # the id the chat takes next
        return super().readline(size)


def test_a_stop_during_prompt_processing_adds_no_empty_reply(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli_runtime import _interactive

    with Engine(AppPaths.from_env().ensure()) as engine:
        model = engine.load(LoadParams(tiny_model, n_ctx=512, n_threads=1, flash_attn=False))
        monkeypatch.setattr("sys.stdin", _Typing("Stopped before a word\nAnswered\n", engine))
        history: list[ChatMessage] = []
        assert _interactive(engine, model, history, SamplingParams(temperature=0, seed=1), 8) == 0
    assert "stopped]" in capsys.readouterr().err  # the first reply was stopped, with nothing said
    assert [(m.role, m.content) for m in history][:1] == [("user", "Answered")], history  # stopped: gone
    assert [m.role for m in history] == ["user", "assistant"] and history[1].content
