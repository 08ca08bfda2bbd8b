"""Tools > Compare methods: train several methods on the same data and step budget, show the table.

The comparison runs as a background process of the CLI (`peft-studio compare-methods ...
--progress-json`, each method in its own training process under it), so the window stays
responsive and Stop ends everything. Progress and the finished rows come from the CLI's
`@progress {...}` lines; the full report (.md + .json) is written to the comparisons folder.
No torch here.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QCheckBox, QComboBox, QFormLayout, QGridLayout, QGroupBox,
    QHBoxLayout, QHeaderView, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea,
    QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget,
)

from studio import paths
from studio.ui.cli_process import CliDialog, CliProcess, is_noise, parse_progress

DEFAULT_METHODS = ("lora", "dora", "ia3", "lora_dash")
TABLE_COLUMNS = [("method", "Method"), ("status", "Status"), ("trainable_params", "Trainable"),
                 ("trainable_pct", "%"), ("wall_s", "Wall s"), ("peak_memory_mb", "Peak MB"),
                 ("train_loss", "Train loss"), ("eval_loss", "Eval loss"),
                 ("accuracy", "Accuracy"), ("adapter_mb", "Adapter MB")]


def fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


class CompareDialog(CliDialog):
    def __init__(self, parent: QWidget | None = None, model_path: str | None = None,
                 data_path: str | None = None, python: str | None = None, recipe=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Compare methods")
        self.resize(1100, 760)
        self.model_path, self.data_path = model_path, data_path
        self.recipe = recipe            # the Train page's recipe: shared settings for every method
        self.python = python or sys.executable
        self.process: CliProcess | None = None
        self.out_path: Path | None = None
        self.rows: list[dict] = []
        self._build()

    # ---- layout ---------------------------------------------------------------------------
    def _build(self) -> None:
        from studio.plugins import discover

        plugins, self.problems = discover()
        outer = QVBoxLayout(self)
        intro = QLabel("Train each chosen method on the current model and data with the same "
                       "number of steps, each in its own process, and compare trainable "
                       "parameters, time, memory, loss, exact-match accuracy and adapter size. "
                       "Each method keeps its own default settings (rank, alpha, ...); the shared "
                       "ones (data split, max length, batch size, scheduler) come from the Train "
                       "page when that box is ticked, else from the demo recipe.")
        intro.setWordWrap(True)
        outer.addWidget(intro)

        top = QHBoxLayout()
        box = QGroupBox("Methods")
        grid = QGridLayout()
        self.checks: dict[str, QCheckBox] = {}
        ordered = sorted(plugins.values(), key=lambda p: p.name.lower())
        columns = 4
        for i, plugin in enumerate(ordered):
            check = QCheckBox(plugin.name)
            check.setToolTip(f"{plugin.id}: {plugin.description}")
            check.setChecked(plugin.id in DEFAULT_METHODS)
            check.toggled.connect(self._update_buttons)
            self.checks[plugin.id] = check
            grid.addWidget(check, i // columns, i % columns)
        inner = QWidget()
        inner.setLayout(grid)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        col = QVBoxLayout(box)
        col.addWidget(scroll)
        pick = QHBoxLayout()
        for text, state in (("All", True), ("None", False)):
            b = QPushButton(text)
            b.clicked.connect(lambda _c=False, s=state: self._check_all(s))
            pick.addWidget(b)
        pick.addStretch(1)
        col.addLayout(pick)
        top.addWidget(box, 3)

        settings = QGroupBox("Budget")
        form = QFormLayout(settings)
        self.steps = QSpinBox()
        self.steps.setRange(1, 100000)
        self.steps.setValue(40)
        self.steps.setToolTip("Optimizer steps per method (the same for every method).")
        form.addRow("Steps per method", self.steps)
        self.eval_limit = QSpinBox()
        self.eval_limit.setRange(0, 100000)
        self.eval_limit.setValue(60)
        self.eval_limit.setToolTip("Eval examples for exact-match accuracy (0 = all).")
        form.addRow("Eval examples", self.eval_limit)
        self.lr = QComboBox()
        self.lr.addItem("each method's suggested", "method")
        self.lr.addItem("the recipe's, for all", "recipe")
        self.lr.setToolTip("Learning rate: each plugin's suggestion (IA3 and prompt tuning need "
                           "far larger rates than LoRA), or one rate for all methods.")
        form.addRow("Learning rate", self.lr)
        self.use_train_settings = QCheckBox("the Train page's shared settings")
        self.use_train_settings.setChecked(self.recipe is not None)
        self.use_train_settings.setEnabled(self.recipe is not None)
        self.use_train_settings.setToolTip("Data split, max length, batch size, gradient "
                                           "accumulation, scheduler and warm-up as set on the "
                                           "Train and Data pages (methods keep their own defaults)")
        form.addRow("Use", self.use_train_settings)
        top.addWidget(settings, 1)
        outer.addLayout(top)

        row = QHBoxLayout()
        self.run_button = QPushButton("Run comparison")
        self.run_button.setProperty("kind", "primary")
        self.run_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.status = QLabel("Choose methods and press Run.")
        row.addWidget(self.run_button)
        row.addWidget(self.stop_button)
        row.addWidget(self.progress, 1)
        outer.addLayout(row)
        outer.addWidget(self.status)

        split = QSplitter(Qt.Orientation.Vertical)
        self.table = QTableWidget(0, len(TABLE_COLUMNS))
        self.table.setHorizontalHeaderLabels([title for _, title in TABLE_COLUMNS])
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        split.addWidget(self.table)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        split.addWidget(self.log)
        split.setSizes([320, 160])
        outer.addWidget(split, 1)
        self._update_buttons()

    def _check_all(self, state: bool) -> None:
        for check in self.checks.values():
            check.setChecked(state)

    def selected(self) -> list[str]:
        return [pid for pid, check in self.checks.items() if check.isChecked()]

    def _update_buttons(self) -> None:
        running = self.is_running()
        self.run_button.setEnabled(not running and bool(self.selected()))
        self.stop_button.setEnabled(running)
        for check in self.checks.values():
            check.setEnabled(not running)

    # ---- running --------------------------------------------------------------------------
    def command(self) -> list[str]:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = paths.data_dir() / "comparisons"
        folder.mkdir(parents=True, exist_ok=True)
        self.out_path = folder / f"compare-{stamp}.md"
        args = ["-m", "studio.cli", "compare-methods", "--methods", ",".join(self.selected()),
                "--steps", str(self.steps.value()), "--eval-limit", str(self.eval_limit.value()),
                "--lr", self.lr.currentData(), "--out", str(self.out_path), "--progress-json"]
        if self.recipe is not None and self.use_train_settings.isChecked():
            recipe_file = folder / f"compare-{stamp}.recipe.toml"
            self.recipe.save(recipe_file)
            return args + ["--recipe", str(recipe_file)]
        if self.model_path:
            args += ["--model", self.model_path]
        if self.data_path and Path(self.data_path) != paths.demo_data_path():
            args += ["--data", self.data_path]
        return args

    def start(self) -> None:
        if self.is_running() or not self.selected():
            return
        self.rows.clear()
        self.table.setRowCount(0)
        self.log.clear()
        self.progress.setValue(0)
        args = self.command()
        self.process = CliProcess(self, self.python)
        self.process.line.connect(self.handle_line)
        self.process.finished.connect(self._finished)
        self.process.failed_to_start.connect(self._failed_to_start)
        self.log.appendPlainText("$ peft-studio " + " ".join(args[2:]))
        self.status.setText(f"Starting: {len(self.selected())} method(s), "
                            f"{self.steps.value()} steps each …")
        self.process.start(args)
        self._update_buttons()

    def stop(self) -> None:
        if self.is_running():
            self.status.setText("Stopping …")
            self.process.stop(grace_ms=15000)   # SIGTERM: the CLI kills its training process too

    def handle_line(self, line: str) -> None:
        """One line of the CLI's output: progress JSON updates the bar/table, the rest is log."""
        info = parse_progress(line)
        if info is None:
            if not is_noise(line):
                self.log.appendPlainText(line)
            return
        phase = info.get("phase")
        if phase == "base":
            self.status.setText("Measuring the base model's accuracy (no adapter) on the same examples")
            return
        if phase == "finished":
            self.base_accuracy = info.get("base_accuracy")
            if self.base_accuracy is not None:
                self.status.setText(f"Done. Base model accuracy without an adapter: "
                                    f"{fmt(self.base_accuracy)}. Report: {info.get('out')}")
            self.progress.setValue(1000)
            return
        count, steps = max(1, info.get("count", 1)), max(1, info.get("steps", 1))
        index, step = info.get("index", 0), info.get("step", 0)
        done = index + (1.0 if phase == "done" else 0.9 * min(step, steps) / steps)
        self.progress.setValue(int(1000 * done / count))
        where = f"{info.get('method')} ({index + 1} of {count})"
        if phase == "train":
            self.status.setText(f"Training {where}: step {step}/{steps}")
        elif phase == "eval":
            self.status.setText(f"Measuring accuracy of {where}")
        elif phase == "done" and "row" in info:
            self.add_row(info["row"])

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        r = self.table.rowCount()
        self.table.insertRow(r)
        for c, (key, _title) in enumerate(TABLE_COLUMNS):
            item = QTableWidgetItem(fmt(row.get(key)))
            if key not in ("method", "status"):
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if key == "status" and row.get("cause"):
                item.setToolTip(row["cause"])
            self.table.setItem(r, c, item)

    def _finished(self, code: int) -> None:
        if code == 0:
            if self.progress.value() < 1000:
                self.status.setText(f"Done. Report: {self.out_path}")
            self.progress.setValue(1000)
        elif code == 1 and self.rows:
            self.status.setText(f"Done, but some methods failed (hover their status). "
                                f"Report: {self.out_path}")
        elif code == 2:
            last = self.log.toPlainText().strip().splitlines()[-1:]
            self.status.setText("Not started: " + (last[0] if last else "invalid settings"))
        else:
            self.status.setText(f"Stopped (exit code {code}); {len(self.rows)} method(s) finished.")
        self._update_buttons()


def open_dialog(window) -> CompareDialog:
    """The Tools-menu action: a dialog on the main window's current model and data."""
    model = data = recipe = None
    try:
        model = window.model_page.model_path() or None
        data = window.data_page.settings().get("path") or None
        recipe = window.train_page.build_recipe()
    except Exception:  # noqa: BLE001 - the dialog also works without the pages (or a valid recipe)
        pass
    dialog = CompareDialog(window, model_path=model, data_path=data, recipe=recipe)
    dialog.show()
    return dialog
