"""Live training curves (pyqtgraph): loss + eval loss, learning rate, grad norm, tokens/s, memory.

Fed with the worker's events (`log`, `eval`); the same panel shows a past run from events.jsonl.
"""

from __future__ import annotations

import math

import pyqtgraph as pg
from PySide6.QtWidgets import QFrame, QGridLayout, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from studio.ui import theme

# (plot key, title, [(series key, legend name)], value format)
PLOTS = [
    ("loss", "Loss", [("loss", "train"), ("eval_loss", "eval")], "{:.4f}"),
    ("lr", "Learning rate", [("lr", "lr")], "{:.2e}"),
    ("grad_norm", "Grad norm", [("grad_norm", "grad norm")], "{:.3f}"),
    ("tokens_per_s", "Tokens/s", [("tokens_per_s", "tokens/s"),
                                  ("trained_tokens_per_s", "trained tokens/s (answers)")], "{:,.0f}"),
    ("memory_mb", "Memory (MB)", [("memory_mb", "memory")], "{:,.0f}"),
]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class SciAxis(pg.AxisItem):
    """Tick labels in one style for a whole axis (1e-04, 9e-05, ...), never "0.0001" next to
    "9e-05" as the default mixes them for learning rates."""

    def tickStrings(self, values, scale, spacing):  # noqa: N802 - pyqtgraph's name
        return [f"{v * scale:.1e}" if v else "0" for v in values]


class _Chart(QFrame):
    def __init__(self, title: str, series: list[tuple[str, str]], fmt: str) -> None:
        super().__init__()
        self.setObjectName("Card")
        self.fmt = fmt
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 8)
        layout.setSpacing(4)
        head = QHBoxLayout()
        title_label = QLabel(title)
        self.title_label = title_label
        head.addWidget(title_label)
        head.addStretch(1)
        self.value_labels: dict[str, QLabel] = {}
        for key, name in series:
            value = QLabel("—")
            value.setToolTip(name)
            head.addWidget(value)
            self.value_labels[key] = value
        layout.addLayout(head)
        self.layout_ = layout
        self.series = series
        self._plot = None                    # built on first show (16 charts cost ~1.5 s at start-up)
        self._pending: dict[str, tuple[list, list]] = {}
        self._placeholder_text = "waiting for data…"
        self.setMinimumHeight(140)
        self._label_styles()

    def _label_styles(self) -> None:
        self.title_label.setStyleSheet(f"color: {theme.MUTED}; font-weight: 600; font-size: 9pt;")
        for key, value in self.value_labels.items():
            value.setStyleSheet(f"color: {theme.SERIES[key]}; font-weight: 700; font-size: 10.5pt;")

    def on_theme_changed(self, _palette: str = "") -> None:
        """The theme changed: labels, background, axes, legend and curves in the new colours."""
        self._label_styles()
        if self._plot is None:
            return
        theme.style_plot(self._plot)
        for key, curve in self._curves.items():
            color = theme.SERIES[key]
            curve.setPen(pg.mkPen(color, width=2))
            curve.setSymbolBrush(color)
            curve.setSymbolPen(pg.mkPen(theme.SURFACE, width=1.5))
        self._placeholder.setColor(theme.FAINT)

    # The plot is made when the chart is first shown or used: the window appears sooner, and a
    # page that is never opened never pays for its charts.
    @property
    def plot(self) -> pg.PlotWidget:
        if self._plot is None:
            self._build()
        return self._plot

    @property
    def curves(self) -> dict:
        return self.plot and self._curves

    @property
    def placeholder(self):
        return self.plot and self._placeholder

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self._plot is None:
            self._build()
        super().showEvent(event)

    def set_placeholder(self, text: str) -> None:
        self._placeholder_text = text
        if self._plot is not None:
            self._placeholder.setText(text)

    def _build(self) -> None:
        axes = {"left": SciAxis("left")} if self.fmt.endswith("e}") else {}
        self._plot = pg.PlotWidget(background=theme.SURFACE, axisItems=axes)
        self._plot.setMinimumHeight(100)
        item = self._plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.12)
        item.setMenuEnabled(False)
        item.hideButtons()
        for side in ("left", "bottom"):
            item.getAxis(side).setStyle(tickLength=-4)
        item.getAxis("left").setWidth(52)
        item.setClipToView(True)
        self._curves: dict[str, pg.PlotDataItem] = {}
        legend = None
        if len(self.series) > 1:
            legend = item.addLegend(offset=(-6, 6), labelTextColor=theme.MUTED, brush=pg.mkBrush(*theme.LEGEND_BG))
            legend.setParentItem(item.vb)
            legend.anchor((1, 0), (1, 0), offset=(-6, 6))
        for key, name in self.series:
            color = theme.SERIES[key]
            symbol = "o" if key == "eval_loss" else None
            self._curves[key] = self._plot.plot(
                [], [], name=name, pen=pg.mkPen(color, width=2),
                symbol=symbol, symbolSize=7, symbolBrush=color, symbolPen=pg.mkPen(theme.SURFACE, width=1.5))
        self._legend = legend
        self._had_data = True
        self._placeholder = pg.TextItem(self._placeholder_text, color=theme.FAINT, anchor=(0.5, 0.5))
        self._plot.addItem(self._placeholder, ignoreBounds=True)
        theme.style_plot(self._plot)
        self._placeholder.setPos(0.5, 0.5)
        self.layout_.addWidget(self._plot, 1)
        pending, self._pending = self._pending, {}
        for key in self._curves:
            xs, ys = pending.get(key, ([], []))
            self.set_data(key, xs, ys)

    def set_data(self, key: str, xs: list, ys: list) -> None:
        self.value_labels[key].setText(self.fmt.format(ys[-1]) if ys else "—")
        if self._plot is None:                # drawn when the chart is built
            self._pending[key] = (list(xs), list(ys))
            return
        curve = self._curves[key]
        if key != "eval_loss":              # a line needs two points: one point shows as a dot
            curve.setSymbol("o" if len(xs) == 1 else None)
            curve.setSymbolBrush(theme.SERIES[key])
        curve.setData(xs, ys)
        has_data = any(c.xData is not None and len(c.xData) for c in self._curves.values())
        self._placeholder.setVisible(not has_data)
        if has_data != self._had_data:          # no made-up 0..1 scale on an empty chart
            self._had_data = has_data
            item = self._plot.getPlotItem()
            for side in ("left", "bottom"):
                item.getAxis(side).setStyle(showValues=has_data)
            # an empty chart gives its whole area to the placeholder: a small chart at laptop
            # size is narrower than the text beside an empty 52 px axis and a legend (the
            # header's coloured marks still name the series)
            item.showAxis("left", has_data)
            if self._legend is not None:
                self._legend.setVisible(has_data)
            if has_data:
                item.enableAutoRange()
            else:
                item.setRange(xRange=(0, 1), yRange=(0, 1), padding=0)
                self._placeholder.setPos(0.5, 0.5)


