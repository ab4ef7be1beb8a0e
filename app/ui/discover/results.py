"""The search results: a table that asks for the next page as it scrolls to the end, and a status line;
"Search further" when a search by architecture looked through its share of repos and found too few."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, Signal, Slot
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.hub.client import ModelDetails, ModelSummary
from app.hub.describe import results_status, short_count
from app.ui.discover.columns import fit_columns
from app.ui.table_model import ModelIndex, RowsModel
from app.ui.widgets import named

RESULT_WIDTHS = (0, 12, 11, 7, 11, 11, 13)


class ResultsModel(RowsModel):
    """Search results, fetched a page at a time as the view scrolls to the end (Qt's fetchMore)."""

    COLUMNS = ("Model", "Author", "Downloads", "Likes", "Updated", "Parameters", "Architecture")
    rows: list[ModelSummary]

    def __init__(self, request_more: Callable[[], None]) -> None:
        super().__init__()
        self.more_wanted = False  # the search has more pages
        self.at_cap = False  # the last fetch spent its share of requests: the next waits for the user
        self.loading = False
        self.request_more = request_more

    def reset(self, rows: list[ModelSummary], more: bool, at_cap: bool = False) -> None:
        self.more_wanted, self.loading, self.at_cap = more, False, more and at_cap
        self.show(rows)

    def append(self, rows: list[ModelSummary], more: bool, at_cap: bool = False) -> None:
        self.loading, self.more_wanted, self.at_cap = False, more, more and at_cap
        if rows:
            self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows) + len(rows) - 1)
            self.rows.extend(rows)
            self.endInsertRows()

    def learn(self, details: ModelDetails) -> None:
        """Fill in what the listing did not say (parameters, architecture) once a repo's details are in."""
        for number, row in enumerate(self.rows):
            if row.id == details.id:
                self.rows[number] = replace(
                    row, parameters=details.parameters, architecture=details.architecture
                )
                self.dataChanged.emit(self.index(number, 5), self.index(number, 6))

    def cell(self, row: ModelSummary, column: int, role: int) -> Any:
        if role == Qt.ItemDataRole.DisplayRole:
            return (
                row.id,
                row.author,
                f"{row.downloads:,}",
                f"{row.likes:,}",
                row.updated[:10],
                short_count(row.parameters),
                row.architecture or "",
            )[column]
        if role == Qt.ItemDataRole.UserRole:
            return row.id
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"{row.id} (gated: accept its license on the Hub)" if row.gated else row.id
        return None

    def canFetchMore(self, parent: ModelIndex) -> bool:
        # Not at the cap: the view asks whenever its last row shows, and a rare architecture would then
        # walk the whole Hub a few hundred requests at a time without the user asking.
        return not parent.isValid() and self.more_wanted and not self.loading and not self.at_cap

    def fetchMore(self, parent: ModelIndex) -> None:
        if self.canFetchMore(parent):
            self.loading = True
            self.request_more()

    def search_further(self) -> None:
        """The user asked: look through the next share of repos."""
        if self.at_cap and not self.loading:
            self.at_cap = False
            self.fetchMore(QModelIndex())


class ResultsList(QWidget):
    more_requested = Signal()  # the view reached the end and the search has more pages
    model_chosen = Signal(str)  # a repo id

    def __init__(self) -> None:
        super().__init__()
        self.results = ResultsModel(self.more_requested.emit)
        self.results_view = named(QTableView(), "discoverResults")
        self.results_view.setAccessibleName("Search results")
        self.results_view.setModel(self.results)
        self.results_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.results_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.results_view.verticalHeader().hide()
        self.results_view.setWordWrap(False)
        fit_columns(self.results_view, RESULT_WIDTHS)
        self.results_view.selectionModel().currentRowChanged.connect(self._row_chosen)
        self.status = named(QLabel(""), "discoverStatus")
        self.further = named(QPushButton("Search further"), "searchFurther")
        self.further.setAccessibleName("Search further")
        self.further.clicked.connect(self._search_further)
        self.further.hide()
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.further)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.results_view, 1)
        layout.addLayout(status_row)

    def show_count(self) -> None:
        shown = len(self.results.rows)
        self.status.setText(results_status(shown, self.results.more_wanted, self.results.at_cap))
        self.further.setVisible(self.results.at_cap)

    @Slot()
    def _search_further(self) -> None:
        self.further.hide()
        self.results.search_further()

    @Slot(QModelIndex, QModelIndex)
    def _row_chosen(self, current: QModelIndex, previous: QModelIndex) -> None:
        repo = current.data(Qt.ItemDataRole.UserRole)
        if repo:
            self.model_chosen.emit(str(repo))
