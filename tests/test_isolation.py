"""The autouse fixtures: every test runs with a temporary HOME and an in-memory keyring."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import keyring

from app.hub.token import hub_token, save_token
from app.library.scan import LM_STUDIO, default_roots


def test_home_is_the_tests_own_and_the_keyring_is_in_memory(tmp_path: Path) -> None:
    assert Path.home().is_relative_to(tmp_path) and Path("~").expanduser().is_relative_to(tmp_path)
    lm_studio = [root.path for root in default_roots(tmp_path / "models") if root.source == LM_STUDIO]
    assert lm_studio and all(path.is_relative_to(tmp_path) for path in lm_studio)
    assert type(keyring.get_keyring()).__name__ == "InMemoryKeyring"


def test_a_saved_token_stays_in_this_tests_keyring(memory_keyring: Any) -> None:
    save_token("hf_secret")
    assert memory_keyring.passwords == {("hubside", "huggingface-token"): "hf_secret"}
    assert hub_token() == "hf_secret"


def test_the_next_test_starts_with_an_empty_keyring(memory_keyring: Any) -> None:
    assert memory_keyring.passwords == {} and hub_token() is None


def test_a_child_process_gets_the_temporary_home_and_no_keyring(tmp_path: Path) -> None:
    code = (
        "import keyring, pathlib; print(pathlib.Path.home()); print(type(keyring.get_keyring()).__module__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    home, backend = out.split()
    assert Path(home).is_relative_to(tmp_path) and backend == "keyring.backends.fail"
    assert os.environ["HOME"] == home
