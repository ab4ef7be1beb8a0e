"""The one owner of every directory Hubside reads or writes.

Directories come from platformdirs; `HUBSIDE_HOME` moves all of them under one folder (tests and portable
installs use it). Nothing else in the app builds a user directory path by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "Hubside"
HOME_ENV = "HUBSIDE_HOME"


@dataclass(frozen=True)
class AppPaths:
    config_dir: Path
    data_dir: Path
    models_dir: Path
    cache_dir: Path
    logs_dir: Path

    @classmethod
    def from_env(cls) -> AppPaths:
        """Paths for this user, or all under `$HUBSIDE_HOME` when it is set."""
        home = os.environ.get(HOME_ENV)
        if home:
            return cls.under(Path(home).expanduser())
        data = Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))
        return cls(
            config_dir=Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)),
            data_dir=data,
            models_dir=data / "models",
            cache_dir=Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False)),
            logs_dir=Path(platformdirs.user_log_dir(APP_NAME, appauthor=False)),
        )

    @classmethod
    def under(cls, root: Path) -> AppPaths:
        root = root.resolve()
        return cls(
            config_dir=root / "config",
            data_dir=root / "data",
            models_dir=root / "models",
            cache_dir=root / "cache",
            logs_dir=root / "logs",
        )

    @property
    def settings_file(self) -> Path:
        return self.config_dir / "settings.json"

    @property
    def database_file(self) -> Path:
        return self.data_dir / "hubside.sqlite3"

    @property
    def downloads_file(self) -> Path:
        return self.data_dir / "downloads.sqlite3"

    @property
    def hub_cache_dir(self) -> Path:
        """Hub answers saved for offline use (search pages, repo details, cards, headers)."""
        return self.cache_dir / "hub"

    @property
    def library_cache_file(self) -> Path:
        """What the library scan read from each GGUF header, by path, size and mtime (rebuilt when lost)."""
        return self.cache_dir / "library.sqlite3"

    @property
    def compare_file(self) -> Path:
        return self.data_dir / "compare.sqlite3"

    @property
    def token_file(self) -> Path:
        """The Hub token, only where there is no keyring and the user agreed to a plain file."""
        return self.config_dir / "hub-token"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "hubside.log"

    def ensure(self) -> AppPaths:
        """Create every directory (idempotent) and return self."""
        for directory in (
            self.config_dir,
            self.data_dir,
            self.models_dir,
            self.cache_dir,
            self.logs_dir,
        ):
            directory.mkdir(parents=True, exist_ok=True)
        return self
