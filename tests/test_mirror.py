"""The Hub mirror setting: the API and the files come from the mirror (HF_ENDPOINT still wins), and the token
goes to the mirror's own origin only, never to its CDN."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytestqt.qtbot import QtBot

from app.hub.client import DEFAULT_ENDPOINT, HubClient
from app.paths import AppPaths
from app.settings import mirror_endpoint
from tests.hubstub.server import HubStub

REPO = "someone/Tiny-GGUF"
NAME = "Tiny-Q4_0.gguf"


@pytest.fixture
def mirror(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    """A second stand-in, as the mirror; HF_ENDPOINT (the session's stand-in, "the Hub") unset."""
    monkeypatch.delenv("HF_ENDPOINT")
    with HubStub() as stub:
        yield stub


def test_the_mirror_serves_the_api_and_the_files_and_the_cdn_never_gets_the_token(
    hub: HubStub, mirror: HubStub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.cli import main

    data = random.Random(5).randbytes(3_000_000)
    mirror.add_repo(REPO, {NAME: data})
    hub.add_repo(REPO, {NAME: data})  # "the Hub" has it too, and must not be asked
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    paths = AppPaths.from_env().ensure()
    paths.settings_file.write_text(json.dumps({"schema_version": 1, "hub_mirror": mirror.endpoint}))

    assert main(["pull", f"{REPO}:Q4_0"]) == 0
    assert Path(capsys.readouterr().out.strip()).read_bytes() == data
    assert hub.log.all() == []
    served = mirror.log.all()
    assert any(r.server == "hub" and r.path.startswith(f"/api/models/{REPO}") for r in served)  # the API
    assert any(r.server == "hub" and r.path.endswith(NAME) for r in served)  # the file's resolve URL
    assert any(r.server == "cdn" for r in served)  # and its redirect to the mirror's CDN
    assert all(r.headers.get("authorization") == "Bearer hf_secret" for r in served if r.server == "hub")
    assert all("authorization" not in r.headers for r in served if r.server == "cdn")


def test_hf_endpoint_wins_over_the_mirror_and_without_either_the_hub_is_used(
    hub: HubStub, mirror: HubStub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert HubClient(tmp_path, mirror=mirror.endpoint).api.endpoint == mirror.endpoint
    assert HubClient(tmp_path).api.endpoint == DEFAULT_ENDPOINT == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    assert HubClient(tmp_path, mirror=mirror.endpoint).api.endpoint == hub.endpoint
    assert HubClient(tmp_path, endpoint="http://127.0.0.1:9").api.endpoint == "http://127.0.0.1:9"


def test_the_window_asks_the_mirror_from_the_settings(mirror: HubStub, qtbot: QtBot) -> None:
    from app.ui.application import build_window
    from app.ui.discover_page import DiscoverPage
    from app.ui.settings_dialog import SettingsDialog

    window, services = build_window(AppPaths.from_env().ensure())
    qtbot.addWidget(window)
    try:
        discover = window.findChild(DiscoverPage)
        assert discover is not None
        assert discover.client.api.endpoint == DEFAULT_ENDPOINT
        assert window.settings_dialog is not None
        dialog = window.settings_dialog()
        assert isinstance(dialog, SettingsDialog)
        dialog.mirror.setText(mirror.endpoint + "/")
        assert dialog.save()
        assert services.settings.hub_mirror == mirror.endpoint
        assert discover.client.api.endpoint == mirror.endpoint  # the next search asks it, no restart
        dialog.deleteLater()
    finally:
        window.close()
        services.close()


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("ftp://hf-mirror.example", "web address"),
        ("hf-mirror.example", "web address"),
        ("http://hf-mirror.example", "https"),
        ("http://10.0.0.1:8080", "https"),
        ("https://user@hf-mirror.example", "user name"),
    ],
)
def test_a_bad_mirror_is_refused_with_a_clear_message(given: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        mirror_endpoint(given)


def test_a_good_mirror_is_tidied() -> None:
    assert mirror_endpoint(" https://hf-mirror.example/ ") == "https://hf-mirror.example"
    assert mirror_endpoint("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert mirror_endpoint("http://localhost:8080/hub") == "http://localhost:8080/hub"
    assert mirror_endpoint("") == ""
