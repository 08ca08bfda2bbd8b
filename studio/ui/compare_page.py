"""Compare page: runs and adapter folders side by side, each in one colour everywhere (the list,
the curves, the answers, the weight plots, the report): overlaid curves (train loss, eval loss,
learning rate, throughput; by step or by tokens seen; a legend of check boxes shows or hides
each run), the settings that differ, one prompt answered by the base model and every adapter
side by side (streamed as they generate, same decoding settings, copyable), the weight-update
norms per layer x module, the singular values of one module's update, and the cosine
similarity of the updates (all modules or one). "Evaluate…" scores the base and every adapter
on the same examples of a task (`peft-studio compare --eval` in a child process) and lists the
examples where they disagree; "Blend…" writes a weighted blend (peft's add_weighted_adapter) as
a new adapter and adds it; "Report…" writes the HTML report (with the last prompt's answers).

All computation is studio.compare; reading weights, loading models, generating, blending and
writing run off the GUI thread (studio.ui.tasks, as on the Chat page).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFontMetrics, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QAbstractScrollArea, QApplication, QCheckBox, QComboBox, QFileDialog, QFrame, QGridLayout,
    QHBoxLayout, QHeaderView, QInputDialog, QLineEdit, QListWidget, QListWidgetItem, QMenu,
    QPlainTextEdit, QSizePolicy, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from studio.compare.loaded import BASE
from studio.compare.sources import (AXES, BASE_COLOUR, METRICS, assign_colours, curve,
                                    load_source, settings_diff)
from studio import paths
from studio.ui import tasks, theme
from studio.ui.chat_page import SamplingFields
from studio.ui.cli_process import CliProcess, parse_progress
from studio.ui.widgets import (Card, FlowRow, InlineMessage, Page, ResponsiveRow, Segmented, button,
                               compact_combo, label)


def _swatch(col: str):
    pix = QPixmap(12, 12)
    pix.fill(QColor(col))
    return pix


def _table(rows: int = 0, cols: int = 0, most_rows: int = 12) -> QTableWidget:
    """A read-only table as tall as its rows, up to about `most_rows` (then it scrolls): a short
    table is no box of empty space, a long one is not cut to a few rows."""
    table = QTableWidget(rows, cols)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSizeAdjustPolicy(QAbstractScrollArea.SizeAdjustPolicy.AdjustToContents)
    table.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    table.setMinimumHeight(64)
    table.setMaximumHeight(40 + 31 * most_rows)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.horizontalHeader().setMaximumSectionSize(360)          # long paths are elided
    table.horizontalHeader().setDefaultAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
    table.setTextElideMode(Qt.TextElideMode.ElideMiddle)
    table.verticalHeader().setVisible(False)
    return table


def _fit_rows(table: QTableWidget) -> None:
    """After filling: the layout takes the table's new height."""
    table.updateGeometry()


def _model_header(table: QTableWidget, column: int, name: str, col: str) -> None:
    """A column header naming a model, with its colour as a swatch."""
    table.setHorizontalHeaderItem(column, QTableWidgetItem(_swatch(col), name))


def _analyse(sources):
    from studio.compare.weights import analyse

    return analyse(sources)


def _blend(sources, weights, out_dir, combination):
    from studio.compare.blend import blend

    return blend(sources, weights, out_dir, combination_type=combination)


def _report(path, sources, analysis, evaluation=None, chat=None):
    from studio.compare.report import build_report, write_report

    chat = chat or {}
    return write_report(path, build_report(sources, weights=analysis, evaluation=evaluation,
                                           answers=chat.get("answers"), prompt=chat.get("prompt"),
                                           sampling=chat.get("sampling")))


_loaded: dict = {}          # the AdapterSet of the last chat: the base loaded once per adapter list
_lock = threading.Lock()


def _chat(sources, prompt: str, sampling, progress=None) -> dict:
    """Worker thread: load (or reuse) the base model with every adapter on it, then all answer
    `prompt`; progress({"name", "text"}) streams each piece, progress({"phase"}) the phases."""
    from studio.compare.loaded import AdapterSet

    key = tuple(str(s.adapter_dir) for s in sources)
    with _lock:
        if _loaded.get("key") != key:
            _loaded.clear()
            progress({"phase": "loading"})
            _loaded.update(key=key, aset=AdapterSet(sources))
        aset = _loaded["aset"]
        progress({"phase": "generating"})
        return aset.chat(prompt, sampling,
                         on_text=lambda name, piece: progress({"name": name, "text": piece}))


def _module_text(path: str) -> str:
    """"model.layers.3.self_attn.q_proj" -> "layer 3 · q_proj"."""
    from studio.compare.weights import module_label

    layer, kind = module_label(path)
    return f"layer {layer} · {kind}" if layer is not None else kind



