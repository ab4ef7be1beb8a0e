"""paths, settings, errors and logging: the small core modules every feature relies on."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import AppError, ErrorKind, to_app_error
from app.logs import setup_logging
from app.paths import AppPaths
from app.settings import SCHEMA_VERSION, Settings, SettingsStore


def test_hubside_home_moves_every_directory(hubside_home: Path) -> None:
    paths = AppPaths.from_env().ensure()
    for directory in (
        paths.config_dir,
        paths.data_dir,
        paths.models_dir,
        paths.cache_dir,
        paths.logs_dir,
    ):
        assert directory.is_dir()
        assert directory.is_relative_to(hubside_home.resolve())
    assert paths.settings_file.parent == paths.config_dir
    assert paths.database_file.parent == paths.data_dir


def test_without_hubside_home_platform_dirs_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUBSIDE_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))
    paths = AppPaths.from_env()
    assert paths.data_dir == tmp_path / "xdg-data" / "Hubside"
    assert paths.config_dir == tmp_path / "xdg-config" / "Hubside"
    assert paths.cache_dir == tmp_path / "xdg-cache" / "Hubside"
    assert paths.models_dir == paths.data_dir / "models"


def _store() -> SettingsStore:
    return SettingsStore(AppPaths.from_env().ensure().settings_file)


def test_settings_default_when_missing_and_round_trip() -> None:
    store = _store()
    assert store.load() == Settings()
    changed = Settings(models_dir="/models", max_parallel_downloads=4, extra_model_dirs=["/a"])
    store.save(changed)
    assert store.load() == changed
    on_disk = json.loads(store.path.read_text())
    assert on_disk["schema_version"] == SCHEMA_VERSION
    names = sorted(p.name for p in store.path.parent.iterdir())
    assert names == ["settings.json", "settings.json.lock"]  # no temp file left


@settings(max_examples=50, deadline=None)
@given(
    models_dir=st.none() | st.text(max_size=40),
    parallel=st.integers(min_value=1, max_value=16),
    flash=st.booleans(),
    dirs=st.lists(st.text(max_size=20), max_size=4),
    gpu=st.none() | st.integers(min_value=0, max_value=200),
)
def test_settings_round_trip_any_values(
    models_dir: str | None, parallel: int, flash: bool, dirs: list[str], gpu: int | None
) -> None:
    store = _store()
    value = Settings(
        models_dir=models_dir,
        max_parallel_downloads=parallel,
        flash_attention=flash,
        extra_model_dirs=dirs,
        default_gpu_layers=gpu,
    )
    store.save(value)
    assert store.load() == value


def test_unreadable_settings_are_moved_aside_not_lost(caplog: pytest.LogCaptureFixture) -> None:
    store = _store()
    store.path.write_text("{ not json")
    assert store.load() == Settings()
    aside = list(store.path.parent.glob("settings.json.unreadable-*"))
    assert len(aside) == 1
    assert aside[0].read_text() == "{ not json"
    assert not store.path.exists()
    assert "unreadable" in caplog.text


def test_wrong_types_fall_back_to_defaults_field_by_field() -> None:
    store = _store()
    store.path.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "max_parallel_downloads": "three",
                "flash_attention": 1,
                "threads": 6,
                "extra_model_dirs": ["/ok", 5],
                "unknown_key": True,
            }
        )
    )
    loaded = store.load()
    assert loaded.max_parallel_downloads == Settings().max_parallel_downloads
    assert loaded.flash_attention is True  # 1 is not a bool: default kept
    assert loaded.extra_model_dirs == []
    assert loaded.threads == 6


def test_settings_from_a_newer_hubside_are_never_overwritten() -> None:
    store = _store()
    newer = {"schema_version": SCHEMA_VERSION + 1, "max_parallel_downloads": 5, "new": 1}
    store.path.write_text(json.dumps(newer))
    loaded = store.load()
    assert loaded.max_parallel_downloads == 5
    assert store.read_only
    store.save(Settings())
    assert json.loads(store.path.read_text()) == newer


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (errno.ENOSPC, ErrorKind.DISK_FULL),
        (errno.EFBIG, ErrorKind.DISK_FULL),
        (errno.EACCES, ErrorKind.PERMISSION),
        (errno.ENOENT, ErrorKind.NOT_FOUND),
    ],
)
def test_os_errors_map_to_user_messages(code: int, kind: ErrorKind) -> None:
    error = to_app_error(OSError(code, "boom", "/models/x.gguf.part"))
    assert error.kind is kind
    assert "/models/x.gguf.part" in error.user_message
    assert "boom" in error.detail


def test_app_errors_pass_through_and_unknown_errors_are_internal() -> None:
    original = AppError(ErrorKind.BAD_MODEL, "Not a GGUF file.", "bad magic")
    assert to_app_error(original) is original
    assert str(original) == "Not a GGUF file. (bad magic)"
    unknown = to_app_error(ZeroDivisionError("x"))
    assert unknown.kind is ErrorKind.INTERNAL
    assert "ZeroDivisionError" in unknown.detail


def test_logging_writes_a_rotating_file_under_the_logs_dir() -> None:
    paths = AppPaths.from_env().ensure()
    setup_logging(paths)
    setup_logging(paths)  # idempotent: one file handler, not two
    logging.getLogger("app.test").warning("hello from the test")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert paths.log_file.read_text().count("hello from the test") == 1