class CurvesPanel(QWidget):
    """A grid of charts: Loss (wide) and Learning rate on top, three small charts below."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("Transparent")
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.setSpacing(12)
        self.charts: dict[str, _Chart] = {}
        self.series_chart: dict[str, _Chart] = {}
        for key, title, series, fmt in PLOTS:
            chart = _Chart(title, series, fmt)
            self.charts[key] = chart
            for series_key, _ in series:
                self.series_chart[series_key] = chart
        self.grid = grid
        self.columns = 0
        self._place(3)
        self.data: dict[str, tuple[list, list]] = {}
        self.clear()

    # Three columns (loss wide, then four small charts) where there is room; two on a narrow
    # window, so a laptop screen never has to scroll sideways to see a chart.
    LAYOUTS = {3: [("loss", 0, 0, 1, 2), ("lr", 0, 2, 1, 1), ("grad_norm", 1, 0, 1, 1),
                   ("tokens_per_s", 1, 1, 1, 1), ("memory_mb", 1, 2, 1, 1)],
               2: [("loss", 0, 0, 1, 2), ("lr", 1, 0, 1, 1), ("grad_norm", 1, 1, 1, 1),
                   ("tokens_per_s", 2, 0, 1, 1), ("memory_mb", 2, 1, 1, 1)]}

    def _chart_width(self) -> int:
        return max(c.minimumSizeHint().width() for c in self.charts.values())

    def _place(self, columns: int) -> None:
        if columns == self.columns:
            return
        self.columns = columns
        for chart in self.charts.values():
            self.grid.removeWidget(chart)
        for key, row, col, rows, cols in self.LAYOUTS[columns]:
            self.grid.addWidget(self.charts[key], row, col, rows, cols)
        for col in range(3):
            self.grid.setColumnStretch(col, 1 if col < columns else 0)
        for row, stretch in enumerate((3, 2, 2 if columns == 2 else 0)):
            self.grid.setRowStretch(row, stretch)
        self.updateGeometry()

    def minimumSizeHint(self):  # noqa: N802 - Qt's name
        hint = super().minimumSizeHint()
        hint.setWidth(2 * self._chart_width() + self.grid.spacing())
        return hint

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        three = 3 * self._chart_width() + 2 * self.grid.spacing()
        self._place(3 if event.size().width() >= three else 2)
        super().resizeEvent(event)

    def set_placeholder(self, text: str) -> None:
        """What an empty chart says (e.g. "waiting for the first step", "no run selected")."""
        for chart in self.charts.values():
            chart.set_placeholder(text)

    def clear(self) -> None:
        self.data = {key: ([], []) for key in self.series_chart}
        for key in self.series_chart:
            self.series_chart[key].set_data(key, [], [])

    def add_events(self, events: list[dict]) -> bool:
        """Take new points from `log`/`eval` events; redraw only the series that changed."""
        touched = set()
        for event in events:
            kind = event.get("event")
            step = event.get("step")
            if not _finite(step):
                continue
            if kind == "log":
                keys = ("loss", "lr", "grad_norm", "tokens_per_s", "trained_tokens_per_s",
                        "memory_mb")
            elif kind == "eval":
                keys = ("eval_loss",)
            else:
                continue
            for key in keys:
                value = event.get(key)
                if _finite(value):
                    xs, ys = self.data[key]
                    if xs and step <= xs[-1]:      # a resumed run repeats steps: keep the newest
                        while xs and xs[-1] >= step:
                            xs.pop()
                            ys.pop()
                    xs.append(step)
                    ys.append(float(value))
                    touched.add(key)
        for key in touched:
            xs, ys = self.data[key]
            self.series_chart[key].set_data(key, xs, ys)
        return bool(touched)

    def load_events(self, events: list[dict]) -> None:
        self.clear()
        self.add_events(events)

    def point_count(self, key: str) -> int:
        return len(self.data[key][0])
