"""Comparison charts (QtCharts): a bar chart per metric and tokens over time, in the palette's colours."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, Qt
from PySide6.QtGui import QPainter, QPalette
from PySide6.QtWidgets import QGridLayout, QWidget

from app.compare.runner import Column

if TYPE_CHECKING:
    from PySide6.QtCharts import QChart, QChartView

BARS: tuple[tuple[str, Callable[[Column], float]], ...] = (
    ("Generation (tokens/s)", lambda c: c.tokens_per_s),
    ("Prompt (tokens/s)", lambda c: c.prompt_tokens_per_s),
    ("Time to first token (ms)", lambda c: c.ttft_ms),
    ("Peak memory (MB)", lambda c: c.peak_memory_bytes / 1024**2),
)


def _view(chart: QChart, dark: bool, legend: bool = False) -> QChartView:
    from PySide6.QtCharts import QChart, QChartView

    chart.setTheme(QChart.ChartTheme.ChartThemeDark if dark else QChart.ChartTheme.ChartThemeLight)
    chart.legend().setVisible(legend)
    chart.setAnimationOptions(QChart.AnimationOption.NoAnimation)
    view = QChartView(chart)
    view.setRenderHint(QPainter.RenderHint.Antialiasing)
    view.setMinimumHeight(180)
    return view


class ChartPanel(QWidget):
    """Bars for speed, time to first token and memory per model; a tokens-over-time line per model."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("compareCharts")
        self.grid = QGridLayout(self)
        self.views: dict[str, QChartView] = {}

    def show_columns(self, labels: list[str], columns: list[Column]) -> None:
        # QtCharts is loaded with the first comparison, not at start-up.
        from PySide6.QtCharts import QBarCategoryAxis, QBarSeries, QBarSet, QChart, QLineSeries, QValueAxis

        for view in self.views.values():  # off the grid now, deleted later
            self.grid.removeWidget(view)
            view.hide()
            view.deleteLater()
        self.views.clear()
        for place in range(3):
            self.grid.setColumnStretch(place, 1)
        dark = self.palette().color(QPalette.ColorRole.Window).lightness() < 128
        for number, (title, value) in enumerate(BARS):
            bars = QBarSet(title)
            for column in columns:
                bars.append(round(float(value(column)), 1))
            series = QBarSeries()
            series.append(bars)
            series.setLabelsVisible(True)
            chart = QChart()
            chart.setTitle(title)
            chart.addSeries(series)
            names = QBarCategoryAxis()
            names.append(labels)
            chart.addAxis(names, Qt.AlignmentFlag.AlignBottom)
            series.attachAxis(names)
            amounts = QValueAxis()
            amounts.setRange(0, max([float(value(c)) for c in columns] + [1.0]) * 1.15)
            amounts.setLabelFormat("%.0f")
            chart.addAxis(amounts, Qt.AlignmentFlag.AlignLeft)
            series.attachAxis(amounts)
            self._place(title, _view(chart, dark), number // 2, number % 2)
        chart = QChart()
        chart.setTitle("Tokens over time (ms)")
        time_axis, token_axis = QValueAxis(), QValueAxis()
        chart.addAxis(time_axis, Qt.AlignmentFlag.AlignBottom)
        chart.addAxis(token_axis, Qt.AlignmentFlag.AlignLeft)
        longest, most = 1.0, 1
        for label, column in zip(labels, columns, strict=True):
            line = QLineSeries()
            line.setName(label)
            line.append(0.0, 0.0)
            for ms, tokens in column.tokens_over_time:
                line.append(ms, float(tokens))
                longest, most = max(longest, ms), max(most, tokens)
            chart.addSeries(line)
            line.attachAxis(time_axis)
            line.attachAxis(token_axis)
        time_axis.setRange(0, longest)
        token_axis.setRange(0, most)
        time_axis.setLabelFormat("%.0f")
        token_axis.setLabelFormat("%.0f")
        self._place(chart.title(), _view(chart, dark, legend=True), 0, 2, rows=2)

    def _place(self, title: str, view: QChartView, row: int, column: int, rows: int = 1) -> None:
        self.views[title] = view
        self.grid.addWidget(view, row, column, rows, 1)

    def images(self) -> dict[str, bytes]:
        """Each chart as PNG bytes (for the HTML report)."""
        images = {}
        for title, view in self.views.items():
            data = QByteArray()
            buffer = QBuffer(data)
            buffer.open(QIODevice.OpenModeFlag.WriteOnly)
            view.grab().save(buffer, "PNG")
            images[title] = bytes(data.data())
        return images
