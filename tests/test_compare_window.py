"""The Compare page in the real window with the real SmolLM2 and Gemma models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.compare.store import file_sha256
from app.ui.compare_page import ComparePage
from app.ui.main_window import MainWindow
from tests.conftest import TinyModelFactory

pytestmark = pytest.mark.real_model
WAIT_MS = 120_000


def _page(window: MainWindow, *models: Path) -> ComparePage:
    page = window.pages["compare"]
    assert isinstance(page, ComparePage)
    window.navigation.setCurrentRow(list(window.pages).index("compare"))
    for picker, model in zip(page.pickers, models, strict=False):
        picker.addItem(model.name, str(model))
        picker.setCurrentIndex(picker.count() - 1)
    page.max_tokens.setValue(24)
    page.system.setText("You are a helpful assistant.")
    page.prompt.setPlainText("What is the capital of France?")
    return page


def _run(qtbot: QtBot, page: ComparePage) -> None:
    page.run()
    assert page.worker is not None
    qtbot.waitUntil(lambda: page.worker is None, timeout=WAIT_MS)


def test_a_fair_comparison_with_charts_saved_exported_and_opened_as_chat(
    qtbot: QtBot, window: MainWindow, smollm2_path: Path, gemma3_path: Path, tmp_path: Path
) -> None:
    page = _page(window, smollm2_path, gemma3_path)
    _run(qtbot, page)
    first, second = page.column_views[:2]
    assert first.isVisible() and second.isVisible() and not page.column_views[2].isVisible()
    assert "Paris" in first.text.toPlainText() and second.text.toPlainText().strip()
    assert "tok/s" in first.numbers.text() and "first token" in second.numbers.text()
    assert page.charts.isVisible() and len(page.charts.views) == 5
    assert page.message.text() == "Done."
    assert page.run_id is not None and page.runs.count() == 1

    report = tmp_path / "run.html"
    page.export(report, "html")
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 5
    assert "Paris" in html and page.comparison is not None
    assert page.comparison.columns[1].text.strip()[:20].replace("<", "&lt;") in html

    page.prompt.setPlainText("And of Germany?")  # a follow-up: each column keeps its own conversation
    _run(qtbot, page)
    assert "Berlin" in first.text.toPlainText()
    first.chat_button.click()
    assert window.stack.currentWidget() is window.chat
    shown = [m.content for m in window.chat.store.messages(window.chat.conversation_id)]  # type: ignore[arg-type]
    assert shown[0] == "What is the capital of France?" and "Berlin" in shown[-1] and len(shown) == 4

    page.reopen(page.runs.itemData(0))  # a saved run comes back with its numbers and charts
    assert "Berlin" in page.column_views[0].text.toPlainText() and not page.charts.isHidden()


def test_blind_mode_hides_the_names_until_the_vote(
    qtbot: QtBot, window: MainWindow, smollm2_path: Path, gemma3_path: Path
) -> None:
    page = _page(window, smollm2_path, gemma3_path)
    page.blind.setChecked(True)
    _run(qtbot, page)
    titles = [view.title.text() for view in page.column_views[:2]]
    assert titles == ["A", "B"] and page.vote_bar.isVisible()
    shown = " ".join(v.title.text() + v.numbers.text() for v in page.column_views[:2])
    assert "Smollm2" not in shown and "Gemma" not in shown
    page.vote_buttons["a"].click()
    assert not page.vote_bar.isVisible()
    revealed = [view.title.text() for view in page.column_views[:2]]
    assert revealed[0].startswith("A: ") and revealed[1].startswith("B: ")
    assert page.board.rowCount() == 2
    assert page.comparison is not None
    file_a = page.comparison.columns[page.order[0]].params.model_path.name
    assert page.board.item(0, 0).text() == f"{revealed[0].removeprefix('A: ')} ({file_a})"  # name and file
    assert page.board.item(0, 1).text() == "1016"
    assert page.board.item(1, 1).text() == "984" and page.board.item(0, 3).text() == "1"


def test_two_files_of_one_model_are_two_leaderboard_entries(
    qtbot: QtBot, window: MainWindow, tiny_model_factory: TinyModelFactory
) -> None:
    """Two files with the same general.name (two quants of one model): the vote was once keyed by the name,
    so both were one entry that voted against itself."""
    first, second = tiny_model_factory(), tiny_model_factory(seed=1)
    page = _page(window, first, second)
    page.max_tokens.setValue(4)
    page.blind.setChecked(True)
    _run(qtbot, page)
    page.vote_buttons["a"].click()
    assert page.board.rowCount() == 2
    rows = [(page.board.item(r, 0).text(), page.board.item(r, 0).toolTip()) for r in range(2)]  # type: ignore[union-attr]
    winner = page.comparison.columns[page.order[0]].params.model_path  # type: ignore[union-attr]
    loser = page.comparison.columns[page.order[1]].params.model_path  # type: ignore[union-attr]
    assert rows == [
        (f"tiny-llama ({winner.name})", file_sha256(winner)),
        (f"tiny-llama ({loser.name})", file_sha256(loser)),
    ]
    assert page.store.db.execute("SELECT count(*) FROM file_hashes").fetchone()[0] == 2  # kept for next time
