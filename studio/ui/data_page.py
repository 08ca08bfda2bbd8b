"""Data page: pick a dataset, its format, the eval split and max length; preview examples through the
chat template (trained tokens highlighted) and see token-length statistics with a histogram."""

from __future__ import annotations

import html
import threading
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox, QDoubleSpinBox, QHBoxLayout, QSpinBox, QTextBrowser, QWidget,
)

from studio import paths
from studio.ui import tasks, theme
from studio.ui.widgets import (
    Card, InlineMessage, Page, PathPicker, ResponsiveRow, Segmented, StatGrid, add_row, badge, button, form_layout, label,
)

FORMATS = ["auto", "alpaca", "chat", "sharegpt", "text"]
PREVIEW_COUNT = 24
PREVIEW_PAGE = 4
HISTOGRAM_SAMPLE = 2000
DATA_FILTER = "Datasets (*.jsonl *.json *.csv);;All files (*)"

_tokenizers: dict[str, object] = {}
_tokenizer_lock = threading.Lock()


def cached_tokenizer(model_path: str):
    """The model folder's tokenizer, loaded once per folder (worker thread)."""
    with _tokenizer_lock:
        if model_path not in _tokenizers:
            from studio.core.models import load_tokenizer

            _tokenizers[model_path] = load_tokenizer(model_path)
        return _tokenizers[model_path]


def analyse(data_path: str, fmt: str, model_path: str | None, max_length: int) -> dict:
    """Worker thread: read the file, render previews, compute length statistics."""
    from studio.core import data as core_data

    examples = core_data.load_examples(data_path, fmt)
    detected = core_data.detect_file_format(data_path) if fmt == "auto" else fmt
    result: dict = {"count": len(examples), "previews": [], "stats": None, "lengths": [],
                    "format": detected,
                    "warnings": core_data.answer_warnings(examples, data_path)}
    if not model_path:
        return result
    tokenizer = cached_tokenizer(model_path)
    result["previews"] = [core_data.render_preview(ex, tokenizer) for ex in examples[:PREVIEW_COUNT]]
    result["stats"] = core_data.length_stats(examples, tokenizer, max_length)
    sample = examples[:HISTOGRAM_SAMPLE]
    cap = core_data.stats_cap(max_length)
    result["lengths"] = [len(core_data.tokenize_example(ex, tokenizer, cap)["input_ids"]) for ex in sample]
    return result


def preview_html(pieces: list[tuple[str, bool]]) -> str:
    """Trained text on a coloured background, untrained (prompt, template tags) dim."""
    spans = []
    for text, trained in pieces:
        escaped = html.escape(text)
        if trained:
            spans.append(f'<span style="background-color:{theme.TRAINED_BG}; color:{theme.TRAINED_TEXT};">{escaped}</span>')
        else:
            spans.append(f'<span style="color:{theme.FAINT};">{escaped}</span>')
    return (f'<pre style="white-space: pre-wrap; font-family: \'{theme.mono_font_family()}\'; '
            f'font-size: 9.5pt; margin: 0;">{"".join(spans)}</pre>')


def previews_html(previews: list, start: int) -> str:
    """Several examples, each under a small '#n' heading."""
    blocks = []
    for offset, pieces in enumerate(previews):
        blocks.append(f'<p style="color:{theme.MUTED}; font-size:8.5pt; margin: 10px 0 4px 0;"><b>#{start + offset + 1}</b></p>'
                      + preview_html(pieces))
    return "".join(blocks)


