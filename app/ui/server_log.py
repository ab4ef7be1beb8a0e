"""The live log of the server's requests: a table read from the server's RequestLog by a timer about 4 times
a second (never a signal per request or per token), keeping the newest MAX_LOG_ROWS."""

from __future__ import annotations

from PySide6.QtCore import QTimer, Slot
from PySide6.QtWidgets import QHeaderView, QTableView

from app.ui.server_models import RequestFeed, RequestLogModel

LOG_INTERVAL_MS = 250


class RequestLogView(QTableView):
    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("serverLog")
        self.setAccessibleName("Requests")
        self.feed = RequestFeed()  # a server's RequestLog listener: called on the server's threads
        self.log_model = RequestLogModel()
        self.setModel(self.log_model)
        self.setWordWrap(False)
        self.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.verticalHeader().hide()
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 8)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)  # the model's name
        for column, widest in ((0, "00:00:00"), (1, "/v1/chat/completions")):  # known widths: no eliding
            header.setSectionResizeMode(column, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(column, self.fontMetrics().horizontalAdvance(widest) + 24)
        self.timer = QTimer(self)
        self.timer.setInterval(LOG_INTERVAL_MS)
        self.timer.timeout.connect(self.read)

    @Slot()
    def read(self) -> None:
        """Move what the server recorded since the last read into the table; follow the end if shown."""
        bar = self.verticalScrollBar()
        at_end = bar.value() == bar.maximum()
        self.log_model.append(self.feed.take())
        if at_end:
            self.scrollToBottom()