def _picker_plot(caption: str, on_pick, min_height: int):
    """A side of the weights card: 'caption [module combo]' over a plot; returns
    (widget, its layout, the combo, the plot)."""
    side = QWidget()
    side.setObjectName("Transparent")
    side.setMinimumWidth(300)
    box = QVBoxLayout(side)
    box.setContentsMargins(0, 0, 0, 0)
    pick = QHBoxLayout()
    pick.addWidget(label(caption, "muted"))
    combo = compact_combo(QComboBox(), 14)
    combo.currentIndexChanged.connect(on_pick)
    pick.addWidget(combo, 1)
    box.addLayout(pick)
    plot = pg.PlotWidget(background=theme.SURFACE)
    plot.setMinimumHeight(min_height)
    plot.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    plot.getPlotItem().setMenuEnabled(False)
    plot.getPlotItem().hideButtons()
    theme.style_plot(plot)
    box.addWidget(plot)
    return side, box, combo, plot

class _AnswerBox(QFrame):
    """One model's answer to the shared prompt: its name in its colour, the text as it streams
    (selectable), a Copy button and the answer's length and speed."""

    def __init__(self, name: str, col: str) -> None:
        super().__init__()
        self.setObjectName("Card")
        self.name = name
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.setSpacing(6)
        head = QHBoxLayout()
        self.title = label(name)
        self.title.setStyleSheet(f"color: {col}; font-weight: 600;")
        self.title.setToolTip(name)
        self.title.setMinimumWidth(40)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        head.addWidget(self.title, 1)
        self.copy_button = button("Copy", kind="ghost", tooltip=f"Copy the answer of {name}")
        self.copy_button.clicked.connect(self.copy)
        head.addWidget(self.copy_button)
        layout.addLayout(head)
        self.view = QPlainTextEdit()
        self.view.setReadOnly(True)
        self.view.setMinimumHeight(90)
        self.view.setMaximumHeight(160)       # a long answer scrolls inside its box
        self.view.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        layout.addWidget(self.view, 1)
        self.stats = label("", "faint")
        layout.addWidget(self.stats)
        self.setMinimumWidth(220)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        metrics = QFontMetrics(self.title.font())
        self.title.setText(metrics.elidedText(self.name, Qt.TextElideMode.ElideMiddle,
                                              max(self.title.width(), 40)))

    def text(self) -> str:
        return self.view.toPlainText()

    def add_text(self, piece: str) -> None:
        cursor = self.view.textCursor()
        cursor.movePosition(cursor.MoveOperation.End)
        cursor.insertText(piece)
        self.view.setTextCursor(cursor)

    def copy(self) -> None:
        QApplication.clipboard().setText(self.text())