class DataPage(Page):
    settings_changed = Signal()
    stats_changed = Signal()        # new length statistics (or none): the Train page's estimate

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Data", "The examples the adapter learns from, exactly as the model will see them.")
        self.model_path: str | None = None
        self.result: dict | None = None
        self._request = 0
        self._pending = False
        self._preview_index = 0
        self._debounce = QTimer(self, singleShot=True, interval=400)
        self._debounce.timeout.connect(self.refresh)

        top = ResponsiveRow()
        file_card = Card("Training data", "JSON Lines, JSON or CSV in alpaca, chat, sharegpt or plain-text format.")
        self.picker = PathPicker("file", "Choose a dataset", DATA_FILTER, "/path/to/train.jsonl")
        self.picker.changed.connect(lambda _p: self.refresh())
        file_card.body.addWidget(self.picker)
        self.demo_button = button("Use demo data", kind="ghost",
                                  tooltip="The shipped dates dataset (the base model fails it; a few "
                                          "minutes of LoRA on CPU teaches it)")
        self.demo_button.clicked.connect(self.use_demo_data)
        file_card.add_header_widget(self.demo_button)
        form = form_layout()
        self.format = QComboBox()
        self.format.addItems(FORMATS)
        self.format.setToolTip("auto detects the format from the first records")
        self.format.currentIndexChanged.connect(lambda _i: self.refresh())
        fmt_row = QHBoxLayout()
        fmt_row.setSpacing(10)
        fmt_row.addWidget(self.format)
        self.count_badge = badge("no file")
        fmt_row.addWidget(self.count_badge)
        fmt_row.addStretch(1)
        add_row(form, "Format", fmt_row)
        file_card.body.addLayout(form)
        self.error = InlineMessage()
        file_card.body.addWidget(self.error)
        file_card.body.addStretch(1)
        top.add(file_card, 3)

        split_card = Card("Evaluation split & length")
        self.split_mode = Segmented([("fraction", "Hold out a fraction"), ("file", "Separate eval file")])
        self.split_mode.changed.connect(self._on_split_mode)
        split_card.body.addWidget(self.split_mode)
        split_form = form_layout()
        self.eval_fraction = QDoubleSpinBox()
        self.eval_fraction.setRange(0.0, 0.9)
        self.eval_fraction.setSingleStep(0.05)
        self.eval_fraction.setDecimals(2)
        self.eval_fraction.setValue(0.1)
        theme.fix_spin(self.eval_fraction)
        self.eval_fraction.setToolTip("Share of the examples held out to measure eval loss (0 = none).")
        self.eval_picker = PathPicker("file", "Choose an eval dataset", DATA_FILTER, "/path/to/eval.jsonl")
        self.max_length = QSpinBox()
        self.max_length.setRange(8, 131072)
        self.max_length.setSingleStep(64)
        self.max_length.setValue(256)
        theme.fix_spin(self.max_length)
        self.max_length.setKeyboardTracking(False)
        self.max_length.setToolTip("Examples longer than this many tokens are cut at the end.")
        self.max_length.valueChanged.connect(lambda _v: self._debounce.start())
        self.fraction_label = add_row(split_form, "Eval fraction", self.eval_fraction)
        self.eval_file_label = add_row(split_form, "Eval file", self.eval_picker)
        add_row(split_form, "Max length (tokens)", self.max_length)
        split_card.body.addLayout(split_form)
        split_card.body.addStretch(1)
        top.add(split_card, 2)
        self.content.addWidget(top)

        bottom = ResponsiveRow()
        preview_card = Card("Preview")
        nav = QHBoxLayout()
        self.prev_button = button("‹", kind="ghost", tooltip="Previous example")
        self.next_button = button("›", kind="ghost", tooltip="Next example")
        self.prev_button.clicked.connect(lambda: self.show_example(self._preview_index - PREVIEW_PAGE))
        self.next_button.clicked.connect(lambda: self.show_example(self._preview_index + PREVIEW_PAGE))
        self.example_label = label("", "muted")
        nav.addWidget(self.prev_button)
        nav.addWidget(self.example_label)
        nav.addWidget(self.next_button)
        preview_card.header.addLayout(nav)
        legend = QHBoxLayout()
        legend.addWidget(badge("trained", "badge-ok"))
        legend.addWidget(label("assistant replies: the loss is computed here", "faint"))
        legend.addSpacing(12)
        legend.addWidget(badge("not trained"))
        legend.addWidget(label("prompt and template tags (dim)", "faint"))
        legend.addStretch(1)
        preview_card.body.addLayout(legend)
        self.preview = QTextBrowser()
        self.preview.setMinimumHeight(260)
        self.preview.setOpenLinks(False)
        preview_card.body.addWidget(self.preview, 1)
        bottom.add(preview_card, 3)

        stats_card = Card("Token lengths", "Before truncation, through the model's tokenizer.")
        self.stats = StatGrid([("count", "Examples"), ("mean", "Mean"), ("median", "Median"),
                               ("p95", "95th pct"), ("max", "Max"), ("truncated", "Truncated")], columns=3)
        stats_card.body.addWidget(self.stats)
        self.histogram = pg.PlotWidget(background=theme.SURFACE)
        self.histogram.setMinimumHeight(170)
        item = self.histogram.getPlotItem()
        item.setMenuEnabled(False)
        item.hideButtons()
        item.showGrid(y=True, alpha=0.12)
        item.setLabel("bottom", "tokens per example", color=theme.FAINT)
        theme.style_plot(self.histogram)
        self.bars = pg.BarGraphItem(x=[], height=[], width=1, brush=theme.ACCENT, pen=pg.mkPen(None))
        self.histogram.addItem(self.bars)
        self.limit_line = pg.InfiniteLine(angle=90, pen=pg.mkPen(theme.DANGER, width=1.5, style=pg.QtCore.Qt.PenStyle.DashLine),
                                          label="max length", labelOpts={"color": theme.DANGER, "position": 0.9})
        self.histogram.addItem(self.limit_line)
        stats_card.body.addWidget(self.histogram, 1)
        self.histogram_note = label("", "faint")
        stats_card.body.addWidget(self.histogram_note)
        bottom.add(stats_card, 2)
        self.content.addWidget(bottom, 1)

        self.eval_picker.changed.connect(lambda _p: self.settings_changed.emit())
        self._on_split_mode("fraction")
        self._update_nav()

    # ---- settings ---------------------------------------------------------------------------
    def settings(self) -> dict:
        use_file = self.split_mode.value() == "file"
        return {
            "path": self.picker.path(),
            "format": self.format.currentText(),
            "eval_path": self.eval_picker.path() if use_file else "",
            "eval_fraction": 0.0 if use_file else round(self.eval_fraction.value(), 4),
            "max_length": self.max_length.value(),
        }

    def apply_settings(self, data: dict) -> None:
        """Fill the page from a recipe's [data] section."""
        self.format.blockSignals(True)
        self.format.setCurrentText(data.get("format", "auto"))
        self.format.blockSignals(False)
        self.max_length.blockSignals(True)
        self.max_length.setValue(int(data.get("max_length", 256)))
        self.max_length.blockSignals(False)
        if data.get("eval_path"):
            self.eval_picker.set_path(data["eval_path"], emit=False)
            self.split_mode.set_value("file")
        else:
            self.eval_fraction.setValue(float(data.get("eval_fraction", 0.1)))
            self.split_mode.set_value("fraction")
        self.picker.set_path(data.get("path", ""))

    def set_data_path(self, path: str | Path) -> None:
        self.picker.set_path(str(path))

    def use_demo_data(self) -> None:
        self.set_data_path(paths.demo_data_path())

    def set_model(self, info) -> None:
        """Slot for ModelPage.model_changed: previews need the model's tokenizer."""
        new = str(info.path) if info is not None else None
        if new != self.model_path:
            self.model_path = new
            self.refresh()

    def is_loading(self) -> bool:
        return self._pending

    # ---- analysis ---------------------------------------------------------------------------
    def refresh(self) -> None:
        self.settings_changed.emit()
        path = self.picker.path()
        self._request += 1
        request = self._request
        if not path:
            self._pending = False
            self._show_error("")
            self.error.show_info("Choose a data file, or press “Use demo data”.")
            self.count_badge.setText("no file")
            self.count_badge.setProperty("role", "badge")
            theme.repolish(self.count_badge)
            return
        self._pending = True
        self.count_badge.setText("reading…")
        tasks.run_async(analyse, path, self.format.currentText(), self.model_path, self.max_length.value(),
                        on_done=lambda r: self._on_result(request, r),
                        on_error=lambda e: self._on_error(request, e))

    def _on_result(self, request: int, result: dict) -> None:
        if request != self._request:
            return
        self._pending = False
        self.result = result
        self.error.clear_message()
        self.count_badge.setText(f"{result['count']:,} examples · {result['format']}")
        self.count_badge.setProperty("role", "badge-accent")
        theme.repolish(self.count_badge)
        if not result["previews"]:
            self.preview.setHtml(f'<p style="color:{theme.MUTED}">Choose a valid model on the Model page '
                                 'to see examples through its chat template.</p>')
        self._preview_index = min(self._preview_index, max(len(result["previews"]) - 1, 0))
        self._preview_index -= self._preview_index % PREVIEW_PAGE
        self.show_example(self._preview_index)
        self._show_stats(result)
        if result.get("warnings"):
            self.error.show_info("Warning: " + "\n".join(result["warnings"]))

    def _on_error(self, request: int, exc: BaseException) -> None:
        if request != self._request:
            return
        self._pending = False
        self._show_error(tasks.error_text(exc))

    def _show_error(self, text: str) -> None:
        self.result = None
        if text:
            self.error.show_error(text)
        else:
            self.error.clear_message()
        self.count_badge.setText("not usable")
        self.count_badge.setProperty("role", "badge-warn")
        theme.repolish(self.count_badge)
        self.preview.clear()
        self.stats.clear()
        self.last_stats = None
        self.stats_changed.emit()
        self.bars.setOpts(x=[], height=[], width=1)
        self.limit_line.setVisible(False)
        self.histogram_note.setText("")
        self._update_nav()

    def _show_stats(self, result: dict) -> None:
        stats = result.get("stats")
        self.last_stats = stats
        self.stats_changed.emit()
        if not stats:
            self.stats.clear()
            self.stats.set("count", f"{result['count']:,}")
            return
        self.stats.set("count", f"{stats['count']:,}")
        self.stats.set("mean", f"{stats['mean']:.0f}")
        self.stats.set("median", f"{stats['median']:.0f}")
        self.stats.set("p95", str(stats["p95"]))
        self.stats.set("max", str(stats["max"]))
        share = stats["truncated"] / stats["count"] if stats["count"] else 0
        self.stats.set("truncated", f"{stats['truncated']} ({share:.0%})")
        self.stats.values["truncated"].setStyleSheet(f"color: {theme.WARNING};" if stats["truncated"] else "")
        self._draw_histogram(result["lengths"])

    def _draw_histogram(self, lengths: list[int]) -> None:
        import numpy as np

        limit = self.max_length.value()
        if not lengths:
            self.bars.setOpts(x=[], height=[], width=1)
            return
        low, high = min(lengths), max(lengths)
        if high - low < 10:
            low, high = max(0, low - 5), high + 5
        bins = int(min(30, max(5, high - low + 1)))
        counts, edges = np.histogram(lengths, bins=bins, range=(low, high + 1))
        width = edges[1] - edges[0]
        self.bars.setOpts(x=edges[:-1] + width / 2, height=counts, width=width * 0.85)
        # Show the max-length line when it is near the data; far away it would squash the bars.
        right = high + width
        show_limit = limit <= high * 1.6
        if show_limit:
            right = max(right, limit * 1.04)
        self.limit_line.setValue(limit)
        self.limit_line.setVisible(show_limit)
        self.histogram.getPlotItem().setXRange(low - width, right, padding=0)
        top = int(max(counts))
        self.histogram.getPlotItem().setYRange(0, top * 1.15 if top > 1 else 1.5, padding=0)
        step = max(1, -(-top // 5))                   # whole examples: at most ~5 integer ticks
        self.histogram.getPlotItem().getAxis("left").setTicks(
            [[(v, str(v)) for v in range(0, top + step, step)], []])
        self.histogram_note.setText(
            "" if show_limit else f"all examples are well under the max length ({limit} tokens)"
            if high <= limit else "")

    def on_theme_changed(self, _palette: str = "") -> None:
        """The theme changed: the histogram's colours, and the preview drawn again."""
        import pyqtgraph as pg

        theme.style_plot(self.histogram)
        self.bars.setOpts(brush=theme.ACCENT)
        self.limit_line.setPen(pg.mkPen(theme.DANGER, width=1.5, style=pg.QtCore.Qt.PenStyle.DashLine))
        self.limit_line.label.setColor(theme.DANGER)
        if self.result is not None and self.result.get("previews"):
            self.show_example(self._preview_index)
        if self.result is not None and self.result.get("stats"):
            self._show_stats(self.result)

    # ---- preview navigation -----------------------------------------------------------------
    def show_example(self, index: int) -> None:
        """Show the page of examples that starts at `index`."""
        previews = (self.result or {}).get("previews") or []
        if previews:
            self._preview_index = max(0, min(index, len(previews) - 1))
            page = previews[self._preview_index:self._preview_index + PREVIEW_PAGE]
            self.preview.setHtml(previews_html(page, self._preview_index))
        self._update_nav()

    def _update_nav(self) -> None:
        previews = (self.result or {}).get("previews") or []
        total = (self.result or {}).get("count", 0)
        if previews:
            last = min(self._preview_index + PREVIEW_PAGE, len(previews))
            shown = f" (first {len(previews)} previewed)" if total > len(previews) else ""
            self.example_label.setText(f"Examples {self._preview_index + 1}–{last} of {total:,}{shown}")
        else:
            self.example_label.setText("")
        self.prev_button.setEnabled(bool(previews) and self._preview_index > 0)
        self.next_button.setEnabled(bool(previews) and self._preview_index + PREVIEW_PAGE < len(previews))

    def _on_split_mode(self, mode: str) -> None:
        use_file = mode == "file"
        self.eval_fraction.setVisible(not use_file)
        self.fraction_label.setVisible(not use_file)
        self.eval_picker.setVisible(use_file)
        self.eval_file_label.setVisible(use_file)
        if use_file and not self.eval_picker.path():
            demo_eval = paths.demo_data_path().with_name("dates_eval.jsonl")
            if Path(self.picker.path()) == paths.demo_data_path() and demo_eval.exists():
                self.eval_picker.set_path(str(demo_eval), emit=False)
        self.settings_changed.emit()
