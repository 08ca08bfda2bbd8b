"""Compare page: runs and adapter folders side by side — overlaid loss curves (one colour per
adapter, the same as in the list and the report), the settings that differ, the weight-update
norms per layer x module and the cosine similarity of the updates. "Evaluate…" scores the base
and every adapter on the same examples of a task (`peft-studio compare --eval` in a child
process) and lists the examples where they disagree; "Blend…" writes a weighted blend (peft's
add_weighted_adapter) as a new adapter and adds it; "Report…" writes the HTML report.

All computation is studio.compare; reading weights, blending and writing run off the GUI thread.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QPixmap
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QFileDialog, QHBoxLayout, QHeaderView, QInputDialog, QListWidget,
    QListWidgetItem, QMenu, QSizePolicy, QTableWidget, QTableWidgetItem,
)

from studio.compare.sources import colour, load_source, settings_diff
from studio import paths
from studio.ui import tasks, theme
from studio.ui.cli_process import CliProcess, parse_progress
from studio.ui.widgets import Card, InlineMessage, Page, button, compact_combo, label


def _swatch(col: str):
    pix = QPixmap(12, 12)
    pix.fill(QColor(col))
    return pix


def _table(rows: int = 0, cols: int = 0) -> QTableWidget:
    table = QTableWidget(rows, cols)
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
    table.setMinimumHeight(120)
    table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    table.verticalHeader().setVisible(False)
    return table


def _analyse(sources):
    from studio.compare.weights import analyse

    return analyse(sources)


def _blend(sources, weights, out_dir, combination):
    from studio.compare.blend import blend

    return blend(sources, weights, out_dir, combination_type=combination)


def _report(path, sources, analysis, evaluation=None):
    from studio.compare.report import build_report, write_report

    return write_report(path, build_report(sources, weights=analysis, evaluation=evaluation))


class ComparePage(Page):
    def __init__(self) -> None:
        super().__init__("Compare", "Put runs and adapters side by side: curves, settings that "
                                    "differ, and what each changed in the weights.")
        self.sources: list = []
        self.analysis: dict | None = None
        self.evaluation: dict | None = None
        self.process: CliProcess | None = None
        self._generation = 0

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

        card = Card("Adapters", "Finished runs or adapter folders of the same base model.")
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

        curves = Card("Loss curves", "Training loss of each run (eval loss dotted).")
        self.plot = pg.PlotWidget(background=theme.SURFACE)
        self.plot.setMinimumHeight(200)
        self.plot.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        item = self.plot.getPlotItem()
        item.showGrid(x=True, y=True, alpha=0.12)
        item.setMenuEnabled(False)
        item.setLabel("bottom", "step")
        self.legend = item.addLegend(offset=(-6, 6), labelTextColor=theme.MUTED)
        theme.style_plot(self.plot)
        curves.body.addWidget(self.plot)
        self.content.addWidget(curves)

        settings = Card("Settings that differ")
        self.settings_table = _table()
        settings.body.addWidget(self.settings_table)
        self.content.addWidget(settings)

        weights = Card("Weight updates", "‖ΔW‖ per layer × module (ΔW = B·A·scaling), and the "
                                         "cosine similarity of the adapters' updates.")
        pick = QHBoxLayout()
        pick.addWidget(label("Adapter"))
        self.norm_combo = compact_combo(QComboBox(), 24)
        self.norm_combo.currentIndexChanged.connect(self._show_norms)
        pick.addWidget(self.norm_combo)
        pick.addStretch(1)
        weights.body.addLayout(pick)
        self.heat = pg.PlotWidget(background=theme.SURFACE)
        self.heat.setMinimumHeight(220)
        self.heat.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.heat.getPlotItem().setMenuEnabled(False)
        self.heat.getPlotItem().setLabel("left", "layer")
        self.heat_image = pg.ImageItem()
        self.heat_image.setColorMap(pg.colormap.get("viridis"))
        self.heat.addItem(self.heat_image)
        theme.style_plot(self.heat)
        weights.body.addWidget(self.heat)
        self.weights_note = label("", role="muted", wrap=True)
        weights.body.addWidget(self.weights_note)
        weights.body.addWidget(label("Similarity of the updates (cosine, all modules)"))
        self.similarity_table = _table()
        weights.body.addWidget(self.similarity_table)
        self.content.addWidget(weights)

        scores = Card("Evaluation", "Same examples for every model; paired 95% CIs.")
        self.eval_status = label("Evaluate… scores the base model and each adapter on a task.",
                                 role="muted", wrap=True)
        scores.body.addWidget(self.eval_status)
        self.eval_table = _table()
        scores.body.addWidget(self.eval_table)
        scores.body.addWidget(label("Where they disagree"))
        self.disagree_table = _table()
        self.disagree_table.setMinimumHeight(160)
        scores.body.addWidget(self.disagree_table)
        self.content.addWidget(scores)
        self.content.addStretch(1)
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
            names = {s.name for s in self.sources}
            base, n = src.name, 2
            while src.name in names:
                src.name, n = f"{base} ({n})", n + 1
            self.sources.append(src)
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

    # ---- showing ---------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.list.clear()
        for i, src in enumerate(self.sources):
            entry = QListWidgetItem(f"{src.name}   ({src.kind}, {src.method})")
            entry.setIcon(_swatch(colour(i)))
            entry.setToolTip(str(src.adapter_dir))
            self.list.addItem(entry)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.blend_button.setEnabled(len(self.sources) >= 2)
        self.report_button.setEnabled(bool(self.sources))
        self.eval_button.setEnabled(bool(self.sources) and not self._evaluating())
        self.remove_button.setEnabled(bool(self.sources))
        self._show_evaluation(None)
        self._show_curves()
        self._show_settings()
        self.analysis = None
        self.norm_combo.clear()
        self.similarity_table.setRowCount(0)
        self.similarity_table.setColumnCount(0)
        self.heat_image.clear()
        self.weights_note.setText("Add adapters to see their weight updates." if not self.sources
                                  else "Reading the weights…")
        if self.sources:
            self._generation += 1
            generation = self._generation
            tasks.run_async(_analyse, list(self.sources),
                            on_done=lambda result: self._analysed(generation, result),
                            on_error=self._failed)

    def _show_curves(self) -> None:
        self.plot.clear()
        self.legend.clear()
        for i, src in enumerate(self.sources):
            for key, style in (("loss", Qt.PenStyle.SolidLine), ("eval_loss", Qt.PenStyle.DotLine)):
                points = src.curves.get(key) or []
                if points:
                    self.plot.plot([p[0] for p in points], [p[1] for p in points],
                                   pen=pg.mkPen(colour(i), width=2, style=style),
                                   name=src.name if key == "loss" else None)

    def _show_settings(self) -> None:
        diff = settings_diff(self.sources) if len(self.sources) > 1 else {}
        table = self.settings_table
        table.setColumnCount(1 + len(self.sources))
        table.setHorizontalHeaderLabels(["setting", *[s.name for s in self.sources]])
        table.setRowCount(len(diff))
        for r, (key, values) in enumerate(diff.items()):
            table.setItem(r, 0, QTableWidgetItem(key))
            for c, value in enumerate(values):
                table.setItem(r, c + 1, QTableWidgetItem(str(value)))

    def _analysed(self, generation: int, result: dict) -> None:
        if generation != self._generation:      # the list changed meanwhile
            return
        self.analysis = result
        notes = [f"{s['name']}: {s['reason']}" for s in result["skipped"]]
        self.weights_note.setText("\n".join(notes))
        self.norm_combo.blockSignals(True)
        self.norm_combo.clear()
        for table in result["norms"]:
            self.norm_combo.addItem(table["name"])
        self.norm_combo.blockSignals(False)
        self._show_norms()
        sim = result["similarity"]
        table = self.similarity_table
        if sim is None:
            return
        n = len(sim["names"])
        table.setColumnCount(n + 1)
        table.setRowCount(n)
        table.setHorizontalHeaderLabels(["", *sim["names"]])
        for i, name in enumerate(sim["names"]):
            table.setItem(i, 0, QTableWidgetItem(name))
            for j, value in enumerate(sim["overall"][i]):
                cell = QTableWidgetItem(f"{value:.3f}")
                shade = int(40 + 120 * max(0.0, min(1.0, abs(value))))
                cell.setBackground(QBrush(QColor(shade, 40, 60) if value >= 0 else QColor(40, 60, shade)))
                cell.setForeground(QColor("#ffffff"))    # readable on these dark cells in both themes
                table.setItem(i, j + 1, cell)

    def on_theme_changed(self, _palette: str = "") -> None:
        theme.style_plot(self.plot)
        theme.style_plot(self.heat)

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
        axis = self.heat.getPlotItem().getAxis("bottom")
        axis.setTicks([[(i + 0.5, m) for i, m in enumerate(table["modules"])]])
        self.heat.getPlotItem().setTitle(f"‖ΔW‖ per layer × module, max {np.nanmax(values):.3g}",
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
        def analysed_then_report(sources, analysis, evaluation):
            return _report(path, sources, analysis or _analyse(sources), evaluation)

        tasks.run_async(analysed_then_report, list(self.sources), self.analysis, self.evaluation,
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
