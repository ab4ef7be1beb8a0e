"""Small helpers shared by the pages."""

from __future__ import annotations

from typing import TypeVar

from PySide6.QtWidgets import QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, object_name: str) -> W:
    """Set the objectName that tests (and style sheets) look a widget up by; returns the widget."""
    widget.setObjectName(object_name)
    return widget