class _BoxGrid(QWidget):
    """Answer boxes in as many columns as fit (about 260 px each), re-flowed on resize."""

    def __init__(self) -> None:
        super().__init__()
        self.setObjectName("Transparent")
        self.grid = QGridLayout(self)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(10)
        self.boxes: list[_AnswerBox] = []
        self._columns = 0

    def set_boxes(self, boxes: list[_AnswerBox]) -> None:
        for box in self.boxes:
            self.grid.removeWidget(box)
            box.deleteLater()
        self.boxes = boxes
        self._columns = 0
        self._flow(self.width())

    def _flow(self, width: int) -> None:
        columns = max(1, min(len(self.boxes), width // 260)) if self.boxes else 1
        if columns == self._columns:
            return
        self._columns = columns
        for box in self.boxes:
            self.grid.removeWidget(box)
        for c in range(8):
            self.grid.setColumnStretch(c, 1 if c < columns else 0)
        for i, box in enumerate(self.boxes):
            self.grid.addWidget(box, i // columns, i % columns)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._flow(event.size().width())


class ComparePage(Page):
    def __init__(self) -> None:
        super().__init__("Compare", "Put runs and adapters side by side: curves, settings that "
                                    "differ, answers to one prompt, and what each changed in the "
                                    "weights.")
        self.sources: list = []
        self.analysis: dict | None = None
        self.evaluation: dict | None = None
        self.chat_result: dict | None = None     # {"prompt", "answers", "sampling", "stats"}
        self.process: CliProcess | None = None
        self._generation = 0
        self._hidden: set[str] = set()            # adapter folders whose curves are hidden
        self._chatting = False

        self.blend_button = button("Blend…", tooltip="Blend the adapters with weights into a new "
                                                     "adapter (peft add_weighted_adapter)")
        self.report_button = button("Report…", tooltip="Write one self-contained HTML report")
        self.eval_button = button("Evaluate…", tooltip="Score the base model and every adapter on "
                                                       "the same examples of a task")
        self.blend_button.clicked.connect(self.ask_blend)
        self.report_button.clicked.connect(self.ask_report)
        self.eval_button.clicked.connect(self.ask_evaluate)
        self.header.actions.addWidget(self.eval_button)
        self.header.actions.addWidget(self.blend_button)
        self.header.actions.addWidget(self.report_button)

        card = self.adapters_card = Card("Adapters", "Finished runs or adapter folders of the "
                                                     "same base model.")
        self.list = QListWidget()
        self.list.setMinimumHeight(90)
        self.list.setMaximumHeight(150)
        self.list.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        card.body.addWidget(self.list)
        row = QHBoxLayout()
        self.add_run_button = button("Add run…")
        self.add_folder_button = button("Add folder…")
        self.remove_button = button("Remove")
        self.add_run_button.clicked.connect(self.ask_run)
        self.add_folder_button.clicked.connect(self.ask_folder)
        self.remove_button.clicked.connect(self.remove_selected)
        for b in (self.add_run_button, self.add_folder_button, self.remove_button):
            row.addWidget(b)
        row.addStretch(1)
        card.body.addLayout(row)
        self.message = InlineMessage()
        card.body.addWidget(self.message)
        self.content.addWidget(card)

        self.curves_card = Card("Training curves", "Each run in its colour; tick a name to show "
                                                   "or hide its curve.")
        choices = QWidget()
        choices.setObjectName("Transparent")
        flow = FlowRow(choices, spacing=12)
        self.metric_choice = Segmented([(key, title.split(" (")[0]) for key, (title, _, _) in METRICS.items()])
        self.axis_choice = Segmented([(key, title.capitalize()) for key, title in AXES.items()])
        for seg in (self.metric_choice, self.axis_choice):
            seg.layout().takeAt(seg.layout().count() - 1)      # no stretch inside a flow row
            seg.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)
            seg.changed.connect(lambda _key: self._show_curves())
            flow.addWidget(seg)
        self.curves_card.body.addWidget(choices)
        self.legend_box = QWidget()
        self.legend_box.setObjectName("Transparent")
        self.legend_flow = FlowRow(self.legend_box, spacing=14)
        self.legend_checks: dict[str, QCheckBox] = {}
        self.curves_card.body.addWidget(self.legend_box)
        self.plot = pg.PlotWidget(background=theme.SURFACE)
        self.plot.setMinimumHeight(220)
        self.plot.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        item = self.plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.12)
        item.setMenuEnabled(False)
        item.hideButtons()
        for side in ("left", "bottom"):
            item.getAxis(side).setTextPen(pg.mkPen(theme.MUTED))
            item.getAxis(side).enableAutoSIPrefix(False)     # "loss", not "loss (x0.001)"
        item.getAxis("left").setWidth(56)
        theme.style_plot(self.plot)
        self.curves_card.body.addWidget(self.plot)
        self.curves_note = label("", role="muted", wrap=True)
        self.curves_card.body.addWidget(self.curves_note)
        self.content.addWidget(self.curves_card)

        self.settings_card = Card("Settings that differ", "Only settings whose values are not "
                                                          "the same for all; values unlike the "
                                                          "first adapter's are highlighted.")
        self.settings_table = _table()
        self.settings_card.body.addWidget(self.settings_table)
        self.content.addWidget(self.settings_card)

        self.chat_card = Card("Same prompt", "The base model and every adapter answer it side by "
                                             "side, with the same decoding settings.")
        ask = QHBoxLayout()
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("A prompt, e.g. “What is the date one week after "
                                       "2024-03-01?”  (Enter asks)")
        self.prompt.returnPressed.connect(self.ask)
        ask.addWidget(self.prompt, 1)
        self.ask_button = button("Ask all", kind="primary", icon_name="send",
                                 tooltip="The base model and every adapter answer this prompt")
        self.ask_button.clicked.connect(self.ask)
        self.copy_all_button = button("Copy all", kind="ghost",
                                      tooltip="Copy the prompt and every answer, one per model")
        self.copy_all_button.clicked.connect(self.copy_answers)
        ask.addWidget(self.ask_button)
        ask.addWidget(self.copy_all_button)
        self.chat_card.body.addLayout(ask)
        self.decoding = SamplingFields(columns=3, max_new_tokens=64)
        fields = QHBoxLayout()
        fields.addWidget(self.decoding)
        fields.addStretch(1)
        self.chat_card.body.addLayout(fields)
        self.chat_status = label("", "faint", wrap=True)
        self.chat_card.body.addWidget(self.chat_status)
        self.chat_message = InlineMessage()
        self.chat_card.body.addWidget(self.chat_message)
        self.answer_grid = _BoxGrid()
        self.boxes: dict[str, _AnswerBox] = {}
        self.chat_card.body.addWidget(self.answer_grid)
        self.content.addWidget(self.chat_card)

        self.weights_card = Card("Weight updates", "ΔW = B·A·scaling of every adapted module: its "
                                                   "size per layer × module, the singular values "
                                                   "of one module, and how alike the adapters' "
                                                   "updates are.")
        sides = ResponsiveRow()
        heat_side, heat_box, self.norm_combo, self.heat = _picker_plot(
            "‖ΔW‖ of", self._show_norms, 240)
        self.heat.getPlotItem().setLabel("left", "layer")
        self.heat_image = pg.ImageItem()
        self.heat_image.setColorMap(pg.colormap.get("viridis"))
        self.heat.addItem(self.heat_image)
        self.heat_bar = pg.ColorBarItem(values=(0, 1), colorMap=pg.colormap.get("viridis"),
                                        interactive=False, width=14)
        self.heat_bar.setImageItem(self.heat_image, insert_in=self.heat.getPlotItem())
        sides.add(heat_side)
        spec_side, spec_box, self.spectrum_combo, self.spectrum_plot = _picker_plot(
            "Singular values at", self._show_spectrum, 200)
        spec_item = self.spectrum_plot.getPlotItem()
        spec_item.showGrid(x=True, y=True, alpha=0.12)
        spec_item.setLabel("bottom", "index")
        spec_item.setLabel("left", "singular value (log scale)")
        spec_item.setLogMode(y=True)        # a trained update and a random one differ by 100x
        self.rank_label = label("", "muted", wrap=True)
        self.rank_label.setTextFormat(Qt.TextFormat.RichText)
        spec_box.addWidget(self.rank_label)
        sides.add(spec_side)
        self.weights_card.body.addWidget(sides)
        self.weights_note = label("", role="muted", wrap=True)
        self.weights_card.body.addWidget(self.weights_note)
        pick = QHBoxLayout()
        pick.addWidget(label("Cosine similarity of the updates,", "muted"))
        self.similarity_combo = compact_combo(QComboBox(), 16)
        self.similarity_combo.currentIndexChanged.connect(self._show_similarity)
        pick.addWidget(self.similarity_combo, 1)
        self.weights_card.body.addLayout(pick)
        self.similarity_table = _table()
        self.weights_card.body.addWidget(self.similarity_table)
        self.content.addWidget(self.weights_card)

        self.eval_card = Card("Evaluation", "Same examples for every model; paired 95% CIs.")
        scores = self.eval_card
        self.eval_status = label("Evaluate… scores the base model and each adapter on a task.",
                                 role="muted", wrap=True)
        scores.body.addWidget(self.eval_status)
        self.eval_table = _table()
        scores.body.addWidget(self.eval_table)
        scores.body.addWidget(label("Where they disagree"))
        self.disagree_table = _table()
        scores.body.addWidget(self.disagree_table)
        self.content.addWidget(scores)
        self.content.addStretch(1)
        self.parts = {"adapters": self.adapters_card, "curves": self.curves_card,
                      "settings": self.settings_card, "prompt": self.chat_card,
                      "weights": self.weights_card, "evaluation": self.eval_card}
        self._refresh()

    # ---- the list --------------------------------------------------------------------------
    def add_paths(self, items) -> None:
        """Add runs / adapter folders; a bad one or one of another base model is refused inline."""
        from studio.compare.sources import check_same_base
        from studio.errors import UserError

        for item in items:
            try:
                src = load_source(item)
                if any(s.adapter_dir == src.adapter_dir for s in self.sources):
                    continue
                check_same_base([*self.sources, src])
            except UserError as err:
                self.message.show_error(str(err))
                return
            names = {s.name for s in self.sources} | {BASE}
            base, n = src.name, 2
            while src.name in names:
                src.name, n = f"{base} ({n})", n + 1
            self.sources.append(src)
            assign_colours(self.sources)
        self.message.clear_message()
        self._refresh()

    def remove_selected(self) -> None:
        rows = sorted({i.row() for i in self.list.selectedIndexes()}, reverse=True)
        for row in rows:
            del self.sources[row]
        self._refresh()

    def ask_run(self) -> None:
        from studio.core.runs import list_runs

        finished = [r for r in list_runs() if (Path(r.path) / "adapter" / "adapter_config.json").is_file()]
        if not finished:
            self.message.show_info("No run has a finished adapter yet.")
            return
        menu = QMenu(self)
        for info in finished[:30]:
            action = menu.addAction(f"{info.name} — {info.method}, {info.created[:16]}")
            action.triggered.connect(lambda _=False, p=info.path: self.add_paths([p]))
        menu.exec(self.add_run_button.mapToGlobal(self.add_run_button.rect().bottomLeft()))

    def ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Adapter or run folder")
        if folder:
            self.add_paths([folder])

    def colour_of(self, name: str) -> str:
        """The colour of a model by its name on this page (the base model is grey)."""
        return next((s.colour for s in self.sources if s.name == name), BASE_COLOUR)

    # ---- showing ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.list.clear()
        for src in self.sources:
            entry = QListWidgetItem(f"{src.name}   ({src.kind}, {src.method})")
            entry.setIcon(_swatch(src.colour))
            entry.setToolTip(str(src.adapter_dir))
            self.list.addItem(entry)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.blend_button.setEnabled(len(self.sources) >= 2)
        self.report_button.setEnabled(bool(self.sources))
        self.eval_button.setEnabled(bool(self.sources) and not self._evaluating())
        self.remove_button.setEnabled(bool(self.sources))
        self._show_evaluation(None)
        self._fill_legend()
        self._show_curves()
        self._show_settings()
        self._reset_chat()
        self.analysis = None
        for combo in (self.norm_combo, self.spectrum_combo, self.similarity_combo):
            combo.blockSignals(True)
            combo.clear()
            combo.blockSignals(False)
        self.similarity_table.setRowCount(0)
        self.similarity_table.setColumnCount(0)
        self.heat_image.clear()
        self.spectrum_plot.clear()
        self.rank_label.setText("")
        self.weights_note.setText("Add adapters to see their weight updates." if not self.sources
                                  else "Reading the weights…")
        if self.sources:
            self._generation += 1
            generation = self._generation
            tasks.run_async(_analyse, list(self.sources),
                            on_done=lambda result: self._analysed(generation, result),
                            on_error=self._failed)

    # ---- curves ----------------------------------------------------------------------------
    def _fill_legend(self) -> None:
        for check in self.legend_checks.values():
            self.legend_flow.removeWidget(check)
            check.deleteLater()
        self.legend_checks = {}
        for src in self.sources:
            key = str(src.adapter_dir)
            check = QCheckBox(src.name)
            if not any(src.curves.get(k) for k in METRICS):
                check.setText(f"{src.name} (no curves)")
            check.setIcon(_swatch(src.colour))
            check.setStyleSheet(f"QCheckBox {{ color: {src.colour}; font-weight: 600; }}")
            has_curves = any(src.curves.get(k) for k in METRICS)
            check.setChecked(has_curves and key not in self._hidden)
            check.setEnabled(has_curves)
            check.setToolTip(f"Show or hide {src.name}" if has_curves else
                             f"{src.name} is an adapter folder, not a run: it has no training curves")
            check.toggled.connect(lambda on, k=key: self._toggle_source(k, on))
            self.legend_flow.addWidget(check)
            self.legend_checks[key] = check
        self.legend_box.setVisible(bool(self.sources))
        self.legend_box.updateGeometry()

    def _toggle_source(self, key: str, shown: bool) -> None:
        (self._hidden.discard if shown else self._hidden.add)(key)
        self._show_curves()

    def shown_curves(self) -> dict[str, list]:
        """What the plot shows now: {source name: [(x, y), ...]} of the visible runs."""
        metric, x = self.metric_choice.value(), self.axis_choice.value()
        return {s.name: curve(s, metric, x) for s in self.sources
                if str(s.adapter_dir) not in self._hidden and curve(s, metric, x)}

    def _show_curves(self) -> None:
        metric, x = self.metric_choice.value(), self.axis_choice.value()
        self.plot.clear()
        item = self.plot.getPlotItem()
        item.setLabel("bottom", AXES[x])
        item.setLabel("left", METRICS[metric][0])
        eval_points = metric == "eval_loss"
        shown = self.shown_curves()
        for src in self.sources:
            points = shown.get(src.name)
            if points:
                self.plot.plot([p[0] for p in points], [p[1] for p in points], name=src.name,
                               pen=pg.mkPen(src.colour, width=2),
                               symbol="o" if eval_points or len(points) == 1 else None,
                               symbolSize=7, symbolBrush=src.colour,
                               symbolPen=pg.mkPen(theme.SURFACE, width=1))
        runs_ = [s for s in self.sources if any(s.curves.get(k) for k in METRICS)]
        missing = [s.name for s in runs_ if not curve(s, metric, x)]
        notes = []
        if not runs_:
            notes.append("No curves: none of these is a run (adapter folders keep no training log)."
                         if self.sources else "Add runs to see their curves.")
        elif missing:
            why = ("they were trained before tokens were logged" if x == "tokens"
                   else "they logged no such value")
            notes.append(f"Not shown: {', '.join(missing)} ({why}).")
        self.curves_note.setText(" ".join(notes))
        self.curves_note.setVisible(bool(notes))
        if shown:
            self.plot.autoRange()

    def _show_settings(self) -> None:
        diff = settings_diff(self.sources) if len(self.sources) > 1 else {}
        table = self.settings_table
        table.setColumnCount(1 + len(self.sources))
        table.setHorizontalHeaderLabels(["setting"])
        for c, src in enumerate(self.sources):
            _model_header(table, c + 1, src.name, src.colour)
        table.setRowCount(len(diff))
        for r, (key, values) in enumerate(diff.items()):
            table.setItem(r, 0, QTableWidgetItem(key))
            for c, value in enumerate(values):
                cell = QTableWidgetItem(str(value))
                cell.setToolTip(f"{self.sources[c].name}: {value}")
                if str(value) != str(values[0]):       # differs from the first: highlighted
                    cell.setBackground(QBrush(QColor(theme.ACCENT_SOFT)))
                    cell.setForeground(QBrush(QColor(theme.TEXT)))
                table.setItem(r, c + 1, cell)
        _fit_rows(table)

    # ---- the same prompt -------------------------------------------------------------------
    def _reset_chat(self) -> None:
        """One answer box per model (the base first), empty: answers of another list of
        adapters must not stay under these names."""
        self._generation_chat = getattr(self, "_generation_chat", 0) + 1
        self.chat_result = None
        names = [BASE, *[s.name for s in self.sources]] if self.sources else []
        self.boxes = {name: _AnswerBox(name, self.colour_of(name)) for name in names}
        self.answer_grid.set_boxes(list(self.boxes.values()))
        self._chatting = False
        self._update_chat_buttons()
        self.chat_status.setText("Ask one prompt: the base model and every adapter answer it, "
                                 "streamed as they generate." if self.sources else
                                 "Add adapters, then ask them all one prompt.")

    def _update_chat_buttons(self) -> None:
        self.ask_button.setEnabled(bool(self.sources) and not self._chatting)
        self.copy_all_button.setEnabled(self.chat_result is not None)

    def ask(self, prompt: str | None = None) -> None:
        """All models answer the prompt (the field's text unless given), off the GUI thread."""
        prompt = (prompt if isinstance(prompt, str) else self.prompt.text()).strip()
        if self._chatting or not self.sources:
            return
        if not prompt:
            self.chat_status.setText("Type a prompt first.")
            return
        self._chatting = True
        self.chat_result = None
        self.chat_message.clear_message()
        self._update_chat_buttons()
        for box in self.boxes.values():
            box.view.clear()
            box.stats.setText("")
        sampling = self.decoding.sampling()
        generation = self._generation_chat
        self._chat_started = time.perf_counter()
        self.first_piece_s: dict[str, float] = {}
        self.chat_status.setText("Starting…")
        tasks.run_async(_chat, list(self.sources), prompt, sampling,
                        on_done=lambda r: self._answered(generation, prompt, sampling, r),
                        on_error=lambda e: self._chat_failed(generation, e),
                        on_progress=lambda info: self._chat_piece(generation, info))

    def _chat_piece(self, generation: int, info: dict) -> None:
        if generation != self._generation_chat:
            return
        if "phase" in info:
            self.chat_status.setText(
                f"Loading the base model with {len(self.sources)} adapter(s)…"
                if info["phase"] == "loading" else "Generating…")
            return
        box = self.boxes.get(info["name"])
        if box is not None:
            self.first_piece_s.setdefault(info["name"], time.perf_counter() - self._chat_started)
            box.add_text(info["text"])

    def _answered(self, generation: int, prompt: str, sampling, result: dict) -> None:
        if generation != self._generation_chat:
            return
        self._chatting = False
        for name, answer in result.items():
            box = self.boxes.get(name)
            if box is None:
                continue
            box.view.setPlainText(answer["text"])
            rate = answer.get("tokens_per_s")
            box.stats.setText(f"{answer['tokens']} tokens" + (f" · {rate:.1f} tokens/s" if rate else ""))
        self.chat_result = {"prompt": prompt, "answers": {k: v["text"] for k, v in result.items()},
                            "sampling": asdict(sampling), "stats": result}
        seconds = time.perf_counter() - self._chat_started
        first = min(self.first_piece_s.values()) if self.first_piece_s else None
        self.chat_status.setText(f"{len(result)} answers in {seconds:.1f} s"
                                 + (f" (first words after {first:.1f} s)" if first is not None else "")
                                 + ". Same decoding settings for all.")
        self._update_chat_buttons()

    def _chat_failed(self, generation: int, exc) -> None:
        if generation != self._generation_chat:
            return
        self._chatting = False
        self._update_chat_buttons()
        self.chat_status.setText("")
        self.chat_message.show_error(tasks.error_text(exc))

    def copy_answers(self) -> None:
        if self.chat_result is None:
            return
        lines = [f"Prompt: {self.chat_result['prompt']}", ""]
        for name, text in self.chat_result["answers"].items():
            lines += [f"[{name}]", text, ""]
        QApplication.clipboard().setText("\n".join(lines).rstrip() + "\n")

    # ---- weights ---------------------------------------------------------------------------
    def _analysed(self, generation: int, result: dict) -> None:
        if generation != self._generation:      # the list changed meanwhile
            return
        self.analysis = result
        notes = [f"{s['name']}: {s['reason']}" for s in result["skipped"]]
        self.weights_note.setText("\n".join(notes))
        self.weights_note.setVisible(bool(notes))
        for combo in (self.norm_combo, self.spectrum_combo, self.similarity_combo):
            combo.blockSignals(True)
            combo.clear()
        for table in result["norms"]:
            self.norm_combo.addItem(_swatch(self.colour_of(table["name"])), table["name"])
        chosen = result["spectra"][0]["module"] if result["spectra"] else None
        for module in result.get("spectra_by_module", {}):
            self.spectrum_combo.addItem(_module_text(module), module)
        self.spectrum_combo.setCurrentIndex(max(0, self.spectrum_combo.findData(chosen)))
        if result["similarity"] is not None:
            self.similarity_combo.addItem("all modules", None)
            for module in result["similarity"]["per_module"]:
                self.similarity_combo.addItem(_module_text(module), module)
        for combo in (self.norm_combo, self.spectrum_combo, self.similarity_combo):
            combo.blockSignals(False)
        self._show_norms()
        self._show_spectrum()
        self._show_similarity()

    def _show_similarity(self) -> None:
        table = self.similarity_table
        table.setRowCount(0)
        table.setColumnCount(0)
        sim = (self.analysis or {}).get("similarity")
        if sim is None:
            return
        module = self.similarity_combo.currentData()
        matrix = sim["overall"] if module is None else sim["per_module"][module]
        n = len(sim["names"])
        table.setColumnCount(n + 1)
        table.setRowCount(n)
        table.setHorizontalHeaderLabels([""])
        for i, name in enumerate(sim["names"]):
            table.setItem(i, 0, QTableWidgetItem(_swatch(self.colour_of(name)), name))
            _model_header(table, i + 1, name, self.colour_of(name))
            for j, value in enumerate(matrix[i]):
                if value is None or value != value:       # not adapted by one of them / no update
                    table.setItem(i, j + 1, QTableWidgetItem("—"))
                    continue
                cell = QTableWidgetItem(f"{value:.3f}")
                shade = int(40 + 120 * max(0.0, min(1.0, abs(value))))
                cell.setBackground(QBrush(QColor(shade, 40, 60) if value >= 0 else QColor(40, 60, shade)))
                cell.setForeground(QColor("#ffffff"))    # readable on these dark cells in both themes
                table.setItem(i, j + 1, cell)
        _fit_rows(table)

    def _show_spectrum(self) -> None:
        self.spectrum_plot.clear()
        self.rank_label.setText("")
        module = self.spectrum_combo.currentData()
        entries = ((self.analysis or {}).get("spectra_by_module") or {}).get(module) or []
        ranks = []
        for entry in entries:
            col = self.colour_of(entry["name"])
            values = entry["singular_values"]
            self.spectrum_plot.plot(list(range(1, len(values) + 1)), values, name=entry["name"],
                                    pen=pg.mkPen(col, width=2), symbol="o", symbolSize=6,
                                    symbolBrush=col, symbolPen=pg.mkPen(theme.SURFACE, width=1))
            ranks.append(f'<span style="color:{col}">■</span> {entry["name"]}: effective rank '
                         f'{entry["effective_rank"]:.2f} of {entry["rank"]}')
        self.rank_label.setText(" &nbsp; ".join(ranks))
        if entries:
            self.spectrum_plot.autoRange()

    def on_theme_changed(self, _palette: str = "") -> None:
        for plot in (self.plot, self.heat, self.spectrum_plot):
            theme.style_plot(plot)

    def _show_norms(self) -> None:
        import numpy as np

        if not self.analysis or not self.analysis["norms"]:
            self.heat_image.clear()
            return
        table = self.analysis["norms"][max(0, self.norm_combo.currentIndex())]
        values = np.array([[v if v is not None else np.nan for v in row] for row in table["norms"]],
                          dtype=float)
        # ImageItem's first axis is x: modules across, layers up
        self.heat_image.setImage(np.nan_to_num(values.T, nan=0.0))
        self.heat_bar.setLevels((0.0, float(np.nanmax(values)) or 1.0))
        axis = self.heat.getPlotItem().getAxis("bottom")
        axis.setTicks([[(i + 0.5, m) for i, m in enumerate(table["modules"])]])
        self.heat.getPlotItem().setTitle(f"max {np.nanmax(values):.3g}, total {table['total']:.3g}",
                                         color=theme.MUTED, size="9pt")
        self.heat.autoRange()

    def _failed(self, exc) -> None:
        self.weights_note.setText("")
        self.message.show_error(tasks.error_text(exc))

    # ---- actions ---------------------------------------------------------------------------
    def ask_blend(self) -> None:
        default = ",".join(f"{1 / len(self.sources):.3g}" for _ in self.sources)
        text, ok = QInputDialog.getText(self, "Blend adapters",
                                        "Weights, one per adapter in list order:", text=default)
        if not ok:
            return
        combination, ok = QInputDialog.getItem(self, "Blend adapters", "Combination:",
                                               ["linear", "cat", "svd"], 0, False)
        if not ok:
            return
        folder, _ = QFileDialog.getSaveFileName(self, "New adapter folder for the blend")
        if not folder:
            return
        try:
            weights = [float(w) for w in text.split(",")]
        except ValueError:
            self.message.show_error(f"'{text}' is not a comma list of numbers.")
            return
        self.message.show_info("Blending… (loads the base model once)")
        self.blend_button.setEnabled(False)
        tasks.run_async(_blend, list(self.sources), weights, folder, combination,
                        on_done=self._blended, on_error=self._failed_action)

    def _blended(self, path) -> None:
        self.message.show_info(f"Blend written: {path}")
        self.add_paths([path])

    def _failed_action(self, exc) -> None:
        self.blend_button.setEnabled(len(self.sources) >= 2)
        self.message.show_error(tasks.error_text(exc))

    def ask_report(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save the comparison report", "comparison.html",
                                              "HTML (*.html)")
        if path:
            self.write_report(path)

    def write_report(self, path) -> None:
        def analysed_then_report(sources, analysis, evaluation, chat):
            return _report(path, sources, analysis or _analyse(sources), evaluation, chat)

        tasks.run_async(analysed_then_report, list(self.sources), self.analysis, self.evaluation,
                        self.chat_result,
                        on_done=lambda p: self.message.show_info(f"Report written: {p}"),
                        on_error=self._failed_action)

    # ---- evaluation (a child process: model loading and scoring never block the window) -----
    def _evaluating(self) -> bool:
        return self.process is not None and self.process.is_running()

    def ask_evaluate(self) -> None:
        tasks_dir = paths.sample_tasks_dir()
        names = sorted(p.name for p in tasks_dir.iterdir() if p.is_dir()) if tasks_dir.is_dir() else []
        browse = "Choose a task.json or data file…"
        choice, ok = QInputDialog.getItem(self, "Evaluate", "Task:", [*names, browse], 0, False)
        if not ok:
            return
        if choice == browse:
            choice, _ = QFileDialog.getOpenFileName(self, "Task", "",
                                                    "Tasks (*.json *.jsonl *.csv)")
            if not choice:
                return
        limit, ok = QInputDialog.getInt(self, "Evaluate", "Examples to score:", 50, 1, 100000)
        if ok:
            self.evaluate_task(choice, limit)

    def evaluate_task(self, task: str, limit: int = 50) -> None:
        """Run `peft-studio compare ... --eval TASK --json` in a child process."""
        out = Path(tempfile.mkdtemp(prefix="peft-studio-compare-")) / "result.json"
        self._eval_out = out
        self._eval_lines: list[str] = []
        self.process = CliProcess(self, sys.executable)
        self.process.line.connect(self._eval_line)
        self.process.finished.connect(self._eval_finished)
        self.eval_button.setEnabled(False)
        self.eval_status.setText("Loading the base model and the adapters…")
        self.process.start(["-m", "studio.cli", "compare",
                            *[str(s.run_dir or s.adapter_dir) for s in self.sources],
                            "--eval", str(task), "--limit", str(limit), "--json", str(out),
                            "--progress-json"])

    def _eval_line(self, line: str) -> None:
        progress = parse_progress(line)
        if progress is not None:
            if progress.get("total"):
                self.eval_status.setText(f"Scoring… {int(progress['done'])} of "
                                         f"{int(progress['total'])} (all models together)")
        else:
            self._eval_lines.append(line)

    def _eval_finished(self, code: int) -> None:
        self.eval_button.setEnabled(bool(self.sources))
        try:
            if code != 0 or not self._eval_out.is_file():
                tail = [line for line in self._eval_lines if line.strip()][-3:]
                self.eval_status.setText("The evaluation failed: " + " ".join(tail))
                return
            data = json.loads(self._eval_out.read_text(encoding="utf-8"))
        finally:
            shutil.rmtree(self._eval_out.parent, ignore_errors=True)   # our own temp folder
        self._show_evaluation(data["evaluation"])

    def _show_evaluation(self, result: dict | None) -> None:
        self.evaluation = result
        for table in (self.eval_table, self.disagree_table):
            table.setRowCount(0)
            table.setColumnCount(0)
        if result is None:
            return
        models = result["models"]
        self.eval_status.setText(f"{result['task']}: the same {models[0]['n']} examples, "
                                 f"{models[0]['metric']}; they disagree on "
                                 f"{result['disagreements']}.")
        base = models[0]["name"]
        versus = {p["a"]: p for p in result["pairs"] if p["b"] == base}
        table = self.eval_table
        table.setColumnCount(4)
        table.setHorizontalHeaderLabels(["model", "score (95% CI)", "vs base (95% CI)", "verdict"])
        table.setRowCount(len(models))
        for r, m in enumerate(models):
            p = versus.get(m["name"])
            cells = [m["name"], f"{m['score']:.3f} ({m['ci95'][0]:.3f}–{m['ci95'][1]:.3f})",
                     f"{p['mean']:+.3f} ({p['ci95'][0]:+.3f}–{p['ci95'][1]:+.3f})" if p else "",
                     p["verdict"] if p else ""]
            for c, text in enumerate(cells):
                table.setItem(r, c, QTableWidgetItem(text))
        _fit_rows(table)
        names = [m["name"] for m in models]
        rows = [row for row in result["rows"] if row["disagree"]]
        table = self.disagree_table
        table.setColumnCount(2 + len(names))
        table.setHorizontalHeaderLabels(["prompt", "reference", *names])
        table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            table.setItem(r, 0, QTableWidgetItem(row["prompt"][-120:]))
            table.setItem(r, 1, QTableWidgetItem(str(row["reference"])))
            for c, name in enumerate(names):
                cell = QTableWidgetItem(f"{row['answers'][name]} ({row['scores'][name]:g})")
                cell.setToolTip(row["prompt"])
                table.setItem(r, c + 2, cell)
        _fit_rows(table)
