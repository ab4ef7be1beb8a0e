"""The Discover page in the real window against the Hub stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from PySide6.QtCore import QObject, Qt, QUrl
from pytestqt.qtbot import QtBot

from app.ui.discover_page import DiscoverPage
from app.ui.main_window import MainWindow
from tests.hubstub.faults import Fault
from tests.hubstub.server import HubStub
from tests.untrusted import canary_server, catching_links

WAIT_MS = 30_000
SMOL = "bartowski/SmolLM2-135M-Instruct-GGUF"


@pytest.fixture
def discover(window: MainWindow) -> DiscoverPage:
    page = window.pages["discover"]
    assert isinstance(page, DiscoverPage)
    window.navigation.setCurrentRow(list(window.pages).index("discover"))
    return page


def _idle(qtbot: QtBot, page: DiscoverPage) -> None:
    qtbot.waitUntil(lambda: not page.results.loading, timeout=WAIT_MS)


def _search(qtbot: QtBot, page: DiscoverPage, text: str) -> None:
    page.search_box.setText(text)
    page.search()
    _idle(qtbot, page)


def test_search_results_and_lazy_paging_of_10000_repos(
    qtbot: QtBot, hub: HubStub, discover: DiscoverPage
) -> None:
    for n in range(10_000):
        hub.add_repo(f"maker/model-{n:05d}-GGUF", {f"m-{n}-Q4_K_M.gguf": 10}, downloads=n)
    discover.sort.setCurrentIndex(discover.sort.findData("downloads"))
    _search(qtbot, discover, "")
    view = discover.results_view
    assert discover.results.rowCount() == 100
    assert discover.results.index(0, 0).data() == "maker/model-09999-GGUF"
    while discover.results.more_wanted:  # scrolling to the end asks for the next page, 100 at a time
        view.scrollToBottom()
        qtbot.waitUntil(lambda: not discover.results.loading, timeout=WAIT_MS)
    ids = [discover.results.index(row, 0).data() for row in range(discover.results.rowCount())]
    assert len(ids) == len(set(ids)) == 10_000
    assert discover.status.text() == "10000 models"


def test_filters_and_debounced_search(qtbot: QtBot, hub: HubStub, discover: DiscoverPage) -> None:
    # As on the real Hub: no architecture tags (model info's gguf has it), no lastModified or gated unexpanded
    hub.add_repo(
        "a/llama-small-GGUF",
        {"m-Q4_0.gguf": 10},
        gguf={"total": 10**9, "architecture": "llama"},
        lastModified="2026-11-20T08:00:00.000Z",
    )
    hub.add_repo("b/qwen-big-GGUF", {"m-Q4_0.gguf": 10}, gguf={"total": 7 * 10**10, "architecture": "qwen2"})
    hub.add_repo("c/gated-GGUF", {"m-Q4_0.gguf": 10}, gated="manual", gguf={"total": 10**9})
    _search(qtbot, discover, "")
    assert discover.results.rowCount() == 3
    shown = {
        discover.results.index(r, 0).data(): discover.results.index(r, 4).data()
        for r in range(discover.results.rowCount())
    }
    assert shown["a/llama-small-GGUF"] == "2026-11-20"  # the Updated column
    tooltips = [discover.results.index(r, 0).data(Qt.ItemDataRole.ToolTipRole) for r in range(3)]
    assert "c/gated-GGUF (gated: accept its license on the Hub)" in tooltips
    qtbot.keyClicks(discover.search_box, "qwen")  # typed: one search after the typing stops
    qtbot.waitUntil(lambda: discover.results.rowCount() == 1, timeout=WAIT_MS)
    searches = [r for r in hub.log.matching("/api/models") if r.query.get("search")]
    assert [r.query["search"] for r in searches] == [["qwen"]]
    discover.search_box.clear()
    discover.architecture.setCurrentText("llama")
    discover.search()
    _idle(qtbot, discover)
    assert [discover.results.index(r, 0).data() for r in range(discover.results.rowCount())] == [
        "a/llama-small-GGUF"
    ]
    discover.architecture.setCurrentText("any")
    discover.gated.setCurrentIndex(discover.gated.findData(True))
    _idle(qtbot, discover)
    assert discover.results.index(0, 0).data() == "c/gated-GGUF" and discover.results.rowCount() == 1
    discover.gated.setCurrentIndex(0)
    discover.max_params.setCurrentIndex(discover.max_params.findText("8B"))
    _idle(qtbot, discover)
    assert discover.results.rowCount() == 2  # the 70B one is out
    discover.max_params.setCurrentIndex(0)
    discover.fits_only.setChecked(True)  # a 70B model does not fit this machine (24 GB)
    _idle(qtbot, discover)
    assert "b/qwen-big-GGUF" not in [
        discover.results.index(r, 0).data() for r in range(discover.results.rowCount())
    ]


def test_the_newest_search_wins(qtbot: QtBot, hub: HubStub, discover: DiscoverPage) -> None:
    hub.add_repo("slow/answer-GGUF", {"m-Q4_0.gguf": 10})
    hub.add_repo("fast/answer-GGUF", {"m-Q4_0.gguf": 10})
    hub.add_fault(Fault(path="/api/models", delay_seconds=1.5, times=1))  # the first search is slow
    discover.search_box.setText("slow")
    discover.search()
    replaced = discover.pages
    discover.search_box.setText("fast")
    discover.search()
    assert replaced is not None and replaced.cancelled  # it asks the Hub nothing more
    qtbot.waitUntil(lambda: discover.results.rowCount() == 1, timeout=WAIT_MS)
    qtbot.wait(2000)  # the slow answer arrives, and is dropped
    assert discover.results.index(0, 0).data() == "fast/answer-GGUF"


def test_a_model_page_with_variants_fit_and_card(
    qtbot: QtBot, hub: HubStub, discover: DiscoverPage, smollm2_path: Path
) -> None:
    hub.add_repo(
        SMOL,
        {
            "SmolLM2-135M-Instruct-Q4_1.gguf": smollm2_path,
            "big/SmolLM2-135M-Instruct-F16-00001-of-00002.gguf": 200_000_000,
            "big/SmolLM2-135M-Instruct-F16-00002-of-00002.gguf": 70_000_000,
            "README.md": b"# SmolLM2\n\nA **small** model.\n",
        },
        cardData={"license": "apache-2.0"},
    )
    _search(qtbot, discover, "smol")
    discover.results_view.selectRow(0)
    qtbot.waitUntil(lambda: "apache-2.0" in discover.facts.text(), timeout=WAIT_MS)
    assert "llama" in discover.facts.text() and "0.13 B parameters" in discover.facts.text()
    qtbot.waitUntil(lambda: discover.header is not None, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: "small" in discover.card.toPlainText(), timeout=WAIT_MS)
    variants = discover.variants
    labels = [variants.index(r, 0).data() for r in range(variants.rowCount())]
    assert labels == ["Q4_1 ★ recommended", "F16"]  # shards are one variant; F16 is not recommended
    assert variants.index(1, 1).data() == "0.3 GB"
    assert "context cache (from the model's layers and heads)" in discover.estimate_note.text()
    needs_8k = variants.index(0, 4).data()
    discover.context.setValue(discover.context.maximum())  # 8192: SmolLM2's own context is the top
    discover.context.setValue(0)  # 512 tokens
    assert variants.index(0, 4).data() != needs_8k and discover.context_label.text() == "512 tokens"
    assert "im_start" in discover.template.toPlainText()


def test_a_card_cannot_reach_out_or_run_anything(qtbot: QtBot, hub: HubStub, discover: DiscoverPage) -> None:
    with canary_server() as canary, catching_links() as catcher:
        image = canary.image
        card = (
            f'<script>alert(1)</script> <iframe src="{image}"></iframe> <img src="{image}" onerror="x()">\n\n'
            f"![remote]({image})\n\n[site](https://example.org/docs) [js](javascript:alert(1)) [f](file:///etc/x)\n"
            + "filler "
            * 700_000  # about 5 MB
        )
        hub.add_repo("evil/card-GGUF", {"m-Q4_0.gguf": 10, "README.md": card.encode()})
        discover.open_model("evil/card-GGUF")
        qtbot.waitUntil(lambda: "alert(1)" in discover.card.toPlainText(), timeout=WAIT_MS)
        qtbot.wait(300)
        assert canary.requests_seen == []  # no image fetched
        html = discover.card.toHtml().lower()
        assert "<script" not in html and "<iframe" not in html
        for target in ("javascript:alert(1)", "file:///etc/x"):
            discover.card.anchorClicked.emit(QUrl(target))
        assert discover.link_bar.isHidden() and catcher.opened == []
        discover.card.anchorClicked.emit(QUrl("https://example.org/docs"))
        assert discover.link_text.text() == "Open https://example.org/docs in your browser?"
        assert catcher.opened == []  # not before Open
        qtbot.mouseClick(discover.findChild(QObject, "openLink"), Qt.MouseButton.LeftButton)  # type: ignore[arg-type]
        assert catcher.opened == ["https://example.org/docs"]


def test_hub_errors_and_offline_are_a_banner(qtbot: QtBot, hub: HubStub, discover: DiscoverPage) -> None:
    hub.add_repo("a/one-GGUF", {"m-Q4_0.gguf": 10})
    _search(qtbot, discover, "one")
    assert discover.results.rowCount() == 1 and discover.banner.isHidden()
    hub.add_fault(Fault(path="/api/models", status=500, times=None))
    _search(qtbot, discover, "two")
    assert discover.banner.isVisible() and "HTTP 500" in discover.banner_text.text()
    hub.reset()
    hub.add_fault(
        Fault(path="/api/models", body=b"<html>maintenance</html>", content_type="text/html", times=None)
    )
    _search(qtbot, discover, "three")
    assert "could not read" in discover.banner_text.text()

    discover.client = type(discover.client)(
        discover.client.cache.root, endpoint="http://127.0.0.1:9"
    )  # offline
    _search(qtbot, discover, "one")
    assert "offline" in discover.banner_text.text() and discover.results.index(0, 0).data() == "a/one-GGUF"
    discover.open_model("a/one-GGUF")  # never opened before: nothing saved to show
    qtbot.waitUntil(lambda: "Can't reach the Hub" in discover.facts.text(), timeout=WAIT_MS)


def test_a_gated_repo_says_what_to_do(qtbot: QtBot, hub: HubStub, discover: DiscoverPage) -> None:
    hub.add_repo("meta/gated-GGUF", {"README.md": b"card", "m-Q4_0.gguf": 10}, gated="manual")
    discover.open_model("meta/gated-GGUF")
    qtbot.waitUntil(lambda: "could not be loaded" in discover.card.toPlainText(), timeout=WAIT_MS)
    assert "accept the license on the Hub, then add your token" in discover.facts.text()
    assert "accept its license on the Hub" in discover.card.toPlainText()


def test_the_window_has_a_discover_page(window: MainWindow) -> None:
    pages = [window.navigation.item(i).text() for i in range(window.navigation.count())]
    assert pages == ["Chat", "Discover", "Models", "Downloads", "Compare", "Server"]


def test_a_rare_architecture_is_looked_for_a_share_at_a_time(
    qtbot: QtBot, hub: HubStub, discover: DiscoverPage
) -> None:
    """Each fetch looks through at most 3 listing pages; one that found too few waits for "Search further"
    (the view would otherwise ask again at once, its last row being in sight, and walk the whole Hub)."""
    from PySide6.QtWidgets import QPushButton

    _idle(qtbot, discover)
    hub.page_size = 10
    for n in range(100):
        hub.add_repo(
            f"r/m{n:03d}-GGUF", {"m-Q4_0.gguf": 10}, gguf={"architecture": "rare" if n == 95 else "llama"}
        )
    further = discover.findChild(QPushButton, "searchFurther")
    assert isinstance(further, QPushButton)
    hub.log.clear()
    discover.architecture.setCurrentText("rare")
    discover.search()
    _idle(qtbot, discover)

    def listings() -> int:
        return len([r for r in hub.log.all() if r.path == "/api/models"])

    qtbot.wait(300)
    assert discover.results.rowCount() == 0 and further.isVisible() and listings() == 3
    assert discover.status.text() == "0 models so far; more repos to look through."
    for asked in (6, 9):
        qtbot.mouseClick(further, Qt.MouseButton.LeftButton)
        _idle(qtbot, discover)
        qtbot.wait(100)
        assert listings() == asked and further.isVisible()
    qtbot.mouseClick(further, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: discover.results.rowCount() == 1, timeout=WAIT_MS)
    assert discover.results.index(0, 0).data() == "r/m095-GGUF" and listings() == 10
    assert further.isHidden() and not discover.results.more_wanted and discover.status.text() == "1 model"
