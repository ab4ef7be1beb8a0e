"""The Downloads page: the queue with progress, speed, connections in use and ETA (read from the manager 4
times a second), pause, resume and cancel per job or all."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import (
    QRect,
    Qt,
    QTimer,
    Signal,
    Slot,
)
from PySide6.QtGui import QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QStyle,
    QStyledItemDelegate,
    QStyleOptionProgressBar,
    QStyleOptionViewItem,
    QTableView,
    QVBoxLayout,
    QWidget,
)

from app.downloads.jobs import ACTIVE, DONE, FAILED, PAUSED, Job
from app.downloads.manager import DownloadManager
from app.ui.table_model import ModelIndex, RowsModel
from app.ui.widgets import named
from app.units import gb_of

REFRESH_MS = 250  # progress at 4 Hz
PROGRESS_COLUMN = 2


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def speed_text(bytes_per_s: float) -> str:
    """In the bandwidth limit's unit (MB/s of 10^6 bytes), so that a limit of 5 reads as 5.0 MB/s."""
    return f"{bytes_per_s / 1e6:.1f} MB/s"


def _state(job: Job) -> str:
    if job.elsewhere:
        return "running in another Hubside process"
    return f"{job.state}: {job.error}" if job.error else job.state


class JobsModel(RowsModel):
    COLUMNS = ("Model", "Variant", "Progress", "Speed", "Connections", "ETA", "State")
    rows: list[Job]

    def refresh(self, jobs: list[Job]) -> None:
        if [j.id for j in jobs] != [j.id for j in self.rows]:
            self.show(jobs)
        elif jobs != self.rows:
            self.rows = jobs
            self.dataChanged.emit(self.index(0, 0), self.index(len(jobs) - 1, len(self.COLUMNS) - 1))

    def cell(self, job: Job, column: int, role: int) -> Any:
        if role == Qt.ItemDataRole.UserRole:
            return job.done_bytes / job.total_bytes if job.total_bytes else 0.0
        if role == Qt.ItemDataRole.ToolTipRole:
            return job.error or "\n".join(f.path for f in job.files)
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        running = job.state in ACTIVE and job.speed > 0
        return (
            job.repo,
            job.label,
            gb_of(job.done_bytes, job.total_bytes),
            speed_text(job.speed) if running else "",
            str(job.connections) if job.state in ACTIVE and job.connections else "",
            _eta(job.eta_s) if running else "",
            _state(job),
        )[column]


class ProgressDelegate(QStyledItemDelegate):
    """A progress bar in the Progress column, labelled with the bytes."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: ModelIndex) -> None:
        bar = QStyleOptionProgressBar()
        bar.rect = QRect(option.rect.adjusted(2, 2, -2, -2))
        bar.minimum, bar.maximum = 0, 1000
        bar.progress = int(float(index.data(Qt.ItemDataRole.UserRole) or 0) * 1000)
        bar.text = str(index.data(Qt.ItemDataRole.DisplayRole) or "")
        bar.textVisible = True
        QApplication.style().drawControl(QStyle.ControlElement.CE_ProgressBar, bar, painter)


class DownloadsPage(QWidget):
    finished_one = Signal()  # a job finished: the library has a new model

    def __init__(self, manager: DownloadManager) -> None:
        super().__init__()
        self.manager = manager
        self.model = JobsModel()
        self.view = named(QTableView(), "downloadsTable")
        self.view.setAccessibleName("Downloads")
        self.view.setModel(self.model)
        self.view.setItemDelegateForColumn(PROGRESS_COLUMN, ProgressDelegate(self.view))
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.verticalHeader().hide()
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(PROGRESS_COLUMN, QHeaderView.ResizeMode.Fixed)
        header.resizeSection(PROGRESS_COLUMN, 260)
        buttons = QHBoxLayout()
        for label, name, action in (
            ("Pause", "pauseButton", self.manager.pause),
            ("Resume", "resumeButton", self.manager.resume),
            ("Cancel", "cancelButton", self.manager.cancel),
            ("Remove from list", "removeButton", self.manager.remove),
        ):
            button = named(QPushButton(label), name)
            button.clicked.connect(lambda _=False, act=action: self._on_selected(act))
            buttons.addWidget(button)
        buttons.addStretch(1)
        for label, name, every in (
            ("Pause all", "pauseAllButton", self.manager.pause_all),
            ("Cancel all", "cancelAllButton", self.manager.cancel_all),
        ):
            button = named(QPushButton(label), name)
            button.clicked.connect(every)
            buttons.addWidget(button)
        self.summary = named(QLabel(""), "downloadsSummary")
        layout = QVBoxLayout(self)
        layout.addLayout(buttons)
        layout.addWidget(self.view, 1)
        layout.addWidget(self.summary)
        self._done = {j.id for j in manager.jobs() if j.state == DONE}
        self.timer = QTimer(self, interval=REFRESH_MS)
        self.timer.timeout.connect(self.refresh)
        self.timer.start()
        self.refresh()

    def _on_selected(self, action: Any) -> None:
        rows = self.view.selectionModel().selectedRows()
        if rows:
            action(self.model.rows[rows[0].row()].id)
            self.refresh()

    @Slot()
    def refresh(self) -> None:
        jobs = self.manager.jobs()
        self.model.refresh(jobs)
        active = [j for j in jobs if j.state in ACTIVE]
        waiting = sum(1 for j in jobs if j.state in (PAUSED, FAILED))
        speed = sum(j.speed for j in active)
        connections = sum(j.connections for j in active)
        self.summary.setText(
            f"{len(active)} downloading ({speed_text(speed)}, {connections} connections), "
            f"{waiting} paused or failed"
            if jobs
            else "No downloads."
        )
        done = {j.id for j in jobs if j.state == DONE}
        if done - self._done:
            self.finished_one.emit()
        self._done = done
