"""Fixed column widths for the Discover tables."""

from __future__ import annotations

from PySide6.QtWidgets import QHeaderView, QTableView


def fit_columns(view: QTableView, widths: tuple[int, ...]) -> None:
    """Widths in average characters; a 0 column takes the rest. Fixed, so that 10,000 rows are never
    measured."""
    header = view.horizontalHeader()
    char = view.fontMetrics().averageCharWidth()
    for column, width in enumerate(widths):
        if width:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, width * char + 12)
        else:
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Stretch)
    view.verticalHeader().setDefaultSectionSize(view.fontMetrics().height() + 8)
