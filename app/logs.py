"""Logging set-up: a rotating file under the logs dir plus stderr."""

from __future__ import annotations

import logging
import logging.handlers
import sys

from app.paths import AppPaths

_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
_MAX_BYTES = 2 * 1024 * 1024
_BACKUPS = 5


def setup_logging(paths: AppPaths, level: int = logging.INFO, to_stderr: bool = True) -> None:
    """Route the root logger to `paths.log_file` (rotated) and, for warnings, stderr. Calling it again
    replaces both. Headless commands print their own one-line messages and pass `to_stderr=False`."""
    paths.logs_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if (h.get_name() or "").startswith("hubside-")]:
        root.removeHandler(handler)
        handler.close()
    file_handler = logging.handlers.RotatingFileHandler(
        paths.log_file, maxBytes=_MAX_BYTES, backupCount=_BACKUPS, encoding="utf-8"
    )
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setLevel(logging.WARNING if to_stderr else logging.CRITICAL + 1)
    for name, handler in (("hubside-file", file_handler), ("hubside-stderr", stderr_handler)):
        handler.set_name(name)
        handler.setFormatter(logging.Formatter(_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
