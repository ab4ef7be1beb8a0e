"""Fixtures every test can use: an isolated home, real and tiny models, and the Hub stand-in."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

from tests import models
from tests.hubstub import HubStub
from tests.tinymodel import TinySpec, make_tiny_model

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_session_stub: HubStub | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Start the Hub stand-in before anything imports huggingface_hub, which reads HF_* at import."""
    global _session_stub
    _session_stub = HubStub().start()
    os.environ["HF_ENDPOINT"] = _session_stub.endpoint
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hubside-test-hf-home-")
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.pop("HF_TOKEN", None)
    os.environ.pop("HF_HUB_OFFLINE", None)
    # Keyring's own choice (and any child process's) is the backend that stores nothing: no test can
    # reach the OS keyring, even before the in-memory one is installed.
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _session_stub is not None:
        _session_stub.stop()


if TYPE_CHECKING:
    from pytestqt.qtbot import QtBot

    from app.ui.main_window import MainWindow


@pytest.fixture(autouse=True)
def hubside_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own HUBSIDE_HOME, so no test touches the real user's folders."""
    home = tmp_path / "hubside-home"
    monkeypatch.setenv("HUBSIDE_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def user_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own empty HOME: what the app finds from Path.home() (LM Studio's folders, the
    XDG defaults) is the test's, never the real user's."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))  # Path.home() on Windows
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    return home


class InMemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps passwords in a dict: tests never read or write the OS keyring."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if self.passwords.pop((service, username), None) is None:
            raise PasswordDeleteError(f"no password for {username} in {service}")


@pytest.fixture(autouse=True)
def memory_keyring() -> Iterator[InMemoryKeyring]:
    """Each test's own empty keyring, installed for the test and the previous one restored after."""
    previous = keyring.get_keyring()
    backend = InMemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def no_keyring(memory_keyring: InMemoryKeyring) -> None:
    """A system without a keyring service (keyring's fail backend), for this test only."""
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())  # memory_keyring puts the previous one back after the test


@pytest.fixture(autouse=True)
def restore_root_logging() -> Iterator[None]:
    """Code under test may call setup_logging(); undo it so no handler outlives its test's folder."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


@pytest.fixture
def hub() -> Iterator[HubStub]:
    """The Hub stand-in (HF_ENDPOINT points at it), empty: add repos and faults per test."""
    assert _session_stub is not None
    _session_stub.reset()
    yield _session_stub
    _session_stub.reset()


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """SmolLM2-135M-Instruct Q4_1 (98 MB, a real llama-arch chat model), sha256-verified."""
    return models.fetch(models.SMOLLM2)


@pytest.fixture(scope="session")
def gemma3_path() -> Path:
    """Gemma 3 270M Q4_K_M (253 MB, a real gemma3 base model), sha256-verified."""
    return models.fetch(models.GEMMA3)


TinyModelFactory = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_model_factory(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyModelFactory:
    """`tiny_model_factory(context_length=..., n_layers=..., chat_template=...)` -> a cached tiny GGUF."""
    folder = tmp_path_factory.mktemp("tiny-models")
    made: dict[TinySpec, Path] = {}

    def factory(**options: object) -> Path:
        spec = TinySpec(**options)  # type: ignore[arg-type]
        if spec not in made:
            made[spec] = make_tiny_model(folder / f"tiny-{len(made)}.gguf", smollm2_path, spec)
        return made[spec]

    return factory


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory: TinyModelFactory) -> Path:
    """The default tiny model: 2 layers, 512 context, SmolLM2's tokenizer and chat template."""
    return tiny_model_factory()


@pytest.fixture
def window(qtbot: QtBot) -> Iterator[MainWindow]:
    """The real main window with its services, on this test's own data dir; closed afterwards."""
    from app.paths import AppPaths
    from app.ui.application import build_window  # Qt is loaded by the window tests only

    main, services = build_window(AppPaths.from_env().ensure())
    qtbot.addWidget(main)
    main.show()
    yield main
    main.close()
    services.close()
