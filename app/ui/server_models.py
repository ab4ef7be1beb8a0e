"""The Server page's item models: the ids of the models it offers, and the live log of its requests."""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt

from app.ui.table_model import ModelIndex, RowsModel

if TYPE_CHECKING:  # the server's modules (Starlette, uvicorn) load when it first starts
    from app.server.app import RequestRecord

MAX_LOG_ROWS = 500  # the newest requests shown; older rows drop off the top


class ModelIdsModel(QAbstractListModel):
    """The catalog's model names, as GET /v1/models lists them."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []

    def show(self, ids: list[str]) -> None:
        if ids != self.ids:  # the library rarely changes: keep the view's selection and scroll
            self.beginResetModel()
            self.ids = list(ids)
            self.endResetModel()

    def rowCount(self, parent: ModelIndex = QModelIndex()) -> int:  # noqa: B008 - Qt's default argument
        return 0 if parent.isValid() else len(self.ids)

    def data(self, index: ModelIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self.ids):
            return None
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self.ids[index.row()]
        return None


class RequestFeed:
    """What the server's RequestLog reports, from its threads, kept until the page's timer takes it (a
    deque's append and popleft are safe across threads): no signal per request or per token."""

    def __init__(self) -> None:
        self._pending: deque[tuple[float, RequestRecord]] = deque(maxlen=MAX_LOG_ROWS)

    def __call__(self, record: RequestRecord) -> None:
        self._pending.append((time.time(), record))

    def take(self) -> list[tuple[float, RequestRecord]]:
        taken = []
        while self._pending:
            taken.append(self._pending.popleft())
        return taken


class RequestLogModel(RowsModel):
    """Rows of (time answered, record), oldest first, at most MAX_LOG_ROWS."""

    COLUMNS = ("Time", "Endpoint", "Model", "Status", "Tokens/s", "First token")

    def append(self, rows: list[tuple[float, RequestRecord]]) -> None:
        rows = rows[-MAX_LOG_ROWS:]
        if not rows:
            return
        overflow = len(self.rows) + len(rows) - MAX_LOG_ROWS
        if overflow > 0:
            self.beginRemoveRows(QModelIndex(), 0, overflow - 1)
            del self.rows[:overflow]
            self.endRemoveRows()
        first = len(self.rows)
        self.beginInsertRows(QModelIndex(), first, first + len(rows) - 1)
        self.rows.extend(rows)
        self.endInsertRows()

    def cell(self, row: tuple[float, RequestRecord], column: int, role: int) -> Any:
        answered, record = row
        if role == Qt.ItemDataRole.TextAlignmentRole and column >= 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role not in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return None
        completion = record.completion_tokens > 0
        return (
            time.strftime("%H:%M:%S", time.localtime(answered)),
            record.endpoint,
            record.model,
            str(record.status),
            f"{record.tokens_per_s:.1f}" if completion else "",
            f"{record.ttft_ms:.0f} ms" if completion else "",
        )[column]
