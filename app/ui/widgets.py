"""Small helpers shared by the pages."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from PySide6.QtWidgets import QComboBox, QWidget

W = TypeVar("W", bound=QWidget)


def named(widget: W, object_name: str) -> W:
    """Set the objectName that tests (and style sheets) look a widget up by; returns the widget."""
    widget.setObjectName(object_name)
    return widget


def add_new_items(combo: QComboBox, items: Iterable[tuple[str, str]]) -> None:
    """Add the (label, data) items whose data the combo box does not hold yet (one pass over it, not one
    search per item: a library of 2,000 models)."""
    known = {combo.itemData(index) for index in range(combo.count())}
    for label, data in items:
        if data not in known:
            combo.addItem(label, data)
            known.add(data)
